//! Billing against a server that speaks Stripe's wire format (tests/api/stripe_fake.rs):
//! checkout, top-ups, the portal, and webhooks that are verified, stored once and
//! applied in any order -- driving the entitlement, and so the quotas.

use std::time::Duration;

use palisade::db::Lane;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    fixtures::team,
    helpers::{Signup, TestApp, limits, settings, spawn_app, spawn_app_with},
    stripe_fake::{
        self, FakeStripe, OLD_WEBHOOK_SECRET, WEBHOOK_SECRET, deliver, deliver_ok, post_webhook,
    },
};

async fn billing_app(grace: Duration) -> (TestApp, FakeStripe) {
    let fake = FakeStripe::start().await;
    let mut s = settings();
    s.stripe = Some(fake.settings());
    s.billing_grace = grace;
    (spawn_app_with(s, limits()).await, fake)
}

/// The org's billing, as `who` reads it.
async fn billing_of(app: &TestApp, who: &Signup, org: Uuid) -> Value {
    app.get(&format!("/v1/orgs/{org}/billing"), &who.token)
        .await
        .assert_status(200)
        .clone()
}

/// Stripe sends a `kind` event about `object`, and the worker applies what is due;
/// returns how many events it applied.
async fn tell(app: &TestApp, fake: &FakeStripe, kind: &str, object: &Value) -> usize {
    deliver_ok(app, &fake.event(kind, object)).await;
    apply(app).await
}

/// What the worker does between two polls: applies the stored events.
async fn apply(app: &TestApp) -> usize {
    palisade::billing::apply::apply_events(&app.state)
        .await
        .expect("applying billing events succeeds")
}

async fn count(app: &TestApp, sql: &str, org: Uuid) -> i64 {
    app.sql_superuser()
        .await
        .query_one(sql, &[&org])
        .await
        .unwrap()
        .get(0)
}

async fn events_stored(app: &TestApp) -> i64 {
    app.sql_superuser()
        .await
        .query_one("select count(*) from app.billing_events", &[])
        .await
        .unwrap()
        .get(0)
}

async fn plan(app: &TestApp, who: &Signup, org: Uuid) -> (String, String) {
    let body = app
        .get(&format!("/v1/orgs/{org}/plan"), &who.token)
        .await
        .assert_status(200)
        .clone();
    (
        body["plan"]["id"].as_str().unwrap().to_owned(),
        body["status"].as_str().unwrap().to_owned(),
    )
}

async fn checkout(app: &TestApp, who: &Signup, org: Uuid, plan: &str) -> Value {
    app.post(
        &format!("/v1/orgs/{org}/billing/checkout-session"),
        &who.token,
        json!({"plan": plan}),
    )
    .await
    .assert_status(201)
    .clone()
}

