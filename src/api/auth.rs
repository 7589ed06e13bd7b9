use std::net::IpAddr;

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{
    ApiRequest, ApiResponse, Object, OpenApi,
    payload::{Form, Json},
};
use secrecy::SecretString;
use serde::Deserialize;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{
    ApiTags, State,
    orgs::{ORG_COLUMNS, Organization, context},
    problem::ApiError,
    security::Auth,
    sessions::{self, throttle},
    validate::Validator,
    verification,
};
use crate::{auth::common_passwords, db::Access};

pub struct AuthApi;

pub const PASSWORD_MIN: usize = 10;
pub const PASSWORD_MAX: usize = 128;

/// A new account.
#[derive(Object)]
pub struct Register {
    /// Normalized: surrounding spaces trimmed, lowercased.
    pub email: String,
    /// 10-128 characters; any Unicode.
    #[oai(write_only)]
    pub password: String,
    /// 1-100 characters.
    pub name: String,
}

/// Email and password.
#[derive(Object)]
pub struct LoginBody {
    /// The account's email (any case; surrounding spaces ignored).
    pub email: String,
    #[oai(write_only)]
    pub password: String,
}

/// The OAuth2 password grant, as sent by Swagger UI's "Authorize" dialog.
#[derive(Object, Deserialize)]
pub struct OAuth2PasswordForm {
    /// `password` (optional).
    pub grant_type: Option<String>,
    /// The account's email.
    pub username: String,
    #[oai(write_only)]
    pub password: String,
    /// Ignored.
    pub scope: Option<String>,
}

#[derive(ApiRequest)]
pub enum LoginRequest {
    /// JSON credentials.
    Json(Json<LoginBody>),
    /// OAuth2 password grant (`username` is the email).
    Form(Form<OAuth2PasswordForm>),
}

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

#[derive(Object)]
pub struct RefreshBody {
    /// The refresh token from sign-in or the previous refresh.
    #[oai(write_only)]
    pub refresh_token: String,
}

#[derive(Object)]
pub struct UpdateMe {
    /// 1-100 characters.
    pub name: Option<String>,
}

