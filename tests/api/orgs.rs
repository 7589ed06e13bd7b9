//! Organizations: settings, deletion, the current org, and the cross-tenant attack on
//! every org route.

use serde_json::json;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::{
    fixtures::*,
    helpers::{Signup, TestApp, spawn_app},
};

#[tokio::test]
async fn org_settings_are_changed_by_admins_and_validated() {
    let app = spawn_app().await;
    let t = team(&app, "Acme").await;
    let path = format!("/v1/orgs/{}", t.org_id);
    let renamed = app
        .patch(
            &path,
            &t.admin.token,
            json!({"name": " Acme Two ", "slug": "acme-two"}),
        )
        .await;
    let body = renamed.assert_status(200);
    assert_eq!(body["name"], "Acme Two");
    assert_eq!(body["slug"], "acme-two");
    assert_eq!(body["role"], "admin");
    // Absent fields stay.
    let only_name = app
        .patch(&path, &t.owner.token, json!({"name": "Acme 3"}))
        .await;
    assert_eq!(only_name.assert_status(200)["slug"], "acme-two");

    app.patch(&path, &t.owner.token, json!({"name": ""}))
        .await
        .assert_problem(422, "validation_failed");
    app.patch(&path, &t.owner.token, json!({"name": "x".repeat(101)}))
        .await
        .assert_problem(422, "validation_failed");
    app.patch(&path, &t.owner.token, json!({"slug": "-bad-"}))
        .await
        .assert_problem(422, "validation_failed");
    let other = new_org(&app, &t.member, "Taken Co").await;
    let taken_slug = app.get(&format!("/v1/orgs/{other}"), &t.member.token).await;
    let taken_slug = taken_slug.assert_status(200)["slug"]
        .as_str()
        .unwrap()
        .to_owned();
    app.patch(&path, &t.owner.token, json!({"slug": taken_slug}))
        .await
        .assert_problem(409, "slug_taken");
    app.patch(&path, &t.member.token, json!({"name": "Mine now"}))
        .await
        .assert_problem(403, "forbidden");
    app.patch(&path, &t.viewer.token, json!({"name": "Mine now"}))
        .await
        .assert_problem(403, "forbidden");
    let got = app.get(&path, &t.viewer.token).await;
    let got = got.assert_status(200);
    assert_eq!(
        got["name"], "Acme 3",
        "refused and invalid changes left it alone"
    );
    assert_eq!(got["slug"], "acme-two");
}

#[tokio::test]
async fn only_owners_delete_orgs_and_never_a_personal_one() {
    let app = spawn_app().await;
    let t = team(&app, "Doomed").await;
    let path = format!("/v1/orgs/{}", t.org_id);
    let project = app.create_project(&t.member, t.org_id, "p").await;
    app.put_current_org(&t.member, t.org_id)
        .await
        .assert_status(200);
    app.delete(&path, &t.admin.token)
        .await
        .assert_problem(403, "forbidden");
    app.delete(&path, &t.member.token)
        .await
        .assert_problem(403, "forbidden");
    app.delete(&format!("/v1/orgs/{}", t.owner.org_id), &t.owner.token)
        .await
        .assert_problem(409, "personal_org");
    app.get(&format!("/v1/orgs/{}", t.owner.org_id), &t.owner.token)
        .await
        .assert_status(200);

    app.delete(&path, &t.owner.token).await.assert_status(204);
    app.get(&path, &t.owner.token)
        .await
        .assert_problem(404, "not_found");
    app.get(&format!("{path}/projects/{project}"), &t.member.token)
        .await
        .assert_problem(404, "not_found");
    let su = app.sql_superuser().await;
    for table in ["memberships", "projects", "invitations"] {
        let n: i64 = su
            .query_one(
                &format!("select count(*) from app.{table} where org_id = $1"),
                &[&t.org_id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table} rows went with the org");
    }
    // Its audit log did not (no foreign key, on purpose): it outlives the org until the
    // retention purge, intact, and its last row says who deleted it. What went with the
    // org (the project) is not recorded again.
    let log = audit_chain(&su, t.org_id).await;
    let actions: Vec<&str> = log.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        ["org.created", "project.created", "org.deleted"],
        "{log:#?}"
    );
    let deleted = log.last().unwrap();
    assert_eq!(
        (deleted.actor_type.as_str(), deleted.actor_id),
        ("user", Some(t.owner.user_id))
    );
    assert_eq!(
        deleted.targets,
        json!([{"type": "org", "id": t.org_id, "name": "Doomed"}])
    );
    assert_eq!(verify_chain(&su, t.org_id).await, None);
    // The member's current org was the deleted one: they fall back to their personal org.
    let me = app.get("/v1/auth/me", &t.member.token).await;
    assert_eq!(
        me.assert_status(200)["user"]["current_org_id"],
        json!(t.member.org_id.to_string())
    );
    // The personal org survived the owner's attempt, also in SQL as the runtime role.
    let mut db = app.sql_runtime().await;
    let tx = runtime_tx(&app, &mut db, &t.owner, Some(t.owner.org_id)).await;
    let err = tx
        .execute("delete from app.orgs where id = $1", &[&t.owner.org_id])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "PT409");
}

