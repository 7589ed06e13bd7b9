//! Everything that knows PostgreSQL: role and setting names, SQLSTATEs, the pools, and
//! the request transaction -- the one way handler SQL reaches tenant data.

pub mod audit;
pub mod bootstrap;
pub mod embedded;
pub mod errors;
pub mod migrate;
pub mod replicas;

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

/// The group role holding every request-handling grant (see policies/).
pub const RUNTIME_GROUP_ROLE: &str = "palisade_runtime";
/// The group role of the credential operations.
pub const CREDENTIALS_GROUP_ROLE: &str = "palisade_credentials";
/// The group role of the background worker.
pub const JOBS_GROUP_ROLE: &str = "palisade_jobs";
/// The login roles the server uses in the embedded default, one per pool.
pub const RUNTIME_LOGIN_ROLE: &str = "palisade_app";
pub const CREDENTIALS_LOGIN_ROLE: &str = "palisade_auth";
pub const JOBS_LOGIN_ROLE: &str = "palisade_worker";
/// The role that owns every schema object and runs migrations in the embedded default.
pub const OWNER_ROLE: &str = "palisade_owner";
/// The database name in the embedded default.
pub const DATABASE_NAME: &str = "palisade";

/// The three pools, each connected as its own role (deploy/roles.sql). No login role is
/// a member of another's group, so SQL on one pool cannot run another's functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Request handling: tenant SQL under a proven context (palisade_runtime).
    Request,
    /// Sign-in, sessions, refresh, reset, verification (palisade_credentials).
    Credentials,
    /// The background worker (palisade_jobs).
    Jobs,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Request, Lane::Credentials, Lane::Jobs];

    /// A short name, for metric labels and logs.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Request => "request",
            Lane::Credentials => "credentials",
            Lane::Jobs => "jobs",
        }
    }

    /// The NOLOGIN group role whose grants this lane's login role holds.
    pub fn group_role(self) -> &'static str {
        match self {
            Lane::Request => RUNTIME_GROUP_ROLE,
            Lane::Credentials => CREDENTIALS_GROUP_ROLE,
            Lane::Jobs => JOBS_GROUP_ROLE,
        }
    }

    /// The login role of the embedded default.
    pub fn default_login_role(self) -> &'static str {
        match self {
            Lane::Request => RUNTIME_LOGIN_ROLE,
            Lane::Credentials => CREDENTIALS_LOGIN_ROLE,
            Lane::Jobs => JOBS_LOGIN_ROLE,
        }
    }

    /// Timeouts the server sets in every transaction of this lane, whatever the role's
    /// own settings or the session's say (a role can `ALTER ROLE` itself, and request SQL
    /// can `SET` its session). deploy/roles.sql sets the same values as role defaults,
    /// and `palisade audit` reports any difference.
    pub fn timeouts(self) -> SessionTimeouts {
        match self {
            Lane::Request | Lane::Credentials => SessionTimeouts {
                statement_ms: 5_000,
                lock_ms: 2_000,
                idle_in_transaction_ms: 15_000,
            },
            Lane::Jobs => SessionTimeouts {
                statement_ms: 30_000,
                lock_ms: 2_000,
                idle_in_transaction_ms: 60_000,
            },
        }
    }
}

/// Statement, lock and idle-in-transaction timeouts of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    pub statement_ms: u64,
    pub lock_ms: u64,
    pub idle_in_transaction_ms: u64,
}

