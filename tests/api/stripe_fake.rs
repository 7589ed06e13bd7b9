//! A fake Stripe for the tests: a real HTTP server on a loopback port that speaks Stripe's
//! wire format for the calls Palisade makes -- form-encoded POSTs, JSON answers, Bearer
//! secret keys, `Idempotency-Key`, Stripe's error shape -- and keeps its objects in
//! memory. Tests drive what happens at Stripe (a customer pays, a card fails, the owner
//! cancels in the portal) with its methods, then deliver the events Stripe would send,
//! signed exactly as Stripe signs them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use poem::{
    EndpointExt, Request, Response, Route,
    http::StatusCode,
    listener::{Acceptor, Listener, TcpListener},
    web::Data,
};
use serde_json::{Value, json};

/// The secret key Palisade must send.
pub const SECRET_KEY: &str = "sk_test_palisade_fake";
/// The webhook endpoint secrets (the second for rotation tests).
pub const WEBHOOK_SECRET: &str = "whsec_test_current";
pub const OLD_WEBHOOK_SECRET: &str = "whsec_test_previous";
pub const PRO_PRICE: &str = "price_test_pro";
pub const ENTERPRISE_PRICE: &str = "price_test_enterprise";

#[derive(Default)]
pub struct Objects {
    counter: u64,
    pub customers: HashMap<String, Value>,
    idempotency: HashMap<String, Value>,
    pub sessions: HashMap<String, Value>,
    pub subscriptions: HashMap<String, Value>,
    pub portal_sessions: Vec<Value>,
    /// Every request: (method, path).
    pub requests: Vec<(String, String)>,
    /// The next POST answers this status with a Stripe error (once).
    pub fail_next_post: Option<u16>,
    /// Customer creation takes this long (so two requests overlap).
    pub customer_delay: Option<std::time::Duration>,
}

impl Objects {
    fn id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_test{:08}", self.counter)
    }
}

#[derive(Clone)]
pub struct FakeStripe {
    pub base: String,
    pub objects: Arc<Mutex<Objects>>,
    events: Arc<Mutex<u64>>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn stripe_error(status: StatusCode, message: &str) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(json!({"error": {"type": "invalid_request_error", "message": message}}).to_string())
}

fn ok(v: &Value) -> Response {
    Response::builder()
        .content_type("application/json")
        .body(v.to_string())
}

/// Stripe's form encoding: `a[b][c]=v` pairs.
fn form(body: &[u8]) -> HashMap<String, String> {
    url_decode_pairs(std::str::from_utf8(body).unwrap_or(""))
}

fn url_decode_pairs(text: &str) -> HashMap<String, String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && i + 2 < bytes.len()
                && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Checks the secret key; None when it is right.
fn unauthorized(req: &Request) -> Option<Response> {
    let expected = format!("Bearer {SECRET_KEY}");
    (req.header("authorization") != Some(expected.as_str()))
        .then(|| stripe_error(StatusCode::UNAUTHORIZED, "Invalid API Key provided"))
}

