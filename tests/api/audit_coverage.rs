//! Every operation of openapi.json that changes something writes an audit row -- the one
//! mechanism that is hard to forget: a new mutating route fails this test until the
//! script below performs it successfully *and* the database recorded it.
//!
//! Each recorded request carries its own `X-Request-Id`; the audit row it wrote carries
//! the same id in `context.request_id` (sealed into the transaction by the server, see
//! app.request_meta()), so a row is matched to the very request that wrote it.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PASSWORD, Part, TestApp, multipart, spawn_app_with};

/// The mutating operations of the spec: (METHOD, path template).
fn mutating_operations() -> BTreeSet<(String, String)> {
    let spec: Value = serde_json::from_str(&palisade::api::openapi_json()).unwrap();
    let mut ops = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["post", "put", "patch", "delete"].contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

enum Body {
    None,
    Json(Value),
    Form(Vec<(&'static str, String)>),
    Multipart(String, Vec<u8>),
    /// A webhook body with its `Stripe-Signature`.
    Signed(Vec<u8>, String),
}

/// Sends requests with a fresh request id each and remembers, per operation, the ids
/// of those that succeeded.
struct Recorder<'a> {
    app: &'a TestApp,
    done: BTreeMap<(String, String), Vec<String>>,
}

impl Recorder<'_> {
    async fn call(
        &mut self,
        method: Method,
        template: &str,
        args: &[String],
        token: Option<&str>,
        body: Body,
        expect: u16,
    ) -> Value {
        let mut path = String::new();
        let mut args = args.iter();
        for segment in template.split('/').skip(1) {
            path.push('/');
            if segment.starts_with('{') {
                path.push_str(args.next().expect("an argument per path parameter"));
            } else {
                path.push_str(segment);
            }
        }
        let request_id = format!("cov-{}", Uuid::new_v4().simple());
        let mut req = self
            .app
            .http
            .request(method.clone(), format!("{}{path}", self.app.base))
            .header("x-request-id", &request_id);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Form(f) => req.form(&f),
            Body::Multipart(ct, bytes) => req.header("content-type", ct).body(bytes),
            Body::Signed(bytes, signature) => req
                .header("content-type", "application/json")
                .header("stripe-signature", signature)
                .body(bytes),
        };
        let resp = self.app.send(req).await;
        assert_eq!(
            resp.status.as_u16(),
            expect,
            "{method} {template}: {}",
            resp.body
        );
        self.done
            .entry((method.to_string(), template.to_owned()))
            .or_default()
            .push(request_id);
        resp.body
    }
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}

