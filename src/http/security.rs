//! The security schemes operations declare, resolved once, here, into the [`Principal`]
//! the request kernel runs as.
//!
//! * [`BearerAuth`] -- a signed-in user: an access token (JWT) as `Authorization: Bearer`.
//!   The operations on the user's own account and those that govern an organization
//!   (its settings, members, invitations, API keys) take only this: an API key there
//!   is refused with 403 `api_key_not_allowed`.
//! * [`OrgAuth`] -- the operations on an organization's data (projects, reading the org
//!   and its members): a user's access token, or an API key of that organization, as
//!   `Authorization: Bearer pal_...` or `X-API-Key: pal_...`.
//!
//! A key that is not well formed (prefix, length, checksum) is refused here with 401
//! `invalid_api_key` before any database work. (Swagger UI's "Authorize" dialog also
//! offers the OAuth2 password flow against `/v1/auth/token`; its token is applied as the
//! bearer token, see [`super::spec`].)

use poem::{Request, RequestBody};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions, SecurityScheme,
    auth::{ApiKey, Bearer},
    registry::Registry,
};
use uuid::Uuid;

use super::problem::{ApiError, ProblemJson};
use crate::{
    auth::{api_key::ApiKeySecret, jwt::TokenError},
    state::State,
};

/// The header an API key may come in (besides `Authorization: Bearer`).
pub const API_KEY_HEADER: &str = "X-API-Key";

/// Who is calling, resolved once by the security layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A signed-in user: the access token's `sub` and its session (`sid`), proven to the
    /// database on every request.
    User { user_id: Uuid, session_id: Uuid },
    /// An API key, well formed; the database decides whether it is live.
    ApiKey(ApiKeySecret),
}

fn refuse(err: ApiError) -> poem::Error {
    let problem: ProblemJson = err.into();
    poem::Error::from_response(poem::IntoResponse::into_response(problem))
}

/// Refused before any database work: not a well-formed key.
fn malformed_key(err: crate::auth::api_key::FormatError) -> poem::Error {
    refuse(ApiError::unauthorized("invalid_api_key", err.to_string()))
}

pub(crate) fn api_key_not_allowed() -> ApiError {
    ApiError::new(
        poem::http::StatusCode::FORBIDDEN,
        "api_key_not_allowed",
        "API keys reach an organization's data; this operation needs a signed-in user's \
         access token",
    )
}

fn state(req: &Request) -> poem::Result<&State> {
    req.data::<State>()
        .ok_or_else(|| poem::Error::from_status(poem::http::StatusCode::INTERNAL_SERVER_ERROR))
}

fn user_from_token(req: &Request, token: &str) -> poem::Result<Principal> {
    let claims = state(req)?.jwt.verify(token).map_err(|err| {
        let code = match err {
            TokenError::Expired => "token_expired",
            TokenError::Invalid => "invalid_token",
        };
        refuse(ApiError::unauthorized(code, err.to_string()))
    })?;
    Ok(Principal::User {
        user_id: claims.sub,
        session_id: claims.sid,
    })
}

/// An access token from `POST /v1/auth/login` (or `/v1/auth/refresh`), sent as
/// `Authorization: Bearer <token>`. Operations on an organization's data also take an API
/// key of that organization here (`Authorization: Bearer pal_...`).
#[derive(SecurityScheme)]
#[oai(
    rename = "bearerAuth",
    ty = "bearer",
    bearer_format = "JWT",
    checker = "check_user_token"
)]
pub struct BearerAuth(Principal);

impl BearerAuth {
    /// Always [`Principal::User`].
    pub fn principal(&self) -> &Principal {
        &self.0
    }
}

async fn check_user_token(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    if ApiKeySecret::looks_like(&bearer.token) {
        return Err(refuse(api_key_not_allowed()));
    }
    user_from_token(req, &bearer.token)
}

/// An access token from `POST /v1/auth/login` (or `/v1/auth/refresh`), sent as
/// `Authorization: Bearer <token>`. Operations on an organization's data also take an API
/// key of that organization here (`Authorization: Bearer pal_...`).
#[derive(SecurityScheme)]
#[oai(
    rename = "bearerAuth",
    ty = "bearer",
    bearer_format = "JWT",
    checker = "check_token_or_key"
)]
struct TokenOrKey(Principal);

async fn check_token_or_key(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    if ApiKeySecret::looks_like(&bearer.token) {
        return ApiKeySecret::parse(&bearer.token)
            .map(Principal::ApiKey)
            .map_err(malformed_key);
    }
    user_from_token(req, &bearer.token)
}

/// An API key of the organization in the path (`pal_...`), from
/// `POST /v1/orgs/{org_id}/api-keys`. Also accepted as `Authorization: Bearer pal_...`.
#[derive(SecurityScheme)]
#[oai(
    rename = "apiKeyAuth",
    ty = "api_key",
    key_name = "X-API-Key",
    key_in = "header",
    checker = "check_api_key"
)]
struct ApiKeyHeader(Principal);

async fn check_api_key(_req: &Request, key: ApiKey) -> poem::Result<Principal> {
    ApiKeySecret::parse(key.key.trim())
        .map(Principal::ApiKey)
        .map_err(malformed_key)
}

/// A user's access token or an API key: the operations on an organization's data. The
/// spec offers either scheme (`bearerAuth` or `apiKeyAuth`); a request with an
/// `X-API-Key` header is authenticated by it, any other by its bearer token.
pub struct OrgAuth(Principal);

impl OrgAuth {
    pub fn principal(&self) -> &Principal {
        &self.0
    }
}

impl<'a> ApiExtractor<'a> for OrgAuth {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <TokenOrKey as ApiExtractor>::register(registry);
        <ApiKeyHeader as ApiExtractor>::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        let mut schemes = <TokenOrKey as ApiExtractor>::security_schemes();
        schemes.extend(<ApiKeyHeader as ApiExtractor>::security_schemes());
        schemes
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        if req.headers().contains_key(API_KEY_HEADER) {
            let key =
                <ApiKeyHeader as ApiExtractor>::from_request(req, body, Default::default()).await?;
            return Ok(OrgAuth(key.0));
        }
        let bearer =
            <TokenOrKey as ApiExtractor>::from_request(req, body, Default::default()).await?;
        Ok(OrgAuth(bearer.0))
    }
}
