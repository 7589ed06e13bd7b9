//! Stripe's webhook: verified over the raw bytes, stored once by event id in the same
//! transaction that records it, acknowledged, then applied by the worker
//! (`billing::apply`), which may call Stripe.

use poem::{http::StatusCode, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Header, payload::Json};
use serde_json::Value;

use crate::{
    api::ApiTags,
    billing::signature,
    db::Access,
    error_set,
    http::{problem::ApiError, validate::RawJson},
    state::State,
};

pub struct WebhookApi;

/// A Stripe event, as Stripe delivers it (the fields Palisade reads; the rest is kept).
#[derive(Object, Debug, Clone)]
pub struct StripeEvent {
    /// `evt_...`: a redelivery carries the same id.
    pub id: String,
    /// e.g. `customer.subscription.updated`.
    #[oai(rename = "type")]
    pub event_type: String,
    /// Unix time the event was created.
    pub created: i64,
    pub livemode: Option<bool>,
    pub data: StripeEventData,
}

/// The object the event is about.
#[derive(Object, Debug, Clone)]
pub struct StripeEventData {
    pub object: Value,
}

/// The acknowledgement.
#[derive(Object, Debug, Clone)]
pub struct WebhookReceipt {
    /// The event's id.
    pub id: String,
    /// True when this id was stored before (a redelivery): nothing changed.
    pub duplicate: bool,
}

#[derive(ApiResponse)]
pub enum WebhookResponse {
    /// Stored (or already stored): Stripe stops retrying. It is applied shortly after.
    #[oai(status = 200)]
    Ok(Json<WebhookReceipt>),
}

error_set! {
    pub WebhookErrors: [] {
        400 => "The signature is missing, does not match, or is older than 300 seconds \
                (`invalid_signature`); or the body is not a Stripe event (`invalid_event`). \
                Nothing was stored.",
        413 => "The body is larger than 1 MiB (`payload_too_large`).",
        415 => "The body is not `application/json` (`unsupported_media_type`).",
        503 => "This server has no webhook secret configured (`billing_not_configured`), \
                or the database is unavailable (`service_unavailable`, `timeout`).",
    }
}

fn invalid_event(detail: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_event",
        format!("the body is not a Stripe event: {detail}"),
    )
}

/// The event fields stored, from the verified body.
fn parse(bytes: &[u8]) -> Result<(String, String, i64, bool, Value), ApiError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| invalid_event(&format!("not JSON ({e})")))?;
    let id = value["id"]
        .as_str()
        .filter(|id| {
            id.len() <= 254
                && id.starts_with("evt_")
                && id.len() > 4
                && id[4..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
        .ok_or_else(|| invalid_event("`id` must be an event id (evt_...)"))?
        .to_owned();
    let kind = value["type"]
        .as_str()
        .filter(|t| {
            (1..=100).contains(&t.len())
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
        })
        .ok_or_else(|| invalid_event("`type` must be an event type (e.g. invoice.paid)"))?
        .to_owned();
    let created = value["created"]
        .as_i64()
        .filter(|t| (0..=253_402_300_799).contains(t))
        .ok_or_else(|| invalid_event("`created` must be a Unix time"))?;
    if !value["data"]["object"].is_object() {
        return Err(invalid_event("`data.object` must be an object"));
    }
    let livemode = value["livemode"].as_bool().unwrap_or(false);
    Ok((id, kind, created, livemode, value))
}

#[OpenApi(tag = "ApiTags::Billing")]
impl WebhookApi {
    /// Receive a Stripe webhook
    ///
    /// For Stripe, not for clients: the `Stripe-Signature` header (HMAC-SHA256 of
    /// `"{t}.{raw body}"` under any secret of `STRIPE_WEBHOOK_SECRET`, at most 300 s
    /// old) is its authentication. The event is stored by id in one transaction and
    /// acknowledged; a redelivery answers 200 and changes nothing. The worker applies
    /// it: checkout completions, subscription changes, invoices paid or failed, top-ups.
    /// Other event types are acknowledged and ignored.
    #[oai(
        path = "/v1/billing/webhook",
        method = "post",
        operation_id = "receive_stripe_webhook"
    )]
    async fn receive(
        &self,
        state: Data<&State>,
        /// `t=<unix time>,v1=<hex HMAC-SHA256>[,v1=...]`, as Stripe sends it.
        #[oai(name = "Stripe-Signature")]
        signature: Header<Option<String>>,
        body: RawJson<StripeEvent>,
    ) -> Result<WebhookResponse, crate::http::errors::Problems<WebhookErrors>> {
        let stripe = state
            .stripe
            .as_deref()
            .filter(|s| !s.webhook_secrets().is_empty())
            .ok_or_else(super::checkout::not_configured)?;
        signature::verify(
            signature.0.as_deref(),
            &body.0,
            stripe.webhook_secrets(),
            chrono::Utc::now().timestamp(),
        )
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_signature", e.detail()))?;
        let (id, kind, created, livemode, payload) = parse(&body.0)?;
        let new = state
            .as_verified_sender(Access::ReadWrite, async |tx| {
                Ok(tx
                    .query_one(
                        "select app.billing_receive_event($1, $2, to_timestamp($3::float8), $4, $5, $6)",
                        &[
                            &id,
                            &kind,
                            &(created as f64),
                            &livemode,
                            &payload,
                            &crate::billing::apply::applies(&kind),
                        ],
                    )
                    .await?
                    .get::<_, bool>(0))
            })
            .await?;
        Ok(WebhookResponse::Ok(Json(WebhookReceipt {
            duplicate: !new,
            id,
        })))
    }
}
