//! Everything that knows PostgreSQL: role and setting names, SQLSTATEs, the pool, and
//! the request transaction -- the one way handler SQL reaches tenant data.

pub mod bootstrap;
pub mod embedded;
pub mod errors;
pub mod migrate;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::TryStreamExt;
use tokio_postgres::{
    NoTls, Row, Statement,
    types::{ToSql, Type},
};
use uuid::Uuid;

pub use errors::{DbError, DbFailure};

/// The NOLOGIN role holding every runtime grant (see policies/).
pub const RUNTIME_GROUP_ROLE: &str = "palisade_runtime";
/// The login role the server uses in the embedded default.
pub const RUNTIME_LOGIN_ROLE: &str = "palisade_app";
/// The role that owns every schema object and runs migrations in the embedded default.
pub const OWNER_ROLE: &str = "palisade_owner";
/// The database name in the embedded default.
pub const DATABASE_NAME: &str = "palisade";

/// Who the request acts for. Set transaction-locally by `app.set_request_context()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestContext {
    pub user_id: Uuid,
    pub session_id: Uuid,
    /// The org named in the route (`/v1/orgs/{org_id}/...`), if any.
    pub org_id: Option<Uuid>,
}

/// GET requests run read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

#[derive(Clone)]
pub struct Db {
    pool: Pool,
    statements: Statements,
}

/// How statements reach the server (`DATABASE_STATEMENT_CACHE`).
#[derive(Clone)]
enum Statements {
    /// Named statements prepared once per connection and cached: one round trip per
    /// statement and the plan cached by PostgreSQL. The default.
    Cached,
    /// Nothing named outlives a statement: each one is sent as an unnamed statement
    /// with explicit parameter types (`query_typed`), still one round trip. For
    /// PgBouncer in transaction mode, where the next transaction may run on another
    /// server connection that never saw a cached statement. The parameter types of
    /// each SQL text are learned once per process from a prepare inside a transaction.
    Unnamed(Arc<RwLock<HashMap<String, Arc<[Type]>>>>),
}

const SET_CONTEXT_SQL: &str = "select app.set_request_context($1, $2, $3)";
const SET_CONTEXT_TYPES: [Type; 3] = [Type::UUID, Type::UUID, Type::UUID];

impl Db {
    /// A pool of runtime-role connections. `timeout` bounds the wait for a free
    /// connection and for creating one, so a dead or exhausted database answers
    /// quickly (HTTP 503) instead of hanging.
    pub fn new(config: tokio_postgres::Config, size: usize, timeout: Duration) -> Self {
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(size)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .expect("pool with a runtime and timeouts builds");
        Self {
            pool,
            statements: Statements::Cached,
        }
    }

