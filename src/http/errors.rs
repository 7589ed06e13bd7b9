//! The error responses each operation declares, composed from shared groups so an
//! operation states only what it adds.
//!
//! An operation returns `Result<Its Response, Problems<ItsErrors>>`, where `ItsErrors` is
//! declared with [`error_set!`](crate::error_set):
//!
//! ```text
//! error_set! {
//!     /// Creating or updating a project.
//!     pub WriteProject: [AUTHENTICATED, IN_ORG, JSON_BODY] {
//!         403 => "The caller's role may not write projects (`forbidden`).",
//!         409 => "A project with this name already exists in the organization (`name_taken`).",
//!     }
//! }
//! ```
//!
//! Every set also answers 503 ([`UNAVAILABLE`]) and 500. A handler that answers a status
//! its operation does not declare is a bug the spec would hide from generated clients:
//! [`Problems`] turns it into a 500 `undeclared_status` and logs it, so the test suites
//! (which fail on any 500) catch it, and the attack matrix checks every answered status
//! against openapi.json.

use std::marker::PhantomData;

use poem::{IntoResponse, Response};
use poem_openapi::{
    ApiResponse,
    payload::Payload,
    registry::{
        MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
    },
};

use super::problem::{ApiError, ProblemJson};

/// A status an operation may answer with a problem, and what it means there.
pub type Status = (u16, &'static str);

/// An operation for signed-in users only (`BearerAuth`).
pub const AUTHENTICATED: &[Status] = &[
    (
        401,
        "Missing, invalid or expired access token, or its session has ended (`unauthorized`, \
         `invalid_token`, `token_expired`, `session_revoked`).",
    ),
    (
        403,
        "An API key was sent: this operation needs a signed-in user's access token \
         (`api_key_not_allowed`).",
    ),
    RATE_LIMITED,
];
/// An operation on an organization's data, for its members or its API keys (`OrgAuth`).
pub const KEY_OR_USER: &[Status] = &[
    (
        401,
        "Missing, invalid or expired access token or API key, or the token's session has \
         ended (`unauthorized`, `invalid_token`, `token_expired`, `session_revoked`, \
         `invalid_api_key`, `api_key_revoked`, `api_key_expired`, \
         `api_key_creator_disabled`: the account that created the key is disabled).",
    ),
    RATE_LIMITED,
];
/// An unauthenticated operation, rate limited per client IP.
pub const BY_CLIENT_IP: &[Status] = &[(
    429,
    "Too many requests from this client address (`rate_limited`); retry after \
     `Retry-After` seconds. `RateLimit-Policy` and `RateLimit` describe the limit.",
)];
const RATE_LIMITED: Status = (
    429,
    "Too many requests for this API key, or this user in this organization \
     (`rate_limited`); retry after `Retry-After` seconds. `RateLimit-Policy` and \
     `RateLimit` describe the limit.",
);
/// Statuses whose group meaning adds to an operation's own instead of yielding to it.
const ADDITIVE: &[u16] = &[403, 429];
/// An operation on `/v1/orgs/{org_id}/...`.
pub const IN_ORG: &[Status] = &[(
    404,
    "No such organization, or the caller is not a member of it (`not_found`): another \
     organization's existence is never confirmed.",
)];
/// An operation with a JSON request body.
pub const JSON_BODY: &[Status] = &[
    (
        400,
        "The body is not valid JSON, or empty (`invalid_body`).",
    ),
    (
        413,
        "The body is larger than the server accepts (`payload_too_large`).",
    ),
    (
        415,
        "The body is not `application/json` (`unsupported_media_type`).",
    ),
    (
        422,
        "Invalid fields (`validation_failed`, with every invalid field in `errors`).",
    ),
];
/// An operation that adds something a plan limits (projects, seats, API keys).
pub const PLAN_LIMIT: &[Status] = &[(
    402,
    "The organization's plan allows no more of this (`plan_limit_reached`, with `meter`, \
     `limit`, `used` and `plan`). Nothing was changed; upgrade the plan or free some up.",
)];
/// A paginated list.
pub const PAGED: &[Status] = &[(
    400,
    "Invalid `limit` or `cursor` (`invalid_parameter`, `invalid_cursor`).",
)];
/// Declared by every operation.
pub const UNAVAILABLE: Status = (
    503,
    "The database is unavailable, or the request took too long and was cancelled \
     (`service_unavailable`, `timeout`); retry after `Retry-After` seconds.",
);
const INTERNAL: Status = (
    500,
    "Unexpected error. The body carries no internals; the cause is logged with the request id.",
);

/// The problems an operation declares.
pub trait ErrorSet: Send + Sync + 'static {
    /// Group statuses, then the operation's own (which replace a group's description).
    fn own() -> (&'static [&'static [Status]], &'static [Status]);

    /// True when the operation declares `status`.
    fn declares(status: u16) -> bool {
        let (groups, own) = Self::own();
        [UNAVAILABLE.0, INTERNAL.0].contains(&status)
            || own.iter().any(|s| s.0 == status)
            || groups.iter().any(|g| g.iter().any(|s| s.0 == status))
    }

    /// Every declared status, ascending, 503 and 500 included, with its meaning. For the
    /// spec: built once per operation when the document is (descriptions merged from
    /// several groups are leaked to get their `'static` lifetime).
    fn statuses() -> Vec<Status> {
        let (groups, own) = Self::own();
        let mut all: Vec<(u16, String)> = own.iter().map(|(c, d)| (*c, (*d).to_owned())).collect();
        for group in groups {
            for s in group.iter() {
                match all.iter_mut().find(|a| a.0 == s.0) {
                    None => all.push((s.0, s.1.to_owned())),
                    Some(a) if ADDITIVE.contains(&s.0) && !a.1.contains(s.1) => {
                        a.1 = format!("{} {}", a.1, s.1);
                    }
                    Some(_) => {}
                }
            }
        }
        let mut all: Vec<Status> = all
            .into_iter()
            .map(|(c, d)| (c, &*Box::leak(d.into_boxed_str())))
            .collect();
        for s in [UNAVAILABLE, INTERNAL] {
            if !all.iter().any(|a| a.0 == s.0) {
                all.push(s);
            }
        }
        all.sort_by_key(|s| s.0);
        all
    }
}

