//! The plan catalogue (public) and an organization's plan.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, param::Path, payload::Json};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{
    api::ApiTags,
    db::{Access, Tx},
    error_set,
    http::{
        errors::{BY_CLIENT_IP, IN_ORG, KEY_OR_USER, Problems},
        security::OrgAuth,
    },
    state::State,
};

pub struct PlansApi;

/// How a limit is enforced.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum Enforcement {
    /// The write that would pass the limit is refused (402 `plan_limit_reached`).
    Hard,
    /// Usage past the limit is allowed and billed as overage.
    Soft,
}

impl Enforcement {
    pub fn parse(text: &str) -> Self {
        if text == "soft" {
            Self::Soft
        } else {
            Self::Hard
        }
    }
}

/// A plan's limit for one built-in meter.
#[derive(Object, Debug, Clone)]
pub struct PlanLimit {
    /// `seats`, `projects`, `api_keys`, `storage_bytes` (what an org holds), `api_calls`,
    /// `events`, `llm_tokens` (per monthly period).
    pub meter: String,
    /// Included quantity; null: unlimited.
    pub included: Option<i64>,
    pub enforcement: Enforcement,
    /// Soft limits: the price of each `package_size` units past `included`, in the
    /// smallest currency unit, as a decimal string (e.g. `"50"` = $0.50).
    pub overage_price_cents: String,
    pub package_size: i64,
}

/// A plan of the catalogue.
#[derive(Object, Debug, Clone)]
pub struct Plan {
    /// `free`, `pro`, `enterprise`, or one a DBA added.
    pub id: String,
    pub name: String,
    /// Flat price per monthly period, in the smallest unit of `currency`.
    pub monthly_price_cents: i64,
    /// ISO 4217, lowercase (e.g. `usd`).
    pub currency: String,
    /// Requests per minute per API key and per user in an organization on this plan;
    /// null: only the server's own limit.
    pub requests_per_minute: Option<i32>,
    /// Feature flags, e.g. `custom_meters`, `audit_log`, `conversation_history`.
    pub features: Vec<String>,
    /// The plan new organizations start on.
    pub is_default: bool,
    pub limits: Vec<PlanLimit>,
}

/// The plan catalogue, cheapest first.
#[derive(Object, Debug, Clone)]
pub struct PlanList {
    pub items: Vec<Plan>,
}

/// Status of an organization's plan.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum PlanStatus {
    Active,
    Trialing,
    PastDue,
    Canceled,
}

/// An organization's plan.
#[derive(Object, Debug, Clone)]
pub struct OrgPlan {
    pub org_id: Uuid,
    pub plan: Plan,
    pub status: PlanStatus,
    /// The current usage period: a calendar month (UTC) until billing sets its own.
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    /// When the organization last changed plan (or was created).
    pub changed_at: DateTime<Utc>,
}

/// One row per plan: its columns, then its limits as parallel arrays.
const PLAN_COLUMNS: &str = "p.id, p.name, p.monthly_price_cents, p.currency, p.requests_per_minute,
       p.features, p.is_default,
       coalesce((select array_agg(l.meter order by l.meter) from app.plan_limits l where l.plan_id = p.id), '{}'),
       coalesce((select array_agg(l.included order by l.meter) from app.plan_limits l where l.plan_id = p.id), '{}'),
       coalesce((select array_agg(l.enforcement order by l.meter) from app.plan_limits l where l.plan_id = p.id), '{}'),
       coalesce((select array_agg(trim_scale(l.overage_price_cents)::text order by l.meter) from app.plan_limits l where l.plan_id = p.id), '{}'),
       coalesce((select array_agg(l.package_size order by l.meter) from app.plan_limits l where l.plan_id = p.id), '{}')";

