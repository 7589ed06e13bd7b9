//! Roles and members: the role x action matrix (through the API and in SQL as the
//! runtime role), owner-only powers, last-owner protection (and its race), and
//! immediate loss of access on removal.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::{
    fixtures::{
        add_member, add_member_with, audit_chain, bare_user, bare_user_with, new_org, outcome,
        owner_count, role_of, role_of_with, runtime_tx, team, verify_chain,
    },
    helpers::{Signup, TestApp, TestResponse, spawn_app},
};

#[derive(Debug, Clone, Copy)]
enum Action {
    ReadOrg,
    RenameOrg,
    DeleteOrg,
    ListMembers,
    DemoteMember,
    GrantOwner,
    RemoveMember,
    RemoveOwner,
    TransferOwnership,
    Leave,
    ListInvitations,
    InviteMember,
    InviteOwner,
    RevokeInvitation,
    ResendInvitation,
    ListProjects,
    CreateProject,
    UpdateProject,
    DeleteProject,
}

use Action::*;

/// Expected status for callers [owner, admin, member, viewer, outsider].
const MATRIX: &[(Action, [u16; 5])] = &[
    (ReadOrg, [200, 200, 200, 200, 404]),
    (RenameOrg, [200, 200, 403, 403, 404]),
    (DeleteOrg, [204, 403, 403, 403, 404]),
    (ListMembers, [200, 200, 200, 200, 404]),
    (DemoteMember, [200, 200, 403, 403, 404]),
    (GrantOwner, [200, 403, 403, 403, 404]),
    (RemoveMember, [204, 204, 403, 403, 404]),
    (RemoveOwner, [204, 403, 403, 403, 404]),
    (TransferOwnership, [200, 403, 403, 403, 404]),
    // The owner here is the only one.
    (Leave, [409, 204, 204, 204, 404]),
    (ListInvitations, [200, 200, 403, 403, 404]),
    (InviteMember, [201, 201, 403, 403, 404]),
    (InviteOwner, [201, 403, 403, 403, 404]),
    (RevokeInvitation, [204, 204, 403, 403, 404]),
    (ResendInvitation, [200, 200, 403, 403, 404]),
    (ListProjects, [200, 200, 200, 200, 404]),
    (CreateProject, [201, 201, 201, 403, 404]),
    (UpdateProject, [200, 200, 200, 403, 404]),
    (DeleteProject, [204, 204, 204, 403, 404]),
];

const CALLERS: [&str; 5] = ["owner", "admin", "member", "viewer", "outsider"];

