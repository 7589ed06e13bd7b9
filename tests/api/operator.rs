//! The operator CLI (issue 16): the real binary, run as the schema owner against the
//! test's database, and its effects proven through the HTTP API.

use palisade::db::{self, Lane};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    fixtures::{audit_rows, verify_chain},
    helpers::{PASSWORD, Signup, TestApp, TestResponse, cluster, spawn_app},
};

/// What one run of `palisade` gave: its exit status, stdout and stderr.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Exit status 0; stdout parsed as the one JSON document it must be.
    #[track_caller]
    fn json(&self) -> Value {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}: stdout is not one JSON document: {}", self.stdout))
    }

    /// Exit status 0; stdout as text.
    #[track_caller]
    fn text(&self) -> &str {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        &self.stdout
    }
}

/// `palisade <args>` against the test's database: the owner by `DATABASE_OWNER_URL`.
async fn palisade(app: &TestApp, args: &[&str]) -> Run {
    let socket = cluster().socket_dir().display().to_string();
    let url = |role: &str| format!("postgresql://{role}@/{}?host={socket}", app.db_name);
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade"));
    command
        .args(args)
        .env("DATABASE_URL", url(db::RUNTIME_LOGIN_ROLE))
        .env("DATABASE_OWNER_URL", url(db::OWNER_ROLE))
        .env("PALISADE_DATA_DIR", &app.data_dir.0)
        .env("RUST_LOG", "warn");
    for var in [
        "DATABASE_AUTH_URL",
        "DATABASE_WORKER_URL",
        "PALISADE_ENV",
        "LOG_FORMAT",
    ] {
        command.env_remove(var);
    }
    let out = command.output().await.expect("run the palisade binary");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn login_body(app: &TestApp, email: &str) -> TestResponse {
    app.login(email, PASSWORD).await
}

async fn refresh(app: &TestApp, refresh_token: &str) -> TestResponse {
    app.request(
        Method::POST,
        "/v1/auth/refresh",
        None,
        Some(json!({ "refresh_token": refresh_token })),
    )
    .await
}

async fn with_key(app: &TestApp, path: &str, key: &str) -> TestResponse {
    app.send(
        app.http
            .get(format!("{}{path}", app.base))
            .header("x-api-key", key),
    )
    .await
}

/// A second sign-in of `who`: its refresh token.
async fn refresh_token_of(app: &TestApp, who: &Signup) -> String {
    login_body(app, &who.email).await.assert_status(200)["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn users_disable_stops_sign_in_sessions_and_keys_until_enable() {
    let app = spawn_app().await;
    let user = app.signup("Disabled").await;
    let refresh_token = refresh_token_of(&app, &user).await;
    let key = app
        .post(
            &format!("/v1/orgs/{}/api-keys", user.org_id),
            &user.token,
            json!({"name": "ci", "role": "member"}),
        )
        .await
        .assert_status(201)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let projects = format!("/v1/orgs/{}/projects", user.org_id);
    with_key(&app, &projects, &key).await.assert_status(200);

    let id = user.user_id.to_string();
    let shown = palisade(&app, &["users", "show", &user.email, "--format", "json"])
        .await
        .json();
    assert_eq!(shown["id"], id);
    assert_eq!(shown["email"], user.email);
    assert_eq!(shown["verified"], false);
    assert_eq!(shown["disabled"], false);
    assert_eq!(shown["live_sessions"], 2);
    assert_eq!(shown["orgs"][0]["id"], user.org_id.to_string());
    assert_eq!(shown["orgs"][0]["role"], "owner");
    assert_eq!(shown["api_keys"][0]["status"], "active");
    assert_eq!(shown["api_keys"][0]["name"], "ci");

    let out = palisade(&app, &["users", "disable", &id]).await;
    assert!(
        out.text().starts_with(&format!("disabled {}", user.email)),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("2 live session(s) revoked"),
        "{}",
        out.stdout
    );

    // Its access token dies on the next request, its refresh token too, sign-in is refused
    // (both sign-in operations), and its key is refused while it is disabled.
    app.get("/v1/auth/me", &user.token)
        .await
        .assert_problem(401, "session_revoked");
    login_body(&app, &user.email)
        .await
        .assert_problem(403, "account_disabled");
    app.send(app.http.post(format!("{}/v1/auth/token", app.base)).form(&[
        ("grant_type", "password"),
        ("username", user.email.as_str()),
        ("password", PASSWORD),
    ]))
    .await
    .assert_problem(403, "account_disabled");
    refresh(&app, &refresh_token)
        .await
        .assert_problem(403, "account_disabled");
    with_key(&app, &projects, &key)
        .await
        .assert_problem(401, "api_key_creator_disabled");
    // A wrong password still gets the answer of a wrong password: disabled is told only
    // to whoever knows the password.
    app.login(&user.email, "not the password at all")
        .await
        .assert_problem(401, "invalid_credentials");

    let shown = palisade(&app, &["users", "show", &id, "--format", "json"])
        .await
        .json();
    assert_eq!(shown["disabled"], true);
    assert!(shown["disabled_at"].is_string());
    assert_eq!(shown["live_sessions"], 0);
    assert_eq!(shown["api_keys"][0]["status"], "suspended");
    let again = palisade(&app, &["users", "disable", &id, "--format", "json"])
        .await
        .json();
    assert_eq!(again["changed"], false);
    assert_eq!(again["disabled"], true);

    // In the account's chain and its org's, by the system, via the CLI; once.
    let su = app.sql_superuser().await;
    for chain in [user.user_id, user.org_id] {
        let rows = audit_rows(&su, chain, "user.disabled").await;
        assert_eq!(rows.len(), 1, "chain {chain}");
        assert_eq!(rows[0].actor_type, "system");
        assert_eq!(rows[0].metadata["via"], "cli");
        assert_eq!(rows[0].metadata["sessions_revoked"], 2);
        assert_eq!(rows[0].targets[0]["id"], id);
        assert_eq!(verify_chain(&su, chain).await, None);
    }

    let enabled = palisade(&app, &["users", "enable", &user.email, "--format", "json"])
        .await
        .json();
    assert_eq!(enabled["changed"], true);
    assert_eq!(enabled["disabled"], false);
    let token = login_body(&app, &user.email).await.assert_status(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.get("/v1/auth/me", &token).await.assert_status(200);
    with_key(&app, &projects, &key).await.assert_status(200);
    // A DBA who sets disabled_at by hand suspends the account's keys as well (a trigger
    // keeps the key's own copy, app.api_keys.creator_disabled); clearing it restores them.
    for (disabled, status) in [(true, 401), (false, 200)] {
        su.execute(
            "update app.users set disabled_at = case when $2 then now() end where id = $1",
            &[&user.user_id, &disabled],
        )
        .await
        .unwrap();
        let answer = with_key(&app, &projects, &key).await;
        if disabled {
            answer.assert_problem(status, "api_key_creator_disabled");
        } else {
            answer.assert_status(status);
        }
    }
    // Its old sessions stay revoked.
    app.get("/v1/auth/me", &user.token)
        .await
        .assert_problem(401, "session_revoked");
    assert_eq!(audit_rows(&su, user.user_id, "user.enabled").await.len(), 1);
    let out = palisade(&app, &["users", "enable", &id]).await;
    assert!(out.text().contains("not disabled"), "{}", out.stdout);
}

#[tokio::test]
async fn sessions_revoke_signs_the_account_out_everywhere() {
    let app = spawn_app().await;
    let user = app.signup("Revoked").await;
    let refresh_token = refresh_token_of(&app, &user).await;
    let bystander = app.signup("Bystander").await;

    let out = palisade(
        &app,
        &[
            "sessions",
            "revoke",
            "--user",
            &user.email,
            "--format",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(out["sessions_revoked"], 2);
    assert_eq!(out["user_id"], user.user_id.to_string());
    app.get("/v1/auth/me", &user.token)
        .await
        .assert_problem(401, "session_revoked");
    refresh(&app, &refresh_token)
        .await
        .assert_problem(401, "invalid_refresh_token");
    // Only that account, and it may sign in again.
    app.get("/v1/auth/me", &bystander.token)
        .await
        .assert_status(200);
    login_body(&app, &user.email).await.assert_status(200);

    let out = palisade(
        &app,
        &[
            "sessions",
            "revoke",
            "--user",
            &bystander.user_id.to_string(),
        ],
    )
    .await;
    assert!(
        out.text().starts_with("revoked 1 live session(s) of"),
        "{}",
        out.stdout
    );
    app.get("/v1/auth/me", &bystander.token)
        .await
        .assert_problem(401, "session_revoked");
    let su = app.sql_superuser().await;
    let rows = audit_rows(&su, user.user_id, "session.all_revoked").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].actor_type, "system");
    assert_eq!(
        rows[0].metadata,
        json!({"via": "cli", "sessions_revoked": 2})
    );
}

#[tokio::test]
async fn users_reset_password_sends_the_forgot_password_email() {
    let app = spawn_app().await;
    let user = app.signup("Reset").await;

    let out = palisade(
        &app,
        &[
            "users",
            "reset-password",
            &user.email,
            "--revoke-sessions",
            "--format",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(out["reset_email"], "queued");
    assert_eq!(out["sessions_revoked"], 1);
    app.get("/v1/auth/me", &user.token)
        .await
        .assert_problem(401, "session_revoked");
    // The worker sends it as it sends the forgot-password flow's: a working reset link.
    assert_eq!(app.run_worker().await, 1);
    let email = app.last_email(&user.email, "password_reset").await;
    let token = email.token();
    assert!(!out.to_string().contains(&token));
    app.request(
        Method::POST,
        "/v1/auth/password-reset/confirm",
        None,
        Some(json!({"token": token, "new_password": "an entirely new passphrase 42"})),
    )
    .await
    .assert_status(204);
    app.login(&user.email, "an entirely new passphrase 42")
        .await
        .assert_status(200);
    let su = app.sql_superuser().await;
    let rows = audit_rows(&su, user.user_id, "user.password_reset_queued").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].actor_type, "system");
    assert_eq!(
        rows[0].metadata,
        json!({"via": "cli", "sessions_revoked": 1})
    );

    // Text, without --revoke-sessions: the session lives on.
    let other = app.signup("Reset2").await;
    let out = palisade(
        &app,
        &["users", "reset-password", &other.user_id.to_string()],
    )
    .await;
    assert!(
        out.text().contains("password-reset email queued for"),
        "{}",
        out.stdout
    );
    app.get("/v1/auth/me", &other.token)
        .await
        .assert_status(200);
    assert_eq!(app.run_worker().await, 1);
    app.last_email(&other.email, "password_reset").await;
}

#[tokio::test]
async fn outbox_status_shows_failures_and_retry_makes_them_due() {
    let app = spawn_app().await;
    let user = app.signup("Outbox").await;
    let other = app.signup("Outbox2").await;
    let su = app.sql_superuser().await;
    // Both verification emails failed: one given up after 10 attempts, one waiting an hour.
    let failed = |to: &str, attempts: i32| {
        let (su, to) = (&su, to.to_owned());
        async move {
            su.query_one(
                "update app.email_outbox
                    set attempts = $2, last_error = 'smtp: 554 mailbox unavailable',
                        next_attempt_at = now() + interval '1 hour'
                  where to_email = $1 returning id",
                &[&to, &attempts],
            )
            .await
            .unwrap()
            .get::<_, Uuid>(0)
        }
    };
    let gave_up = failed(&user.email, 10).await;
    let retrying = failed(&other.email, 3).await;

    let status = palisade(&app, &["outbox", "status", "--format", "json"])
        .await
        .json();
    assert_eq!(status["counts"]["failed"], 1, "{status}");
    assert_eq!(status["counts"]["retrying"], 1, "{status}");
    let failures = status["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2);
    let first = failures
        .iter()
        .find(|f| f["id"] == gave_up.to_string())
        .expect("the given-up email is listed");
    assert_eq!(first["gave_up"], true);
    assert_eq!(first["template"], "verify_email");
    assert_eq!(first["last_error"], "smtp: 554 mailbox unavailable");
    assert!(first.get("body").is_none() && first.get("body_sealed").is_none());
    let text = palisade(&app, &["outbox", "status"]).await;
    assert!(
        text.text().contains("1 failed (gave up)"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("smtp: 554 mailbox unavailable"));

    let out = palisade(
        &app,
        &[
            "outbox",
            "retry",
            "--id",
            &gave_up.to_string(),
            "--format",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(out["retried"], 1);
    assert_eq!(out["emails"][0]["id"], gave_up.to_string());
    // Due now, with a fresh budget: the worker's next claim hands it out; the other one
    // still waits for its hour.
    let worker = app.sql_lane(Lane::Jobs).await;
    let claimed: Vec<Uuid> = worker
        .query(
            "select id from app.claim_emails(100, interval '1 minute')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(claimed, [gave_up]);
    let rows = audit_rows(&su, user.user_id, "email.retried").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].metadata["via"], "cli");

    let out = palisade(&app, &["outbox", "retry", "--all-failed"]).await;
    assert!(
        out.text().contains("failed email(s) due again"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(&retrying.to_string()));
    let due: bool = su
        .query_one(
            "select next_attempt_at <= now() and attempts = 0 from app.email_outbox where id = $1",
            &[&retrying],
        )
        .await
        .unwrap()
        .get(0);
    assert!(due);
}

#[tokio::test]
async fn orgs_list_show_and_set_plan() {
    let app = spawn_app().await;
    let user = app.signup("Orgs").await;
    app.create_project(&user, user.org_id, "p1").await;
    let org = user.org_id.to_string();

    let list = palisade(&app, &["orgs", "list", "--format", "json"])
        .await
        .json();
    let item = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == org)
        .expect("the org is listed");
    assert_eq!(item["members"], 1);
    assert_eq!(item["personal"], true);
    assert!(item["plan"].is_string());
    let text = palisade(&app, &["orgs", "list", "--limit", "5"]).await;
    assert!(text.text().contains(&org), "{}", text.stdout);

    let out = palisade(&app, &["orgs", "set-plan", &org, "pro", "--format", "json"])
        .await
        .json();
    assert_eq!(out["to"], "pro");
    assert_eq!(out["org_id"], org);
    let shown = palisade(&app, &["orgs", "show", &org, "--format", "json"])
        .await
        .json();
    assert_eq!(shown["plan"]["id"], "pro");
    assert_eq!(shown["plan"]["status"], "active");
    assert_eq!(shown["projects"], 1);
    assert_eq!(shown["members"]["total"], 1);
    assert_eq!(shown["members"]["by_role"]["owner"][0]["email"], user.email);
    let text = palisade(&app, &["orgs", "show", &org]).await;
    assert!(
        text.text().contains("plan      pro (active)"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains(&format!("owner   {}", user.email)));
    let resp = app.get(&format!("/v1/orgs/{org}/plan"), &user.token).await;
    assert_eq!(resp.assert_status(200)["plan"]["id"], "pro");
}

#[tokio::test]
async fn users_list_filters_and_limits() {
    let app = spawn_app().await;
    let a = app.signup("Listed").await;
    let b = app.signup("Listed").await;
    let needle = a.email.split('@').next().unwrap().to_uppercase();
    let list = palisade(
        &app,
        &[
            "users",
            "list",
            "--email-contains",
            &needle,
            "--format",
            "json",
        ],
    )
    .await
    .json();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["email"], a.email);
    assert_eq!(items[0]["disabled"], false);
    assert_eq!(items[0]["orgs"], 1);
    let text = palisade(&app, &["users", "list", "--email-contains", "listed-"]).await;
    assert!(text.text().contains(&a.email) && text.stdout.contains(&b.email));
    assert!(text.stdout.contains("2 user(s)"), "{}", text.stdout);
    let one = palisade(&app, &["users", "list", "--limit", "1", "--format", "json"])
        .await
        .json();
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn unknown_targets_exit_1_and_bad_usage_exit_2() {
    let app = spawn_app().await;
    let nobody = Uuid::new_v4().to_string();
    for args in [
        &["users", "show", &nobody][..],
        &["users", "disable", "nobody@example.com"],
        &["users", "enable", &nobody],
        &["users", "reset-password", &nobody],
        &["sessions", "revoke", "--user", &nobody],
        &["orgs", "show", &nobody],
        &["orgs", "set-plan", &nobody, "pro"],
        &["outbox", "retry", "--id", &nobody],
    ] {
        let out = palisade(&app, args).await;
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("palisade: no ") || out.stderr.contains("not found"),
            "{args:?}: {}",
            out.stderr
        );
        let mut json_args = args.to_vec();
        json_args.extend(["--format", "json"]);
        let out = palisade(&app, &json_args).await;
        assert_eq!(out.code, Some(1), "{args:?}");
        let body: Value = serde_json::from_str(&out.stdout).expect("a JSON error document");
        assert_eq!(body["error"], "not_found", "{args:?}");
    }
    for args in [
        &["users"][..],
        &["users", "show"],
        &["users", "show", "not-an-id"],
        &["users", "frobnicate", "x"],
        &["users", "list", "--limit", "0"],
        &["users", "list", "--format", "yaml"],
        &["sessions", "revoke"],
        &["outbox", "retry"],
        &["orgs", "set-plan", "not-a-uuid", "pro"],
    ] {
        let out = palisade(&app, args).await;
        assert_eq!(out.code, Some(2), "{args:?}");
        assert!(out.stderr.contains("usage: palisade"), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // The usage text lists every command.
    let help = palisade(&app, &["help"]).await;
    for command in [
        "serve",
        "migrate",
        "audit ",
        "audit-log verify",
        "storage reconcile",
        "openapi",
        "users list",
        "users show",
        "users disable",
        "users enable",
        "users reset-password",
        "orgs list",
        "orgs show",
        "orgs set-plan",
        "sessions revoke",
        "outbox status",
        "outbox retry",
    ] {
        assert!(help.text().contains(command), "{command}: {}", help.stdout);
    }
}
