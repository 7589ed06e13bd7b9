//! RFC 9457 problem details (`application/problem+json`) for every error: the ones
//! handlers return ([`ApiError`]) and the framework's own (bad JSON, unknown route,
//! wrong method, body too large, missing token), converted by [`framework_problem`].

use poem::{
    IntoResponse, Response,
    http::{HeaderValue, StatusCode, header},
};
use poem_openapi::{
    Object,
    payload::Payload,
    registry::{MetaSchemaRef, Registry},
    types::Type,
};

use crate::db::{DbError, DbFailure};

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// One invalid field of a request body.
#[derive(Object, Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as named in the request body (e.g. `name`).
    pub field: String,
    /// Stable machine code, e.g. `too_long`, `required`, `invalid_format`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// An RFC 9457 problem details object.
#[derive(Object, Debug, Clone)]
pub struct Problem {
    /// A URI reference naming the problem type: `/problems/{code}`.
    #[oai(rename = "type")]
    pub problem_type: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Explanation specific to this occurrence.
    pub detail: String,
    /// Stable machine-readable code, e.g. `not_found`, `email_taken`, `validation_failed`.
    pub code: String,
    /// Every invalid field, for 422 `validation_failed`; empty otherwise.
    pub errors: Vec<FieldError>,
    /// `plan_limit_reached`: the limited meter (`seats`, `projects`, `api_keys`,
    /// `events`, ...). Absent on other problems.
    #[oai(skip_serializing_if_is_none)]
    pub meter: Option<String>,
    /// `plan_limit_reached`: the plan's limit for the meter.
    #[oai(skip_serializing_if_is_none)]
    pub limit: Option<i64>,
    /// `plan_limit_reached`: how much of the meter is in use.
    #[oai(skip_serializing_if_is_none)]
    pub used: Option<i64>,
    /// `plan_limit_reached`, `plan_feature_unavailable`: the organization's plan.
    #[oai(skip_serializing_if_is_none)]
    pub plan: Option<String>,
    /// `plan_feature_unavailable`: the feature the plan lacks (e.g. `custom_meters`).
    #[oai(skip_serializing_if_is_none)]
    pub feature: Option<String>,
}

/// Extension members of a problem raised by a rule in SQL (its DETAIL, a JSON object).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Extensions {
    pub meter: Option<String>,
    pub limit: Option<i64>,
    pub used: Option<i64>,
    pub plan: Option<String>,
    pub feature: Option<String>,
}

/// The error every handler returns; converted into the operation's declared responses.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub retry_after: Option<u64>,
    /// Extension members of rule problems (boxed: most errors have none).
    pub extensions: Option<Box<Extensions>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            extensions: None,
        }
    }

    /// The same error with another machine code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                detail,
            )
        }
    }

    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                detail,
            )
        }
    }

    /// A 500. The cause goes to the log, never to the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an unexpected error occurred; it has been logged",
        )
    }

    pub fn into_problem(self) -> Problem {
        let extensions = self.extensions.map(|e| *e).unwrap_or_default();
        Problem {
            problem_type: format!("/problems/{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code.to_owned(),
            errors: self.errors,
            meter: extensions.meter,
            limit: extensions.limit,
            used: extensions.used,
            plan: extensions.plan,
            feature: extensions.feature,
        }
    }
}

/// Constraint names (see sql/) that a client can trip, and what they mean.
fn unique_violation(constraint: &str) -> ApiError {
    match constraint {
        "users_email_key" => {
            ApiError::conflict("email_taken", "an account with this email already exists")
        }
        "orgs_slug_key" => ApiError::conflict(
            "slug_taken",
            "an organization with this slug already exists",
        ),
        "projects_org_id_name_key" => ApiError::conflict(
            "name_taken",
            "a project with this name already exists in this organization",
        ),
        "meters_org_id_key_key" => ApiError::conflict(
            "meter_key_taken",
            "a meter with this key already exists in this organization",
        ),
        "secrets_scope_name_key" => ApiError::conflict(
            "secret_exists",
            "a secret with this name already exists in this scope; change it with PATCH",
        ),
        "invitations_org_id_email_pending_key" => ApiError::conflict(
            "invitation_pending",
            "this email already has a pending invitation; resend it instead",
        ),
        other => {
            tracing::warn!(
                constraint = other,
                "unique violation without a mapped problem code"
            );
            ApiError::conflict("conflict", "conflicts with an existing resource")
        }
    }
}

