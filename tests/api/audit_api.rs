//! The audit log API: who may read it, paging and filters, and the streamed export.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Signup, TestApp, spawn_app};

/// An org on the Pro plan with a few audited changes: three projects (one renamed).
async fn audited_org(app: &TestApp) -> (Signup, Vec<Uuid>) {
    let owner = app.signup("Owner").await;
    app.set_plan(owner.org_id, "pro").await;
    let mut projects = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        projects.push(app.create_project(&owner, owner.org_id, name).await);
    }
    app.patch(
        &format!("/v1/orgs/{}/projects/{}", owner.org_id, projects[0]),
        &owner.token,
        json!({"name": "alpha-2"}),
    )
    .await
    .assert_status(200);
    (owner, projects)
}

/// Every page of `path` (which has a query string), following next_cursor.
async fn all_pages(app: &TestApp, path: &str, token: &str, limit: u32) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&limit={limit}&cursor={c}"),
            None => format!("{path}&limit={limit}"),
        };
        let page = app.get(&url, token).await.assert_status(200).clone();
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= limit as usize);
        items.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
}

#[tokio::test]
async fn admins_page_through_the_log_newest_first_and_filters_narrow_it() {
    let app = spawn_app().await;
    let (owner, projects) = audited_org(&app).await;
    let base = format!("/v1/orgs/{}/audit-log?", owner.org_id);
    let all = all_pages(&app, &base, &owner.token, 2).await;
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    // Newest first, every seq once, down to 1.
    let expected: Vec<i64> = (1..=seqs.len() as i64).rev().collect();
    assert_eq!(seqs, expected);
    let actions: Vec<&str> = all.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions[..5],
        [
            "project.updated",
            "project.created",
            "project.created",
            "project.created",
            "plan.changed"
        ]
    );
    let renamed = &all[0];
    assert_eq!(renamed["actor"]["type"], "user");
    assert_eq!(renamed["actor"]["id"], owner.user_id.to_string());
    assert_eq!(renamed["actor"]["name"], owner.email);
    assert_eq!(renamed["targets"][0]["id"], projects[0].to_string());
    assert_eq!(
        renamed["metadata"]["changes"]["name"],
        json!({"from": "alpha", "to": "alpha-2"})
    );
    // The chain is visible: each prev_hash is the hash of the event below it.
    for pair in all.windows(2) {
        assert_eq!(pair[0]["prev_hash"], pair[1]["hash"]);
    }

    let only = |query: String| {
        let app = &app;
        let token = owner.token.clone();
        let base = base.clone();
        async move { all_pages(app, &format!("{base}{query}"), &token, 100).await }
    };
    let created = only("action=project.".into()).await;
    assert_eq!(created.len(), 4);
    assert!(
        created
            .iter()
            .all(|e| e["action"].as_str().unwrap().starts_with("project."))
    );
    let on_alpha = only(format!("target_id={}", projects[0])).await;
    assert_eq!(on_alpha.len(), 2, "{on_alpha:?}");
    let by_owner = only(format!("actor_id={}", owner.user_id)).await;
    assert!(
        by_owner
            .iter()
            .all(|e| e["actor"]["id"] == owner.user_id.to_string())
    );
    assert!(by_owner.len() >= 5);
    let by_system = only("actor_type=system".into()).await;
    assert!(
        by_system.iter().all(|e| e["action"] == "plan.changed"),
        "{by_system:?}"
    );
    let projects_only = only("target_type=project".into()).await;
    assert_eq!(projects_only.len(), 4);
    // A time window: from the second project's creation on.
    let from = created[2]["occurred_at"].as_str().unwrap();
    let since = only(format!("since={}", urlencode(from))).await;
    assert_eq!(since.len(), 3, "{since:?}");
    let until = only(format!("until={}", urlencode(from))).await;
    assert_eq!(until.len() + since.len(), all.len());

    // A cursor that was not ours is a 400.
    app.get(&format!("{base}cursor=bm9wZQ"), &owner.token)
        .await
        .assert_problem(400, "invalid_cursor");
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn only_admins_of_the_org_on_a_plan_with_the_log_read_it() {
    let app = spawn_app().await;
    let (owner, _) = audited_org(&app).await;
    let path = format!("/v1/orgs/{}/audit-log", owner.org_id);
    let export = format!("{path}/export");

    // A member (below admin): 403, for the list and the export.
    let member = app.signup("Member").await;
    app.sql_superuser()
        .await
        .execute(
            "insert into app.memberships (org_id, user_id, role) values ($1, $2, 'member')",
            &[&owner.org_id, &member.user_id],
        )
        .await
        .unwrap();
    app.get(&path, &member.token)
        .await
        .assert_problem(403, "forbidden");
    app.get(&export, &member.token)
        .await
        .assert_problem(403, "forbidden");

    // Another org's owner: 404 -- the org's existence is not confirmed.
    let stranger = app.signup("Stranger").await;
    app.get(&path, &stranger.token)
        .await
        .assert_problem(404, "not_found");
    app.get(&export, &stranger.token)
        .await
        .assert_problem(404, "not_found");

    // The stranger's own log on the free plan: the plan's feature gate.
    app.set_plan(stranger.org_id, "free").await;
    app.get(
        &format!("/v1/orgs/{}/audit-log", stranger.org_id),
        &stranger.token,
    )
    .await
    .assert_problem(403, "plan_feature_unavailable");

    // An admin API key reads it (a SIEM export); a member key does not.
    for (role, status) in [("admin", 200), ("member", 403)] {
        let created = app
            .post(
                &format!("/v1/orgs/{}/api-keys", owner.org_id),
                &owner.token,
                json!({"name": format!("{role} key"), "role": role}),
            )
            .await;
        let secret = created.assert_status(201)["secret"]
            .as_str()
            .unwrap()
            .to_owned();
        let resp = app
            .send(
                app.http
                    .get(format!("{}{path}", app.base))
                    .header("x-api-key", &secret),
            )
            .await;
        assert_eq!(resp.status.as_u16(), status, "{role} key: {}", resp.body);
    }
}