    /// `false`: no statement is cached across transactions (PgBouncer in transaction
    /// mode); see [`Statements::Unnamed`].
    pub fn with_statement_cache(mut self, enabled: bool) -> Self {
        self.statements = if enabled {
            Statements::Cached
        } else {
            Statements::Unnamed(Arc::default())
        };
        self
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Opens the request transaction. With a context, its first statement validates the
    /// session and sets `app.current_*` transaction-locally from bind parameters (the
    /// BEGIN and that statement are pipelined in one round trip). Finish it with
    /// [`Tx::finish`]; dropping it unfinished (a cancelled request) discards the
    /// connection, so no transaction or context can outlive the request.
    pub async fn begin(&self, ctx: Option<&RequestContext>, access: Access) -> Result<Tx, DbError> {
        let client = self.pool.get().await?;
        let begin_sql = match access {
            Access::ReadOnly => "begin transaction read only",
            Access::ReadWrite => "begin",
        };
        let mut tx = Tx {
            client: Some(client),
            finished: false,
            org_role: None,
            statements: self.statements.clone(),
        };
        match ctx {
            None => tx.client().batch_execute(begin_sql).await?,
            Some(ctx) => {
                let params: [&(dyn ToSql + Sync); 3] = [&ctx.session_id, &ctx.user_id, &ctx.org_id];
                let context = tx.prepare_context(&params).await?;
                // `biased`: polled in order, so BEGIN is written before the context.
                let (begun, row) = tokio::join!(
                    biased;
                    tx.client().batch_execute(begin_sql),
                    tx.query_one_prepared(SET_CONTEXT_SQL, &context, &params)
                );
                begun?;
                match row {
                    Ok(row) => tx.org_role = row.get(0),
                    // e.g. a revoked session: roll back and keep the connection.
                    Err(err) => {
                        let failed: Result<(), DbError> = Err(err);
                        return Err(tx.finish(failed).await.expect_err("stays an error"));
                    }
                }
            }
        }
        Ok(tx)
    }

    /// A read-only request in one round trip: `begin transaction read only`, the
    /// context statement, `sql` and `commit` are pipelined (written together, answered
    /// in order). Returns the caller's role in the context's org -- `None` when not a
    /// member, and then RLS has already made `rows` empty -- and the rows. A dead session
    /// fails the context statement (PT401); PostgreSQL then skips `sql` and turns the
    /// `commit` into a rollback, so nothing runs without a valid context.
    pub async fn read(
        &self,
        ctx: &RequestContext,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(Option<String>, Vec<Row>), DbError> {
        let client = self.pool.get().await?;
        let mut tx = Tx {
            client: Some(client),
            finished: false,
            org_role: None,
            statements: self.statements.clone(),
        };
        let ctx_params: [&(dyn ToSql + Sync); 3] = [&ctx.session_id, &ctx.user_id, &ctx.org_id];
        let context = tx.prepare_context(&ctx_params).await?;
        let mut query = tx.prepare(sql, params).await?;
        if matches!(query, Prepared::Learning(_)) {
            // First use of this SQL without a statement cache: its types are known now.
            query = tx.prepare(sql, params).await?;
        }
        let client = tx.client();
        let (begun, role, rows, committed) = tokio::join!(
            biased;
            client.batch_execute("begin transaction read only"),
            tx.query_one_prepared(SET_CONTEXT_SQL, &context, &ctx_params),
            tx.query_prepared(sql, &query, params),
            client.batch_execute("commit"),
        );
        // After a failed commit the connection's state is unknown: Drop discards it.
        tx.finished = committed.is_ok();
        begun?;
        let role = role?.get(0);
        let rows = rows?;
        committed?;
        Ok((role, rows))
    }

    /// Newest applied migration (GET /ready).
    pub async fn schema_version(&self) -> Result<Option<i32>, DbError> {
        let client = self.pool.get().await?;
        let row = match self.statements {
            Statements::Cached => {
                let stmt = client.prepare_cached("select app.schema_version()").await?;
                client.query_one(&stmt, &[]).await?
            }
            Statements::Unnamed(_) => {
                client
                    .query_typed_one("select app.schema_version()", &[])
                    .await?
            }
        };
        Ok(row.get(0))
    }
}

/// A statement ready to run under the connection's [`Statements`] mode.
enum Prepared<'a> {
    /// Cached per connection.
    Cached(Statement),
    /// Sent unnamed with these parameter types.
    Typed(Vec<(&'a (dyn ToSql + Sync), Type)>),
    /// Unnamed mode, first use of the SQL text: prepared (and closed after use) inside
    /// the transaction to learn its parameter types.
    Learning(Statement),
}

/// The request transaction. All handler SQL goes through it; statements are prepared
/// once per connection and cached.
pub struct Tx {
    client: Option<Object>,
    finished: bool,
    org_role: Option<String>,
    statements: Statements,
}

impl Tx {
    fn client(&self) -> &Object {
        self.client
            .as_ref()
            .expect("client present until the transaction ends")
    }

    /// The caller's role in the org of the context, if they are a member.
    pub fn org_role(&self) -> Option<&str> {
        self.org_role.as_deref()
    }

    async fn prepare<'a>(
        &self,
        sql: &str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> Result<Prepared<'a>, DbError> {
        let client = self.client();
        match &self.statements {
            Statements::Cached => Ok(Prepared::Cached(client.prepare_cached(sql).await?)),
            Statements::Unnamed(types) => {
                let known = types
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(sql)
                    .cloned();
                match known {
                    Some(types) if types.len() == params.len() => Ok(Prepared::Typed(
                        params.iter().copied().zip(types.iter().cloned()).collect(),
                    )),
                    _ => {
                        let stmt = client.prepare(sql).await?;
                        types
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(sql.to_owned(), stmt.params().into());
                        Ok(Prepared::Learning(stmt))
                    }
                }
            }
        }
    }

    async fn prepare_context<'a>(
        &self,
        params: &'a [&'a (dyn ToSql + Sync); 3],
    ) -> Result<Prepared<'a>, DbError> {
        match &self.statements {
            Statements::Cached => Ok(Prepared::Cached(
                self.client().prepare_cached(SET_CONTEXT_SQL).await?,
            )),
            Statements::Unnamed(_) => Ok(Prepared::Typed(
                params
                    .iter()
                    .copied()
                    .zip(SET_CONTEXT_TYPES.iter().cloned())
                    .collect(),
            )),
        }
    }

    async fn query_prepared(
        &self,
        sql: &str,
        prepared: &Prepared<'_>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let client = self.client();
        Ok(match prepared {
            Prepared::Cached(stmt) | Prepared::Learning(stmt) => client.query(stmt, params).await?,
            Prepared::Typed(typed) => client.query_typed(sql, typed).await?,
        })
    }

    async fn query_one_prepared(
        &self,
        sql: &str,
        prepared: &Prepared<'_>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, DbError> {
        let client = self.client();
        Ok(match prepared {
            Prepared::Cached(stmt) | Prepared::Learning(stmt) => {
                client.query_one(stmt, params).await?
            }
            Prepared::Typed(typed) => client.query_typed_one(sql, typed).await?,
        })
    }

    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let prepared = self.prepare(sql, params).await?;
        self.query_prepared(sql, &prepared, params).await
    }

    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, DbError> {
        let client = self.client();
        Ok(match self.prepare(sql, params).await? {
            Prepared::Cached(stmt) | Prepared::Learning(stmt) => {
                client.query_opt(&stmt, params).await?
            }
            Prepared::Typed(typed) => client.query_typed_opt(sql, &typed).await?,
        })
    }

    pub async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, DbError> {
        let prepared = self.prepare(sql, params).await?;
        self.query_one_prepared(sql, &prepared, params).await
    }

    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, DbError> {
        let client = self.client();
        Ok(match self.prepare(sql, params).await? {
            Prepared::Cached(stmt) | Prepared::Learning(stmt) => {
                client.execute(&stmt, params).await?
            }
            Prepared::Typed(typed) => {
                let rows = client.query_typed_raw(sql, typed).await?;
                let mut rows = std::pin::pin!(rows);
                while rows.try_next().await?.is_some() {}
                rows.rows_affected().unwrap_or(0)
            }
        })
    }

    /// Commits when `result` is Ok (a failed commit turns it into an error), rolls back
    /// when it is Err. Either way the connection goes back to the pool clean.
    pub async fn finish<T, E: From<DbError>>(mut self, result: Result<T, E>) -> Result<T, E> {
        let end = if result.is_ok() { "commit" } else { "rollback" };
        let ended = self.client().batch_execute(end).await;
        match ended {
            Ok(()) => {
                self.finished = true;
                result
            }
            // The connection's state is unknown: Drop discards it.
            Err(err) => result.and(Err(DbError::from(err).into())),
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if !self.finished
            && let Some(client) = self.client.take()
        {
            // Detach from the pool: the connection closes and the server rolls back.
            drop(Object::take(client));
        }
    }
}