#[derive(Object)]
pub struct ChangePassword {
    #[oai(write_only)]
    pub current_password: String,
    /// 10-128 characters, not a common password.
    #[oai(write_only)]
    pub new_password: String,
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
    /// The organization the user works in by default.
    pub current_org_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// `current_org_id` falls back to the personal organization when the current one was
/// deleted (the foreign key then sets it to null).
const USER_COLUMNS: &str = "id, email, name, email_verified_at is not null,
    coalesce(current_org_id, (select o.id from app.orgs o join app.memberships m on m.org_id = o.id
                               where m.user_id = users.id and o.personal order by o.created_at limit 1)),
    created_at";

impl From<&Row> for User {
    fn from(r: &Row) -> Self {
        Self {
            id: r.get(0),
            email: r.get(1),
            name: r.get(2),
            email_verified: r.get(3),
            current_org_id: r.get(4),
            created_at: r.get(5),
        }
    }
}

/// The signed-in user and their organizations.
#[derive(Object)]
pub struct Me {
    pub user: User,
    /// Every organization the user belongs to, with their role.
    pub organizations: Vec<Organization>,
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

#[derive(ApiResponse)]
pub enum MeResponse {
    /// The signed-in user and their organizations.
    #[oai(status = 200)]
    Ok(Json<Me>),
}

crate::problem_responses! {
    pub enum RegisterError {
        /// Malformed JSON body.
        BadRequest = 400,
        /// The email is already registered (`email_taken`).
        Conflict = 409,
        /// Body larger than the limit.
        PayloadTooLarge = 413,
        /// Body is not JSON.
        UnsupportedMediaType = 415,
        /// Invalid fields (`validation_failed`, with `errors`).
        UnprocessableEntity = 422,
        /// The database or the password hasher is saturated; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum LoginError {
        /// Malformed body.
        BadRequest = 400,
        /// Wrong email or password (`invalid_credentials`); the same answer for both.
        Unauthorized = 401,
        /// Body larger than the limit.
        PayloadTooLarge = 413,
        /// Body is neither JSON nor a form.
        UnsupportedMediaType = 415,
        /// Too many failed attempts for this account or address (`too_many_attempts`); see `Retry-After`.
        TooManyRequests = 429,
        /// The database or the password hasher is saturated; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum RefreshError {
        /// Malformed body.
        BadRequest = 400,
        /// Unknown, expired or revoked refresh token (`invalid_refresh_token`), or a replay of
        /// an exchanged one, which revokes its session (`refresh_token_reused`).
        Unauthorized = 401,
        /// Body larger than the limit.
        PayloadTooLarge = 413,
        /// Body is not JSON.
        UnsupportedMediaType = 415,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum UpdateMeError {
        /// Malformed JSON body.
        BadRequest = 400,
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// Body larger than the limit.
        PayloadTooLarge = 413,
        /// Body is not JSON.
        UnsupportedMediaType = 415,
        /// Invalid fields (`validation_failed`, with `errors`).
        UnprocessableEntity = 422,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum ChangePasswordError {
        /// Malformed JSON body.
        BadRequest = 400,
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// The current password is wrong (`invalid_current_password`).
        Forbidden = 403,
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
    pub enum MeError {
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

/// Loads the user in context and their organizations.
async fn load_me(tx: &crate::db::Tx) -> Result<Me, ApiError> {
    let user = tx
        .query_opt(
            &format!("select {USER_COLUMNS} from app.users where id = app.current_user_id()"),
            &[],
        )
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid_token", "the account no longer exists"))?;
    let orgs = tx
        .query(
            &format!(
                "select {ORG_COLUMNS} from app.orgs o join app.memberships m on m.org_id = o.id
                  where m.user_id = app.current_user_id() order by o.created_at, o.id"
            ),
            &[],
        )
        .await?;
    Ok(Me {
        user: User::from(&user),
        organizations: orgs.iter().map(Organization::from).collect(),
    })
}

/// Length (in characters, any Unicode, never truncated) and the common-password list.
pub(crate) fn check_new_password(v: &mut Validator, field: &str, password: &str) {
    let len = password.chars().count();
    if len < PASSWORD_MIN {
        v.add(
            field,
            "too_short",
            format!("must be at least {PASSWORD_MIN} characters"),
        );
    } else if len > PASSWORD_MAX {
        v.add(
            field,
            "too_long",
            format!("must be at most {PASSWORD_MAX} characters"),
        );
    } else if common_passwords::is_common(password) {
        v.add(
            field,
            "too_common",
            "is one of the most common passwords; choose another",
        );
    }
}

pub(crate) fn client_info(req: &Request) -> (Option<String>, Option<IpAddr>) {
    let ua = req
        .headers()
        .get(poem::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(512).collect());
    let ip = req.remote_addr().as_socket_addr().map(|a| a.ip());
    (ua, ip)
}

#[OpenApi(tag = "ApiTags::Auth")]
impl AuthApi {
    /// Create an account
    ///
    /// Creates the user and their personal organization (owned by them) in one transaction.
    #[oai(path = "/v1/auth/register", method = "post", operation_id = "register")]
    async fn register(
        &self,
        state: Data<&State>,
        body: Json<Register>,
    ) -> Result<RegisterResponse, RegisterError> {
        let mut v = Validator::new();
        let email = v.email("email", &body.email);
        let name = v.text("name", &body.name, 1, 100);
        check_new_password(&mut v, "password", &body.password);
        v.finish()?;
        let hash = state
            .passwords
            .hash(SecretString::from(body.0.password))
            .await
            .map_err(ApiError::from)?;
        let tx = state.db.begin(None, Access::ReadWrite).await?;
        let result = async {
            let row = tx
                .query_one(
                    "select app.register_user($1, $2, $3)",
                    &[&email, &name, &hash],
                )
                .await?;
            let user_id: Uuid = row.get(0);
            // register_user leaves the new user in context for this transaction.
            verification::send_verification_email(&state, &tx, user_id, &email).await?;
            Ok(RegisterResponse::Created(Json(load_me(&tx).await?)))
        }
        .await;
        tx.finish(result).await
    }

    /// Sign in
    ///
    /// Accepts JSON `{email, password}` or the OAuth2 password form
    /// (`username`, `password`). Wrong email and wrong password get the same 401
    /// `invalid_credentials`, after the same work. At most 10 failed attempts per account
    /// (and 100 per IP) are evaluated per 15 minutes; beyond that, 429 `too_many_attempts`
    /// with `Retry-After` until the window passes.
    #[oai(path = "/v1/auth/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        state: Data<&State>,
        req: &Request,
        body: LoginRequest,
    ) -> Result<LoginResponse, LoginError> {
        let (email, password) = match body {
            LoginRequest::Json(Json(b)) => (b.email, b.password),
            LoginRequest::Form(Form(f)) => (f.username, f.password),
        };
        let email = email.trim().to_lowercase();
        let (ua, ip) = client_info(req);
        let attempt = throttle::begin(&state, &email, ip).await?;
        let outcome = async {
            let tx = state.db.begin(None, Access::ReadOnly).await?;
            let lookup = tx
                .query_opt(
                    "select user_id, password_hash from app.login_lookup($1)",
                    &[&email],
                )
                .await;
            let row = tx.finish(lookup).await?;
            let (user_id, hash): (Option<Uuid>, Option<String>) =
                row.map_or((None, None), |r| (Some(r.get(0)), Some(r.get(1))));
            let ok = state
                .passwords
                .verify(SecretString::from(password), hash)
                .await?;
            Ok::<_, ApiError>(user_id.filter(|_| ok))
        }
        .await;
        match outcome {
            Ok(Some(user_id)) => {
                throttle::end(&state, attempt, "succeeded").await?;
                let tokens = sessions::start(&state, user_id, ua, ip).await?;
                Ok(LoginResponse::Ok(Json(tokens)))
            }
            Ok(None) => {
                throttle::end(&state, attempt, "failed").await?;
                Err(ApiError::unauthorized(
                    "invalid_credentials",
                    "the email or password is incorrect",
                )
                .into())
            }
            Err(err) => {
                throttle::end(&state, attempt, "aborted").await?;
                Err(err.into())
            }
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
        body: Json<RefreshBody>,
    ) -> Result<LoginResponse, RefreshError> {
        Ok(LoginResponse::Ok(Json(
            sessions::refresh(&state, &body.refresh_token).await?,
        )))
    }

    /// Sign out
    ///
    /// Revokes the current session: its access and refresh tokens stop working at once.
    #[oai(path = "/v1/auth/logout", method = "post", operation_id = "logout")]
    async fn logout(&self, state: Data<&State>, auth: Auth) -> Result<NoContentResponse, MeError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, None)), Access::ReadWrite)
            .await?;
        let result = tx
            .execute(
                "update app.sessions set revoked_at = now() where id = app.current_session_id() and revoked_at is null",
                &[],
            )
            .await
            .map(|_| NoContentResponse::NoContent)
            .map_err(MeError::from);
        tx.finish(result).await
    }

    /// The signed-in user
    ///
    /// The user and every organization they belong to, with their role.
    #[oai(path = "/v1/auth/me", method = "get", operation_id = "get_me")]
    async fn me(&self, state: Data<&State>, auth: Auth) -> Result<MeResponse, MeError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, None)), Access::ReadOnly)
            .await?;
        let result = async { Ok(MeResponse::Ok(Json(load_me(&tx).await?))) }.await;
        tx.finish(result).await
    }

    /// Update the signed-in user
    ///
    /// Changes the display name; absent fields stay as they are.
    #[oai(path = "/v1/auth/me", method = "patch", operation_id = "update_me")]
    async fn update_me(
        &self,
        state: Data<&State>,
        auth: Auth,
        body: Json<UpdateMe>,
    ) -> Result<MeResponse, UpdateMeError> {
        let mut v = Validator::new();
        let name = body.name.as_deref().map(|n| v.text("name", n, 1, 100));
        v.finish()?;
        let tx = state
            .db
            .begin(Some(&context(&auth, None)), Access::ReadWrite)
            .await?;
        let result = async {
            if let Some(name) = &name {
                tx.execute(
                    "update app.users set name = $1, updated_at = now() where id = app.current_user_id()",
                    &[name],
                )
                .await?;
            }
            Ok(MeResponse::Ok(Json(load_me(&tx).await?)))
        }
        .await;
        tx.finish(result).await
    }

    /// Change password
    ///
    /// Needs the current password. Every other session of the user is revoked; this one
    /// stays signed in.
    #[oai(
        path = "/v1/auth/me/password",
        method = "post",
        operation_id = "change_password"
    )]
    async fn change_password(
        &self,
        state: Data<&State>,
        auth: Auth,
        body: Json<ChangePassword>,
    ) -> Result<NoContentResponse, ChangePasswordError> {
        let mut v = Validator::new();
        check_new_password(&mut v, "new_password", &body.new_password);
        v.finish()?;
        let ctx = context(&auth, None);
        let tx = state.db.begin(Some(&ctx), Access::ReadOnly).await?;
        let current = tx
            .query_one("select app.current_password_hash()", &[])
            .await;
        let current: Option<String> = tx.finish(current).await?.get(0);
        let ok = state
            .passwords
            .verify(SecretString::from(body.0.current_password), current)
            .await
            .map_err(ApiError::from)?;
        if !ok {
            return Err(ApiError::forbidden("the current password is incorrect")
                .with_code("invalid_current_password")
                .into());
        }
        let hash = state
            .passwords
            .hash(SecretString::from(body.0.new_password))
            .await
            .map_err(ApiError::from)?;
        let tx = state.db.begin(Some(&ctx), Access::ReadWrite).await?;
        let changed = tx.execute("select app.change_password($1)", &[&hash]).await;
        tx.finish(changed).await?;
        Ok(NoContentResponse::NoContent)
    }
}
