//! The credential-lane operations behind sign-in: the login throttle, starting a session
//! and rotating refresh tokens. They run on the credential pool (role
//! palisade_credentials), the only role that may execute these functions.

use std::net::IpAddr;

use poem::http::StatusCode;
use uuid::Uuid;

use super::TokenResponse;
use crate::{crypto::tokens, db::Access, http::problem::ApiError, state::State};

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

/// A new session for a user whose password was just verified. The server picks the
/// session id, so it can store the SHA-256 of the session's proof with it.
pub(crate) async fn start_session(
    state: &State,
    user_id: Uuid,
    user_agent: Option<String>,
    ip: Option<IpAddr>,
) -> Result<TokenResponse, ApiError> {
    let refresh = tokens::generate();
    let session_id = Uuid::new_v4();
    state
        .as_credentials(Access::ReadWrite, async |tx| {
            tx.execute(
                "select app.create_session($1, $2, make_interval(secs => $3), $4, $5, $6, $7)",
                &[
                    &session_id,
                    &user_id,
                    &state.session_ttl.as_secs_f64(),
                    &user_agent,
                    &ip,
                    &tokens::hash(&refresh),
                    &state.proofs.proof_hash(session_id),
                ],
            )
            .await?;
            Ok(())
        })
        .await?;
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
    let successor = tokens::generate();
    // Committed whatever the outcome: a detected reuse must revoke the session for good.
    let row = state
        .as_credentials(Access::ReadWrite, async |tx| {
            Ok(tx
                .query_one(
                    "select outcome, user_id, session_id, successor_sealed
                       from app.refresh_session($1, $2, $3, make_interval(secs => $4))",
                    &[
                        &tokens::hash(presented),
                        &tokens::hash(&successor),
                        &state.refresh_successors.seal(&successor),
                        &state.auth.refresh_reuse_grace.as_secs_f64(),
                    ],
                )
                .await?)
        })
        .await?;
    match row.get::<_, &str>(0) {
        "rotated" => Ok(token_pair(state, row.get(1), row.get(2), successor)),
        "grace" => {
            let sealed: Vec<u8> = row.get(3);
            let same = state
                .refresh_successors
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
        "disabled" => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "account_disabled",
            "this account is disabled; contact support",
        )),
        _ => Err(invalid()),
    }
}

/// A password check in flight, counted by the throttle until it ends.
pub(crate) struct Attempt {
    id: i64,
    account: Vec<u8>,
}

/// The login throttle, kept in PostgreSQL so it holds across replicas.
pub(crate) mod throttle {
    use super::*;

    /// Records a password check about to run, or refuses it (429) when the account or
    /// address already has too many failures in the window.
    pub(crate) async fn begin(
        state: &State,
        email: &str,
        ip: Option<IpAddr>,
    ) -> Result<Attempt, ApiError> {
        let policy = &state.auth;
        let account = tokens::hash(email);
        let row = state
            .as_credentials(Access::ReadWrite, async |tx| {
                Ok(tx
                    .query_one(
                        "select attempt_id, retry_after_seconds
                           from app.login_attempt_begin($1, $2, make_interval(secs => $3), $4, $5)",
                        &[
                            &account,
                            &ip,
                            &policy.throttle_window.as_secs_f64(),
                            &policy.max_failures_per_account,
                            &policy.max_failures_per_ip,
                        ],
                    )
                    .await?)
            })
            .await?;
        match row.get::<_, Option<i64>>(0) {
            Some(id) => Ok(Attempt { id, account }),
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

    /// `succeeded`, `failed` or `aborted` (the check did not run). A failure for an
    /// existing account (`user_id`) goes to its audit log.
    pub(crate) async fn end(
        state: &State,
        attempt: &Attempt,
        outcome: &str,
        user_id: Option<Uuid>,
    ) -> Result<(), ApiError> {
        state
            .as_credentials(Access::ReadWrite, async |tx| {
                tx.execute(
                    "select app.login_attempt_end($1, $2, $3, $4)",
                    &[&attempt.id, &attempt.account, &outcome, &user_id],
                )
                .await?;
                Ok(())
            })
            .await
    }
}
