//! Documents against the real S3 server (s3s-fs): streamed uploads, downloads with
//! ETag / Range, text extraction by the worker, who sees and changes what, bad uploads,
//! storage accounting and purge.

use palisade::{
    storage::{ObjectKey, ObjectStore},
    workspace::purge,
};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    fixtures::{Team, team},
    helpers::{Part, TestApp, TestResponse, multipart, spawn_app, spawn_app_with},
};

fn doc_path(org: Uuid, id: &str) -> String {
    format!("/v1/orgs/{org}/documents/{id}")
}

async fn objects_of(app: &TestApp, org: Uuid) -> Vec<String> {
    app.state
        .storage
        .list(&format!("orgs/{org}/documents/"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

async fn stored_bytes(app: &TestApp, org: Uuid) -> i64 {
    app.sql_superuser()
        .await
        .query_opt(
            "select bytes from app.org_storage where org_id = $1",
            &[&org],
        )
        .await
        .unwrap()
        .map_or(0, |r| r.get(0))
}

async fn upload_text(app: &TestApp, t: &Team, name: &str, ct: &str, body: &[u8]) -> Value {
    app.upload(
        t.org_id,
        &t.member.token,
        &[Part::file(name, Some(ct), body)],
    )
    .await
    .assert_status(201)
    .clone()
}

/// `GET {path}/content` as the holder of `token`, with `headers`.
fn content_request(
    app: &TestApp,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    let mut req = app
        .http
        .request(Method::GET, format!("{}{path}/content", app.base))
        .bearer_auth(token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req
}

async fn download(
    app: &TestApp,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> TestResponse {
    app.send(content_request(app, token, path, headers)).await
}

async fn raw_download(
    app: &TestApp,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    content_request(app, token, path, headers)
        .send()
        .await
        .unwrap()
}

/// GET, GET content and DELETE of a document: 404 each.
async fn not_found_everywhere(app: &TestApp, path: &str, token: &str) {
    for (method, suffix) in [
        (Method::GET, ""),
        (Method::GET, "/content"),
        (Method::DELETE, ""),
    ] {
        app.request(method, &format!("{path}{suffix}"), Some(token), None)
            .await
            .assert_problem(404, "not_found");
    }
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn upload_download_with_etag_and_ranges_then_extracted_text() {
    let app = spawn_app().await;
    let t = team(&app, "Docs").await;
    let content = "# Notes\n\nThe quarterly zebra migration report.\n".repeat(100);
    let doc = app
        .upload(
            t.org_id,
            &t.member.token,
            &[
                Part::text("title", "  Zebra notes  "),
                Part::file("dir/../notes.md", None, content.as_bytes()),
            ],
        )
        .await;
    let doc = doc.assert_status(201);
    let id = doc["id"].as_str().unwrap().to_owned();
    assert_eq!(doc["title"], "Zebra notes");
    assert_eq!(doc["filename"], "notes.md");
    // No part Content-Type: guessed from the extension.
    assert_eq!(doc["content_type"], "text/markdown");
    assert_eq!(doc["bytes"], content.len());
    assert_eq!(doc["status"], "uploaded");
    assert_eq!(doc["created_by"], t.member.user_id.to_string());
    let sha = hex::encode(Sha256::digest(content.as_bytes()));
    assert_eq!(doc["sha256"], sha);
    assert_eq!(
        objects_of(&app, t.org_id).await,
        vec![format!("orgs/{}/documents/{id}", t.org_id)]
    );
    assert_eq!(stored_bytes(&app, t.org_id).await, content.len() as i64);

    // The whole file, as any member (the viewer here).
    let path = doc_path(t.org_id, &id);
    let full = raw_download(&app, &t.viewer.token, &path, &[]).await;
    assert_eq!(full.status(), 200);
    assert_eq!(header(&full, "content-type"), "text/markdown");
    assert_eq!(header(&full, "content-length"), content.len().to_string());
    assert_eq!(header(&full, "etag"), format!("\"{sha}\""));
    assert_eq!(header(&full, "accept-ranges"), "bytes");
    assert_eq!(header(&full, "x-content-type-options"), "nosniff");
    assert!(header(&full, "content-disposition").starts_with("attachment; filename=\"notes.md\""));
    assert_eq!(full.bytes().await.unwrap(), content.as_bytes());

    let etag = format!("\"{sha}\"");
    let cached = raw_download(&app, &t.viewer.token, &path, &[("if-none-match", &etag)]).await;
    assert_eq!(cached.status(), 304);
    assert!(cached.bytes().await.unwrap().is_empty());

    let part = raw_download(&app, &t.viewer.token, &path, &[("range", "bytes=2-8")]).await;
    assert_eq!(part.status(), 206);
    assert_eq!(
        header(&part, "content-range"),
        format!("bytes 2-8/{}", content.len())
    );
    assert_eq!(part.bytes().await.unwrap(), &content.as_bytes()[2..=8]);
    let tail = raw_download(&app, &t.viewer.token, &path, &[("range", "bytes=-5")]).await;
    assert_eq!(tail.status(), 206);
    assert_eq!(
        tail.bytes().await.unwrap(),
        &content.as_bytes()[content.len() - 5..]
    );
    // A stale If-Range: the whole file.
    let stale = raw_download(
        &app,
        &t.viewer.token,
        &path,
        &[("range", "bytes=0-3"), ("if-range", "\"old\"")],
    )
    .await;
    assert_eq!(stale.status(), 200);
    let past = download(
        &app,
        &t.viewer.token,
        &path,
        &[("range", &format!("bytes={}-", content.len()))],
    )
    .await;
    past.assert_problem(416, "range_not_satisfiable");
    assert_eq!(
        past.headers["content-range"].to_str().unwrap(),
        format!("bytes */{}", content.len())
    );

    // The worker extracts its text into searchable chunks.
    assert_eq!(app.process_documents().await, 1);
    let ready = app.get(&path, &t.viewer.token).await;
    let ready = ready.assert_status(200);
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["error"], Value::Null);
    assert_eq!(ready["text_bytes"], content.len());
    let chunks = ready["chunk_count"].as_i64().unwrap();
    assert!(chunks >= 3, "{chunks} chunks for {} bytes", content.len());
    let su = app.sql_superuser().await;
    let hits: i64 = su
        .query_one(
            "select count(*) from app.document_chunks
              where document_id = $1 and search @@ plainto_tsquery('simple', 'zebra migration')",
            &[&id.parse::<Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(hits, chunks);
    let listed = app
        .get(
            &format!("/v1/orgs/{}/documents?status=ready", t.org_id),
            &t.viewer.token,
        )
        .await;
    assert_eq!(listed.assert_status(200)["items"][0]["id"], id.as_str());
    let none = app
        .get(
            &format!("/v1/orgs/{}/documents?status=uploaded", t.org_id),
            &t.viewer.token,
        )
        .await;
    assert!(
        none.assert_status(200)["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_worker_extracts_html_and_json_and_fails_unsupported_types_with_a_reason() {
    let app = spawn_app().await;
    let t = team(&app, "Extract").await;
    let html = upload_text(
        &app,
        &t,
        "page.html",
        "text/html; charset=utf-8",
        b"<html><script>var secret = 1;</script><body><h1>Title &amp; more</h1><p>Body text</p></body></html>",
    )
    .await;
    let json_doc = upload_text(
        &app,
        &t,
        "data.json",
        "application/json",
        br#"{"name": "Ada", "tags": ["x"]}"#,
    )
    .await;
    let broken = upload_text(&app, &t, "bad.json", "application/json", b"{nope").await;
    let png = upload_text(&app, &t, "pic.png", "image/png", b"\x89PNG\r\n").await;
    let latin1 = upload_text(&app, &t, "old.txt", "text/plain", b"caf\xe9").await;
    assert_eq!(app.process_documents().await, 5);
    let su = app.sql_superuser().await;
    let text_of = async |doc: &Value| -> String {
        let id: Uuid = doc["id"].as_str().unwrap().parse().unwrap();
        su.query(
            "select content from app.document_chunks where document_id = $1 order by chunk_no",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
    };
    assert_eq!(text_of(&html).await, "Title & more\nBody text");
    assert_eq!(text_of(&json_doc).await, "name\nAda\ntags\nx");
    for (doc, reason) in [
        (&broken, "not valid JSON"),
        (&png, "image/png is not supported"),
        (&latin1, "not UTF-8"),
    ] {
        let got = app
            .get(
                &doc_path(t.org_id, doc["id"].as_str().unwrap()),
                &t.member.token,
            )
            .await;
        let got = got.assert_status(200);
        assert_eq!(got["status"], "failed", "{got}");
        assert!(got["error"].as_str().unwrap().contains(reason), "{got}");
        assert_eq!(got["chunk_count"], Value::Null);
        // A failed document is still downloadable.
        let body = raw_download(
            &app,
            &t.member.token,
            &doc_path(t.org_id, doc["id"].as_str().unwrap()),
            &[],
        )
        .await;
        assert_eq!(body.status(), 200);
    }
    let failed = app
        .get(
            &format!("/v1/orgs/{}/documents?status=failed", t.org_id),
            &t.member.token,
        )
        .await;
    assert_eq!(
        failed.assert_status(200)["items"].as_array().unwrap().len(),
        3
    );
}

async fn spawn_app_small_documents(max: u64) -> TestApp {
    let mut settings = crate::helpers::settings();
    settings.document_max_bytes = max;
    let mut limits = crate::helpers::limits();
    limits.upload_bytes = max;
    spawn_app_with(settings, limits).await
}

#[tokio::test]
async fn bad_uploads_are_refused_with_problems_and_store_nothing() {
    let app = spawn_app_small_documents(64 * 1024).await;
    let t = team(&app, "BadUp").await;
    let org = t.org_id;
    let token = &t.member.token;
    let ok = b"hello".as_slice();
    // Each a 422 `validation_failed` naming the field.
    let cases: Vec<(Vec<Part<'_>>, &str)> = vec![
        (
            vec![Part::file("empty.txt", Some("text/plain"), b"")],
            "file",
        ),
        (vec![Part::text("title", "no file")], "file"),
        (
            vec![Part::file("a.txt", None, ok), Part::text("colour", "red")],
            "colour",
        ),
        (
            vec![
                Part::text("project_id", "null"),
                Part::file("a.txt", None, ok),
            ],
            "project_id",
        ),
        (
            vec![
                Part::text("project_id", "not-a-uuid"),
                Part::file("a.txt", None, ok),
            ],
            "project_id",
        ),
        (
            vec![Part::file("a.txt", None, ok), Part::text("title", "   ")],
            "title",
        ),
        (
            vec![Part::file("a.txt", None, ok), Part::file("b.txt", None, ok)],
            "file",
        ),
    ];
    for (parts, field) in cases {
        let resp = app.upload(org, token, &parts).await;
        resp.assert_problem(422, "validation_failed");
        assert_eq!(resp.body["errors"][0]["field"], field, "{}", resp.body);
    }
    // Over DOCUMENT_MAX_BYTES: 413, whether the length is declared or streamed.
    let big = vec![b'x'; 64 * 1024 + 1];
    app.upload(org, token, &[Part::file("big.txt", None, &big)])
        .await
        .assert_problem(413, "payload_too_large");
    let (ct, body) = multipart(&[Part::file("big.txt", None, &big)]);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    let streamed = app
        .send(
            app.http
                .post(format!("{}/v1/orgs/{org}/documents", app.base))
                .bearer_auth(token)
                .header("content-type", ct)
                .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                    chunks,
                ))),
        )
        .await;
    streamed.assert_problem(413, "payload_too_large");
    // Exactly at the cap: accepted.
    let at_cap = vec![b'y'; 64 * 1024];
    let kept = app
        .upload(org, token, &[Part::file("cap.txt", None, &at_cap)])
        .await;
    let kept_id = kept.assert_status(201)["id"].as_str().unwrap().to_owned();
    // Not a form; a form cut short.
    app.post(
        &format!("/v1/orgs/{org}/documents"),
        token,
        json!({"file": "x"}),
    )
    .await
    .assert_problem(415, "unsupported_media_type");
    let (ct, body) = multipart(&[Part::file("cut.txt", None, b"0123456789")]);
    let cut = app
        .send(
            app.http
                .post(format!("{}/v1/orgs/{org}/documents", app.base))
                .bearer_auth(token)
                .header("content-type", ct)
                .body(body[..body.len() - 30].to_vec()),
        )
        .await;
    cut.assert_problem(400, "invalid_body");
    // Who may not: a viewer (refused before the upload), a stranger, a project of
    // another org.
    app.upload(org, &t.viewer.token, &[Part::file("v.txt", None, ok)])
        .await
        .assert_problem(403, "forbidden");
    let other = team(&app, "BadUpOther").await;
    app.upload(org, &other.owner.token, &[Part::file("s.txt", None, ok)])
        .await
        .assert_problem(404, "not_found");
    let foreign = app
        .post(
            &format!("/v1/orgs/{}/projects", other.org_id),
            &other.owner.token,
            json!({"name": "Theirs"}),
        )
        .await;
    let foreign = foreign.assert_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for parts in [
        vec![
            Part::text("project_id", &foreign),
            Part::file("p.txt", None, ok),
        ],
        // Named after the file: refused by the insert's policy, the object deleted.
        vec![
            Part::file("p.txt", None, ok),
            Part::text("project_id", &foreign),
        ],
    ] {
        app.upload(org, token, &parts)
            .await
            .assert_problem(404, "not_found");
    }
    // Nothing half-written: one row, one object, its bytes counted once.
    let list = app.get(&format!("/v1/orgs/{org}/documents"), token).await;
    let items = list.assert_status(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], kept_id.as_str());
    assert_eq!(
        objects_of(&app, org).await,
        vec![format!("orgs/{org}/documents/{kept_id}")]
    );
    assert!(objects_of(&app, other.org_id).await.is_empty());
    assert_eq!(stored_bytes(&app, org).await, 64 * 1024);
}

#[tokio::test]
async fn documents_follow_roles_projects_and_tenants_through_every_route() {
    let app = spawn_app().await;
    let t = team(&app, "DocAcl").await;
    let org = t.org_id;
    let mine = upload_text(&app, &t, "m.txt", "text/plain", b"member's file").await;
    let mine_path = doc_path(org, mine["id"].as_str().unwrap());
    // Another org: 404 through every route, an empty list of its own.
    let other = team(&app, "DocAclOther").await;
    not_found_everywhere(&app, &mine_path, &other.owner.token).await;
    app.patch(&mine_path, &other.owner.token, json!({"title": "x"}))
        .await
        .assert_problem(404, "not_found");
    // Its own org's path with the victim's document id: not found either.
    let cross = doc_path(other.org_id, mine["id"].as_str().unwrap());
    app.get(&format!("{cross}/content"), &other.owner.token)
        .await
        .assert_problem(404, "not_found");
    // Writers: the uploader or an org admin; a viewer reads only.
    app.patch(&mine_path, &t.viewer.token, json!({"title": "v"}))
        .await
        .assert_problem(403, "forbidden");
    app.delete(&mine_path, &t.viewer.token)
        .await
        .assert_problem(403, "forbidden");
    let other_member = app.signup("DocAclPeer").await;
    crate::fixtures::add_member(&app, org, other_member.user_id, "member").await;
    app.delete(&mine_path, &other_member.token)
        .await
        .assert_problem(403, "forbidden");
    let renamed = app
        .patch(&mine_path, &t.member.token, json!({"title": "Renamed"}))
        .await;
    assert_eq!(renamed.assert_status(200)["title"], "Renamed");
    assert_ne!(renamed.body["updated_at"], mine["updated_at"]);
    // A restricted project: its documents are hidden from a plain member, shown to its
    // members and org admins.
    let project = app
        .post(
            &format!("/v1/orgs/{org}/projects"),
            &t.admin.token,
            json!({"name": "Vault", "access": "restricted"}),
        )
        .await;
    let project = project.assert_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret = app
        .upload(
            org,
            &t.admin.token,
            &[
                Part::text("project_id", &project),
                Part::file("s.txt", None, b"secret plans"),
            ],
        )
        .await;
    let secret = secret.assert_status(201)["id"].as_str().unwrap().to_owned();
    let secret_path = doc_path(org, &secret);
    not_found_everywhere(&app, &secret_path, &t.member.token).await;
    app.upload(
        org,
        &t.member.token,
        &[
            Part::text("project_id", &project),
            Part::file("x.txt", None, b"x"),
        ],
    )
    .await
    .assert_problem(404, "not_found");
    let listed = app
        .get(&format!("/v1/orgs/{org}/documents"), &t.member.token)
        .await;
    let ids: Vec<&str> = listed.assert_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![mine["id"].as_str().unwrap()]);
    // Made a project viewer: reads, cannot upload.
    app.request(
        Method::PUT,
        &format!(
            "/v1/orgs/{org}/projects/{project}/members/{}",
            t.member.user_id
        ),
        Some(&t.admin.token),
        Some(json!({"role": "viewer"})),
    )
    .await
    .assert_status(200);
    let body = raw_download(&app, &t.member.token, &secret_path, &[]).await;
    assert_eq!(body.status(), 200);
    assert_eq!(body.bytes().await.unwrap(), b"secret plans".as_slice());
    app.upload(
        org,
        &t.member.token,
        &[
            Part::text("project_id", &project),
            Part::file("x.txt", None, b"x"),
        ],
    )
    .await
    .assert_problem(403, "forbidden");
    // The org's admin deletes the member's document.
    app.delete(&mine_path, &t.admin.token)
        .await
        .assert_status(204);
    app.get(&mine_path, &t.member.token)
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn deleting_documents_releases_storage_and_purges_objects() {
    let app = spawn_app().await;
    let t = team(&app, "DocPurge").await;
    let a = upload_text(&app, &t, "a.txt", "text/plain", &[b'a'; 1000]).await;
    let b = upload_text(&app, &t, "b.txt", "text/plain", &[b'b'; 500]).await;
    assert_eq!(stored_bytes(&app, t.org_id).await, 1500);
    app.delete(
        &doc_path(t.org_id, a["id"].as_str().unwrap()),
        &t.member.token,
    )
    .await
    .assert_status(204);
    assert_eq!(stored_bytes(&app, t.org_id).await, 500);
    assert_eq!(objects_of(&app, t.org_id).await.len(), 2);
    assert_eq!(purge::purge_objects(&app.state).await.unwrap(), 1);
    assert_eq!(
        objects_of(&app, t.org_id).await,
        vec![format!(
            "orgs/{}/documents/{}",
            t.org_id,
            b["id"].as_str().unwrap()
        )]
    );
    // A document deleted while the worker holds it: finishing it changes nothing.
    assert_eq!(app.process_documents().await, 1);
    app.delete(&format!("/v1/orgs/{}", t.org_id), &t.owner.token)
        .await
        .assert_status(204);
    assert_eq!(purge::purge_objects(&app.state).await.unwrap(), 1);
    assert!(objects_of(&app, t.org_id).await.is_empty());
}

#[tokio::test]
async fn the_storage_quota_refuses_an_upload_and_keeps_no_object() {
    let app = spawn_app().await;
    let t = team(&app, "DocQuota").await;
    let su = app.sql_superuser().await;
    su.execute(
        "update app.plan_limits set included = 1000 where plan_id = 'free' and meter = 'storage_bytes'",
        &[],
    )
    .await
    .unwrap();
    app.set_plan(t.org_id, "free").await;
    upload_text(&app, &t, "a.txt", "text/plain", &[b'a'; 800]).await;
    let refused = app
        .upload(
            t.org_id,
            &t.member.token,
            &[Part::file("b.txt", None, &[b'b'; 300])],
        )
        .await;
    refused.assert_problem(402, "plan_limit_reached");
    assert_eq!(refused.body["meter"], "storage_bytes");
    assert_eq!(objects_of(&app, t.org_id).await.len(), 1);
    assert_eq!(stored_bytes(&app, t.org_id).await, 800);
}

#[tokio::test]
async fn a_corrupted_document_never_downloads_whole_nor_gets_processed() {
    let app = spawn_app().await;
    let t = team(&app, "DocCorrupt").await;
    let doc = upload_text(&app, &t, "c.txt", "text/plain", b"original").await;
    let id = doc["id"].as_str().unwrap();
    let key = ObjectKey::document(t.org_id, id.parse().unwrap());
    // Same length, other bytes: only the checksum can tell.
    app.state
        .storage
        .put(&key, "tampered".into(), "text/plain")
        .await
        .unwrap();
    // The transfer breaks: before the headers (nothing was sent yet) or in the body.
    let sent = content_request(&app, &t.member.token, &doc_path(t.org_id, id), &[])
        .send()
        .await;
    let completed = match sent {
        Err(_) => false,
        Ok(resp) => resp.bytes().await.is_ok(),
    };
    assert!(
        !completed,
        "a download whose bytes fail the checksum must break, not complete"
    );
    assert_eq!(app.process_documents().await, 1);
    let got = app.get(&doc_path(t.org_id, id), &t.member.token).await;
    assert_eq!(got.assert_status(200)["status"], "failed");
    assert!(got.body["error"].as_str().unwrap().contains("checksum"));
    // An API key of the org reads and uploads like a member.
    let key = crate::attacks::create_key(&app, &t.owner, t.org_id, "docs", "member").await;
    let (ct, body) = multipart(&[Part::file("k.txt", None, b"from a key")]);
    let by_key = app
        .send(
            app.http
                .post(format!("{}/v1/orgs/{}/documents", app.base, t.org_id))
                .header("X-API-Key", &key.secret)
                .header("content-type", ct)
                .body(body),
        )
        .await;
    let by_key = by_key.assert_status(201);
    assert_eq!(by_key["created_by"], Value::Null);
    assert_eq!(by_key["created_by_api_key"], key.id.to_string());
    assert_eq!(by_key["project_id"], Value::Null);
}
