//! Invitations: the whole flow for someone who registers after being invited, tokens
//! bound to the invited email, single use, expiry, revocation, resend, conflicts.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    fixtures::{add_member, invite, role_of, team},
    helpers::{PASSWORD, Signup, TestApp, TestResponse, spawn_app},
};

impl TestApp {
    async fn lookup(&self, token: &str) -> TestResponse {
        self.request(
            Method::GET,
            &format!("/v1/invitations/lookup?token={token}"),
            None,
            None,
        )
        .await
    }

    async fn accept(&self, who: &Signup, token: &str) -> TestResponse {
        self.post(
            "/v1/invitations/accept",
            &who.token,
            json!({"token": token}),
        )
        .await
    }

    async fn decline(&self, who: &Signup, token: &str) -> TestResponse {
        self.post(
            "/v1/invitations/decline",
            &who.token,
            json!({"token": token}),
        )
        .await
    }

    /// Registers `email` and signs in (for invitees who had no account yet).
    async fn signup_as(&self, email: &str, name: &str) -> Signup {
        let body = self.register(email, PASSWORD, name).await;
        let body = body.assert_status(201).clone();
        let login = self.login(email, PASSWORD).await;
        Signup {
            user_id: body["user"]["id"].as_str().unwrap().parse().unwrap(),
            org_id: body["user"]["current_org_id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
            email: email.to_owned(),
            token: login.assert_status(200)["access_token"]
                .as_str()
                .unwrap()
                .to_owned(),
        }
    }

    async fn invitation_status(&self, id: Uuid) -> String {
        self.sql_superuser()
            .await
            .query_one("select status from app.invitations where id = $1", &[&id])
            .await
            .unwrap()
            .get(0)
    }
}

#[tokio::test]
async fn someone_invited_before_registering_looks_up_registers_and_accepts() {
    let app = spawn_app().await;
    let t = team(&app, "Acme").await;
    let created = app
        .post(
            &format!("/v1/orgs/{}/invitations", t.org_id),
            &t.admin.token,
            json!({"email": "New.Person@Example.COM", "role": "member"}),
        )
        .await;
    let inv = created.assert_status(201).clone();
    assert_eq!(inv["email"], "new.person@example.com");
    assert_eq!(inv["role"], "member");
    assert_eq!(inv["invited_by"], t.admin.user_id.to_string());
    assert_eq!(inv["expired"], false);
    assert!(
        inv.get("token").is_none(),
        "the token is never in a response"
    );
    let id: Uuid = inv["id"].as_str().unwrap().parse().unwrap();

    // The token: emailed, 256 bits, stored only as its SHA-256, valid 7 days.
    let email = app.last_email("new.person@example.com", "invitation").await;
    assert_eq!(email.to, "new.person@example.com");
    assert!(email.subject.contains("Acme"), "{}", email.subject);
    assert!(email.body.contains("AcmeAdmin"), "{}", email.body);
    let token = email.token();
    assert_eq!(URL_SAFE_NO_PAD.decode(&token).unwrap().len(), 32);
    let su = app.sql_superuser().await;
    let row = su
        .query_one(
            "select token_hash, row_to_json(i)::text from app.invitations i where id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let stored: Vec<u8> = row.get(0);
    assert_eq!(stored, Sha256::digest(token.as_bytes()).to_vec());
    let whole_row: String = row.get(1);
    assert!(!whole_row.contains(&token), "no plaintext token in the row");
    let validity: String = su
        .query_one(
            "select (expires_at - created_at)::text from app.invitations where id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(validity, "7 days");

    // Lookup before signing in: org, inviter and role.
    let preview = app.lookup(&token).await;
    let preview = preview.assert_status(200);
    assert_eq!(preview["org_id"], t.org_id.to_string());
    assert_eq!(preview["org_name"], "Acme");
    assert_eq!(preview["inviter_name"], "AcmeAdmin");
    assert_eq!(preview["role"], "member");
    assert_eq!(preview["email"], "new.person@example.com");
    app.lookup("not-a-real-token")
        .await
        .assert_problem(404, "not_found");

    // Registers afterwards, with the invited address, and accepts.
    let newbie = app.signup_as("new.person@example.com", "Newbie").await;
    let accepted = app.accept(&newbie, &token).await;
    let org = accepted.assert_status(200);
    assert_eq!(org["id"], t.org_id.to_string());
    assert_eq!(org["role"], "member");
    let me = app.get("/v1/auth/me", &newbie.token).await;
    let me = me.assert_status(200);
    assert_eq!(
        me["user"]["current_org_id"],
        t.org_id.to_string(),
        "accepting switches the current org"
    );
    assert_eq!(me["organizations"].as_array().unwrap().len(), 2);
    assert_eq!(
        me["user"]["email_verified"], true,
        "accepting proves the invitee reads the invited mailbox"
    );
    assert_eq!(
        role_of(&app, t.org_id, newbie.user_id).await.as_deref(),
        Some("member")
    );
    app.create_project(&newbie, t.org_id, "first").await;
    assert_eq!(app.invitation_status(id).await, "accepted");

    // Single use: the token is dead for every door.
    app.accept(&newbie, &token)
        .await
        .assert_problem(410, "invitation_used");
    app.decline(&newbie, &token)
        .await
        .assert_problem(410, "invitation_used");
    app.lookup(&token)
        .await
        .assert_problem(410, "invitation_used");
    // And no longer pending.
    let pending = app
        .get(
            &format!("/v1/orgs/{}/invitations", t.org_id),
            &t.admin.token,
        )
        .await;
    assert!(
        pending.assert_status(200)["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let events: Vec<(String, Option<Uuid>)> = su
        .query(
            "select action, actor_id from app.audit_log
              where org_id = $1 and action like 'invitation.%' order by seq",
            &[&t.org_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        events,
        [
            ("invitation.created".to_owned(), Some(t.admin.user_id)),
            ("invitation.accepted".to_owned(), Some(newbie.user_id)),
        ]
    );
}

#[tokio::test]
async fn only_the_invited_email_can_accept_or_decline() {
    let app = spawn_app().await;
    let t = team(&app, "Bound").await;
    let invitee = app.signup("Invitee").await;
    let (id, token) = invite(
        &app,
        &t.owner,
        t.org_id,
        &invitee.email.to_uppercase(),
        "admin",
    )
    .await;
    // Anyone else holding the link: other users, members of the org, its owner.
    let stranger = app.signup("Stranger").await;
    for who in [&stranger, &t.viewer, &t.owner] {
        app.accept(who, &token)
            .await
            .assert_problem(403, "invitation_email_mismatch");
        app.decline(who, &token)
            .await
            .assert_problem(403, "invitation_email_mismatch");
    }
    assert_eq!(role_of(&app, t.org_id, stranger.user_id).await, None);
    assert_eq!(
        role_of(&app, t.org_id, t.viewer.user_id).await.as_deref(),
        Some("viewer")
    );
    assert_eq!(app.invitation_status(id).await, "pending");
    // Without signing in, nobody accepts.
    app.request(
        Method::POST,
        "/v1/invitations/accept",
        None,
        Some(json!({"token": token})),
    )
    .await
    .assert_problem(401, "unauthorized");
    // The invitee (email compared case-insensitively) can.
    let accepted = app.accept(&invitee, &token).await;
    assert_eq!(accepted.assert_status(200)["role"], "admin");

    // At SQL level, as the runtime role, the mismatch is refused by the function.
    let (_, other_token) = invite(&app, &t.owner, t.org_id, "someone@example.com", "member").await;
    let mut db = app.sql_runtime().await;
    let tx = crate::fixtures::runtime_tx(&app, &mut db, &stranger, None).await;
    let hash = Sha256::digest(other_token.as_bytes()).to_vec();
    let err = tx
        .execute("select app.accept_invitation($1)", &[&hash])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "PT403");
}

#[tokio::test]
async fn an_expired_token_is_refused_and_a_resend_revives_the_invitation() {
    let app = spawn_app().await;
    let t = team(&app, "Clock").await;
    let invitee = app.signup("Late").await;
    let (id, token) = invite(&app, &t.admin, t.org_id, &invitee.email, "viewer").await;
    // Move the clock: the invitation's expiry, in the database, into the past.
    let su = app.sql_superuser().await;
    su.execute(
        "update app.invitations set expires_at = now() - interval '1 second' where id = $1",
        &[&id],
    )
    .await
    .unwrap();
    app.lookup(&token)
        .await
        .assert_problem(410, "invitation_expired");
    app.accept(&invitee, &token)
        .await
        .assert_problem(410, "invitation_expired");
    app.decline(&invitee, &token)
        .await
        .assert_problem(410, "invitation_expired");
    assert_eq!(role_of(&app, t.org_id, invitee.user_id).await, None);
    let list = app
        .get(
            &format!("/v1/orgs/{}/invitations", t.org_id),
            &t.admin.token,
        )
        .await;
    assert_eq!(list.assert_status(200)["items"][0]["expired"], true);

    // One second before expiry it still works; resend restarts the 7 days.
    let resent = app
        .post(
            &format!("/v1/orgs/{}/invitations/{id}/resend", t.org_id),
            &t.admin.token,
            json!({}),
        )
        .await;
    assert_eq!(resent.assert_status(200)["expired"], false);
    let fresh = app.last_email(&invitee.email, "invitation").await.token();
    assert_ne!(fresh, token);
    app.accept(&invitee, &token)
        .await
        .assert_problem(404, "not_found");
    su.execute(
        "update app.invitations set expires_at = now() + interval '1 second' where id = $1",
        &[&id],
    )
    .await
    .unwrap();
    assert_eq!(
        app.accept(&invitee, &fresh).await.assert_status(200)["role"],
        "viewer"
    );
}

#[tokio::test]
async fn revoked_and_resent_tokens_are_refused() {
    let app = spawn_app().await;
    let t = team(&app, "Dead").await;
    let base = format!("/v1/orgs/{}/invitations", t.org_id);
    let invitee = app.signup("Maybe").await;

    // Resent: the old token is unknown, the new one works.
    let (id, old) = invite(&app, &t.admin, t.org_id, &invitee.email, "member").await;
    app.post(&format!("{base}/{id}/resend"), &t.owner.token, json!({}))
        .await
        .assert_status(200);
    let new = app.last_email(&invitee.email, "invitation").await.token();
    assert_ne!(old, new);
    app.lookup(&old).await.assert_problem(404, "not_found");
    app.accept(&invitee, &old)
        .await
        .assert_problem(404, "not_found");
    app.decline(&invitee, &old)
        .await
        .assert_problem(404, "not_found");
    assert_eq!(app.invitation_status(id).await, "pending");
    app.lookup(&new).await.assert_status(200);

    // Revoked: the current token dies; revoking or resending again finds nothing pending.
    app.delete(&format!("{base}/{id}"), &t.admin.token)
        .await
        .assert_status(204);
    app.lookup(&new)
        .await
        .assert_problem(410, "invitation_revoked");
    app.accept(&invitee, &new)
        .await
        .assert_problem(410, "invitation_revoked");
    app.delete(&format!("{base}/{id}"), &t.admin.token)
        .await
        .assert_problem(404, "not_found");
    app.post(&format!("{base}/{id}/resend"), &t.admin.token, json!({}))
        .await
        .assert_problem(404, "not_found");
    assert_eq!(role_of(&app, t.org_id, invitee.user_id).await, None);
    let emails: Vec<_> = app
        .emails_to(&invitee.email)
        .await
        .into_iter()
        .filter(|e| e.template == "invitation")
        .collect();
    assert_eq!(
        emails.len(),
        2,
        "one email per token, none for the revocation"
    );

    // Declined: the token dies too, and nobody joined.
    let (id, token) = invite(&app, &t.admin, t.org_id, &invitee.email, "member").await;
    app.decline(&invitee, &token).await.assert_status(204);
    assert_eq!(app.invitation_status(id).await, "declined");
    app.accept(&invitee, &token)
        .await
        .assert_problem(410, "invitation_used");
    assert_eq!(role_of(&app, t.org_id, invitee.user_id).await, None);
}

#[tokio::test]
async fn reinviting_a_member_or_a_pending_email_is_a_conflict() {
    let app = spawn_app().await;
    let t = team(&app, "Again").await;
    let base = format!("/v1/orgs/{}/invitations", t.org_id);
    app.post(
        &base,
        &t.admin.token,
        json!({"email": t.member.email.to_uppercase(), "role": "viewer"}),
    )
    .await
    .assert_problem(409, "already_member");
    let (id, token) = invite(&app, &t.admin, t.org_id, "twice@example.com", "member").await;
    app.post(
        &base,
        &t.owner.token,
        json!({"email": "Twice@example.com", "role": "admin"}),
    )
    .await
    .assert_problem(409, "invitation_pending");
    // Once expired, a new invitation may replace it (and the old token stays dead).
    app.sql_superuser()
        .await
        .execute(
            "update app.invitations set expires_at = now() - interval '1 minute' where id = $1",
            &[&id],
        )
        .await
        .unwrap();
    app.post(
        &base,
        &t.owner.token,
        json!({"email": "twice@example.com", "role": "admin"}),
    )
    .await
    .assert_status(201);
    assert_eq!(app.invitation_status(id).await, "expired");
    app.lookup(&token)
        .await
        .assert_problem(410, "invitation_expired");

    // Accepting while already a member (joined some other way meanwhile) is a conflict.
    let late = app.signup("Late").await;
    let (_, token) = invite(&app, &t.admin, t.org_id, &late.email, "admin").await;
    add_member(&app, t.org_id, late.user_id, "viewer").await;
    app.accept(&late, &token)
        .await
        .assert_problem(409, "already_member");
    assert_eq!(
        role_of(&app, t.org_id, late.user_id).await.as_deref(),
        Some("viewer")
    );

    // Bad input: 4xx with a code, never a 500.
    app.post(
        &base,
        &t.admin.token,
        json!({"email": "nope", "role": "member"}),
    )
    .await
    .assert_problem(422, "validation_failed");
    app.post(
        &base,
        &t.admin.token,
        json!({"email": "a@example.com", "role": "king"}),
    )
    .await
    .assert_problem(422, "validation_failed");
    app.request(Method::GET, "/v1/invitations/lookup", None, None)
        .await
        .assert_problem(400, "invalid_parameter");
    app.accept(&late, "")
        .await
        .assert_problem(422, "validation_failed");
    app.accept(&late, &palisade::crypto::tokens::generate())
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn the_plans_seats_refuse_invitations_beyond_them() {
    let app = spawn_app().await;
    let t = team(&app, "Seats").await;
    // The free plan's 5 seats: 4 members + 1 invitation.
    app.set_plan(t.org_id, "free").await;
    invite(&app, &t.admin, t.org_id, "fifth@example.com", "member").await;
    let resp = app
        .post(
            &format!("/v1/orgs/{}/invitations", t.org_id),
            &t.admin.token,
            json!({"email": "sixth@example.com", "role": "member"}),
        )
        .await;
    resp.assert_problem(402, "plan_limit_reached");
    assert_eq!(resp.body["used"], 5);
}
