//! Health, readiness, docs, the spec, and the problem+json shape of framework errors.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{limits, settings, spawn_app, spawn_app_with};

#[tokio::test]
async fn health_and_ready() {
    let app = spawn_app().await;
    let health = app.request(Method::GET, "/health", None, None).await;
    assert_eq!(health.assert_status(200)["status"], "ok");
    let ready = app.request(Method::GET, "/ready", None, None).await;
    let body = ready.assert_status(200);
    assert_eq!(body["status"], "ready");
    assert_eq!(
        body["schema_version"],
        palisade::db::migrate::latest_version()
    );
}

#[tokio::test]
async fn ready_is_503_when_the_database_is_unreachable() {
    let mut s = settings();
    s.pool_timeout = std::time::Duration::from_millis(500);
    let mut connections = crate::helpers::connections("no_such_db");
    connections
        .request
        .connect_timeout(std::time::Duration::from_millis(500));
    let state = palisade::state::AppState::new(&s, &connections).unwrap();
    let acceptor =
        poem::listener::Listener::into_acceptor(poem::listener::TcpListener::bind("127.0.0.1:0"))
            .await
            .unwrap();
    let addr = poem::listener::Acceptor::local_addr(&acceptor)[0]
        .as_socket_addr()
        .copied()
        .unwrap();
    tokio::spawn(
        poem::Server::new_with_acceptor(acceptor).run(palisade::startup::app(state, limits())),
    );
    let resp = reqwest::get(format!("http://{addr}/ready")).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "service_unavailable");
    // /health does not touch the database.
    let health = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn request_id_is_returned_and_propagated() {
    let app = spawn_app().await;
    let resp = app.request(Method::GET, "/health", None, None).await;
    let generated = resp
        .headers
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok());
    let given = app
        .send(
            app.http
                .get(format!("{}/health", app.base))
                .header("x-request-id", "abc-123"),
        )
        .await;
    assert_eq!(given.headers.get("x-request-id").unwrap(), "abc-123");
    let hostile = app
        .send(
            app.http
                .get(format!("{}/health", app.base))
                .header("x-request-id", "a b\"<script>"),
        )
        .await;
    assert_ne!(
        hostile.headers.get("x-request-id").unwrap(),
        "a b\"<script>"
    );
}

#[tokio::test]
async fn framework_errors_are_problem_json() {
    let app = spawn_app().await;
    app.request(Method::GET, "/v1/nope", None, None)
        .await
        .assert_problem(404, "not_found");
    app.request(Method::PUT, "/health", None, None)
        .await
        .assert_problem(405, "method_not_allowed");
    app.request(Method::GET, "/v1/auth/me", None, None)
        .await
        .assert_problem(401, "unauthorized");
    let bad_json = app
        .send(
            app.http
                .post(format!("{}/v1/auth/register", app.base))
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    bad_json.assert_problem(400, "invalid_body");
    let wrong_type = app
        .send(
            app.http
                .post(format!("{}/v1/auth/register", app.base))
                .header("content-type", "text/plain")
                .body("hi"),
        )
        .await;
    wrong_type.assert_problem(415, "unsupported_media_type");
    let missing_field = app
        .request(
            Method::POST,
            "/v1/auth/register",
            None,
            Some(json!({"email": "a@b.co"})),
        )
        .await;
    missing_field.assert_problem(422, "validation_failed");
    assert_eq!(missing_field.body["errors"][0]["field"], "password");
    assert_eq!(missing_field.body["errors"][0]["code"], "required");
}

#[tokio::test]
async fn oversized_bodies_get_413_with_or_without_content_length() {
    let mut l = limits();
    l.max_body_bytes = 1024;
    let app = spawn_app_with(settings(), l).await;
    let big = json!({"email": "a@example.com", "password": "x".repeat(5000), "name": "A"});
    app.request(Method::POST, "/v1/auth/register", None, Some(big.clone()))
        .await
        .assert_problem(413, "payload_too_large");
    // Chunked (no Content-Length): cut at the limit, still a client error, never a 500.
    let stream = futures_stream(serde_json::to_vec(&big).unwrap());
    let chunked = app
        .send(
            app.http
                .post(format!("{}/v1/auth/register", app.base))
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(stream)),
        )
        .await;
    chunked.assert_problem(413, "payload_too_large");
    // The unread rest of the body makes the connection unusable: the server says so.
    assert_eq!(chunked.headers.get("connection").unwrap(), "close");
}

