//! Usage: ingesting usage events for customer-defined meters, the current period per
//! meter with its limit, daily figures for charts, and the billing-ready report of a
//! period. Every figure is read from the rollups PostgreSQL keeps in the ingesting
//! transaction (policies/functions_usage.sql): no read scans raw events.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use poem::{http::StatusCode, web::Data};
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi, ResponseContent,
    param::{Path, Query},
    payload::{Json, PlainText},
};
use uuid::Uuid;

use super::{
    meters::Aggregation,
    plans::{Enforcement, org_plan},
    usage_batch::{Event, EventBatch},
};
use crate::{
    api::ApiTags,
    db::Access,
    error_set,
    http::{
        errors::{IN_ORG, JSON_BODY, KEY_OR_USER, Problems},
        problem::{ApiError, FieldError},
        security::OrgAuth,
        validate::{EventId, MeterKey, Subject},
    },
    state::State,
};

pub struct UsageApi;

/// Events per batch.
pub const MAX_BATCH: usize = 1000;
/// Properties per event.
const MAX_PROPERTIES: usize = 50;

/// One usage event.
#[derive(Object, Debug, Clone)]
pub struct UsageEvent {
    /// Your idempotency key (1-128 characters, one line): an id seen before in this
    /// organization is a duplicate and is not counted again.
    pub id: EventId,
    /// The meter's key.
    pub meter: MeterKey,
    /// The value, for sum, max and latest meters without a `value_property`; at most
    /// 10^15 in magnitude.
    #[oai(validator(minimum(value = "-1e15"), maximum(value = "1e15")))]
    pub value: Option<f64>,
    /// Who the usage is for (your customer, user...); the distinct thing of a
    /// unique_count meter without a `value_property`. Up to 256 characters.
    pub subject: Option<Subject>,
    /// When it happened: at most 35 days ago and 5 minutes ahead. An event of a closed
    /// period counts in the open one.
    pub timestamp: DateTime<Utc>,
    /// Up to 50 properties; a meter's `value_property` names one (a number at most 10^15 in
    /// magnitude for sum, max and latest). An event whose properties hold a NUL character
    /// (`\u0000`, which PostgreSQL's jsonb cannot store) is rejected (`invalid_event`).
    pub properties: Option<BTreeMap<String, serde_json::Value>>,
}

/// A batch of usage events.
#[derive(Object, Debug)]
pub struct UsageEventBatch {
    /// 1 to 1,000 events.
    #[oai(validator(min_items = 1, max_items = 1000))]
    pub events: Vec<UsageEvent>,
}

/// Why an event was not counted.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum RejectReason {
    /// No meter with this key in the organization.
    UnknownMeter,
    /// Older than 35 days.
    TimestampTooOld,
    /// More than 5 minutes ahead.
    TimestampInFuture,
    /// The meter needs a `value` (sum, max, latest).
    MissingValue,
    /// The meter's `value_property` is missing or not a number (not a scalar, for
    /// unique_count).
    InvalidValue,
    /// A unique_count meter without `value_property` needs a `subject`.
    MissingSubject,
    /// The plan's events for this period are used up (hard limit).
    PlanLimitReached,
    /// The event cannot be stored (a NUL character in its properties).
    InvalidEvent,
}

impl RejectReason {
    fn parse(text: &str) -> Self {
        match text {
            "unknown_meter" => Self::UnknownMeter,
            "timestamp_too_old" => Self::TimestampTooOld,
            "timestamp_in_future" => Self::TimestampInFuture,
            "missing_value" => Self::MissingValue,
            "invalid_value" => Self::InvalidValue,
            "missing_subject" => Self::MissingSubject,
            "plan_limit_reached" => Self::PlanLimitReached,
            _ => Self::InvalidEvent,
        }
    }
}

/// An event of the batch that was not counted.
#[derive(Object, Debug, Clone)]
pub struct RejectedEvent {
    /// Its position in `events`, from 0.
    pub index: i32,
    pub id: String,
    pub reason: RejectReason,
}

/// What became of a batch. Every event is either accepted, a duplicate, or rejected.
#[derive(Object, Debug, Clone)]
pub struct IngestResult {
    /// Counted now.
    pub accepted: i32,
    /// Ids already counted (earlier, or earlier in this batch): not counted again.
    pub duplicates: i32,
    pub rejected: Vec<RejectedEvent>,
}