async fn audit_actions(app: &TestApp, org: Uuid) -> Vec<String> {
    app.sql_superuser()
        .await
        .query(
            "select action from app.audit_log where org_id = $1 order by seq",
            &[&org],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn without_stripe_billing_answers_503_and_the_rest_works() {
    let app = spawn_app().await;
    let t = team(&app, "NoStripe").await;
    let org = t.org_id;
    app.post(
        &format!("/v1/orgs/{org}/billing/checkout-session"),
        &t.owner.token,
        json!({"plan": "pro"}),
    )
    .await
    .assert_problem(503, "billing_not_configured");
    app.post(
        &format!("/v1/orgs/{org}/billing/top-up"),
        &t.owner.token,
        json!({"amount_cents": 1000}),
    )
    .await
    .assert_problem(503, "billing_not_configured");
    app.post(
        &format!("/v1/orgs/{org}/billing/portal-session"),
        &t.owner.token,
        json!({}),
    )
    .await
    .assert_problem(409, "no_billing_account");
    // The role is checked first: a member learns nothing about the configuration.
    app.post(
        &format!("/v1/orgs/{org}/billing/checkout-session"),
        &t.member.token,
        json!({"plan": "pro"}),
    )
    .await
    .assert_problem(403, "forbidden");
    let event =
        json!({"id": "evt_1", "type": "invoice.paid", "created": 1, "data": {"object": {}}});
    let resp = app
        .request(Method::POST, "/v1/billing/webhook", None, Some(event))
        .await;
    resp.assert_problem(503, "billing_not_configured");
    assert_eq!(events_stored(&app).await, 0);
    let billing = billing_of(&app, &t.admin, org).await;
    assert_eq!(billing["billing_configured"], false);
    assert_eq!(billing["plans_for_sale"], json!([]));
    assert_eq!(billing["subscription"], Value::Null);
    app.create_project(&t.member, org, "still works").await;
}

#[tokio::test]
async fn checkout_is_for_owners_and_two_clicks_make_one_customer() {
    let (app, fake) = billing_app(Duration::from_secs(3600)).await;
    let t = team(&app, "Clicks").await;
    let org = t.org_id;
    let path = format!("/v1/orgs/{org}/billing/checkout-session");
    for who in [&t.admin, &t.member, &t.viewer] {
        app.post(&path, &who.token, json!({"plan": "pro"}))
            .await
            .assert_problem(403, "forbidden");
    }
    // Another org's owner: 404, nothing confirmed.
    let stranger = app.signup("Stranger").await;
    app.post(&path, &stranger.token, json!({"plan": "pro"}))
        .await
        .assert_problem(404, "not_found");
    app.get(&format!("/v1/orgs/{org}/billing"), &stranger.token)
        .await
        .assert_problem(404, "not_found");
    // An API key (even an admin's) never governs billing.
    let key = app
        .post(
            &format!("/v1/orgs/{org}/api-keys"),
            &t.owner.token,
            json!({"name": "ci", "role": "admin"}),
        )
        .await
        .assert_status(201)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(&path, &key, json!({"plan": "pro"}))
        .await
        .assert_problem(403, "api_key_not_allowed");
    // Bad input: nothing reaches Stripe, nothing is stored.
    let unknown = app
        .post(&path, &t.owner.token, json!({"plan": "platinum"}))
        .await;
    unknown.assert_problem(422, "validation_failed");
    assert_eq!(unknown.body["errors"][0]["field"], "plan");
    app.post(&path, &t.owner.token, json!({"plan": 7}))
        .await
        .assert_problem(422, "validation_failed");
    app.post(
        &format!("/v1/orgs/{org}/billing/top-up"),
        &t.owner.token,
        json!({"amount_cents": -500}),
    )
    .await
    .assert_problem(422, "validation_failed");
    assert_eq!(fake.count("POST", "/v1/customers"), 0);
    // Two clicks at once (Stripe slow enough that both find no customer): two
    // sessions, one customer.
    fake.objects.lock().unwrap().customer_delay = Some(Duration::from_millis(500));
    let (a, b) = tokio::join!(
        app.post(&path, &t.owner.token, json!({"plan": "pro"})),
        app.post(&path, &t.owner.token, json!({"plan": "enterprise"})),
    );
    let (a, b) = (a.assert_status(201).clone(), b.assert_status(201).clone());
    assert_eq!(fake.count("POST", "/v1/customers"), 2, "both asked Stripe");
    assert_eq!(
        fake.objects.lock().unwrap().customers.len(),
        1,
        "Stripe made one"
    );
    assert_eq!(
        count(
            &app,
            "select count(*) from app.billing_customers where org_id = $1",
            org
        )
        .await,
        1
    );
    for (s, plan) in [(&a, "pro"), (&b, "enterprise")] {
        assert_eq!(s["kind"], "monthly_subscription");
        assert_eq!(s["status"], "in_progress");
        assert_eq!(s["plan"], plan);
        assert!(
            s["url"]
                .as_str()
                .unwrap()
                .starts_with("https://checkout.stripe.test/")
        );
        let at_stripe =
            fake.objects.lock().unwrap().sessions[s["stripe_session_id"].as_str().unwrap()].clone();
        assert_eq!(at_stripe["client_reference_id"], org.to_string());
        assert_eq!(at_stripe["metadata"]["org_id"], org.to_string());
        assert_eq!(at_stripe["mode"], "subscription");
    }
    let sessions = app
        .get(
            &format!("/v1/orgs/{org}/billing/sessions?limit=1"),
            &t.admin.token,
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(sessions["items"].as_array().unwrap().len(), 1);
    let next = sessions["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            &format!("/v1/orgs/{org}/billing/sessions?cursor={next}"),
            &t.admin.token,
        )
        .await
        .assert_status(200)
        .clone();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_cursor"], Value::Null);
    app.get(&format!("/v1/orgs/{org}/billing/sessions"), &t.member.token)
        .await
        .assert_problem(403, "forbidden");
    // The portal, now that a customer exists.
    let portal = app
        .post(
            &format!("/v1/orgs/{org}/billing/portal-session"),
            &t.owner.token,
            json!({}),
        )
        .await
        .assert_status(200)
        .clone();
    assert!(
        portal["url"]
            .as_str()
            .unwrap()
            .starts_with("https://billing.stripe.test/")
    );
    // Stripe failing: 502, nothing recorded.
    fake.objects.lock().unwrap().fail_next_post = Some(500);
    app.post(
        &format!("/v1/orgs/{org}/billing/top-up"),
        &t.owner.token,
        json!({"amount_cents": 1000}),
    )
    .await
    .assert_problem(502, "billing_provider_error");
    assert_eq!(
        count(
            &app,
            "select count(*) from app.billing_sessions where org_id = $1",
            org
        )
        .await,
        2
    );
    let actions = audit_actions(&app, org).await;
    let n = |a: &str| actions.iter().filter(|x| *x == a).count();
    assert_eq!(n("billing.customer_created"), 1);
    assert_eq!(n("billing.checkout_started"), 2);
    assert_eq!(n("billing.portal_opened"), 1);
}

#[tokio::test]
async fn webhook_signatures_are_checked_as_stripe_signs() {
    let (app, fake) = billing_app(Duration::from_secs(3600)).await;
    let now = chrono::Utc::now().timestamp();
    let ignored = |fake: &FakeStripe| {
        fake.event(
            "product.created",
            &json!({"id": "prod_1", "object": "product"}),
        )
    };
    // Nothing stored for a refused delivery.
    let event = ignored(&fake);
    deliver(&app, &event, "whsec_wrong", now)
        .await
        .assert_problem(400, "invalid_signature");
    // Outside the 300 s tolerance either way. The margins are wide and the clock is read at
    // each delivery: on a loaded machine seconds pass between two requests, and `now + 301`
    // read at the test's start was once inside the tolerance by the time it was checked (the
    // exact boundary is a unit test in `billing::signature`).
    let outside = palisade::billing::signature::TOLERANCE_SECONDS + 60;
    deliver(
        &app,
        &event,
        WEBHOOK_SECRET,
        chrono::Utc::now().timestamp() - outside,
    )
    .await
    .assert_problem(400, "invalid_signature");
    deliver(
        &app,
        &event,
        WEBHOOK_SECRET,
        chrono::Utc::now().timestamp() + outside,
    )
    .await
    .assert_problem(400, "invalid_signature");
    post_webhook(&app, event.to_string().into_bytes(), None)
        .await
        .assert_problem(400, "invalid_signature");
    // A signature over other bytes (the body changed in transit).
    let body = serde_json::to_vec(&event).unwrap();
    let other = event.to_string().replace("product.created", "invoice.paid");
    let signature = palisade::billing::signature::header(WEBHOOK_SECRET, now, &body);
    post_webhook(&app, other.into_bytes(), Some(signature))
        .await
        .assert_problem(400, "invalid_signature");
    // Malformed JSON, validly signed: 400, nothing stored.
    let junk = b"{\"id\": \"evt_1\", ".to_vec();
    let signature = palisade::billing::signature::header(WEBHOOK_SECRET, now, &junk);
    post_webhook(&app, junk, Some(signature))
        .await
        .assert_problem(400, "invalid_event");
    let not_an_event = json!({"id": "cus_1", "type": "x", "created": now, "data": {"object": {}}});
    deliver(&app, &not_an_event, WEBHOOK_SECRET, now)
        .await
        .assert_problem(400, "invalid_event");
    // Over 1 MiB: 413.
    let mut big = ignored(&fake);
    big["data"]["object"]["padding"] = json!("x".repeat(1024 * 1024));
    deliver(&app, &big, WEBHOOK_SECRET, now)
        .await
        .assert_problem(413, "payload_too_large");
    assert_eq!(events_stored(&app).await, 0);
    // The current secret, the rotated-out one, and several v1 values (one matching).
    let receipt = deliver(&app, &event, WEBHOOK_SECRET, now)
        .await
        .assert_status(200)
        .clone();
    assert_eq!(receipt["duplicate"], false);
    let second = ignored(&fake);
    deliver(&app, &second, OLD_WEBHOOK_SECRET, now - 200)
        .await
        .assert_status(200);
    let third = ignored(&fake);
    let body = serde_json::to_vec(&third).unwrap();
    let several = format!(
        "t={now},v1={},v1={}",
        palisade::billing::signature::sign("whsec_other", now, &body),
        palisade::billing::signature::sign(WEBHOOK_SECRET, now, &body)
    );
    post_webhook(&app, body, Some(several))
        .await
        .assert_status(200);
    assert_eq!(events_stored(&app).await, 3);
    // Unknown types are acknowledged, stored as ignored, and never reach the worker.
    assert_eq!(apply(&app).await, 0);
    let ignored_count: i64 = app
        .sql_superuser()
        .await
        .query_one(
            "select count(*) from app.billing_events where status = 'ignored'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ignored_count, 3);
}

#[tokio::test]
async fn a_top_up_is_credited_once_whatever_the_deliveries() {
    let (app, fake) = billing_app(Duration::from_secs(3600)).await;
    let t = team(&app, "TopUp").await;
    let org = t.org_id;
    let session = app
        .post(
            &format!("/v1/orgs/{org}/billing/top-up"),
            &t.owner.token,
            json!({"amount_cents": 2500}),
        )
        .await
        .assert_status(201)
        .clone();
    assert_eq!(session["kind"], "direct_payment");
    assert_eq!(session["amount_cents"], 2500);
    let stripe_id = session["stripe_session_id"].as_str().unwrap().to_owned();
    let paid = fake.pay_checkout(&stripe_id);
    assert_eq!(paid["mode"], "payment");
    let event = fake.event("checkout.session.completed", &paid);
    // Ten concurrent deliveries of one event: stored once.
    let deliveries =
        futures_util::future::join_all((0..10).map(|_| deliver_ok(&app, &event))).await;
    let fresh = deliveries
        .iter()
        .filter(|r| r["duplicate"] == false)
        .count();
    assert_eq!(fresh, 1, "{deliveries:?}");
    assert_eq!(apply(&app).await, 1);
    // A redelivery after it was applied: 200, nothing changes.
    assert_eq!(deliver_ok(&app, &event).await["duplicate"], true);
    assert_eq!(apply(&app).await, 0);
    // The same completion under another event id (Stripe resends as a new event in rare
    // cases): the session ends once, so no second credit.
    assert_eq!(
        tell(&app, &fake, "checkout.session.completed", &paid).await,
        1
    );
    let billing = billing_of(&app, &t.owner, org).await;
    assert_eq!(billing["credit_balance_cents"], 2500);
    assert_eq!(billing["has_billing_account"], true);
    let sessions = app
        .get(&format!("/v1/orgs/{org}/billing/sessions"), &t.owner.token)
        .await
        .assert_status(200)
        .clone();
    assert_eq!(sessions["items"][0]["status"], "completed");
    let actions = audit_actions(&app, org).await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "billing.credits_added")
            .count(),
        1
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "billing.event_received")
            .count(),
        2
    );
    // An expired top-up ends cancelled and credits nothing.
    let other = app
        .post(
            &format!("/v1/orgs/{org}/billing/top-up"),
            &t.owner.token,
            json!({"amount_cents": 900}),
        )
        .await
        .assert_status(201)
        .clone();
    let mut expired =
        fake.objects.lock().unwrap().sessions[other["stripe_session_id"].as_str().unwrap()].clone();
    expired["status"] = json!("expired");
    assert_eq!(
        tell(&app, &fake, "checkout.session.expired", &expired).await,
        1
    );
    assert_eq!(
        count(
            &app,
            "select credit_balance_cents from app.billing_customers where org_id = $1",
            org
        )
        .await,
        2500
    );
    assert_eq!(
        count(
            &app,
            "select count(*) from app.billing_sessions where org_id = $1 and status = 'cancelled'",
            org
        )
        .await,
        1
    );
}

#[tokio::test]
async fn upgrade_payment_failure_recovery_and_cancel_drive_the_quotas() {
    let grace = Duration::from_secs(3);
    let (app, fake) = billing_app(grace).await;
    let t = team(&app, "Lifecycle").await;
    let org = t.org_id;
    app.set_plan(org, "free").await;
    for i in 0..10 {
        app.create_project(&t.member, org, &format!("p{i}")).await;
    }
    let projects = format!("/v1/orgs/{org}/projects");
    let project = |name: &str| app.post(&projects, &t.member.token, json!({"name": name}));
    project("over free")
        .await
        .assert_problem(402, "plan_limit_reached");

    // Upgrade: checkout, paid; Stripe sends the completion and the subscription.
    let session = checkout(&app, &t.owner, org, "pro").await;
    let paid = fake.pay_checkout(session["stripe_session_id"].as_str().unwrap());
    let sub_id = paid["subscription"].as_str().unwrap().to_owned();
    let sub = fake.objects.lock().unwrap().subscriptions[&sub_id].clone();
    deliver_ok(&app, &fake.event("customer.subscription.created", &sub)).await;
    assert_eq!(
        tell(&app, &fake, "checkout.session.completed", &paid).await,
        2
    );
    assert_eq!(
        plan(&app, &t.member, org).await,
        ("pro".into(), "active".into())
    );
    project("on pro").await.assert_status(201);
    // While subscribed, a second checkout is refused: changes go through the portal.
    app.post(
        &format!("/v1/orgs/{org}/billing/checkout-session"),
        &t.owner.token,
        json!({"plan": "enterprise"}),
    )
    .await
    .assert_problem(409, "subscription_exists");

    // The renewal fails: past_due, the plan holds during the grace period.
    let failing = fake.update_subscription(&sub_id, |s| s["status"] = json!("past_due"));
    assert_eq!(
        tell(
            &app,
            &fake,
            "invoice.payment_failed",
            &fake.invoice(&failing, false)
        )
        .await,
        1
    );
    assert_eq!(
        plan(&app, &t.member, org).await,
        ("pro".into(), "past_due".into())
    );
    let mail = app.last_email(&t.owner.email, "payment_failed").await;
    assert!(
        mail.body.contains("/billing/portal-session"),
        "{}",
        mail.body
    );
    assert!(
        app.emails_to(&t.admin.email)
            .await
            .iter()
            .all(|e| e.template != "payment_failed"),
        "owners only"
    );
    let billing = billing_of(&app, &t.admin, org).await;
    assert_eq!(billing["subscription"]["status"], "past_due");
    assert!(billing["subscription"]["grace_ends_at"].is_string());
    // The grace ends: the free plan's limits apply.
    tokio::time::sleep(grace + Duration::from_millis(200)).await;
    assert_eq!(
        palisade::billing::apply::expire_grace(&app.state)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        palisade::billing::apply::expire_grace(&app.state)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        plan(&app, &t.member, org).await,
        ("free".into(), "past_due".into())
    );
    project("past grace")
        .await
        .assert_problem(402, "plan_limit_reached");
    let mail = app.last_email(&t.owner.email, "plan_changed").await;
    assert!(mail.subject.contains("free"), "{}", mail.subject);

    // Recovery: the invoice is paid, the plan returns.
    let recovered = fake.update_subscription(&sub_id, |s| s["status"] = json!("active"));
    assert_eq!(
        tell(&app, &fake, "invoice.paid", &fake.invoice(&recovered, true)).await,
        1
    );
    assert_eq!(
        plan(&app, &t.member, org).await,
        ("pro".into(), "active".into())
    );
    project("recovered").await.assert_status(201);

    // A subscribed org is not deleted (Stripe would go on charging): cancel first.
    app.delete(&format!("/v1/orgs/{org}"), &t.owner.token)
        .await
        .assert_problem(409, "subscription_exists");

    // Cancel in the portal: at period end first, then deleted.
    let ending = fake.update_subscription(&sub_id, |s| s["cancel_at_period_end"] = json!(true));
    tell(&app, &fake, "customer.subscription.updated", &ending).await;
    let billing = billing_of(&app, &t.owner, org).await;
    assert_eq!(billing["subscription"]["cancel_at_period_end"], true);
    assert_eq!(billing["plan"], "pro");
    let deleted = fake.update_subscription(&sub_id, |s| {
        s["status"] = json!("canceled");
        s["canceled_at"] = json!(chrono::Utc::now().timestamp());
    });
    tell(&app, &fake, "customer.subscription.deleted", &deleted).await;
    assert_eq!(
        plan(&app, &t.member, org).await,
        ("free".into(), "canceled".into())
    );
    project("after cancel")
        .await
        .assert_problem(402, "plan_limit_reached");
    // After a cancellation a new checkout is allowed again.
    checkout(&app, &t.owner, org, "pro").await;

    let actions = audit_actions(&app, org).await;
    for expected in [
        "billing.checkout_started",
        "billing.subscription_created",
        "billing.checkout_completed",
        "billing.payment_failed",
        "billing.subscription_updated",
        "plan.changed",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
    // free -> pro, pro -> free (grace), free -> pro, pro -> free (cancel).
    let changes: Vec<Value> = app
        .sql_superuser()
        .await
        .query(
            "select metadata from app.audit_log where org_id = $1 and action = 'plan.changed'
                and metadata ->> 'source' = 'billing' order by seq",
            &[&org],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let path: Vec<(&str, &str)> = changes
        .iter()
        .map(|m| (m["from"].as_str().unwrap(), m["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        path,
        [
            ("free", "pro"),
            ("pro", "free"),
            ("free", "pro"),
            ("pro", "free")
        ]
    );
    let broken: i64 = app
        .sql_superuser()
        .await
        .query_one("select count(*) from app.verify_audit_chain($1)", &[&org])
        .await
        .unwrap()
        .get(0);
    assert_eq!(broken, 0);
    // Cancelled: the org may go.
    app.delete(&format!("/v1/orgs/{org}"), &t.owner.token)
        .await
        .assert_status(204);
}

#[tokio::test]
async fn events_out_of_order_end_in_the_newest_state() {
    let (app, fake) = billing_app(Duration::from_secs(3600)).await;
    let t = team(&app, "Order").await;
    let org = t.org_id;
    app.set_plan(org, "free").await;
    let session = checkout(&app, &t.owner, org, "pro").await;
    let paid = fake.pay_checkout(session["stripe_session_id"].as_str().unwrap());
    let sub_id = paid["subscription"].as_str().unwrap().to_owned();
    let created = fake.objects.lock().unwrap().subscriptions[&sub_id].clone();
    // `updated` arrives before `created`.
    let updated = fake.update_subscription(&sub_id, |s| s["cancel_at_period_end"] = json!(true));
    tell(&app, &fake, "customer.subscription.updated", &updated).await;
    tell(&app, &fake, "customer.subscription.created", &created).await;
    let billing = billing_of(&app, &t.owner, org).await;
    assert_eq!(
        billing["subscription"]["cancel_at_period_end"], true,
        "{billing}"
    );
    assert_eq!(billing["plan"], "pro");
    // `deleted` arrives before an `updated` that still says active.
    let active = fake.update_subscription(&sub_id, |s| s["cancel_at_period_end"] = json!(false));
    let deleted = fake.update_subscription(&sub_id, |s| s["status"] = json!("canceled"));
    tell(&app, &fake, "customer.subscription.deleted", &deleted).await;
    tell(&app, &fake, "customer.subscription.updated", &active).await;
    assert_eq!(
        plan(&app, &t.owner, org).await,
        ("free".into(), "canceled".into())
    );

    // The guard itself: a projection read before the stored one changes nothing.
    let jobs = app.sql_lane(Lane::Jobs).await;
    let sync = "select new_plan from app.billing_sync_subscription($1, $2, null, $3, $4, 'pro', null, null, false, null, $5, interval '1 hour')";
    let customer = created["customer"].as_str().unwrap();
    let stale = chrono::Utc::now() - chrono::Duration::hours(1);
    let row = jobs
        .query_one(
            sync,
            &[
                &sub_id,
                &customer,
                &"active",
                &stripe_fake::PRO_PRICE,
                &stale,
            ],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("free"));
    let status: String = app
        .sql_superuser()
        .await
        .query_one(
            "select status from app.billing_subscriptions where stripe_subscription_id = $1",
            &[&sub_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "canceled");
    // The request role may not call the worker's functions, nor write billing rows.
    let runtime = app.sql_runtime().await;
    let refused = runtime
        .query_one(
            sync,
            &[
                &sub_id,
                &customer,
                &"active",
                &stripe_fake::PRO_PRICE,
                &chrono::Utc::now(),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    let credentials = app.sql_lane(Lane::Credentials).await;
    let refused = credentials
        .execute(
            "update app.billing_customers set credit_balance_cents = 1000000",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
}

#[tokio::test]
async fn a_subscription_to_a_price_not_sold_here_leaves_the_plan_alone() {
    let (app, _fake) = billing_app(Duration::from_secs(3600)).await;
    let t = team(&app, "Unsold").await;
    let org = t.org_id;
    app.set_plan(org, "pro").await;
    let jobs = app.sql_lane(Lane::Jobs).await;
    let sub = format!("sub_unsold{}", org.simple());
    for status in ["active", "canceled"] {
        let row = jobs
            .query_one(
                "select org_id, new_plan from app.billing_sync_subscription($1, 'cus_unsold', $2,
                        $3, 'price_elsewhere', null, null, null, false, null, now(), interval '1 hour')",
                &[&sub, &org.to_string(), &status],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, Option<Uuid>>(0),
            Some(org),
            "found by metadata"
        );
        assert_eq!(
            row.get::<_, Option<String>>(1).as_deref(),
            Some("pro"),
            "{status}"
        );
    }
    assert_eq!(
        plan(&app, &t.owner, org).await,
        ("pro".into(), "active".into())
    );
}
