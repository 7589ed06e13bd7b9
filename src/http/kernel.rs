//! The request kernel: the one way a handler reaches the database.
//!
//! The security layer resolves a [`Principal`] once (a signed-in user today; an API key
//! next). A handler then runs its SQL through one of these, and the kernel does the rest:
//! the transaction (read-only for reads), the context statement that proves the session
//! and binds the sealed context, the membership check (not a member: 404, before any
//! handler SQL runs), commit or rollback, and the error mapping. A tenant resource
//! handler is its SQL and its types:
//!
//! ```text
//! let project = state.in_org(auth.principal(), org_id, Access::ReadWrite, async |tx| {
//!     let row = tx.query_one(INSERT_PROJECT, &[&name, &description]).await?;
//!     Ok(Project::from(&row))
//! }).await?;
//! ```

use std::ops::Deref;

use tokio_postgres::{Row, types::ToSql};
use uuid::Uuid;

use super::problem::ApiError;
use crate::{
    db::{Access, Lane, RequestContext, Tx},
    domain::Role,
    state::AppState,
};

/// Who is calling, resolved once by the security layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    /// The signed-in user (the access token's `sub`).
    pub user_id: Uuid,
    /// Their session (the token's `sid`), proven to the database on every request.
    pub session_id: Uuid,
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
    fn context(&self, principal: &Principal, org_id: Option<Uuid>) -> RequestContext {
        RequestContext {
            session_id: principal.session_id,
            proof: self.proofs.proof(principal.session_id),
            org_id,
        }
    }

    /// Runs `f` in one transaction in org `org_id` as `principal`. Not a member (or no
    /// such org): 404, and `f` does not run.
    pub async fn in_org<T>(
        &self,
        principal: &Principal,
        org_id: Uuid,
        access: Access,
        f: impl AsyncFnOnce(&OrgTx) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let tx = self
            .db
            .begin(&self.context(principal, Some(org_id)), access)
            .await?;
        let role = match role_of(tx.org_role()) {
            Ok(Some(role)) => role,
            Ok(None) => return tx.finish(Err(org_not_found())).await,
            Err(e) => return tx.finish(Err(e)).await,
        };
        let org_tx = OrgTx { tx, org_id, role };
        let result = f(&org_tx).await;
        org_tx.tx.finish(result).await
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
        let (role, rows) = self
            .db
            .read_pipelined(&self.context(principal, Some(org_id)), sql, params)
            .await?;
        match role_of(role.as_deref())? {
            Some(_) => Ok(rows),
            None => Err(org_not_found()),
        }
    }

    /// Runs `f` in one transaction as `principal`, in no org: the user's own data.
    pub async fn as_user<T>(
        &self,
        principal: &Principal,
        access: Access,
        f: impl AsyncFnOnce(&Tx) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let tx = self
            .db
            .begin(&self.context(principal, None), access)
            .await?;
        let result = f(&tx).await;
        tx.finish(result).await
    }

    /// Runs `f` in one transaction on the credential pool (sign-in, refresh, reset,
    /// verification, invitation lookup): no request context; its functions check what
    /// they are given. Committed on `Ok`.
    pub async fn as_credentials<T>(
        &self,
        access: Access,
        f: impl AsyncFnOnce(&Tx) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let tx = self.db.begin_on(Lane::Credentials, access).await?;
        let result = f(&tx).await;
        tx.finish(result).await
    }
}
