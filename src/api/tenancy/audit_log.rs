//! The audit log: what changed in an organization, who did it, from where -- read and
//! exported by its admins.
//!
//! Every row was written by PostgreSQL in the transaction of the change it records
//! (policies/audit_log.sql), hash-chained per organization. These handlers only read:
//! the select policy shows an org's chain to its admins and owners (signed in, or an
//! admin API key, for SIEM exports); the plan must include `audit_log` (Pro and up).
//! Newest first, keyset-paged by `seq`; the export streams the same rows, page by page,
//! each page in its own read-only transaction under the caller's policies (a caller who
//! loses access mid-export gets no further rows), bounded by the newest `seq` at its start.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use poem::{IntoResponse, Response, http::StatusCode, web::Data};
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
    registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry},
};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{
    api::ApiTags,
    db::Access,
    error_set,
    http::{
        errors::AUTHENTICATED,
        errors::{IN_ORG, KEY_OR_USER, PAGED, Problems},
        json::rfc3339,
        problem::ApiError,
        security::{BearerAuth, OrgAuth, Principal},
    },
    state::State,
};

pub struct AuditLogApi;

/// Who acted.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ActorType {
    /// A signed-in user.
    User,
    /// An API key of the organization.
    ApiKey,
    /// Palisade itself (the worker, an operator command).
    System,
}

impl ActorType {
    fn parse(text: &str) -> Self {
        match text {
            "user" => Self::User,
            "api_key" => Self::ApiKey,
            _ => Self::System,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::ApiKey => "api_key",
            Self::System => "system",
        }
    }
}

/// The actor of an audit event.
#[derive(Object, Debug, Clone, serde::Serialize)]
pub struct AuditActor {
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub actor_type: ActorType,
    /// The user's or the key's id; null for the system.
    pub id: Option<Uuid>,
    /// At the time: the user's email, or the key's name and display start.
    pub name: Option<String>,
}

/// What an event acted on.
#[derive(Object, Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AuditTarget {
    /// `org`, `project`, `user`, `invitation`, `api_key`, `conversation`, `document`,
    /// `meter`, `session`, `plan`.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub target_type: String,
    pub id: Option<Uuid>,
    /// A label at the time (a name, an email), when there is one.
    #[serde(default)]
    pub name: Option<String>,
}

/// Where the request came from, as the server saw it.
#[derive(Object, Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct AuditContext {
    /// The client address (behind `TRUSTED_PROXIES`, the forwarded one).
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    /// The `X-Request-Id` the response carried.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// One audit event.
#[derive(Object, Debug, Clone, serde::Serialize)]
pub struct AuditEvent {
    /// Position in the organization's chain: 1, 2, 3, ...
    pub seq: i64,
    #[serde(serialize_with = "rfc3339")]
    pub occurred_at: DateTime<Utc>,
    /// Dotted: `project.created`, `member.role_changed`, `api_key.revoked`,
    /// `auth.login_failed`, ...
    pub action: String,
    pub actor: AuditActor,
    pub targets: Vec<AuditTarget>,
    pub context: AuditContext,
    /// Details of the change (at most 50 keys), e.g. `changes: {name: {from, to}}`.
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// SHA-256 (hex) of the previous event of the chain (zeros for the first).
    pub prev_hash: String,
    /// SHA-256 (hex) over `prev_hash` and this event: `palisade audit-log verify` checks it.
    pub hash: String,
}

crate::page! {
    /// A page of audit events, newest first.
    AuditEventPage of AuditEvent
}

impl From<&Row> for AuditEvent {
    fn from(r: &Row) -> Self {
        let json = |i: usize| -> serde_json::Value { r.get(i) };
        Self {
            seq: r.get(0),
            occurred_at: r.get(1),
            actor: AuditActor {
                actor_type: ActorType::parse(r.get(2)),
                id: r.get(3),
                name: r.get(4),
            },
            action: r.get(5),
            targets: serde_json::from_value(json(6)).unwrap_or_default(),
            context: serde_json::from_value(json(7)).unwrap_or_default(),
            metadata: serde_json::from_value(json(8)).unwrap_or_default(),
            prev_hash: r.get(9),
            hash: r.get(10),
        }
    }
}