#[tokio::test]
async fn every_mutating_operation_writes_an_audit_row_in_its_own_transaction() {
    // Billing's operations need Stripe: the fake.
    let fake = crate::stripe_fake::FakeStripe::start().await;
    let mut settings = crate::helpers::settings();
    settings.stripe = Some(fake.settings());
    // The assistant's needs a model: the OpenAI-compatible fake.
    let llm = crate::llm_fake::FakeLlm::start().await;
    settings.llm.base_url = Some(llm.base_url());
    settings.llm.api_key = Some(crate::llm_fake::API_KEY.to_owned().into());
    let app = spawn_app_with(settings, crate::helpers::limits()).await;
    let mut r = Recorder {
        app: &app,
        done: BTreeMap::new(),
    };
    let email = format!("owner-{}@example.com", Uuid::new_v4().simple());
    let new_password = "another long passphrase 42";

    // Account: register, sign in three ways, profile, email verification.
    r.call(
        Method::POST,
        "/v1/auth/register",
        &[],
        None,
        Body::Json(json!({"email": email, "password": PASSWORD, "name": "Owner"})),
        201,
    )
    .await;
    let login = r
        .call(
            Method::POST,
            "/v1/auth/login",
            &[],
            None,
            Body::Json(json!({"email": email, "password": PASSWORD})),
            200,
        )
        .await;
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    r.call(
        Method::POST,
        "/v1/auth/token",
        &[],
        None,
        Body::Form(vec![
            ("grant_type", "password".into()),
            ("username", email.clone()),
            ("password", PASSWORD.into()),
        ]),
        200,
    )
    .await;
    let refreshed = r
        .call(
            Method::POST,
            "/v1/auth/refresh",
            &[],
            None,
            Body::Json(json!({"refresh_token": refresh})),
            200,
        )
        .await;
    let token = refreshed["access_token"].as_str().unwrap().to_owned();
    let t = Some(token.as_str());
    r.call(
        Method::PATCH,
        "/v1/auth/me",
        &[],
        t,
        Body::Json(json!({"name": "Owner Two"})),
        200,
    )
    .await;
    r.call(
        Method::POST,
        "/v1/auth/verify-email/request",
        &[],
        t,
        Body::None,
        202,
    )
    .await;
    let verify = app.last_email(&email, "verify_email").await.token();
    r.call(
        Method::POST,
        "/v1/auth/verify-email/confirm",
        &[],
        None,
        Body::Json(json!({"token": verify})),
        200,
    )
    .await;

    // An organization on a plan with room for everything below.
    let org = id(&r
        .call(
            Method::POST,
            "/v1/orgs",
            &[],
            t,
            Body::Json(json!({"name": "Audited"})),
            201,
        )
        .await);
    app.set_plan(org.parse().unwrap(), "enterprise").await;
    r.call(
        Method::PATCH,
        "/v1/orgs/{org_id}",
        std::slice::from_ref(&org),
        t,
        Body::Json(json!({"name": "Audited Inc"})),
        200,
    )
    .await;
    r.call(
        Method::PUT,
        "/v1/auth/me/current-org",
        &[],
        t,
        Body::Json(json!({"org_id": org})),
        200,
    )
    .await;

    // Members and invitations.
    let bob = app.signup("Bob").await;
    let inv = id(&r
        .call(
            Method::POST,
            "/v1/orgs/{org_id}/invitations",
            std::slice::from_ref(&org),
            t,
            Body::Json(json!({"email": bob.email, "role": "member"})),
            201,
        )
        .await);
    r.call(
        Method::POST,
        "/v1/orgs/{org_id}/invitations/{invitation_id}/resend",
        &[org.clone(), inv],
        t,
        Body::None,
        200,
    )
    .await;
    let bob_token = app.last_email(&bob.email, "invitation").await.token();
    r.call(
        Method::POST,
        "/v1/invitations/accept",
        &[],
        Some(&bob.token),
        Body::Json(json!({"token": bob_token})),
        200,
    )
    .await;
    let carol = app.signup("Carol").await;
    let inv = id(&r
        .call(
            Method::POST,
            "/v1/orgs/{org_id}/invitations",
            std::slice::from_ref(&org),
            t,
            Body::Json(json!({"email": carol.email, "role": "viewer"})),
            201,
        )
        .await);
    r.call(
        Method::DELETE,
        "/v1/orgs/{org_id}/invitations/{invitation_id}",
        &[org.clone(), inv],
        t,
        Body::None,
        204,
    )
    .await;
    r.call(
        Method::POST,
        "/v1/orgs/{org_id}/invitations",
        std::slice::from_ref(&org),
        t,
        Body::Json(json!({"email": carol.email, "role": "viewer"})),
        201,
    )
    .await;
    let carol_token = app.last_email(&carol.email, "invitation").await.token();
    r.call(
        Method::POST,
        "/v1/invitations/decline",
        &[],
        Some(&carol.token),
        Body::Json(json!({"token": carol_token})),
        204,
    )
    .await;
    let dave = app.signup("Dave").await;
    r.call(
        Method::POST,
        "/v1/orgs/{org_id}/invitations",
        std::slice::from_ref(&org),
        t,
        Body::Json(json!({"email": dave.email, "role": "member"})),
        201,
    )
    .await;
    let dave_token = app.last_email(&dave.email, "invitation").await.token();
    r.call(
        Method::POST,
        "/v1/invitations/accept",
        &[],
        Some(&dave.token),
        Body::Json(json!({"token": dave_token})),
        200,
    )
    .await;
    r.call(
        Method::PATCH,
        "/v1/orgs/{org_id}/members/{user_id}",
        &[org.clone(), bob.user_id.to_string()],
        t,
        Body::Json(json!({"role": "admin"})),
        200,
    )
    .await;
    r.call(
        Method::DELETE,
        "/v1/orgs/{org_id}/members/{user_id}",
        &[org.clone(), dave.user_id.to_string()],
        t,
        Body::None,
        204,
    )
    .await;

    // Projects and their members.
    let project = id(&r
        .call(
            Method::POST,
            "/v1/orgs/{org_id}/projects",
            std::slice::from_ref(&org),
            t,
            Body::Json(json!({"name": "Apollo"})),
            201,
        )
        .await);
    r.call(
        Method::PATCH,
        "/v1/orgs/{org_id}/projects/{project_id}",
        &[org.clone(), project.clone()],
        t,
        Body::Json(json!({"name": "Artemis"})),
        200,
    )
    .await;
    let bob_id = bob.user_id.to_string();
    r.call(
        Method::PUT,
        "/v1/orgs/{org_id}/projects/{project_id}/members/{user_id}",
        &[org.clone(), project.clone(), bob_id.clone()],
        t,
        Body::Json(json!({"role": "editor"})),
        200,
    )
    .await;
    r.call(
        Method::DELETE,
        "/v1/orgs/{org_id}/projects/{project_id}/members/{user_id}",
        &[org.clone(), project.clone(), bob_id.clone()],
        t,
        Body::None,
        204,
    )
    .await;

    // API keys.
    let key = id(&r
        .call(
            Method::POST,
            "/v1/orgs/{org_id}/api-keys",
            std::slice::from_ref(&org),
            t,
            Body::Json(json!({"name": "ci"})),
            201,
        )
        .await["api_key"]);
    r.call(
        Method::PATCH,
        "/v1/orgs/{org_id}/api-keys/{key_id}",
        &[org.clone(), key.clone()],
        t,
        Body::Json(json!({"name": "ci-2"})),
        200,
    )
    .await;
    r.call(
        Method::POST,
        "/v1/orgs/{org_id}/api-keys/{key_id}/rotate",
        &[org.clone(), key.clone()],
        t,
        Body::Json(json!({})),
        200,
    )
    .await;
    r.call(
        Method::DELETE,
        "/v1/orgs/{org_id}/api-keys/{key_id}",
        &[org.clone(), key],
        t,
        Body::None,
        204,
    )
    .await;

    // Settings and secrets (sealed values; the audit rows name them, never the value).
    r.call(
        Method::PATCH,
        "/v1/orgs/{org_id}/settings",
        std::slice::from_ref(&org),
        t,
        // The org's key for the model: the assistant below sends it to the fake.
        Body::Json(json!({"agent": "CodeActAgent", "llm_api_key": crate::llm_fake::API_KEY})),
        200,
    )
    .await;
    r.call(
        Method::PUT,
        "/v1/orgs/{org_id}/members/me/llm-key",
        std::slice::from_ref(&org),
        t,
        Body::Json(json!({"api_key": "sk-mine"})),
        200,
    )
    .await;
    r.call(
        Method::DELETE,
        "/v1/orgs/{org_id}/members/me/llm-key",
        std::slice::from_ref(&org),
        t,
        Body::None,
        204,
    )
    .await;
    r.call(
        Method::POST,
        "/v1/orgs/{org_id}/secrets",
        std::slice::from_ref(&org),
        t,
        Body::Json(json!({"name": "DEPLOY", "value": "v", "scope": "org"})),
        201,
    )
    .await;
    r.call(
        Method::PATCH,
        "/v1/orgs/{org_id}/secrets/{name}",
        &[org.clone(), "DEPLOY?scope=org".into()],
        t,
        Body::Json(json!({"value": "v2"})),
        200,
    )
    .await;
    r.call(
        Method::DELETE,
        "/v1/orgs/{org_id}/secrets/{name}",
        &[org.clone(), "DEPLOY?scope=org".into()],
        t,
        Body::None,
        204,
    )
    .await;

    // Workspace data.
    let conv = id(&r
        .call(
            Method::POST,
            "/v1/orgs/{org_id}/conversations",
            std::slice::from_ref(&org),
            t,
            Body::Json(json!({"title": "Chat"})),
            201,
        )
        .await);
    r.call(
        Method::PATCH,
        "/v1/orgs/{org_id}/conversations/{conversation_id}",
        &[org.clone(), conv.clone()],
        t,
        Body::Json(json!({"title": "Chat 2"})),
        200,
    )
    .await;
    r.call(
        Method::POST,
        "/v1/orgs/{org_id}/conversations/{conversation_id}/events",
        &[org.clone(), conv.clone()],
        t,
        Body::Json(json!({"events": [{"kind": "message"}]})),
        201,
    )
    .await;
    r.call(
        Method::DELETE,
        "/v1/orgs/{org_id}/conversations/{conversation_id}",
        &[org.clone(), conv],
        t,
        Body::None,
        204,
    )
    .await;
    // The assistant: a streamed answer (its conversation and both messages are
    // written in the request's own transaction), then the conversation deleted.
    let answer = r
        .call(
            Method::POST,
            "/v1/orgs/{org_id}/assistant/chat",
            std::slice::from_ref(&org),
            t,
            Body::Json(json!({"message": "What is in my notes?"})),
            200,
        )
        .await;
    let answer = answer.as_str().expect("an event stream");
    let assistant_conv = regex::Regex::new(r#""conversation_id":"([0-9a-f-]{36})""#)
        .unwrap()
        .captures(answer)
        .expect("the start event names the conversation")[1]
        .to_owned();
    r.call(
        Method::DELETE,
        "/v1/orgs/{org_id}/assistant/conversations/{assistant_conversation_id}",
        &[org.clone(), assistant_conv],
        t,
        Body::None,
        204,
    )
    .await;
    let (ct, bytes) = multipart(&[Part::file("notes.txt", Some("text/plain"), b"hello")]);
    let doc = id(&r
        .call(
            Method::POST,
            "/v1/orgs/{org_id}/documents",
            std::slice::from_ref(&org),
            t,
            Body::Multipart(ct, bytes),
            201,
        )
        .await);
    r.call(
        Method::PATCH,
        "/v1/orgs/{org_id}/documents/{document_id}",
        &[org.clone(), doc.clone()],
        t,
        Body::Json(json!({"title": "Notes"})),
        200,
    )
    .await;
    r.call(
        Method::DELETE,
        "/v1/orgs/{org_id}/documents/{document_id}",
        &[org.clone(), doc],
        t,
        Body::None,
        204,
    )
    .await;
    r.call(
        Method::POST,
        "/v1/orgs/{org_id}/meters",
        std::slice::from_ref(&org),
        t,
        Body::Json(json!({"key": "tokens", "name": "Tokens", "aggregation": "count"})),
        201,
    )
    .await;
    r.call(
        Method::POST,
        "/v1/orgs/{org_id}/usage-events",
        std::slice::from_ref(&org),
        t,
        Body::Json(json!({"events": [
            {"id": "e1", "meter": "tokens", "timestamp": chrono::Utc::now().to_rfc3339()}
        ]})),
        200,
    )
    .await;
    // Billing: a top-up, Stripe's report of its payment, a subscription, the portal.
    let top_up = r
        .call(
            Method::POST,
            "/v1/orgs/{org_id}/billing/top-up",
            std::slice::from_ref(&org),
            t,
            Body::Json(json!({"amount_cents": 1000})),
            201,
        )
        .await;
    let paid = fake.pay_checkout(top_up["stripe_session_id"].as_str().unwrap());
    let event = serde_json::to_vec(&fake.event("checkout.session.completed", &paid)).unwrap();
    let signature = palisade::billing::signature::header(
        crate::stripe_fake::WEBHOOK_SECRET,
        chrono::Utc::now().timestamp(),
        &event,
    );
    r.call(
        Method::POST,
        "/v1/billing/webhook",
        &[],
        None,
        Body::Signed(event, signature),
        200,
    )
    .await;
    r.call(
        Method::POST,
        "/v1/orgs/{org_id}/billing/checkout-session",
        std::slice::from_ref(&org),
        t,
        Body::Json(json!({"plan": "pro"})),
        201,
    )
    .await;
    r.call(
        Method::POST,
        "/v1/orgs/{org_id}/billing/portal-session",
        std::slice::from_ref(&org),
        t,
        Body::None,
        200,
    )
    .await;
    r.call(
        Method::DELETE,
        "/v1/orgs/{org_id}/projects/{project_id}",
        &[org.clone(), project],
        t,
        Body::None,
        204,
    )
    .await;

    // Ownership goes to Bob, who deletes the org.
    r.call(
        Method::POST,
        "/v1/orgs/{org_id}/transfer-ownership",
        std::slice::from_ref(&org),
        t,
        Body::Json(json!({"user_id": bob_id})),
        200,
    )
    .await;
    r.call(
        Method::DELETE,
        "/v1/orgs/{org_id}",
        std::slice::from_ref(&org),
        Some(&bob.token),
        Body::None,
        204,
    )
    .await;

    // Sessions and passwords.
    r.call(
        Method::POST,
        "/v1/auth/me/password",
        &[],
        t,
        Body::Json(json!({"current_password": PASSWORD, "new_password": new_password})),
        204,
    )
    .await;
    let second = app.login(&email, new_password).await;
    let second_token = second.assert_status(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let sessions = app.get("/v1/auth/sessions", &token).await;
    let other = sessions.assert_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == false)
        .map(id)
        .expect("the second session");
    r.call(
        Method::DELETE,
        "/v1/auth/sessions/{session_id}",
        &[other],
        t,
        Body::None,
        204,
    )
    .await;
    assert_eq!(app.get("/v1/auth/me", &second_token).await.status, 401);
    app.login(&email, new_password).await.assert_status(200);
    r.call(
        Method::POST,
        "/v1/auth/sessions/revoke-others",
        &[],
        t,
        Body::None,
        200,
    )
    .await;
    r.call(Method::POST, "/v1/auth/logout", &[], t, Body::None, 204)
        .await;
    r.call(
        Method::POST,
        "/v1/auth/password-reset/request",
        &[],
        None,
        Body::Json(json!({"email": email})),
        202,
    )
    .await;
    app.run_worker().await;
    let reset = app.last_email(&email, "password_reset").await.token();
    r.call(
        Method::POST,
        "/v1/auth/password-reset/confirm",
        &[],
        None,
        Body::Json(json!({"token": reset, "new_password": PASSWORD})),
        204,
    )
    .await;

    // Every mutating operation was performed...
    let spec_ops = mutating_operations();
    let done: BTreeSet<_> = r.done.keys().cloned().collect();
    let missing: Vec<_> = spec_ops.difference(&done).collect();
    assert!(
        missing.is_empty(),
        "mutating operations this test does not perform (add them to the script): {missing:?}"
    );
    // ...and each of its successful requests wrote at least one audit row, in its own
    // transaction, carrying its request id.
    let db = app.sql_superuser().await;
    let mut silent = Vec::new();
    for (op, ids) in &r.done {
        for request_id in ids {
            let rows: i64 = db
                .query_one(
                    "select count(*) from app.audit_log where context ->> 'request_id' = $1",
                    &[request_id],
                )
                .await
                .unwrap()
                .get(0);
            // The reset email is minted by the worker, which records the request
            // there (with no request to name): checked below instead.
            if rows == 0 && op.1 != "/v1/auth/password-reset/request" {
                silent.push(op.clone());
            }
        }
    }
    assert!(
        silent.is_empty(),
        "operations that wrote no audit row: {silent:?}"
    );
    let user: Uuid = db
        .query_one("select id from app.users where email = $1", &[&email])
        .await
        .unwrap()
        .get(0);
    let actions: Vec<String> = db
        .query(
            "select action from app.audit_log where account_id = $1 order by seq",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    for expected in [
        "user.registered",
        "auth.login",
        "session.refreshed",
        "user.updated",
        "user.email_verified",
        "user.current_org_changed",
        "user.password_changed",
        "session.revoked",
        "session.others_revoked",
        "auth.logout",
        "user.password_reset_requested",
        "user.password_reset",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
    // Every chain the script touched is intact.
    let broken: i64 = db
        .query_one(
            "select count(*) from (select distinct chain_id from app.audit_log) c,
                    app.verify_audit_chain(c.chain_id)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(broken, 0);
}
