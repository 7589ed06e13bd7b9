//! Fixtures the test modules share: a team with one user per role, memberships and
//! invitations arranged directly, the runtime-role transaction, SQLSTATE outcomes.

use serde_json::json;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::helpers::{Signup, TestApp};

/// An org with one user per role (the owner created it through the API).
pub struct Team {
    pub org_id: Uuid,
    pub owner: Signup,
    pub admin: Signup,
    pub member: Signup,
    pub viewer: Signup,
}

impl Team {
    /// (role, user) for the four roles, highest first.
    pub fn by_role(&self) -> [(&'static str, &Signup); 4] {
        [
            ("owner", &self.owner),
            ("admin", &self.admin),
            ("member", &self.member),
            ("viewer", &self.viewer),
        ]
    }
}

/// A non-personal org created by `owner` through the API.
pub async fn new_org(app: &TestApp, owner: &Signup, name: &str) -> Uuid {
    let resp = app
        .post("/v1/orgs", &owner.token, json!({"name": name}))
        .await;
    resp.assert_status(201)["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// An API key of `org` created by `who` through the API and rotated once (default grace),
/// so a replaced secret waits out its grace window in app.api_key_secrets. Its id.
pub async fn rotated_key(app: &TestApp, who: &Signup, org: Uuid, name: &str) -> String {
    let id = app
        .post(
            &format!("/v1/orgs/{org}/api-keys"),
            &who.token,
            json!({"name": name}),
        )
        .await
        .assert_status(201)["api_key"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(
        &format!("/v1/orgs/{org}/api-keys/{id}/rotate"),
        &who.token,
        json!({}),
    )
    .await
    .assert_status(200);
    id
}

/// Arranges a membership directly (as the superuser): fixtures only.
pub async fn add_member(app: &TestApp, org: Uuid, user: Uuid, role: &str) {
    add_member_with(&app.sql_superuser().await, org, user, role).await;
}

pub async fn add_member_with(su: &Client, org: Uuid, user: Uuid, role: &str) {
    su.execute(
        "insert into app.memberships (org_id, user_id, role) values ($1, $2, $3::text::app.org_role)",
        &[&org, &user, &role],
    )
    .await
    .unwrap();
}

pub async fn team(app: &TestApp, name: &str) -> Team {
    let owner = app.signup(&format!("{name}Owner")).await;
    let admin = app.signup(&format!("{name}Admin")).await;
    let member = app.signup(&format!("{name}Member")).await;
    let viewer = app.signup(&format!("{name}Viewer")).await;
    let org_id = new_org(app, &owner, name).await;
    for (user, role) in [(&admin, "admin"), (&member, "member"), (&viewer, "viewer")] {
        add_member(app, org_id, user.user_id, role).await;
    }
    Team {
        org_id,
        owner,
        admin,
        member,
        viewer,
    }
}

/// A user who never signs in (a target for actions), created directly: no password hashing.
pub async fn bare_user(app: &TestApp) -> (Uuid, String) {
    bare_user_with(&app.sql_superuser().await).await
}

pub async fn bare_user_with(su: &Client) -> (Uuid, String) {
    let email = format!("subject-{}@example.com", Uuid::new_v4().simple());
    let id = su
        .query_one(
            "insert into app.users (email, name, password_hash) values ($1, 'Subject', 'x') returning id",
            &[&email],
        )
        .await
        .unwrap()
        .get(0);
    (id, email)
}

/// The user's role in the org, read as the superuser.
pub async fn role_of(app: &TestApp, org: Uuid, user: Uuid) -> Option<String> {
    role_of_with(&app.sql_superuser().await, org, user).await
}

pub async fn role_of_with(su: &Client, org: Uuid, user: Uuid) -> Option<String> {
    su.query_opt(
        "select role::text from app.memberships where org_id = $1 and user_id = $2",
        &[&org, &user],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}

/// The number of owners of the org, read as the superuser.
pub async fn owner_count(app: &TestApp, org: Uuid) -> i64 {
    app.sql_superuser()
        .await
        .query_one(
            "select count(*) from app.memberships where org_id = $1 and role = 'owner'",
            &[&org],
        )
        .await
        .unwrap()
        .get(0)
}

/// Invites through the API as `who`; returns (invitation id, token from the email).
pub async fn invite(
    app: &TestApp,
    who: &Signup,
    org: Uuid,
    email: &str,
    role: &str,
) -> (Uuid, String) {
    let resp = app
        .post(
            &format!("/v1/orgs/{org}/invitations"),
            &who.token,
            json!({"email": email, "role": role}),
        )
        .await;
    let id = resp.assert_status(201)["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let to = email.trim().to_lowercase();
    let token = app.last_email(&to, "invitation").await.token();
    (id, token)
}

/// Opens a runtime-role transaction with `who`'s context for `org`, as the server does.
pub async fn runtime_tx<'a>(
    app: &TestApp,
    db: &'a mut tokio_postgres::Client,
    who: &Signup,
    org: Option<Uuid>,
) -> tokio_postgres::Transaction<'a> {
    let tx = db.transaction().await.unwrap();
    app.set_context(&tx, who, org).await;
    tx
}

/// The SQLSTATE of a failed statement, or "ok".
pub fn outcome<T>(result: Result<T, tokio_postgres::Error>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => e
            .code()
            .map(|c| c.code().to_owned())
            .unwrap_or_else(|| format!("no sqlstate: {e}")),
    }
}

/// One row of app.audit_log, as the superuser reads it (the hashes left out).
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub seq: i64,
    pub action: String,
    pub actor_type: String,
    pub actor_id: Option<Uuid>,
    pub actor_name: Option<String>,
    pub targets: serde_json::Value,
    pub context: serde_json::Value,
    pub metadata: serde_json::Value,
}

const AUDIT_COLUMNS: &str =
    "seq, action, actor_type, actor_id, actor_name, targets, context, metadata";

fn audit_row(r: &tokio_postgres::Row) -> AuditRow {
    AuditRow {
        seq: r.get(0),
        action: r.get(1),
        actor_type: r.get(2),
        actor_id: r.get(3),
        actor_name: r.get(4),
        targets: r.get(5),
        context: r.get(6),
        metadata: r.get(7),
    }
}

/// Every row of an audit chain (an org's id, or an account's), in seq order.
pub async fn audit_chain(su: &Client, chain: Uuid) -> Vec<AuditRow> {
    su.query(
        &format!("select {AUDIT_COLUMNS} from app.audit_log where chain_id = $1 order by seq"),
        &[&chain],
    )
    .await
    .unwrap()
    .iter()
    .map(audit_row)
    .collect()
}

/// The rows of a chain with this action, in seq order.
pub async fn audit_rows(su: &Client, chain: Uuid, action: &str) -> Vec<AuditRow> {
    su.query(
        &format!(
            "select {AUDIT_COLUMNS} from app.audit_log where chain_id = $1 and action = $2 order by seq"
        ),
        &[&chain, &action],
    )
    .await
    .unwrap()
    .iter()
    .map(audit_row)
    .collect()
}

/// `app.verify_audit_chain`: the first broken link (seq, problem), or None when intact.
pub async fn verify_chain(su: &Client, chain: Uuid) -> Option<(i64, String)> {
    su.query_opt(
        "select seq, problem from app.verify_audit_chain($1)",
        &[&chain],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1)))
}
