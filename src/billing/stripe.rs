//! A small client for the Stripe calls Palisade makes, in Stripe's wire format
//! (form-encoded requests, JSON responses, `Authorization: Bearer <secret key>`):
//! customers, Checkout Sessions, Customer Portal sessions, and reading a subscription.

use std::time::Duration;

use anyhow::bail;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use uuid::Uuid;

/// Stripe's API.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// `STRIPE_*`.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// `STRIPE_SECRET_KEY`.
    pub secret_key: SecretString,
    /// `STRIPE_WEBHOOK_SECRET`: one or more (comma-separated) endpoint secrets; a
    /// delivery signed with any of them is accepted (rotation).
    pub webhook_secrets: Vec<SecretString>,
    /// `STRIPE_API_BASE` (tests point it at a local fake).
    pub api_base: String,
    /// `STRIPE_PRICE_IDS`: `plan=price_id` pairs, comma-separated.
    pub prices: Vec<(String, String)>,
    /// `STRIPE_TIMEOUT_SECONDS` (default 10): each call to Stripe.
    pub timeout: Duration,
}

/// `pro=price_123,enterprise=price_456` -> pairs.
pub fn parse_prices(list: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((plan, price)) = pair.split_once('=') else {
            bail!("STRIPE_PRICE_IDS: {pair:?} is not plan=price_id");
        };
        let (plan, price) = (plan.trim(), price.trim());
        if plan.is_empty() || price.is_empty() {
            bail!("STRIPE_PRICE_IDS: {pair:?} is not plan=price_id");
        }
        out.push((plan.to_owned(), price.to_owned()));
    }
    Ok(out)
}

/// What went wrong talking to Stripe.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error("Stripe could not be reached: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("Stripe answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("Stripe's answer lacks {0}")]
    Unexpected(&'static str),
}

impl StripeError {
    /// A 404 from Stripe (the object does not exist).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Refused { status: 404, .. })
    }
}

/// A Checkout Session Stripe created.
#[derive(Debug, Clone)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a Checkout Session is for.
pub struct CheckoutRequest<'a> {
    pub org_id: Uuid,
    pub customer: &'a str,
    /// `subscription` or `payment`.
    pub mode: &'a str,
    /// `metadata[kind]`: `subscription` or `top_up`.
    pub kind: &'a str,
    /// The line item's fields after `line_items[0]` (a price, or price_data).
    pub line: Vec<(String, String)>,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
}

/// A subscription as Stripe's API reports it.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub customer: String,
    pub status: String,
    pub price_id: String,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    /// `metadata.org_id`, which Palisade sets at checkout.
    pub org_hint: Option<String>,
}

/// A Unix time field as a timestamp.
pub fn unix_time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_i64().and_then(|t| DateTime::from_timestamp(t, 0))
}

/// A string field (or the `id` of an expanded object).
pub fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

impl Subscription {
    /// From Stripe's JSON. The period moved from the subscription to its items in API
    /// version 2025-03-31: either place is read.
    pub fn from_json(v: &Value) -> Result<Self, StripeError> {
        let item = &v["items"]["data"][0];
        let period = |field: &str| unix_time(&v[field]).or_else(|| unix_time(&item[field]));
        Ok(Self {
            id: id_of(&v["id"]).ok_or(StripeError::Unexpected("subscription.id"))?,
            customer: id_of(&v["customer"])
                .ok_or(StripeError::Unexpected("subscription.customer"))?,
            status: v["status"]
                .as_str()
                .ok_or(StripeError::Unexpected("subscription.status"))?
                .to_owned(),
            price_id: id_of(&item["price"])
                .ok_or(StripeError::Unexpected("subscription.items[0].price"))?,
            current_period_start: period("current_period_start"),
            current_period_end: period("current_period_end"),
            cancel_at_period_end: v["cancel_at_period_end"].as_bool().unwrap_or(false),
            canceled_at: unix_time(&v["canceled_at"]),
            org_hint: v["metadata"]["org_id"].as_str().map(str::to_owned),
        })
    }
}

/// The Stripe client (cheap to share: one connection pool).
pub struct Stripe {
    http: reqwest::Client,
    settings: StripeSettings,
}

impl Stripe {
    pub fn new(settings: &StripeSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .build()?;
        Ok(Self {
            http,
            settings: settings.clone(),
        })
    }

    pub fn webhook_secrets(&self) -> &[SecretString] {
        &self.settings.webhook_secrets
    }

    /// The Stripe price of `plan`, if it is sold.
    pub fn price_of(&self, plan: &str) -> Option<&str> {
        self.settings
            .prices
            .iter()
            .find(|(p, _)| p == plan)
            .map(|(_, price)| price.as_str())
    }

    /// The plan a Stripe price sells, if any.
    pub fn plan_of(&self, price: &str) -> Option<&str> {
        self.settings
            .prices
            .iter()
            .find(|(_, p)| p == price)
            .map(|(plan, _)| plan.as_str())
    }

    /// The plans for sale, in configuration order.
    pub fn plans_for_sale(&self) -> impl Iterator<Item = &str> {
        self.settings.prices.iter().map(|(plan, _)| plan.as_str())
    }

