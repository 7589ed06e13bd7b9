//! Tenancy: organizations, their members and roles, invitations, API keys, the audit log,
//! settings and secrets. Every rule (who may
//! change whom, the owner role, the last owner) is enforced in PostgreSQL, by the RLS
//! policies and security definer functions of policies/orgs.sql, memberships.sql,
//! invitations.sql and functions_orgs.sql; these handlers translate HTTP.

pub mod api_keys;
pub mod audit_log;
pub mod invitations;
pub mod members;
pub mod orgs;
pub mod secrets;
pub mod settings;

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{
    db::Tx,
    domain::Role,
    http::{kernel::OrgTx, problem::ApiError},
};

/// An organization, with the caller's role in it.
#[derive(Object, serde::Serialize, Debug, Clone)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    /// Unique across all organizations.
    pub slug: String,
    /// The organization created with the account; it cannot be deleted.
    pub personal: bool,
    /// The caller's role.
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The caller's organizations: `o` is app.orgs, `m` their membership.
pub(crate) const ORGS_OF_CALLER: &str =
    "select o.id, o.name, o.slug, o.personal, m.role::text, o.created_at, o.updated_at
       from app.orgs o join app.memberships m on m.org_id = o.id
      where m.user_id = app.current_user_id()";

impl From<&Row> for Organization {
    fn from(r: &Row) -> Self {
        Self {
            id: r.get(0),
            name: r.get(1),
            slug: r.get(2),
            personal: r.get(3),
            role: r.get(4),
            created_at: r.get(5),
            updated_at: r.get(6),
        }
    }
}

/// The caller's view of one organization (with their role); 404 unless a member.
pub(crate) async fn load_org(tx: &Tx, org_id: Uuid) -> Result<Organization, ApiError> {
    tx.query_opt(&format!("{ORGS_OF_CALLER} and o.id = $1"), &[&org_id])
        .await?
        .as_ref()
        .map(Organization::from)
        .ok_or_else(crate::http::kernel::org_not_found)
}

/// The org of a request in org context, with the caller's role as the context holds it
/// (for an API key: its effective role).
pub(crate) async fn load_org_in_context(tx: &OrgTx) -> Result<Organization, ApiError> {
    tx.query_opt(
        "select o.id, o.name, o.slug, o.personal, app.current_org_role()::text, o.created_at,
                o.updated_at
           from app.orgs o where o.id = $1",
        &[&tx.org_id()],
    )
    .await?
    .as_ref()
    .map(Organization::from)
    .ok_or_else(crate::http::kernel::org_not_found)
}
