//! The HTTP contract at its edges: each finding of the API review as a test that failed
//! before its fix (keep-alive after early rejections, out-of-era cursors, invalid text,
//! strict JSON types, 414, path ids, `Allow` on 405, `WWW-Authenticate` codes, the
//! password-reset request's constant work, tokens from the future), and the failure
//! paths a client should never see internals of (a 500, a timeout, `/ready` not ready).

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::Method;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::helpers::{PASSWORD, limits, settings, spawn_app, spawn_app_with};

/// A 401 (bad token) or 415 (wrong media type) can be decided before the body is read;
/// the connection must stay usable for the next request all the same.
#[tokio::test]
async fn keep_alive_survives_early_rejections() {
    let app = spawn_app().await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = r#"{"name":"a project that never gets created"}"#;
    let padding = "x".repeat(4096);
    for round in 0..10 {
        let early = [
            format!(
                "POST /v1/orgs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer not-a-token\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            format!(
                "POST /v1/auth/register HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\n\r\n{padding}",
                padding.len()
            ),
        ];
        for (request, expected) in early.iter().zip([401, 415]) {
            stream.write_all(request.as_bytes()).await.unwrap();
            let (status, head, _) = crate::helpers::read_response(&mut stream).await;
            assert_eq!(status, expected, "round {round}");
            assert!(!head.to_lowercase().contains("connection: close"), "{head}");
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
                .await
                .unwrap();
            let (status, _, health) = crate::helpers::read_response(&mut stream).await;
            assert_eq!(
                (status, health.contains("ok")),
                (200, true),
                "round {round}"
            );
        }
    }
}

/// Cursors are opaque but decodable; one holding a timestamp PostgreSQL cannot store
/// (before 4713 BC) used to be a 500 on every list endpoint.
#[tokio::test]
async fn cursors_outside_the_era_are_400_on_every_list() {
    let app = spawn_app().await;
    let a = app.signup("Cursor").await;
    for micros in [
        -300_000_000_000_000_000i64,
        -62_167_219_200_000_000,
        i64::MAX,
    ] {
        let cursor = URL_SAFE_NO_PAD.encode(format!("{micros}|{}", Uuid::new_v4()));
        for path in [
            "/v1/orgs".to_owned(),
            format!("/v1/orgs/{}/projects", a.org_id),
            format!("/v1/orgs/{}/members", a.org_id),
            format!("/v1/orgs/{}/invitations", a.org_id),
        ] {
            app.get(&format!("{path}?cursor={cursor}"), &a.token)
                .await
                .assert_problem(400, "invalid_cursor");
        }
    }
    for limit in ["0", "101", "-1", "x"] {
        app.get(&format!("/v1/orgs?limit={limit}"), &a.token)
            .await
            .assert_problem(400, "invalid_parameter");
    }
}

/// Control characters (a NUL byte above all) are refused with a field error before
/// they reach PostgreSQL, whose message would name internals.
#[tokio::test]
async fn invalid_text_is_422_naming_the_field() {
    let app = spawn_app().await;
    let a = app.signup("Text").await;
    let login = app.login("ada\u{0}@example.com", PASSWORD).await;
    login.assert_problem(422, "validation_failed");
    assert_eq!(login.body["errors"][0]["field"], "email");
    assert!(!login.body.to_string().contains("UTF8"), "{}", login.body);
    let reg = app
        .register(
            &format!("n{}@example.com", Uuid::new_v4().simple()),
            PASSWORD,
            "Ada\u{0}",
        )
        .await;
    reg.assert_problem(422, "validation_failed");
    assert_eq!(reg.body["errors"][0]["field"], "name");
    let project = app
        .post(
            &format!("/v1/orgs/{}/projects", a.org_id),
            &a.token,
            json!({"name": "ok", "description": "bell \u{7}"}),
        )
        .await;
    project.assert_problem(422, "validation_failed");
    assert_eq!(project.body["errors"][0]["field"], "description");
    // Line breaks and tabs are fine in a description, not in a name.
    app.post(
        &format!("/v1/orgs/{}/projects", a.org_id),
        &a.token,
        json!({"name": "fine", "description": "line one\n\tline two"}),
    )
    .await
    .assert_status(201);
    app.post(
        &format!("/v1/orgs/{}/projects", a.org_id),
        &a.token,
        json!({"name": "two\nlines"}),
    )
    .await
    .assert_problem(422, "validation_failed");
}

