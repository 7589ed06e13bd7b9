//! Customer-defined meters: what an organization meters for its own customers (API
//! calls of its product, tokens, active users...). Created by admins (users or admin API
//! keys) on a plan with the `custom_meters` feature -- both checked by the insert policy
//! (policies/usage.sql). A meter is never updated or deleted: its events and rollups
//! refer to it by key.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{
    api::ApiTags,
    db::Access,
    error_set,
    http::{
        errors::{IN_ORG, JSON_BODY, KEY_OR_USER, PAGED, Problems},
        pagination::{Cursor, fetch_page, page_params},
        problem::ApiError,
        security::OrgAuth,
        validate::{MeterKey, Name, ValidJson},
    },
    page,
    state::State,
};

pub struct MetersApi;

/// How a meter folds its events into one figure per period (and per day).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// The sum of the values.
    Sum,
    /// The number of events.
    Count,
    /// The largest value.
    Max,
    /// The number of distinct values of `value_property` (or of `subject` without one).
    UniqueCount,
    /// The value of the latest event (by timestamp).
    Latest,
}

impl Aggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sum => "sum",
            Self::Count => "count",
            Self::Max => "max",
            Self::UniqueCount => "unique_count",
            Self::Latest => "latest",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Sum,
            Self::Count,
            Self::Max,
            Self::UniqueCount,
            Self::Latest,
        ]
        .into_iter()
        .find(|a| a.as_str() == text)
    }
}