/// The filters of a list or an export.
#[derive(Debug, Clone, Default)]
struct Filters {
    actor_id: Option<Uuid>,
    actor_type: Option<&'static str>,
    action: Option<String>,
    target_type: Option<String>,
    target_id: Option<Uuid>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

/// One page: rows of the org's chain below `before` (a seq), matching `f`, newest first.
/// `seq < $2` is always bound, so each page is an index range however deep it is.
const PAGE_SQL: &str =
    "select seq, occurred_at, actor_type, actor_id, actor_name, action, targets, \
       context, metadata, encode(prev_hash, 'hex'), encode(hash, 'hex')
  from app.audit_log
 where chain_id = $1 and org_id = $1 and seq < $2
   and ($3::uuid is null or actor_id = $3)
   and ($4::text is null or actor_type = $4)
   and ($5::text is null or starts_with(action, $5))
   and ($6::text is null or targets @> jsonb_build_array(jsonb_build_object('type', $6::text)))
   and ($7::uuid is null or targets @> jsonb_build_array(jsonb_build_object('id', $7::text)))
   and ($8::timestamptz is null or occurred_at >= $8)
   and ($9::timestamptz is null or occurred_at < $9)
 order by seq desc
 limit $10";

/// One page of the signed-in user's own account chain (`seq < $1`), newest first. The
/// select policy shows a user only their own account's rows.
const ACCOUNT_PAGE_SQL: &str =
    "select seq, occurred_at, actor_type, actor_id, actor_name, action, targets, \
       context, metadata, encode(prev_hash, 'hex'), encode(hash, 'hex')
  from app.audit_log
 where chain_id = app.current_user_id() and org_id is null and seq < $1
   and ($2::text is null or starts_with(action, $2))
   and ($3::timestamptz is null or occurred_at >= $3)
   and ($4::timestamptz is null or occurred_at < $4)
 order by seq desc
 limit $5";

/// Admins and owners, on a plan with the audit log: 403 otherwise.
const CHECK_SQL: &str = "select app.require_role('admin') and app.require_feature('audit_log')";

async fn read_page(
    state: &State,
    principal: &Principal,
    org_id: Uuid,
    filters: &Filters,
    before: i64,
    limit: i64,
) -> Result<Vec<AuditEvent>, ApiError> {
    state
        .in_org(principal, org_id, Access::ReadOnly, async |tx| {
            tx.execute(CHECK_SQL, &[]).await?;
            let rows = tx
                .query(
                    PAGE_SQL,
                    &[
                        &org_id,
                        &before,
                        &filters.actor_id,
                        &filters.actor_type,
                        &filters.action,
                        &filters.target_type,
                        &filters.target_id,
                        &filters.since,
                        &filters.until,
                        &limit,
                    ],
                )
                .await?;
            Ok(rows.iter().map(AuditEvent::from).collect())
        })
        .await
}

fn invalid_cursor() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
        "the cursor is not valid; use next_cursor from a previous page",
    )
}

fn encode_cursor(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("seq|{seq}"))
}

fn decode_cursor(text: &str) -> Result<i64, ApiError> {
    let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid_cursor())?;
    std::str::from_utf8(&raw)
        .ok()
        .and_then(|s| s.strip_prefix("seq|"))
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(invalid_cursor)
}

/// A list's page size (default 20) and the seq its page starts below (the cursor's, or
/// the top of the chain).
fn page_args(limit: Option<u32>, cursor: Option<&str>) -> Result<(i64, i64), ApiError> {
    let limit = i64::from(limit.unwrap_or(20).clamp(1, 100));
    let before = cursor.map_or(Ok(i64::MAX), decode_cursor)?;
    Ok((limit, before))
}

