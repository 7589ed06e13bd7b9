//! Conversations, their events in the real S3 server (s3s-fs), the live tail, project
//! access, purge and reconcile.

use std::time::Duration;

use futures_util::StreamExt;
use palisade::{
    db::Lane,
    storage::{ObjectKey, ObjectStore},
    workspace::purge,
};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    fixtures::{Team, add_member, team},
    helpers::{Signup, TestApp, spawn_app},
};

fn conv_path(org: Uuid, id: &str) -> String {
    format!("/v1/orgs/{org}/conversations/{id}")
}

/// A new conversation of `who`'s in `org` (201), its id.
pub(crate) async fn conversation(app: &TestApp, who: &Signup, org: Uuid, body: Value) -> String {
    let resp = app
        .post(&format!("/v1/orgs/{org}/conversations"), &who.token, body)
        .await;
    resp.assert_status(201)["id"].as_str().unwrap().to_owned()
}

async fn append(app: &TestApp, who: &Signup, org: Uuid, id: &str, events: Vec<Value>) -> Value {
    app.post(
        &format!("{}/events", conv_path(org, id)),
        &who.token,
        json!({ "events": events }),
    )
    .await
    .assert_status(201)
    .clone()
}

async fn all_events(app: &TestApp, who: &Signup, org: Uuid, id: &str, page: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let resp = app
            .get(
                &format!("{}/events?after={after}&limit={page}", conv_path(org, id)),
                &who.token,
            )
            .await;
        let body = resp.assert_status(200);
        out.extend(body["items"].as_array().unwrap().iter().cloned());
        match body["next_after"].as_i64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

/// Every object under the org's prefix in the bucket (listing is for tests and
/// reconcile; the server never lists).
async fn objects_of(app: &TestApp, org: Uuid) -> Vec<String> {
    app.state
        .storage
        .list(&format!("orgs/{org}/"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

#[tokio::test]
async fn events_round_trip_across_segments_with_usage_counters() {
    let app = spawn_app().await;
    let t = team(&app, "Rt").await;
    let id = conversation(
        &app,
        &t.member,
        t.org_id,
        json!({"title": "Fix the build", "visibility": "org", "pr_numbers": [7, 9],
               "selected_repository": "acme/api", "llm_model": "gpt-x"}),
    )
    .await;
    let mut sent = Vec::new();
    for (batch, size) in [3, 1, 5, 2].into_iter().enumerate() {
        let events: Vec<Value> = (0..size)
            .map(|i| {
                json!({"batch": batch, "i": i, "text": "line\nbreak é",
                            "usage": {"cost": 0.25, "prompt_tokens": 10, "completion_tokens": 1}})
            })
            .collect();
        let first = sent.len() as i64 + 1;
        let r = append(&app, &t.member, t.org_id, &id, events.clone()).await;
        assert_eq!(r["first_seq"], first);
        assert_eq!(r["last_seq"], first + size as i64 - 1);
        sent.extend(events);
    }
    // Pages of 4 cross every segment boundary (3|1|5|2).
    let got = all_events(&app, &t.member, t.org_id, &id, 4).await;
    assert_eq!(got.len(), sent.len());
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(g["seq"], i as i64 + 1);
        assert_eq!(&g["event"], s);
    }
    // A page from the middle of a segment.
    let mid = app
        .get(
            &format!("{}/events?after=5&limit=2", conv_path(t.org_id, &id)),
            &t.member.token,
        )
        .await;
    let seqs: Vec<i64> = mid.assert_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [6, 7]);
    assert_eq!(mid.body["next_after"], 7);
    let c = app.get(&conv_path(t.org_id, &id), &t.member.token).await;
    let c = c.assert_status(200);
    assert_eq!(c["event_count"], 11);
    assert_eq!(c["prompt_tokens"], 110);
    assert_eq!(c["completion_tokens"], 11);
    assert_eq!(c["total_tokens"], 121);
    assert!((c["accumulated_cost"].as_f64().unwrap() - 2.75).abs() < 1e-9);
    assert_eq!(c["pr_numbers"], json!([7, 9]));
    // One object per batch, under the org's prefix, named by the segment index.
    assert_eq!(objects_of(&app, t.org_id).await.len(), 4);
    let su = app.sql_superuser().await;
    let keys: Vec<String> = su
        .query(
            "select object_key from app.conversation_segments where conversation_id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut listed = objects_of(&app, t.org_id).await;
    let mut keys_sorted = keys.clone();
    listed.sort();
    keys_sorted.sort();
    assert_eq!(listed, keys_sorted);
}

#[tokio::test]
async fn sixteen_concurrent_appenders_get_a_gap_free_sequence() {
    let app = spawn_app().await;
    let t = team(&app, "Conc").await;
    let id = conversation(&app, &t.member, t.org_id, json!({})).await;
    let writers = (0..16).map(|w| {
        let (app, token, path) = (&app, &t.member.token, conv_path(t.org_id, &id));
        async move {
            let mut ranges = Vec::new();
            for b in 0..3 {
                let events: Vec<Value> = (0..4).map(|i| json!({"w": w, "b": b, "i": i})).collect();
                let r = app
                    .post(
                        &format!("{path}/events"),
                        token,
                        json!({ "events": events }),
                    )
                    .await;
                let r = r.assert_status(201);
                ranges.push((
                    r["first_seq"].as_i64().unwrap(),
                    r["last_seq"].as_i64().unwrap(),
                ));
            }
            ranges
        }
    });
    let mut ranges: Vec<(i64, i64)> = futures_util::future::join_all(writers)
        .await
        .into_iter()
        .flatten()
        .collect();
    ranges.sort();
    let mut next = 1;
    for (first, last) in &ranges {
        assert_eq!(*first, next, "gap or overlap at {first}: {ranges:?}");
        assert_eq!(last - first, 3);
        next = last + 1;
    }
    assert_eq!(next - 1, 16 * 3 * 4);
    let events = all_events(&app, &t.member, t.org_id, &id, 1000).await;
    assert_eq!(events.len(), 192);
    // Each batch's four events are contiguous and in order.
    for chunk in events.chunks(4) {
        let (w, b) = (&chunk[0]["event"]["w"], &chunk[0]["event"]["b"]);
        for (i, e) in chunk.iter().enumerate() {
            assert_eq!((&e["event"]["w"], &e["event"]["b"]), (w, b));
            assert_eq!(e["event"]["i"], i);
        }
    }
}

#[tokio::test]
async fn private_conversations_and_writer_rules_are_enforced_by_policies() {
    let app = spawn_app().await;
    let t = team(&app, "Vis").await;
    let private = conversation(&app, &t.member, t.org_id, json!({"title": "mine"})).await;
    let shared = conversation(&app, &t.member, t.org_id, json!({"visibility": "org"})).await;
    append(&app, &t.member, t.org_id, &private, vec![json!({"x": 1})]).await;
    // Another member: the private one does not exist for them, through every route.
    let other = app.signup("VisOther").await;
    add_member(&app, t.org_id, other.user_id, "member").await;
    let p = conv_path(t.org_id, &private);
    for path in [
        p.clone(),
        format!("{p}/events"),
        format!("{p}/events/stream"),
    ] {
        app.get(&path, &other.token)
            .await
            .assert_problem(404, "not_found");
    }
    app.post(
        &format!("{p}/events"),
        &other.token,
        json!({"events": [{"a": 1}]}),
    )
    .await
    .assert_problem(404, "not_found");
    app.patch(&p, &other.token, json!({"title": "x"}))
        .await
        .assert_problem(404, "not_found");
    app.delete(&p, &other.token)
        .await
        .assert_problem(404, "not_found");
    let listed = app
        .get(
            &format!("/v1/orgs/{}/conversations", t.org_id),
            &other.token,
        )
        .await;
    let ids: Vec<&str> = listed.assert_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [shared.as_str()]);
    // The shared one: readable, but only its creator or an admin writes it.
    let s = conv_path(t.org_id, &shared);
    app.get(&s, &other.token).await.assert_status(200);
    app.post(
        &format!("{s}/events"),
        &other.token,
        json!({"events": [{"a": 1}]}),
    )
    .await
    .assert_problem(403, "forbidden");
    app.patch(&s, &other.token, json!({"title": "x"}))
        .await
        .assert_problem(403, "forbidden");
    app.get(&s, &t.viewer.token).await.assert_status(200);
    app.post(
        &format!("/v1/orgs/{}/conversations", t.org_id),
        &t.viewer.token,
        json!({}),
    )
    .await
    .assert_problem(403, "forbidden");
    // An admin sees and changes the private one.
    app.get(&p, &t.admin.token).await.assert_status(200);
    append(
        &app,
        &t.admin,
        t.org_id,
        &private,
        vec![json!({"by": "admin"})],
    )
    .await;
    // Nothing was written by the refused appends.
    let c = app.get(&s, &t.member.token).await;
    assert_eq!(c.assert_status(200)["event_count"], 0);
    assert_eq!(objects_of(&app, t.org_id).await.len(), 2);
}

#[tokio::test]
async fn another_org_sees_nothing_through_any_route() {
    let app = spawn_app().await;
    let t = team(&app, "Iso").await;
    let id = conversation(&app, &t.owner, t.org_id, json!({"visibility": "org"})).await;
    append(
        &app,
        &t.owner,
        t.org_id,
        &id,
        vec![json!({"secret": "s3cr3t"})],
    )
    .await;
    let stranger = app.signup("IsoStranger").await;
    let p = conv_path(t.org_id, &id);
    for path in [
        p.clone(),
        format!("{p}/events"),
        format!("{p}/events/stream"),
    ] {
        app.get(&path, &stranger.token)
            .await
            .assert_problem(404, "not_found");
    }
    // The stranger's own org with the victim's conversation id: not found either.
    let own = conv_path(stranger.org_id, &id);
    for path in [
        own.clone(),
        format!("{own}/events"),
        format!("{own}/events/stream"),
    ] {
        app.get(&path, &stranger.token)
            .await
            .assert_problem(404, "not_found");
    }
    app.post(
        &format!("{own}/events"),
        &stranger.token,
        json!({"events": [{"a": 1}]}),
    )
    .await
    .assert_problem(404, "not_found");
    app.delete(&own, &stranger.token)
        .await
        .assert_problem(404, "not_found");
    // The runtime role with the stranger's sealed context sees no row of the victim.
    let mut db = app.sql_runtime().await;
    let tx = crate::fixtures::runtime_tx(&app, &mut db, &stranger, Some(stranger.org_id)).await;
    for table in ["conversations", "conversation_segments", "org_storage"] {
        let n: i64 = tx
            .query_one(&format!("select count(*) from app.{table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table}");
    }
}

#[tokio::test]
async fn restricted_project_hides_its_data_from_members_outside_it() {
    let app = spawn_app().await;
    let t = team(&app, "Rp").await;
    let project = app
        .post(
            &format!("/v1/orgs/{}/projects", t.org_id),
            &t.admin.token,
            json!({"name": "Secret", "access": "restricted"}),
        )
        .await;
    let project_id = project.assert_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(project.body["access"], "restricted");
    let id = conversation(
        &app,
        &t.admin,
        t.org_id,
        json!({"visibility": "org", "project_id": project_id}),
    )
    .await;
    let p = conv_path(t.org_id, &id);
    // A plain member: the project, its conversation and its events are not found.
    app.get(&p, &t.member.token)
        .await
        .assert_problem(404, "not_found");
    app.get(&format!("{p}/events"), &t.member.token)
        .await
        .assert_problem(404, "not_found");
    let projects = app
        .get(&format!("/v1/orgs/{}/projects", t.org_id), &t.member.token)
        .await;
    assert!(
        projects.assert_status(200)["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    app.post(
        &format!("/v1/orgs/{}/conversations", t.org_id),
        &t.member.token,
        json!({"project_id": project_id}),
    )
    .await
    .assert_problem(404, "not_found");
    // A member cannot add themselves.
    let member_path = format!(
        "/v1/orgs/{}/projects/{project_id}/members/{}",
        t.org_id, t.member.user_id
    );
    app.request(
        Method::PUT,
        &member_path,
        Some(&t.member.token),
        Some(json!({"role": "editor"})),
    )
    .await
    .assert_problem(404, "not_found");
    // Added as a project viewer by the admin: sees it, cannot write into the project.
    let added = app
        .request(
            Method::PUT,
            &member_path,
            Some(&t.admin.token),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(added.assert_status(200)["role"], "viewer");
    app.get(&p, &t.member.token).await.assert_status(200);
    app.post(
        &format!("/v1/orgs/{}/conversations", t.org_id),
        &t.member.token,
        json!({"project_id": project_id}),
    )
    .await
    .assert_problem(403, "forbidden");
    // An editor writes.
    app.request(
        Method::PUT,
        &member_path,
        Some(&t.admin.token),
        Some(json!({"role": "editor"})),
    )
    .await
    .assert_status(200);
    conversation(&app, &t.member, t.org_id, json!({"project_id": project_id})).await;
    // Removed: not found again; and a project member cannot reopen the project.
    app.delete(&member_path, &t.admin.token)
        .await
        .assert_status(204);
    app.get(&p, &t.member.token)
        .await
        .assert_problem(404, "not_found");
    let reopen = app
        .patch(
            &format!("/v1/orgs/{}/projects/{project_id}", t.org_id),
            &t.member.token,
            json!({"access": "open"}),
        )
        .await;
    reopen.assert_problem(404, "not_found");
    let list = app
        .get(
            &format!("/v1/orgs/{}/projects/{project_id}/members", t.org_id),
            &t.admin.token,
        )
        .await;
    assert!(
        list.assert_status(200)["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn bad_batches_are_refused_and_write_nothing() {
    let app = spawn_app_large_bodies().await;
    let t = team(&app, "Bad").await;
    let id = conversation(&app, &t.member, t.org_id, json!({})).await;
    let path = format!("{}/events", conv_path(t.org_id, &id));
    let too_many: Vec<Value> = (0..1001).map(|i| json!({ "i": i })).collect();
    app.post(&path, &t.member.token, json!({ "events": too_many }))
        .await
        .assert_problem(422, "validation_failed");
    let big = "x".repeat(300 * 1024);
    app.post(&path, &t.member.token, json!({"events": [{"big": big}]}))
        .await
        .assert_problem(422, "validation_failed");
    for prs in [
        json!([0]),
        json!([-5]),
        json!((1..=101).collect::<Vec<i32>>()),
    ] {
        app.post(
            &format!("/v1/orgs/{}/conversations", t.org_id),
            &t.member.token,
            json!({ "pr_numbers": prs }),
        )
        .await
        .assert_problem(422, "validation_failed");
    }
    app.get(&format!("{path}?after=1000000000001"), &t.member.token)
        .await
        .assert_status(400);
    for bad in ["abc", "-1", "1000000000001"] {
        let resp = app
            .send(
                app.http
                    .get(format!("{}{path}/stream", app.base))
                    .bearer_auth(&t.member.token)
                    .header("Last-Event-ID", bad),
            )
            .await;
        resp.assert_problem(400, "invalid_parameter");
    }
    app.post(&path, &t.member.token, json!({"events": []}))
        .await
        .assert_problem(422, "validation_failed");
    app.post(&path, &t.member.token, json!({"events": [1, "two"]}))
        .await
        .assert_problem(422, "validation_failed");
    let raw = app
        .send(
            app.http
                .post(format!("{}{path}", app.base))
                .bearer_auth(&t.member.token)
                .header("content-type", "application/json")
                .body("{\"events\": [{\"a\": 1}"),
        )
        .await;
    raw.assert_problem(400, "invalid_body");
    app.get(&format!("{path}?after=-1"), &t.member.token)
        .await
        .assert_status(400);
    let c = app.get(&conv_path(t.org_id, &id), &t.member.token).await;
    assert_eq!(c.assert_status(200)["event_count"], 0);
    assert!(objects_of(&app, t.org_id).await.is_empty());
}

async fn spawn_app_large_bodies() -> TestApp {
    let mut limits = crate::helpers::limits();
    limits.max_body_bytes = 1024 * 1024;
    crate::helpers::spawn_app_with(crate::helpers::settings(), limits).await
}

#[tokio::test]
async fn storage_quota_refuses_in_the_append_transaction_and_leaves_no_object() {
    let app = spawn_app().await;
    let t = team(&app, "Quota").await;
    let su = app.sql_superuser().await;
    su.execute(
        "update app.plan_limits set included = 300 where plan_id = 'free' and meter = 'storage_bytes'",
        &[],
    )
    .await
    .unwrap();
    app.set_plan(t.org_id, "free").await;
    let id = conversation(&app, &t.member, t.org_id, json!({})).await;
    append(
        &app,
        &t.member,
        t.org_id,
        &id,
        vec![json!({"pad": "x".repeat(200)})],
    )
    .await;
    let refused = app
        .post(
            &format!("{}/events", conv_path(t.org_id, &id)),
            &t.member.token,
            json!({"events": [{"pad": "y".repeat(200)}]}),
        )
        .await;
    refused.assert_problem(402, "plan_limit_reached");
    assert_eq!(refused.body["meter"], "storage_bytes");
    assert_eq!(objects_of(&app, t.org_id).await.len(), 1);
    let used: i64 = su
        .query_one(
            "select bytes from app.org_storage where org_id = $1",
            &[&t.org_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(used > 200 && used < 300, "{used}");
}

#[tokio::test]
async fn deleting_a_conversation_or_an_org_purges_its_objects() {
    let app = spawn_app().await;
    let t = team(&app, "Purge").await;
    let a = conversation(&app, &t.owner, t.org_id, json!({})).await;
    let b = conversation(&app, &t.owner, t.org_id, json!({})).await;
    for id in [&a, &b] {
        append(&app, &t.owner, t.org_id, id, vec![json!({"n": 1})]).await;
        append(&app, &t.owner, t.org_id, id, vec![json!({"n": 2})]).await;
    }
    assert_eq!(objects_of(&app, t.org_id).await.len(), 4);
    app.delete(&conv_path(t.org_id, &a), &t.owner.token)
        .await
        .assert_status(204);
    // Rows go at once; the objects wait in the durable queue until the worker runs.
    app.get(&conv_path(t.org_id, &a), &t.owner.token)
        .await
        .assert_problem(404, "not_found");
    assert_eq!(objects_of(&app, t.org_id).await.len(), 4);
    assert_eq!(purge::purge_objects(&app.state).await.unwrap(), 2);
    assert_eq!(objects_of(&app, t.org_id).await.len(), 2);
    // The whole org.
    app.delete(&format!("/v1/orgs/{}", t.org_id), &t.owner.token)
        .await
        .assert_status(204);
    assert_eq!(purge::purge_objects(&app.state).await.unwrap(), 2);
    assert!(objects_of(&app, t.org_id).await.is_empty());
    let su = app.sql_superuser().await;
    let queued: i64 = su
        .query_one("select count(*) from app.storage_purge", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 0);
}

#[tokio::test]
async fn reconcile_removes_an_orphan_of_a_crash_between_put_and_commit() {
    let app = spawn_app().await;
    let t = team(&app, "Orphan").await;
    let id = conversation(&app, &t.owner, t.org_id, json!({})).await;
    append(&app, &t.owner, t.org_id, &id, vec![json!({"kept": true})]).await;
    // The crash: the object was written, its row never committed.
    let orphan = ObjectKey::segment(t.org_id, id.parse().unwrap(), Uuid::new_v4());
    app.state
        .storage
        .put(&orphan, "{\"lost\":true}\n".into(), "application/x-ndjson")
        .await
        .unwrap();
    // Never served: the conversation still has its one event.
    let events = all_events(&app, &t.owner, t.org_id, &id, 100).await;
    assert_eq!(events.len(), 1);
    let worker = app.sql_lane(Lane::Jobs).await;
    // Within the grace period it may be an append in flight: left alone.
    let young = purge::reconcile(&worker, &app.state.storage, true, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!((young.young, young.deleted, young.live), (1, 0, 1));
    let dry = purge::reconcile(&worker, &app.state.storage, false, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(dry.orphans.len(), 1);
    assert_eq!(dry.orphans[0].key, orphan.as_str());
    assert_eq!(dry.deleted, 0);
    assert_eq!(objects_of(&app, t.org_id).await.len(), 2);
    let applied = purge::reconcile(&worker, &app.state.storage, true, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((applied.deleted, applied.live), (1, 1));
    assert_eq!(objects_of(&app, t.org_id).await.len(), 1);
    assert_eq!(
        all_events(&app, &t.owner, t.org_id, &id, 100).await.len(),
        1
    );
}

#[tokio::test]
async fn a_corrupted_segment_is_a_500_never_wrong_data() {
    let app = spawn_app().await;
    let t = team(&app, "Corrupt").await;
    let id = conversation(&app, &t.owner, t.org_id, json!({})).await;
    append(&app, &t.owner, t.org_id, &id, vec![json!({"n": 1})]).await;
    let key = app
        .state
        .storage
        .list(&format!("orgs/{}/", t.org_id))
        .await
        .unwrap()[0]
        .key
        .clone();
    app.state
        .storage
        .put(
            &ObjectKey::from_stored(&key).unwrap(),
            "{\"n\":2}\n".into(),
            "application/x-ndjson",
        )
        .await
        .unwrap();
    app.get(
        &format!("{}/events", conv_path(t.org_id, &id)),
        &t.owner.token,
    )
    .await
    .assert_problem(500, "internal_error");
}

/// Reads SSE `data:` lines from a streaming response until `n` events or the deadline.
async fn sse_events(resp: reqwest::Response, n: usize, deadline: Duration) -> (Vec<Value>, bool) {
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    let ended = tokio::time::timeout(deadline, async {
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { return true };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                for line in block.lines() {
                    if let Some(data) = line.strip_prefix("data: ") {
                        events.push(serde_json::from_str::<Value>(data).unwrap());
                    }
                }
                if events.len() >= n {
                    return false;
                }
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    (events, ended)
}

async fn open_stream(
    app: &TestApp,
    who: &Signup,
    org: Uuid,
    id: &str,
    last: Option<i64>,
) -> reqwest::Response {
    let mut req = app
        .http
        .get(format!("{}{}/events/stream", app.base, conv_path(org, id)))
        .bearer_auth(&who.token);
    if let Some(last) = last {
        req = req.header("Last-Event-ID", last.to_string());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    resp
}

#[tokio::test]
async fn live_tail_resumes_delivers_new_events_and_ends_on_access_loss() {
    let app = spawn_app().await;
    let t: Team = team(&app, "Tail").await;
    let id = conversation(&app, &t.owner, t.org_id, json!({"visibility": "org"})).await;
    append(
        &app,
        &t.owner,
        t.org_id,
        &id,
        (1..=3).map(|i| json!({ "n": i })).collect(),
    )
    .await;
    // Resume after event 2: event 3 first, then a live one.
    let resp = open_stream(&app, &t.member, t.org_id, &id, Some(2)).await;
    let reader = tokio::spawn(sse_events(resp, 2, Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    append(&app, &t.owner, t.org_id, &id, vec![json!({"n": 4})]).await;
    let (events, _) = reader.await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [3, 4]);
    assert_eq!(events[1]["event"]["n"], 4);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Made private: the member's tail ends (within 5 s), the owner's goes on.
    let member_tail = open_stream(&app, &t.member, t.org_id, &id, Some(4)).await;
    let member_reader = tokio::spawn(sse_events(member_tail, 1, Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lost_at = std::time::Instant::now();
    app.patch(
        &conv_path(t.org_id, &id),
        &t.owner.token,
        json!({"visibility": "private"}),
    )
    .await
    .assert_status(200);
    let (got, ended) = member_reader.await.unwrap();
    assert!(ended && got.is_empty(), "{got:?}");
    assert!(
        lost_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        lost_at.elapsed()
    );
    // Removed from the org: the admin's tail of an org conversation ends too.
    app.patch(
        &conv_path(t.org_id, &id),
        &t.owner.token,
        json!({"visibility": "org"}),
    )
    .await
    .assert_status(200);
    let admin_tail = open_stream(&app, &t.admin, t.org_id, &id, Some(4)).await;
    let admin_reader = tokio::spawn(sse_events(admin_tail, 1, Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let su = app.sql_superuser().await;
    su.execute(
        "delete from app.memberships where org_id = $1 and user_id = $2",
        &[&t.org_id, &t.admin.user_id],
    )
    .await
    .unwrap();
    let (got, ended) = admin_reader.await.unwrap();
    assert!(ended && got.is_empty(), "{got:?}");
}

/// A live tail is one request: its re-checks (every few seconds, and on each wake-up)
/// take no rate-limit token and count no API call, for a user and for a key.
#[tokio::test]
async fn a_live_tail_counts_as_one_request() {
    let app = spawn_app().await;
    let t = team(&app, "Once").await;
    let id = conversation(&app, &t.owner, t.org_id, json!({"visibility": "org"})).await;
    append(&app, &t.owner, t.org_id, &id, vec![json!({"n": 1})]).await;
    let key = crate::attacks::create_key(&app, &t.owner, t.org_id, "tail", "viewer").await;
    let su = app.sql_superuser().await;
    let calls = async || -> i64 {
        su.query_one(
            "select coalesce(sum(calls), 0)::bigint from app.rate_limits where org_id = $1",
            &[&t.org_id],
        )
        .await
        .unwrap()
        .get(0)
    };
    let url = format!("{}{}/events/stream", app.base, conv_path(t.org_id, &id));
    let by_user = app
        .http
        .get(&url)
        .bearer_auth(&t.member.token)
        .send()
        .await
        .unwrap();
    let by_key = app
        .http
        .get(&url)
        .bearer_auth(&key.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (by_user.status().as_u16(), by_key.status().as_u16()),
        (200, 200)
    );
    let opened = calls().await;
    // Two timed re-checks (every 4 s) and one wake-up by the owner's append.
    tokio::time::sleep(Duration::from_secs(5)).await;
    append(&app, &t.owner, t.org_id, &id, vec![json!({"n": 2})]).await;
    let (user_events, _) = sse_events(by_user, 2, Duration::from_secs(5)).await;
    let (key_events, _) = sse_events(by_key, 2, Duration::from_secs(5)).await;
    assert_eq!((user_events.len(), key_events.len()), (2, 2));
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Only the owner's append counted since the streams opened.
    assert_eq!(calls().await, opened + 1);
}

/// A live tail lasts `LIVE_TAIL_MAX_SECONDS`, then ends; the client resumes where it was.
#[tokio::test]
async fn a_live_tail_ends_after_its_lifetime_and_resumes() {
    let mut settings = crate::helpers::settings();
    settings.live_tail_max = Duration::from_secs(1);
    let app = crate::helpers::spawn_app_with(settings, crate::helpers::limits()).await;
    let t = team(&app, "Life").await;
    let id = conversation(&app, &t.owner, t.org_id, json!({})).await;
    append(
        &app,
        &t.owner,
        t.org_id,
        &id,
        vec![json!({"n": 1}), json!({"n": 2})],
    )
    .await;
    let first = open_stream(&app, &t.owner, t.org_id, &id, None).await;
    let (events, ended) = sse_events(first, 3, Duration::from_secs(10)).await;
    assert!(ended, "the stream ended by itself");
    assert_eq!(events.len(), 2);
    append(&app, &t.owner, t.org_id, &id, vec![json!({"n": 3})]).await;
    let resumed = open_stream(&app, &t.owner, t.org_id, &id, Some(2)).await;
    let (events, ended) = sse_events(resumed, 2, Duration::from_secs(10)).await;
    assert!(ended);
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [3]);
}