/// A customer-defined meter.
#[derive(Object, serde::Serialize, Debug, Clone)]
pub struct Meter {
    pub id: Uuid,
    pub org_id: Uuid,
    /// What usage events name in `meter`.
    pub key: String,
    pub name: String,
    pub aggregation: Aggregation,
    /// The event property holding the value (sum, max, latest) or the distinct thing
    /// (unique_count); null: the event's `value` (or its `subject` for unique_count).
    pub value_property: Option<String>,
    /// Display unit, e.g. `tokens`.
    pub unit: Option<String>,
    /// The member who created it; null for an API key or a deleted account.
    pub created_by: Option<Uuid>,
    #[serde(serialize_with = "crate::http::json::rfc3339")]
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, org_id, key, name, aggregation, value_property, unit, created_by, created_at";

impl TryFrom<&Row> for Meter {
    type Error = ApiError;
    fn try_from(r: &Row) -> Result<Self, ApiError> {
        let aggregation: &str = r.get(4);
        Ok(Self {
            id: r.get(0),
            org_id: r.get(1),
            key: r.get(2),
            name: r.get(3),
            aggregation: Aggregation::parse(aggregation).ok_or_else(|| {
                ApiError::internal(&format!("unknown aggregation {aggregation:?}"))
            })?,
            value_property: r.get(5),
            unit: r.get(6),
            created_by: r.get(7),
            created_at: r.get(8),
        })
    }
}

page! {
    /// One page of meters.
    MeterPage of Meter
}

/// A new meter.
#[derive(Object)]
pub struct CreateMeter {
    /// Unique in the organization; not a built-in meter's name (`seats`, `projects`,
    /// `api_keys`, `storage_bytes`, `api_calls`, `events`, `llm_tokens`).
    pub key: MeterKey,
    pub name: Name,
    pub aggregation: Aggregation,
    /// The event property to aggregate (1-64 characters: letters, digits, `_`, `.`, `-`).
    #[oai(validator(pattern = r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$"))]
    pub value_property: Option<String>,
    /// Display unit, 1-32 characters, no control characters.
    #[oai(validator(min_length = 1, max_length = 32, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"))]
    pub unit: Option<String>,
}

const BUILTIN_METERS: &[&str] = &[
    "seats",
    "projects",
    "api_keys",
    "storage_bytes",
    "api_calls",
    "events",
    "llm_tokens",
];

#[derive(ApiResponse)]
pub enum CreateMeterResponse {
    /// Created.
    #[oai(status = 201)]
    Created(Json<Meter>),
}

#[derive(ApiResponse)]
pub enum ListMetersResponse {
    /// The organization's meters, oldest first.
    #[oai(status = 200)]
    Ok(Json<MeterPage>),
}

#[derive(ApiResponse)]
pub enum MeterResponse {
    /// The meter.
    #[oai(status = 200)]
    Ok(Json<Meter>),
}

error_set! {
    pub CreateMeterErrors: [KEY_OR_USER, IN_ORG, JSON_BODY] {
        403 => "The caller is not an admin (`forbidden`), or the organization's plan lacks \
                custom meters (`plan_feature_unavailable`, with `plan` and `feature`).",
        409 => "A meter with this key already exists in the organization (`meter_key_taken`).",
    }
    pub ListMetersErrors: [KEY_OR_USER, IN_ORG, PAGED] {}
    pub GetMeterErrors: [KEY_OR_USER] {
        404 => "No such organization or meter for the caller (`not_found`).",
    }
}

#[OpenApi(tag = "ApiTags::Usage")]
impl MetersApi {
    /// Create a meter
    ///
    /// Admins (signed-in or an admin API key), on a plan with `custom_meters` (Pro and
    /// up). Usage events then name it by `key`.
    #[oai(
        path = "/v1/orgs/:org_id/meters",
        method = "post",
        operation_id = "create_meter"
    )]
    async fn create(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        body: ValidJson<CreateMeter>,
    ) -> Result<CreateMeterResponse, Problems<CreateMeterErrors>> {
        if BUILTIN_METERS.contains(&body.key.as_str()) {
            return Err(ApiError::validation(vec![crate::http::problem::FieldError {
                field: "key".into(),
                code: "reserved".into(),
                message: "is the name of a built-in meter".into(),
            }])
            .into());
        }
        let meter = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                let row = tx
                    .query_one(
                        &format!(
                            "insert into app.meters (key, name, aggregation, value_property, unit, created_by)
                             values ($1, $2, $3, $4, $5, app.current_user_id()) returning {COLUMNS}"
                        ),
                        &[
                            &body.key.as_str(),
                            &body.name.as_str(),
                            &body.aggregation.as_str(),
                            &body.value_property,
                            &body.unit,
                        ],
                    )
                    .await?;
                Meter::try_from(&row)
            })
            .await?;
        Ok(CreateMeterResponse::Created(Json(meter)))
    }

    /// List meters
    ///
    /// Oldest first, paginated. Any member or API key of the organization.
    #[oai(
        path = "/v1/orgs/:org_id/meters",
        method = "get",
        operation_id = "list_meters"
    )]
    async fn list(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// Page size, 1-100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<ListMetersResponse, Problems<ListMetersErrors>> {
        let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
        let page = state
            .in_org(auth.principal(), org_id.0, Access::ReadOnly, async |tx| {
                let rows = fetch_page(
                    tx,
                    &format!("select {COLUMNS} from app.meters where true"),
                    "created_at, id",
                    limit,
                    after,
                )
                .await?;
                let items = rows.iter().map(Meter::try_from).collect::<Result<_, _>>()?;
                Ok(MeterPage::from_rows(items, limit, |m| Cursor {
                    created_at: m.created_at,
                    id: m.id,
                }))
            })
            .await?;
        Ok(ListMetersResponse::Ok(Json(page)))
    }

    /// Get a meter
    ///
    /// By its key. Any member or API key of the organization.
    #[oai(
        path = "/v1/orgs/:org_id/meters/:meter_key",
        method = "get",
        operation_id = "get_meter"
    )]
    async fn get(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The meter's key.
        meter_key: Path<String>,
    ) -> Result<MeterResponse, Problems<GetMeterErrors>> {
        // Not a key's shape (e.g. a NUL, which no text column holds): no such meter.
        if !MeterKey::accepts(&meter_key.0) {
            return Err(ApiError::not_found("meter").into());
        }
        let rows = state
            .read_in_org(
                auth.principal(),
                org_id.0,
                &format!("select {COLUMNS} from app.meters where key = $1"),
                &[&meter_key.0],
            )
            .await?;
        let meter = rows
            .first()
            .map(Meter::try_from)
            .transpose()?
            .ok_or_else(|| ApiError::not_found("meter"))?;
        Ok(MeterResponse::Ok(Json(meter)))
    }
}
