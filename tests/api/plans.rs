//! Plans and quotas (issue 11): the catalogue, each org's plan, limits enforced by
//! PostgreSQL in the write's own transaction (race-safe), downgrades that keep data, seat
//! counting with invitations, feature flags, and plans feeding the rate limits.

use palisade::db;
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::{
    fixtures::{bare_user, new_org, team},
    helpers::{
        Signup, TestApp, TestResponse, cluster, connect_as, limits, settings, spawn_app,
        spawn_app_with,
    },
};

/// Invites through the API; the response as it came.
async fn invite(app: &TestApp, who: &Signup, org: Uuid, email: &str, role: &str) -> TestResponse {
    app.post(
        &format!("/v1/orgs/{org}/invitations"),
        &who.token,
        json!({"email": email, "role": role}),
    )
    .await
}

/// Asserts a 402 plan_limit_reached with its extension members.
#[track_caller]
fn assert_limit(resp: &TestResponse, meter: &str, limit: i64, used: i64, plan: &str) {
    resp.assert_problem(402, "plan_limit_reached");
    assert_eq!(resp.body["meter"], meter, "{}", resp.body);
    assert_eq!(resp.body["limit"], limit, "{}", resp.body);
    assert_eq!(resp.body["used"], used, "{}", resp.body);
    assert_eq!(resp.body["plan"], plan, "{}", resp.body);
}