    async fn call(
        &self,
        req: reqwest::RequestBuilder,
        idempotency_key: Option<&str>,
    ) -> Result<Value, StripeError> {
        let mut req = req.bearer_auth(self.settings.secret_key.expose_secret());
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("no error message")
                .chars()
                .take(300)
                .collect();
            return Err(StripeError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        Ok(body)
    }

    async fn post(
        &self,
        path: &str,
        form: &[(String, String)],
        idempotency_key: Option<&str>,
    ) -> Result<Value, StripeError> {
        let req = self
            .http
            .post(format!("{}{path}", self.settings.api_base))
            .form(form);
        self.call(req, idempotency_key).await
    }

    /// Creates the org's customer. The idempotency key is the org's: two requests racing
    /// (two clicks) get the same customer from Stripe.
    pub async fn create_customer(&self, org_id: Uuid, name: &str) -> Result<String, StripeError> {
        let form = vec![
            ("name".to_owned(), name.to_owned()),
            ("metadata[org_id]".to_owned(), org_id.to_string()),
        ];
        let body = self
            .post(
                "/v1/customers",
                &form,
                Some(&format!("palisade-customer-{org_id}")),
            )
            .await?;
        id_of(&body["id"]).ok_or(StripeError::Unexpected("customer.id"))
    }

    /// A Checkout Session.
    pub async fn create_checkout_session(
        &self,
        c: CheckoutRequest<'_>,
    ) -> Result<CheckoutSession, StripeError> {
        let CheckoutRequest {
            org_id,
            customer,
            mode,
            kind,
            line,
            success_url,
            cancel_url,
        } = c;
        let org = org_id.to_string();
        let mut form = vec![
            ("mode".to_owned(), mode.to_owned()),
            ("customer".to_owned(), customer.to_owned()),
            ("client_reference_id".to_owned(), org.clone()),
            ("metadata[org_id]".to_owned(), org.clone()),
            ("metadata[kind]".to_owned(), kind.to_owned()),
            ("success_url".to_owned(), success_url.to_owned()),
            ("cancel_url".to_owned(), cancel_url.to_owned()),
            ("line_items[0][quantity]".to_owned(), "1".to_owned()),
        ];
        if mode == "subscription" {
            form.push(("subscription_data[metadata][org_id]".to_owned(), org));
        } else {
            form.push(("payment_intent_data[metadata][org_id]".to_owned(), org));
        }
        form.extend(
            line.into_iter()
                .map(|(k, v)| (format!("line_items[0]{k}"), v)),
        );
        let body = self.post("/v1/checkout/sessions", &form, None).await?;
        Ok(CheckoutSession {
            id: id_of(&body["id"]).ok_or(StripeError::Unexpected("checkout_session.id"))?,
            url: body["url"]
                .as_str()
                .ok_or(StripeError::Unexpected("checkout_session.url"))?
                .to_owned(),
            expires_at: unix_time(&body["expires_at"]),
        })
    }

    /// A Customer Portal session's URL.
    pub async fn create_portal_session(
        &self,
        customer: &str,
        return_url: &str,
    ) -> Result<String, StripeError> {
        let form = vec![
            ("customer".to_owned(), customer.to_owned()),
            ("return_url".to_owned(), return_url.to_owned()),
        ];
        let body = self
            .post("/v1/billing_portal/sessions", &form, None)
            .await?;
        body["url"]
            .as_str()
            .map(str::to_owned)
            .ok_or(StripeError::Unexpected("billing_portal.session.url"))
    }

    /// Reads a subscription's current state.
    pub async fn subscription(&self, id: &str) -> Result<Subscription, StripeError> {
        let req = self.http.get(format!(
            "{}/v1/subscriptions/{}",
            self.settings.api_base,
            // Stripe ids are [A-Za-z0-9_]; anything else never reaches the path.
            id.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        ));
        Subscription::from_json(&self.call(req, None).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_and_map_both_ways() {
        let prices = parse_prices(" pro=price_p , enterprise=price_e,").unwrap();
        assert_eq!(
            prices,
            vec![
                ("pro".to_owned(), "price_p".to_owned()),
                ("enterprise".to_owned(), "price_e".to_owned())
            ]
        );
        assert!(parse_prices("pro").is_err());
        assert!(parse_prices("=price").is_err());
    }

    #[test]
    fn a_subscription_reads_its_period_from_either_place() {
        let old = serde_json::json!({"id": "sub_1", "customer": "cus_1", "status": "active",
            "current_period_start": 100, "current_period_end": 200,
            "items": {"data": [{"price": {"id": "price_p"}}]}, "metadata": {"org_id": "x"}});
        let new = serde_json::json!({"id": "sub_1", "customer": {"id": "cus_1"}, "status": "past_due",
            "items": {"data": [{"price": {"id": "price_p"}, "current_period_start": 100,
                                "current_period_end": 200}]}});
        for (v, status) in [(old, "active"), (new, "past_due")] {
            let s = Subscription::from_json(&v).unwrap();
            assert_eq!((s.customer.as_str(), s.status.as_str()), ("cus_1", status));
            assert_eq!(s.price_id, "price_p");
            assert_eq!(s.current_period_end.unwrap().timestamp(), 200);
        }
        assert!(Subscription::from_json(&serde_json::json!({"id": "sub_1"})).is_err());
    }
}
