//! The signed-in user's sessions (devices): list them, revoke one, revoke all others.
//! Revocation is one-way (policies/functions_sessions.sql) and takes effect on the very
//! next request.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use uuid::Uuid;

use super::NoContentResponse;
use crate::{
    api::ApiTags,
    db::Access,
    error_set,
    http::{
        errors::{AUTHENTICATED, Problems},
        problem::ApiError,
        security::BearerAuth,
    },
    state::State,
};

pub struct SessionsApi;

/// A live sign-in session of the current user.
#[derive(Object)]
pub struct Session {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    /// When a refresh token of this session was last exchanged.
    pub last_used_at: DateTime<Utc>,
    /// Absolute end of the session (30 days after sign-in).
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// True for the session of the token making this request.
    pub current: bool,
}

#[derive(Object)]
pub struct SessionList {
    /// Newest first.
    pub items: Vec<Session>,
}

#[derive(Object)]
pub struct RevokedCount {
    /// How many sessions were revoked.
    pub revoked: u64,
}

#[derive(ApiResponse)]
pub enum SessionListResponse {
    /// The user's live sessions.
    #[oai(status = 200)]
    Ok(Json<SessionList>),
}

#[derive(ApiResponse)]
pub enum RevokeOthersResponse {
    /// Every other session of the user is revoked.
    #[oai(status = 200)]
    Ok(Json<RevokedCount>),
}

error_set! {
    pub SessionErrors: [AUTHENTICATED] {}
    pub RevokeSessionErrors: [AUTHENTICATED] {
        404 => "No live session with this id belongs to the user (`not_found`).",
    }
}

#[OpenApi(tag = "ApiTags::Auth")]
impl SessionsApi {
    /// List my sessions
    ///
    /// Every live (not revoked, not expired) session of the signed-in user.
    #[oai(
        path = "/v1/auth/sessions",
        method = "get",
        operation_id = "list_sessions"
    )]
    async fn list(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
    ) -> Result<SessionListResponse, Problems<SessionErrors>> {
        let items = state
            .as_user(auth.principal(), Access::ReadOnly, async |tx| {
                let rows = tx
                    .query(
                        "select id, created_at, last_used_at, expires_at, user_agent, host(ip),
                                id = app.current_session_id()
                           from app.sessions
                          where revoked_at is null and expires_at > now()
                          order by created_at desc, id",
                        &[],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| Session {
                        id: r.get(0),
                        created_at: r.get(1),
                        last_used_at: r.get(2),
                        expires_at: r.get(3),
                        user_agent: r.get(4),
                        ip: r.get(5),
                        current: r.get(6),
                    })
                    .collect())
            })
            .await?;
        Ok(SessionListResponse::Ok(Json(SessionList { items })))
    }

    /// Revoke a session
    ///
    /// Its access and refresh tokens stop working at once. Revoking the current session
    /// is the same as signing out.
    #[oai(
        path = "/v1/auth/sessions/:session_id",
        method = "delete",
        operation_id = "revoke_session"
    )]
    async fn revoke(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// A session id from `GET /v1/auth/sessions`.
        session_id: Path<Uuid>,
    ) -> Result<NoContentResponse, Problems<RevokeSessionErrors>> {
        state
            .as_user(auth.principal(), Access::ReadWrite, async |tx| {
                let revoked: bool = tx
                    .query_one("select app.revoke_session($1)", &[&session_id.0])
                    .await?
                    .get(0);
                if revoked {
                    Ok(())
                } else {
                    Err(ApiError::not_found("session"))
                }
            })
            .await?;
        Ok(NoContentResponse::NoContent)
    }

    /// Revoke all my other sessions
    ///
    /// Signs out every other device; this session stays.
    #[oai(
        path = "/v1/auth/sessions/revoke-others",
        method = "post",
        operation_id = "revoke_other_sessions"
    )]
    async fn revoke_others(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
    ) -> Result<RevokeOthersResponse, Problems<SessionErrors>> {
        let revoked: i32 = state
            .as_user(auth.principal(), Access::ReadWrite, async |tx| {
                Ok(tx
                    .query_one("select app.revoke_other_sessions()", &[])
                    .await?
                    .get(0))
            })
            .await?;
        Ok(RevokeOthersResponse::Ok(Json(RevokedCount {
            revoked: revoked.max(0) as u64,
        })))
    }
}
