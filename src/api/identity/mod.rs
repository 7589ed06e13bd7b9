//! Identity: accounts, sign-in and sessions, the signed-in user, email verification and
//! password reset. Credential operations run on the credential pool (its role alone may
//! execute them); what a signed-in user does with their own account runs as them, on the
//! request pool, through the kernel.

pub mod auth;
pub mod credentials;
pub mod me;
pub mod sessions;
pub mod verification;

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::{ApiResponse, Object};
use tokio_postgres::Row;
use uuid::Uuid;

use super::tenancy::{ORGS_OF_CALLER, Organization};
use crate::{
    auth::common_passwords,
    db::Tx,
    http::{problem::ApiError, validate::Validator},
};

/// A signed-in session's tokens.
#[derive(Object)]
pub struct TokenResponse {
    /// A JWT to send as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Opaque, single-use: exchange it at `POST /v1/auth/refresh` for a new pair.
    /// Valid until the session ends (30 days after sign-in at most).
    pub refresh_token: String,
}

#[derive(ApiResponse)]
pub enum NoContentResponse {
    /// Done.
    #[oai(status = 204)]
    NoContent,
}

/// An account.
#[derive(Object, Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub email_verified: bool,
    /// The organization the user works in by default: the one they chose, else their
    /// personal organization.
    pub current_org_id: Uuid,
    pub created_at: DateTime<Utc>,
}

/// The signed-in user and their organizations.
#[derive(Object)]
pub struct Me {
    pub user: User,
    /// Every organization the user belongs to, with their role.
    pub organizations: Vec<Organization>,
}

/// `current_org_id` falls back to the personal org (app.personal_org_of, the one rule)
/// when the current one was deleted (the foreign key then sets it to null).
const USER: &str = "select id, email, name, email_verified_at is not null,
        coalesce(current_org_id, app.personal_org_of(id)), created_at
   from app.users where id = app.current_user_id()";

impl TryFrom<&Row> for User {
    type Error = ApiError;

    fn try_from(r: &Row) -> Result<Self, ApiError> {
        Ok(Self {
            id: r.get(0),
            email: r.get(1),
            name: r.get(2),
            email_verified: r.get(3),
            // Never null: a personal org cannot be deleted, and its last owner cannot leave.
            current_org_id: r
                .try_get(4)
                .map_err(|_| ApiError::internal(&"a user without a personal organization"))?,
            created_at: r.get(5),
        })
    }
}

/// The user in context and their organizations.
pub(crate) async fn load_me(tx: &Tx) -> Result<Me, ApiError> {
    let user = tx
        .query_opt(USER, &[])
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid_token", "the account no longer exists"))?;
    let orgs = tx
        .query(
            &format!("{ORGS_OF_CALLER} order by o.created_at, o.id"),
            &[],
        )
        .await?;
    Ok(Me {
        user: User::try_from(&user)?,
        organizations: orgs.iter().map(Organization::from).collect(),
    })
}

/// What a schema cannot say about a new password: it must not be a common one. (Its
/// length, 10-128 characters, is the `NewPassword` type's.)
pub(crate) fn check_new_password(field: &str, password: &str) -> Result<(), ApiError> {
    let mut v = Validator::new();
    if common_passwords::is_common(password) {
        v.add(
            field,
            "too_common",
            "is one of the most common passwords; choose another",
        );
    }
    v.finish()
}

/// The client's user agent and address, recorded on its session.
pub(crate) fn client_info(req: &Request) -> (Option<String>, Option<IpAddr>) {
    let ua = req
        .headers()
        .get(poem::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(512).collect());
    let peer = req.remote_addr().as_socket_addr().map(|a| a.ip());
    let ip = match req.data::<crate::state::State>() {
        Some(state) => state
            .trusted_proxies
            .client_ip(peer, &crate::limits::forwarded_for(req.headers())),
        None => peer,
    };
    (ua, ip)
}
