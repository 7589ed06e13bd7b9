//! An organization's billing: its summary, its Checkout Sessions, and the three ways an
//! owner spends through Stripe -- a subscription checkout, a credit top-up, the Customer
//! Portal. Owners only start them (money commits the organization); admins read.
//! Every rule is in policies/functions_billing.sql; Stripe is called between two
//! transactions, never inside one.

use chrono::{DateTime, Utc};
use poem::{http::StatusCode, web::Data};
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use tokio_postgres::Row;
use uuid::Uuid;

use super::plans::PlanStatus;
use crate::{
    api::ApiTags,
    billing::stripe::{CheckoutRequest, Stripe, StripeError},
    db::Access,
    error_set,
    http::{
        errors::{AUTHENTICATED, IN_ORG, JSON_BODY, PAGED, Problems},
        json::{rfc3339, rfc3339_opt},
        pagination::{Cursor, fetch_page, page_params},
        problem::{ApiError, FieldError},
        security::BearerAuth,
        validate::ValidJson,
    },
    page,
    state::State,
};

pub struct BillingApi;

/// A subscription's status, as Stripe reports it.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
}

impl SubscriptionStatus {
    fn parse(text: &str) -> Self {
        match text {
            "incomplete" => Self::Incomplete,
            "incomplete_expired" => Self::IncompleteExpired,
            "trialing" => Self::Trialing,
            "past_due" => Self::PastDue,
            "canceled" => Self::Canceled,
            "unpaid" => Self::Unpaid,
            "paused" => Self::Paused,
            _ => Self::Active,
        }
    }
}

/// The organization's subscription, as last read from Stripe.
#[derive(Object, Debug, Clone)]
pub struct Subscription {
    /// Stripe's id (`sub_...`).
    pub id: String,
    pub status: SubscriptionStatus,
    /// The plan it pays for; null for a price this server does not sell.
    pub plan: Option<String>,
    pub current_period_end: Option<DateTime<Utc>>,
    /// True: it ends at `current_period_end` (cancelled in the portal).
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    /// past_due: when payment became overdue, and when its grace period ends (the free
    /// plan's limits apply from then until it is paid).
    pub past_due_since: Option<DateTime<Utc>>,
    pub grace_ends_at: Option<DateTime<Utc>>,
}

/// An organization's billing.
#[derive(Object, Debug, Clone)]
pub struct Billing {
    pub org_id: Uuid,
    /// The plan in force: what the quotas follow.
    pub plan: String,
    pub plan_status: PlanStatus,
    /// The subscription that sets the plan (the live one; else the latest); null when
    /// the organization never subscribed.
    pub subscription: Option<Subscription>,
    /// Prepaid credits from top-ups, in the smallest unit of `currency`.
    pub credit_balance_cents: i64,
    pub currency: String,
    /// True once the organization has a Stripe customer (needed for the portal).
    pub has_billing_account: bool,
    /// False when this server has no Stripe configuration: checkout, top-up and the
    /// portal answer 503 `billing_not_configured`.
    pub billing_configured: bool,
    /// The plans a checkout can buy on this server.
    pub plans_for_sale: Vec<String>,
}

/// What a Checkout Session buys.
#[derive(Enum, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum BillingSessionKind {
    /// A plan, billed monthly.
    MonthlySubscription,
    /// Prepaid credits, paid once.
    DirectPayment,
}

/// Where a Checkout Session is.
#[derive(Enum, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum BillingSessionStatus {
    /// Started; the owner has not paid yet.
    InProgress,
    /// Paid (a subscription started, or credits added).
    Completed,
    /// Expired unpaid.
    Cancelled,
    /// Its payment failed.
    Error,
}

/// A Checkout Session the organization started.
#[derive(Object, serde::Serialize, Debug, Clone)]
pub struct BillingSession {
    pub id: Uuid,
    pub kind: BillingSessionKind,
    pub status: BillingSessionStatus,
    /// monthly_subscription: the plan bought.
    pub plan: Option<String>,
    /// direct_payment: the credits bought, in the smallest unit of `currency`.
    pub amount_cents: Option<i64>,
    pub currency: String,
    /// Stripe's hosted checkout page: send the owner there.
    pub url: String,
    /// Stripe's id (`cs_...`).
    pub stripe_session_id: String,
    /// The owner who started it; null if that account is gone.
    pub created_by: Option<Uuid>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When Stripe stops accepting payment for it.
    #[serde(serialize_with = "rfc3339_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub completed_at: Option<DateTime<Utc>>,
}