async fn handle(req: &Request, body: Vec<u8>, fake: &FakeStripe) -> Response {
    if let Some(refused) = unauthorized(req) {
        return refused;
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let delay = fake.objects.lock().unwrap().customer_delay;
    if let (Some(d), "/v1/customers") = (delay, path.as_str()) {
        tokio::time::sleep(d).await;
    }
    let mut o = fake.objects.lock().unwrap();
    o.requests.push((method.clone(), path.clone()));
    if method == "POST" {
        if req.content_type() != Some("application/x-www-form-urlencoded") {
            return stripe_error(StatusCode::BAD_REQUEST, "expected a form-encoded body");
        }
        if let Some(status) = o.fail_next_post.take() {
            return stripe_error(
                StatusCode::from_u16(status).unwrap(),
                "An error occurred with our connection to Stripe.",
            );
        }
    }
    let f = form(&body);
    match (method.as_str(), path.as_str()) {
        ("POST", "/v1/customers") => {
            let key = req.header("idempotency-key").map(str::to_owned);
            if let Some(seen) = key.as_ref().and_then(|k| o.idempotency.get(k)) {
                return ok(seen);
            }
            let id = o.id("cus");
            let customer = json!({"id": id, "object": "customer", "name": f.get("name"),
                                  "metadata": {"org_id": f.get("metadata[org_id]")}});
            o.customers.insert(id, customer.clone());
            if let Some(k) = key {
                o.idempotency.insert(k, customer.clone());
            }
            ok(&customer)
        }
        ("POST", "/v1/checkout/sessions") => {
            let customer = f.get("customer").cloned().unwrap_or_default();
            if !o.customers.contains_key(&customer) {
                return stripe_error(StatusCode::BAD_REQUEST, "No such customer");
            }
            let mode = f.get("mode").cloned().unwrap_or_default();
            let amount = match mode.as_str() {
                "subscription" => match f.get("line_items[0][price]").map(String::as_str) {
                    Some(PRO_PRICE) => 4900,
                    Some(ENTERPRISE_PRICE) => 99900,
                    _ => return stripe_error(StatusCode::BAD_REQUEST, "No such price"),
                },
                "payment" => match f
                    .get("line_items[0][price_data][unit_amount]")
                    .and_then(|a| a.parse::<i64>().ok())
                {
                    Some(a) if a > 0 => a,
                    _ => return stripe_error(StatusCode::BAD_REQUEST, "Invalid unit_amount"),
                },
                _ => return stripe_error(StatusCode::BAD_REQUEST, "Invalid mode"),
            };
            if !f.contains_key("success_url") || !f.contains_key("cancel_url") {
                return stripe_error(StatusCode::BAD_REQUEST, "Missing success_url");
            }
            let id = o.id("cs");
            let session = json!({
                "id": id, "object": "checkout.session", "mode": mode, "status": "open",
                "payment_status": "unpaid", "customer": customer,
                "client_reference_id": f.get("client_reference_id"),
                "metadata": {"org_id": f.get("metadata[org_id]"), "kind": f.get("metadata[kind]")},
                "amount_total": amount, "currency": "usd",
                "price": f.get("line_items[0][price]"),
                "url": format!("https://checkout.stripe.test/c/pay/{id}"),
                "expires_at": now() + 24 * 3600, "subscription": null,
            });
            o.sessions.insert(id, session.clone());
            ok(&session)
        }
        ("POST", "/v1/billing_portal/sessions") => {
            let customer = f.get("customer").cloned().unwrap_or_default();
            if !o.customers.contains_key(&customer) {
                return stripe_error(StatusCode::BAD_REQUEST, "No such customer");
            }
            let id = o.id("bps");
            let session = json!({"id": id, "object": "billing_portal.session", "customer": customer,
                                 "return_url": f.get("return_url"),
                                 "url": format!("https://billing.stripe.test/p/session/{id}")});
            o.portal_sessions.push(session.clone());
            ok(&session)
        }
        ("GET", p) if p.starts_with("/v1/subscriptions/") => {
            match o.subscriptions.get(&p["/v1/subscriptions/".len()..]) {
                Some(s) => ok(s),
                None => stripe_error(StatusCode::NOT_FOUND, "No such subscription"),
            }
        }
        _ => stripe_error(StatusCode::NOT_FOUND, "Unrecognized request URL"),
    }
}

#[poem::handler]
async fn endpoint(req: &Request, body: Vec<u8>, fake: Data<&FakeStripe>) -> Response {
    handle(req, body, &fake).await
}

impl FakeStripe {
    /// Starts the fake on a loopback port.
    pub async fn start() -> Self {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
        let fake = FakeStripe {
            base: format!("http://{addr}"),
            objects: Arc::default(),
            events: Arc::default(),
        };
        let app = Route::new().at("/*path", endpoint).data(fake.clone());
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
        fake
    }

    /// Settings that point Palisade at this fake.
    pub fn settings(&self) -> palisade::billing::stripe::StripeSettings {
        palisade::billing::stripe::StripeSettings {
            secret_key: SECRET_KEY.to_owned().into(),
            webhook_secrets: vec![
                WEBHOOK_SECRET.to_owned().into(),
                OLD_WEBHOOK_SECRET.to_owned().into(),
            ],
            api_base: self.base.clone(),
            prices: vec![
                ("pro".into(), PRO_PRICE.into()),
                ("enterprise".into(), ENTERPRISE_PRICE.into()),
            ],
            timeout: std::time::Duration::from_secs(5),
        }
    }

    /// An event as Stripe sends it, with a fresh id.
    pub fn event(&self, kind: &str, object: &Value) -> Value {
        let n = {
            let mut n = self.events.lock().unwrap();
            *n += 1;
            *n
        };
        json!({
            "id": format!("evt_test{n:08}{}", uuid::Uuid::new_v4().simple()),
            "object": "event", "api_version": "2024-06-20", "type": kind,
            "created": now(), "livemode": false, "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null},
            "data": {"object": object},
        })
    }

    /// The owner pays checkout session `id`: a subscription checkout creates an active
    /// subscription. Returns the completed session.
    pub fn pay_checkout(&self, id: &str) -> Value {
        let mut o = self.objects.lock().unwrap();
        let mut session = o.sessions.get(id).expect("a session of this fake").clone();
        session["status"] = json!("complete");
        session["payment_status"] = json!("paid");
        if session["mode"] == "subscription" {
            let sub_id = o.id("sub");
            let start = now();
            let sub = json!({
                "id": sub_id, "object": "subscription", "customer": session["customer"],
                "status": "active", "cancel_at_period_end": false, "canceled_at": null,
                "metadata": {"org_id": session["metadata"]["org_id"]},
                "items": {"object": "list", "data": [{
                    "id": format!("si_{sub_id}"), "object": "subscription_item",
                    "price": {"id": session["price"], "object": "price"},
                    "current_period_start": start, "current_period_end": start + 30 * 24 * 3600,
                }]},
            });
            o.subscriptions.insert(sub_id.clone(), sub);
            session["subscription"] = json!(sub_id);
        }
        o.sessions.insert(id.to_owned(), session.clone());
        session
    }

    /// Changes subscription `id` at Stripe; returns it as it now is.
    pub fn update_subscription(&self, id: &str, change: impl FnOnce(&mut Value)) -> Value {
        let mut o = self.objects.lock().unwrap();
        let sub = o
            .subscriptions
            .get_mut(id)
            .expect("a subscription of this fake");
        change(sub);
        sub.clone()
    }

    /// An invoice of subscription `sub` (for invoice.* events).
    pub fn invoice(&self, sub: &Value, paid: bool) -> Value {
        let mut o = self.objects.lock().unwrap();
        let id = o.id("in");
        json!({
            "id": id, "object": "invoice", "customer": sub["customer"],
            "subscription": sub["id"], "status": if paid { "paid" } else { "open" },
            "amount_due": 4900, "currency": "usd", "attempt_count": if paid { 1 } else { 2 },
            "next_payment_attempt": if paid { Value::Null } else { json!(now() + 3 * 24 * 3600) },
        })
    }

    /// How many requests reached `method path`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.objects
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(m, p)| m == method && p == path)
            .count()
    }
}

