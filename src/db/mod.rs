//! Everything that knows PostgreSQL: role and setting names, SQLSTATEs, the pool, and
//! the request transaction -- the one way handler SQL reaches tenant data.

pub mod bootstrap;
pub mod embedded;
pub mod errors;
pub mod migrate;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, Row, types::ToSql};
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
}

const SET_CONTEXT_SQL: &str = "select app.set_request_context($1, $2, $3)";

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
        Self { pool }
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
        };
        match ctx {
            None => tx.client().batch_execute(begin_sql).await?,
            Some(ctx) => {
                let client = tx.client();
                let stmt = client.prepare_cached(SET_CONTEXT_SQL).await?;
                let params: [&(dyn ToSql + Sync); 3] = [&ctx.session_id, &ctx.user_id, &ctx.org_id];
                let (begun, row) = tokio::join!(
                    client.batch_execute(begin_sql),
                    client.query_one(&stmt, &params)
                );
                begun?;
                match row {
                    Ok(row) => tx.org_role = row.get(0),
                    // e.g. a revoked session: roll back and keep the connection.
                    Err(err) => {
                        let failed: Result<(), DbError> = Err(err.into());
                        return Err(tx.finish(failed).await.expect_err("stays an error"));
                    }
                }
            }
        }
        Ok(tx)
    }

    /// Newest applied migration (GET /ready).
    pub async fn schema_version(&self) -> Result<Option<i32>, DbError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached("select app.schema_version()").await?;
        Ok(client.query_one(&stmt, &[]).await?.get(0))
    }
}

/// The request transaction. All handler SQL goes through it; statements are prepared
/// once per connection and cached.
pub struct Tx {
    client: Option<Object>,
    finished: bool,
    org_role: Option<String>,
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

    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let client = self.client();
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query(&stmt, params).await?)
    }

    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, DbError> {
        let client = self.client();
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query_opt(&stmt, params).await?)
    }

    pub async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, DbError> {
        let client = self.client();
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query_one(&stmt, params).await?)
    }

    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, DbError> {
        let client = self.client();
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.execute(&stmt, params).await?)
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