/// Runs `action` as `caller` against a fresh org; returns the response and whether the
/// action's effect is visible in the database afterwards (None for reads).
async fn perform(
    app: &TestApp,
    su_client: &tokio_postgres::Client,
    users: &[Signup; 5],
    action: Action,
    caller: &Signup,
) -> (TestResponse, Option<bool>) {
    let owner = &users[0];
    let su = su_client;
    let org = new_org(app, owner, "Matrix").await;
    for (user, role) in users[1..4].iter().zip(["admin", "member", "viewer"]) {
        add_member_with(su, org, user.user_id, role).await;
    }
    let (subject, _) = bare_user_with(su).await;
    let base = format!("/v1/orgs/{org}");
    let tok = caller.token.as_str();
    let fresh_email = format!("invitee-{}@example.com", Uuid::new_v4().simple());
    let invitation = |role: &'static str| {
        let fresh_email = fresh_email.clone();
        async move {
            su.query_one(
                "insert into app.invitations (org_id, email, role, token_hash, invited_by, expires_at)
                 values ($1, $2, $3::text::app.org_role, sha256(gen_random_uuid()::text::bytea), $4, now() + interval '7 days')
                 returning id, token_hash",
                &[&org, &fresh_email, &role, &owner.user_id],
            )
            .await
            .unwrap()
        }
    };
    let project = |name: &'static str| async move {
        su.query_one(
            "insert into app.projects (org_id, name) values ($1, $2) returning id",
            &[&org, &name],
        )
        .await
        .unwrap()
        .get::<_, Uuid>(0)
    };
    let count = |sql: &'static str, id: Uuid| async move {
        su.query_one(sql, &[&id]).await.unwrap().get::<_, i64>(0)
    };
    match action {
        ReadOrg => (app.get(&base, tok).await, None),
        ListMembers => (app.get(&format!("{base}/members"), tok).await, None),
        ListInvitations => (app.get(&format!("{base}/invitations"), tok).await, None),
        ListProjects => (app.get(&format!("{base}/projects"), tok).await, None),
        RenameOrg => {
            let r = app.patch(&base, tok, json!({"name": "Renamed"})).await;
            let n = count(
                "select count(*) from app.orgs where id = $1 and name = 'Renamed'",
                org,
            )
            .await;
            (r, Some(n == 1))
        }
        DeleteOrg => {
            let r = app.delete(&base, tok).await;
            let n = count("select count(*) from app.orgs where id = $1", org).await;
            (r, Some(n == 0))
        }
        DemoteMember | GrantOwner => {
            add_member_with(su, org, subject, "member").await;
            let to = if matches!(action, GrantOwner) {
                "owner"
            } else {
                "viewer"
            };
            let r = app
                .patch(
                    &format!("{base}/members/{subject}"),
                    tok,
                    json!({"role": to}),
                )
                .await;
            (
                r,
                Some(role_of_with(su, org, subject).await.as_deref() == Some(to)),
            )
        }
        RemoveMember | RemoveOwner => {
            let role = if matches!(action, RemoveOwner) {
                "owner"
            } else {
                "member"
            };
            add_member_with(su, org, subject, role).await;
            let r = app.delete(&format!("{base}/members/{subject}"), tok).await;
            (r, Some(role_of_with(su, org, subject).await.is_none()))
        }
        TransferOwnership => {
            add_member_with(su, org, subject, "member").await;
            let r = app
                .post(
                    &format!("{base}/transfer-ownership"),
                    tok,
                    json!({"user_id": subject}),
                )
                .await;
            let effect = role_of_with(su, org, subject).await.as_deref() == Some("owner");
            if effect {
                assert_eq!(
                    role_of_with(su, org, caller.user_id).await.as_deref(),
                    Some("admin")
                );
            }
            (r, Some(effect))
        }
        Leave => {
            let r = app
                .delete(&format!("{base}/members/{}", caller.user_id), tok)
                .await;
            let was_member = !std::ptr::eq(caller, &users[4]);
            let gone = role_of_with(su, org, caller.user_id).await.is_none();
            (r, Some(was_member && gone))
        }
        InviteMember | InviteOwner => {
            let role = if matches!(action, InviteOwner) {
                "owner"
            } else {
                "member"
            };
            let r = app
                .post(
                    &format!("{base}/invitations"),
                    tok,
                    json!({"email": fresh_email, "role": role}),
                )
                .await;
            let n: i64 = su
                .query_one(
                    "select count(*) from app.invitations where org_id = $1 and email = $2",
                    &[&org, &fresh_email],
                )
                .await
                .unwrap()
                .get(0);
            (r, Some(n == 1))
        }
        RevokeInvitation => {
            let id: Uuid = invitation("member").await.get(0);
            let r = app.delete(&format!("{base}/invitations/{id}"), tok).await;
            let n = count(
                "select count(*) from app.invitations where id = $1 and status = 'revoked'",
                id,
            )
            .await;
            (r, Some(n == 1))
        }
        ResendInvitation => {
            let row = invitation("member").await;
            let (id, hash): (Uuid, Vec<u8>) = (row.get(0), row.get(1));
            let r = app
                .post(&format!("{base}/invitations/{id}/resend"), tok, json!({}))
                .await;
            let now: Vec<u8> = su
                .query_one(
                    "select token_hash from app.invitations where id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .get(0);
            (r, Some(now != hash))
        }
        CreateProject => {
            let r = app
                .post(&format!("{base}/projects"), tok, json!({"name": "new"}))
                .await;
            let n = count(
                "select count(*) from app.projects where org_id = $1 and name = 'new'",
                org,
            )
            .await;
            (r, Some(n == 1))
        }
        UpdateProject => {
            let id = project("old").await;
            let r = app
                .patch(
                    &format!("{base}/projects/{id}"),
                    tok,
                    json!({"name": "renamed"}),
                )
                .await;
            let n = count(
                "select count(*) from app.projects where id = $1 and name = 'renamed'",
                id,
            )
            .await;
            (r, Some(n == 1))
        }
        DeleteProject => {
            let id = project("doomed").await;
            let r = app.delete(&format!("{base}/projects/{id}"), tok).await;
            let n = count("select count(*) from app.projects where id = $1", id).await;
            (r, Some(n == 0))
        }
    }
}

