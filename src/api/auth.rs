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
    validate::Validator,
};
use crate::db::Access;

pub struct AuthApi;

pub const PASSWORD_MIN: usize = 10;
pub const PASSWORD_MAX: usize = 128;

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

#[derive(Object)]
pub struct LoginBody {
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

#[derive(Object)]
pub struct TokenResponse {
    /// A JWT to send as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

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

const USER_COLUMNS: &str =
    "id, email, name, email_verified_at is not null, current_org_id, created_at";

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

fn client_info(req: &Request) -> (Option<String>, Option<IpAddr>) {
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
        let pw_len = body.password.chars().count();
        if pw_len < PASSWORD_MIN {
            v.add(
                "password",
                "too_short",
                format!("must be at least {PASSWORD_MIN} characters"),
            );
        } else if pw_len > PASSWORD_MAX {
            v.add(
                "password",
                "too_long",
                format!("must be at most {PASSWORD_MAX} characters"),
            );
        }
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
            let _user_id: Uuid = row.get(0);
            // register_user leaves the new user in context for this transaction.
            Ok(RegisterResponse::Created(Json(load_me(&tx).await?)))
        }
        .await;
        tx.finish(result).await
    }

    /// Sign in
    ///
    /// Accepts JSON `{email, password}` or the OAuth2 password form
    /// (`username`, `password`). Wrong email and wrong password get the same 401
    /// `invalid_credentials`, after the same work.
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
        let invalid =
            || ApiError::unauthorized("invalid_credentials", "the email or password is incorrect");
        if password.chars().count() > PASSWORD_MAX {
            return Err(invalid().into());
        }
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
            .await
            .map_err(ApiError::from)?;
        let user_id = match (ok, user_id) {
            (true, Some(id)) => id,
            _ => return Err(invalid().into()),
        };
        let (ua, ip) = client_info(req);
        let ttl = format!("{} seconds", state.session_ttl.as_secs());
        let tx = state.db.begin(None, Access::ReadWrite).await?;
        let created = tx
            .query_one(
                "select app.create_session($1, $2::text::interval, $3, $4)",
                &[&user_id, &ttl, &ua, &ip],
            )
            .await;
        let row = tx.finish(created).await?;
        let session_id: Uuid = row.get(0);
        Ok(LoginResponse::Ok(Json(TokenResponse {
            access_token: state.jwt.issue(user_id, session_id),
            token_type: "bearer".into(),
            expires_in: state.jwt.ttl_secs(),
        })))
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
}