/// Check constraints a client can trip (see sql/), as the field they concern. Request
/// validation catches these first; the mapping keeps a race or a gap a clean 422.
fn check_violation(constraint: &str) -> ApiError {
    let field = match constraint {
        "users_name_length" | "orgs_name_length" | "projects_name_length" => Some("name"),
        "projects_description_length" => Some("description"),
        "orgs_slug_format" => Some("slug"),
        "meters_key_format" | "meters_key_not_builtin" => Some("key"),
        "meters_name_length" => Some("name"),
        "meters_value_property_format" => Some("value_property"),
        "meters_unit_length" => Some("unit"),
        "org_settings_agent_length" => Some("agent"),
        "org_settings_max_iterations_range" => Some("max_iterations"),
        "org_settings_security_analyzer_check" => Some("security_analyzer"),
        "org_settings_llm_model_length" => Some("llm_model"),
        "org_settings_llm_base_url_format" => Some("llm_base_url"),
        "org_settings_input_price_range" => Some("llm_input_price_per_mtok"),
        "org_settings_output_price_range" => Some("llm_output_price_per_mtok"),
        "org_settings_mcp_config_object" => Some("mcp_config"),
        "org_settings_budget_range" => Some("max_budget_per_task"),
        "org_settings_expiration_range" => Some("conversation_expiration"),
        "org_settings_margin_range" => Some("billing_margin"),
        "org_settings_search_language_check" => Some("search_language"),
        "secrets_name_format" => Some("name"),
        "secrets_description_length" => Some("description"),
        "secrets_ciphertext_length" => Some("value"),
        "users_email_lowercase" | "invitations_email_lowercase" => Some("email"),
        _ => None,
    };
    match field {
        Some(field) => ApiError::validation(vec![FieldError {
            field: field.into(),
            code: "invalid_value".into(),
            message: "is not an allowed value".into(),
        }]),
        None => {
            tracing::warn!(constraint, "check violation without a mapped field");
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "the request breaks a rule of the data model",
            )
        }
    }
}

/// The problem codes the rules in policies/ raise (`app.refuse(status, code, message)`),
/// so every code a client can see is listed in Rust. An unknown code is a bug: it
/// still answers with the rule's status, under the generic code `rule_violation`.
const RULE_CODES: &[&str] = &[
    "not_found",
    "validation_failed",
    "last_owner",
    "already_member",
    "invitation_pending",
    "plan_limit_reached",
    "plan_feature_unavailable",
    "personal_org",
    "invitation_email_mismatch",
    "invitation_expired",
    "invitation_revoked",
    "invitation_used",
    "transfer_to_self",
    "not_a_member",
    "forbidden",
    "invalid_api_key",
    "api_key_revoked",
    "api_key_expired",
    "api_key_creator_disabled",
    "api_key_not_allowed",
    "account_disabled",
    "subscription_exists",
    "no_billing_account",
    "budget_exhausted",
];