impl SessionTimeouts {
    /// As `pg_db_role_setting` holds them (`ALTER ROLE ... SET`), for the audit.
    pub fn as_role_settings(&self) -> [(&'static str, String); 3] {
        let fmt = |ms: u64| {
            if ms.is_multiple_of(1000) {
                format!("{}s", ms / 1000)
            } else {
                format!("{ms}ms")
            }
        };
        [
            ("statement_timeout", fmt(self.statement_ms)),
            ("lock_timeout", fmt(self.lock_ms)),
            (
                "idle_in_transaction_session_timeout",
                fmt(self.idle_in_transaction_ms),
            ),
        ]
    }

    /// `set local ...` for all three: the current transaction only.
    fn set_local_sql(&self) -> String {
        format!(
            "set local statement_timeout = {}; set local lock_timeout = {}; \
             set local idle_in_transaction_session_timeout = {}",
            self.statement_ms, self.lock_ms, self.idle_in_transaction_ms
        )
    }
}

/// Where each lane connects.
#[derive(Debug, Clone)]
pub struct Connections {
    pub request: tokio_postgres::Config,
    pub credentials: tokio_postgres::Config,
    pub jobs: tokio_postgres::Config,
}

impl Connections {
    pub fn get(&self, lane: Lane) -> &tokio_postgres::Config {
        match lane {
            Lane::Request => &self.request,
            Lane::Credentials => &self.credentials,
            Lane::Jobs => &self.jobs,
        }
    }
}

/// Pool sizes and behaviour.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    /// Request pool size (`DATABASE_POOL_SIZE`).
    pub request_size: usize,
    pub credentials_size: usize,
    pub jobs_size: usize,
    /// Bounds the wait for a free connection and for creating one (HTTP 503 after).
    pub timeout: Duration,
    /// `DATABASE_STATEMENT_CACHE`; see [`Statements`].
    pub statement_cache: bool,
}

/// Who a request transaction acts for: the session and its proof (the server's HMAC of
/// the session id, see `crate::crypto::SessionProofs`), and the org named in the route.
/// The user is not an input: the database derives it from the proven session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestContext {
    pub session_id: Uuid,
    pub proof: [u8; 32],
    /// The org named in the route (`/v1/orgs/{org_id}/...`), if any.
    pub org_id: Option<Uuid>,
}

/// The credential a request transaction's context statement proves.
#[derive(Debug, Clone, Copy)]
pub enum Context<'a> {
    /// A signed-in user's session (`app.set_request_context`), its proof as a slice,
    /// and the request's audit context (JSON: ip, user agent, request id), sealed with it
    /// for write transactions.
    Session(&'a RequestContext, &'a [u8], Option<&'a str>),
    /// An API key (`app.set_api_key_context`): the key itself, which the database
    /// matches by its SHA-256, the org named in the route, and the audit context.
    ApiKey {
        secret: &'a str,
        org_id: Option<Uuid>,
        meta: Option<&'a str>,
    },
}

impl Context<'_> {
    /// Whether the context names an org (a route under `/v1/orgs/{org_id}`).
    fn names_org(&self) -> bool {
        match self {
            Context::Session(c, _, _) => c.org_id.is_some(),
            Context::ApiKey { org_id, .. } => org_id.is_some(),
        }
    }
}

impl<'a> From<&'a RequestContext> for Context<'a> {
    fn from(ctx: &'a RequestContext) -> Self {
        Context::Session(ctx, &ctx.proof[..], None)
    }
}

/// One statement with its arguments and their types (the types are what an unnamed
/// statement is sent with, see [`Statements`]).
pub struct Call<'a> {
    pub sql: &'static str,
    pub types: &'static [Type],
    pub params: Vec<&'a (dyn ToSql + Sync)>,
}

/// GET requests run read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

impl Access {
    fn begin(self) -> &'static str {
        match self {
            Access::ReadOnly => "begin transaction read only",
            Access::ReadWrite => "begin",
        }
    }
}

/// Each lane's BEGIN, with its timeouts set for the transaction: SQL that changed them
/// for the session (`SET statement_timeout = 0` in one request) cannot lift them for the
/// next request on the same pooled connection. One simple-query message: the same round
/// trip as a bare BEGIN.
#[derive(Clone)]
struct BeginStatements {
    /// [lane][read-only, read-write]
    sql: Arc<[[String; 2]; 3]>,
}

impl BeginStatements {
    fn new() -> Self {
        let for_lane = |lane: Lane| {
            [Access::ReadOnly, Access::ReadWrite]
                .map(|a| format!("{}; {}", a.begin(), lane.timeouts().set_local_sql()))
        };
        Self {
            sql: Arc::new(Lane::ALL.map(for_lane)),
        }
    }

    fn get(&self, lane: Lane, access: Access) -> &str {
        let l = Lane::ALL.iter().position(|x| *x == lane).expect("a lane");
        &self.sql[l][usize::from(access == Access::ReadWrite)]
    }
}