/// The format of an export.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One JSON event per line (`application/x-ndjson`), as the list returns them.
    Ndjson,
    /// `text/csv`: seq, occurred_at, action, actor_type, actor_id, actor_name, targets,
    /// ip, user_agent, request_id, metadata, prev_hash, hash (JSON in the JSON columns).
    Csv,
}

/// `limit` + 1 events -> a page and its cursor.
fn page_of(mut items: Vec<AuditEvent>, limit: i64) -> AuditEventPage {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = more
        .then(|| items.last().map(|e| encode_cursor(e.seq)))
        .flatten();
    AuditEventPage { items, next_cursor }
}

#[derive(ApiResponse)]
pub enum ListAuditLogResponse {
    /// The organization's audit events, newest first.
    #[oai(status = 200)]
    Ok(Json<AuditEventPage>),
}

/// A streamed export (see [`ExportFormat`]).
pub struct AuditExport {
    format: ExportFormat,
    body: poem::Body,
}

const CSV_HEADER: &str = "seq,occurred_at,action,actor_type,actor_id,actor_name,targets,ip,user_agent,request_id,metadata,prev_hash,hash\n";

/// A CSV field: quoted when it holds a comma, quote or line break; a leading `=`, `+`,
/// `-`, `@`, tab or CR is prefixed with `'` so a spreadsheet does not run it as a formula.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn csv_line(e: &AuditEvent) -> String {
    let opt = |v: &Option<String>| v.as_deref().map(csv_field).unwrap_or_default();
    let json = |v: String| csv_field(&v);
    [
        e.seq.to_string(),
        e.occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        csv_field(&e.action),
        e.actor.actor_type.as_str().to_owned(),
        e.actor.id.map(|i| i.to_string()).unwrap_or_default(),
        opt(&e.actor.name),
        json(serde_json::to_string(&e.targets).unwrap_or_default()),
        opt(&e.context.ip),
        opt(&e.context.user_agent),
        opt(&e.context.request_id),
        json(serde_json::to_string(&e.metadata).unwrap_or_default()),
        e.prev_hash.clone(),
        e.hash.clone(),
    ]
    .join(",")
        + "\n"
}

impl IntoResponse for AuditExport {
    fn into_response(self) -> Response {
        let (content_type, extension) = match self.format {
            ExportFormat::Ndjson => ("application/x-ndjson", "ndjson"),
            ExportFormat::Csv => ("text/csv; charset=utf-8", "csv"),
        };
        Response::builder()
            .status(StatusCode::OK)
            .header(poem::http::header::CONTENT_TYPE, content_type)
            .header(
                poem::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"audit-log.{extension}\""),
            )
            .header("x-content-type-options", "nosniff")
            .body(self.body)
    }
}

impl ApiResponse for AuditExport {
    fn meta() -> MetaResponses {
        let text = || MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")));
        MetaResponses {
            responses: vec![MetaResponse {
                description: "The matching events, newest first, streamed: NDJSON (one event \
                              per line, as the list returns them) or CSV (with a header line).",
                status: Some(200),
                status_range: None,
                content: vec![
                    MetaMediaType {
                        content_type: "application/x-ndjson",
                        schema: text(),
                    },
                    MetaMediaType {
                        content_type: "text/csv",
                        schema: text(),
                    },
                ],
                headers: vec![],
            }],
        }
    }

    fn register(_registry: &mut Registry) {}
}

const NOT_ADMIN: &str = "The caller is below admin (`forbidden`), or the organization's plan \
                         does not include the audit log (`plan_feature_unavailable`: Pro and up).";

error_set! {
    pub ListAccountAuditLogErrors: [AUTHENTICATED, PAGED] {}
    pub ListAuditLogErrors: [KEY_OR_USER, IN_ORG, PAGED] { 403 => NOT_ADMIN }
    pub ExportAuditLogErrors: [KEY_OR_USER, IN_ORG] {
        400 => "An invalid filter (`invalid_parameter`).",
        403 => NOT_ADMIN,
    }
}