#[tokio::test]
async fn oversized_http2_bodies_without_length_are_cut() {
    let mut l = limits();
    l.max_body_bytes = 1024;
    let app = spawn_app_with(settings(), l).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    // Valid but for its size: read whole, it would create the account.
    let big = json!({"email": "h2@example.com", "password": crate::helpers::PASSWORD, "name": "H2",
                     "padding": "x".repeat(50_000)});
    let resp = app
        .send(
            h2.post(format!("{}/v1/auth/register", app.base))
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(futures_stream(
                    serde_json::to_vec(&big).unwrap(),
                ))),
        )
        .await;
    resp.assert_problem(413, "payload_too_large");
    // Nothing was created from the truncated body.
    let n: i64 = app
        .sql_superuser()
        .await
        .query_one("select count(*) from app.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

fn futures_stream(
    bytes: Vec<u8>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::iter(
        bytes
            .chunks(100)
            .map(|c| Ok(c.to_vec()))
            .collect::<Vec<_>>(),
    )
}

#[tokio::test]
async fn docs_and_spec_are_served() {
    let app = spawn_app().await;
    let docs = app
        .http
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
    let spec = app.request(Method::GET, "/openapi.json", None, None).await;
    let body = spec.assert_status(200);
    assert!(body["paths"]["/v1/orgs/{org_id}/projects"].is_object());
    let schemes = &body["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(
        schemes["oauth2Password"]["flows"]["password"]["tokenUrl"],
        "/v1/auth/token"
    );
}

/// The committed openapi.json must equal what the code generates.
/// Refresh it with: cargo run -q -- openapi > openapi.json
#[test]
fn committed_openapi_json_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"))
        .expect("openapi.json exists at the repository root");
    let generated = palisade::api::openapi_json();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi.json is stale: run `cargo run -q -- openapi > openapi.json` and commit it"
    );
}

/// Every operation has an operation id, a tag, a summary, and declares its errors as
/// problem+json; operations needing a token declare 401.
#[test]
fn every_operation_is_fully_described() {
    let spec: serde_json::Value = serde_json::from_str(&palisade::api::openapi_json()).unwrap();
    let mut count = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            count += 1;
            let name = format!("{method} {path}");
            assert!(op["operationId"].is_string(), "{name}: operationId");
            assert!(!op["tags"].as_array().unwrap().is_empty(), "{name}: tags");
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: summary"
            );
            let responses = op["responses"].as_object().unwrap();
            for (status, resp) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        resp["content"]["application/problem+json"].is_object(),
                        "{name} {status}: problem+json"
                    );
                }
            }
            if op.get("security").is_some() {
                assert!(responses.contains_key("401"), "{name}: declares 401");
            }
            if path.starts_with("/v1") {
                assert!(responses.contains_key("500"), "{name}: declares 500");
            }
        }
    }
    assert_eq!(
        count, 93,
        "operations in openapi.json (a new route: update this count)"
    );
}

/// Without configured secrets, development ones are generated once, mode 0600, in the
/// data directory: a test's own, never the repository's `.data`.
#[tokio::test]
async fn development_secrets_are_generated_in_the_data_directory() {
    use std::os::unix::fs::PermissionsExt;
    let mut s = settings();
    s.jwt_secret = None;
    s.master_key = None;
    let app = spawn_app_with(s, limits()).await;
    for name in ["jwt-secret", "master-key"] {
        let path = app.data_dir.0.join(name);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        assert!(std::fs::read_to_string(&path).unwrap().len() >= 32);
    }
    // And they work: a sign-up through the app round-trips its tokens.
    let user = app.signup("Dev").await;
    app.get("/v1/auth/me", &user.token).await.assert_status(200);
}

/// One HTTP/1.1 GET on a raw connection: the status, the response head and the body.
async fn raw_get(stream: &mut tokio::net::TcpStream, path: &str) -> (u16, String, String) {
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: palisade\r\n\r\n").as_bytes())
        .await
        .unwrap();
    crate::helpers::read_response(stream).await
}

/// A connection flood cannot grow the server without bound: at MAX_CONNECTIONS a new
/// connection is answered 503 `too_many_connections` and closed, the connections held
/// are served as before, and a slot freed is a slot given.
#[tokio::test]
async fn connections_beyond_max_connections_are_refused_with_a_problem() {
    use tokio::{io::AsyncReadExt, net::TcpStream};
    let mut s = settings();
    s.max_connections = 3;
    let app = spawn_app_with(s, limits()).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        let (status, _, _) = raw_get(&mut c, "/health").await;
        assert_eq!(status, 200);
        held.push(c);
    }
    // The fourth: a clear refusal, then the server closes the connection.
    let mut extra = TcpStream::connect(&addr).await.unwrap();
    let (status, head, body) = raw_get(&mut extra, "/health").await;
    assert_eq!(status, 503);
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    assert_eq!(header("content-type"), Some("application/problem+json"));
    assert_eq!(header("retry-after"), Some("1"));
    assert_eq!(header("connection"), Some("close"));
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["code"], "too_many_connections");
    assert_eq!(problem["status"], 503);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("MAX_CONNECTIONS")
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        extra.read_to_end(&mut rest),
    )
    .await;
    assert!(matches!(closed, Ok(Ok(0))), "closed after the refusal");
    // The held connections still answer, on the same sockets.
    for c in &mut held {
        let (status, _, _) = raw_get(c, "/health").await;
        assert_eq!(status, 200);
    }
    // Closing one frees its slot (the server notices the close asynchronously).
    drop(held.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        let (status, _, _) = raw_get(&mut c, "/health").await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            std::time::Instant::now() < deadline,
            "a closed connection's slot was never freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