async fn project_count(app: &TestApp, org: Uuid) -> i64 {
    app.sql_superuser()
        .await
        .query_one(
            "select count(*) from app.projects where org_id = $1",
            &[&org],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_fresh_migration_starts_new_orgs_on_free() {
    // A database migrated from nothing (the test template moves its default to
    // enterprise; this checks what a real install gets).
    let _ = cluster();
    let name = format!("t_{}", Uuid::new_v4().simple());
    let admin = connect_as(palisade::db::embedded::SUPERUSER, "postgres").await;
    admin
        .batch_execute(&format!("create database {name} owner {}", db::OWNER_ROLE))
        .await
        .unwrap();
    let mut owner = connect_as(db::OWNER_ROLE, &name).await;
    db::migrate::run(&mut owner)
        .await
        .expect("migrate from scratch");
    let default: String = owner
        .query_one("select id from app.plans where is_default", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(default, "free");
    // An org created now starts on it (the trigger), whoever inserts it.
    let su = connect_as(palisade::db::embedded::SUPERUSER, &name).await;
    let org: Uuid = su
        .query_one(
            "insert into app.orgs (name, slug) values ('Acme', 'acme-plans') returning id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let plan: String = su
        .query_one(
            "select plan_id from app.org_plans where org_id = $1",
            &[&org],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plan, "free");
}

#[tokio::test]
async fn the_catalogue_is_public_and_an_org_reads_its_plan() {
    let app = spawn_app().await;
    let resp = app.request(Method::GET, "/v1/plans", None, None).await;
    let body = resp.assert_status(200);
    let ids: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["free", "pro", "enterprise"]);
    let free = &body["items"][0];
    assert_eq!(free["requests_per_minute"], 600);
    let projects = free["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["meter"] == "projects")
        .unwrap();
    assert_eq!(projects["included"], 10);
    assert_eq!(projects["enforcement"], "hard");
    assert!(
        body["items"][1]["features"]
            .as_array()
            .unwrap()
            .contains(&json!("custom_meters"))
    );

    let user = app.signup("Pat").await;
    app.set_plan(user.org_id, "pro").await;
    let resp = app
        .get(&format!("/v1/orgs/{}/plan", user.org_id), &user.token)
        .await;
    let body = resp.assert_status(200);
    assert_eq!(body["plan"]["id"], "pro");
    assert_eq!(body["status"], "active");
    let start: chrono::DateTime<chrono::Utc> = body["current_period_start"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let end: chrono::DateTime<chrono::Utc> = body["current_period_end"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(start <= chrono::Utc::now() && chrono::Utc::now() < end);
    assert_eq!(start.format("%d %H:%M").to_string(), "01 00:00");

    // Another org's plan is not found.
    let other = app.signup("Other").await;
    app.get(&format!("/v1/orgs/{}/plan", user.org_id), &other.token)
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn with_one_project_left_exactly_one_of_twenty_concurrent_creations_succeeds() {
    let app = spawn_app().await;
    let user = app.signup("Racer").await;
    app.set_plan(user.org_id, "free").await;
    for i in 0..9 {
        app.create_project(&user, user.org_id, &format!("p{i}"))
            .await;
    }
    let path = format!("/v1/orgs/{}/projects", user.org_id);
    let attempts =
        (0..20).map(|i| app.post(&path, &user.token, json!({"name": format!("race {i}")})));
    let results = futures_util::future::join_all(attempts).await;
    let created = results.iter().filter(|r| r.status.as_u16() == 201).count();
    assert_eq!(
        created,
        1,
        "statuses: {:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in results.iter().filter(|r| r.status.as_u16() != 201) {
        assert_limit(r, "projects", 10, 10, "free");
    }
    assert_eq!(project_count(&app, user.org_id).await, 10);
}

#[tokio::test]
async fn a_downgrade_keeps_everything_and_blocks_adding_until_under_the_limit() {
    let app = spawn_app().await;
    let user = app.signup("Down").await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(
            app.create_project(&user, user.org_id, &format!("p{i}"))
                .await,
        );
    }
    app.set_plan(user.org_id, "free").await;
    assert_eq!(
        project_count(&app, user.org_id).await,
        12,
        "a downgrade deletes nothing"
    );
    let path = format!("/v1/orgs/{}/projects", user.org_id);
    assert_limit(
        &app.post(&path, &user.token, json!({"name": "more"})).await,
        "projects",
        10,
        12,
        "free",
    );
    // Reads and edits still work over the limit.
    app.get(&format!("{path}?limit=100"), &user.token)
        .await
        .assert_status(200);
    app.patch(
        &format!("{path}/{}", ids[0]),
        &user.token,
        json!({"name": "renamed"}),
    )
    .await
    .assert_status(200);
    for id in &ids[..3] {
        app.delete(&format!("{path}/{id}"), &user.token)
            .await
            .assert_status(204);
    }
    app.post(&path, &user.token, json!({"name": "back under"}))
        .await
        .assert_status(201);
    assert_limit(
        &app.post(&path, &user.token, json!({"name": "one too many"}))
            .await,
        "projects",
        10,
        10,
        "free",
    );
    // The change was recorded (by the system: `palisade orgs set-plan` has no user).
    let events: i64 = app
        .sql_superuser()
        .await
        .query_one(
            "select count(*) from app.audit_log where org_id = $1 and action = 'plan.changed'
                and metadata = '{\"from\": \"enterprise\", \"to\": \"free\"}'::jsonb
                and targets = '[{\"type\": \"plan\", \"name\": \"free\"}]'::jsonb
                and actor_type = 'system' and actor_id is null",
            &[&user.org_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 1);
}

#[tokio::test]
async fn a_viewer_at_the_limit_is_refused_for_the_role_not_the_plan() {
    let app = spawn_app().await;
    let t = team(&app, "Lim").await;
    app.set_plan(t.org_id, "free").await;
    let su = app.sql_superuser().await;
    su.execute(
        "update app.plan_limits set included = 0 where plan_id = 'free' and meter = 'projects'",
        &[],
    )
    .await
    .unwrap();
    let path = format!("/v1/orgs/{}/projects", t.org_id);
    app.post(&path, &t.viewer.token, json!({"name": "x"}))
        .await
        .assert_problem(403, "forbidden");
    assert_limit(
        &app.post(&path, &t.member.token, json!({"name": "x"})).await,
        "projects",
        0,
        0,
        "free",
    );
}

#[tokio::test]
async fn seats_count_members_and_pending_invitations() {
    let app = spawn_app().await;
    let owner = app.signup("Seats").await;
    let org = new_org(&app, &owner, "Seated").await;
    app.set_plan(org, "free").await; // 5 seats: the owner + 4
    let mut invited = Vec::new();
    for _ in 0..4 {
        let (_, email) = bare_user(&app).await;
        invite(&app, &owner, org, &email, "member")
            .await
            .assert_status(201);
        invited.push(email);
    }
    let resp = invite(&app, &owner, org, "sixth@example.com", "member").await;
    assert_limit(&resp, "seats", 5, 5, "free");
    // Revoking an invitation frees its seat.
    let su = app.sql_superuser().await;
    let inv: Uuid = su
        .query_one(
            "select id from app.invitations where org_id = $1 and email = $2",
            &[&org, &invited[0]],
        )
        .await
        .unwrap()
        .get(0);
    app.delete(&format!("/v1/orgs/{org}/invitations/{inv}"), &owner.token)
        .await
        .assert_status(204);
    invite(&app, &owner, org, "sixth@example.com", "member")
        .await
        .assert_status(201);

    // A DBA lowers the free plan's seats: pending invitations can no longer be accepted
    // (the org is over), and nothing is deleted.
    su.execute(
        "update app.plan_limits set included = 3 where plan_id = 'free' and meter = 'seats'",
        &[],
    )
    .await
    .unwrap();
    let invitee = app.signup("Invitee").await;
    let resp = invite(&app, &owner, org, &invitee.email, "member").await;
    assert_limit(&resp, "seats", 3, 5, "free");
    let members: i64 = su
        .query_one(
            "select count(*) from app.memberships where org_id = $1",
            &[&org],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(members, 1);
}

#[tokio::test]
async fn accepting_an_invitation_is_refused_while_the_org_is_over_its_seats() {
    let app = spawn_app().await;
    let owner = app.signup("Acc").await;
    let org = new_org(&app, &owner, "Accepting").await;
    app.set_plan(org, "free").await;
    let invitee = app.signup("Joiner").await;
    invite(&app, &owner, org, &invitee.email, "member")
        .await
        .assert_status(201);
    let token = app.last_email(&invitee.email, "invitation").await.token();
    // Over the limit after the invitation was sent (2 seats used, 1 allowed).
    app.sql_superuser()
        .await
        .execute(
            "update app.plan_limits set included = 1 where plan_id = 'free' and meter = 'seats'",
            &[],
        )
        .await
        .unwrap();
    let resp = app
        .post(
            "/v1/invitations/accept",
            &invitee.token,
            json!({"token": token}),
        )
        .await;
    assert_limit(&resp, "seats", 1, 2, "free");
    // At the limit exactly, the pending seat becomes a member.
    app.sql_superuser()
        .await
        .execute(
            "update app.plan_limits set included = 2 where plan_id = 'free' and meter = 'seats'",
            &[],
        )
        .await
        .unwrap();
    app.post(
        "/v1/invitations/accept",
        &invitee.token,
        json!({"token": token}),
    )
    .await
    .assert_status(200);
}

#[tokio::test]
async fn api_keys_count_while_live() {
    let app = spawn_app().await;
    let user = app.signup("Keys").await;
    app.set_plan(user.org_id, "free").await; // 10 keys
    let path = format!("/v1/orgs/{}/api-keys", user.org_id);
    let mut first = None;
    for i in 0..10 {
        let resp = app
            .post(&path, &user.token, json!({"name": format!("k{i}")}))
            .await;
        first.get_or_insert(
            resp.assert_status(201)["api_key"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_limit(
        &app.post(&path, &user.token, json!({"name": "k10"})).await,
        "api_keys",
        10,
        10,
        "free",
    );
    app.delete(&format!("{path}/{}", first.unwrap()), &user.token)
        .await
        .assert_status(204);
    app.post(&path, &user.token, json!({"name": "k10"}))
        .await
        .assert_status(201);
}

#[tokio::test]
async fn a_feature_the_plan_lacks_is_403_plan_feature_unavailable() {
    let app = spawn_app().await;
    let user = app.signup("Feat").await;
    app.set_plan(user.org_id, "free").await;
    let body = json!({"key": "tokens", "name": "Tokens", "aggregation": "sum"});
    let path = format!("/v1/orgs/{}/meters", user.org_id);
    let resp = app.post(&path, &user.token, body.clone()).await;
    resp.assert_problem(403, "plan_feature_unavailable");
    assert_eq!(resp.body["feature"], "custom_meters");
    assert_eq!(resp.body["plan"], "free");
    let resp = app
        .post(
            &format!("/v1/orgs/{}/usage-events", user.org_id),
            &user.token,
            json!({"events": [{"id": "e1", "meter": "tokens", "value": 1, "timestamp": chrono::Utc::now()}]}),
        )
        .await;
    resp.assert_problem(403, "plan_feature_unavailable");
    app.set_plan(user.org_id, "pro").await;
    app.post(&path, &user.token, body).await.assert_status(201);
}

#[tokio::test]
async fn the_plan_lowers_the_rate_limit_under_the_servers_ceiling() {
    let app = spawn_app().await; // server limit: 1,000,000 per minute
    let user = app.signup("Rate").await;
    let path = format!("/v1/orgs/{}/projects", user.org_id);
    let policy = |r: &TestResponse| {
        r.headers
            .get("ratelimit-policy")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let resp = app.get(&path, &user.token).await;
    assert_eq!(
        policy(&resp),
        "\"user\";q=1000000;w=60",
        "enterprise: the server's limit"
    );
    app.set_plan(user.org_id, "free").await;
    let resp = app.get(&path, &user.token).await;
    assert_eq!(policy(&resp), "\"user\";q=600;w=60");
    // A DBA's plan of 2 per minute: the third request is refused.
    let su = app.sql_superuser().await;
    su.execute(
        "update app.plans set requests_per_minute = 2 where id = 'free'",
        &[],
    )
    .await
    .unwrap();
    su.execute("delete from app.rate_limits", &[])
        .await
        .unwrap();
    app.get(&path, &user.token).await.assert_status(200);
    app.get(&path, &user.token).await.assert_status(200);
    app.get(&path, &user.token)
        .await
        .assert_problem(429, "rate_limited");
}

#[tokio::test]
async fn palisade_orgs_set_plan_moves_an_org() {
    let app = spawn_app().await;
    let user = app.signup("Cli").await;
    let socket = cluster().socket_dir().display().to_string();
    let url = |role: &str| format!("postgresql://{role}@/{}?host={socket}", app.db_name);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(args)
            .env("DATABASE_URL", url(db::RUNTIME_LOGIN_ROLE))
            .env("DATABASE_OWNER_URL", url(db::OWNER_ROLE))
            .env("PALISADE_DATA_DIR", &app.data_dir.0)
            .output()
            .expect("run palisade")
    };
    let org = user.org_id.to_string();
    let out = run(&["orgs", "set-plan", &org, "pro"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("enterprise -> pro"));
    let resp = app.get(&format!("/v1/orgs/{org}/plan"), &user.token).await;
    assert_eq!(resp.assert_status(200)["plan"]["id"], "pro");
    let out = run(&["orgs", "set-plan", &org, "platinum"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no plan"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["orgs", "set-plan", "not-a-uuid", "pro"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn default_plan_setting_names_the_plan_new_orgs_start_on() {
    let app = spawn_app_with(settings(), limits()).await;
    let owner = app.sql_as(db::OWNER_ROLE).await;
    db::migrate::apply_default_plan(&owner, Some("pro"))
        .await
        .unwrap();
    let user = app.signup("Defaults").await;
    let resp = app
        .get(&format!("/v1/orgs/{}/plan", user.org_id), &user.token)
        .await;
    assert_eq!(resp.assert_status(200)["plan"]["id"], "pro");
    let err = db::migrate::apply_default_plan(&owner, Some("platinum"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no such plan"), "{err}");
    let defaults: Vec<String> = owner
        .query("select id from app.plans where is_default", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(defaults, ["pro"]);
}