/// Rows per page of an export.
const EXPORT_PAGE: i64 = 500;

#[allow(clippy::too_many_arguments)]
fn filters(
    actor_id: Option<Uuid>,
    actor_type: Option<ActorType>,
    action: Option<String>,
    target_type: Option<String>,
    target_id: Option<Uuid>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Filters {
    Filters {
        actor_id,
        actor_type: actor_type.map(ActorType::as_str),
        action,
        target_type,
        target_id,
        since,
        until,
    }
}

#[OpenApi(tag = "ApiTags::AuditLog")]
impl AuditLogApi {
    /// List audit events
    ///
    /// Admins and owners (signed in, or an admin API key), on a plan with the audit log
    /// (Pro and up). Newest first. Every change made through the API is here -- with its
    /// actor, targets, request context and details -- and every sign-in and failed
    /// sign-in of the organization's members. Filters combine (AND).
    #[oai(
        path = "/v1/orgs/:org_id/audit-log",
        method = "get",
        operation_id = "list_audit_log"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// Only events by this user or API key.
        actor_id: Query<Option<Uuid>>,
        /// Only events by this kind of actor.
        actor_type: Query<Option<ActorType>>,
        /// Only actions starting with this: `member.` (every member event),
        /// `api_key.revoked` (one action).
        #[oai(validator(max_length = 80, pattern = r"^[a-z_.]*$"))]
        action: Query<Option<String>>,
        /// Only events with a target of this type (`project`, `user`, ...).
        #[oai(validator(max_length = 40, pattern = r"^[a-z_]*$"))]
        target_type: Query<Option<String>>,
        /// Only events with a target of this id.
        target_id: Query<Option<Uuid>>,
        /// Only events at or after this time (RFC 3339).
        since: Query<Option<DateTime<Utc>>>,
        /// Only events before this time (RFC 3339).
        until: Query<Option<DateTime<Utc>>>,
        /// Page size, 1-100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        #[oai(validator(max_length = 64))]
        cursor: Query<Option<String>>,
    ) -> Result<ListAuditLogResponse, Problems<ListAuditLogErrors>> {
        let (limit, before) = page_args(limit.0, cursor.0.as_deref())?;
        let f = filters(
            actor_id.0,
            actor_type.0,
            action.0,
            target_type.0,
            target_id.0,
            since.0,
            until.0,
        );
        let items = read_page(&state, auth.principal(), org_id.0, &f, before, limit + 1).await?;
        Ok(ListAuditLogResponse::Ok(Json(page_of(items, limit))))
    }

    /// List my account's audit events
    ///
    /// The signed-in user's own security log, newest first: sign-up, sign-ins and failed
    /// sign-ins, token refreshes, sign-outs, session revocations, password and profile
    /// changes, email verification. (Events in an organization are in its log.) Every
    /// plan; nobody else reads it through the API.
    #[oai(
        path = "/v1/auth/me/audit-log",
        method = "get",
        operation_id = "list_my_audit_log"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list_mine(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// Only actions starting with this: `auth.` (sign-ins), `session.`, `user.`.
        #[oai(validator(max_length = 80, pattern = r"^[a-z_.]*$"))]
        action: Query<Option<String>>,
        /// Only events at or after this time (RFC 3339).
        since: Query<Option<DateTime<Utc>>>,
        /// Only events before this time (RFC 3339).
        until: Query<Option<DateTime<Utc>>>,
        /// Page size, 1-100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        #[oai(validator(max_length = 64))]
        cursor: Query<Option<String>>,
    ) -> Result<ListAuditLogResponse, Problems<ListAccountAuditLogErrors>> {
        let (limit, before) = page_args(limit.0, cursor.0.as_deref())?;
        let rows = state
            .as_user(auth.principal(), Access::ReadOnly, async |tx| {
                Ok(tx
                    .query(
                        ACCOUNT_PAGE_SQL,
                        &[&before, &action.0, &since.0, &until.0, &(limit + 1)],
                    )
                    .await?)
            })
            .await?;
        let items = rows.iter().map(AuditEvent::from).collect();
        Ok(ListAuditLogResponse::Ok(Json(page_of(items, limit))))
    }

    /// Export audit events
    ///
    /// The events `list_audit_log` returns for the same filters -- all of them, newest
    /// first -- as one streamed NDJSON or CSV download (`format`, default `ndjson`). The
    /// newest event at the start bounds the export; each page is read under the
    /// caller's access, so one who loses it mid-export gets no further rows.
    #[oai(
        path = "/v1/orgs/:org_id/audit-log/export",
        method = "get",
        operation_id = "export_audit_log"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn export(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// `ndjson` (default) or `csv`.
        format: Query<Option<ExportFormat>>,
        /// Only events by this user or API key.
        actor_id: Query<Option<Uuid>>,
        /// Only events by this kind of actor.
        actor_type: Query<Option<ActorType>>,
        /// Only actions starting with this (see `list_audit_log`).
        #[oai(validator(max_length = 80, pattern = r"^[a-z_.]*$"))]
        action: Query<Option<String>>,
        /// Only events with a target of this type.
        #[oai(validator(max_length = 40, pattern = r"^[a-z_]*$"))]
        target_type: Query<Option<String>>,
        /// Only events with a target of this id.
        target_id: Query<Option<Uuid>>,
        /// Only events at or after this time (RFC 3339).
        since: Query<Option<DateTime<Utc>>>,
        /// Only events before this time (RFC 3339).
        until: Query<Option<DateTime<Utc>>>,
    ) -> Result<AuditExport, Problems<ExportAuditLogErrors>> {
        let format = format.0.unwrap_or(ExportFormat::Ndjson);
        let f = filters(
            actor_id.0,
            actor_type.0,
            action.0,
            target_type.0,
            target_id.0,
            since.0,
            until.0,
        );
        let (state, principal, org_id) = (State::clone(&state), auth.principal().clone(), org_id.0);
        // The first page is read before answering: a refusal is a problem, not a
        // truncated 200.
        let first = read_page(&state, &principal, org_id, &f, i64::MAX, EXPORT_PAGE).await?;
        let request = crate::limits::current();
        let pages = futures_util::stream::unfold(Some(first), move |page| {
            let (state, principal, f, request) = (
                State::clone(&state),
                principal.clone(),
                f.clone(),
                request.clone(),
            );
            async move {
                let page = page?;
                let next = match page.last() {
                    Some(last) if page.len() as i64 == EXPORT_PAGE => {
                        let before = last.seq;
                        match crate::limits::within(
                            request,
                            read_page(&state, &principal, org_id, &f, before, EXPORT_PAGE),
                        )
                        .await
                        {
                            Ok(rows) => Some(rows),
                            Err(e) => {
                                tracing::warn!(code = e.code, detail = %e.detail, "audit export ended early");
                                return Some((Err(std::io::Error::other("export ended")), None));
                            }
                        }
                    }
                    _ => None,
                };
                if page.is_empty() {
                    return None;
                }
                let mut chunk = String::new();
                for e in &page {
                    match format {
                        ExportFormat::Ndjson => {
                            chunk.push_str(&serde_json::to_string(e).unwrap_or_default());
                            chunk.push('\n');
                        }
                        ExportFormat::Csv => chunk.push_str(&csv_line(e)),
                    }
                }
                Some((Ok(bytes::Bytes::from(chunk)), next))
            }
        });
        let head = futures_util::stream::iter(match format {
            ExportFormat::Csv => vec![Ok::<_, std::io::Error>(bytes::Bytes::from_static(
                CSV_HEADER.as_bytes(),
            ))],
            ExportFormat::Ndjson => vec![],
        });
        Ok(AuditExport {
            format,
            body: poem::Body::from_bytes_stream(head.chain(pages)),
        })
    }
}