/// A boolean is not a string, a number is not a password.
#[tokio::test]
async fn json_types_are_strict() {
    let app = spawn_app().await;
    let a = app.signup("Types").await;
    let project = app
        .post(
            &format!("/v1/orgs/{}/projects", a.org_id),
            &a.token,
            json!({"name": false}),
        )
        .await;
    project.assert_problem(422, "validation_failed");
    assert_eq!(
        project.body["errors"],
        json!([{"field": "name", "code": "invalid_type", "message": "must be a string, not a boolean"}])
    );
    let reg = app
        .request(
            Method::POST,
            "/v1/auth/register",
            None,
            Some(json!({"email": "num@example.com", "password": 1234567890123u64, "name": "N"})),
        )
        .await;
    reg.assert_problem(422, "validation_failed");
    assert_eq!(reg.body["errors"][0]["field"], "password");
    let n: i64 = app
        .sql_superuser()
        .await
        .query_one(
            "select (select count(*) from app.projects) + (select count(*) from app.users where email = 'num@example.com')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing was created from refused bodies");
}

#[tokio::test]
async fn framework_answers_name_no_internals_and_carry_their_headers() {
    let app = spawn_app().await;
    let a = app.signup("Edges").await;
    // 414 as problem+json.
    let long = app
        .request(
            Method::GET,
            &format!("/health?q={}", "x".repeat(9000)),
            None,
            None,
        )
        .await;
    long.assert_problem(414, "uri_too_long");
    // A malformed id in the path: 404, and no internal parameter name.
    let bad_id = app.get("/v1/orgs/not-a-uuid", &a.token).await;
    bad_id.assert_problem(404, "not_found");
    assert!(
        !bad_id.body.to_string().contains("param"),
        "{}",
        bad_id.body
    );
    // 405 lists what the path allows.
    for (method, path, allowed) in [
        (Method::PUT, "/v1/orgs", "GET, POST"),
        (Method::DELETE, "/v1/auth/login", "POST"),
        (
            Method::POST,
            "/v1/orgs/00000000-0000-4000-8000-000000000000",
            "DELETE, GET, PATCH",
        ),
    ] {
        let resp = app
            .request(method.clone(), path, Some(&a.token), None)
            .await;
        resp.assert_problem(405, "method_not_allowed");
        assert_eq!(
            resp.headers.get("allow").unwrap(),
            allowed,
            "{method} {path}"
        );
    }
    // Every problem carries `errors`, empty unless it is a validation failure.
    assert_eq!(bad_id.body["errors"], json!([]));
}

/// RFC 6750: `error="invalid_token"` only for a presented, refused access token.
#[tokio::test]
async fn www_authenticate_says_what_went_wrong() {
    let app = spawn_app().await;
    let a = app.signup("Challenge").await;
    let challenge = |r: &crate::helpers::TestResponse| {
        r.headers
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let missing = app.request(Method::GET, "/v1/auth/me", None, None).await;
    missing.assert_problem(401, "unauthorized");
    assert_eq!(challenge(&missing), "Bearer realm=\"palisade\"");
    let forged = app.get("/v1/auth/me", "not.a.jwt").await;
    forged.assert_problem(401, "invalid_token");
    assert!(challenge(&forged).contains("error=\"invalid_token\""));
    let wrong = app.login(&a.email, "not the password").await;
    wrong.assert_problem(401, "invalid_credentials");
    assert_eq!(challenge(&wrong), "Bearer realm=\"palisade\"");
    app.post("/v1/auth/logout", &a.token, json!({}))
        .await
        .assert_status(204);
    let revoked = app.get("/v1/auth/me", &a.token).await;
    revoked.assert_problem(401, "session_revoked");
    assert!(challenge(&revoked).contains("error=\"invalid_token\""));
}

/// The reset request does one insert whatever the address: known or unknown, nothing
/// else happens until the worker runs, so the answer's timing cannot tell them apart.
#[tokio::test]
async fn password_reset_requests_do_the_same_work_for_every_address() {
    let app = spawn_app().await;
    let a = app.signup("Reset").await;
    let su = app.sql_superuser().await;
    let state = || async {
        su.query_one(
            "select (select count(*) from app.password_reset_requests),
                    (select count(*) from app.user_tokens where purpose = 'password_reset'),
                    (select count(*) from app.email_outbox where template = 'password_reset')",
            &[],
        )
        .await
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2)))
        .unwrap()
    };
    let request = |email: String| {
        app.request(
            Method::POST,
            "/v1/auth/password-reset/request",
            None,
            Some(json!({"email": email})),
        )
    };
    request(a.email.clone()).await.assert_status(202);
    assert_eq!(state().await, (1, 0, 0));
    request("nobody@example.com".into())
        .await
        .assert_status(202);
    assert_eq!(state().await, (2, 0, 0));
    assert_eq!(app.run_worker().await, 1);
    assert_eq!(state().await, (0, 1, 1));
}