#[tokio::test]
async fn current_org_can_be_switched_only_to_my_orgs() {
    let app = spawn_app().await;
    let t = team(&app, "Switch").await;
    let outsider = app.signup("Outsider").await;
    let me = app.get("/v1/auth/me", &t.viewer.token).await;
    assert_eq!(
        me.assert_status(200)["user"]["current_org_id"],
        t.viewer.org_id.to_string()
    );
    let switched = app.put_current_org(&t.viewer, t.org_id).await;
    let body = switched.assert_status(200);
    assert_eq!(body["id"], t.org_id.to_string());
    assert_eq!(body["role"], "viewer");
    let me = app.get("/v1/auth/me", &t.viewer.token).await;
    assert_eq!(
        me.assert_status(200)["user"]["current_org_id"],
        t.org_id.to_string()
    );
    // Someone else's org, or nothing at all: 404, and nothing changes.
    app.put_current_org(&outsider, t.org_id)
        .await
        .assert_problem(404, "not_found");
    app.put_current_org(&t.viewer, Uuid::new_v4())
        .await
        .assert_problem(404, "not_found");
    let me = app.get("/v1/auth/me", &outsider.token).await;
    assert_eq!(
        me.assert_status(200)["user"]["current_org_id"],
        outsider.org_id.to_string()
    );
    // Removed from the org, the viewer falls back to their personal org.
    app.delete(
        &format!("/v1/orgs/{}/members/{}", t.org_id, t.viewer.user_id),
        &t.admin.token,
    )
    .await
    .assert_status(204);
    let me = app.get("/v1/auth/me", &t.viewer.token).await;
    assert_eq!(
        me.assert_status(200)["user"]["current_org_id"],
        t.viewer.org_id.to_string()
    );
    // The runtime role cannot set it directly either.
    let db = app.sql_runtime().await;
    let err = db
        .execute("update app.users set current_org_id = null", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
}

/// Every user of team B -- owner, admin, member, viewer -- attacks team A through every
/// org, member and invitation route: by A's ids in the path, and by A's ids under B's
/// own org. Nothing of A is visible or changes.
#[tokio::test]
async fn nothing_of_org_a_is_visible_or_changeable_from_org_b() {
    let app = spawn_app().await;
    let a = team(&app, "Alpha").await;
    let b = team(&app, "Bravo").await;
    let (a_inv, a_token) =
        invite(&app, &a.admin, a.org_id, "alpha-new@example.com", "member").await;
    let (b_inv, _) = invite(&app, &b.admin, b.org_id, "bravo-new@example.com", "member").await;
    let snapshot = |org: Uuid| {
        let app = &app;
        async move {
            let su = app.sql_superuser().await;
            let org_row: String = su
                .query_one(
                    "select format('%s|%s|%s', name, slug, updated_at) from app.orgs where id = $1",
                    &[&org],
                )
                .await
                .unwrap()
                .get(0);
            let members: Vec<String> = su
                .query(
                    "select format('%s:%s:%s', user_id, role, updated_at) from app.memberships
                      where org_id = $1 order by user_id",
                    &[&org],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let invitations: Vec<String> = su
                .query(
                    "select format('%s:%s:%s:%s', id, status, encode(token_hash, 'hex'), expires_at)
                       from app.invitations where org_id = $1 order by id",
                    &[&org],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            (org_row, members, invitations)
        }
    };
    let before = snapshot(a.org_id).await;
    let ao = a.org_id;
    let bo = b.org_id;
    let a_target = a.member.user_id;

    for (role, attacker) in b.by_role() {
        let tok = &attacker.token;
        // A's org named in the path: 404 on every route, whatever B's role.
        let cases = [
            app.get(&format!("/v1/orgs/{ao}"), tok).await,
            app.patch(&format!("/v1/orgs/{ao}"), tok, json!({"name": "pwned"}))
                .await,
            app.delete(&format!("/v1/orgs/{ao}"), tok).await,
            app.get(&format!("/v1/orgs/{ao}/members"), tok).await,
            app.patch(
                &format!("/v1/orgs/{ao}/members/{a_target}"),
                tok,
                json!({"role": "viewer"}),
            )
            .await,
            app.delete(&format!("/v1/orgs/{ao}/members/{a_target}"), tok)
                .await,
            app.post(
                &format!("/v1/orgs/{ao}/transfer-ownership"),
                tok,
                json!({"user_id": attacker.user_id}),
            )
            .await,
            app.get(&format!("/v1/orgs/{ao}/invitations"), tok).await,
            app.post(
                &format!("/v1/orgs/{ao}/invitations"),
                tok,
                json!({"email": "spy@example.com", "role": "owner"}),
            )
            .await,
            app.delete(&format!("/v1/orgs/{ao}/invitations/{a_inv}"), tok)
                .await,
            app.post(
                &format!("/v1/orgs/{ao}/invitations/{a_inv}/resend"),
                tok,
                json!({}),
            )
            .await,
            app.put_current_org(attacker, ao).await,
        ];
        for (i, resp) in cases.iter().enumerate() {
            assert_eq!(
                resp.status.as_u16(),
                404,
                "B {role}, case {i}: {}",
                resp.body
            );
            assert_eq!(resp.body["code"], "not_found", "B {role}, case {i}");
        }
        // A's member and invitation named under B's own org: B's admins and owners get
        // 404 (not B's), its members and viewers 403 (may not manage anyone here).
        let expect = if matches!(role, "owner" | "admin") {
            404
        } else {
            403
        };
        let cases = [
            app.patch(
                &format!("/v1/orgs/{bo}/members/{a_target}"),
                tok,
                json!({"role": "viewer"}),
            )
            .await,
            app.delete(&format!("/v1/orgs/{bo}/members/{a_target}"), tok)
                .await,
            app.delete(&format!("/v1/orgs/{bo}/invitations/{a_inv}"), tok)
                .await,
            app.post(
                &format!("/v1/orgs/{bo}/invitations/{a_inv}/resend"),
                tok,
                json!({}),
            )
            .await,
        ];
        for (i, resp) in cases.iter().enumerate() {
            assert_eq!(
                resp.status.as_u16(),
                expect,
                "B {role}, own-org case {i}: {}",
                resp.body
            );
        }
        // B's owner may transfer ownership, but not to A's member.
        if role == "owner" {
            app.post(
                &format!("/v1/orgs/{bo}/transfer-ownership"),
                tok,
                json!({"user_id": a_target}),
            )
            .await
            .assert_problem(409, "not_a_member");
        }
        // B's lists show only B.
        let members = app.get(&format!("/v1/orgs/{bo}/members"), tok).await;
        let ids: Vec<String> = members.assert_status(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["user_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 4, "B {role}: {ids:?}");
        for (_, a_user) in a.by_role() {
            assert!(
                !ids.contains(&a_user.user_id.to_string()),
                "B {role} sees A's member"
            );
        }
        if matches!(role, "owner" | "admin") {
            let invs = app.get(&format!("/v1/orgs/{bo}/invitations"), tok).await;
            let ids: Vec<&str> = invs.assert_status(200)["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap())
                .collect();
            assert_eq!(ids, [b_inv.to_string()], "B {role}");
        }
        let orgs = app.get("/v1/orgs", tok).await;
        assert!(
            !orgs.assert_status(200)["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["id"] == ao.to_string()),
            "B {role} lists A's org"
        );
        // A's invitation token, even if leaked to B, does not let B in.
        app.post("/v1/invitations/accept", tok, json!({"token": a_token}))
            .await
            .assert_problem(403, "invitation_email_mismatch");
    }
    assert_eq!(snapshot(a.org_id).await, before, "A is unchanged");

    // The same in SQL as the runtime role, each B user in context for B's own org.
    // Expected SQLSTATE for B's [owner, admin, member, viewer]: PT404 = not found;
    // 42501 = refused for the role before any target is looked up.
    type Params<'p> = &'p [&'p (dyn tokio_postgres::types::ToSql + Sync)];
    let attempts: [(&str, Params, [&str; 4]); 6] = [
        (
            "select app.change_member_role($1, 'viewer')",
            &[&a_target],
            ["PT404", "PT404", "42501", "42501"],
        ),
        (
            "select app.remove_member($1)",
            &[&a_target],
            ["PT404", "PT404", "42501", "42501"],
        ),
        (
            "select app.transfer_ownership($1)",
            &[&a.owner.user_id],
            ["PT409", "42501", "42501", "42501"],
        ),
        (
            "select app.revoke_invitation($1)",
            &[&a_inv],
            ["PT404", "PT404", "42501", "42501"],
        ),
        (
            "select app.resend_invitation($1, sha256('x'::bytea), interval '7 days', 's', '\\x00')",
            &[&a_inv],
            ["PT404", "PT404", "42501", "42501"],
        ),
        (
            "select app.set_current_org($1)",
            &[&ao],
            ["PT404", "PT404", "PT404", "PT404"],
        ),
    ];
    let mut db = app.sql_runtime().await;
    for (i, (role, attacker)) in b.by_role().into_iter().enumerate() {
        for (sql, params, expect) in &attempts {
            let tx = runtime_tx(&app, &mut db, attacker, Some(bo)).await;
            let got = outcome(tx.execute(*sql, params).await);
            assert_eq!(got, expect[i], "B {role}: {sql}");
        }
        // Naming A's org in B's context: no role, no rows, no writes.
        let tx = runtime_tx(&app, &mut db, attacker, Some(ao)).await;
        let role_in_a: Option<String> = tx
            .query_one("select app.current_org_role()::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(role_in_a, None);
        for table in [
            "orgs",
            "memberships",
            "invitations",
            "audit_log",
            "projects",
        ] {
            let key = if table == "orgs" { "id" } else { "org_id" };
            let n: i64 = tx
                .query_one(
                    &format!("select count(*) from app.{table} where {key} = $1"),
                    &[&ao],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 0, "B {role} sees A's {table} in SQL");
        }
        let got = outcome(
            tx.execute(
                "select app.change_member_role($1, 'owner')",
                &[&attacker.user_id],
            )
            .await,
        );
        assert_eq!(got, "PT404", "B {role} acting in A's org");
        drop(tx);
    }
    assert_eq!(
        snapshot(a.org_id).await,
        before,
        "A is unchanged after SQL attempts"
    );
}

impl TestApp {
    pub async fn put_current_org(&self, who: &Signup, org: Uuid) -> crate::helpers::TestResponse {
        self.request(
            reqwest::Method::PUT,
            "/v1/auth/me/current-org",
            Some(&who.token),
            Some(json!({"org_id": org})),
        )
        .await
    }
}

/// Walks every page of `path` (`?limit=` included) and returns the ids in order.
async fn collect_pages(app: &crate::helpers::TestApp, path: &str, token: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut url = path.to_owned();
    loop {
        let page = app.get(&url, token).await;
        let body = page.assert_status(200).clone();
        ids.extend(
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned()),
        );
        match body["next_cursor"].as_str() {
            Some(c) => url = format!("{path}&cursor={c}"),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn org_and_invitation_lists_page_through_everything_in_order() {
    let app = crate::helpers::spawn_app().await;
    let owner = app.signup("Pager").await;
    let mut orgs = vec![owner.org_id.to_string()];
    for i in 0..4 {
        let org = app
            .post(
                "/v1/orgs",
                &owner.token,
                json!({"name": format!("Org {i}")}),
            )
            .await;
        orgs.push(org.assert_status(201)["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        collect_pages(&app, "/v1/orgs?limit=2", &owner.token).await,
        orgs
    );

    let mut invited = Vec::new();
    for i in 0..5 {
        let inv = app
            .post(
                &format!("/v1/orgs/{}/invitations", owner.org_id),
                &owner.token,
                json!({"email": format!("guest{i}@example.com"), "role": "member"}),
            )
            .await;
        invited.push(inv.assert_status(201)["id"].as_str().unwrap().to_owned());
    }
    let path = format!("/v1/orgs/{}/invitations?limit=2", owner.org_id);
    assert_eq!(collect_pages(&app, &path, &owner.token).await, invited);
}
