//! The request kernel: the one way a handler reaches the database.
//!
//! The security layer resolves a [`Principal`] once (a signed-in user, or an API key). A
//! handler then runs its SQL through one of these, and the kernel does the rest: the rate
//! limit (one statement pipelined in front, see `crate::limits`), the transaction
//! (read-only for reads), the context statement that proves the credential and binds the
//! sealed context, the membership check (not a member: 404, before any handler SQL
//! runs), commit or rollback, and the error mapping. A tenant resource
//! handler is its SQL and its types:
//!
//! ```text
//! let project = state.in_org(auth.principal(), org_id, Access::ReadWrite, async |tx| {
//!     let row = tx.query_one(INSERT_PROJECT, &[&name, &description]).await?;
//!     Ok(Project::from(&row))
//! }).await?;
//! ```

use std::ops::Deref;

use tokio_postgres::{
    Row,
    types::{ToSql, Type},
};
use uuid::Uuid;

use super::{
    problem::ApiError,
    security::{Principal, api_key_not_allowed},
};
use crate::{
    db::{Access, Call, Context, Lane, RequestContext, Tx},
    domain::Role,
    limits::{self, Decision, Quota, Scope, Subject},
    state::AppState,
};

const RATE_LIMIT_SESSION_SQL: &str = "select admitted, remaining, reset_s, retry_after_s, quota \
     from app.rate_limit_session($1, $2, $3, $4, $5, $6)";
const RATE_LIMIT_SESSION_TYPES: [Type; 6] = [
    Type::UUID,
    Type::BYTEA,
    Type::UUID,
    Type::INT4,
    Type::INT4,
    Type::BOOL,
];
const RATE_LIMIT_API_KEY_SQL: &str = "select admitted, remaining, reset_s, retry_after_s, quota \
     from app.rate_limit_api_key($1, $2, $3, $4)";
const RATE_LIMIT_API_KEY_TYPES: [Type; 4] = [Type::TEXT, Type::INT4, Type::INT4, Type::BOOL];
const RATE_LIMIT_IP_SQL: &str =
    "select admitted, remaining, reset_s, retry_after_s from app.rate_limit_ip($1, $2, $3)";
const RATE_LIMIT_IP_TYPES: [Type; 3] = [Type::INET, Type::INT4, Type::INT4];

/// The 429 for a refused request.
fn rate_limited(d: &Decision) -> ApiError {
    ApiError {
        retry_after: Some(u64::from(d.retry_after_secs.max(1))),
        ..ApiError::new(
            poem::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "rate limit of {} requests per {} s exceeded ({} limit); retry after {} s",
                d.quota.quota,
                d.quota.window.as_secs(),
                d.scope.policy_name(),
                d.retry_after_secs.max(1)
            ),
        )
    }
}

/// The statements in front of a request, for one caller: its context statement and its
/// rate-limit statement, with the values they borrow.
struct Caller<'p> {
    who: Who<'p>,
    org_id: Option<Uuid>,
    scope: Scope,
    quota: Option<Quota>,
    limit: Option<i32>,
    window: Option<i32>,
    /// Count this request as an API call of the org (`USAGE_METERING`).
    meter: bool,
}

enum Who<'p> {
    User { user_id: Uuid, ctx: RequestContext },
    Key(&'p str),
    Anonymous(Option<std::net::IpAddr>),
}