/// Declares an [`ErrorSet`]: `pub Name: [GROUP, ...] { status => "meaning", ... }`.
#[macro_export]
macro_rules! error_set {
    ($($(#[$meta:meta])* $vis:vis $name:ident: [$($group:expr),* $(,)?] { $($status:literal => $doc:expr),* $(,)? })*) => {
        $(
            $(#[$meta])*
            $vis struct $name;
            impl $crate::http::errors::ErrorSet for $name {
                fn own() -> (&'static [&'static [$crate::http::errors::Status]], &'static [$crate::http::errors::Status]) {
                    (&[$($group),*], &[$(($status, $doc)),*])
                }
            }
        )*
    };
}

/// The error half of an operation's result: an [`ApiError`] answered as a problem if
/// its status is one `S` declares.
pub struct Problems<S: ErrorSet>(pub ApiError, PhantomData<S>);

impl<S: ErrorSet> std::fmt::Debug for Problems<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<S: ErrorSet> From<ApiError> for Problems<S> {
    fn from(err: ApiError) -> Self {
        Self(err, PhantomData)
    }
}

impl<S: ErrorSet> From<crate::db::DbError> for Problems<S> {
    fn from(err: crate::db::DbError) -> Self {
        ApiError::from(err).into()
    }
}

impl<S: ErrorSet> From<Problems<S>> for poem::Error {
    fn from(problems: Problems<S>) -> Self {
        poem::Error::from_response(problems.into_response())
    }
}

impl<S: ErrorSet> IntoResponse for Problems<S> {
    fn into_response(self) -> Response {
        let status = self.0.status.as_u16();
        if S::declares(status) {
            return ProblemJson::from(self.0).into_response();
        }
        tracing::error!(
            status,
            code = self.0.code,
            operation = std::any::type_name::<S>(),
            "undeclared error status"
        );
        ProblemJson::from(ApiError {
            code: "undeclared_status",
            ..ApiError::internal(&format!("{} {}", status, self.0.code))
        })
        .into_response()
    }
}

fn header(name: &str, description: &str, ty: &'static str) -> MetaHeader {
    MetaHeader {
        name: name.into(),
        description: Some(description.into()),
        required: true,
        deprecated: false,
        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new(ty))),
    }
}

impl<S: ErrorSet> ApiResponse for Problems<S> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: S::statuses()
                .into_iter()
                .map(|(status, description)| MetaResponse {
                    description,
                    status: Some(status),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: ProblemJson::CONTENT_TYPE,
                        schema: ProblemJson::schema_ref(),
                    }],
                    headers: match status {
                        401 => vec![header(
                            "WWW-Authenticate",
                            "The Bearer challenge (RFC 6750).",
                            "string",
                        )],
                        429 | 503 => vec![header(
                            "Retry-After",
                            "Seconds to wait before retrying.",
                            "integer",
                        )],
                        _ => vec![],
                    },
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        ProblemJson::register(registry);
    }
}

#[cfg(test)]
mod tests {
    use poem::http::StatusCode;

    use super::*;

    crate::error_set! {
        Sample: [AUTHENTICATED, JSON_BODY] {
            404 => "No such thing.",
            422 => "Its own meaning of 422.",
        }
    }

    #[test]
    fn groups_compose_and_own_statuses_win() {
        let statuses = Sample::statuses();
        let codes: Vec<u16> = statuses.iter().map(|s| s.0).collect();
        assert_eq!(codes, [400, 401, 403, 404, 413, 415, 422, 429, 500, 503]);
        assert_eq!(
            statuses.iter().find(|s| s.0 == 422).unwrap().1,
            "Its own meaning of 422."
        );
    }

    crate::error_set! {
        Governing: [AUTHENTICATED] { 403 => "Below admin (`forbidden`)." }
    }

    #[test]
    fn a_forbidden_of_its_own_keeps_the_api_key_meaning() {
        let statuses = Governing::statuses();
        let forbidden = statuses.iter().find(|s| s.0 == 403).unwrap().1;
        assert!(
            forbidden.starts_with("Below admin (`forbidden`)."),
            "{forbidden}"
        );
        assert!(forbidden.contains("api_key_not_allowed"), "{forbidden}");
        assert!(Governing::declares(429) && Governing::declares(503));
        assert!(!Governing::declares(404));
    }

    #[test]
    fn an_undeclared_status_becomes_a_500() {
        let declared: Problems<Sample> = ApiError::not_found("thing").into();
        assert_eq!(declared.into_response().status(), StatusCode::NOT_FOUND);
        let undeclared: Problems<Sample> = ApiError::conflict("taken", "taken").into();
        assert_eq!(
            undeclared.into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
