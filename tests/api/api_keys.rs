//! API keys and rate limits (issue 10), through the API, against real PostgreSQL.

use std::{net::TcpListener as StdListener, process::Stdio, sync::Arc, time::Duration};

use palisade::{
    db::{self, Connections},
    limits::{Quota, RateLimits},
    startup,
    state::AppState,
};
use poem::listener::{Acceptor, Listener, TcpListener};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    fixtures::{AuditRow, add_member},
    helpers::{
        Signup, TestApp, TestResponse, cluster, limits, settings, spawn_app, spawn_app_with,
    },
};

/// A key created through the API: its id and secret.
struct Key {
    id: Uuid,
    secret: String,
}

async fn create_key(app: &TestApp, who: &Signup, org: Uuid, body: Value) -> Key {
    let resp = app
        .post(&format!("/v1/orgs/{org}/api-keys"), &who.token, body)
        .await;
    let body = resp.assert_status(201);
    Key {
        id: body["api_key"]["id"].as_str().unwrap().parse().unwrap(),
        secret: body["secret"].as_str().unwrap().to_owned(),
    }
}

/// A request with the key in `X-API-Key`.
async fn with_header(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> TestResponse {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.base))
        .header("x-api-key", key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    app.send(req).await
}

/// `select count(*) ...` as the superuser.
async fn count(app: &TestApp, sql: &str) -> i64 {
    app.sql_superuser()
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

fn projects(org: Uuid) -> String {
    format!("/v1/orgs/{org}/projects")
}

async fn audit_rows(app: &TestApp, org: Uuid, action: &str) -> Vec<AuditRow> {
    crate::fixtures::audit_rows(&app.sql_superuser().await, org, action).await
}

#[tokio::test]
async fn a_key_is_shown_once_stored_hashed_and_works_on_its_org_with_either_header() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let key = create_key(&app, &owner, owner.org_id, json!({"name": "ci deploy"})).await;
    // GitHub's layout: pal_ + 30 base62 + 6 base62 of a CRC32.
    assert_eq!(key.secret.len(), 40);
    assert!(key.secret.starts_with("pal_"));
    assert!(key.secret[4..].bytes().all(|b| b.is_ascii_alphanumeric()));

    // Neither the list nor the key shows the secret or its hash again.
    let list = app
        .get(&format!("/v1/orgs/{}/api-keys", owner.org_id), &owner.token)
        .await;
    let items = list.assert_status(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    let listed = &items[0];
    assert_eq!(listed["name"], "ci deploy");
    assert_eq!(listed["role"], "member", "the default role");
    assert_eq!(listed["start"], &key.secret[..8]);
    assert_eq!(listed["created_by"], owner.user_id.to_string());
    assert!(listed["last_used_at"].is_null() && listed["revoked_at"].is_null());
    let text = list.body.to_string();
    assert!(!text.contains(&key.secret[8..]), "no secret in the list");
    assert!(!text.contains("hash"), "no hash in the list");
    // Stored: the SHA-256 only, on the key's row; no replaced secret yet.
    let su = app.sql_superuser().await;
    let stored: Vec<u8> = su
        .query_one(
            "select secret_hash from app.api_keys where id = $1",
            &[&key.id],
        )
        .await
        .unwrap()
        .get(0);
    use sha2::Digest;
    assert_eq!(stored, sha2::Sha256::digest(key.secret.as_bytes()).to_vec());
    let replaced: i64 = su
        .query_one(
            "select count(*) from app.api_key_secrets where key_id = $1",
            &[&key.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(replaced, 0);
    // The runtime role reads the key's row, never its hash.
    let runtime = app.sql_runtime().await;
    let denied = runtime
        .query_one("select secret_hash from app.api_keys limit 1", &[])
        .await
        .unwrap_err();
    assert_eq!(
        denied.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{denied}"
    );
    let secret_anywhere: i64 = su
        .query_one(
            "select count(*) from app.audit_log l where l::text like '%' || $1 || '%'",
            &[&&key.secret[8..]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(secret_anywhere, 0);

    // Both headers authenticate; the key creates and reads its org's projects.
    let created = app
        .post(
            &projects(owner.org_id),
            &key.secret,
            json!({"name": "by key"}),
        )
        .await;
    created.assert_status(201);
    let listed = with_header(
        &app,
        Method::GET,
        &projects(owner.org_id),
        &key.secret,
        None,
    )
    .await;
    assert_eq!(listed.assert_status(200)["items"][0]["name"], "by key");
    // The org as the key sees it: its role is the key's.
    let org = with_header(
        &app,
        Method::GET,
        &format!("/v1/orgs/{}", owner.org_id),
        &key.secret,
        None,
    )
    .await;
    assert_eq!(org.assert_status(200)["role"], "member");
    let members = app
        .get(&format!("/v1/orgs/{}/members", owner.org_id), &key.secret)
        .await;
    assert_eq!(
        members.assert_status(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // last_used_at was recorded from that use (by the worker's flush).
    app.flush_api_calls().await;
    let key_now = app
        .get(
            &format!("/v1/orgs/{}/api-keys/{}", owner.org_id, key.id),
            &owner.token,
        )
        .await;
    assert!(key_now.assert_status(200)["last_used_at"].is_string());
    // Created, in the org's audit log, without the secret.
    let events = audit_rows(&app, owner.org_id, "api_key.created").await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].targets,
        json!([{"type": "api_key", "id": key.id, "name": "ci deploy"}])
    );
    assert_eq!(events[0].metadata["start"], &key.secret[..8]);
    assert_eq!(events[0].metadata["role"], "member");
    assert_eq!(
        (events[0].actor_type.as_str(), events[0].actor_id),
        ("user", Some(owner.user_id))
    );
}

#[tokio::test]
async fn a_key_stays_in_its_org_and_never_governs() {
    let app = spawn_app().await;
    let a = app.signup("Alpha").await;
    let b = app.signup("Beta").await;
    let b_project = app.create_project(&b, b.org_id, "beta secret").await;
    let key = create_key(&app, &a, a.org_id, json!({"name": "a", "role": "admin"})).await;

    // Another org's routes: 404, exactly as for a user who is not a member.
    for path in [
        projects(b.org_id),
        format!("/v1/orgs/{}/projects/{b_project}", b.org_id),
        format!("/v1/orgs/{}", b.org_id),
        format!("/v1/orgs/{}/members", b.org_id),
    ] {
        app.get(&path, &key.secret)
            .await
            .assert_problem(404, "not_found");
        with_header(&app, Method::GET, &path, &key.secret, None)
            .await
            .assert_problem(404, "not_found");
    }
    app.post(&projects(b.org_id), &key.secret, json!({"name": "planted"}))
        .await
        .assert_problem(404, "not_found");
    with_header(
        &app,
        Method::DELETE,
        &format!("/v1/orgs/{}/projects/{b_project}", b.org_id),
        &key.secret,
        None,
    )
    .await
    .assert_problem(404, "not_found");
    let b_projects: i64 = app
        .sql_superuser()
        .await
        .query_one(
            "select count(*) from app.projects where org_id = $1",
            &[&b.org_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(b_projects, 1, "B's data is untouched");

    // Even an admin key governs nothing: the user endpoints, keys, members,
    // invitations, the org itself -- with either header.
    let a_org = a.org_id;
    let governing: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/auth/me".into(), None),
        (Method::GET, "/v1/auth/sessions".into(), None),
        (Method::GET, "/v1/orgs".into(), None),
        (
            Method::POST,
            "/v1/orgs".into(),
            Some(json!({"name": "Keyed", "slug": "keyed"})),
        ),
        (
            Method::PATCH,
            format!("/v1/orgs/{a_org}"),
            Some(json!({"name": "renamed"})),
        ),
        (Method::DELETE, format!("/v1/orgs/{a_org}"), None),
        (Method::GET, format!("/v1/orgs/{a_org}/api-keys"), None),
        (
            Method::POST,
            format!("/v1/orgs/{a_org}/api-keys"),
            Some(json!({"name": "child"})),
        ),
        (
            Method::DELETE,
            format!("/v1/orgs/{a_org}/api-keys/{}", key.id),
            None,
        ),
        (
            Method::POST,
            format!("/v1/orgs/{a_org}/invitations"),
            Some(json!({"email": "x@example.com", "role": "admin"})),
        ),
        (
            Method::DELETE,
            format!("/v1/orgs/{a_org}/members/{}", a.user_id),
            None,
        ),
    ];
    for (method, path, body) in governing {
        let by_bearer = app
            .request(method.clone(), &path, Some(&key.secret), body.clone())
            .await;
        by_bearer.assert_problem(403, "api_key_not_allowed");
        let by_header = with_header(&app, method.clone(), &path, &key.secret, body).await;
        by_header.assert_problem(403, "api_key_not_allowed");
    }
    // Nothing changed: the org keeps its name, its one key and its one member.
    let su = app.sql_superuser().await;
    let row = su
        .query_one(
            "select o.name, (select count(*) from app.api_keys k where k.org_id = o.id and k.revoked_at is null),
                    (select count(*) from app.memberships m where m.org_id = o.id),
                    (select count(*) from app.invitations i where i.org_id = o.id)
               from app.orgs o where o.id = $1",
            &[&a.org_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Alpha");
    assert_eq!(row.get::<_, i64>(1), 1);
    assert_eq!(row.get::<_, i64>(2), 1);
    assert_eq!(row.get::<_, i64>(3), 0);
}

#[tokio::test]
async fn a_viewer_key_reads_and_cannot_write() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let project = app.create_project(&owner, owner.org_id, "kept").await;
    let key = create_key(
        &app,
        &owner,
        owner.org_id,
        json!({"name": "ro", "role": "viewer"}),
    )
    .await;
    app.get(&projects(owner.org_id), &key.secret)
        .await
        .assert_status(200);
    app.post(&projects(owner.org_id), &key.secret, json!({"name": "no"}))
        .await
        .assert_problem(403, "forbidden");
    let path = format!("/v1/orgs/{}/projects/{project}", owner.org_id);
    app.patch(&path, &key.secret, json!({"name": "changed"}))
        .await
        .assert_problem(403, "forbidden");
    app.delete(&path, &key.secret)
        .await
        .assert_problem(403, "forbidden");
    assert_eq!(
        app.get(&path, &key.secret).await.assert_status(200)["name"],
        "kept"
    );
}

#[tokio::test]
async fn a_demoted_creator_shrinks_their_keys_and_a_removed_one_ends_them() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let admin = app.signup("Admin").await;
    add_member(&app, owner.org_id, admin.user_id, "admin").await;
    let key = create_key(
        &app,
        &admin,
        owner.org_id,
        json!({"name": "adm", "role": "admin"}),
    )
    .await;
    let org_path = format!("/v1/orgs/{}", owner.org_id);
    assert_eq!(
        app.get(&org_path, &key.secret).await.assert_status(200)["role"],
        "admin"
    );

    // Demoted to viewer: the admin key now acts as a viewer.
    app.patch(
        &format!("/v1/orgs/{}/members/{}", owner.org_id, admin.user_id),
        &owner.token,
        json!({"role": "viewer"}),
    )
    .await
    .assert_status(200);
    assert_eq!(
        app.get(&org_path, &key.secret).await.assert_status(200)["role"],
        "viewer"
    );
    app.post(&projects(owner.org_id), &key.secret, json!({"name": "no"}))
        .await
        .assert_problem(403, "forbidden");
    // Promoted back: the key is an admin key again (it never exceeds its own role).
    app.patch(
        &format!("/v1/orgs/{}/members/{}", owner.org_id, admin.user_id),
        &owner.token,
        json!({"role": "admin"}),
    )
    .await
    .assert_status(200);
    app.post(&projects(owner.org_id), &key.secret, json!({"name": "yes"}))
        .await
        .assert_status(201);

    // Removed: the key is revoked with them, in the same transaction.
    app.delete(
        &format!("/v1/orgs/{}/members/{}", owner.org_id, admin.user_id),
        &owner.token,
    )
    .await
    .assert_status(204);
    let refused = app.get(&projects(owner.org_id), &key.secret).await;
    refused.assert_problem(401, "api_key_revoked");
    assert!(
        refused.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    let all = app
        .get(
            &format!("/v1/orgs/{}/api-keys?include_revoked=true", owner.org_id),
            &owner.token,
        )
        .await;
    assert!(all.assert_status(200)["items"][0]["revoked_at"].is_string());
    let live = app
        .get(&format!("/v1/orgs/{}/api-keys", owner.org_id), &owner.token)
        .await;
    assert_eq!(live.assert_status(200)["items"], json!([]));
    let removed = audit_rows(&app, owner.org_id, "member.removed").await;
    assert_eq!(removed[0].metadata["api_keys_revoked"], 1);

    // Even if the revocation were undone by hand, a creator who is not a member makes
    // the key refuse (the lookup's own check).
    let su = app.sql_superuser().await;
    su.batch_execute(&format!(
        "set session_replication_role = replica;
         update app.api_keys set revoked_at = null, revoked_reason = null where id = '{}';
         set session_replication_role = origin;",
        key.id
    ))
    .await
    .unwrap();
    app.get(&projects(owner.org_id), &key.secret)
        .await
        .assert_problem(401, "api_key_revoked");
}

#[tokio::test]
async fn revocation_is_immediate_and_rotation_keeps_the_old_secret_for_its_grace_only() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let org = owner.org_id;
    let key = create_key(&app, &owner, org, json!({"name": "rotating"})).await;
    let key_path = format!("/v1/orgs/{org}/api-keys/{}", key.id);

    // Rename.
    let renamed = app
        .patch(&key_path, &owner.token, json!({"name": "renamed"}))
        .await;
    assert_eq!(renamed.assert_status(200)["name"], "renamed");

    // Rotate with the default grace (an hour): both secrets work.
    let rotated = app
        .post(&format!("{key_path}/rotate"), &owner.token, json!({}))
        .await;
    let body = rotated.assert_status(200).clone();
    let new_secret = body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, key.secret);
    assert_eq!(body["api_key"]["id"], key.id.to_string());
    assert_eq!(body["api_key"]["start"], &new_secret[..8]);
    assert!(body["api_key"]["rotated_at"].is_string());
    app.get(&projects(org), &key.secret)
        .await
        .assert_status(200);
    app.get(&projects(org), &new_secret)
        .await
        .assert_status(200);
    // The replaced secret moved beside the key, with the end of its grace window; the
    // key's row holds the new one.
    use sha2::Digest;
    let su = app.sql_superuser().await;
    let (grace, replaced, current): (f64, Vec<u8>, Vec<u8>) = su
        .query_one(
            "select extract(epoch from s.expires_at - now())::float8, s.secret_hash, k.secret_hash
               from app.api_key_secrets s join app.api_keys k on k.id = s.key_id
              where s.key_id = $1",
            &[&key.id],
        )
        .await
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .unwrap();
    assert!((3590.0..=3600.0).contains(&grace), "grace {grace}");
    assert_eq!(
        replaced,
        sha2::Sha256::digest(key.secret.as_bytes()).to_vec()
    );
    assert_eq!(
        current,
        sha2::Sha256::digest(new_secret.as_bytes()).to_vec()
    );
    // Time passes, in the database: the old secret's grace ends, the new one works.
    app.sql_superuser()
        .await
        .execute(
            "update app.api_key_secrets set expires_at = now() - interval '1 second'
              where key_id = $1",
            &[&key.id],
        )
        .await
        .unwrap();
    app.get(&projects(org), &key.secret)
        .await
        .assert_problem(401, "api_key_expired");
    app.get(&projects(org), &new_secret)
        .await
        .assert_status(200);

    // A rotation with no grace ends the previous secret at once.
    let again = app
        .post(
            &format!("{key_path}/rotate"),
            &owner.token,
            json!({"grace_seconds": 0}),
        )
        .await;
    let newest = again.assert_status(200)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    app.get(&projects(org), &new_secret)
        .await
        .assert_problem(401, "api_key_expired");
    app.get(&projects(org), &newest).await.assert_status(200);
    // Out-of-range grace: 422, nothing rotated.
    app.post(
        &format!("{key_path}/rotate"),
        &owner.token,
        json!({"grace_seconds": 604801}),
    )
    .await
    .assert_problem(422, "validation_failed");
    app.get(&projects(org), &newest).await.assert_status(200);
    assert_eq!(audit_rows(&app, org, "api_key.rotated").await.len(), 2);

    // Revoke: the very next request is refused; the key is gone for the API.
    app.delete(&key_path, &owner.token).await.assert_status(204);
    with_header(&app, Method::GET, &projects(org), &newest, None)
        .await
        .assert_problem(401, "api_key_revoked");
    app.get(&key_path, &owner.token)
        .await
        .assert_problem(404, "not_found");
    app.delete(&key_path, &owner.token)
        .await
        .assert_problem(404, "not_found");
    app.post(&format!("{key_path}/rotate"), &owner.token, json!({}))
        .await
        .assert_problem(404, "not_found");
    assert_eq!(audit_rows(&app, org, "api_key.revoked").await.len(), 1);

    // An expired key: refused with its own code.
    let expiring = create_key(
        &app,
        &owner,
        org,
        json!({"name": "short", "expires_at": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()}),
    )
    .await;
    app.get(&projects(org), &expiring.secret)
        .await
        .assert_status(200);
    app.sql_superuser()
        .await
        .execute(
            "update app.api_keys set expires_at = now() - interval '1 second' where id = $1",
            &[&expiring.id],
        )
        .await
        .unwrap();
    app.get(&projects(org), &expiring.secret)
        .await
        .assert_problem(401, "api_key_expired");
    // Unknown (well formed, never issued): its own code too.
    let unknown = palisade::auth::api_key::ApiKeySecret::generate();
    app.get(&projects(org), unknown.expose())
        .await
        .assert_problem(401, "invalid_api_key");
}

#[tokio::test]
async fn bad_key_input_is_a_4xx_with_field_errors_and_writes_nothing() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let member = app.signup("Member").await;
    add_member(&app, owner.org_id, member.user_id, "member").await;
    let path = format!("/v1/orgs/{}/api-keys", owner.org_id);
    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let cases = [
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(10 * 1024)}), "name"),
        (json!({"name": "k", "role": "owner"}), "role"),
        (json!({"name": "k", "expires_at": past}), "expires_at"),
        (json!({"name": "k", "expires_at": "tomorrow"}), "expires_at"),
        (json!({"role": "admin"}), "name"),
    ];
    for (body, field) in cases {
        let resp = app.post(&path, &owner.token, body.clone()).await;
        resp.assert_problem(422, "validation_failed");
        let fields: Vec<&str> = resp.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(fields.contains(&field), "{body}: {fields:?}");
    }
    // A member may not create keys at all.
    app.post(&path, &member.token, json!({"name": "mine"}))
        .await
        .assert_problem(403, "forbidden");
    app.get(&path, &member.token)
        .await
        .assert_problem(403, "forbidden");
    let keys = count(&app, "select count(*) from app.api_keys").await;
    assert_eq!(keys, 0, "nothing written");
    assert!(
        audit_rows(&app, owner.org_id, "api_key.created")
            .await
            .is_empty()
    );
}

/// A mistyped key is refused by its checksum, before any database work: proven with a
/// server whose database is unreachable, where a well-formed key gets a 503 instead.
#[tokio::test]
async fn a_one_character_typo_is_refused_without_a_query() {
    let mut settings = settings();
    let data_dir = crate::helpers::TempDir::new("palisade-test-nodb");
    settings.data_dir = data_dir.0.clone();
    settings.pool_timeout = Duration::from_millis(500);
    let mut nowhere = tokio_postgres::Config::new();
    nowhere
        .host("127.0.0.1")
        .port(1)
        .user("nobody")
        .dbname("nothing")
        .connect_timeout(Duration::from_millis(200));
    let connections = Connections {
        request: nowhere.clone(),
        credentials: nowhere.clone(),
        jobs: nowhere,
    };
    let state = AppState::new(&settings, &connections).unwrap();
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    tokio::spawn(
        poem::Server::new_with_acceptor(acceptor).run(startup::app(Arc::clone(&state), limits())),
    );
    let http = reqwest::Client::new();
    let org = Uuid::new_v4();
    let key = palisade::auth::api_key::ApiKeySecret::generate();
    let get = |k: String| {
        let http = http.clone();
        async move {
            let resp = http
                .get(format!("http://{addr}/v1/orgs/{org}/projects"))
                .header("x-api-key", k)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            (status, body)
        }
    };
    let (status, _) = get(key.expose().to_owned()).await;
    assert_eq!(status, 503, "a well-formed key needs the database");
    let secret = key.expose();
    for i in [4, 20, 33, 34, 39] {
        let mut typo = secret.as_bytes().to_vec();
        typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
        let (status, body) = get(String::from_utf8(typo).unwrap()).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["code"], "invalid_api_key");
    }
    let (status, body) = get(secret[..39].to_owned()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
}

/// `last_used_at` is recorded at most once a minute per key, by the worker's flush from
/// the key's limiter row -- never by the request, which writes no row of app.api_keys.
#[tokio::test]
async fn last_use_is_recorded_at_most_once_a_minute() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let key = create_key(&app, &owner, owner.org_id, json!({"name": "busy"})).await;
    let su = app.sql_superuser().await;
    let row_version = || {
        let su = &su;
        let id = key.id;
        async move {
            su.query_one(
                "select last_used_at, xmin::text from app.api_keys where id = $1",
                &[&id],
            )
            .await
            .map(|r| {
                (
                    r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(0),
                    r.get::<_, String>(1),
                )
            })
            .unwrap()
        }
    };
    let last_used = async || row_version().await.0;
    assert!(last_used().await.is_none());
    let before = row_version().await;
    app.get(&projects(owner.org_id), &key.secret)
        .await
        .assert_status(200);
    // The request itself did not touch the key's row; the flush records the use.
    assert_eq!(row_version().await, before, "a request wrote app.api_keys");
    app.flush_api_calls().await;
    let first = last_used().await.expect("recorded by the flush");
    // 30 s ago: within the minute, so the next uses leave it.
    su.execute(
        "update app.api_keys set last_used_at = now() - interval '30 seconds' where id = $1",
        &[&key.id],
    )
    .await
    .unwrap();
    let thirty = last_used().await.unwrap();
    assert!(thirty < first);
    for _ in 0..3 {
        app.get(&projects(owner.org_id), &key.secret)
            .await
            .assert_status(200);
    }
    app.flush_api_calls().await;
    assert_eq!(last_used().await, Some(thirty));
    // Two minutes ago: the next use is recorded again.
    su.execute(
        "update app.api_keys set last_used_at = now() - interval '2 minutes' where id = $1",
        &[&key.id],
    )
    .await
    .unwrap();
    let old = last_used().await.unwrap();
    app.get(&projects(owner.org_id), &key.secret)
        .await
        .assert_status(200);
    app.flush_api_calls().await;
    assert!(last_used().await.unwrap() > old);
}