impl Caller<'_> {
    /// The context statement, with the audit context `meta` of a write transaction.
    fn context<'a>(&'a self, meta: Option<&'a str>) -> Option<Context<'a>> {
        match &self.who {
            Who::User { ctx, .. } => Some(Context::Session(ctx, &ctx.proof[..], meta)),
            Who::Key(secret) => Some(Context::ApiKey {
                secret,
                org_id: self.org_id,
                meta,
            }),
            Who::Anonymous(_) => None,
        }
    }

    /// The rate-limit statement, which also meters the request. A key's always runs (it
    /// records the key's last use); the others under a limit or, in an org, metering --
    /// once per request.
    fn limiter(&self) -> Option<Call<'_>> {
        let limited = self.limit.is_some() && !limits::counted();
        let metered = self.meter && self.org_id.is_some() && !limits::counted();
        match &self.who {
            Who::User { ctx, .. } => (limited || metered).then(|| Call {
                sql: RATE_LIMIT_SESSION_SQL,
                types: &RATE_LIMIT_SESSION_TYPES,
                params: vec![
                    &ctx.session_id,
                    &ctx.proof,
                    &ctx.org_id,
                    &self.limit,
                    &self.window,
                    &self.meter,
                ],
            }),
            // Once counted, a key's later transactions in the same request (or its
            // streamed body) take no second token, like a user's.
            Who::Key(secret) => (!limits::counted()).then(|| Call {
                sql: RATE_LIMIT_API_KEY_SQL,
                types: &RATE_LIMIT_API_KEY_TYPES,
                params: vec![secret, &self.limit, &self.window, &self.meter],
            }),
            Who::Anonymous(ip) => (limited && ip.is_some()).then(|| Call {
                sql: RATE_LIMIT_IP_SQL,
                types: &RATE_LIMIT_IP_TYPES,
                params: vec![ip, &self.limit, &self.window],
            }),
        }
    }

    fn subject(&self) -> Subject {
        match &self.who {
            Who::User { user_id, .. } => Subject::of(self.scope, (user_id, self.org_id)),
            Who::Key(secret) => Subject::of(self.scope, secret),
            Who::Anonymous(ip) => Subject::of(self.scope, ip),
        }
    }

    /// What the limiter's row says, if it counted this request. The quota is the row's
    /// when it has one (the org's plan may lower the configured limit).
    fn decision(&self, row: Option<Row>) -> Option<Decision> {
        let (row, mut quota) = (row?, self.quota?);
        let secs = |i: usize| u32::try_from(row.get::<_, Option<i32>>(i).unwrap_or(0)).unwrap_or(0);
        if row.len() > 4
            && let Some(q) = row.get::<_, Option<i32>>(4)
        {
            quota.quota = u32::try_from(q).unwrap_or(quota.quota);
        }
        Some(Decision {
            scope: self.scope,
            quota,
            admitted: row.get::<_, Option<bool>>(0)?,
            remaining: secs(1),
            reset_secs: secs(2),
            retry_after_secs: secs(3),
        })
    }
}

/// A request transaction in the org of the route, for a member of it.
pub struct OrgTx {
    tx: Tx,
    org_id: Uuid,
    role: Role,
}

impl OrgTx {
    /// The org of the route.
    pub fn org_id(&self) -> Uuid {
        self.org_id
    }

    /// The caller's role in it, as read by the context statement.
    pub fn role(&self) -> Role {
        self.role
    }

    /// For what only signed-in admins and owners may read (API keys, billing): 403 for
    /// lower roles and for API keys, decided by the database (the select policies would
    /// otherwise answer an empty list).
    pub async fn require_signed_in_admin(&self) -> Result<(), ApiError> {
        self.tx
            .execute(
                "select app.require_signed_in_user() and app.require_role('admin')",
                &[],
            )
            .await?;
        Ok(())
    }
}

impl Deref for OrgTx {
    type Target = Tx;
    fn deref(&self) -> &Tx {
        &self.tx
    }
}

/// The answer for an org the caller is not a member of, or that does not exist: the
/// same, so another tenant's org is never confirmed to exist.
pub fn org_not_found() -> ApiError {
    ApiError::not_found("organization")
}

fn role_of(text: Option<&str>) -> Result<Option<Role>, ApiError> {
    text.map(|t| {
        Role::parse(t)
            .ok_or_else(|| ApiError::internal(&format!("unknown role from the database: {t}")))
    })
    .transpose()
}

