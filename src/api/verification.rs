//! Email verification and password reset: single-use tokens (256 bits, stored as
//! SHA-256, 24 h and 1 h), delivered through the outbox in the same transaction.

use poem::{http::StatusCode, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use secrecy::SecretString;
use uuid::Uuid;

use super::{
    ApiTags, State,
    auth::{NoContentResponse, check_new_password},
    orgs::context,
    problem::ApiError,
    security::Auth,
    validate::Validator,
};
use crate::{
    auth::tokens,
    db::{Access, Tx},
    email::{self, OutgoingEmail},
};

pub struct VerificationApi;

#[derive(Object)]
pub struct TokenBody {
    /// The token from the emailed link.
    #[oai(write_only)]
    pub token: String,
}

#[derive(Object)]
pub struct ResetRequestBody {
    pub email: String,
}

#[derive(Object)]
pub struct ResetConfirmBody {
    /// The token from the emailed link.
    #[oai(write_only)]
    pub token: String,
    /// 10-128 characters, not a common password.
    #[oai(write_only)]
    pub new_password: String,
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

crate::problem_responses! {
    pub enum VerifyRequestError {
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// The email is already verified (`email_already_verified`).
        Conflict = 409,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum TokenConfirmError {
        /// Malformed body, or the token is unknown, used or expired (`token_invalid`).
        BadRequest = 400,
        /// Body larger than the limit.
        PayloadTooLarge = 413,
        /// Body is not JSON.
        UnsupportedMediaType = 415,
        /// The new password is too short, too long or too common (`validation_failed`).
        UnprocessableEntity = 422,
        /// The database or the password hasher is saturated; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum ResetRequestError {
        /// Malformed body.
        BadRequest = 400,
        /// Body larger than the limit.
        PayloadTooLarge = 413,
        /// Body is not JSON.
        UnsupportedMediaType = 415,
        /// Not an email address (`validation_failed`).
        UnprocessableEntity = 422,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

fn token_invalid() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "token_invalid",
        "this link is invalid, was already used, or has expired; request a new one",
    )
}

/// Issues a verification token for the user in context and queues the email, in `tx`.
pub(crate) async fn send_verification_email(
    state: &State,
    tx: &Tx,
    user_id: Uuid,
    to: &str,
) -> Result<(), ApiError> {
    let token = tokens::generate();
    tx.execute(
        "select app.issue_email_verification($1, make_interval(secs => $2))",
        &[
            &tokens::hash(&token),
            &state.auth.email_verification_ttl.as_secs_f64(),
        ],
    )
    .await?;
    let link = format!("{}/verify-email?token={token}", state.auth.app_url);
    let body = format!(
        "Confirm your email address for Palisade by opening this link within 24 hours:\n\n{link}\n\n\
         (API clients: POST the token to /v1/auth/verify-email/confirm.)\n\
         If you did not create an account, ignore this email."
    );
    email::enqueue(
        tx,
        &state.sealer,
        &OutgoingEmail {
            to: to.to_owned(),
            user_id: Some(user_id),
            org_id: None,
            template: "verify_email",
            subject: "Confirm your email address".into(),
            body,
        },
    )
    .await?;
    Ok(())
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
        auth: Auth,
    ) -> Result<AcceptedResponse, VerifyRequestError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, None)), Access::ReadWrite)
            .await?;
        let result = async {
            let row = tx
                .query_one(
                    "select id, email, email_verified_at is not null from app.users where id = app.current_user_id()",
                    &[],
                )
                .await?;
            if row.get::<_, bool>(2) {
                return Err(ApiError::conflict("email_already_verified", "this email address is already verified"));
            }
            send_verification_email(&state, &tx, row.get(0), row.get(1)).await?;
            Ok(AcceptedResponse::Accepted)
        }
        .await;
        tx.finish(result.map_err(VerifyRequestError::from)).await
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
        body: Json<TokenBody>,
    ) -> Result<VerifiedResponse, TokenConfirmError> {
        let tx = state.db.begin(None, Access::ReadWrite).await?;
        let confirmed = tx
            .query_one(
                "select app.confirm_email($1)",
                &[&tokens::hash(&body.token)],
            )
            .await;
        let user: Option<Uuid> = tx.finish(confirmed).await?.get(0);
        match user {
            Some(_) => Ok(VerifiedResponse::Ok(Json(EmailVerified {
                email_verified: true,
            }))),
            None => Err(token_invalid().into()),
        }
    }

    /// Request a password reset
    ///
    /// Always answers 202, whether or not an account has this email, after the same work;
    /// if one does, it gets a single-use link valid for one hour.
    #[oai(
        path = "/v1/auth/password-reset/request",
        method = "post",
        operation_id = "request_password_reset"
    )]
    async fn reset_request(
        &self,
        state: Data<&State>,
        body: Json<ResetRequestBody>,
    ) -> Result<AcceptedResponse, ResetRequestError> {
        let mut v = Validator::new();
        let email = v.email("email", &body.email);
        v.finish()?;
        let token = tokens::generate();
        let link = format!("{}/reset-password?token={token}", state.auth.app_url);
        let message = format!(
            "Someone asked to reset the password of your Palisade account. To choose a new one, open \
             this link within one hour:\n\n{link}\n\n(API clients: POST the token and new_password to \
             /v1/auth/password-reset/confirm.)\nIf it was not you, ignore this email; your password is unchanged."
        );
        let tx = state.db.begin(None, Access::ReadWrite).await?;
        let requested = tx
            .execute(
                "select app.request_password_reset($1, $2, make_interval(secs => $3), $4, $5)",
                &[
                    &email,
                    &tokens::hash(&token),
                    &state.auth.password_reset_ttl.as_secs_f64(),
                    &"Reset your password",
                    &state.sealer.seal(&message),
                ],
            )
            .await;
        tx.finish(requested).await?;
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
        body: Json<ResetConfirmBody>,
    ) -> Result<NoContentResponse, TokenConfirmError> {
        let mut v = Validator::new();
        check_new_password(&mut v, "new_password", &body.new_password);
        v.finish()?;
        let token_hash = tokens::hash(&body.token);
        let hash = state
            .passwords
            .hash(SecretString::from(body.0.new_password))
            .await
            .map_err(ApiError::from)?;
        let tx = state.db.begin(None, Access::ReadWrite).await?;
        let reset = tx
            .query_one("select app.reset_password($1, $2)", &[&token_hash, &hash])
            .await;
        let user: Option<Uuid> = tx.finish(reset).await?.get(0);
        match user {
            Some(_) => Ok(NoContentResponse::NoContent),
            None => Err(token_invalid().into()),
        }
    }
}
