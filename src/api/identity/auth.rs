//! Accounts and sign-in: register, sign in (JSON, or the OAuth2 password grant for
//! Swagger UI), refresh, sign out.

use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    payload::{Form, Json},
};
use secrecy::SecretString;
use serde::Deserialize;
use uuid::Uuid;

use super::{
    Me, NoContentResponse, TokenResponse, check_new_password, client_info,
    credentials::{self, throttle},
    load_me,
};
use crate::{
    api::ApiTags,
    crypto::tokens,
    db::Access,
    email, error_set,
    http::{
        errors::{AUTHENTICATED, BY_CLIENT_IP, JSON_BODY, Problems},
        problem::ApiError,
        security::BearerAuth,
        validate::{Email, Name, NewPassword, Password, Token, ValidJson},
    },
    state::State,
};

pub struct AuthApi;

/// A new account.
#[derive(Object)]
pub struct Register {
    pub email: Email,
    pub password: NewPassword,
    pub name: Name,
}

/// Email and password.
#[derive(Object)]
pub struct LoginBody {
    /// The account's email (any case).
    pub email: Email,
    pub password: Password,
}

/// The OAuth2 password grant (RFC 6749, section 4.3), as Swagger UI's "Authorize"
/// dialog sends it.
#[derive(Object, Deserialize)]
pub struct OAuth2PasswordForm {
    /// Must be `password`.
    pub grant_type: String,
    /// The account's email.
    pub username: String,
    #[oai(write_only)]
    pub password: String,
    /// Ignored (Palisade tokens have no scopes).
    pub scope: Option<String>,
}

#[derive(Object)]
pub struct RefreshBody {
    /// The refresh token from sign-in or the previous refresh.
    pub refresh_token: Token,
}

#[derive(ApiResponse)]
pub enum RegisterResponse {
    /// The account and its personal organization were created.
    #[oai(status = 201)]
    Created(Json<Me>),
}

#[derive(ApiResponse)]
pub enum LoginResponse {
    /// Signed in.
    #[oai(status = 200)]
    Ok(Json<TokenResponse>),
}

const HASHING_BUSY: &str = "The database or the password hasher is saturated, or the request \
     timed out (`service_unavailable`, `timeout`); retry after `Retry-After` seconds.";
const ACCOUNT_DISABLED: &str = "The email and password are right, but the account is disabled \
     (`account_disabled`): an operator disabled it (`palisade users disable`); no session is started.";
const THROTTLED: &str = "Too many failed attempts for this account or address (`too_many_attempts`); see `Retry-After`.";

error_set! {
    pub RegisterErrors: [BY_CLIENT_IP, JSON_BODY] {
        409 => "The email is already registered (`email_taken`).",
        503 => HASHING_BUSY,
    }
    pub LoginErrors: [BY_CLIENT_IP, JSON_BODY] {
        401 => "Wrong email or password (`invalid_credentials`); the same answer for both, after the same work.",
        403 => ACCOUNT_DISABLED,
        429 => THROTTLED,
        503 => HASHING_BUSY,
    }
    pub TokenErrors: [BY_CLIENT_IP] {
        400 => "Wrong email or password (`invalid_grant`), a grant other than `password` \
                (`unsupported_grant_type`), or a malformed form (`invalid_body`).",
        403 => ACCOUNT_DISABLED,
        413 => "The body is larger than the server accepts (`payload_too_large`).",
        415 => "The body is not `application/x-www-form-urlencoded` (`unsupported_media_type`).",
        429 => THROTTLED,
        503 => HASHING_BUSY,
    }
    pub RefreshErrors: [BY_CLIENT_IP, JSON_BODY] {
        401 => "Unknown, expired or revoked refresh token (`invalid_refresh_token`), or a replay of \
                an exchanged one, which revokes its session (`refresh_token_reused`).",
        403 => "The account is disabled (`account_disabled`): an operator disabled it, which \
                also revoked its sessions.",
    }
    pub LogoutErrors: [AUTHENTICATED] {}
}

/// Verifies a password against the account with `email` and starts a session. `None`:
/// wrong email or password (after the same work for both).
async fn sign_in(
    state: &State,
    req: &Request,
    email: &str,
    password: String,
) -> Result<Option<TokenResponse>, ApiError> {
    let (ua, ip) = client_info(req);
    let attempt = throttle::begin(state, email, ip).await?;
    let checked = async {
        let row = state
            .as_credentials(Access::ReadOnly, async |tx| {
                Ok(tx
                    .query_opt(
                        "select user_id, password_hash from app.login_lookup($1)",
                        &[&email],
                    )
                    .await?)
            })
            .await?;
        let (user_id, hash): (Option<Uuid>, Option<String>) =
            row.map_or((None, None), |r| (Some(r.get(0)), Some(r.get(1))));
        let ok = state
            .passwords
            .verify(SecretString::from(password), hash)
            .await?;
        Ok::<_, ApiError>((user_id, ok))
    }
    .await;
    match checked {
        Ok((Some(user_id), true)) => {
            throttle::end(state, &attempt, "succeeded", None).await?;
            Ok(Some(
                credentials::start_session(state, user_id, ua, ip).await?,
            ))
        }
        Ok((user_id, _)) => {
            throttle::end(state, &attempt, "failed", user_id).await?;
            Ok(None)
        }
        Err(err) => {
            throttle::end(state, &attempt, "aborted", None).await?;
            Err(err)
        }
    }
}