#[derive(Clone)]
pub struct Db {
    request: Pool,
    credentials: Pool,
    jobs: Pool,
    statements: Statements,
    begins: BeginStatements,
    /// Read replicas (`DATABASE_REPLICA_URLS`), if any.
    replicas: Option<Arc<replicas::Replicas>>,
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

/// The request transaction's first statement (its role comes back as text: this module
/// knows no domain types).
const SET_CONTEXT_SQL: &str = "select app.set_request_context($1, $2, $3, $4::text::jsonb)::text";
const SET_CONTEXT_TYPES: [Type; 4] = [Type::UUID, Type::BYTEA, Type::UUID, Type::TEXT];
const SET_API_KEY_CONTEXT_SQL: &str =
    "select app.set_api_key_context($1, $2, $3::text::jsonb)::text";
const SET_API_KEY_CONTEXT_TYPES: [Type; 3] = [Type::TEXT, Type::UUID, Type::TEXT];

impl Context<'_> {
    /// The context statement.
    fn call(&self) -> Call<'_> {
        match self {
            Context::Session(c, proof, meta) => Call {
                sql: SET_CONTEXT_SQL,
                types: &SET_CONTEXT_TYPES,
                params: vec![&c.session_id, proof, &c.org_id, meta],
            },
            Context::ApiKey {
                secret,
                org_id,
                meta,
            } => Call {
                sql: SET_API_KEY_CONTEXT_SQL,
                types: &SET_API_KEY_CONTEXT_TYPES,
                params: vec![secret, org_id, meta],
            },
        }
    }
}

/// The email outbox at a glance (`app.email_outbox_stats()`): for metrics
/// ([`Db::outbox_stats`]) and `palisade outbox status`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutboxStats {
    /// Undelivered, never refused.
    pub waiting: i64,
    /// Undelivered after a failed attempt; will be tried again.
    pub retrying: i64,
    /// Undelivered emails given up after their last attempt.
    pub failed: i64,
    /// Undelivered and due now.
    pub due: i64,
    /// Age of the oldest email still to be tried, if any.
    pub oldest_pending_seconds: Option<f64>,
}

impl OutboxStats {
    pub const SQL: &str = "select waiting, retrying, failed, due, oldest_pending_seconds from app.email_outbox_stats()";

    pub fn from_row(row: &Row) -> Self {
        Self {
            waiting: row.get(0),
            retrying: row.get(1),
            failed: row.get(2),
            due: row.get(3),
            oldest_pending_seconds: row.get(4),
        }
    }

    /// Emails still to be tried (waiting or retrying).
    pub fn pending(&self) -> i64 {
        self.waiting + self.retrying
    }
}

/// What [`Db::read_pipelined`] answers: the limiter's row (it ran in its own
/// transaction, whatever became of the read), and the read's outcome.
pub struct Pipelined {
    pub limited: Option<Row>,
    pub role_and_rows: Result<(Option<String>, Vec<Row>), DbError>,
}

fn pool(config: &tokio_postgres::Config, size: usize, timeout: Duration) -> Pool {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .expect("pool with a runtime and timeouts builds")
}

impl Db {
    /// Three pools, one per [`Lane`], each connected as that lane's role.
    pub fn new(connections: &Connections, options: PoolOptions) -> Self {
        let size = |lane| match lane {
            Lane::Request => options.request_size,
            Lane::Credentials => options.credentials_size,
            Lane::Jobs => options.jobs_size,
        };
        let make = |lane| pool(connections.get(lane), size(lane), options.timeout);
        Self {
            request: make(Lane::Request),
            credentials: make(Lane::Credentials),
            jobs: make(Lane::Jobs),
            statements: if options.statement_cache {
                Statements::Cached
            } else {
                Statements::Unnamed(Arc::default())
            },
            begins: BeginStatements::new(),
            replicas: None,
        }
    }

    /// Sends read-only request transactions to these replicas (each a request-role
    /// connection to a streaming standby) while they keep within `max_lag` of the
    /// primary; see [`replicas`]. Starts their prober: call inside the runtime.
    pub fn with_replicas(
        mut self,
        configs: &[tokio_postgres::Config],
        options: &PoolOptions,
        max_lag: Duration,
    ) -> Self {
        if configs.is_empty() {
            return self;
        }
        let pools = configs
            .iter()
            .map(|c| pool(c, options.request_size, options.timeout))
            .collect();
        let replicas = replicas::Replicas::new(pools, max_lag);
        replicas.spawn_prober(self.request.clone());
        self.replicas = Some(replicas);
        self
    }

