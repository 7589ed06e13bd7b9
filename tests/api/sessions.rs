//! Identity and sessions: verification, refresh rotation and reuse, revocation,
//! password reset, throttling, and forged tokens.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, spawn_app};

async fn refresh(app: &TestApp, token: &str) -> crate::helpers::TestResponse {
    app.request(
        Method::POST,
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": token})),
    )
    .await
}

fn tokens(body: &Value) -> (String, String) {
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn register_verify_login_refresh_logout() {
    let app = spawn_app().await;
    app.register("flow@example.com", PASSWORD, "Flow")
        .await
        .assert_status(201);

    // The verification email was queued in the registration transaction.
    let email = app.last_email("flow@example.com", "verify_email").await;
    assert!(
        email.body.contains("/verify-email?token="),
        "{}",
        email.body
    );
    assert_eq!(
        (email.to.as_str(), email.subject.as_str()),
        ("flow@example.com", "Confirm your email address")
    );
    let verify = app
        .request(
            Method::POST,
            "/v1/auth/verify-email/confirm",
            None,
            Some(json!({"token": email.token()})),
        )
        .await;
    assert_eq!(verify.assert_status(200)["email_verified"], true);
    // Single use.
    app.request(
        Method::POST,
        "/v1/auth/verify-email/confirm",
        None,
        Some(json!({"token": email.token()})),
    )
    .await
    .assert_problem(400, "token_invalid");

    let login = app.login("flow@example.com", PASSWORD).await;
    let (access, refresh_token) = tokens(login.assert_status(200));
    assert!(refresh_token.len() >= 43, "at least 256 bits");
    let me = app.get("/v1/auth/me", &access).await;
    assert_eq!(me.assert_status(200)["user"]["email_verified"], true);
    app.post("/v1/auth/verify-email/request", &access, json!({}))
        .await
        .assert_problem(409, "email_already_verified");

    let refreshed = refresh(&app, &refresh_token).await;
    let (access2, refresh2) = tokens(refreshed.assert_status(200));
    assert_ne!(refresh2, refresh_token);
    app.get("/v1/auth/me", &access2).await.assert_status(200);

    app.post("/v1/auth/logout", &access2, json!({}))
        .await
        .assert_status(204);
    app.get("/v1/auth/me", &access2)
        .await
        .assert_problem(401, "session_revoked");
    app.get("/v1/auth/me", &access)
        .await
        .assert_problem(401, "session_revoked");
    refresh(&app, &refresh2)
        .await
        .assert_problem(401, "invalid_refresh_token");

    // Only hashes are stored: the refresh token's text appears nowhere in the database.
    let db = app.sql_superuser().await;
    let hits: i64 = db
        .query_one(
            "select count(*) from app.refresh_tokens where token_hash = convert_to($1, 'UTF8')
                or encode(token_hash, 'escape') like '%' || $1 || '%'",
            &[&refresh2],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(hits, 0);
}

#[tokio::test]
async fn replay_within_grace_converges_after_grace_revokes_the_session() {
    let app = spawn_app().await;
    let user = app.signup("Replay").await;
    let login = app.login(&user.email, PASSWORD).await;
    let (_, first) = tokens(login.assert_status(200));

    let (access_a, second) = tokens(refresh(&app, &first).await.assert_status(200));
    // A second tab presents the same token within the grace window: the same successor.
    let (access_b, second_again) = tokens(refresh(&app, &first).await.assert_status(200));
    assert_eq!(second, second_again);
    app.get("/v1/auth/me", &access_b).await.assert_status(200);

    // Move the clock in the database past the grace window, then replay.
    let db = app.sql_superuser().await;
    db.execute("update app.refresh_tokens set rotated_at = rotated_at - interval '1 minute' where rotated_at is not null", &[])
        .await
        .unwrap();
    refresh(&app, &first)
        .await
        .assert_problem(401, "refresh_token_reused");
    // The whole session is revoked: its successor and access tokens stop working.
    refresh(&app, &second)
        .await
        .assert_problem(401, "invalid_refresh_token");
    app.get("/v1/auth/me", &access_a)
        .await
        .assert_problem(401, "session_revoked");
    // Other sessions of the user are unaffected.
    app.get("/v1/auth/me", &user.token).await.assert_status(200);
}

#[tokio::test]
async fn twenty_concurrent_refreshes_leave_one_live_successor() {
    let app = spawn_app().await;
    let user = app.signup("Tabs").await;
    let login = app.login(&user.email, PASSWORD).await;
    let (access, token) = tokens(login.assert_status(200));
    let session = app.state.jwt.verify(&access).unwrap().sid;

    let attempts = (0..20).map(|_| refresh(&app, &token));
    let results = futures_util::future::join_all(attempts).await;
    let mut successors: Vec<String> = results
        .iter()
        .map(|r| tokens(r.assert_status(200)).1)
        .collect();
    successors.dedup();
    assert_eq!(successors.len(), 1, "every tab converged on one successor");

    let db = app.sql_superuser().await;
    let live: i64 = db
        .query_one(
            "select count(*) from app.refresh_tokens where session_id = $1 and rotated_at is null",
            &[&session],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 1);
    let sessions: i64 = db
        .query_one(
            "select count(*) from app.sessions where user_id = $1 and revoked_at is null",
            &[&user.user_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        sessions, 2,
        "the signup session and this one; no extra session appeared"
    );
    refresh(&app, &successors[0]).await.assert_status(200);
}

#[tokio::test]
async fn sessions_are_listed_and_revocation_is_immediate() {
    let app = spawn_app().await;
    let user = app.signup("Multi").await;
    let phone = app
        .send(
            app.http
                .post(format!("{}/v1/auth/login", app.base))
                .header("user-agent", "PhoneApp/1.0")
                .json(&json!({"email": user.email, "password": PASSWORD})),
        )
        .await;
    let (phone_access, phone_refresh) = tokens(phone.assert_status(200));
    let phone_sid = app.state.jwt.verify(&phone_access).unwrap().sid;

    let list = app.get("/v1/auth/sessions", &user.token).await;
    let items = list.assert_status(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    let current: Vec<_> = items.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    let phone_row = items
        .iter()
        .find(|s| s["id"] == phone_sid.to_string())
        .unwrap();
    assert_eq!(phone_row["user_agent"], "PhoneApp/1.0");
    assert_eq!(phone_row["ip"], "127.0.0.1");

    // Revoke the phone from the laptop: its tokens die on their next use.
    app.delete(&format!("/v1/auth/sessions/{phone_sid}"), &user.token)
        .await
        .assert_status(204);
    app.get("/v1/auth/me", &phone_access)
        .await
        .assert_problem(401, "session_revoked");
    refresh(&app, &phone_refresh)
        .await
        .assert_problem(401, "invalid_refresh_token");
    app.delete(&format!("/v1/auth/sessions/{phone_sid}"), &user.token)
        .await
        .assert_problem(404, "not_found");

    // Another user's session cannot be revoked (or even confirmed to exist).
    let other = app.signup("Other").await;
    let other_sid = app.state.jwt.verify(&other.token).unwrap().sid;
    app.delete(&format!("/v1/auth/sessions/{other_sid}"), &user.token)
        .await
        .assert_problem(404, "not_found");
    app.get("/v1/auth/me", &other.token)
        .await
        .assert_status(200);

    // Revoke all others.
    let tablet = app.login(&user.email, PASSWORD).await;
    let (tablet_access, _) = tokens(tablet.assert_status(200));
    let revoked = app
        .post("/v1/auth/sessions/revoke-others", &user.token, json!({}))
        .await;
    assert_eq!(revoked.assert_status(200)["revoked"], 1);
    app.get("/v1/auth/me", &tablet_access)
        .await
        .assert_problem(401, "session_revoked");
    app.get("/v1/auth/me", &user.token).await.assert_status(200);
}

#[tokio::test]
async fn password_change_and_profile_update() {
    let app = spawn_app().await;
    let user = app.signup("Pat").await;
    let other = app.login(&user.email, PASSWORD).await;
    let (other_access, _) = tokens(other.assert_status(200));
    let new_password = "a brand new long passphrase";

    app.post(
        "/v1/auth/me/password",
        &user.token,
        json!({"current_password": "wrong one here", "new_password": new_password}),
    )
    .await
    .assert_problem(403, "invalid_current_password");
    let weak = app
        .post(
            "/v1/auth/me/password",
            &user.token,
            json!({"current_password": PASSWORD, "new_password": "Password123"}),
        )
        .await;
    weak.assert_problem(422, "validation_failed");
    assert_eq!(weak.body["errors"][0]["code"], "too_common");
    app.post(
        "/v1/auth/me/password",
        &user.token,
        json!({"current_password": PASSWORD, "new_password": new_password}),
    )
    .await
    .assert_status(204);
    app.get("/v1/auth/me", &other_access)
        .await
        .assert_problem(401, "session_revoked");
    app.get("/v1/auth/me", &user.token).await.assert_status(200);
    app.login(&user.email, PASSWORD)
        .await
        .assert_problem(401, "invalid_credentials");
    app.login(&user.email, new_password)
        .await
        .assert_status(200);

    let patched = app
        .patch("/v1/auth/me", &user.token, json!({"name": "  Patricia "}))
        .await;
    assert_eq!(patched.assert_status(200)["user"]["name"], "Patricia");
    app.patch("/v1/auth/me", &user.token, json!({"name": ""}))
        .await
        .assert_problem(422, "validation_failed");
}

#[tokio::test]
async fn password_reset_works_once_expires_and_revokes_sessions() {
    let app = spawn_app().await;
    let user = app.signup("Reset").await;
    let reset = |body: Value| {
        app.request(
            Method::POST,
            "/v1/auth/password-reset/confirm",
            None,
            Some(body),
        )
    };

    // Unknown and known emails get the identical answer; only the known one gets mail.
    let known = app
        .request(
            Method::POST,
            "/v1/auth/password-reset/request",
            None,
            Some(json!({"email": user.email})),
        )
        .await;
    let unknown = app
        .request(
            Method::POST,
            "/v1/auth/password-reset/request",
            None,
            Some(json!({"email": "ghost@example.com"})),
        )
        .await;
    assert_eq!(known.status, 202);
    assert_eq!((known.status, &known.body), (unknown.status, &unknown.body));
    // Both were queued the same way; the worker mails only the known address.
    assert_eq!(app.run_worker().await, 1);
    assert!(app.emails_to("ghost@example.com").await.is_empty());
    let mail = app.last_email(&user.email, "password_reset").await;

    let new_password = "reset to something long";
    reset(json!({"token": mail.token(), "new_password": "short"}))
        .await
        .assert_problem(422, "validation_failed");
    reset(json!({"token": "not-a-real-token", "new_password": new_password}))
        .await
        .assert_problem(400, "token_invalid");
    reset(json!({"token": mail.token(), "new_password": new_password}))
        .await
        .assert_status(204);
    reset(json!({"token": mail.token(), "new_password": "yet another passphrase"}))
        .await
        .assert_problem(400, "token_invalid");
    app.get("/v1/auth/me", &user.token)
        .await
        .assert_problem(401, "session_revoked");
    app.login(&user.email, new_password)
        .await
        .assert_status(200);

    // A second request makes a new token and kills the earlier unused one -- but not
    // within a minute of it (no mailbox flooding); an expired one fails.
    let request = || {
        app.request(
            Method::POST,
            "/v1/auth/password-reset/request",
            None,
            Some(json!({"email": user.email})),
        )
    };
    request().await.assert_status(202);
    assert_eq!(app.run_worker().await, 1);
    let older = app.last_email(&user.email, "password_reset").await;
    request().await.assert_status(202);
    assert_eq!(
        app.run_worker().await,
        0,
        "a minute must pass between two reset emails"
    );
    let db = app.sql_superuser().await;
    db.execute(
        "update app.user_tokens set created_at = now() - interval '61 seconds' where purpose = 'password_reset'",
        &[],
    )
    .await
    .unwrap();
    request().await.assert_status(202);
    assert_eq!(app.run_worker().await, 1);
    let newer = app.last_email(&user.email, "password_reset").await;
    assert_ne!(older.token(), newer.token());
    reset(json!({"token": older.token(), "new_password": "older token passphrase"}))
        .await
        .assert_problem(400, "token_invalid");
    db.execute("update app.user_tokens set expires_at = now() - interval '1 second' where purpose = 'password_reset'", &[])
        .await
        .unwrap();
    reset(json!({"token": newer.token(), "new_password": "expired token passphrase"}))
        .await
        .assert_problem(400, "token_invalid");
}

#[tokio::test]
async fn verification_tokens_expire_and_are_replaced() {
    let app = spawn_app().await;
    let user = app.signup("Verify").await;
    let first = app.last_email(&user.email, "verify_email").await;
    app.post("/v1/auth/verify-email/request", &user.token, json!({}))
        .await
        .assert_status(202);
    let second = app.last_email(&user.email, "verify_email").await;
    assert_ne!(first.token(), second.token());
    let confirm = |t: String| {
        app.request(
            Method::POST,
            "/v1/auth/verify-email/confirm",
            None,
            Some(json!({"token": t})),
        )
    };
    confirm(first.token())
        .await
        .assert_problem(400, "token_invalid");
    let db = app.sql_superuser().await;
    db.execute(
        "update app.user_tokens set expires_at = now() - interval '1 second'",
        &[],
    )
    .await
    .unwrap();
    confirm(second.token())
        .await
        .assert_problem(400, "token_invalid");
    app.post("/v1/auth/verify-email/request", &user.token, json!({}))
        .await
        .assert_status(202);
    confirm(app.last_email(&user.email, "verify_email").await.token())
        .await
        .assert_status(200);
}

#[tokio::test]
async fn throttling_after_ten_failures_until_the_window_passes() {
    let app = spawn_app().await;
    let user = app.signup("Target").await;
    for _ in 0..10 {
        app.login(&user.email, "wrong password guess")
            .await
            .assert_problem(401, "invalid_credentials");
    }
    // Even the right password is not evaluated now.
    let blocked = app.login(&user.email, PASSWORD).await;
    blocked.assert_problem(429, "too_many_attempts");
    let retry: u64 = blocked
        .headers
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    // Other accounts are unaffected.
    let bystander = app.signup("Bystander").await;
    app.login(&bystander.email, PASSWORD)
        .await
        .assert_status(200);

    // Move the window in the database: the right user gets in, and the count resets.
    let db = app.sql_superuser().await;
    db.execute(
        "update app.login_attempts set created_at = created_at - interval '16 minutes'",
        &[],
    )
    .await
    .unwrap();
    app.login(&user.email, PASSWORD).await.assert_status(200);
    let left: i64 = db
        .query_one("select count(*) from app.login_attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        left, 0,
        "a success forgets the account's failures and old rows are trimmed"
    );
}

#[tokio::test]
async fn concurrent_guesses_never_exceed_ten_evaluations() {
    let app = spawn_app().await;
    let user = app.signup("Burst").await;
    let guesses = (0..25).map(|i| {
        app.login(
            &user.email,
            if i % 2 == 0 {
                "guess number one"
            } else {
                "guess number two"
            },
        )
    });
    let results = futures_util::future::join_all(guesses).await;
    let evaluated = results.iter().filter(|r| r.status == 401).count();
    let throttled = results.iter().filter(|r| r.status == 429).count();
    assert_eq!(evaluated + throttled, 25, "only 401 or 429");
    // The count-then-record is atomic (an advisory lock per account): exactly the limit.
    assert_eq!((evaluated, throttled), (10, 15));
}

fn forge(header: Value, claims: Value, key: &[u8]) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let alg = header["alg"].as_str().unwrap_or("none");
    let sig = match alg {
        "none" => String::new(),
        _ => {
            use hmac_sha256::sign;
            URL_SAFE_NO_PAD.encode(sign(key, format!("{h}.{c}").as_bytes()))
        }
    };
    format!("{h}.{c}.{sig}")
}

mod hmac_sha256 {
    use sha2::{Digest, Sha256};

    /// HMAC-SHA256 (RFC 2104), enough to forge test tokens by hand.
    pub fn sign(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let ih = Sha256::digest([inner.as_slice(), msg].concat());
        Sha256::digest([outer.as_slice(), &ih[..]].concat()).to_vec()
    }
}

#[tokio::test]
async fn forged_tokens_are_401_never_500() {
    let mut settings = crate::helpers::settings();
    let secret = format!("known-test-secret-{}", Uuid::new_v4());
    settings.jwt_secret = Some(secret.clone().into());
    let app = crate::helpers::spawn_app_with(settings, crate::helpers::limits()).await;
    let user = app.signup("Victim").await;
    let login = app.login(&user.email, PASSWORD).await;
    let (_, refresh_token) = tokens(login.assert_status(200));
    let real = app.state.jwt.verify(&user.token).unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = |iss: &str, aud: &str, exp: i64, typ: &str| json!({"sub": real.sub, "sid": real.sid, "iss": iss, "aud": aud, "iat": now, "exp": exp, "typ": typ});
    let header = |alg: &str, kid: Option<&str>| match kid {
        Some(k) => json!({"alg": alg, "typ": "JWT", "kid": k}),
        None => json!({"alg": alg, "typ": "JWT"}),
    };
    let good = claims("palisade", "palisade-api", now + 600, "access");
    // Sanity: a correctly forged token with the real key is accepted, so the cases below
    // fail for the reason they name.
    let control = forge(
        header("HS256", Some("primary")),
        good.clone(),
        secret.as_bytes(),
    );
    app.get("/v1/auth/me", &control).await.assert_status(200);

    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            forge(header("none", Some("primary")), good.clone(), b""),
        ),
        (
            "wrong key",
            forge(
                header("HS256", Some("primary")),
                good.clone(),
                b"not-the-server-secret-at-all-123",
            ),
        ),
        (
            "HS512 header",
            forge(
                header("HS512", Some("primary")),
                good.clone(),
                secret.as_bytes(),
            ),
        ),
        (
            "no kid",
            forge(header("HS256", None), good.clone(), secret.as_bytes()),
        ),
        (
            "unknown kid",
            forge(
                header("HS256", Some("attacker")),
                good.clone(),
                secret.as_bytes(),
            ),
        ),
        (
            "expired",
            forge(
                header("HS256", Some("primary")),
                claims("palisade", "palisade-api", now - 3600, "access"),
                secret.as_bytes(),
            ),
        ),
        (
            "wrong aud",
            forge(
                header("HS256", Some("primary")),
                claims("palisade", "someone-else", now + 600, "access"),
                secret.as_bytes(),
            ),
        ),
        (
            "wrong iss",
            forge(
                header("HS256", Some("primary")),
                claims("evil", "palisade-api", now + 600, "access"),
                secret.as_bytes(),
            ),
        ),
        (
            "wrong typ",
            forge(
                header("HS256", Some("primary")),
                claims("palisade", "palisade-api", now + 600, "refresh"),
                secret.as_bytes(),
            ),
        ),
        ("refresh token as access token", refresh_token.clone()),
        ("garbage", "definitely not a jwt".to_owned()),
        ("empty segments", "..".to_owned()),
        ("huge", "a".repeat(10_000)),
    ];
    let mut checked = 0;
    for (name, token) in cases {
        let resp = app
            .send(
                app.http
                    .get(format!("{}/v1/auth/me", app.base))
                    .header("authorization", format!("Bearer {token}")),
            )
            .await;
        // Each is refused for what it is, and says so in the challenge.
        let code = if name == "expired" {
            "token_expired"
        } else {
            "invalid_token"
        };
        resp.assert_problem(401, code);
        let challenge = resp
            .headers
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(
            challenge,
            format!(
                "Bearer realm=\"palisade\", error=\"invalid_token\", error_description=\"{code}\""
            ),
            "{name}"
        );
        checked += 1;
    }
    assert_eq!(checked, 13, "every forged case ran");
    // An access token is not a refresh token either: not even shaped like one.
    refresh(&app, &user.token)
        .await
        .assert_problem(422, "validation_failed");
    refresh(&app, &palisade::crypto::tokens::generate())
        .await
        .assert_problem(401, "invalid_refresh_token");
}

#[tokio::test]
async fn common_passwords_are_refused_at_registration() {
    let app = spawn_app().await;
    let resp = app
        .register("common@example.com", "qwertyuiop123", "Common")
        .await;
    resp.assert_problem(422, "validation_failed");
    assert_eq!(resp.body["errors"][0]["field"], "password");
    assert_eq!(resp.body["errors"][0]["code"], "too_common");
}

#[tokio::test]
async fn saturated_hashing_answers_503_with_retry_after() {
    let mut s = crate::helpers::settings();
    s.password_hash_concurrency = 1;
    s.password_hash_wait = std::time::Duration::from_millis(1);
    let app = crate::helpers::spawn_app_with(s, crate::helpers::limits()).await;
    let user = app.signup("Busy").await;
    let attempts = (0..8).map(|_| app.login(&user.email, PASSWORD));
    let results = futures_util::future::join_all(attempts).await;
    let busy: Vec<_> = results.iter().filter(|r| r.status == 503).collect();
    assert!(
        !busy.is_empty(),
        "one slot, eight simultaneous sign-ins: some must be turned away"
    );
    for r in &busy {
        r.assert_problem(503, "service_unavailable");
        assert!(r.headers.contains_key("retry-after"));
    }
    assert!(results.iter().all(|r| r.status == 200 || r.status == 503));
    // Turned-away attempts were not counted as failures (they were never evaluated).
    let db = app.sql_superuser().await;
    let failed: i64 = db
        .query_one(
            "select count(*) from app.login_attempts where status = 'failed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed, 0);
}