impl AppState {
    fn caller<'p>(&self, principal: &'p Principal, org_id: Option<Uuid>) -> Caller<'p> {
        let (who, scope) = match principal {
            Principal::User {
                user_id,
                session_id,
            } => (
                Who::User {
                    user_id: *user_id,
                    ctx: RequestContext {
                        session_id: *session_id,
                        proof: self.proofs.proof(*session_id),
                        org_id,
                    },
                },
                Scope::User,
            ),
            Principal::ApiKey(secret) => (Who::Key(secret.expose()), Scope::ApiKey),
        };
        self.caller_as(who, org_id, scope)
    }

    fn caller_as<'p>(&self, who: Who<'p>, org_id: Option<Uuid>, scope: Scope) -> Caller<'p> {
        let quota = self.rate_limits.get(scope);
        let (limit, window) = quota.map(Quota::sql_args).unzip();
        Caller {
            who,
            org_id,
            scope,
            quota,
            limit,
            window,
            meter: self.usage_metering && scope != Scope::Ip,
        }
    }

    /// The request's audit context (JSON), built only for a write transaction: reads
    /// write no audit rows and skip the work.
    fn audit_meta(&self, access: Access) -> Option<String> {
        (access == Access::ReadWrite)
            .then(|| limits::audit_meta(&self.trusted_proxies))
            .flatten()
    }

    /// A refusal still in force for this caller (no database work), recorded for the
    /// response headers.
    fn still_refused(&self, caller: &Caller<'_>) -> Result<(), ApiError> {
        if limits::counted() {
            return Ok(());
        }
        match self.refusals.check(caller.subject()) {
            Some(refused) => {
                limits::record(refused);
                Err(rate_limited(&refused))
            }
            None => Ok(()),
        }
    }

    /// Records the limiter's decision; a refusal is remembered and answered 429.
    fn admit(&self, caller: &Caller<'_>, row: Option<Row>) -> Result<(), ApiError> {
        let Some(decision) = caller.decision(row) else {
            return Ok(());
        };
        limits::record(decision);
        if decision.admitted {
            Ok(())
        } else {
            self.refusals.remember(caller.subject(), decision);
            Err(rate_limited(&decision))
        }
    }

    /// Opens the request transaction for `caller`, its limiter pipelined in front.
    async fn open(&self, caller: &Caller<'_>, access: Access) -> Result<Tx, ApiError> {
        self.still_refused(caller)?;
        let meta = self.audit_meta(access);
        let context = caller
            .context(meta.as_deref())
            .expect("a request caller has a context");
        let limiter = caller.limiter();
        let (tx, limited) = self
            .db
            .begin_limited(context, limiter.as_ref(), access)
            .await?;
        match self.admit(caller, limited) {
            Ok(()) => Ok(tx),
            Err(refused) => tx.finish(Err(refused)).await,
        }
    }

    /// Runs `f` in one transaction in org `org_id` as `principal`. Not a member (or no
    /// such org, or an API key of another org): 404, and `f` does not run.
    pub async fn in_org<T>(
        &self,
        principal: &Principal,
        org_id: Uuid,
        access: Access,
        f: impl AsyncFnOnce(&OrgTx) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let caller = self.caller(principal, Some(org_id));
        let tx = self.open(&caller, access).await?;
        let role = match role_of(tx.org_role()) {
            Ok(Some(role)) => role,
            Ok(None) => return tx.finish(Err(org_not_found())).await,
            Err(e) => return tx.finish(Err(e)).await,
        };
        let org_tx = OrgTx { tx, org_id, role };
        let result = f(&org_tx).await;
        org_tx.tx.finish(result).await
    }

    /// One DELETE in org `org_id` as `principal`; no row deleted (it does not exist, or
    /// the policies hide it from the caller) is `not_found()`.
    pub async fn delete_in_org(
        &self,
        principal: &Principal,
        org_id: Uuid,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        not_found: fn() -> ApiError,
    ) -> Result<(), ApiError> {
        self.in_org(principal, org_id, Access::ReadWrite, async |tx| {
            match tx.execute(sql, params).await? {
                0 => Err(not_found()),
                _ => Ok(()),
            }
        })
        .await
    }

    /// One read-only statement in org `org_id` as `principal`, in a single round trip
    /// (see `Db::read_pipelined`). Not a member: 404.
    pub async fn read_in_org(
        &self,
        principal: &Principal,
        org_id: Uuid,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ApiError> {
        let caller = self.caller(principal, Some(org_id));
        self.still_refused(&caller)?;
        let context = caller
            .context(None)
            .expect("a request caller has a context");
        let limiter = caller.limiter();
        let read = self
            .db
            .read_pipelined(context, limiter.as_ref(), sql, params)
            .await?;
        // The limiter ran in its own transaction: a refusal wins over the read's result.
        self.admit(&caller, read.limited)?;
        let (role, rows) = read.role_and_rows?;
        match role_of(role.as_deref())? {
            Some(_) => Ok(rows),
            None => Err(org_not_found()),
        }
    }

    /// Runs `f` in one transaction as `principal`, in no org: the user's own data. API
    /// keys have none (403 `api_key_not_allowed`).
    pub async fn as_user<T>(
        &self,
        principal: &Principal,
        access: Access,
        f: impl AsyncFnOnce(&Tx) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        if let Principal::ApiKey(_) = principal {
            return Err(api_key_not_allowed());
        }
        let caller = self.caller(principal, None);
        let tx = self.open(&caller, access).await?;
        let result = f(&tx).await;
        tx.finish(result).await
    }

    /// Runs `f` in one transaction on the credential pool for a sender whose request was
    /// authenticated before any SQL (a Stripe webhook: its signature, checked in memory):
    /// no per-IP limit -- Stripe delivers bursts from a few addresses, and a forged
    /// delivery never gets this far. Committed on `Ok`.
    pub async fn as_verified_sender<T>(
        &self,
        access: Access,
        f: impl AsyncFnOnce(&Tx) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let tx = self.db.begin_on(Lane::Credentials, access).await?;
        if let Err(e) = self.bind_meta(&tx, access).await {
            return tx.finish(Err(e)).await;
        }
        let result = f(&tx).await;
        tx.finish(result).await
    }

    /// Seals the request's address, user agent and id into a credential-lane write
    /// transaction, for the audit rows it writes (as a request context carries them).
    async fn bind_meta(&self, tx: &Tx, access: Access) -> Result<(), ApiError> {
        if let Some(meta) = self.audit_meta(access) {
            tx.execute("select app.bind_request_meta($1::text::jsonb)", &[&meta])
                .await?;
        }
        Ok(())
    }

    /// Runs `f` in one transaction on the credential pool (sign-in, refresh, reset,
    /// verification, invitation lookup): no request context; its functions check what
    /// they are given. Rate limited per client IP (the first such transaction of a
    /// request counts it). Committed on `Ok`.
    pub async fn as_credentials<T>(
        &self,
        access: Access,
        f: impl AsyncFnOnce(&Tx) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let caller = self.caller_as(
            Who::Anonymous(limits::client_ip(&self.trusted_proxies)),
            None,
            Scope::Ip,
        );
        self.still_refused(&caller)?;
        let limiter = caller.limiter();
        let (tx, limited) = self
            .db
            .begin_on_limited(Lane::Credentials, limiter.as_ref(), access)
            .await?;
        if let Err(refused) = self.admit(&caller, limited) {
            return tx.finish(Err(refused)).await;
        }
        // What this lane writes to the audit log (sign-ins, registrations, resets) carries
        // the request's address, user agent and id, sealed like a request context's.
        if let Err(e) = self.bind_meta(&tx, access).await {
            return tx.finish(Err(e)).await;
        }
        let result = f(&tx).await;
        tx.finish(result).await
    }
}