const SESSION_COLUMNS: &str = "id, kind, status, plan_id, amount_cents, currency, url, \
                               stripe_session_id, created_by, created_at, expires_at, completed_at";

impl From<&Row> for BillingSession {
    fn from(r: &Row) -> Self {
        Self {
            id: r.get(0),
            kind: if r.get::<_, &str>(1) == "direct_payment" {
                BillingSessionKind::DirectPayment
            } else {
                BillingSessionKind::MonthlySubscription
            },
            status: match r.get::<_, &str>(2) {
                "completed" => BillingSessionStatus::Completed,
                "cancelled" => BillingSessionStatus::Cancelled,
                "error" => BillingSessionStatus::Error,
                _ => BillingSessionStatus::InProgress,
            },
            plan: r.get(3),
            amount_cents: r.get(4),
            currency: r.get(5),
            url: r.get(6),
            stripe_session_id: r.get(7),
            created_by: r.get(8),
            created_at: r.get(9),
            expires_at: r.get(10),
            completed_at: r.get(11),
        }
    }
}

page! {
    /// One page of Checkout Sessions.
    BillingSessionPage of BillingSession
}

/// A subscription checkout.
#[derive(Object)]
pub struct StartCheckout {
    /// The plan to buy: one of `plans_for_sale` (GET .../billing).
    #[oai(validator(pattern = r"^[a-z][a-z0-9_]{1,31}$"))]
    pub plan: String,
}

/// A credit top-up.
#[derive(Object)]
pub struct StartTopUp {
    /// Credits to buy, in cents (USD): 500 ($5) to 1000000 ($10,000).
    #[oai(validator(minimum(value = "500"), maximum(value = "1000000")))]
    pub amount_cents: i64,
}

/// A Customer Portal session.
#[derive(Object)]
pub struct PortalSession {
    /// Stripe's hosted portal: plan changes, payment methods, invoices, cancellation.
    pub url: String,
}

#[derive(ApiResponse)]
pub enum BillingResponse {
    /// The organization's billing.
    #[oai(status = 200)]
    Ok(Json<Billing>),
}

#[derive(ApiResponse)]
pub enum BillingSessionsResponse {
    /// The organization's Checkout Sessions, oldest first.
    #[oai(status = 200)]
    Ok(Json<BillingSessionPage>),
}

#[derive(ApiResponse)]
pub enum StartCheckoutResponse {
    /// Started: send the owner to `url`. The plan changes when Stripe reports payment.
    #[oai(status = 201)]
    Created(Json<BillingSession>),
}

#[derive(ApiResponse)]
pub enum PortalSessionResponse {
    /// Send the owner to `url`.
    #[oai(status = 200)]
    Ok(Json<PortalSession>),
}

const READERS: &str = "The caller is below admin (`forbidden`), or is an API key \
                       (`api_key_not_allowed`): billing is for signed-in admins and owners.";
const OWNERS: &str = "The caller is not an owner (`forbidden`), or is an API key \
                      (`api_key_not_allowed`): only owners commit the organization's money.";
const STRIPE_DOWN: &str = "Stripe refused the request or could not be reached \
                           (`billing_provider_error`); nothing was recorded. Retry later.";
const NOT_CONFIGURED: &str = "This server has no Stripe configuration \
                              (`billing_not_configured`), or the database is unavailable \
                              (`service_unavailable`, `timeout`).";

error_set! {
    pub BillingErrors: [AUTHENTICATED, IN_ORG] { 403 => READERS }
    pub BillingSessionsErrors: [AUTHENTICATED, IN_ORG, PAGED] { 403 => READERS }
    pub StartCheckoutErrors: [AUTHENTICATED, IN_ORG, JSON_BODY] {
        403 => OWNERS,
        409 => "The organization already has a subscription (`subscription_exists`): \
                change or cancel it in the portal.",
        502 => STRIPE_DOWN,
        503 => NOT_CONFIGURED,
    }
    pub StartTopUpErrors: [AUTHENTICATED, IN_ORG, JSON_BODY] {
        403 => OWNERS,
        502 => STRIPE_DOWN,
        503 => NOT_CONFIGURED,
    }
    pub PortalErrors: [AUTHENTICATED, IN_ORG] {
        403 => OWNERS,
        409 => "The organization has no billing account yet (`no_billing_account`): start \
                a checkout or a top-up first.",
        502 => STRIPE_DOWN,
        503 => NOT_CONFIGURED,
    }
}

