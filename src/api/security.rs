//! Security schemes: a bearer JWT, and the same token obtained through the OAuth2
//! password flow at `/v1/auth/login` (so Swagger UI's "Authorize" button works).

use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};

use super::{
    State,
    problem::{ApiError, ProblemJson},
};
use crate::auth::jwt::{AccessClaims, TokenError};

/// Paste an `access_token` from `POST /v1/auth/login` (or `/v1/auth/refresh`); it is sent as
/// `Authorization: Bearer <token>`. Either this or `oauth2Password` is enough.
#[derive(SecurityScheme)]
#[oai(
    rename = "bearerAuth",
    ty = "bearer",
    bearer_format = "JWT",
    checker = "check_token"
)]
pub struct BearerAuth(AccessClaims);

/// Sign in with your email (as `username`) and password; leave client id and secret empty.
/// The access token it returns is sent as a bearer token. Either this or `bearerAuth` is enough.
#[derive(SecurityScheme)]
#[oai(
    rename = "oauth2Password",
    ty = "oauth2",
    flows(password(token_url = "/v1/auth/login")),
    checker = "check_token"
)]
pub struct OAuth2Password(AccessClaims);

/// Either scheme: both carry the same access token.
#[derive(SecurityScheme)]
pub enum Auth {
    Bearer(BearerAuth),
    OAuth2(OAuth2Password),
}

impl Auth {
    pub fn claims(&self) -> &AccessClaims {
        match self {
            Auth::Bearer(BearerAuth(c)) | Auth::OAuth2(OAuth2Password(c)) => c,
        }
    }
}

async fn check_token(req: &Request, bearer: Bearer) -> poem::Result<AccessClaims> {
    let state = req
        .data::<State>()
        .ok_or_else(|| poem::Error::from_status(poem::http::StatusCode::INTERNAL_SERVER_ERROR))?;
    state.jwt.verify(&bearer.token).map_err(|err| {
        let code = match err {
            TokenError::Expired => "token_expired",
            TokenError::Invalid => "invalid_token",
        };
        let problem: ProblemJson = ApiError::unauthorized(code, err.to_string()).into();
        poem::Error::from_response(poem::IntoResponse::into_response(problem))
    })
}