/// What a meter measures.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum MeterKind {
    /// Built-in, what the organization holds now (seats, projects, API keys, storage).
    Holding,
    /// Built-in, per period (API calls, usage events).
    Period,
    /// A customer-defined meter, per period.
    Custom,
}

/// How close a meter is to its limit.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum UsageLevel {
    /// Under 80 % (or no limit).
    Ok,
    /// At least 80 %.
    Warning,
    /// At least 100 %.
    Exceeded,
}

/// One meter's usage in the current period.
#[derive(Object, Debug, Clone)]
pub struct MeterUsage {
    pub meter: String,
    pub kind: MeterKind,
    /// Custom meters, and the built-in period meters (`api_calls`: sum, `events`: count).
    pub aggregation: Option<Aggregation>,
    pub unit: Option<String>,
    pub used: f64,
    /// The plan's limit; null: unlimited (and for custom meters).
    pub limit: Option<i64>,
    pub enforcement: Option<Enforcement>,
    /// `used` as a percentage of `limit`; null without a limit.
    pub percent: Option<f64>,
    pub level: UsageLevel,
    /// Events of closed periods counted in this one.
    pub late_events: i64,
}

/// An organization's usage in the current period.
#[derive(Object, Debug, Clone)]
pub struct Usage {
    pub org_id: Uuid,
    pub plan: String,
    /// `YYYY-MM`.
    pub period: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// Built-in meters first, then custom meters by key. API calls are counted within
    /// seconds (the worker flushes them every 10 s).
    pub meters: Vec<MeterUsage>,
}

/// One day of a meter.
#[derive(Object, Debug, Clone)]
pub struct DayUsage {
    pub day: NaiveDate,
    /// The meter's aggregate over that day (0 without events).
    pub value: f64,
    pub events: i64,
}

/// A meter's daily figures, every day of the range (days without usage are 0).
#[derive(Object, Debug, Clone)]
pub struct DailyUsage {
    pub meter: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub days: Vec<DayUsage>,
}

/// One line of a usage report.
#[derive(Object, Debug, Clone, serde::Serialize)]
pub struct ReportLine {
    /// `plan` (the flat fee), `api_calls`, `events`, or a custom meter's key.
    pub meter: String,
    pub description: String,
    pub unit: Option<String>,
    pub quantity: f64,
    /// Included in the plan; null: unlimited, or not priced (custom meters).
    pub included: Option<i64>,
    /// Quantity past `included` that is billed (soft limits only).
    pub overage: f64,
    /// Price per package, in the smallest currency unit, as a decimal string.
    pub unit_price_cents: String,
    pub package_size: i64,
    /// This line's amount, in the smallest currency unit (packages rounded up).
    pub amount_cents: i64,
    /// Events of earlier periods counted in this one.
    pub late_events: i64,
}

/// The billing-ready report of one period.
#[derive(Object, Debug, Clone)]
pub struct UsageReport {
    pub org_id: Uuid,
    /// `YYYY-MM`.
    pub period: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// True once the period has ended: its figures never change again (late events
    /// count in the open period).
    pub closed: bool,
    /// The organization's plan (its current one: plan history arrives with billing).
    pub plan: String,
    pub currency: String,
    pub lines: Vec<ReportLine>,
    pub total_cents: i64,
    /// Events of earlier periods this period counted (late events land in the open period).
    pub late_events: i64,
}

#[derive(ApiResponse)]
pub enum IngestResponse {
    /// The batch was processed: see the counts and each rejected event's reason.
    #[oai(status = 200)]
    Ok(Json<IngestResult>),
}

#[derive(ApiResponse)]
pub enum UsageResponse {
    /// The current period.
    #[oai(status = 200)]
    Ok(Json<Usage>),
}

#[derive(ApiResponse)]
pub enum DailyUsageResponse {
    /// Every day of the range.
    #[oai(status = 200)]
    Ok(Json<DailyUsage>),
}

/// The report as JSON, or as CSV (one line per report line).
#[derive(ResponseContent)]
pub enum ReportBody {
    Json(Json<UsageReport>),
    #[oai(content_type = "text/csv")]
    Csv(PlainText<String>),
}