impl From<&Row> for Plan {
    fn from(r: &Row) -> Self {
        let meters: Vec<String> = r.get(7);
        let included: Vec<Option<i64>> = r.get(8);
        let enforcement: Vec<String> = r.get(9);
        let prices: Vec<String> = r.get(10);
        let packages: Vec<i64> = r.get(11);
        let limits = meters
            .into_iter()
            .zip(included)
            .zip(enforcement)
            .zip(prices)
            .zip(packages)
            .map(
                |((((meter, included), e), price), package_size)| PlanLimit {
                    meter,
                    included,
                    enforcement: Enforcement::parse(&e),
                    overage_price_cents: price,
                    package_size,
                },
            )
            .collect();
        Self {
            id: r.get(0),
            name: r.get(1),
            monthly_price_cents: r.get(2),
            currency: r.get(3),
            requests_per_minute: r.get(4),
            features: r.get(5),
            is_default: r.get(6),
            limits,
        }
    }
}

pub fn status_of(text: &str) -> PlanStatus {
    match text {
        "trialing" => PlanStatus::Trialing,
        "past_due" => PlanStatus::PastDue,
        "canceled" => PlanStatus::Canceled,
        _ => PlanStatus::Active,
    }
}

/// The org in context's plan (readable by its members and keys: policies/plans.sql).
pub async fn org_plan(tx: &Tx, org_id: Uuid) -> Result<OrgPlan, crate::http::problem::ApiError> {
    let row = tx
        .query_one(
            &format!(
                "select {PLAN_COLUMNS}, op.status, op.changed_at,
                        coalesce(case when now() < op.current_period_end then op.current_period_start end,
                                 app.period_of(now())::timestamp at time zone 'UTC'),
                        coalesce(case when now() < op.current_period_end then op.current_period_end end,
                                 (app.period_of(now()) + interval '1 month')::timestamp at time zone 'UTC')
                   from app.org_plans op join app.plans p on p.id = op.plan_id"
            ),
            &[],
        )
        .await?;
    Ok(OrgPlan {
        org_id,
        plan: Plan::from(&row),
        status: status_of(row.get(12)),
        changed_at: row.get(13),
        current_period_start: row.get(14),
        current_period_end: row.get(15),
    })
}

#[derive(ApiResponse)]
pub enum ListPlansResponse {
    /// The catalogue.
    #[oai(status = 200)]
    Ok(Json<PlanList>),
}

#[derive(ApiResponse)]
pub enum OrgPlanResponse {
    /// The organization's plan.
    #[oai(status = 200)]
    Ok(Json<OrgPlan>),
}

error_set! {
    pub ListPlansErrors: [BY_CLIENT_IP] {}
    pub OrgPlanErrors: [KEY_OR_USER, IN_ORG] {}
}

#[OpenApi(tag = "ApiTags::Plans")]
impl PlansApi {
    /// List plans
    ///
    /// The public catalogue: each plan's price, requests per minute, feature flags and
    /// limits per meter. No authentication.
    #[oai(path = "/v1/plans", method = "get", operation_id = "list_plans")]
    async fn list(
        &self,
        state: Data<&State>,
    ) -> Result<ListPlansResponse, Problems<ListPlansErrors>> {
        let rows = state
            .as_credentials(Access::ReadOnly, async |tx| {
                Ok(tx
                    .query(
                        &format!("select {PLAN_COLUMNS} from app.plans p order by p.rank"),
                        &[],
                    )
                    .await?)
            })
            .await?;
        Ok(ListPlansResponse::Ok(Json(PlanList {
            items: rows.iter().map(Plan::from).collect(),
        })))
    }

    /// Get an organization's plan
    ///
    /// Its plan (with limits and features), status and current usage period. Any member
    /// or API key of the organization.
    #[oai(
        path = "/v1/orgs/:org_id/plan",
        method = "get",
        operation_id = "get_org_plan"
    )]
    async fn get(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
    ) -> Result<OrgPlanResponse, Problems<OrgPlanErrors>> {
        let plan = state
            .in_org(auth.principal(), org_id.0, Access::ReadOnly, async |tx| {
                org_plan(tx, org_id.0).await
            })
            .await?;
        Ok(OrgPlanResponse::Ok(Json(plan)))
    }
}