#[tokio::test]
async fn the_export_streams_exactly_what_the_api_pages_in_ndjson_and_csv() {
    let app = spawn_app().await;
    let (owner, _) = audited_org(&app).await;
    // Enough rows for several export pages (500 each).
    let db = app.sql_superuser().await;
    db.execute(
        "select app.audit_org_event($1, 'test.filler', '[]', jsonb_build_object('n', n))
           from generate_series(1, 1203) n",
        &[&owner.org_id],
    )
    .await
    .unwrap();
    let listed = all_pages(
        &app,
        &format!("/v1/orgs/{}/audit-log?", owner.org_id),
        &owner.token,
        100,
    )
    .await;
    assert!(listed.len() > 1203);

    let export = |format: &'static str| {
        let app = &app;
        let url = format!(
            "{}/v1/orgs/{}/audit-log/export?format={format}",
            app.base, owner.org_id
        );
        let token = owner.token.clone();
        async move {
            let resp = app.http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
            (ct, resp.text().await.unwrap())
        }
    };
    let (ct, ndjson) = export("ndjson").await;
    assert_eq!(ct, "application/x-ndjson");
    let exported: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        exported, listed,
        "the NDJSON export is the API's pages, in order"
    );

    let (ct, csv) = export("csv").await;
    assert!(ct.starts_with("text/csv"));
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "seq,occurred_at,action,actor_type,actor_id,actor_name,targets,ip,user_agent,request_id,metadata,prev_hash,hash"
        )
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), listed.len());
    for (row, event) in rows.iter().zip(&listed) {
        assert!(row.starts_with(&format!("{},", event["seq"])), "{row}");
        assert!(row.ends_with(event["hash"].as_str().unwrap()), "{row}");
    }
}

#[tokio::test]
async fn each_user_reads_their_own_account_log_and_nobody_elses() {
    let app = spawn_app().await;
    let ada = app.signup("Ada").await;
    let bob = app.signup("Bob").await;
    // A failed sign-in and a profile change land in Ada's account chain.
    app.login(&ada.email, "not her password at all")
        .await
        .assert_problem(401, "invalid_credentials");
    app.patch("/v1/auth/me", &ada.token, json!({"name": "Ada L."}))
        .await
        .assert_status(200);

    let mine = app.get("/v1/auth/me/audit-log?limit=100", &ada.token).await;
    let items = mine.assert_status(200)["items"].as_array().unwrap().clone();
    let actions: Vec<&str> = items
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "user.updated",
            "auth.login_failed",
            "auth.login",
            "user.email_verification_requested",
            "user.registered"
        ]
    );
    // Her own acts are hers; a failed sign-in is nobody proven's ('system'), aimed at her.
    for e in &items {
        if e["action"] == "auth.login_failed" {
            assert_eq!(
                e["actor"],
                json!({"type": "system", "id": null, "name": null})
            );
            assert_eq!(e["targets"][0]["id"], ada.user_id.to_string());
        } else {
            assert_eq!(e["actor"]["id"], ada.user_id.to_string(), "{e}");
        }
    }
    // Bob's log has none of Ada's events.
    let his = app.get("/v1/auth/me/audit-log?limit=100", &bob.token).await;
    let his = his.assert_status(200)["items"].as_array().unwrap().clone();
    assert!(!his.is_empty());
    assert!(
        his.iter()
            .all(|e| e["actor"]["id"] == bob.user_id.to_string())
    );
    // Filters and paging.
    let logins = app
        .get("/v1/auth/me/audit-log?action=auth.", &ada.token)
        .await;
    assert_eq!(
        logins.assert_status(200)["items"].as_array().unwrap().len(),
        2
    );
    let first = app.get("/v1/auth/me/audit-log?limit=2", &ada.token).await;
    let cursor = first.assert_status(200)["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = app
        .get(
            &format!("/v1/auth/me/audit-log?limit=2&cursor={cursor}"),
            &ada.token,
        )
        .await;
    assert_eq!(
        second.assert_status(200)["items"][0]["action"],
        "auth.login"
    );
    // An org's admin does not see a member's account chain through the org log either:
    // only the org-level events (sign-ins) appear there.
    let org_log = app
        .get(
            &format!("/v1/orgs/{}/audit-log?limit=100", ada.org_id),
            &ada.token,
        )
        .await;
    let org_items = org_log.assert_status(200)["items"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        org_items
            .iter()
            .all(|e| !e["action"].as_str().unwrap().starts_with("user.")),
        "{org_items:?}"
    );
}