#[derive(ApiResponse)]
pub enum ReportResponse {
    /// The report: JSON, or CSV with `format=csv` or `Accept: text/csv`.
    #[oai(status = 200)]
    Ok(ReportBody),
}

const BAD_RANGE: &str = "Malformed `meter`, `from`, `to` or `period` (`invalid_parameter`); \
     a day that does not exist (`invalid_date`); `from` after `to` or more than 366 days \
     (`invalid_range`); a period that has not started (`period_not_started`).";

error_set! {
    pub IngestErrors: [KEY_OR_USER, IN_ORG, JSON_BODY] {
        403 => "The caller is a viewer (`forbidden`), or the organization's plan lacks custom \
                meters (`plan_feature_unavailable`).",
    }
    pub UsageErrors: [KEY_OR_USER, IN_ORG] {}
    pub DailyUsageErrors: [KEY_OR_USER, IN_ORG] {
        400 => BAD_RANGE,
        404 => "No such organization or meter for the caller (`not_found`).",
    }
    pub ReportErrors: [KEY_OR_USER, IN_ORG] { 400 => BAD_RANGE }
}

fn bad_parameter(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_parameter", detail)
}

/// A 400 for well-formed parameters the calendar or the clock refuses.
fn semantic(code: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, detail)
}

/// A `YYYY-MM-DD` that exists (the pattern lets 2026-02-30 through).
fn parse_day(text: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| semantic("invalid_date", format!("{text} is not a calendar date")))
}

/// The first day of the month `YYYY-MM`.
fn parse_period(text: &str) -> Result<NaiveDate, ApiError> {
    let date = NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d")
        .ok()
        .filter(|_| text.len() == 7)
        .ok_or_else(|| bad_parameter("period must be a month, YYYY-MM"))?;
    Ok(date)
}

fn month_bounds(start: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let end = start + Months::new(1);
    (
        start.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
        end.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
    )
}

fn level(percent: Option<f64>) -> UsageLevel {
    match percent {
        Some(p) if p >= 100.0 => UsageLevel::Exceeded,
        Some(p) if p >= 80.0 => UsageLevel::Warning,
        _ => UsageLevel::Ok,
    }
}

/// The events of a batch as SQL's parallel arrays, and what the schema cannot say.
struct Columns<'a> {
    /// Position in the batch of each event passed to SQL.
    positions: Vec<usize>,
    ids: Vec<&'a str>,
    meters: Vec<&'a str>,
    values: Vec<Option<String>>,
    subjects: Vec<Option<&'a str>>,
    timestamps: Vec<DateTime<Utc>>,
    properties: Vec<Option<serde_json::Value>>,
    /// Events judged here (not passed to SQL).
    rejected: Vec<RejectedEvent>,
}

/// `properties`: each event's, taken out of `events` (moved into the SQL parameter, not
/// copied).
fn columns(
    events: &[Event],
    properties: Vec<Option<serde_json::Map<String, serde_json::Value>>>,
) -> Result<Columns<'_>, ApiError> {
    if events.len() > MAX_BATCH {
        return Err(ApiError::validation(vec![FieldError {
            field: "events".into(),
            code: "too_many".into(),
            message: format!("at most {MAX_BATCH} events per batch"),
        }]));
    }
    let errors: Vec<FieldError> = properties
        .iter()
        .enumerate()
        .filter(|(_, p)| p.as_ref().is_some_and(|p| p.len() > MAX_PROPERTIES))
        .map(|(i, _)| FieldError {
            field: format!("events[{i}].properties"),
            code: "too_many".into(),
            message: format!("at most {MAX_PROPERTIES} properties"),
        })
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut c = Columns {
        positions: Vec::with_capacity(events.len()),
        ids: Vec::with_capacity(events.len()),
        meters: Vec::with_capacity(events.len()),
        values: Vec::with_capacity(events.len()),
        subjects: Vec::with_capacity(events.len()),
        timestamps: Vec::with_capacity(events.len()),
        properties: Vec::with_capacity(events.len()),
        rejected: Vec::new(),
    };
    for (i, (e, properties)) in events.iter().zip(properties).enumerate() {
        let properties = properties.map(serde_json::Value::Object);
        if properties
            .as_ref()
            .is_some_and(crate::http::validate::json_has_nul)
        {
            c.rejected.push(RejectedEvent {
                index: i as i32,
                id: e.id.clone(),
                reason: RejectReason::InvalidEvent,
            });
            continue;
        }
        c.positions.push(i);
        c.ids.push(&e.id);
        c.meters.push(&e.meter);
        c.values.push(e.value.map(|v| v.to_string()));
        c.subjects.push(e.subject.as_deref());
        c.timestamps.push(e.timestamp);
        c.properties.push(properties);
    }
    Ok(c)
}