fn rule_violation(status: u16, code: &str, message: String, detail: &str) -> ApiError {
    let known = RULE_CODES.iter().copied().find(|c| *c == code);
    if known.is_none() {
        tracing::error!(status, code, "a policy raised an unlisted problem code");
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CONFLICT);
    let extensions = if detail.is_empty() {
        None
    } else {
        match serde_json::from_str(detail) {
            Ok(e) => Some(Box::new(e)),
            Err(e) => {
                tracing::error!(code, error = %e, "a rule's DETAIL is not its extension object");
                None
            }
        }
    };
    ApiError {
        extensions,
        ..ApiError::new(status, known.unwrap_or("rule_violation"), message)
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        crate::metrics::db_error(err.sqlstate_class());
        match err.failure() {
            DbFailure::UniqueViolation(c) => unique_violation(&c),
            DbFailure::CheckViolation(c) => check_violation(&c),
            DbFailure::ForeignKeyViolation(_) => ApiError::not_found("a referenced resource"),
            DbFailure::InsufficientPrivilege(msg) => ApiError::forbidden(msg),
            DbFailure::Rule {
                status,
                code,
                message,
                detail,
            } => rule_violation(status, &code, message, &detail),
            DbFailure::SessionInactive => ApiError::unauthorized(
                "session_revoked",
                "this access token's session has ended (signed out, revoked or expired); sign in again",
            ),
            // PostgreSQL's message names internals; the cause is logged, not sent.
            DbFailure::InvalidInput(msg) => {
                tracing::info!(error = %msg, "database refused a value");
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    "a value in the request is out of range or not valid text",
                )
            }
            DbFailure::Unavailable => {
                tracing::warn!(error = %err, "database unavailable");
                ApiError::unavailable("the database is unavailable or busy; retry shortly", 1)
            }
            DbFailure::Other => ApiError::internal(&err),
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(err: tokio_postgres::Error) -> Self {
        DbError::from(err).into()
    }
}

impl From<crate::auth::password::HashError> for ApiError {
    fn from(err: crate::auth::password::HashError) -> Self {
        match err {
            crate::auth::password::HashError::Busy => {
                ApiError::unavailable("too many sign-ins are being processed; retry shortly", 1)
            }
            other => ApiError::internal(&other),
        }
    }
}

/// `application/problem+json` payload. Sets `WWW-Authenticate` on 401 and
/// `Retry-After` on 429/503.
#[derive(Debug)]
pub struct ProblemJson {
    problem: Problem,
    retry_after: Option<u64>,
}

impl From<ApiError> for ProblemJson {
    fn from(err: ApiError) -> Self {
        let retry_after = err.retry_after;
        Self {
            problem: err.into_problem(),
            retry_after,
        }
    }
}

impl Payload for ProblemJson {
    const CONTENT_TYPE: &'static str = PROBLEM_CONTENT_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        Problem::schema_ref()
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

impl IntoResponse for ProblemJson {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = problem_json(&self.problem);
        let mut resp = Response::builder()
            .status(status)
            .content_type(PROBLEM_CONTENT_TYPE)
            .body(body);
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: `invalid_token` only when an access token was presented and
            // refused; a missing token, or wrong credentials at sign-in, get the plain
            // challenge.
            let challenge = match self.problem.code.as_str() {
                "invalid_token"
                | "token_expired"
                | "session_revoked"
                | "invalid_api_key"
                | "api_key_revoked"
                | "api_key_expired"
                | "api_key_creator_disabled" => format!(
                    "Bearer realm=\"palisade\", error=\"invalid_token\", error_description=\"{}\"",
                    self.problem.code
                ),
                _ => "Bearer realm=\"palisade\"".to_owned(),
            };
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// A problem's JSON body, as every problem response carries it.
pub fn problem_json(problem: &Problem) -> Vec<u8> {
    serde_json::to_vec(&ProblemBody(problem)).unwrap_or_default()
}

/// Serializes a [`Problem`] with poem-openapi's own field names and skips.
struct ProblemBody<'a>(&'a Problem);

impl serde::Serialize for ProblemBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use poem_openapi::types::ToJSON;
        self.0.to_json().unwrap_or_default().serialize(s)
    }
}

/// Converts an error the framework raised (or one a handler raised as a ready-made
/// response, which passes through untouched) into a problem response.
pub fn framework_problem(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    use poem_openapi::error::{
        AuthorizationError, ContentTypeError, ParseParamError, ParsePathError,
        ParseRequestPayloadError,
    };
    let status = err.status();
    let api_error = if err.is::<AuthorizationError>() {
        ApiError::unauthorized("unauthorized", "this operation needs a bearer access token")
    } else if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the request body is not valid: {}", e.reason),
        )
    } else if let Some(e) = err.downcast_ref::<ParseParamError>() {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            format!("parameter `{}`: {}", e.name, e.reason),
        )
    } else if let Some(e) = err.downcast_ref::<crate::http::validate::SchemaViolation>() {
        ApiError::validation(e.0.clone())
    } else if err.is::<ParsePathError>() {
        // A malformed id in the path cannot name an existing resource.
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no resource at this path (an id in it is malformed)",
        )
    } else if err.is::<ContentTypeError>() {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            err.to_string(),
        )
    } else {
        match status {
            StatusCode::NOT_FOUND => {
                ApiError::new(status, "not_found", "no route matches this path")
            }
            StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
                status,
                "method_not_allowed",
                "this path does not support this method",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(status, "payload_too_large", err.to_string())
            }
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
                ApiError::new(status, "timeout", "the request took too long")
            }
            s if s.is_server_error() => ApiError::internal(&err),
            s => ApiError::new(s, "bad_request", err.to_string()),
        }
    };
    ProblemJson::from(api_error).into_response()
}
