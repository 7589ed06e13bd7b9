//! The one security scheme operations declare: a bearer access token (JWT), resolved
//! once, here, into the [`Principal`] the request kernel runs as. (Swagger UI's
//! "Authorize" dialog also offers the OAuth2 password flow against `/v1/auth/token`;
//! its token is applied as this same bearer token, see [`super::spec`].)

use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};

use super::{
    kernel::Principal,
    problem::{ApiError, ProblemJson},
};
use crate::{auth::jwt::TokenError, state::State};

/// An `access_token` from `POST /v1/auth/login` (or `/v1/auth/refresh`), sent as
/// `Authorization: Bearer <token>`.
#[derive(SecurityScheme)]
#[oai(
    rename = "bearerAuth",
    ty = "bearer",
    bearer_format = "JWT",
    checker = "check_token"
)]
pub struct BearerAuth(pub Principal);

impl BearerAuth {
    pub fn principal(&self) -> &Principal {
        &self.0
    }
}

async fn check_token(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let state = req
        .data::<State>()
        .ok_or_else(|| poem::Error::from_status(poem::http::StatusCode::INTERNAL_SERVER_ERROR))?;
    let claims = state.jwt.verify(&bearer.token).map_err(|err| {
        let code = match err {
            TokenError::Expired => "token_expired",
            TokenError::Invalid => "invalid_token",
        };
        let problem: ProblemJson = ApiError::unauthorized(code, err.to_string()).into();
        poem::Error::from_response(poem::IntoResponse::into_response(problem))
    })?;
    Ok(Principal {
        user_id: claims.sub,
        session_id: claims.sid,
    })
}