/// 503 `billing_not_configured`.
pub fn not_configured() -> ApiError {
    ApiError {
        // Every 503 carries Retry-After (the spec says so); configuration takes a while.
        retry_after: Some(3600),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "billing_not_configured",
            "billing is not configured on this server (STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET)",
        )
    }
}

/// 502 `billing_provider_error`: the cause is logged, the client learns Stripe failed.
fn provider_error(e: &StripeError) -> ApiError {
    tracing::warn!(error = %e, "billing: a Stripe call failed");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "billing_provider_error",
        "the payment provider refused the request or could not be reached; nothing was recorded, retry later",
    )
}

/// What the owner's checkout needs before Stripe is called: (customer, org name).
async fn begin(
    state: &State,
    auth: &BearerAuth,
    org_id: Uuid,
    purpose: &str,
) -> Result<(Option<String>, String), ApiError> {
    state
        .in_org(auth.principal(), org_id, Access::ReadOnly, async |tx| {
            let row = tx
                .query_one(
                    "select stripe_customer_id, org_name from app.billing_begin($1)",
                    &[&purpose],
                )
                .await?;
            Ok((row.get(0), row.get(1)))
        })
        .await
}

/// The org's customer: the stored one, else a new one (Stripe's idempotency key makes two
/// racing requests get the same one; the first insert stores it).
async fn customer(
    stripe: &Stripe,
    org_id: Uuid,
    stored: Option<String>,
    name: &str,
) -> Result<String, ApiError> {
    match stored {
        Some(c) => Ok(c),
        None => stripe
            .create_customer(org_id, name)
            .await
            .map_err(|e| provider_error(&e)),
    }
}

/// What a Checkout Session buys: (kind, plan, amount in cents).
type Purchase<'a> = (&'static str, Option<&'a str>, Option<i64>);

/// Records the session Stripe created; returns it as stored.
async fn record(
    state: &State,
    auth: &BearerAuth,
    org_id: Uuid,
    customer: &str,
    session: &crate::billing::stripe::CheckoutSession,
    (kind, plan, amount): Purchase<'_>,
) -> Result<BillingSession, ApiError> {
    state
        .in_org(auth.principal(), org_id, Access::ReadWrite, async |tx| {
            let id: Uuid = tx
                .query_one(
                    "select app.billing_record_checkout($1, $2, $3, $4, $5, 'usd', $6, $7)",
                    &[
                        &customer,
                        &kind,
                        &session.id,
                        &plan,
                        &amount,
                        &session.url,
                        &session.expires_at,
                    ],
                )
                .await?
                .get(0);
            let row = tx
                .query_one(
                    &format!("select {SESSION_COLUMNS} from app.billing_sessions where id = $1"),
                    &[&id],
                )
                .await?;
            Ok(BillingSession::from(&row))
        })
        .await
}

/// A Checkout Session to start: what `app.billing_begin` checks it for (and Stripe's
/// `metadata[kind]`), Stripe's mode, the query key of the return URLs, what it buys.
struct Offer<'a> {
    purpose: &'static str,
    mode: &'static str,
    query: &'static str,
    purchase: Purchase<'a>,
}

/// The owner check, then Stripe (the customer once, the session), then the session
/// recorded. `line` gives the line item once Stripe's configuration is known (a plan
/// not for sale is refused there, after the role check and before any Stripe call).
async fn start_checkout(
    state: &State,
    auth: &BearerAuth,
    org_id: Uuid,
    offer: Offer<'_>,
    line: impl FnOnce(&Stripe) -> Result<Vec<(String, String)>, ApiError>,
) -> Result<BillingSession, ApiError> {
    let (stored, name) = begin(state, auth, org_id, offer.purpose).await?;
    let stripe = state.stripe.as_deref().ok_or_else(not_configured)?;
    let line = line(stripe)?;
    let customer = customer(stripe, org_id, stored, &name).await?;
    let back = billing_url(state, org_id);
    let session = stripe
        .create_checkout_session(CheckoutRequest {
            org_id,
            customer: &customer,
            mode: offer.mode,
            kind: offer.purpose,
            line,
            success_url: &format!(
                "{back}?{}=success&session_id={{CHECKOUT_SESSION_ID}}",
                offer.query
            ),
            cancel_url: &format!("{back}?{}=cancelled", offer.query),
        })
        .await
        .map_err(|e| provider_error(&e))?;
    record(state, auth, org_id, &customer, &session, offer.purchase).await
}

