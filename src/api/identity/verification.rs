//! Email verification and password reset: single-use tokens (256 bits, stored as
//! SHA-256), delivered by email. Verification links are issued in the request's own
//! transaction; reset requests are queued and handled by the worker, so the answer is
//! the same work for known and unknown addresses.

use poem::{http::StatusCode, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use secrecy::SecretString;
use uuid::Uuid;

use super::{NoContentResponse, check_new_password};
use crate::{
    api::ApiTags,
    crypto::tokens,
    db::Access,
    email, error_set,
    http::{
        errors::{AUTHENTICATED, BY_CLIENT_IP, JSON_BODY, Problems},
        problem::ApiError,
        security::BearerAuth,
        validate::{Email, NewPassword, Token, ValidJson},
    },
    state::State,
};

pub struct VerificationApi;

#[derive(Object)]
pub struct TokenBody {
    /// The token from the emailed link.
    pub token: Token,
}

#[derive(Object)]
pub struct ResetRequestBody {
    pub email: Email,
}

#[derive(Object)]
pub struct ResetConfirmBody {
    /// The token from the emailed link.
    pub token: Token,
    pub new_password: NewPassword,
}

#[derive(Object)]
pub struct EmailVerified {
    /// Always true.
    pub email_verified: bool,
}

#[derive(ApiResponse)]
pub enum AcceptedResponse {
    /// Accepted: if it applies, an email is on its way.
    #[oai(status = 202)]
    Accepted,
}

#[derive(ApiResponse)]
pub enum VerifiedResponse {
    /// The email address is verified.
    #[oai(status = 200)]
    Ok(Json<EmailVerified>),
}

const TOKEN_INVALID: &str = "The token is unknown, was already used, or has expired (`token_invalid`), or the body is malformed (`invalid_body`).";

error_set! {
    pub VerifyRequestErrors: [AUTHENTICATED] {
        409 => "The email is already verified (`email_already_verified`).",
    }
    pub ConfirmEmailErrors: [BY_CLIENT_IP, JSON_BODY] { 400 => TOKEN_INVALID }
    pub ResetRequestErrors: [BY_CLIENT_IP, JSON_BODY] {}
    pub ResetConfirmErrors: [BY_CLIENT_IP, JSON_BODY] {
        400 => TOKEN_INVALID,
        422 => "The new password is too short, too long or too common (`validation_failed`), or the body is invalid.",
        503 => "The database or the password hasher is saturated (`service_unavailable`); retry after `Retry-After` seconds.",
    }
}

fn token_invalid() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "token_invalid",
        "this link is invalid, was already used, or has expired; request a new one",
    )
}

#[OpenApi(tag = "ApiTags::Auth")]
impl VerificationApi {
    /// Send a verification email
    ///
    /// Emails a new single-use link (valid 24 hours) to the signed-in user; earlier links stop working.
    #[oai(
        path = "/v1/auth/verify-email/request",
        method = "post",
        operation_id = "request_email_verification"
    )]
    async fn request(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
    ) -> Result<AcceptedResponse, Problems<VerifyRequestErrors>> {
        let token = tokens::generate();
        let message = email::verification(
            &state.auth.app_url,
            &token,
            state.auth.email_verification_ttl,
        );
        state
            .as_user(auth.principal(), Access::ReadWrite, async |tx| {
                let verified: bool = tx
                    .query_one(
                        "select email_verified_at is not null from app.users where id = app.current_user_id()",
                        &[],
                    )
                    .await?
                    .get(0);
                if verified {
                    return Err(ApiError::conflict(
                        "email_already_verified",
                        "this email address is already verified",
                    ));
                }
                tx.execute(
                    "select app.issue_email_verification($1, make_interval(secs => $2), $3, $4)",
                    &[
                        &tokens::hash(&token),
                        &state.auth.email_verification_ttl.as_secs_f64(),
                        &message.subject,
                        &state.outbox.seal(&message.body),
                    ],
                )
                .await?;
                Ok(())
            })
            .await?;
        Ok(AcceptedResponse::Accepted)
    }

    /// Confirm an email address
    ///
    /// Consumes the token from the verification email. Needs no access token: the link may
    /// be opened on any device.
    #[oai(
        path = "/v1/auth/verify-email/confirm",
        method = "post",
        operation_id = "confirm_email"
    )]
    async fn confirm(
        &self,
        state: Data<&State>,
        body: ValidJson<TokenBody>,
    ) -> Result<VerifiedResponse, Problems<ConfirmEmailErrors>> {
        let token_hash = tokens::hash(&body.token);
        let user: Option<Uuid> = state
            .as_credentials(Access::ReadWrite, async |tx| {
                Ok(tx
                    .query_one("select app.confirm_email($1)", &[&token_hash])
                    .await?
                    .get(0))
            })
            .await?;
        match user {
            Some(_) => Ok(VerifiedResponse::Ok(Json(EmailVerified {
                email_verified: true,
            }))),
            None => Err(token_invalid().into()),
        }
    }

    /// Request a password reset
    ///
    /// Always answers 202, whether or not an account has this email, after the same
    /// work: the request is queued, and the worker emails a single-use link (valid one
    /// hour) if an account has this address (at most one email a minute per account).
    #[oai(
        path = "/v1/auth/password-reset/request",
        method = "post",
        operation_id = "request_password_reset"
    )]
    async fn reset_request(
        &self,
        state: Data<&State>,
        body: ValidJson<ResetRequestBody>,
    ) -> Result<AcceptedResponse, Problems<ResetRequestErrors>> {
        let email = body.email.normalized();
        state
            .as_credentials(Access::ReadWrite, async |tx| {
                tx.execute("select app.request_password_reset($1)", &[&email])
                    .await?;
                Ok(())
            })
            .await?;
        Ok(AcceptedResponse::Accepted)
    }

    /// Reset a password
    ///
    /// Consumes the token from the reset email and sets the new password. Every session of
    /// the account is revoked: sign in again.
    #[oai(
        path = "/v1/auth/password-reset/confirm",
        method = "post",
        operation_id = "confirm_password_reset"
    )]
    async fn reset_confirm(
        &self,
        state: Data<&State>,
        body: ValidJson<ResetConfirmBody>,
    ) -> Result<NoContentResponse, Problems<ResetConfirmErrors>> {
        check_new_password("new_password", &body.new_password)?;
        let token_hash = tokens::hash(&body.token);
        let hash = state
            .passwords
            .hash(SecretString::from(body.new_password.as_str().to_owned()))
            .await
            .map_err(ApiError::from)?;
        let user: Option<Uuid> = state
            .as_credentials(Access::ReadWrite, async |tx| {
                Ok(tx
                    .query_one("select app.reset_password($1, $2)", &[&token_hash, &hash])
                    .await?
                    .get(0))
            })
            .await?;
        match user {
            Some(_) => Ok(NoContentResponse::NoContent),
            None => Err(token_invalid().into()),
        }
    }
}