    /// The read replicas, if configured.
    pub fn replicas(&self) -> Option<&replicas::Replicas> {
        self.replicas.as_deref()
    }

    /// A transaction wrapper on one of a replica's connections.
    async fn connect_replica(&self, replica: &replicas::Replica) -> Result<Tx, DbError> {
        self.connect_to(&replica.pool).await
    }

    /// The rate-limit statement alone, on the primary, in its own implicit transaction
    /// (the read it guards runs on a replica, which cannot write).
    async fn limit_on_primary(&self, limiter: Option<&Call<'_>>) -> Result<Option<Row>, DbError> {
        if limiter.is_none() {
            return Ok(None);
        }
        let mut tx = self.connect(Lane::Request).await?;
        let prepared = tx.prepare_limiter(limiter).await?;
        let row = tx.query_opt_limiter(prepared.as_ref()).await;
        // No transaction was opened: the connection is clean either way, unless the
        // statement failed on the wire (Drop then discards it).
        tx.finished = row.is_ok();
        row
    }

    fn pool(&self, lane: Lane) -> &Pool {
        match lane {
            Lane::Request => &self.request,
            Lane::Credentials => &self.credentials,
            Lane::Jobs => &self.jobs,
        }
    }

    async fn connect(&self, lane: Lane) -> Result<Tx, DbError> {
        self.connect_to(self.pool(lane)).await
    }

    /// A transaction wrapper on a connection of `pool` (a lane's or a replica's).
    async fn connect_to(&self, pool: &Pool) -> Result<Tx, DbError> {
        Ok(Tx {
            client: Some(pool.get().await?),
            finished: false,
            org_role: None,
            statements: self.statements.clone(),
            commit_lsn: false,
        })
    }

    /// Whether a write transaction opened now should report its commit LSN: replicas
    /// are in use and the request can carry the token back.
    fn wants_commit_lsn(&self, access: Access) -> bool {
        access == Access::ReadWrite && self.replicas.is_some() && replicas::wants_commit_lsn()
    }