/// With neither a key rate limit nor metering no limiter row is written, so the request
/// records the key's last use itself (still at most once a minute).
#[tokio::test]
async fn without_limits_or_metering_the_request_records_last_use() {
    let mut s = settings();
    s.rate_limits.api_key = None;
    s.usage_metering = false;
    let app = spawn_app_with(s, limits()).await;
    let owner = app.signup("Owner").await;
    let key = create_key(&app, &owner, owner.org_id, json!({"name": "plain"})).await;
    app.get(&projects(owner.org_id), &key.secret)
        .await
        .assert_status(200);
    let su = app.sql_superuser().await;
    let last: Option<chrono::DateTime<chrono::Utc>> = su
        .query_one(
            "select last_used_at from app.api_keys where id = $1",
            &[&key.id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(last.is_some(), "recorded without a flush");
}

fn small_limits(key: u32, user: u32, ip: u32) -> RateLimits {
    let per_hour = |quota| {
        Some(Quota {
            quota,
            window: Duration::from_secs(3600),
        })
    };
    RateLimits {
        api_key: per_hour(key),
        user: per_hour(user),
        ip: per_hour(ip),
    }
}

fn header<'a>(resp: &'a TestResponse, name: &str) -> &'a str {
    resp.headers
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn limits_answer_429_with_the_draft_headers_per_key_user_and_ip() {
    let mut s = settings();
    s.rate_limits = small_limits(3, 4, 1000);
    let app = spawn_app_with(s, limits()).await;
    let owner = app.signup("Owner").await;
    let key = create_key(&app, &owner, owner.org_id, json!({"name": "limited"})).await;

    // Per key: 3 per hour.
    for remaining in [2, 1, 0] {
        let ok = with_header(
            &app,
            Method::GET,
            &projects(owner.org_id),
            &key.secret,
            None,
        )
        .await;
        ok.assert_status(200);
        assert_eq!(header(&ok, "ratelimit-policy"), "\"api_key\";q=3;w=3600");
        let state = header(&ok, "ratelimit");
        assert!(
            state.starts_with(&format!("\"api_key\";r={remaining};t=")),
            "{state}"
        );
    }
    let refused = with_header(
        &app,
        Method::GET,
        &projects(owner.org_id),
        &key.secret,
        None,
    )
    .await;
    refused.assert_problem(429, "rate_limited");
    let retry: u64 = header(&refused, "retry-after").parse().unwrap();
    // GCRA: one request every 1200 s, so the next is admitted about 1200 s from now.
    assert!((1100..=1200).contains(&retry), "{retry}");
    assert!(header(&refused, "ratelimit").starts_with("\"api_key\";r=0;"));
    // Writes are refused too, and write nothing.
    app.post(&projects(owner.org_id), &key.secret, json!({"name": "no"}))
        .await
        .assert_problem(429, "rate_limited");
    // The user's own bucket in the org is separate, 4 per hour (creating the key took
    // one).
    for remaining in [2, 1, 0] {
        let ok = app.get(&projects(owner.org_id), &owner.token).await;
        ok.assert_status(200);
        assert_eq!(header(&ok, "ratelimit-policy"), "\"user\";q=4;w=3600");
        assert!(header(&ok, "ratelimit").starts_with(&format!("\"user\";r={remaining};")));
    }
    app.get(&projects(owner.org_id), &owner.token)
        .await
        .assert_problem(429, "rate_limited");
    let created = count(&app, "select count(*) from app.projects").await;
    assert_eq!(created, 0);

    // Per IP on the unauthenticated endpoints.
    let mut s = settings();
    s.rate_limits = small_limits(1000, 1000, 2);
    let app = spawn_app_with(s, limits()).await;
    for i in 0..2 {
        let ok = app
            .register(
                &format!("ip{i}@example.com"),
                crate::helpers::PASSWORD,
                "Ip",
            )
            .await;
        ok.assert_status(201);
        assert!(header(&ok, "ratelimit-policy").starts_with("\"ip\";q=2;"));
    }
    let refused = app
        .register("ip-late@example.com", crate::helpers::PASSWORD, "Ip")
        .await;
    refused.assert_problem(429, "rate_limited");
    assert!(refused.headers.contains_key("retry-after"));
    let users = count(&app, "select count(*) from app.users").await;
    assert_eq!(users, 2, "the refused registration wrote nothing");

    // A sign-in runs several credential transactions and counts once.
    let mut s = settings();
    s.rate_limits = small_limits(1000, 1000, 3);
    let app = spawn_app_with(s, limits()).await;
    app.register("once@example.com", crate::helpers::PASSWORD, "Once")
        .await
        .assert_status(201);
    for remaining in [1, 0] {
        let ok = app
            .login("once@example.com", crate::helpers::PASSWORD)
            .await;
        ok.assert_status(200);
        assert!(header(&ok, "ratelimit").starts_with(&format!("\"ip\";r={remaining};")));
    }
    app.login("once@example.com", crate::helpers::PASSWORD)
        .await
        .assert_problem(429, "rate_limited");
}

/// A quota finer than the microsecond resolution of intervals still works (it once divided
/// by a zero step).
#[tokio::test]
async fn a_huge_quota_is_not_a_division_by_zero() {
    let app = spawn_app().await;
    let su = app.sql_superuser().await;
    for limit in [1_000_000_000i32, i32::MAX] {
        let row = su
            .query_one(
                "select admitted, remaining from app.rate_limit_take('test:' || $1::int::text, $1::int, 1)",
                &[&limit],
            )
            .await
            .unwrap();
        assert!(row.get::<_, bool>(0));
        assert!(row.get::<_, i32>(1) > 0);
    }
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `palisade serve` as its own process on this test's database.
struct Server {
    child: tokio::process::Child,
    base: String,
    _data: crate::helpers::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn serve_process(db_name: &str, env: &[(&str, &str)]) -> Server {
    let socket = cluster().socket_dir().display().to_string();
    let url = |user: &str| format!("postgresql:///{db_name}?host={socket}&port=5432&user={user}");
    let data = crate::helpers::TempDir::new("palisade-test-process");
    let port = free_port();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade"));
    command
        .env("DATABASE_URL", url(db::RUNTIME_LOGIN_ROLE))
        .env("DATABASE_AUTH_URL", url(db::CREDENTIALS_LOGIN_ROLE))
        .env("DATABASE_WORKER_URL", url(db::JOBS_LOGIN_ROLE))
        .env("DATABASE_OWNER_URL", url(db::OWNER_ROLE))
        .env("PALISADE_DATA_DIR", &data.0)
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("RUST_LOG", "warn")
        .env_remove("PALISADE_ENV")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.spawn().expect("start palisade");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{base}/ready")).send().await
            && r.status() == 200
        {
            return Server {
                child,
                base,
                _data: data,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("palisade did not become ready");
}

/// 200 simultaneous requests with one key against its limit of 100, split across two
/// server processes on the same database: exactly 100 are admitted.
#[tokio::test]
async fn two_processes_admit_exactly_the_limit_between_them() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let key = create_key(&app, &owner, owner.org_id, json!({"name": "shared"})).await;
    let limits_env = [
        ("RATE_LIMIT_API_KEY", "100"),
        ("RATE_LIMIT_WINDOW_SECONDS", "3600"),
        ("DATABASE_POOL_SIZE", "8"),
    ];
    let one = serve_process(&app.db_name, &limits_env).await;
    let two = serve_process(&app.db_name, &limits_env).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let base = if i % 2 == 0 { &one.base } else { &two.base };
        let url = format!("{base}{}", projects(owner.org_id));
        let (http, secret, barrier) = (http.clone(), key.secret.clone(), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            http.get(url)
                .header("x-api-key", secret)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = std::collections::BTreeMap::new();
    for t in tasks {
        *statuses.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        [(200, 100), (429, 100)].into_iter().collect(),
        "admitted/refused across two processes"
    );
    drop((one, two));
}

/// V18 moved each key's current secret onto its row, but the functions before it serve
/// every replica until the policies that follow the migration commit, and they wrote a
/// created or rotated key's current secret into app.api_key_secrets (expires_at NULL).
/// The policies finish the move at every start: staged here as those functions would
/// have left it (the columns' NOT NULL not yet set), then migrate::run as at a start.
#[tokio::test]
async fn secrets_written_by_the_functions_before_v18_move_onto_their_keys_at_the_next_start() {
    use palisade::auth::api_key::ApiKeySecret;
    let app = spawn_app().await;
    let owner = app.signup("Vera").await;
    let org = owner.org_id;
    let rotated = create_key(&app, &owner, org, json!({"name": "rotated"})).await;
    let drifted = create_key(&app, &owner, org, json!({"name": "drifted"})).await;
    let (replacing, created) = (ApiKeySecret::generate(), ApiKeySecret::generate());
    let su = app.sql_superuser().await;
    su.batch_execute(
        "alter table app.api_key_secrets alter column expires_at drop not null;
         alter table app.api_keys alter column secret_hash drop not null;",
    )
    .await
    .unwrap();
    // A rotation by the old app.rotate_api_key(): the old secret's grace starts, the new
    // secret is a row of its own, the key's row keeps the old hash.
    su.execute(
        "insert into app.api_key_secrets (secret_hash, key_id, expires_at)
         select secret_hash, id, now() + interval '1 hour' from app.api_keys where id = $1",
        &[&rotated.id],
    )
    .await
    .unwrap();
    su.execute(
        "insert into app.api_key_secrets (secret_hash, key_id) values ($1, $2)",
        &[&replacing.hash(), &rotated.id],
    )
    .await
    .unwrap();
    // A key made by the old app.create_api_key(): no hash on its row.
    let created_id: Uuid = su
        .query_one(
            "with k as (insert into app.api_keys (org_id, name, role, start, created_by)
                        values ($1, 'created', 'member', $2, $3) returning id)
             insert into app.api_key_secrets (secret_hash, key_id) select $4, id from k
             returning key_id",
            &[&org, &created.start(), &owner.user_id, &created.hash()],
        )
        .await
        .unwrap()
        .get(0);
    // And a creator_disabled out of step with the account.
    su.execute(
        "update app.api_keys set creator_disabled = true where id = $1",
        &[&drifted.id],
    )
    .await
    .unwrap();
    with_header(&app, Method::GET, &projects(org), &drifted.secret, None)
        .await
        .assert_problem(401, "api_key_creator_disabled");

    let mut db_owner = app.sql_as(db::OWNER_ROLE).await;
    db::migrate::run(&mut db_owner).await.expect("a start");

    let hash_of = |id: Uuid| {
        let su = &su;
        async move {
            su.query_one("select secret_hash from app.api_keys where id = $1", &[&id])
                .await
                .unwrap()
                .get::<_, Vec<u8>>(0)
        }
    };
    assert_eq!(hash_of(rotated.id).await, replacing.hash());
    assert_eq!(hash_of(created_id).await, created.hash());
    let left: Vec<(Uuid, bool)> = su
        .query(
            "select key_id, expires_at > now() from app.api_key_secrets order by key_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        left,
        [(rotated.id, true)],
        "only the replaced secret, in its grace"
    );
    let nullable: i64 = su
        .query_one(
            "select count(*) from pg_catalog.pg_attribute
              where not attnotnull and ((attrelid = 'app.api_keys'::regclass and attname = 'secret_hash')
                 or (attrelid = 'app.api_key_secrets'::regclass and attname = 'expires_at'))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(nullable, 0, "both columns NOT NULL again");
    // Every secret works as it should: the rotated key's old one in its grace and its
    // new one, the key created in between, and the drifted key again.
    for secret in [
        rotated.secret.as_str(),
        replacing.expose(),
        created.expose(),
        drifted.secret.as_str(),
    ] {
        with_header(&app, Method::GET, &projects(org), secret, None)
            .await
            .assert_status(200);
    }
}