/// Role x action -> status, through the API; every refusal leaves the database as it
/// was and every success shows its effect.
#[tokio::test]
async fn role_matrix_through_the_api() {
    let app = spawn_app().await;
    let users = [
        app.signup("Owner").await,
        app.signup("Admin").await,
        app.signup("Member").await,
        app.signup("Viewer").await,
        app.signup("Outsider").await,
    ];
    let su = app.sql_superuser().await;
    let mut failures = Vec::new();
    for (action, expected) in MATRIX {
        for (i, caller) in users.iter().enumerate() {
            let (resp, effect) = perform(&app, &su, &users, *action, caller).await;
            let status = resp.status.as_u16();
            if status != expected[i] {
                failures.push(format!(
                    "{action:?} as {}: expected {}, got {status} {}",
                    CALLERS[i], expected[i], resp.body
                ));
                continue;
            }
            match status {
                403 => resp.assert_problem(403, "forbidden"),
                404 => resp.assert_problem(404, "not_found"),
                409 => resp.assert_problem(409, "last_owner"),
                _ => {}
            }
            if let Some(effect) = effect
                && effect != (status < 300)
            {
                failures.push(format!(
                    "{action:?} as {}: status {status} but effect in the database = {effect}",
                    CALLERS[i]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same rules in SQL, as the runtime role the server uses, with each role's
/// context: writes go only through the definer functions, which refuse by role.
#[tokio::test]
async fn role_matrix_in_sql_as_the_runtime_role() {
    let app = spawn_app().await;
    let t = team(&app, "Sql").await;
    let (subject, _) = bare_user(&app).await;
    add_member(&app, t.org_id, subject, "member").await;
    let org = t.org_id;
    let stranger = Uuid::new_v4();
    type Params<'p> = &'p [&'p (dyn tokio_postgres::types::ToSql + Sync)];
    // Expected outcome for [owner, admin, member, viewer]; each runs in its own
    // transaction, rolled back.
    let cases: &[(&str, Params, [&str; 4])] = &[
        (
            "select app.change_member_role($1, 'viewer')",
            &[&subject],
            ["ok", "ok", "42501", "42501"],
        ),
        (
            "select app.change_member_role($1, 'owner')",
            &[&subject],
            ["ok", "42501", "42501", "42501"],
        ),
        (
            "select app.remove_member($1)",
            &[&subject],
            ["ok", "ok", "42501", "42501"],
        ),
        (
            "select app.transfer_ownership($1)",
            &[&subject],
            ["ok", "42501", "42501", "42501"],
        ),
        (
            "select app.create_invitation('new@example.com', 'member', sha256('t'::bytea), interval '7 days', 's', '\\x00')",
            &[],
            ["ok", "ok", "42501", "42501"],
        ),
        (
            "select app.create_invitation('new@example.com', 'owner', sha256('t'::bytea), interval '7 days', 's', '\\x00')",
            &[],
            ["ok", "42501", "42501", "42501"],
        ),
        (
            "update app.orgs set name = 'x' where id = $1",
            &[&org],
            ["ok", "ok", "42501", "42501"],
        ),
        (
            "delete from app.orgs where id = $1",
            &[&org],
            ["ok", "42501", "42501", "42501"],
        ),
        (
            "insert into app.projects (name) values ('p')",
            &[],
            ["ok", "ok", "ok", "42501"],
        ),
        // No direct writes to memberships, invitations or events, for anyone.
        (
            "insert into app.memberships (org_id, user_id, role) values ($1, $2, 'owner')",
            &[&org, &stranger],
            ["42501", "42501", "42501", "42501"],
        ),
        (
            "update app.memberships set role = 'owner' where org_id = $1",
            &[&org],
            ["42501", "42501", "42501", "42501"],
        ),
        (
            "delete from app.memberships where org_id = $1",
            &[&org],
            ["42501", "42501", "42501", "42501"],
        ),
        (
            "update app.invitations set status = 'accepted' where org_id = $1",
            &[&org],
            ["42501", "42501", "42501", "42501"],
        ),
        (
            "select token_hash from app.invitations",
            &[],
            ["42501", "42501", "42501", "42501"],
        ),
        // The audit log: read-only for the request role, whatever its role.
        (
            "insert into app.audit_log (org_id, seq, occurred_at, actor_type, action, prev_hash, hash)
             values ($1, 1000, now(), 'system', 'forged.event', sha256(''), sha256(''))",
            &[&org],
            ["42501", "42501", "42501", "42501"],
        ),
        (
            "update app.audit_log set metadata = '{\"forged\": true}' where org_id = $1",
            &[&org],
            ["42501", "42501", "42501", "42501"],
        ),
        (
            "delete from app.audit_log where org_id = $1",
            &[&org],
            ["42501", "42501", "42501", "42501"],
        ),
        // Helpers are not callable at all: not the audit writers either.
        (
            "select app.audit_org_event($1, 'forged.event')",
            &[&org],
            ["42501", "42501", "42501", "42501"],
        ),
        (
            "select app.audit_account_event(app.current_user_id(), 'forged.event')",
            &[],
            ["42501", "42501", "42501", "42501"],
        ),
        (
            "select app.audit_sign_in(app.current_user_id(), 'auth.login')",
            &[],
            ["42501", "42501", "42501", "42501"],
        ),
        (
            "select app.lock_org_for_change($1)",
            &[&org],
            ["42501", "42501", "42501", "42501"],
        ),
    ];
    let mut db = app.sql_runtime().await;
    let mut failures = Vec::new();
    for (sql, params, expected) in cases {
        for (i, (role, who)) in t.by_role().into_iter().enumerate() {
            let tx = runtime_tx(&app, &mut db, who, Some(org)).await;
            let got = outcome(tx.execute(*sql, params).await);
            if got != expected[i] {
                failures.push(format!(
                    "{sql} as {role}: expected {}, got {got}",
                    expected[i]
                ));
            }
            tx.rollback().await.unwrap();
        }
    }
    // Reads: everyone sees the members; only admins and owners see invitations and events.
    let su = app.sql_superuser().await;
    su.execute(
        "insert into app.invitations (org_id, email, role, token_hash, expires_at)
         values ($1, 'seen@example.com', 'member', sha256('s'::bytea), now() + interval '1 day')",
        &[&org],
    )
    .await
    .unwrap();
    let total = |sql: &'static str| {
        let su = &su;
        async move { su.query_one(sql, &[&org]).await.unwrap().get::<_, i64>(0) }
    };
    let all_invitations = total("select count(*) from app.invitations where org_id = $1").await;
    let all_events = total("select count(*) from app.audit_log where org_id = $1").await;
    assert!(
        all_invitations > 0 && all_events > 0,
        "there is something to hide"
    );
    for (i, (role, who)) in t.by_role().into_iter().enumerate() {
        let tx = runtime_tx(&app, &mut db, who, Some(org)).await;
        let n = |sql: &'static str| {
            let tx = &tx;
            async move { tx.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
        };
        assert_eq!(
            n("select count(*) from app.memberships where org_id = app.current_org_id()").await,
            5,
            "{role}"
        );
        let admin_plus = i < 2;
        let expected = |all: i64| if admin_plus { all } else { 0 };
        let invitations = n("select count(*) from app.invitations").await;
        assert_eq!(
            invitations,
            expected(all_invitations),
            "{role} sees {invitations} invitations"
        );
        let events = n("select count(*) from app.audit_log where org_id is not null").await;
        assert_eq!(events, expected(all_events), "{role} sees {events} events");
        // Everyone reads their own account's chain, and no one else's.
        let own: i64 = su
            .query_one(
                "select count(*) from app.audit_log where account_id = $1",
                &[&who.user_id],
            )
            .await
            .unwrap()
            .get(0);
        assert!(own > 0, "{role} has an account chain");
        let accounts = n("select count(*) from app.audit_log where org_id is null").await;
        assert_eq!(accounts, own, "{role} sees {accounts} account rows");
        let mine =
            n("select count(*) from app.audit_log where account_id = app.current_user_id()").await;
        assert_eq!(mine, own, "{role} sees their own account rows");
        drop(tx);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn an_admin_cannot_create_or_touch_an_owner() {
    let app = spawn_app().await;
    let t = team(&app, "Ranks").await;
    let base = format!("/v1/orgs/{}", t.org_id);
    let adm = &t.admin.token;
    app.patch(
        &format!("{base}/members/{}", t.member.user_id),
        adm,
        json!({"role": "owner"}),
    )
    .await
    .assert_problem(403, "forbidden");
    app.patch(
        &format!("{base}/members/{}", t.admin.user_id),
        adm,
        json!({"role": "owner"}),
    )
    .await
    .assert_problem(403, "forbidden");
    app.patch(
        &format!("{base}/members/{}", t.owner.user_id),
        adm,
        json!({"role": "viewer"}),
    )
    .await
    .assert_problem(403, "forbidden");
    app.delete(&format!("{base}/members/{}", t.owner.user_id), adm)
        .await
        .assert_problem(403, "forbidden");
    app.post(
        &format!("{base}/transfer-ownership"),
        adm,
        json!({"user_id": t.admin.user_id}),
    )
    .await
    .assert_problem(403, "forbidden");
    app.post(
        &format!("{base}/invitations"),
        adm,
        json!({"email": "boss@example.com", "role": "owner"}),
    )
    .await
    .assert_problem(403, "forbidden");
    // An owner's invitation to the owner role is not the admin's to resend or revoke.
    let (inv, _) =
        crate::fixtures::invite(&app, &t.owner, t.org_id, "boss@example.com", "owner").await;
    app.post(&format!("{base}/invitations/{inv}/resend"), adm, json!({}))
        .await
        .assert_problem(403, "forbidden");
    app.delete(&format!("{base}/invitations/{inv}"), adm)
        .await
        .assert_problem(403, "forbidden");
    assert_eq!(owner_count(&app, t.org_id).await, 1);
    assert_eq!(
        role_of(&app, t.org_id, t.admin.user_id).await.as_deref(),
        Some("admin")
    );
    assert_eq!(
        role_of(&app, t.org_id, t.member.user_id).await.as_deref(),
        Some("member")
    );
    // But an admin manages everyone below owner, admins included.
    app.patch(
        &format!("{base}/members/{}", t.member.user_id),
        adm,
        json!({"role": "admin"}),
    )
    .await
    .assert_status(200);
    let demoted = app
        .patch(
            &format!("{base}/members/{}", t.member.user_id),
            adm,
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(demoted.assert_status(200)["role"], "viewer");
    app.patch(
        &format!("{base}/members/{}", t.member.user_id),
        adm,
        json!({"role": "superuser"}),
    )
    .await
    .assert_problem(422, "validation_failed");
    app.patch(
        &format!("{base}/members/{}", Uuid::new_v4()),
        adm,
        json!({"role": "viewer"}),
    )
    .await
    .assert_problem(404, "not_found");
}

/// Last-owner protection in all three forms: demoting, removing, leaving.
#[tokio::test]
async fn the_last_owner_cannot_be_demoted_removed_or_leave() {
    let app = spawn_app().await;
    let t = team(&app, "Solo").await;
    let base = format!("/v1/orgs/{}", t.org_id);
    let me = t.owner.user_id;
    let tok = &t.owner.token;
    // Demoting.
    app.patch(
        &format!("{base}/members/{me}"),
        tok,
        json!({"role": "admin"}),
    )
    .await
    .assert_problem(409, "last_owner");
    // Leaving.
    app.delete(&format!("{base}/members/{me}"), tok)
        .await
        .assert_problem(409, "last_owner");
    assert_eq!(owner_count(&app, t.org_id).await, 1);

    // Removing: with a second owner, one owner removes the other, then the survivor is
    // the last and can be neither removed nor demoted.
    app.patch(
        &format!("{base}/members/{}", t.admin.user_id),
        tok,
        json!({"role": "owner"}),
    )
    .await
    .assert_status(200);
    app.delete(&format!("{base}/members/{me}"), &t.admin.token)
        .await
        .assert_status(204);
    let survivor = &t.admin;
    assert_eq!(owner_count(&app, t.org_id).await, 1);
    app.delete(
        &format!("{base}/members/{}", survivor.user_id),
        &survivor.token,
    )
    .await
    .assert_problem(409, "last_owner");
    app.patch(
        &format!("{base}/members/{}", survivor.user_id),
        &survivor.token,
        json!({"role": "member"}),
    )
    .await
    .assert_problem(409, "last_owner");

    // The same three in SQL as the runtime role.
    let mut db = app.sql_runtime().await;
    for sql in [
        "select app.change_member_role($1, 'viewer')",
        "select app.remove_member($1)",
    ] {
        let tx = runtime_tx(&app, &mut db, survivor, Some(t.org_id)).await;
        let got = outcome(tx.execute(sql, &[&survivor.user_id]).await);
        assert_eq!(got, "PT409", "{sql}");
        drop(tx);
    }
    assert_eq!(owner_count(&app, t.org_id).await, 1);

    // Transferring ownership is the way out: then the old owner may leave.
    let moved = app
        .post(
            &format!("{base}/transfer-ownership"),
            &survivor.token,
            json!({"user_id": t.member.user_id}),
        )
        .await;
    assert_eq!(moved.assert_status(200)["role"], "owner");
    app.post(
        &format!("{base}/transfer-ownership"),
        &t.member.token,
        json!({"user_id": t.member.user_id}),
    )
    .await
    .assert_problem(409, "transfer_to_self");
    assert_eq!(
        role_of(&app, t.org_id, survivor.user_id).await.as_deref(),
        Some("admin")
    );
    app.delete(
        &format!("{base}/members/{}", survivor.user_id),
        &survivor.token,
    )
    .await
    .assert_status(204);
    assert_eq!(owner_count(&app, t.org_id).await, 1);
}

/// Two owners demote themselves at once. The first call holds the org's row lock until
/// it commits; the second waits, then sees one owner left and is refused.
#[tokio::test]
async fn concurrent_demotions_of_the_last_two_owners_leave_one() {
    let app = spawn_app().await;
    let t = team(&app, "Race").await;
    let org = t.org_id;
    let second = &t.admin;
    let db = app.sql_superuser().await;
    db.execute(
        "update app.memberships set role = 'owner' where org_id = $1 and user_id = $2",
        &[&org, &second.user_id],
    )
    .await
    .unwrap();
    drop(db);

    // Deterministic, in SQL as the runtime role: hold the first transaction open.
    let mut first_db = app.sql_runtime().await;
    let first = runtime_tx(&app, &mut first_db, &t.owner, Some(org)).await;
    first
        .execute(
            "select app.change_member_role($1, 'admin')",
            &[&t.owner.user_id],
        )
        .await
        .unwrap();
    let ((sid, proof), uid) = (app.session_proof(second), second.user_id);
    let db_name = app.db_name.clone();
    let racer = tokio::spawn(async move {
        let mut db = crate::helpers::connect_as("palisade_app", &db_name).await;
        let tx = db.transaction().await.unwrap();
        // Outlast a slow machine: the runtime role's own lock_timeout is 2 s.
        tx.batch_execute("set local lock_timeout = '20s'")
            .await
            .unwrap();
        tx.query_one(
            "select app.set_request_context($1, $2, $3)",
            &[&sid, &proof, &Some(org)],
        )
        .await
        .unwrap();
        let got = outcome(
            tx.execute("select app.change_member_role($1, 'admin')", &[&uid])
                .await,
        );
        if got == "ok" {
            tx.commit().await.unwrap();
        }
        got
    });
    // Proof that the second demotion waits for the first's row lock: PostgreSQL shows it
    // blocked by the first transaction's backend.
    let su = app.sql_superuser().await;
    let first_pid: i32 = first
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let blocked: i64 = su
                .query_one(
                    "select count(*) from pg_stat_activity
                      where $1 = any(pg_blocking_pids(pid)) and wait_event_type = 'Lock'",
                    &[&first_pid],
                )
                .await
                .unwrap()
                .get(0);
            if blocked == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the second demotion waits on the first's lock"
    );
    assert!(!racer.is_finished());
    first.commit().await.unwrap();
    assert_eq!(racer.await.unwrap(), "PT409");
    assert_eq!(owner_count(&app, org).await, 1);
    assert_eq!(role_of(&app, org, uid).await.as_deref(), Some("owner"));

    // Through the API: rounds of two owners demoting themselves, and of two owners
    // removing each other, at the same moment. At most one of each pair succeeds.
    for round in 0..4 {
        let a = &t.member;
        let b = &t.viewer;
        let org = new_org(&app, a, &format!("Round {round}")).await;
        add_member(&app, org, b.user_id, "owner").await;
        let base = format!("/v1/orgs/{org}");
        let (path_a, path_b) = (
            format!("{base}/members/{}", a.user_id),
            format!("{base}/members/{}", b.user_id),
        );
        let demote = json!({"role": "admin"});
        let (ra, rb) = if round % 2 == 0 {
            // Each demotes themselves.
            tokio::join!(
                app.patch(&path_a, &a.token, demote.clone()),
                app.patch(&path_b, &b.token, demote.clone()),
            )
        } else {
            // Each removes the other.
            tokio::join!(app.delete(&path_b, &a.token), app.delete(&path_a, &b.token))
        };
        let ok = [&ra, &rb].iter().filter(|r| r.status.is_success()).count();
        assert_eq!(ok, 1, "round {round}: {} / {}", ra.body, rb.body);
        for r in [&ra, &rb] {
            assert!(
                r.status.is_success() || [403, 404, 409].contains(&r.status.as_u16()),
                "round {round}: {}",
                r.body
            );
        }
        assert_eq!(owner_count(&app, org).await, 1, "round {round}");
    }
}

/// Removal and demotion bite on the very next request: the access token is still valid,
/// but the membership is checked by every request's first statement.
#[tokio::test]
async fn a_removed_member_loses_access_on_the_next_request() {
    let app = spawn_app().await;
    let t = team(&app, "Gate").await;
    let base = format!("/v1/orgs/{}", t.org_id);
    let project = app.create_project(&t.member, t.org_id, "secret").await;
    app.get(&format!("{base}/projects/{project}"), &t.member.token)
        .await
        .assert_status(200);

    // Demoted to viewer: reads still work, writes are refused at once.
    app.patch(
        &format!("{base}/members/{}", t.member.user_id),
        &t.admin.token,
        json!({"role": "viewer"}),
    )
    .await
    .assert_status(200);
    app.post(
        &format!("{base}/projects"),
        &t.member.token,
        json!({"name": "more"}),
    )
    .await
    .assert_problem(403, "forbidden");

    app.delete(
        &format!("{base}/members/{}", t.member.user_id),
        &t.admin.token,
    )
    .await
    .assert_status(204);
    for resp in [
        app.get(&base, &t.member.token).await,
        app.get(&format!("{base}/projects"), &t.member.token).await,
        app.get(&format!("{base}/projects/{project}"), &t.member.token)
            .await,
        app.get(&format!("{base}/members"), &t.member.token).await,
        app.patch(
            &format!("{base}/projects/{project}"),
            &t.member.token,
            json!({"name": "x"}),
        )
        .await,
    ] {
        resp.assert_problem(404, "not_found");
    }
    // Still signed in: only this org is gone.
    app.get("/v1/auth/me", &t.member.token)
        .await
        .assert_status(200);

    // A member who leaves is out at once too.
    app.delete(
        &format!("{base}/members/{}", t.viewer.user_id),
        &t.viewer.token,
    )
    .await
    .assert_status(204);
    app.get(&format!("{base}/projects"), &t.viewer.token)
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn members_are_listed_with_email_name_role_and_joined_at() {
    let app = spawn_app().await;
    let t = team(&app, "List").await;
    let list = app
        .get(
            &format!("/v1/orgs/{}/members?limit=3", t.org_id),
            &t.viewer.token,
        )
        .await;
    let page = list.assert_status(200).clone();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["user_id"], t.owner.user_id.to_string());
    assert_eq!(items[0]["email"], t.owner.email);
    assert_eq!(items[0]["name"], "ListOwner");
    assert_eq!(items[0]["role"], "owner");
    assert!(items[0]["joined_at"].is_string());
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            &format!("/v1/orgs/{}/members?limit=3&cursor={cursor}", t.org_id),
            &t.viewer.token,
        )
        .await;
    let rest = rest.assert_status(200);
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["role"], "viewer");
    assert!(rest["next_cursor"].is_null());
}

/// Every membership change, invitation and role change writes an event in its own
/// transaction; refused changes write none.
#[tokio::test]
async fn every_change_writes_an_event() {
    let app = spawn_app().await;
    let t = team(&app, "Audit").await;
    let base = format!("/v1/orgs/{}", t.org_id);
    let (inv, _) =
        crate::fixtures::invite(&app, &t.admin, t.org_id, "a1@example.com", "member").await;
    app.post(
        &format!("{base}/invitations/{inv}/resend"),
        &t.admin.token,
        json!({}),
    )
    .await
    .assert_status(200);
    app.delete(&format!("{base}/invitations/{inv}"), &t.admin.token)
        .await
        .assert_status(204);
    app.patch(&base, &t.admin.token, json!({"name": "Audit 2"}))
        .await
        .assert_status(200);
    app.patch(
        &format!("{base}/members/{}", t.member.user_id),
        &t.admin.token,
        json!({"role": "viewer"}),
    )
    .await
    .assert_status(200);
    // Refused: no event.
    app.patch(
        &format!("{base}/members/{}", t.owner.user_id),
        &t.owner.token,
        json!({"role": "admin"}),
    )
    .await
    .assert_problem(409, "last_owner");
    app.post(
        &format!("{base}/transfer-ownership"),
        &t.owner.token,
        json!({"user_id": t.admin.user_id}),
    )
    .await
    .assert_status(200);
    app.delete(
        &format!("{base}/members/{}", t.member.user_id),
        &t.admin.token,
    )
    .await
    .assert_status(204);
    app.delete(
        &format!("{base}/members/{}", t.viewer.user_id),
        &t.viewer.token,
    )
    .await
    .assert_status(204);

    let su = app.sql_superuser().await;
    let rows = audit_chain(&su, t.org_id).await;
    /// (action, actor, targets)
    type Event = (String, Option<Uuid>, serde_json::Value);
    let got: Vec<Event> = rows
        .iter()
        .map(|r| (r.action.clone(), r.actor_id, r.targets.clone()))
        .collect();
    let (o, a, m, v) = (
        t.owner.user_id,
        t.admin.user_id,
        t.member.user_id,
        t.viewer.user_id,
    );
    let user = |id: Uuid, email: &str| json!([{"type": "user", "id": id, "name": email}]);
    let invitation = json!([{"type": "invitation", "id": inv, "name": "a1@example.com"}]);
    let org = |name: &str| json!([{"type": "org", "id": t.org_id, "name": name}]);
    assert_eq!(
        got,
        [
            ("org.created".into(), Some(o), org("Audit")),
            ("invitation.created".into(), Some(a), invitation.clone()),
            ("invitation.resent".into(), Some(a), invitation.clone()),
            ("invitation.revoked".into(), Some(a), invitation),
            ("org.updated".into(), Some(a), org("Audit 2")),
            (
                "member.role_changed".into(),
                Some(a),
                user(m, &t.member.email)
            ),
            (
                "org.ownership_transferred".into(),
                Some(o),
                user(a, &t.admin.email)
            ),
            ("member.removed".into(), Some(a), user(m, &t.member.email)),
            ("member.left".into(), Some(v), user(v, &t.viewer.email)),
        ]
    );
    // A chain: seq 1, 2, 3, ... in the order of the changes, intact; every row acted by
    // a signed-in user, named by their email at the time.
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=rows.len() as i64).collect::<Vec<_>>()
    );
    assert_eq!(verify_chain(&su, t.org_id).await, None);
    let emails = [
        (o, &t.owner.email),
        (a, &t.admin.email),
        (v, &t.viewer.email),
    ];
    for r in &rows {
        assert_eq!(r.actor_type, "user", "{r:?}");
        assert!(
            r.context["request_id"].is_string(),
            "written by an API request: {r:?}"
        );
        let email = emails
            .iter()
            .find(|(id, _)| Some(*id) == r.actor_id)
            .unwrap()
            .1;
        assert_eq!(r.actor_name.as_ref(), Some(email), "{r:?}");
    }
    assert_eq!(rows[5].metadata, json!({"from": "member", "to": "viewer"}));
    assert_eq!(
        rows[4].metadata["changes"]["name"],
        json!({"from": "Audit", "to": "Audit 2"})
    );
    assert_eq!(
        rows[1].metadata,
        json!({"email": "a1@example.com", "role": "member"})
    );
    // The member was demoted to viewer before their removal.
    for removal in &rows[7..] {
        assert_eq!(
            removal.metadata,
            json!({"role": "viewer", "api_keys_revoked": 0})
        );
    }
}
