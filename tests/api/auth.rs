//! Registration, sign-in and the current user.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{PASSWORD, spawn_app};

#[tokio::test]
async fn register_login_me() {
    let app = spawn_app().await;
    let reg = app.register("Grace@Example.COM", PASSWORD, "Grace").await;
    let body = reg.assert_status(201);
    assert_eq!(
        body["user"]["email"], "grace@example.com",
        "email is normalized"
    );
    assert_eq!(body["user"]["email_verified"], false);
    assert!(body["user"].get("password").is_none() && body["user"].get("password_hash").is_none());
    let orgs = body["organizations"].as_array().unwrap();
    assert_eq!(orgs.len(), 1);
    assert_eq!(orgs[0]["personal"], true);
    assert_eq!(orgs[0]["role"], "owner");
    assert_eq!(orgs[0]["id"], body["user"]["current_org_id"]);

    let login = app.login("GRACE@example.com", PASSWORD).await;
    let tokens = login.assert_status(200);
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["expires_in"], 900);
    let token = tokens["access_token"].as_str().unwrap();

    let me = app.get("/v1/auth/me", token).await;
    let me = me.assert_status(200);
    assert_eq!(me["user"]["email"], "grace@example.com");
    assert_eq!(me["organizations"][0]["name"], "Grace");

    // The stored hash is argon2id with OWASP parameters, never the password.
    let db = app.sql_superuser().await;
    let hash: String = db
        .query_one(
            "select password_hash from app.users where email = 'grace@example.com'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(!hash.contains(PASSWORD));
}

#[tokio::test]
async fn oauth2_password_form_login_works() {
    let app = spawn_app().await;
    let user = app.signup("Form").await;
    let resp = app
        .send(app.http.post(format!("{}/v1/auth/token", app.base)).form(&[
            ("grant_type", "password"),
            ("username", user.email.as_str()),
            ("password", PASSWORD),
        ]))
        .await;
    let token = resp.assert_status(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.get("/v1/auth/me", &token).await.assert_status(200);
}

#[tokio::test]
async fn duplicate_email_is_409_and_concurrent_duplicates_create_one_account() {
    let app = spawn_app().await;
    app.register("dup@example.com", PASSWORD, "One")
        .await
        .assert_status(201);
    app.register("DUP@example.com", PASSWORD, "Two")
        .await
        .assert_problem(409, "email_taken");

    let (a, b) = tokio::join!(
        app.register("race@example.com", PASSWORD, "A"),
        app.register("race@example.com", PASSWORD, "B")
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    let db = app.sql_superuser().await;
    let n: i64 = db
        .query_one("select count(*) from app.orgs o join app.users u on u.id = o.created_by where u.email = 'race@example.com'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the losing registration left no personal org behind");
}

#[tokio::test]
async fn registration_validation_reports_every_field() {
    let app = spawn_app().await;
    let resp = app.register("not-an-email", "short", "").await;
    resp.assert_problem(422, "validation_failed");
    let mut fields: Vec<String> = resp.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["field"].as_str().unwrap(),
                e["code"].as_str().unwrap()
            )
        })
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "email:invalid_format",
            "name:required",
            "password:too_short"
        ]
    );
    let too_long = app
        .register("long@example.com", &"p".repeat(129), "Long")
        .await;
    too_long.assert_problem(422, "validation_failed");
    // Unicode passwords count characters, not bytes, and work end to end.
    let unicode = "密码密码密码密码密码🔐";
    app.register("uni@example.com", unicode, "Uni")
        .await
        .assert_status(201);
    app.login("uni@example.com", unicode)
        .await
        .assert_status(200);
    // Nothing was stored for the rejected attempts.
    let db = app.sql_superuser().await;
    let n: i64 = db
        .query_one("select count(*) from app.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_401() {
    let app = spawn_app().await;
    let user = app.signup("Eve").await;
    let wrong = app.login(&user.email, "wrong password here").await;
    let unknown = app.login("nobody@example.com", PASSWORD).await;
    wrong.assert_problem(401, "invalid_credentials");
    unknown.assert_problem(401, "invalid_credentials");
    assert_eq!(wrong.body, unknown.body);
}

#[tokio::test]
async fn bad_tokens_are_401_problems_with_a_challenge() {
    let app = spawn_app().await;
    let user = app.signup("Mallory").await;
    let mut tampered = user.token.clone();
    tampered.insert(tampered.len() - 3, 'x');
    let claims = app.state.jwt.verify(&user.token).unwrap();
    let expired = app
        .state
        .jwt
        .issue_at(claims.sub, claims.sid, 1_000_000_000);
    let cases = [
        ("garbage", "invalid_token"),
        ("a.b.c", "invalid_token"),
        (tampered.as_str(), "invalid_token"),
        (expired.as_str(), "token_expired"),
    ];
    for (token, code) in cases {
        let resp = app
            .request(Method::GET, "/v1/auth/me", Some(token), None)
            .await;
        resp.assert_problem(401, code);
        let challenge = resp
            .headers
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
    }
    // A session deleted in the database invalidates its token on the next request.
    let db = app.sql_superuser().await;
    db.execute(
        "update app.sessions set revoked_at = now() where id = $1",
        &[&claims.sid],
    )
    .await
    .unwrap();
    app.get("/v1/auth/me", &user.token)
        .await
        .assert_problem(401, "session_revoked");
}

#[tokio::test]
async fn login_body_errors_are_client_errors() {
    let app = spawn_app().await;
    let resp = app
        .request(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"email": 5})),
        )
        .await;
    resp.assert_problem(422, "validation_failed");
    assert_eq!(
        resp.body["errors"],
        json!([
            {"field": "email", "code": "invalid_type", "message": "must be a string, not a number"},
            {"field": "password", "code": "required", "message": "is required"},
        ])
    );
    let malformed = app
        .send(
            app.http
                .post(format!("{}/v1/auth/login", app.base))
                .header("content-type", "application/json")
                .body("{\"email\":"),
        )
        .await;
    malformed.assert_problem(400, "invalid_body");
}