#[OpenApi(tag = "ApiTags::Auth")]
impl AuthApi {
    /// Create an account
    ///
    /// Creates the user and their personal organization (owned by them) in one
    /// transaction, and emails a verification link.
    #[oai(path = "/v1/auth/register", method = "post", operation_id = "register")]
    async fn register(
        &self,
        state: Data<&State>,
        body: ValidJson<Register>,
    ) -> Result<RegisterResponse, Problems<RegisterErrors>> {
        check_new_password("password", &body.password)?;
        let email = body.email.normalized();
        let name = body.name.as_str();
        let hash = state
            .passwords
            .hash(SecretString::from(body.password.as_str().to_owned()))
            .await
            .map_err(ApiError::from)?;
        let token = tokens::generate();
        let message = email::verification(
            &state.auth.app_url,
            &token,
            state.auth.email_verification_ttl,
        );
        let me = state
            .as_credentials(Access::ReadWrite, async |tx| {
                // register_user binds the new user as the context of this transaction.
                tx.execute(
                    "select app.register_user($1, $2, $3)",
                    &[&email, &name, &hash],
                )
                .await?;
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
                load_me(tx).await
            })
            .await?;
        Ok(RegisterResponse::Created(Json(me)))
    }

    /// Sign in
    ///
    /// Wrong email and wrong password get the same 401 `invalid_credentials`, after the
    /// same work. At most 10 failed attempts per account (and 100 per IP) are evaluated
    /// per 15 minutes; beyond that, 429 `too_many_attempts` with `Retry-After` until the
    /// window passes.
    #[oai(path = "/v1/auth/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        state: Data<&State>,
        req: &Request,
        body: ValidJson<LoginBody>,
    ) -> Result<LoginResponse, Problems<LoginErrors>> {
        let email = body.0.email.normalized();
        match sign_in(&state, req, &email, body.0.password.into_inner()).await? {
            Some(tokens) => Ok(LoginResponse::Ok(Json(tokens))),
            None => Err(ApiError::unauthorized(
                "invalid_credentials",
                "the email or password is incorrect",
            )
            .into()),
        }
    }

    /// Sign in (OAuth2 password grant)
    ///
    /// The token endpoint of Swagger UI's "Authorize" dialog (RFC 6749, section 4.3):
    /// a form with `grant_type=password`, `username` (the email) and `password`. The same
    /// sign-in as `POST /v1/auth/login`, with OAuth2's error convention: wrong credentials
    /// are 400 `invalid_grant`. Generated clients should use `/v1/auth/login`.
    #[oai(
        path = "/v1/auth/token",
        method = "post",
        operation_id = "oauth2_token"
    )]
    async fn token(
        &self,
        state: Data<&State>,
        req: &Request,
        body: Form<OAuth2PasswordForm>,
    ) -> Result<LoginResponse, Problems<TokenErrors>> {
        let bad_request = |code, detail: &str| {
            ApiError::new(poem::http::StatusCode::BAD_REQUEST, code, detail.to_owned())
        };
        if body.grant_type != "password" {
            return Err(bad_request(
                "unsupported_grant_type",
                "only the password grant is supported",
            )
            .into());
        }
        let email = body.username.trim().to_lowercase();
        match sign_in(&state, req, &email, body.0.password).await? {
            Some(tokens) => Ok(LoginResponse::Ok(Json(tokens))),
            None => Err(bad_request("invalid_grant", "the email or password is incorrect").into()),
        }
    }

    /// Exchange a refresh token
    ///
    /// Returns a new access token and a new refresh token; the old refresh token stops
    /// working. Presenting an already-exchanged token within 10 seconds of its exchange
    /// (two tabs refreshing at once) returns the same new refresh token; later, it is
    /// treated as stolen: the whole session is revoked (401 `refresh_token_reused`).
    #[oai(path = "/v1/auth/refresh", method = "post", operation_id = "refresh")]
    async fn refresh(
        &self,
        state: Data<&State>,
        body: ValidJson<RefreshBody>,
    ) -> Result<LoginResponse, Problems<RefreshErrors>> {
        Ok(LoginResponse::Ok(Json(
            credentials::refresh(&state, &body.refresh_token).await?,
        )))
    }

    /// Sign out
    ///
    /// Revokes the current session: its access and refresh tokens stop working at once.
    #[oai(path = "/v1/auth/logout", method = "post", operation_id = "logout")]
    async fn logout(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
    ) -> Result<NoContentResponse, Problems<LogoutErrors>> {
        state
            .as_user(auth.principal(), Access::ReadWrite, async |tx| {
                tx.execute("select app.end_current_session()", &[]).await?;
                Ok(())
            })
            .await?;
        Ok(NoContentResponse::NoContent)
    }
}