/// One CSV field (RFC 4180 quoting).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The report as CSV: a header, then one row per line.
pub fn report_csv(report: &UsageReport) -> String {
    let mut out = String::from(
        "period,meter,description,unit,quantity,included,overage,unit_price_cents,package_size,amount_cents,late_events\n",
    );
    for l in &report.lines {
        let fields = [
            report.period.clone(),
            l.meter.clone(),
            l.description.clone(),
            l.unit.clone().unwrap_or_default(),
            l.quantity.to_string(),
            l.included.map(|i| i.to_string()).unwrap_or_default(),
            l.overage.to_string(),
            l.unit_price_cents.clone(),
            l.package_size.to_string(),
            l.amount_cents.to_string(),
            l.late_events.to_string(),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// The report's lines: the plan's flat fee, then the metered meters of the period.
const REPORT_SQL: &str = "
    select 'plan', p.name || ' plan', null::text, 1::float8, null::bigint, 0::float8,
           p.monthly_price_cents::text, 1::bigint, p.monthly_price_cents, 0::bigint, 0
      from app.org_plans op join app.plans p on p.id = op.plan_id
    union all
    select b.meter, b.description, b.unit, coalesce(u.value, 0)::float8, l.included,
           case when l.enforcement = 'soft' and l.included is not null
                then greatest(coalesce(u.value, 0) - l.included, 0) else 0 end::float8,
           coalesce(trim_scale(l.overage_price_cents)::text, '0'), coalesce(l.package_size, 1),
           case when l.enforcement = 'soft' and l.included is not null
                then round(ceil(greatest(coalesce(u.value, 0) - l.included, 0) / l.package_size)
                           * l.overage_price_cents)::bigint
                else 0 end,
           coalesce(u.late_events, 0), b.ord
      from (values ('api_calls', 'API calls', 'calls', 1), ('events', 'Usage events', 'events', 2),
                   ('llm_tokens', 'LLM tokens', 'tokens', 3))
           as b(meter, description, unit, ord)
      join app.org_plans op on true
      left join app.plan_limits l on l.plan_id = op.plan_id and l.meter = b.meter
      left join app.usage_periods u on u.meter_key = b.meter and u.period = $1
    union all
    select m.key, m.name, m.unit, coalesce(u.value, 0)::float8, null, 0, '0', 1, 0,
           coalesce(u.late_events, 0), 4
      from app.meters m
      left join app.usage_periods u on u.meter_key = m.key and u.period = $1
     order by 11, 1";

#[OpenApi(tag = "ApiTags::Usage")]
impl UsageApi {
    /// Ingest usage events
    ///
    /// A batch of up to 1,000 events for the organization's meters, from members and up
    /// (API keys included) on a plan with `custom_meters`. Idempotent by event `id`: a
    /// repeated id is reported as a duplicate and counted once. Each event is judged on
    /// its own -- an unknown meter, a timestamp older than 35 days or more than 5 minutes
    /// ahead, a missing or non-numeric value rejects that event with a reason, and the
    /// rest still count. Rollups are updated in the same transaction.
    #[oai(
        path = "/v1/orgs/:org_id/usage-events",
        method = "post",
        operation_id = "ingest_usage_events"
    )]
    async fn ingest(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        body: EventBatch,
    ) -> Result<IngestResponse, Problems<IngestErrors>> {
        let EventBatch(mut events) = body;
        let properties = events.iter_mut().map(|e| e.properties.take()).collect();
        let c = columns(&events, properties)?;
        let result = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                let row = tx
                    .query_one(
                        "select accepted, duplicates, rejected
                           from app.ingest_usage_events($1, $2, $3::text[]::numeric[], $4, $5, $6)",
                        &[
                            &c.ids,
                            &c.meters,
                            &c.values,
                            &c.subjects,
                            &c.timestamps,
                            &c.properties,
                        ],
                    )
                    .await?;
                let from_sql: serde_json::Value = row.get(2);
                let mut rejected = c.rejected.clone();
                for r in from_sql.as_array().into_iter().flatten() {
                    // SQL numbers the events it was given; map back to the batch.
                    let at = r["index"].as_u64().unwrap_or(0) as usize;
                    rejected.push(RejectedEvent {
                        index: c.positions.get(at).copied().unwrap_or(at) as i32,
                        id: r["id"].as_str().unwrap_or_default().to_owned(),
                        reason: RejectReason::parse(r["reason"].as_str().unwrap_or("")),
                    });
                }
                rejected.sort_by_key(|r| r.index);
                Ok(IngestResult {
                    accepted: row.get(0),
                    duplicates: row.get(1),
                    rejected,
                })
            })
            .await?;
        Ok(IngestResponse::Ok(Json(result)))
    }

    /// Get usage
    ///
    /// The current period (a calendar month, UTC) per meter: what is used, the plan's
    /// limit, the percentage and a level (`warning` from 80 %, `exceeded` from 100 %).
    /// Any member or API key of the organization.
    #[oai(
        path = "/v1/orgs/:org_id/usage",
        method = "get",
        operation_id = "get_usage"
    )]
    async fn usage(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
    ) -> Result<UsageResponse, Problems<UsageErrors>> {
        let usage = state
            .in_org(auth.principal(), org_id.0, Access::ReadOnly, async |tx| {
                let plan = org_plan(tx, org_id.0).await?;
                let rows = tx
                    .query(
                        "select meter, kind, aggregation, unit, used::float8, included, enforcement, late_events
                           from app.org_usage()",
                        &[],
                    )
                    .await?;
                let meters = rows
                    .iter()
                    .map(|r| {
                        let used: f64 = r.get(4);
                        let limit: Option<i64> = r.get(5);
                        let percent = limit.map(|l| {
                            if l == 0 {
                                if used > 0.0 { 100.0 } else { 0.0 }
                            } else {
                                (used * 10000.0 / l as f64).round() / 100.0
                            }
                        });
                        let kind = match r.get::<_, &str>(1) {
                            "count" => MeterKind::Holding,
                            "period" => MeterKind::Period,
                            _ => MeterKind::Custom,
                        };
                        MeterUsage {
                            meter: r.get(0),
                            kind,
                            aggregation: r.get::<_, Option<&str>>(2).and_then(Aggregation::parse),
                            unit: r.get(3),
                            used,
                            limit,
                            enforcement: r.get::<_, Option<&str>>(6).map(Enforcement::parse),
                            percent,
                            level: level(percent),
                            late_events: r.get(7),
                        }
                    })
                    .collect();
                let start = plan.current_period_start.date_naive();
                Ok(Usage {
                    org_id: org_id.0,
                    plan: plan.plan.id,
                    period: format!("{:04}-{:02}", start.year(), start.month()),
                    period_start: plan.current_period_start,
                    period_end: plan.current_period_end,
                    meters,
                })
            })
            .await?;
        Ok(UsageResponse::Ok(Json(usage)))
    }

    /// Get daily usage
    ///
    /// One meter's figure for every day from `from` to `to` (UTC days, at most 366; default
    /// the last 30 days), for charts. Period meters only: `api_calls`, `events` or a custom
    /// meter's key (`llm_tokens`: the assistant's tokens).
    #[oai(
        path = "/v1/orgs/:org_id/usage/daily",
        method = "get",
        operation_id = "get_daily_usage"
    )]
    async fn daily(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// `api_calls`, `events`, or a custom meter's key.
        #[oai(validator(pattern = r"^[a-z][a-z0-9_.\-]{0,63}$"))]
        meter: Query<String>,
        /// First day, `YYYY-MM-DD` (default: 29 days before `to`).
        #[oai(validator(pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"))]
        from: Query<Option<String>>,
        /// Last day, `YYYY-MM-DD` (default: today, UTC).
        #[oai(validator(pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"))]
        to: Query<Option<String>>,
    ) -> Result<DailyUsageResponse, Problems<DailyUsageErrors>> {
        let to = match to.0.as_deref() {
            Some(d) => parse_day(d)?,
            None => Utc::now().date_naive(),
        };
        let from = match from.0.as_deref() {
            Some(d) => parse_day(d)?,
            None => to - chrono::Days::new(29),
        };
        if from > to {
            return Err(semantic("invalid_range", "from must not be after to").into());
        }
        if (to - from).num_days() >= 366 {
            return Err(semantic("invalid_range", "at most 366 days at once").into());
        }
        let meter = meter.0;
        let days = state
            .in_org(auth.principal(), org_id.0, Access::ReadOnly, async |tx| {
                let known = ["api_calls", "events", "llm_tokens"].contains(&meter.as_str())
                    || tx
                        .query_opt("select 1 from app.meters where key = $1", &[&meter])
                        .await?
                        .is_some();
                if !known {
                    return Err(ApiError::not_found("meter"));
                }
                let rows = tx
                    .query(
                        "select d.day::date, coalesce(u.value, 0)::float8, coalesce(u.events, 0)
                           from generate_series($2::date, $3::date, interval '1 day') as d(day)
                           left join app.usage_days u on u.meter_key = $1 and u.day = d.day::date
                          order by 1",
                        &[&meter, &from, &to],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| DayUsage {
                        day: r.get(0),
                        value: r.get(1),
                        events: r.get(2),
                    })
                    .collect())
            })
            .await?;
        Ok(DailyUsageResponse::Ok(Json(DailyUsage {
            meter,
            from,
            to,
            days,
        })))
    }

    /// Get a usage report
    ///
    /// The billing-ready report of a period (default: the open one): the plan's flat fee,
    /// then one line per metered meter with quantity, included quantity, overage, unit
    /// price from the plan and amount. A closed period never changes: a late event lands
    /// in the open period and its report counts it in `late_events`. JSON, or CSV with
    /// `format=csv` or `Accept: text/csv`.
    #[oai(
        path = "/v1/orgs/:org_id/usage/report",
        method = "get",
        operation_id = "get_usage_report"
    )]
    async fn report(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The month, `YYYY-MM` (default: the current one, UTC).
        #[oai(validator(pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])$"))]
        period: Query<Option<String>>,
        /// `json` (default) or `csv`; without it, `Accept: text/csv` selects CSV.
        format: Query<Option<ReportFormat>>,
        req: &poem::Request,
    ) -> Result<ReportResponse, Problems<ReportErrors>> {
        let now = Utc::now().date_naive();
        let open = now.with_day(1).unwrap_or(now);
        let start = match period.0.as_deref() {
            None => open,
            Some(p) => parse_period(p)?,
        };
        if start > open {
            return Err(semantic("period_not_started", "the period has not started yet").into());
        }
        let csv = match format.0 {
            Some(f) => f == ReportFormat::Csv,
            None => req
                .headers()
                .get(poem::http::header::ACCEPT)
                .and_then(|a| a.to_str().ok())
                .is_some_and(|a| a.contains("text/csv")),
        };
        let (period_start, period_end) = month_bounds(start);
        let report = state
            .in_org(auth.principal(), org_id.0, Access::ReadOnly, async |tx| {
                let plan = org_plan(tx, org_id.0).await?;
                let rows = tx.query(REPORT_SQL, &[&start]).await?;
                let lines: Vec<ReportLine> = rows
                    .iter()
                    .map(|r| ReportLine {
                        meter: r.get(0),
                        description: r.get(1),
                        unit: r.get(2),
                        quantity: r.get(3),
                        included: r.get(4),
                        overage: r.get(5),
                        unit_price_cents: r.get(6),
                        package_size: r.get(7),
                        amount_cents: r.get(8),
                        late_events: r.get(9),
                    })
                    .collect();
                Ok(UsageReport {
                    org_id: org_id.0,
                    period: format!("{:04}-{:02}", start.year(), start.month()),
                    period_start,
                    period_end,
                    closed: start < open,
                    plan: plan.plan.id,
                    currency: plan.plan.currency,
                    total_cents: lines.iter().map(|l| l.amount_cents).sum(),
                    late_events: lines.iter().map(|l| l.late_events).sum(),
                    lines,
                })
            })
            .await?;
        Ok(ReportResponse::Ok(if csv {
            ReportBody::Csv(PlainText(report_csv(&report)))
        } else {
            ReportBody::Json(Json(report))
        }))
    }
}

/// The report's representation.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum ReportFormat {
    Json,
    Csv,
}
