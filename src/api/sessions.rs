//! Sessions: starting one at sign-in, rotating refresh tokens, the login throttle, and
//! the user's own session list.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use poem::{http::StatusCode, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use uuid::Uuid;

use super::{
    ApiTags, State,
    auth::{MeError, NoContentResponse, TokenResponse},
    orgs::context,
    problem::ApiError,
    security::Auth,
};
use crate::{auth::tokens, db::Access};

fn token_pair(
    state: &State,
    user_id: Uuid,
    session_id: Uuid,
    refresh_token: String,
) -> TokenResponse {
    TokenResponse {
        access_token: state.jwt.issue(user_id, session_id),
        token_type: "bearer".into(),
        expires_in: state.jwt.ttl_secs(),
        refresh_token,
    }
}

/// A new session for a user whose password was just verified.
pub(crate) async fn start(
    state: &State,
    user_id: Uuid,
    user_agent: Option<String>,
    ip: Option<IpAddr>,
) -> Result<TokenResponse, ApiError> {
    let refresh = tokens::generate();
    let tx = state.db.begin(None, Access::ReadWrite).await?;
    let created = tx
        .query_one(
            "select app.create_session($1, make_interval(secs => $2), $3, $4, $5)",
            &[
                &user_id,
                &state.session_ttl.as_secs_f64(),
                &user_agent,
                &ip,
                &tokens::hash(&refresh),
            ],
        )
        .await;
    let session_id: Uuid = tx.finish(created).await?.get(0);
    Ok(token_pair(state, user_id, session_id, refresh))
}

/// Exchanges a refresh token (see `app.refresh_session()` in policies/).
pub(crate) async fn refresh(state: &State, presented: &str) -> Result<TokenResponse, ApiError> {
    let invalid = || {
        ApiError::unauthorized(
            "invalid_refresh_token",
            "the refresh token is unknown, expired or revoked; sign in again",
        )
    };
    if presented.is_empty() || presented.len() > 256 {
        return Err(invalid());
    }
    let successor = tokens::generate();
    let tx = state.db.begin(None, Access::ReadWrite).await?;
    let exchanged = tx
        .query_one(
            "select outcome, user_id, session_id, successor_sealed
               from app.refresh_session($1, $2, $3, make_interval(secs => $4))",
            &[
                &tokens::hash(presented),
                &tokens::hash(&successor),
                &state.sealer.seal(&successor),
                &state.auth.refresh_reuse_grace.as_secs_f64(),
            ],
        )
        .await;
    // Committed whatever the outcome: a detected reuse must revoke the session for good.
    let row = tx.finish(exchanged).await?;
    let outcome: &str = row.get(0);
    match outcome {
        "rotated" => Ok(token_pair(state, row.get(1), row.get(2), successor)),
        "grace" => {
            let sealed: Vec<u8> = row.get(3);
            let same = state
                .sealer
                .open(&sealed)
                .map_err(|e| ApiError::internal(&e))?;
            Ok(token_pair(state, row.get(1), row.get(2), same))
        }
        "reused" => {
            let session: Uuid = row.get(2);
            tracing::warn!(%session, "refresh token replayed after rotation; session revoked");
            Err(ApiError::unauthorized(
                "refresh_token_reused",
                "this refresh token was already used; the session has been revoked for safety; sign in again",
            ))
        }
        _ => Err(invalid()),
    }
}

/// The login throttle, kept in Postgres so it holds across replicas.
pub(crate) mod throttle {
    use super::*;

    /// Records a password check about to run, or refuses it (429) when the account or
    /// address already has too many failures in the window.
    pub(crate) async fn begin(
        state: &State,
        email: &str,
        ip: Option<IpAddr>,
    ) -> Result<i64, ApiError> {
        let policy = &state.auth;
        let tx = state.db.begin(None, Access::ReadWrite).await?;
        let begun = tx
            .query_one(
                "select attempt_id, retry_after_seconds
                   from app.login_attempt_begin($1, $2, make_interval(secs => $3), $4, $5)",
                &[
                    &tokens::hash(email),
                    &ip,
                    &policy.throttle_window.as_secs_f64(),
                    &policy.max_failures_per_account,
                    &policy.max_failures_per_ip,
                ],
            )
            .await;
        let row = tx.finish(begun).await?;
        match row.get::<_, Option<i64>>(0) {
            Some(id) => Ok(id),
            None => {
                let retry: i32 = row.get::<_, Option<i32>>(1).unwrap_or(60);
                Err(ApiError {
                    retry_after: Some(retry.max(1) as u64),
                    ..ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_attempts",
                        format!("too many failed sign-in attempts; try again in {retry} seconds"),
                    )
                })
            }
        }
    }

    /// `succeeded`, `failed` or `aborted` (the check did not run).
    pub(crate) async fn end(state: &State, attempt: i64, outcome: &str) -> Result<(), ApiError> {
        let tx = state.db.begin(None, Access::ReadWrite).await?;
        let ended = tx
            .execute(
                "select app.login_attempt_end($1, $2)",
                &[&attempt, &outcome],
            )
            .await;
        tx.finish(ended).await?;
        Ok(())
    }
}

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

crate::problem_responses! {
    pub enum RevokeSessionError {
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// No live session with this id belongs to the user.
        NotFound = 404,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
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
    async fn list(&self, state: Data<&State>, auth: Auth) -> Result<SessionListResponse, MeError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, None)), Access::ReadOnly)
            .await?;
        let result = async {
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
            let items = rows
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
                .collect();
            Ok(SessionListResponse::Ok(Json(SessionList { items })))
        }
        .await;
        tx.finish(result).await
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
        auth: Auth,
        /// A session id from `GET /v1/auth/sessions`.
        session_id: Path<Uuid>,
    ) -> Result<NoContentResponse, RevokeSessionError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, None)), Access::ReadWrite)
            .await?;
        let result = async {
            let n = tx
                .execute(
                    "update app.sessions set revoked_at = now() where id = $1 and revoked_at is null",
                    &[&session_id.0],
                )
                .await?;
            if n == 0 {
                return Err(ApiError::not_found("session").into());
            }
            Ok(NoContentResponse::NoContent)
        }
        .await;
        tx.finish(result).await
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
        auth: Auth,
    ) -> Result<RevokeOthersResponse, MeError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, None)), Access::ReadWrite)
            .await?;
        let result = tx
            .execute(
                "update app.sessions set revoked_at = now()
                  where id <> app.current_session_id() and revoked_at is null",
                &[],
            )
            .await
            .map(|revoked| RevokeOthersResponse::Ok(Json(RevokedCount { revoked })))
            .map_err(MeError::from);
        tx.finish(result).await
    }
}