/// A token issued in the future (or not valid yet) is refused like a forged one.
#[tokio::test]
async fn tokens_issued_in_the_future_are_401() {
    let mut s = settings();
    let secret = format!("known-secret-{}", Uuid::new_v4());
    s.jwt_secret = Some(secret.clone().into());
    let app = spawn_app_with(s, limits()).await;
    let a = app.signup("Future").await;
    let claims = app.state.jwt.verify(&a.token).unwrap();
    let now = chrono::Utc::now().timestamp();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("primary".into());
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    for (iat, nbf) in [(now + 3600, None), (now, Some(now + 3600))] {
        let mut c = serde_json::to_value(&claims).unwrap();
        c["iat"] = json!(iat);
        c["exp"] = json!(now + 7200);
        if let Some(nbf) = nbf {
            c["nbf"] = json!(nbf);
        }
        let token = jsonwebtoken::encode(&header, &c, &key).unwrap();
        app.get("/v1/auth/me", &token)
            .await
            .assert_problem(401, "invalid_token");
    }
}

/// An unexpected database error is a 500 whose body says nothing of it; the request id
/// ties it to the log line with the cause.
#[tokio::test]
async fn a_500_carries_no_internals() {
    let app = spawn_app().await;
    let a = app.signup("Boom").await;
    app.sql_superuser()
        .await
        .batch_execute(
            "create function public.boom() returns trigger language plpgsql as
               $$ begin raise exception 'SECRET-INTERNAL-DETAIL in app.projects' using errcode = 'XX000'; end $$;
             create trigger boom before insert on app.projects for each row execute function public.boom();",
        )
        .await
        .unwrap();
    let resp = app
        .post(
            &format!("/v1/orgs/{}/projects", a.org_id),
            &a.token,
            json!({"name": "kaboom"}),
        )
        .await;
    resp.assert_problem(500, "internal_error");
    let text = resp.body.to_string();
    assert!(
        !text.contains("SECRET") && !text.contains("app.projects"),
        "{text}"
    );
    assert!(resp.headers.contains_key("x-request-id"));
}

/// A request that outlives REQUEST_TIMEOUT_SECONDS is cancelled: 503 `timeout` with
/// Retry-After, and its transaction never commits.
#[tokio::test]
async fn a_slow_request_is_cancelled_and_rolled_back() {
    let mut l = limits();
    l.request_timeout = Duration::from_secs(1);
    let app = spawn_app_with(settings(), l).await;
    let a = app.signup("Slow").await;
    let su = app.sql_superuser().await;
    su.batch_execute(
        "create function public.slow() returns trigger language plpgsql as
           $$ begin perform pg_sleep(3); return new; end $$;
         create trigger slow before insert on app.projects for each row execute function public.slow();",
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let resp = app
        .post(
            &format!("/v1/orgs/{}/projects", a.org_id),
            &a.token,
            json!({"name": "too slow"}),
        )
        .await;
    resp.assert_problem(503, "timeout");
    assert!(resp.headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered before the statement ended"
    );
    // Once PostgreSQL has finished with the abandoned statement, nothing was committed.
    loop {
        let busy: i64 = su
            .query_one(
                "select count(*) from pg_stat_activity where datname = current_database()
                   and pid <> pg_backend_pid() and state <> 'idle'
                   and query like '%insert into app.projects%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n: i64 = su
        .query_one("select count(*) from app.projects", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

/// `/ready` answers 503 `not_ready` while the schema is older than the build.
#[tokio::test]
async fn ready_is_503_while_migrations_are_behind() {
    let app = spawn_app().await;
    app.request(Method::GET, "/ready", None, None)
        .await
        .assert_status(200);
    app.sql_superuser()
        .await
        .execute(
            "delete from public.refinery_schema_history where version = (select max(version) from public.refinery_schema_history)",
            &[],
        )
        .await
        .unwrap();
    let resp = app.request(Method::GET, "/ready", None, None).await;
    resp.assert_problem(503, "not_ready");
    assert!(resp.headers.contains_key("retry-after"));
}

/// Logs are for machines too: no ANSI colour codes when stderr is not a terminal, and
/// one event per line.
#[test]
fn logs_have_no_ansi_escapes_when_not_a_terminal() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("serve")
        .env("PALISADE_ENV", "production")
        .env("S3_BUCKET", "palisade")
        .env("S3_ACCESS_KEY_ID", "unused")
        .env("S3_SECRET_ACCESS_KEY", "unused")
        .env_remove("JWT_SECRET")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}