fn billing_url(state: &State, org_id: Uuid) -> String {
    format!("{}/orgs/{org_id}/billing", state.auth.app_url)
}

#[OpenApi(tag = "ApiTags::Billing")]
impl BillingApi {
    /// Get an organization's billing
    ///
    /// Signed-in admins and owners: the plan in force and its status, the subscription
    /// as last reported by Stripe, the prepaid credit balance, and the plans a checkout
    /// can buy. Answers even when the server has no Stripe configuration
    /// (`billing_configured: false`).
    #[oai(
        path = "/v1/orgs/:org_id/billing",
        method = "get",
        operation_id = "get_billing"
    )]
    async fn get(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
    ) -> Result<BillingResponse, Problems<BillingErrors>> {
        let grace = state.billing_grace.as_secs_f64();
        let billing = state
            .in_org(auth.principal(), org_id.0, Access::ReadOnly, async |tx| {
                tx.require_signed_in_admin().await?;
                let row = tx
                    .query_one(
                        "select op.plan_id, op.status,
                                c.stripe_customer_id is not null,
                                coalesce(c.credit_balance_cents, 0), coalesce(c.currency, 'usd'),
                                s.stripe_subscription_id, s.status, s.plan_id, s.current_period_end,
                                s.cancel_at_period_end, s.canceled_at, s.past_due_since,
                                s.past_due_since + make_interval(secs => $2)
                           from app.org_plans op
                           left join app.billing_customers c on c.org_id = op.org_id
                           left join lateral (
                               select * from app.billing_subscriptions s
                                where s.org_id = op.org_id
                                order by s.status in ('active', 'trialing', 'past_due') desc,
                                         s.stripe_read_at desc
                                limit 1) s on true
                          where op.org_id = $1",
                        &[&org_id.0, &grace],
                    )
                    .await?;
                let subscription = row.get::<_, Option<String>>(5).map(|id| Subscription {
                    id,
                    status: SubscriptionStatus::parse(row.get(6)),
                    plan: row.get(7),
                    current_period_end: row.get(8),
                    cancel_at_period_end: row.get(9),
                    canceled_at: row.get(10),
                    past_due_since: row.get(11),
                    grace_ends_at: row.get(12),
                });
                Ok(Billing {
                    org_id: org_id.0,
                    plan: row.get(0),
                    plan_status: super::plans::status_of(row.get(1)),
                    subscription,
                    has_billing_account: row.get(2),
                    credit_balance_cents: row.get(3),
                    currency: row.get(4),
                    billing_configured: state.stripe.is_some(),
                    plans_for_sale: state
                        .stripe
                        .as_deref()
                        .map(|s| s.plans_for_sale().map(str::to_owned).collect())
                        .unwrap_or_default(),
                })
            })
            .await?;
        Ok(BillingResponse::Ok(Json(billing)))
    }

    /// List an organization's Checkout Sessions
    ///
    /// Signed-in admins and owners; oldest first. Subscriptions and top-ups, with their
    /// status as Stripe reported it.
    #[oai(
        path = "/v1/orgs/:org_id/billing/sessions",
        method = "get",
        operation_id = "list_billing_sessions"
    )]
    async fn sessions(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// Page size, 1-100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<BillingSessionsResponse, Problems<BillingSessionsErrors>> {
        let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
        let page = state
            .in_org(auth.principal(), org_id.0, Access::ReadOnly, async |tx| {
                tx.require_signed_in_admin().await?;
                let rows = fetch_page(
                    tx,
                    &format!("select {SESSION_COLUMNS} from app.billing_sessions where true"),
                    "created_at, id",
                    limit,
                    after,
                )
                .await?;
                let items = rows.iter().map(BillingSession::from).collect();
                Ok(BillingSessionPage::from_rows(items, limit, |s| Cursor {
                    created_at: s.created_at,
                    id: s.id,
                }))
            })
            .await?;
        Ok(BillingSessionsResponse::Ok(Json(page)))
    }

    /// Start a subscription checkout
    ///
    /// Owners. Creates the organization's Stripe customer the first time (two requests
    /// at once still make one), then a Checkout Session in subscription mode for `plan`,
    /// carrying the organization's id (`client_reference_id`, metadata). Send the owner
    /// to `url`; the plan changes when Stripe reports the payment (webhook). An
    /// organization with a subscription changes it in the portal instead (409).
    #[oai(
        path = "/v1/orgs/:org_id/billing/checkout-session",
        method = "post",
        operation_id = "start_billing_checkout"
    )]
    async fn checkout(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        body: ValidJson<StartCheckout>,
    ) -> Result<StartCheckoutResponse, Problems<StartCheckoutErrors>> {
        let offer = Offer {
            purpose: "subscription",
            mode: "subscription",
            query: "checkout",
            purchase: ("monthly_subscription", Some(body.plan.as_str()), None),
        };
        let stored = start_checkout(&state, &auth, org_id.0, offer, |stripe| {
            let price = stripe.price_of(&body.plan).ok_or_else(|| {
                ApiError::validation(vec![FieldError {
                    field: "plan".into(),
                    code: "unknown_plan".into(),
                    message: format!(
                        "is not a plan for sale here; one of: {}",
                        stripe.plans_for_sale().collect::<Vec<_>>().join(", ")
                    ),
                }])
            })?;
            Ok(vec![("[price]".to_owned(), price.to_owned())])
        })
        .await?;
        Ok(StartCheckoutResponse::Created(Json(stored)))
    }

    /// Buy credits
    ///
    /// Owners. A one-off Checkout Session (payment mode) for `amount_cents` of prepaid
    /// credits; the organization's balance grows by what Stripe collected when it
    /// reports the payment (webhook), once.
    #[oai(
        path = "/v1/orgs/:org_id/billing/top-up",
        method = "post",
        operation_id = "start_billing_top_up"
    )]
    async fn top_up(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        body: ValidJson<StartTopUp>,
    ) -> Result<StartCheckoutResponse, Problems<StartTopUpErrors>> {
        let offer = Offer {
            purpose: "top_up",
            mode: "payment",
            query: "top_up",
            purchase: ("direct_payment", None, Some(body.amount_cents)),
        };
        let stored = start_checkout(&state, &auth, org_id.0, offer, |_| {
            Ok(vec![
                ("[price_data][currency]".to_owned(), "usd".to_owned()),
                (
                    "[price_data][unit_amount]".to_owned(),
                    body.amount_cents.to_string(),
                ),
                (
                    "[price_data][product_data][name]".to_owned(),
                    "Palisade credits".to_owned(),
                ),
            ])
        })
        .await?;
        Ok(StartCheckoutResponse::Created(Json(stored)))
    }

    /// Open the billing portal
    ///
    /// Owners. A Stripe Customer Portal session: change plan, update the payment
    /// method, see invoices, cancel. What happens there reaches Palisade as webhooks.
    #[oai(
        path = "/v1/orgs/:org_id/billing/portal-session",
        method = "post",
        operation_id = "open_billing_portal"
    )]
    async fn portal(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
    ) -> Result<PortalSessionResponse, Problems<PortalErrors>> {
        let (stored, _) = begin(&state, &auth, org_id.0, "portal").await?;
        let stripe = state.stripe.as_deref().ok_or_else(not_configured)?;
        let customer = stored.ok_or_else(|| {
            ApiError::conflict(
                "no_billing_account",
                "the organization has no billing account yet",
            )
        })?;
        let url = stripe
            .create_portal_session(&customer, &billing_url(&state, org_id.0))
            .await
            .map_err(|e| provider_error(&e))?;
        state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                tx.execute("select app.billing_portal_opened($1)", &[&customer])
                    .await?;
                Ok(())
            })
            .await?;
        Ok(PortalSessionResponse::Ok(Json(PortalSession { url })))
    }
}