    /// Opens a request transaction. Its first statement proves the credential and binds
    /// the sealed context (`app.set_request_context` or `app.set_api_key_context`),
    /// pipelined with BEGIN in one round trip. Finish it with [`Tx::finish`]; dropping it
    /// unfinished (a cancelled request) discards the connection, so no transaction can
    /// outlive the request.
    pub async fn begin<'a>(
        &self,
        ctx: impl Into<Context<'a>>,
        access: Access,
    ) -> Result<Tx, DbError> {
        Ok(self.begin_limited(ctx.into(), None, access).await?.0)
    }

    /// [`Db::begin`], with `limiter` (a rate-limit statement) pipelined in front of the
    /// transaction, in its own implicit transaction: still one round trip. Returns its
    /// row, if it returned one.
    pub async fn begin_limited(
        &self,
        ctx: Context<'_>,
        limiter: Option<&Call<'_>>,
        access: Access,
    ) -> Result<(Tx, Option<Row>), DbError> {
        if access == Access::ReadOnly
            && let Some(replica) = self.replicas().and_then(replicas::Replicas::pick)
        {
            let on_replica = async {
                let tx = self.connect_replica(replica).await?;
                self.begin_context(tx, ctx, None, access).await
            };
            let (limited, begun) = tokio::join!(self.limit_on_primary(limiter), on_replica);
            let limited = limited?;
            match begun {
                Ok((tx, _)) if tx.org_role.is_some() || !ctx.names_org() => {
                    replica.served();
                    return Ok((tx, limited));
                }
                Ok((tx, _)) => drop(tx.finish(Ok::<(), DbError>(())).await),
                Err(err) => Self::replica_fallback(replica, err)?,
            }
            let tx = self.connect(Lane::Request).await?;
            return Ok((self.begin_context(tx, ctx, None, access).await?.0, limited));
        }
        let mut tx = self.connect(Lane::Request).await?;
        tx.commit_lsn = self.wants_commit_lsn(access);
        self.begin_context(tx, ctx, limiter, access).await
    }

    /// What a failed first round trip on a replica means: down (connection, pool) or
    /// not caught up with the credential -- the primary answers instead (`Ok`) -- or
    /// an answer of its own (`Err`).
    fn replica_fallback(replica: &replicas::Replica, err: DbError) -> Result<(), DbError> {
        match err.failure() {
            // Every connection busy: the replica is fine, only full.
            DbFailure::Unavailable
                if matches!(
                    err,
                    DbError::Pool(deadpool_postgres::PoolError::Timeout(
                        deadpool_postgres::TimeoutType::Wait
                    ))
                ) =>
            {
                Ok(())
            }
            DbFailure::Unavailable => {
                replica.mark_down(&err);
                Ok(())
            }
            DbFailure::SessionInactive | DbFailure::Rule { status: 401, .. } => Ok(()),
            _ => Err(err),
        }
    }

    /// BEGIN and the context statement (the limiter, if any, in front) on `tx`.
    async fn begin_context(
        &self,
        mut tx: Tx,
        ctx: Context<'_>,
        limiter: Option<&Call<'_>>,
        access: Access,
    ) -> Result<(Tx, Option<Row>), DbError> {
        let context = ctx.call();
        let prepared = tx.prepare_call(&context).await?;
        let limiter = tx.prepare_limiter(limiter).await?;
        // `biased`: polled in order, so the limiter, BEGIN and the context are written
        // in that order.
        let (limited, begun, row) = tokio::join!(
            biased;
            tx.query_opt_limiter(limiter.as_ref()),
            tx.client().batch_execute(self.begins.get(Lane::Request, access)),
            tx.query_one_prepared(context.sql, &prepared, &context.params)
        );
        begun?;
        let limited = limited?;
        match row {
            Ok(row) => tx.org_role = row.get(0),
            // e.g. a revoked session: roll back and keep the connection.
            Err(err) => {
                let failed: Result<(), DbError> = Err(err);
                return Err(tx.finish(failed).await.expect_err("stays an error"));
            }
        }
        Ok((tx, limited))
    }

    /// A transaction on a pool without a request context: the credential lane (whose
    /// functions check what they are given) or the worker's.
    pub async fn begin_on(&self, lane: Lane, access: Access) -> Result<Tx, DbError> {
        Ok(self.begin_on_limited(lane, None, access).await?.0)
    }

    /// [`Db::begin_on`] with a rate-limit statement pipelined in front, as in
    /// [`Db::begin_limited`].
    pub async fn begin_on_limited(
        &self,
        lane: Lane,
        limiter: Option<&Call<'_>>,
        access: Access,
    ) -> Result<(Tx, Option<Row>), DbError> {
        debug_assert!(
            lane != Lane::Request,
            "request transactions carry a context"
        );
        let mut tx = self.connect(lane).await?;
        tx.commit_lsn = self.wants_commit_lsn(access);
        let limiter = tx.prepare_limiter(limiter).await?;
        let (limited, begun) = tokio::join!(
            biased;
            tx.query_opt_limiter(limiter.as_ref()),
            tx.client().batch_execute(self.begins.get(lane, access)),
        );
        begun?;
        Ok((tx, limited?))
    }

    /// A read-only request in one round trip: the rate-limit statement (if any), `begin
    /// transaction read only`, the context statement, `sql` and `commit` are pipelined
    /// (written together, answered in order). Returns the limiter's row, the caller's
    /// role in the context's org -- `None` when not a member, and then RLS has already
    /// made `rows` empty -- and the rows. A dead credential fails the context statement
    /// (PT401); PostgreSQL then skips `sql` and turns the `commit` into a rollback, so
    /// nothing runs without a valid context.
    pub async fn read_pipelined(
        &self,
        ctx: Context<'_>,
        limiter: Option<&Call<'_>>,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Pipelined, DbError> {
        let Some(replica) = self.replicas().and_then(replicas::Replicas::pick) else {
            let tx = self.connect(Lane::Request).await?;
            return self.pipelined_on(tx, ctx, limiter, sql, params).await;
        };
        let on_replica = async {
            let tx = self.connect_replica(replica).await?;
            self.pipelined_on(tx, ctx, None, sql, params).await
        };
        let (limited, read) = tokio::join!(self.limit_on_primary(limiter), on_replica);
        let limited = limited?;
        match read.map(|r| r.role_and_rows) {
            Ok(Ok((Some(role), rows))) => {
                replica.served();
                return Ok(Pipelined {
                    limited,
                    role_and_rows: Ok((Some(role), rows)),
                });
            }
            // Not a member there: perhaps not yet (the primary decides).
            Ok(Ok((None, _))) => {}
            Ok(Err(err)) | Err(err) => Self::replica_fallback(replica, err)?,
        }
        let tx = self.connect(Lane::Request).await?;
        let read = self.pipelined_on(tx, ctx, None, sql, params).await?;
        Ok(Pipelined {
            limited,
            role_and_rows: read.role_and_rows,
        })
    }

    /// [`Db::read_pipelined`] on the connection of `tx` (the primary's or a replica's).
    async fn pipelined_on(
        &self,
        mut tx: Tx,
        ctx: Context<'_>,
        limiter: Option<&Call<'_>>,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Pipelined, DbError> {
        let context = ctx.call();
        let prepared = tx.prepare_call(&context).await?;
        let limiter = tx.prepare_limiter(limiter).await?;
        let mut query = tx.prepare(sql, params).await?;
        if matches!(query, Prepared::Learning(_)) {
            // First use of this SQL without a statement cache: its types are known now.
            query = tx.prepare(sql, params).await?;
        }
        let client = tx.client();
        let (limited, begun, role, rows, committed) = tokio::join!(
            biased;
            tx.query_opt_limiter(limiter.as_ref()),
            client.batch_execute(self.begins.get(Lane::Request, Access::ReadOnly)),
            tx.query_one_prepared(context.sql, &prepared, &context.params),
            tx.query_prepared(sql, &query, params),
            client.batch_execute("commit"),
        );
        // After a failed commit the connection's state is unknown: Drop discards it.
        tx.finished = committed.is_ok();
        let limited = limited?;
        begun?;
        let role = role.map(|r| r.get(0));
        Ok(Pipelined {
            limited,
            role_and_rows: match (role, rows, committed) {
                (Ok(role), Ok(rows), Ok(())) => Ok((role, rows)),
                (Err(e), _, _) | (_, Err(e), _) => Err(e),
                (_, _, Err(e)) => Err(e.into()),
            },
        })
    }

    /// A pool's size, idle connections and waiters right now (for metrics).
    pub fn pool_status(&self, lane: Lane) -> deadpool_postgres::Status {
        self.pool(lane).status()
    }

    /// The email outbox's depth and age (`app.email_outbox_stats()`, the worker's lane).
    pub async fn outbox_stats(&self) -> Result<OutboxStats, DbError> {
        let tx = self.begin_on(Lane::Jobs, Access::ReadOnly).await?;
        let row = tx.query_one(OutboxStats::SQL, &[]).await;
        Ok(OutboxStats::from_row(&tx.finish(row).await?))
    }

    /// Newest applied migration (GET /ready), on the request pool.
    pub async fn schema_version(&self) -> Result<Option<i32>, DbError> {
        let client = self.request.get().await?;
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

/// Results carry built-in types only: a query selects an app-defined type as text
/// (`role::text`). With unnamed statements (PgBouncer mode) tokio-postgres would look an
/// unknown result type up with a query of its own, after the statement ran -- and if the
/// statement failed, inside an aborted transaction, replacing its real error (a 409)
/// with "transaction aborted". Checked in debug builds, so the suite catches a query that
/// forgets.
fn debug_check_result_types(rows: &[Row]) {
    /// The first OID PostgreSQL gives to user-defined objects (`FirstNormalObjectId`).
    const FIRST_USER_OID: u32 = 16_384;
    if let Some(row) = rows.first() {
        for column in row.columns() {
            debug_assert!(
                column.type_().oid() < FIRST_USER_OID,
                "column `{}` has the app-defined type {}: select it as text",
                column.name(),
                column.type_().name()
            );
        }
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

/// A transaction on one of the pools. All SQL goes through it; statements are prepared
/// once per connection and cached (or sent unnamed, see [`Statements`]).
pub struct Tx {
    client: Option<Object>,
    finished: bool,
    org_role: Option<String>,
    statements: Statements,
    /// A write while replicas are in use: its commit reports the WAL position reached
    /// (the request's consistency token, see [`replicas`]).
    commit_lsn: bool,
}

impl Tx {
    fn client(&self) -> &Object {
        self.client
            .as_ref()
            .expect("client present until the transaction ends")
    }

    /// The caller's role (as text) in the org of the context, if they are a member.
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

    async fn prepare_call<'a>(&self, call: &'a Call<'a>) -> Result<Prepared<'a>, DbError> {
        match &self.statements {
            Statements::Cached => Ok(Prepared::Cached(
                self.client().prepare_cached(call.sql).await?,
            )),
            Statements::Unnamed(_) => Ok(Prepared::Typed(
                call.params
                    .iter()
                    .copied()
                    .zip(call.types.iter().cloned())
                    .collect(),
            )),
        }
    }

    /// The rate-limit statement, if any, ready to pipeline.
    async fn prepare_limiter<'a>(
        &self,
        limiter: Option<&'a Call<'a>>,
    ) -> Result<Option<(&'a Call<'a>, Prepared<'a>)>, DbError> {
        Ok(match limiter {
            Some(call) => Some((call, self.prepare_call(call).await?)),
            None => None,
        })
    }

    /// A rate-limit statement's row (none when it returns none, or when there is none).
    async fn query_opt_limiter(
        &self,
        limiter: Option<&(&Call<'_>, Prepared<'_>)>,
    ) -> Result<Option<Row>, DbError> {
        let Some((call, prepared)) = limiter else {
            return Ok(None);
        };
        let client = self.client();
        let row = match prepared {
            Prepared::Cached(stmt) | Prepared::Learning(stmt) => {
                client.query_opt(stmt, &call.params).await?
            }
            Prepared::Typed(typed) => client.query_typed_opt(call.sql, typed).await?,
        };
        debug_check_result_types(row.as_slice());
        Ok(row)
    }

    async fn query_prepared(
        &self,
        sql: &str,
        prepared: &Prepared<'_>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let client = self.client();
        let rows = match prepared {
            Prepared::Cached(stmt) | Prepared::Learning(stmt) => client.query(stmt, params).await?,
            Prepared::Typed(typed) => client.query_typed(sql, typed).await?,
        };
        debug_check_result_types(&rows);
        Ok(rows)
    }

    async fn query_one_prepared(
        &self,
        sql: &str,
        prepared: &Prepared<'_>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, DbError> {
        let client = self.client();
        let row = match prepared {
            Prepared::Cached(stmt) | Prepared::Learning(stmt) => {
                client.query_one(stmt, params).await?
            }
            Prepared::Typed(typed) => client.query_typed_one(sql, typed).await?,
        };
        debug_check_result_types(std::slice::from_ref(&row));
        Ok(row)
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
        let row = match self.prepare(sql, params).await? {
            Prepared::Cached(stmt) | Prepared::Learning(stmt) => {
                client.query_opt(&stmt, params).await?
            }
            Prepared::Typed(typed) => client.query_typed_opt(sql, &typed).await?,
        };
        debug_check_result_types(row.as_slice());
        Ok(row)
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
        if self.commit_lsn && result.is_ok() {
            return self.commit_with_lsn(result).await;
        }
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

impl Tx {
    /// COMMIT and the WAL position after it, in one round trip (simple protocol); the
    /// position is recorded as the request's consistency token.
    async fn commit_with_lsn<T, E: From<DbError>>(mut self, result: Result<T, E>) -> Result<T, E> {
        let answered = self
            .client()
            .simple_query("commit; select pg_catalog.pg_current_wal_lsn()::text")
            .await;
        match answered {
            Ok(messages) => {
                self.finished = true;
                let lsn = messages.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        row.get(0).and_then(replicas::Lsn::parse)
                    }
                    _ => None,
                });
                if let Some(lsn) = lsn {
                    replicas::record_commit(lsn);
                }
                result
            }
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