#[test]
fn form_pairs_decode_as_stripe_reads_them() {
    let f = url_decode_pairs("a%5Bb%5D=x+y&metadata%5Borg_id%5D=1%2F2&empty=");
    assert_eq!(f["a[b]"], "x y");
    assert_eq!(f["metadata[org_id]"], "1/2");
    assert_eq!(f["empty"], "");
}

/// Posts raw `body` to the app's webhook as JSON, with `signature` as its
/// `Stripe-Signature` header (none: no header).
pub async fn post_webhook(
    app: &crate::helpers::TestApp,
    body: Vec<u8>,
    signature: Option<String>,
) -> crate::helpers::TestResponse {
    let mut req = app
        .http
        .post(format!("{}/v1/billing/webhook", app.base))
        .header("content-type", "application/json; charset=utf-8");
    if let Some(signature) = signature {
        req = req.header("stripe-signature", signature);
    }
    app.send(req.body(body)).await
}

/// Posts `event` to the app's webhook, signed with `secret` at `timestamp`.
pub async fn deliver(
    app: &crate::helpers::TestApp,
    event: &Value,
    secret: &str,
    timestamp: i64,
) -> crate::helpers::TestResponse {
    let body = serde_json::to_vec(event).unwrap();
    let signature = palisade::billing::signature::header(secret, timestamp, &body);
    post_webhook(app, body, Some(signature)).await
}

/// Delivers `event` as Stripe would now, with the current secret; asserts 200.
pub async fn deliver_ok(app: &crate::helpers::TestApp, event: &Value) -> Value {
    deliver(app, event, WEBHOOK_SECRET, now())
        .await
        .assert_status(200)
        .clone()
}
