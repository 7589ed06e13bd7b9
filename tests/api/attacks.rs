//! The attacks of the security review, reproduced as the request role (palisade_app)
//! against real PostgreSQL. Two tenants: the attacker A, signed in with a legitimate
//! context of their own (and an API key of their org), and the victim V, an org with an
//! owner, an admin, a member and a viewer (each with a live session), projects, a pending
//! and a revoked invitation, API keys (a live member key, a viewer key, a revoked key),
//! and the audit log those wrote. Every attack must see nothing of V and change nothing of
//! V; the superuser compares V's rows before and after.
//!
//!   S1  forging the request context (set_config / SET / SET LOCAL, replayed and copied
//!       MACs, wrong session proofs, contexts left on pooled connections), a user's or an
//!       API key's;
//!   S2  calling another lane's security definer functions on bare arguments;
//!   S3  un-revoking a session;
//!   S4  lifting the timeouts: with ALTER ROLE (new connections), and with SET on the
//!       pooled connection a request ran on;
//!   and signalling (cancelling, terminating) another tenant's in-flight request.
//!
//! The fixture ([`tenants`]) and the victim's fingerprint ([`victim_state`]) are shared
//! with the attack matrix (matrix.rs).

use std::collections::BTreeMap;
use std::time::Duration;

use palisade::db::{Access, Db, Lane, PoolOptions, RequestContext, audit, migrate};
use reqwest::Method;
use serde_json::json;
use tokio_postgres::{Client, types::ToSql};
use uuid::Uuid;

use crate::{
    fixtures::{Team, invite, outcome, team},
    helpers::{Signup, TestApp, spawn_app},
};

// ---------------------------------------------------------------------------
// The two tenants
// ---------------------------------------------------------------------------

/// An API key, created through the API: its id, its name and its secret (shown once).
pub struct Key {
    pub id: Uuid,
    pub name: String,
    pub secret: String,
}

pub struct Tenants {
    /// A: owner of their personal org, with a project and a pending invitation there.
    pub attacker: Signup,
    pub attacker_project: Uuid,
    /// An API key of A's org, created by A, with the highest role a key can have (admin).
    pub attacker_key: Key,
    /// V: owner, admin, member and viewer, each signed in.
    pub victim: Team,
    /// V's name (also the prefix of its members' names).
    pub victim_name: String,
    pub victim_projects: Vec<(Uuid, String)>,
    /// A pending invitation of V (to the admin role), and the address it went to.
    pub victim_invitation: Uuid,
    pub victim_invitee: String,
    /// V's API keys, all created by V's owner: a live one (role member; the one the
    /// attacks aim at by id), one with the lowest role (viewer), and a revoked one.
    pub victim_key: Key,
    pub victim_viewer_key: Key,
    pub victim_revoked_key: Key,
    /// V's customer meter (on the pro plan), with one ingested event whose subject is
    /// `victim_subject`: rows in every usage table.
    pub victim_meter: String,
    pub victim_subject: String,
    /// V's org-visible conversation in V's first project, with one appended event (a
    /// segment object in the bucket), a project member, two documents with a chunk each,
    /// and a queued purge: rows in every workspace table.
    pub victim_conversation: Uuid,
    pub victim_conversation_title: String,
    /// V's document (text/plain, in the attacks' project, processed into a chunk).
    pub victim_document: Uuid,
    /// An assistant conversation of V's member (private to it), with a message.
    pub victim_assistant_conversation: Uuid,
    /// V's member's secret `MINE` and V's LLM key, sealed (values never in a response).
    pub victim_sealed: [String; 2],
}

impl Tenants {
    pub fn victim_org(&self) -> Uuid {
        self.victim.org_id
    }

    pub fn victim_users(&self) -> Vec<Uuid> {
        self.victim
            .by_role()
            .iter()
            .map(|(_, s)| s.user_id)
            .collect()
    }

    pub fn victim_project_ids(&self) -> Vec<Uuid> {
        self.victim_projects.iter().map(|(id, _)| *id).collect()
    }

    /// V's API keys (live and revoked).
    pub fn victim_keys(&self) -> [&Key; 3] {
        [
            &self.victim_key,
            &self.victim_viewer_key,
            &self.victim_revoked_key,
        ]
    }

    pub fn victim_key_ids(&self) -> Vec<Uuid> {
        self.victim_keys().iter().map(|k| k.id).collect()
    }

    /// The session of each of V's members (from their access tokens).
    pub fn victim_sessions(&self, app: &TestApp) -> Vec<Uuid> {
        self.victim
            .by_role()
            .iter()
            .map(|(_, s)| app.session_proof(s).0)
            .collect()
    }

    /// Everything that identifies V's data: a response (or row) carrying one of these
    /// to anyone outside V is a leak.
    pub fn victim_secrets(&self, app: &TestApp) -> Vec<String> {
        let mut out = vec![
            self.victim_org().to_string(),
            self.victim_name.clone(),
            self.victim_invitation.to_string(),
            self.victim_invitee.clone(),
        ];
        for (_, s) in self.victim.by_role() {
            out.push(s.user_id.to_string());
            out.push(s.email.clone());
        }
        for (id, name) in &self.victim_projects {
            out.push(id.to_string());
            out.push(name.clone());
        }
        for k in self.victim_keys() {
            out.push(k.id.to_string());
            out.push(k.name.clone());
            out.push(k.secret.clone());
        }
        out.push(self.victim_meter.clone());
        out.push(self.victim_subject.clone());
        out.push(self.victim_conversation.to_string());
        out.push(self.victim_conversation_title.clone());
        out.push(self.victim_document.to_string());
        out.push(self.victim_assistant_conversation.to_string());
        out.extend(self.victim_sealed.iter().cloned());
        out.extend(self.victim_sessions(app).iter().map(Uuid::to_string));
        out
    }
}

/// Creates an API key of `org` through the API, as `who` (a signed-in admin or owner).
pub async fn create_key(app: &TestApp, who: &Signup, org: Uuid, name: &str, role: &str) -> Key {
    let resp = app
        .post(
            &format!("/v1/orgs/{org}/api-keys"),
            &who.token,
            json!({"name": name, "role": role}),
        )
        .await;
    let body = resp.assert_status(201);
    assert_eq!(body["api_key"]["role"], role, "{body}");
    Key {
        id: body["api_key"]["id"].as_str().unwrap().parse().unwrap(),
        name: name.to_owned(),
        secret: body["secret"].as_str().unwrap().to_owned(),
    }
}

pub async fn tenants(app: &TestApp) -> Tenants {
    let tag = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let attacker = app.signup("Mallory").await;
    let attacker_project = app
        .create_project(&attacker, attacker.org_id, "mallory-own")
        .await;
    invite(
        app,
        &attacker,
        attacker.org_id,
        &format!("mallory-friend-{tag}@example.com"),
        "member",
    )
    .await;
    let attacker_key = create_key(
        app,
        &attacker,
        attacker.org_id,
        &format!("mallory-key-{tag}"),
        "admin",
    )
    .await;

    let victim_name = format!("V{tag}");
    let victim = team(app, &victim_name).await;
    let mut victim_projects = Vec::new();
    for (who, name) in [
        (&victim.owner, format!("victim-secret-{tag}")),
        (&victim.member, format!("victim-roadmap-{tag}")),
    ] {
        let id = app.create_project(who, victim.org_id, &name).await;
        victim_projects.push((id, name));
    }
    let victim_invitee = format!("victim-invitee-{tag}@example.com");
    let (victim_invitation, _) =
        invite(app, &victim.admin, victim.org_id, &victim_invitee, "admin").await;
    let (revoked, _) = invite(
        app,
        &victim.owner,
        victim.org_id,
        &format!("victim-gone-{tag}@example.com"),
        "member",
    )
    .await;
    app.delete(
        &format!("/v1/orgs/{}/invitations/{revoked}", victim.org_id),
        &victim.owner.token,
    )
    .await
    .assert_status(204);
    let key = |name: &str| format!("victim-{name}-{tag}");
    let victim_key = create_key(app, &victim.owner, victim.org_id, &key("key"), "member").await;
    let victim_viewer_key = create_key(
        app,
        &victim.owner,
        victim.org_id,
        &key("viewer-key"),
        "viewer",
    )
    .await;
    let victim_revoked_key = create_key(
        app,
        &victim.owner,
        victim.org_id,
        &key("revoked-key"),
        "member",
    )
    .await;
    // Rotated before it is revoked: V has a replaced secret (app.api_key_secrets) for
    // the attacks to look for.
    app.post(
        &format!(
            "/v1/orgs/{}/api-keys/{}/rotate",
            victim.org_id, victim_revoked_key.id
        ),
        &victim.owner.token,
        json!({"grace_seconds": 86400}),
    )
    .await
    .assert_status(200);
    app.delete(
        &format!(
            "/v1/orgs/{}/api-keys/{}",
            victim.org_id, victim_revoked_key.id
        ),
        &victim.owner.token,
    )
    .await
    .assert_status(204);
    // Usage: V on pro with a one-event monthly allowance, a unique_count meter, one event
    // (rollups, a distinct value, threshold notices), and its API calls flushed.
    app.set_plan(victim.org_id, "pro").await;
    app.sql_superuser()
        .await
        .execute(
            "update app.plan_limits set included = 1 where plan_id = 'pro' and meter = 'events'",
            &[],
        )
        .await
        .unwrap();
    let victim_meter = format!("victim.meter.{tag}");
    let victim_subject = format!("victim-customer-{tag}");
    app.post(
        &format!("/v1/orgs/{}/meters", victim.org_id),
        &victim.owner.token,
        serde_json::json!({"key": victim_meter, "name": format!("victim-meter-{tag}"), "aggregation": "unique_count"}),
    )
    .await
    .assert_status(201);
    let ingested = app
        .post(
            &format!("/v1/orgs/{}/usage-events", victim.org_id),
            &victim.owner.token,
            serde_json::json!({"events": [{"id": format!("victim-event-{tag}"), "meter": victim_meter,
                                           "subject": victim_subject, "timestamp": chrono::Utc::now()}]}),
        )
        .await;
    assert_eq!(ingested.assert_status(200)["accepted"], 1);
    app.flush_api_calls().await;
    let victim_conversation_title = format!("victim-conversation-{tag}");
    let created = app
        .post(
            &format!("/v1/orgs/{}/conversations", victim.org_id),
            &victim.owner.token,
            serde_json::json!({"title": victim_conversation_title, "visibility": "org",
                               "project_id": victim_projects[0].0}),
        )
        .await;
    let victim_conversation: Uuid = created.assert_status(201)["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // A second one, named by no attack: rows remain whatever a planted hole deletes.
    let spare: Uuid = app
        .post(
            &format!("/v1/orgs/{}/conversations", victim.org_id),
            &victim.owner.token,
            serde_json::json!({"title": format!("{victim_conversation_title}-spare")}),
        )
        .await
        .assert_status(201)["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for id in [victim_conversation, spare] {
        app.post(
            &format!("/v1/orgs/{}/conversations/{id}/events", victim.org_id),
            &victim.owner.token,
            serde_json::json!({"events": [{"text": format!("victim-event-{tag}")}]}),
        )
        .await
        .assert_status(201);
    }
    // Project members: the owner (the attacks' user_id; a member of two orgs, which once
    // made this PUT a 503) in the attacks' project, the member in the other (named by no
    // attack: a row whatever a planted hole deletes).
    for (project, user, role) in [
        (victim_projects[0].0, victim.owner.user_id, "admin"),
        (victim_projects[1].0, victim.member.user_id, "editor"),
    ] {
        app.request(
            reqwest::Method::PUT,
            &format!(
                "/v1/orgs/{}/projects/{project}/members/{user}",
                victim.org_id
            ),
            Some(&victim.owner.token),
            Some(serde_json::json!({ "role": role })),
        )
        .await
        .assert_status(200);
    }
    // Documents through the API (objects in the bucket), their text chunks by the
    // worker: the one the attacks name, in the attacks' project, and a spare named by
    // no attack (rows remain whatever a planted hole deletes).
    let mut documents = Vec::new();
    for (name, project) in [("victim", Some(victim_projects[0].0)), ("spare", None)] {
        let text = format!("{name} document text {tag}");
        let project = project.map(|p| p.to_string());
        let mut parts = vec![crate::helpers::Part::file(
            "v.txt",
            Some("text/plain"),
            text.as_bytes(),
        )];
        if let Some(p) = &project {
            parts.insert(0, crate::helpers::Part::text("project_id", p));
        }
        let up = app.upload(victim.org_id, &victim.owner.token, &parts).await;
        documents.push(
            up.assert_status(201)["id"]
                .as_str()
                .unwrap()
                .parse::<Uuid>()
                .unwrap(),
        );
    }
    assert_eq!(app.process_documents().await, 2);
    let victim_document = documents[0];
    let victim_sealed = seal_secrets(
        app,
        victim.org_id,
        &victim.member.token,
        &victim.owner.token,
    )
    .await;
    let su = app.sql_superuser().await;
    let victim_assistant_conversation = Uuid::new_v4();
    // A queued purge, arranged directly (its object is already gone), and billing rows
    // (a customer with credits, an ended subscription -- a live one would keep the
    // owner from deleting V, a control below -- a checkout, a webhook event).
    su.batch_execute(&format!(
        "insert into app.storage_purge (org_id, object_key)
         values ('{org}', 'orgs/{org}/documents/{gone}');
         {billing}
         {assistant}",
        gone = Uuid::new_v4(),
        org = victim.org_id,
        billing = billing_rows_sql(victim.org_id),
        assistant = assistant_rows_sql(
            victim.org_id,
            victim.member.user_id,
            victim_assistant_conversation
        ),
    ))
    .await
    .unwrap();
    Tenants {
        attacker,
        attacker_project,
        attacker_key,
        victim,
        victim_name,
        victim_projects,
        victim_invitation,
        victim_invitee,
        victim_key,
        victim_viewer_key,
        victim_revoked_key,
        victim_meter,
        victim_subject,
        victim_conversation,
        victim_conversation_title,
        victim_document,
        victim_assistant_conversation,
        victim_sealed,
    }
}

/// Billing rows of `org`, arranged directly (as Stripe's reports would leave them).
pub fn billing_rows_sql(org: Uuid) -> String {
    let tag = org.simple();
    format!(
        "insert into app.billing_customers (org_id, stripe_customer_id, credit_balance_cents)
         values ('{org}', 'cus_{tag}', 4200);
         insert into app.billing_subscriptions (org_id, stripe_subscription_id, stripe_customer_id,
                plan_id, price_id, status, stripe_read_at)
         values ('{org}', 'sub_{tag}', 'cus_{tag}', 'pro', 'price_pro', 'canceled', now());
         insert into app.billing_sessions (org_id, kind, stripe_session_id, plan_id, url)
         values ('{org}', 'monthly_subscription', 'cs_{tag}', 'pro', 'https://checkout.stripe.test/{tag}');
         insert into app.billing_events (id, type, created, org_id, payload, status)
         values ('evt_{tag}', 'invoice.paid', now(), '{org}', '{{}}', 'processed');"
    )
}

/// A row in each table of the settings, secrets and assistant (V15) for `org`, whose
/// member `user` owns a secret and a conversation. The ciphertexts are placeholders of
/// the right shape: what is tested is who sees the rows.
pub fn assistant_rows_sql(org: Uuid, user: Uuid, conversation: Uuid) -> String {
    format!(
        "insert into app.assistant_conversations (id, org_id, created_by, title)
         values ('{conversation}', '{org}', '{user}', 'a question');
         insert into app.assistant_messages (org_id, conversation_id, seq, role, content)
         values ('{org}', '{conversation}', 1, 'user', 'a question');"
    )
}

/// A sealed secret of `member` (`MINE`) and the org's LLM key, set through the API (so
/// the org's data key is a real one): returns both values.
pub async fn seal_secrets(app: &TestApp, org: Uuid, member: &str, owner: &str) -> [String; 2] {
    let mine = format!("victim-secret-{}", Uuid::new_v4().simple());
    let llm_key = format!("sk-victim-{}", Uuid::new_v4().simple());
    app.post(
        &format!("/v1/orgs/{org}/secrets"),
        member,
        serde_json::json!({"name": "MINE", "value": mine, "scope": "user"}),
    )
    .await
    .assert_status(201);
    app.patch(
        &format!("/v1/orgs/{org}/settings"),
        owner,
        serde_json::json!({"llm_api_key": llm_key}),
    )
    .await
    .assert_status(200);
    [mine, llm_key]
}

/// Every table (any schema) with an org_id column, from the catalog.
pub async fn tenant_tables(su: &Client) -> Vec<String> {
    su.query(
        "select format('%I.%I', n.nspname, c.relname)
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
          where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
            and exists (select 1 from pg_attribute a
                         where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped)
          order by 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// `count:md5` of a set of rows `x`, whole rows as text.
const FINGERPRINT: &str =
    "count(*)::text || ':' || coalesce(md5(string_agg(x::text, ',' order by x::text)), '-')";

/// V's data as the superuser sees it: per table, the count and a checksum of V's rows
/// (every org_id table from the catalog, the org itself, the secrets of V's API keys, and
/// the users, sessions, refresh and email tokens and account audit chains of V's
/// members). `skip` names those of V's members and API keys a test itself uses, whose
/// own account, or a key's last use (app.api_keys.last_used_at, recorded from the key's own
/// requests by the worker's flush), may change by their own hand: a skipped member's account is left out, a
/// skipped key's row is compared without last_used_at, and the rows of V's audit log
/// that a skipped member or key acted are left out.
pub async fn victim_state(su: &Client, t: &Tenants, skip: &[Uuid]) -> BTreeMap<String, String> {
    let org = t.victim_org();
    let users: Vec<Uuid> = t
        .victim_users()
        .into_iter()
        .filter(|u| !skip.contains(u))
        .collect();
    let skip = skip.to_vec();
    let mut out = BTreeMap::new();
    for table in tenant_tables(su).await {
        let (sql, params): (String, Vec<&(dyn ToSql + Sync)>) = if table == "app.api_keys" {
            (
                format!(
                    "select {FINGERPRINT} from (
                        select case when k.id = any($2) then to_jsonb(k) - 'last_used_at'
                                    else to_jsonb(k) end
                          from app.api_keys k where k.org_id = $1) x"
                ),
                vec![&org, &skip],
            )
        } else if table == "app.audit_log" {
            // The skipped identities' own actions are in V's log by design (a member's
            // sign-ins and what they do, a key's writes): those rows are left out -- every
            // other row of V's chain, the hash chain included, is compared.
            (
                format!(
                    "select {FINGERPRINT} from app.audit_log x
                      where x.org_id = $1 and (x.actor_id is null or x.actor_id <> all($2))"
                ),
                vec![&org, &skip],
            )
        } else if table == "app.secrets" {
            // A member's own secrets (their LLM key) are theirs to change: the skipped
            // identities' are left out; the org's and every other member's are compared.
            (
                format!(
                    "select {FINGERPRINT} from app.secrets x
                      where x.org_id = $1 and (x.user_id is null or x.user_id <> all($2))"
                ),
                vec![&org, &skip],
            )
        } else if table == "app.rate_limits" {
            // The skipped identities' own buckets move with their own requests (their
            // allowance, their metered calls); every other bucket of V is compared.
            (
                format!(
                    "select {FINGERPRINT} from app.rate_limits x
                      where x.org_id = $1 and x.subject_id <> all($2)"
                ),
                vec![&org, &skip],
            )
        } else {
            (
                format!("select {FINGERPRINT} from {table} x where x.org_id = $1"),
                vec![&org],
            )
        };
        out.insert(
            table,
            su.query_one(&sql, &params)
                .await
                .unwrap()
                .get::<_, String>(0),
        );
    }
    // Not an org_id table: the secrets of V's keys, by key.
    out.insert(
        "app.api_key_secrets (V's keys)".to_owned(),
        su.query_one(
            &format!(
                "select {FINGERPRINT} from app.api_key_secrets x
                  where x.key_id in (select id from app.api_keys where org_id = $1)"
            ),
            &[&org],
        )
        .await
        .unwrap()
        .get(0),
    );
    let by_org = [("app.orgs (V)", "select {} from app.orgs x where x.id = $1")];
    for (name, sql) in by_org {
        let sql = sql.replace("{}", FINGERPRINT);
        out.insert(
            name.to_owned(),
            su.query_one(&sql, &[&org]).await.unwrap().get(0),
        );
    }
    let by_user = [
        (
            "app.users (V's members)",
            "select {} from app.users x where x.id = any($1)",
        ),
        (
            "app.sessions (V's members)",
            "select {} from app.sessions x where x.user_id = any($1)",
        ),
        (
            "app.refresh_tokens (V's members)",
            "select {} from app.refresh_tokens x
              where x.session_id in (select id from app.sessions where user_id = any($1))",
        ),
        (
            "app.user_tokens (V's members)",
            "select {} from app.user_tokens x where x.user_id = any($1)",
        ),
        (
            "app.audit_log (V's members' account chains)",
            "select {} from app.audit_log x where x.account_id = any($1)",
        ),
    ];
    for (name, sql) in by_user {
        let sql = sql.replace("{}", FINGERPRINT);
        out.insert(
            name.to_owned(),
            su.query_one(&sql, &[&users]).await.unwrap().get(0),
        );
    }
    out
}

/// The differences between two [`victim_state`]s.
pub fn state_diff(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| format!("{k}: {:?} -> {:?}", before.get(k), after.get(k)))
        .collect()
}

// ---------------------------------------------------------------------------
// SQL helpers
// ---------------------------------------------------------------------------

/// The settings of the request context, the MAC last.
pub const CONTEXT_SETTINGS: [&str; 6] = [
    "app.current_user_id",
    "app.current_session_id",
    "app.current_org_id",
    "app.current_org_role",
    "app.current_api_key_id",
    "app.context_mac",
];

/// The index of the MAC in [`CONTEXT_SETTINGS`] (and in [`raw_settings`]).
const MAC: usize = CONTEXT_SETTINGS.len() - 1;

/// Ways SQL running as the request role can write a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forge {
    /// `select set_config(name, value, true)`
    SetConfigLocal,
    /// `select set_config(name, value, false)`
    SetConfigSession,
    /// `SET name = value`
    Set,
    /// `SET LOCAL name = value`
    SetLocal,
}

impl Forge {
    pub const ALL: [Forge; 4] = [
        Forge::SetConfigLocal,
        Forge::SetConfigSession,
        Forge::Set,
        Forge::SetLocal,
    ];
}

fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// SQL writing `settings` the way `how` does.
pub fn forge_sql(how: Forge, settings: &[(&str, String)]) -> String {
    settings
        .iter()
        .map(|(k, v)| match how {
            Forge::SetConfigLocal => {
                format!("select pg_catalog.set_config('{k}', {}, true);", literal(v))
            }
            Forge::SetConfigSession => {
                format!(
                    "select pg_catalog.set_config('{k}', {}, false);",
                    literal(v)
                )
            }
            Forge::Set => format!("set {k} = {};", literal(v)),
            Forge::SetLocal => format!("set local {k} = {};", literal(v)),
        })
        .collect()
}

/// The raw values of the context settings on `c` (NULL when never set).
pub async fn raw_settings(c: &Client) -> Vec<(&'static str, Option<String>)> {
    let mut out = Vec::new();
    for k in CONTEXT_SETTINGS {
        let v: Option<String> = c
            .query_one("select pg_catalog.current_setting($1, true)", &[&k])
            .await
            .unwrap()
            .get(0);
        out.push((k, v));
    }
    out
}

/// Runs `app.set_request_context` for `who` on a plain client (inside its transaction).
pub async fn set_context(
    app: &TestApp,
    c: &Client,
    who: &Signup,
    org: Option<Uuid>,
) -> Option<String> {
    app.set_context(c, who, org).await
}

/// One statement returning one bigint, in a savepoint (so a refusal does not end the
/// transaction): Ok(value) or the error.
pub async fn attempt(
    c: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<i64, tokio_postgres::Error> {
    c.batch_execute("savepoint attempt").await.unwrap();
    let result = c.query_one(sql, params).await.map(|r| r.get::<_, i64>(0));
    let end = if result.is_ok() {
        "release savepoint attempt"
    } else {
        "rollback to savepoint attempt"
    };
    c.batch_execute(end).await.unwrap();
    result
}

/// The verified context: user, session, org, role, API key.
type Verified = (
    Option<Uuid>,
    Option<Uuid>,
    Option<Uuid>,
    Option<String>,
    Option<Uuid>,
);

/// No context at all.
const UNVERIFIED: Verified = (None, None, None, None, None);

/// `app.current_*()` as the request role sees them now.
async fn verified(c: &Client) -> Verified {
    let r = c
        .query_one(
            "select app.current_user_id(), app.current_session_id(), app.current_org_id(),
                    app.current_org_role()::text, app.current_api_key_id()",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

/// Runs `app.set_api_key_context` with `key`'s secret naming `org` on `c` (inside its
/// transaction), as the server does for a request with an API key; returns the key's
/// role in `org`.
pub async fn set_key_context(c: &Client, key: &Key, org: Uuid) -> Option<String> {
    c.query_one(
        "select app.set_api_key_context($1, $2)::text",
        &[&key.secret, &org],
    )
    .await
    .expect("the key's context statement succeeds")
    .get(0)
}

// ---------------------------------------------------------------------------
// S1: forging the context
// ---------------------------------------------------------------------------

/// What the attacks aim at: V's ids.
struct Targets {
    attacker: Uuid,
    org: Uuid,
    owner: Uuid,
    admin: Uuid,
    member: Uuid,
    viewer: Uuid,
    users: Vec<Uuid>,
    sessions: Vec<Uuid>,
    projects: Vec<Uuid>,
    invitation: Uuid,
    /// V's API keys (live and revoked), and the live one the writes aim at.
    keys: Vec<Uuid>,
    key: Uuid,
    /// V's org, users and keys as text: what a rate limiter bucket of V's names.
    names: Vec<String>,
}

impl Targets {
    fn new(app: &TestApp, t: &Tenants) -> Self {
        Self {
            attacker: t.attacker.user_id,
            org: t.victim_org(),
            owner: t.victim.owner.user_id,
            admin: t.victim.admin.user_id,
            member: t.victim.member.user_id,
            viewer: t.victim.viewer.user_id,
            users: t.victim_users(),
            sessions: t.victim_sessions(app),
            projects: t.victim_project_ids(),
            invitation: t.victim_invitation,
            keys: t.victim_key_ids(),
            key: t.victim_key.id,
            names: std::iter::once(t.victim_org())
                .chain(t.victim_users())
                .chain(t.victim_key_ids())
                .map(|id| id.to_string())
                .collect(),
        }
    }
}

/// A read of V's data: the number of V's rows it returns (0 for an attacker).
struct Read<'a> {
    name: &'static str,
    sql: &'static str,
    params: Vec<&'a (dyn ToSql + Sync)>,
    /// V's owner, with their own real context, sees V's rows through it (a control:
    /// the query is able to find what it looks for).
    owner_sees: bool,
}

fn reads(x: &Targets) -> Vec<Read<'_>> {
    vec![
        Read {
            name: "memberships",
            sql: "select count(*) from app.memberships where org_id = $1 or user_id = any($2)",
            params: vec![&x.org, &x.users],
            owner_sees: true,
        },
        Read {
            name: "projects",
            sql: "select count(*) from app.projects where org_id = $1 or id = any($2)",
            params: vec![&x.org, &x.projects],
            owner_sees: true,
        },
        Read {
            name: "invitations",
            sql: "select count(*) from app.invitations where org_id = $1 or id = $2",
            params: vec![&x.org, &x.invitation],
            owner_sees: true,
        },
        Read {
            name: "audit_log (V's chain)",
            sql: "select count(*) from app.audit_log where org_id = $1 or chain_id = $1",
            params: vec![&x.org],
            owner_sees: true,
        },
        Read {
            name: "audit_log (V's members' account chains)",
            sql: "select count(*) from app.audit_log where account_id = any($1) or chain_id = any($1)",
            params: vec![&x.users],
            owner_sees: true,
        },
        Read {
            name: "sessions",
            sql: "select count(*) from app.sessions where user_id = any($1) or id = any($2)",
            params: vec![&x.users, &x.sessions],
            owner_sees: true,
        },
        Read {
            name: "users",
            sql: "select count(*) from app.users where id = any($1)",
            params: vec![&x.users],
            owner_sees: true,
        },
        Read {
            name: "orgs",
            sql: "select count(*) from app.orgs where id = $1",
            params: vec![&x.org],
            owner_sees: true,
        },
        Read {
            name: "email_outbox",
            sql: "select count(*) from app.email_outbox where org_id = $1",
            params: vec![&x.org],
            owner_sees: false,
        },
        Read {
            name: "api_keys",
            sql: "select count(*) from app.api_keys where org_id = $1 or id = any($2)",
            params: vec![&x.org, &x.keys],
            owner_sees: true,
        },
        Read {
            name: "api_key_secrets",
            sql: "select count(*) from app.api_key_secrets where key_id = any($1)",
            params: vec![&x.keys],
            owner_sees: false,
        },
        Read {
            name: "rate_limits",
            sql: "select count(*) from app.rate_limits r
                   where exists (select 1 from pg_catalog.unnest($1::text[]) n
                                  where pg_catalog.strpos(r.bucket, n) > 0)",
            params: vec![&x.names],
            owner_sees: false,
        },
        // The context itself must never name V (nor anyone but the attacker).
        Read {
            name: "app.current_*()",
            sql: "select count(*) from (select app.current_user_id() u, app.current_org_id() o,
                                              app.current_session_id() s,
                                              app.current_api_key_id() k) c
                   where c.u = any($1) or c.o = $2 or c.s = any($3) or c.k = any($4)",
            params: vec![&x.users, &x.org, &x.sessions, &x.keys],
            owner_sees: true,
        },
        Read {
            name: "app.current_password_hash()",
            sql: "select count(*) from (select app.current_password_hash() h) c
                   where c.h is not null and app.current_user_id() = any($1)",
            params: vec![&x.users],
            owner_sees: true,
        },
    ]
}

/// A write against V: the number of things it did (0 for an attacker). Functions that
/// return normally count 1: they acted.
struct Write<'a> {
    name: &'static str,
    sql: &'static str,
    params: Vec<&'a (dyn ToSql + Sync)>,
    /// With V's owner's real context the statement has an effect (a control).
    owner_can: bool,
}

fn writes(x: &Targets) -> Vec<Write<'_>> {
    vec![
        Write {
            name: "insert project (org_id from the context)",
            sql: "with w as (insert into app.projects (name) values ('forged-' || gen_random_uuid())
                             returning 1) select count(*) from w",
            params: vec![],
            owner_can: true,
        },
        Write {
            name: "insert project into V",
            sql: "with w as (insert into app.projects (org_id, name) values ($1, 'forged')
                             returning 1) select count(*) from w",
            params: vec![&x.org],
            owner_can: false,
        },
        Write {
            name: "update V's projects",
            sql: "with w as (update app.projects set name = name || ' (pwned)'
                              where org_id = $1 or id = any($2) returning 1) select count(*) from w",
            params: vec![&x.org, &x.projects],
            owner_can: true,
        },
        Write {
            name: "delete V's projects",
            sql: "with w as (delete from app.projects where org_id = $1 or id = any($2) returning 1)
                  select count(*) from w",
            params: vec![&x.org, &x.projects],
            owner_can: true,
        },
        Write {
            name: "update V",
            sql: "with w as (update app.orgs set name = 'pwned' where id = $1 returning 1)
                  select count(*) from w",
            params: vec![&x.org],
            owner_can: true,
        },
        Write {
            name: "delete V",
            sql: "with w as (delete from app.orgs where id = $1 returning 1) select count(*) from w",
            params: vec![&x.org],
            owner_can: true,
        },
        Write {
            name: "rename V's owner",
            sql: "with w as (update app.users set name = 'pwned' where id = $1 returning 1)
                  select count(*) from w",
            params: vec![&x.owner],
            owner_can: true,
        },
        Write {
            name: "insert membership into V",
            sql: "with w as (insert into app.memberships (org_id, user_id, role) values ($1, $2, 'owner')
                             returning 1) select count(*) from w",
            params: vec![&x.org, &x.attacker],
            owner_can: false,
        },
        Write {
            name: "promote in V's memberships",
            sql: "with w as (update app.memberships set role = 'owner' where org_id = $1 returning 1)
                  select count(*) from w",
            params: vec![&x.org],
            owner_can: false,
        },
        Write {
            name: "delete V's memberships",
            sql: "with w as (delete from app.memberships where org_id = $1 returning 1)
                  select count(*) from w",
            params: vec![&x.org],
            owner_can: false,
        },
        Write {
            name: "delete V's invitations",
            sql: "with w as (delete from app.invitations where org_id = $1 returning 1)
                  select count(*) from w",
            params: vec![&x.org],
            owner_can: false,
        },
        Write {
            name: "delete V's audit log",
            sql: "with w as (delete from app.audit_log where chain_id = $1 or account_id = any($2)
                             returning 1) select count(*) from w",
            params: vec![&x.org, &x.users],
            owner_can: false,
        },
        Write {
            name: "rewrite V's audit log",
            sql: "with w as (update app.audit_log set metadata = '{\"forged\": true}'
                              where chain_id = $1 or account_id = any($2) returning 1)
                  select count(*) from w",
            params: vec![&x.org, &x.users],
            owner_can: false,
        },
        Write {
            name: "append to V's audit log",
            sql: "with w as (insert into app.audit_log (org_id, seq, occurred_at, actor_type, action,
                                                       prev_hash, hash)
                             values ($1, 1, now(), 'system', 'forged.event', sha256(''), sha256(''))
                             returning 1) select count(*) from w",
            params: vec![&x.org],
            owner_can: false,
        },
        Write {
            name: "app.audit_org_event (into V)",
            sql: "select count(*) from (select app.audit_org_event($1, 'forged.event')) c",
            params: vec![&x.org],
            owner_can: false,
        },
        Write {
            name: "app.create_invitation",
            sql: "select count(*) from (select app.create_invitation(
                      'forged-' || gen_random_uuid() || '@example.com', 'owner',
                      sha256(convert_to(gen_random_uuid()::text, 'UTF8')), interval '1 day',
                      'subject', '\\x00'::bytea)) c",
            params: vec![],
            owner_can: true,
        },
        Write {
            name: "app.change_member_role (viewer -> owner)",
            sql: "select count(*) from (select app.change_member_role($1, 'owner')) c",
            params: vec![&x.viewer],
            owner_can: true,
        },
        Write {
            name: "app.remove_member",
            sql: "select count(*) from (select app.remove_member($1)) c",
            params: vec![&x.member],
            owner_can: true,
        },
        Write {
            name: "app.transfer_ownership",
            sql: "select count(*) from (select app.transfer_ownership($1)) c",
            params: vec![&x.admin],
            owner_can: true,
        },
        Write {
            name: "app.revoke_invitation",
            sql: "select count(*) from (select app.revoke_invitation($1)) c",
            params: vec![&x.invitation],
            owner_can: true,
        },
        Write {
            name: "app.resend_invitation",
            sql: "select count(*) from (select app.resend_invitation($1,
                      sha256(convert_to(gen_random_uuid()::text, 'UTF8')), interval '1 day',
                      'subject', '\\x00'::bytea)) c",
            params: vec![&x.invitation],
            owner_can: true,
        },
        Write {
            name: "app.set_current_org",
            sql: "select count(*) from (select app.set_current_org($1)) c",
            params: vec![&x.org],
            owner_can: true,
        },
        Write {
            name: "app.revoke_session (V's sessions)",
            sql: "select count(*) from pg_catalog.unnest($1::uuid[]) s where app.revoke_session(s)",
            params: vec![&x.sessions],
            owner_can: true,
        },
        Write {
            name: "app.change_password",
            sql: "select count(*) from (select app.change_password('forged-hash')) c",
            params: vec![],
            owner_can: true,
        },
        Write {
            name: "update V's api_keys",
            sql: "with w as (update app.api_keys set role = 'admin', revoked_at = null,
                                    revoked_reason = null, creator_disabled = false,
                                    secret_hash = sha256(convert_to(id::text, 'UTF8'))
                              where org_id = $1 or id = any($2) returning 1) select count(*) from w",
            params: vec![&x.org, &x.keys],
            owner_can: false,
        },
        Write {
            name: "delete V's api_keys",
            sql: "with w as (delete from app.api_keys where org_id = $1 or id = any($2) returning 1)
                  select count(*) from w",
            params: vec![&x.org, &x.keys],
            owner_can: false,
        },
        Write {
            name: "insert a secret for V's key",
            sql: "with w as (insert into app.api_key_secrets (secret_hash, key_id, expires_at)
                             values (sha256(convert_to(gen_random_uuid()::text, 'UTF8')), $1,
                                     now() + interval '1 day')
                             returning 1) select count(*) from w",
            params: vec![&x.key],
            owner_can: false,
        },
        Write {
            name: "app.create_api_key",
            sql: "select count(*) from (select app.create_api_key('forged', 'admin', null,
                      sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 'pal_Frg1')) c",
            params: vec![],
            owner_can: true,
        },
        Write {
            name: "app.rename_api_key",
            sql: "select count(*) from (select app.rename_api_key($1, 'pwned')) c",
            params: vec![&x.key],
            owner_can: true,
        },
        Write {
            name: "app.rotate_api_key",
            sql: "select count(*) from (select app.rotate_api_key($1,
                      sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 'pal_Frg2',
                      interval '0')) c",
            params: vec![&x.key],
            owner_can: true,
        },
        Write {
            name: "app.revoke_api_key",
            sql: "select count(*) from (select app.revoke_api_key($1)) c",
            params: vec![&x.key],
            owner_can: true,
        },
    ]
}

#[derive(Clone, Copy, Debug)]
enum Base {
    /// No context at all.
    Nothing,
    /// A's real context, without an org.
    AttackerNoOrg,
    /// A's real context in A's own org.
    AttackerOwnOrg,
    /// The real context of A's API key, in A's org.
    AttackerKey,
    /// A's API key naming V's org (a context with the key and no org).
    AttackerKeyNamingVictim,
}

/// S1. Every way request SQL can write the context settings, for V's org, user, role,
/// session, API key, all of a user's, all of a key's (one of V's keys, no user), and each
/// "all" with A's MAC copied alongside -- on top of no context, of A's real context and
/// of A's API key's -- then every read of V and every write against V.
#[tokio::test]
async fn s1_forged_contexts_see_nothing_and_change_nothing_of_the_victim() {
    let app = spawn_app().await;
    let t = tenants(&app).await;
    let x = Targets::new(&app, &t);
    let su = app.sql_superuser().await;
    let before = victim_state(&su, &t, &[]).await;
    let rt = app.sql_runtime().await;

    // Controls: V's owner, with a real context, reaches V's rows through every read
    // and has an effect through every write marked owner_can (all rolled back).
    rt.batch_execute("begin").await.unwrap();
    set_context(&app, &rt, &t.victim.owner, Some(x.org)).await;
    for r in reads(&x) {
        let seen = attempt(&rt, r.sql, &r.params).await;
        if r.owner_sees {
            assert!(
                matches!(seen, Ok(n) if n > 0),
                "control: V's owner sees V through {}: {seen:?}",
                r.name
            );
        }
    }
    for w in writes(&x) {
        if w.owner_can {
            // Each in its own transaction: some of them (delete V) would hide the rest.
            rt.batch_execute("rollback; begin").await.unwrap();
            set_context(&app, &rt, &t.victim.owner, Some(x.org)).await;
            let did = attempt(&rt, w.sql, &w.params).await;
            assert!(
                matches!(did, Ok(n) if n > 0),
                "control: V's owner can {}: {did:?}",
                w.name
            );
        }
    }
    // And V's own key, with its real context, reaches V's projects through the same
    // reads (a key's context has no user: not the rest).
    rt.batch_execute("rollback; begin").await.unwrap();
    let role = set_key_context(&rt, &t.victim_key, x.org).await;
    assert_eq!(role.as_deref(), Some("member"), "control: V's key in V");
    for r in reads(&x) {
        if ["projects", "app.current_*()"].contains(&r.name) {
            let seen = attempt(&rt, r.sql, &r.params).await;
            assert!(
                matches!(seen, Ok(n) if n > 0),
                "control: V's key sees V through {}: {seen:?}",
                r.name
            );
        }
    }
    rt.batch_execute("rollback").await.unwrap();
    assert_eq!(
        state_diff(&before, &victim_state(&su, &t, &[]).await),
        Vec::<String>::new()
    );

    // A MAC from an earlier transaction of A, for the combinations without a live one.
    rt.batch_execute("begin").await.unwrap();
    set_context(&app, &rt, &t.attacker, Some(t.attacker.org_id)).await;
    let old_mac = raw_settings(&rt).await[MAC].1.clone().unwrap();
    rt.batch_execute("commit").await.unwrap();

    let owner_sid = app.session_proof(&t.victim.owner).0;
    // V's values: a user's context (V's owner), or, for the "key context" sets, an API
    // key's (one of V's keys, no user, no session).
    let v = |set: &str, k: &str| -> String {
        let key_context = set.starts_with("key context");
        match k {
            "app.current_user_id" if key_context => String::new(),
            "app.current_user_id" => x.owner.to_string(),
            "app.current_session_id" if key_context => String::new(),
            "app.current_session_id" => owner_sid.to_string(),
            "app.current_org_id" => x.org.to_string(),
            "app.current_org_role" if key_context => "admin".to_owned(),
            "app.current_org_role" => "owner".to_owned(),
            "app.current_api_key_id" => x.key.to_string(),
            _ => unreachable!(),
        }
    };
    let variable_sets: [(&str, &[&str]); 9] = [
        ("org", &["app.current_org_id"]),
        ("user", &["app.current_user_id"]),
        ("role", &["app.current_org_role"]),
        ("session", &["app.current_session_id"]),
        ("api key", &["app.current_api_key_id"]),
        (
            "all",
            &[
                "app.current_user_id",
                "app.current_session_id",
                "app.current_org_id",
                "app.current_org_role",
            ],
        ),
        (
            "all + A's MAC",
            &[
                "app.current_user_id",
                "app.current_session_id",
                "app.current_org_id",
                "app.current_org_role",
                "app.context_mac",
            ],
        ),
        (
            "key context",
            &[
                "app.current_user_id",
                "app.current_session_id",
                "app.current_org_id",
                "app.current_org_role",
                "app.current_api_key_id",
            ],
        ),
        (
            "key context + A's MAC",
            &[
                "app.current_user_id",
                "app.current_session_id",
                "app.current_org_id",
                "app.current_org_role",
                "app.current_api_key_id",
                "app.context_mac",
            ],
        ),
    ];
    let bases = [
        Base::Nothing,
        Base::AttackerNoOrg,
        Base::AttackerOwnOrg,
        Base::AttackerKey,
        Base::AttackerKeyNamingVictim,
    ];

    let mut leaks = Vec::new();
    let mut tried = 0;
    for base in bases {
        for how in Forge::ALL {
            for (set_name, keys) in variable_sets {
                rt.batch_execute("begin").await.unwrap();
                match base {
                    Base::Nothing => {}
                    Base::AttackerNoOrg => {
                        set_context(&app, &rt, &t.attacker, None).await;
                    }
                    Base::AttackerOwnOrg => {
                        set_context(&app, &rt, &t.attacker, Some(t.attacker.org_id)).await;
                    }
                    Base::AttackerKey => {
                        let role = set_key_context(&rt, &t.attacker_key, t.attacker.org_id).await;
                        assert_eq!(
                            role.as_deref(),
                            Some("admin"),
                            "control: A's key in A's org"
                        );
                    }
                    Base::AttackerKeyNamingVictim => {
                        let role = set_key_context(&rt, &t.attacker_key, x.org).await;
                        assert_eq!(role, None, "A's key naming V's org bound a role in V");
                    }
                }
                let current = raw_settings(&rt).await;
                let settings: Vec<(&str, String)> = keys
                    .iter()
                    .map(|k| {
                        let value = if *k == "app.context_mac" {
                            // A's MAC of this transaction if there is one, else an old one.
                            current[MAC]
                                .1
                                .clone()
                                .filter(|m| !m.is_empty())
                                .unwrap_or(old_mac.clone())
                        } else {
                            v(set_name, k)
                        };
                        (*k, value)
                    })
                    .collect();
                // A "forgery" writing what is already there (A is the owner of their own
                // org) is no forgery.
                let changes = settings.iter().any(|(k, value)| {
                    current
                        .iter()
                        .find(|(ck, _)| ck == k)
                        .and_then(|(_, cv)| cv.as_ref())
                        != Some(value)
                });
                if !changes {
                    rt.batch_execute("rollback").await.unwrap();
                    continue;
                }
                rt.batch_execute(&forge_sql(how, &settings)).await.unwrap();
                let case = format!("{base:?} + {how:?}({set_name})");
                tried += 1;
                let ctx = verified(&rt).await;
                if ctx != UNVERIFIED {
                    leaks.push(format!("{case}: a forged context verified: {ctx:?}"));
                }
                for r in reads(&x) {
                    if let Ok(n) = attempt(&rt, r.sql, &r.params).await
                        && n > 0
                    {
                        leaks.push(format!("{case}: read {} returned {n} of V's rows", r.name));
                    }
                }
                for w in writes(&x) {
                    if let Ok(n) = attempt(&rt, w.sql, &w.params).await
                        && n > 0
                    {
                        leaks.push(format!("{case}: write {} did {n}", w.name));
                    }
                }
                rt.batch_execute("commit; reset all").await.unwrap();
            }
        }
    }
    // 5 bases x 4 ways x 9 sets, less the 4 that would write A's own role ("owner")
    // over itself in A's own org: no forgery.
    assert_eq!(tried, 5 * 4 * 9 - 4, "forgeries tried");
    let after = victim_state(&su, &t, &[]).await;
    leaks.extend(
        state_diff(&before, &after)
            .into_iter()
            .map(|d| format!("V changed: {d}")),
    );
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

/// S1. A sealed context is bound to its transaction and its backend: replayed in the
/// next transaction on the same connection, or copied to another connection (while the
/// original is still open), it gives no context at all.
#[tokio::test]
async fn s1_a_context_mac_does_not_travel() {
    let app = spawn_app().await;
    let t = tenants(&app).await;
    let a = &t.attacker;
    let rt = app.sql_runtime().await;
    rt.batch_execute("begin").await.unwrap();
    set_context(&app, &rt, a, Some(a.org_id)).await;
    let captured: Vec<(&str, String)> = raw_settings(&rt)
        .await
        .into_iter()
        .map(|(k, v)| (k, v.unwrap()))
        .collect();
    assert_eq!(captured[0].1, a.user_id.to_string());
    assert_eq!(captured[MAC].1.len(), 64, "a hex HMAC-SHA256");
    // Control: in its own transaction the context holds and A sees A's project.
    let (user, _, org, role, key) = verified(&rt).await;
    assert_eq!(
        (user, org, role.as_deref(), key),
        (Some(a.user_id), Some(a.org_id), Some("owner"), None)
    );
    let own: i64 = rt
        .query_one("select count(*) from app.projects", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(own, 1);

    // An API key's context (A's key, in A's org), open on a third connection.
    let kc = app.sql_runtime().await;
    kc.batch_execute("begin").await.unwrap();
    assert_eq!(
        set_key_context(&kc, &t.attacker_key, a.org_id)
            .await
            .as_deref(),
        Some("admin")
    );
    let key_captured: Vec<(&str, String)> = raw_settings(&kc)
        .await
        .into_iter()
        .map(|(k, v)| (k, v.unwrap()))
        .collect();
    assert_eq!(
        verified(&kc).await,
        (
            None,
            None,
            Some(a.org_id),
            Some("admin".to_owned()),
            Some(t.attacker_key.id)
        )
    );

    // Copied to another connection while the original transaction is open.
    let other = app.sql_runtime().await;
    let mut with_victim_org = captured.clone();
    with_victim_org[2].1 = t.victim_org().to_string();
    let mut key_with_victim_org = key_captured.clone();
    key_with_victim_org[2].1 = t.victim_org().to_string();
    for settings in [
        &captured,
        &with_victim_org,
        &key_captured,
        &key_with_victim_org,
    ] {
        for how in Forge::ALL {
            other.batch_execute("begin").await.unwrap();
            other
                .batch_execute(&forge_sql(how, settings))
                .await
                .unwrap();
            assert_eq!(
                verified(&other).await,
                UNVERIFIED,
                "{how:?} on another connection"
            );
            let seen: i64 = other
                .query_one("select count(*) from app.projects", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(seen, 0, "{how:?} on another connection");
            other.batch_execute("rollback; reset all").await.unwrap();
        }
        // Session-level, outside any transaction, then a transaction.
        other
            .batch_execute(&forge_sql(Forge::SetConfigSession, settings))
            .await
            .unwrap();
        other.batch_execute("begin").await.unwrap();
        assert_eq!(verified(&other).await, UNVERIFIED);
        other.batch_execute("commit; reset all").await.unwrap();
    }
    rt.batch_execute("commit").await.unwrap();
    kc.batch_execute("commit").await.unwrap();

    // Replayed on the same connection, session-level, into the next transactions.
    rt.batch_execute(&forge_sql(Forge::SetConfigSession, &captured))
        .await
        .unwrap();
    for attempt_no in 0..3 {
        rt.batch_execute("begin").await.unwrap();
        // The planted values are there...
        let raw = raw_settings(&rt).await;
        assert_eq!(raw[MAC].1.as_deref(), Some(captured[MAC].1.as_str()));
        // ...and verify to nothing.
        assert_eq!(verified(&rt).await, UNVERIFIED, "replay {attempt_no}");
        let seen: i64 = rt
            .query_one("select count(*) from app.projects", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(seen, 0, "replay {attempt_no}");
        rt.batch_execute("commit").await.unwrap();
    }
    // In single-statement (implicit) transactions too, and with SET LOCAL in a new one.
    assert_eq!(verified(&rt).await, UNVERIFIED);
    rt.batch_execute("begin").await.unwrap();
    rt.batch_execute(&forge_sql(Forge::SetLocal, &with_victim_org))
        .await
        .unwrap();
    assert_eq!(verified(&rt).await, UNVERIFIED);
    rt.batch_execute("rollback").await.unwrap();
}

/// S1. The context statement proves the session: V's session id with A's proof, a wrong
/// one, none, or A's session with V's proof, raise PT401 (HTTP 401).
#[tokio::test]
async fn s1_set_request_context_needs_the_proof_of_that_session() {
    let app = spawn_app().await;
    let t = tenants(&app).await;
    let (a_sid, a_proof) = app.session_proof(&t.attacker);
    let (v_sid, v_proof) = app.session_proof(&t.victim.owner);
    let rt = app.sql_runtime().await;
    let cases: Vec<(&str, Uuid, Option<Vec<u8>>)> = vec![
        ("V's session, A's proof", v_sid, Some(a_proof.clone())),
        ("V's session, zero proof", v_sid, Some(vec![0; 32])),
        ("V's session, empty proof", v_sid, Some(vec![])),
        ("V's session, no proof", v_sid, None),
        (
            "V's session, proof off by one bit",
            v_sid,
            Some({
                let mut p = v_proof.clone();
                p[0] ^= 1;
                p
            }),
        ),
        ("A's session, V's proof", a_sid, Some(v_proof.clone())),
        (
            "unknown session, A's proof",
            Uuid::new_v4(),
            Some(a_proof.clone()),
        ),
    ];
    for (name, sid, proof) in &cases {
        for org in [Some(t.victim_org()), None, Some(t.attacker.org_id)] {
            rt.batch_execute("begin").await.unwrap();
            let params: [&(dyn ToSql + Sync); 3] = [sid, proof, &org];
            let err = rt
                .query_one("select app.set_request_context($1, $2, $3)::text", &params)
                .await
                .expect_err(name);
            assert_eq!(err.code().map(|c| c.code()), Some("PT401"), "{name}: {err}");
            rt.batch_execute("rollback").await.unwrap();
        }
    }
    // Control: the real pair works; and A's real pair naming V's org binds no org.
    rt.batch_execute("begin").await.unwrap();
    let role: Option<String> = rt
        .query_one(
            "select app.set_request_context($1, $2, $3)::text",
            &[&v_sid, &v_proof, &Some(t.victim_org())],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(role.as_deref(), Some("owner"));
    rt.batch_execute("rollback; begin").await.unwrap();
    let role: Option<String> = rt
        .query_one(
            "select app.set_request_context($1, $2, $3)::text",
            &[&a_sid, &a_proof, &Some(t.victim_org())],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(role, None);
    let (user, _, org, _, _) = verified(&rt).await;
    assert_eq!((user, org), (Some(t.attacker.user_id), None));
    let seen: i64 = rt
        .query_one(
            "select count(*) from app.projects where org_id = $1",
            &[&t.victim_org()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 0);
    rt.batch_execute("rollback").await.unwrap();
}

/// S1. Settings planted session-level on every connection of the server's own request
/// pool (as SQL injected into A's request could) do not reach the requests the API
/// serves next on those connections.
#[tokio::test]
async fn s1_a_context_planted_on_the_pool_does_not_leak_into_later_requests() {
    let app = spawn_app().await;
    let t = tenants(&app).await;
    let a = &t.attacker;
    let v_org = t.victim_org();
    let owner_sid = app.session_proof(&t.victim.owner).0;
    let ctx = |who: &Signup, org| {
        let (session_id, proof) = app.session_proof(who);
        RequestContext {
            session_id,
            proof: proof.try_into().unwrap(),
            org_id: org,
        }
    };
    let db = &app.state.db;
    // Hold every connection of the pool at once, so each one gets the plant (behind
    // PgBouncer: every server connection it keeps for the request role).
    let pool_size = crate::helpers::server_connections_per_lane();
    let mut held = Vec::new();
    for _ in 0..pool_size {
        let tx = db
            .begin(&ctx(a, Some(a.org_id)), Access::ReadWrite)
            .await
            .unwrap();
        let mac: String = tx
            .query_one("select current_setting('app.context_mac')", &[])
            .await
            .unwrap()
            .get(0);
        let plant = forge_sql(
            Forge::SetConfigSession,
            &[
                ("app.current_user_id", t.victim.owner.user_id.to_string()),
                ("app.current_session_id", owner_sid.to_string()),
                ("app.current_org_id", v_org.to_string()),
                ("app.current_org_role", "owner".to_owned()),
                ("app.context_mac", mac),
            ],
        );
        for stmt in plant.split_terminator(';') {
            tx.query(stmt, &[]).await.unwrap();
        }
        held.push(tx);
    }
    let pids: Vec<i32> = {
        let mut pids = Vec::new();
        for tx in &held {
            pids.push(
                tx.query_one("select pg_backend_pid()", &[])
                    .await
                    .unwrap()
                    .get(0),
            );
        }
        pids
    };
    for tx in held {
        tx.finish(Ok::<_, palisade::db::DbError>(())).await.unwrap();
    }
    // The plant is on those backends now (seen from outside: their settings are private,
    // so check through a request transaction reading the raw setting after it began).
    let tx = db
        .begin(&ctx(&t.victim.viewer, None), Access::ReadOnly)
        .await
        .unwrap();
    let row = tx
        .query_one(
            "select pg_backend_pid(), app.current_user_id(), app.current_org_id(), app.current_org_role()::text",
            &[],
        )
        .await
        .unwrap();
    assert!(
        pids.contains(&row.get::<_, i32>(0)),
        "served by a planted connection"
    );
    assert_eq!(row.get::<_, Option<Uuid>>(1), Some(t.victim.viewer.user_id));
    assert_eq!(row.get::<_, Option<Uuid>>(2), None);
    assert_eq!(row.get::<_, Option<String>>(3), None);
    tx.finish(Ok::<_, palisade::db::DbError>(())).await.unwrap();

    // The API, several times over (every connection serves some of these).
    for _ in 0..2 * pool_size {
        app.get(&format!("/v1/orgs/{v_org}"), &a.token)
            .await
            .assert_problem(404, "not_found");
        app.get(&format!("/v1/orgs/{v_org}/projects"), &a.token)
            .await
            .assert_problem(404, "not_found");
        let own = app
            .get(&format!("/v1/orgs/{}/projects", a.org_id), &a.token)
            .await;
        let items = own.assert_status(200)["items"].as_array().unwrap().clone();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["id"], t.attacker_project.to_string());
        let orgs = app.get("/v1/orgs", &a.token).await;
        let ids: Vec<_> = orgs.assert_status(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].clone())
            .collect();
        assert_eq!(ids, [serde_json::json!(a.org_id.to_string())]);
        // V's viewer stays a viewer (the plant says owner).
        app.patch(
            &format!("/v1/orgs/{v_org}"),
            &t.victim.viewer.token,
            serde_json::json!({"name": "pwned"}),
        )
        .await
        .assert_problem(403, "forbidden");
        let me = app.get("/v1/auth/me", &t.victim.viewer.token).await;
        assert_eq!(
            me.assert_status(200)["user"]["id"],
            t.victim.viewer.user_id.to_string()
        );
    }

    // On a raw connection: the plant persists, and a fresh transaction verifies nothing.
    let raw = app.sql_runtime().await;
    raw.batch_execute(&forge_sql(
        Forge::Set,
        &[
            ("app.current_user_id", t.victim.owner.user_id.to_string()),
            ("app.current_org_id", v_org.to_string()),
            ("app.current_org_role", "owner".to_owned()),
            ("app.context_mac", "00".repeat(32)),
        ],
    ))
    .await
    .unwrap();
    raw.batch_execute("begin").await.unwrap();
    assert_eq!(
        raw_settings(&raw).await[2].1.as_deref(),
        Some(v_org.to_string().as_str())
    );
    assert_eq!(verified(&raw).await, UNVERIFIED);
    raw.batch_execute("commit").await.unwrap();
    let name: String = app
        .sql_superuser()
        .await
        .query_one("select name from app.orgs where id = $1", &[&v_org])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, t.victim_name);
}

/// S1. The context check fails closed: without a key (the one row of app.context_key
/// gone -- a botched rotation, a restore), a forged context must not verify.
#[tokio::test]
async fn s1_without_a_context_key_nothing_verifies() {
    let app = spawn_app().await;
    let t = tenants(&app).await;
    let owner = app.sql_as("palisade_owner").await;
    let deleted = owner
        .execute("delete from app.context_key", &[])
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let rt = app.sql_runtime().await;
    let owner_sid = app.session_proof(&t.victim.owner).0;
    rt.batch_execute("begin").await.unwrap();
    rt.batch_execute(&forge_sql(
        Forge::SetConfigLocal,
        &[
            ("app.current_user_id", t.victim.owner.user_id.to_string()),
            ("app.current_session_id", owner_sid.to_string()),
            ("app.current_org_id", t.victim_org().to_string()),
            ("app.current_org_role", "owner".to_owned()),
            ("app.context_mac", "forged".to_owned()),
        ],
    ))
    .await
    .unwrap();
    let ctx = verified(&rt).await;
    let seen: i64 = rt
        .query_one(
            "select count(*) from app.projects where org_id = $1",
            &[&t.victim_org()],
        )
        .await
        .unwrap()
        .get(0);
    rt.batch_execute("rollback").await.unwrap();
    assert_eq!(
        (ctx, seen),
        (UNVERIFIED, 0),
        "with app.context_key empty, a forged context (any MAC) verifies and reads V's projects"
    );
}

// ---------------------------------------------------------------------------
// S2: another lane's definer functions, on bare arguments
// ---------------------------------------------------------------------------

/// Every function in schema app that `role` may not execute, with a call of it on NULL
/// arguments (from the catalog, so a new function is covered without editing this).
async fn refused_functions(su: &Client, role: &str) -> Vec<(String, String)> {
    su.query(
        "select p.oid::regprocedure::text,
                case when p.prokind = 'p' then 'call ' else 'select ' end
                || format('%I.%I', n.nspname, p.proname) || '('
                || coalesce((select string_agg(
                                 case when p.provariadic <> 0 and a.i = p.pronargs then 'variadic ' else '' end
                                 || 'null::' || format_type(a.t, null), ', ' order by a.i)
                               from unnest(p.proargtypes::oid[]) with ordinality as a(t, i)), '')
                || ')'
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace
          where n.nspname = 'app' and not has_function_privilege($1, p.oid, 'EXECUTE')
          order by 1",
        &[&role],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// S2. Each login role is refused (42501) every function of schema app not granted to
/// its lane -- credential, worker and internal ones alike -- before it runs.
#[tokio::test]
async fn s2_each_lane_is_refused_every_function_not_granted_to_it() {
    let app = spawn_app().await;
    let su = app.sql_superuser().await;
    let named: [(Lane, &[&str]); 3] = [
        (
            Lane::Request,
            &[
                "create_session",
                "refresh_session",
                "request_password_reset",
                "login_lookup",
                "register_user",
                "login_attempt_begin",
                "login_attempt_end",
                "confirm_email",
                "reset_password",
                "invitation_lookup",
                "claim_emails",
                "mark_email_sent",
                "enqueue_email",
                "claim_password_resets",
                "issue_password_reset",
                "purge_expired",
                "bind_context",
                "context_mac",
                // (app.verified_context() is callable by every lane: the app.current_*()
                // helpers policies inline are plain expressions over it. It reports only a
                // context whose MAC verifies -- what S1 attacks.)
                "rate_limit_take",
                "rate_limit_ip",
                "lock_org_for_key_admin",
                "lock_live_api_key",
            ],
        ),
        (
            Lane::Credentials,
            &[
                "set_request_context",
                "create_invitation",
                "claim_emails",
                "purge_expired",
                "set_api_key_context",
                "create_api_key",
                "rate_limit_take",
                "rate_limit_api_key",
                "rate_limit_session",
            ],
        ),
        (
            Lane::Jobs,
            &[
                "login_lookup",
                "set_request_context",
                "register_user",
                "set_api_key_context",
                "create_api_key",
                "rate_limit_take",
                "rate_limit_api_key",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (lane, must_include) in named {
        let login = lane.default_login_role();
        let refused = refused_functions(&su, login).await;
        for name in must_include {
            if !refused
                .iter()
                .any(|(f, _)| f.starts_with(&format!("app.{name}(")))
            {
                failures.push(format!(
                    "{login}: app.{name} is not in the refused list (granted, or gone?)"
                ));
            }
        }
        let client = app.sql_lane(lane).await;
        for (function, call) in &refused {
            let result = client.batch_execute(call).await;
            let code = outcome(result);
            if code != "42501" {
                failures.push(format!(
                    "{login}: {call} ({function}) -> {code}, expected 42501"
                ));
            }
        }
        // Control: the catalog's idea of a grant matches what happens (schema_version is
        // granted to every lane and runs).
        assert_eq!(
            outcome(client.query_one("select app.schema_version()", &[]).await),
            "ok",
            "{login}"
        );
        println!("{login}: {} functions refused", refused.len());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// S3: un-revoking a session
// ---------------------------------------------------------------------------

/// S3. A logged-out session stays logged out: the request role has no UPDATE on
/// sessions, and the trigger refuses the owner (and the superuser) too.
#[tokio::test]
async fn s3_a_revoked_session_cannot_be_revived() {
    let app = spawn_app().await;
    let a = app.signup("Alice").await;
    let (sid, _) = app.session_proof(&a);
    app.get("/v1/auth/me", &a.token).await.assert_status(200);
    app.request(Method::POST, "/v1/auth/logout", Some(&a.token), None)
        .await
        .assert_status(204);
    app.get("/v1/auth/me", &a.token)
        .await
        .assert_problem(401, "session_revoked");
    let su = app.sql_superuser().await;
    let original = revoked_at(&su, sid).await.expect("revoked by the logout");

    // As the request role: without a context, and with A's context from a new sign-in.
    let rt = app.sql_runtime().await;
    for sql in [
        "update app.sessions set revoked_at = null",
        "update app.sessions set revoked_at = null where id = $1",
    ] {
        let params: Vec<&(dyn ToSql + Sync)> = if sql.contains("$1") {
            vec![&sid]
        } else {
            vec![]
        };
        assert_eq!(outcome(rt.execute(sql, &params).await), "42501", "{sql}");
    }
    let login = app.login(&a.email, crate::helpers::PASSWORD).await;
    let token2 = login.assert_status(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let again = Signup {
        user_id: a.user_id,
        org_id: a.org_id,
        email: a.email.clone(),
        token: token2.clone(),
    };
    rt.batch_execute("begin").await.unwrap();
    set_context(&app, &rt, &again, Some(a.org_id)).await;
    assert_eq!(
        outcome(
            attempt(&rt, "with w as (update app.sessions set revoked_at = null where id = $1 returning 1) select count(*) from w", &[&sid]).await
        ),
        "42501"
    );
    // The request role's own revocation function leaves it revoked (and says so).
    let revived: bool = rt
        .query_one("select app.revoke_session($1)", &[&sid])
        .await
        .unwrap()
        .get(0);
    assert!(!revived);
    rt.batch_execute("commit").await.unwrap();
    app.get("/v1/auth/me", &a.token)
        .await
        .assert_problem(401, "session_revoked");
    app.get("/v1/auth/me", &token2).await.assert_status(200);

    // The owner of schema app passes RLS (it is the definer) -- the trigger still refuses.
    for user in ["palisade_owner", palisade::db::embedded::SUPERUSER] {
        let c = app.sql_as(user).await;
        let err = c
            .execute(
                "update app.sessions set revoked_at = null where id = $1",
                &[&sid],
            )
            .await
            .expect_err(user);
        assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{user}: {err}");
        let err = c
            .execute(
                "update app.sessions set revoked_at = revoked_at + interval '1 year' where id = $1",
                &[&sid],
            )
            .await
            .expect_err(user);
        let db_error = err.as_db_error().expect("a database error");
        assert_eq!(db_error.code().code(), "42501", "{user}: {db_error:?}");
        assert_eq!(db_error.message(), "a revoked session stays revoked");
    }
    assert_eq!(revoked_at(&su, sid).await, Some(original));
    app.get("/v1/auth/me", &a.token)
        .await
        .assert_problem(401, "session_revoked");
}

async fn revoked_at(su: &Client, sid: Uuid) -> Option<chrono::DateTime<chrono::Utc>> {
    su.query_one("select revoked_at from app.sessions where id = $1", &[&sid])
        .await
        .unwrap()
        .get(0)
}

// ---------------------------------------------------------------------------
// S4: lifting the timeouts
// ---------------------------------------------------------------------------

/// S4. The request role can ALTER ROLE itself (here only in this test's database, so
/// tests running in parallel are not affected). New connections of the server's pool
/// still run with the lane's timeouts, and the self-check and the audit report it.
#[tokio::test]
async fn s4_a_role_timeout_changed_by_the_role_itself_is_overridden_and_reported() {
    let app = spawn_app().await;
    let a = app.signup("Alice").await;
    let rt = app.sql_runtime().await;
    let db_name = &app.db_name;
    rt.batch_execute(&format!(
        "alter role palisade_app in database {db_name} set statement_timeout = 0"
    ))
    .await
    .expect("a role may change its own defaults");
    let outcome_of = async {
        // A plain new connection gets the attacker's setting...
        let raw = app.sql_runtime().await;
        let raw_timeout: String = raw
            .query_one("show statement_timeout", &[])
            .await
            .unwrap()
            .get(0);
        // ...a new connection of the server's request pool does not.
        let db = Db::new(
            &crate::helpers::connections(db_name),
            PoolOptions {
                request_size: 1,
                credentials_size: 1,
                jobs_size: 1,
                timeout: Duration::from_secs(5),
                statement_cache: true,
            },
        );
        let (session_id, proof) = app.session_proof(&a);
        let ctx = RequestContext {
            session_id,
            proof: proof.try_into().unwrap(),
            org_id: Some(a.org_id),
        };
        let tx = db.begin(&ctx, Access::ReadOnly).await.unwrap();
        let mut pool_timeouts = Vec::new();
        for setting in [
            "statement_timeout",
            "lock_timeout",
            "idle_in_transaction_session_timeout",
        ] {
            let v: String = tx
                .query_one(&format!("show {setting}"), &[])
                .await
                .unwrap()
                .get(0);
            pool_timeouts.push(v);
        }
        tx.finish(Ok::<_, palisade::db::DbError>(())).await.unwrap();
        let warnings = migrate::self_check(&app.sql_runtime().await, Lane::Request)
            .await
            .unwrap();
        let report = audit::report(&app.sql_as("palisade_owner").await)
            .await
            .unwrap();
        (raw_timeout, pool_timeouts, warnings, report.findings)
    }
    .await;
    rt.batch_execute(&format!(
        "alter role palisade_app in database {db_name} reset statement_timeout"
    ))
    .await
    .unwrap();
    let (raw_timeout, pool_timeouts, warnings, findings) = outcome_of;
    assert_eq!(
        raw_timeout, "0",
        "the attack took effect on plain connections"
    );
    assert_eq!(
        pool_timeouts,
        ["5s", "2s", "15s"],
        "the server's pool overrides it"
    );
    // Both checks below, then one assertion: the report shows everything missed.
    let mut missed = Vec::new();
    if !warnings
        .iter()
        .any(|w| w.contains("statement_timeout") && w.contains("palisade_app"))
    {
        missed.push(format!(
            "migrate::self_check(Lane::Request) does not warn about statement_timeout = 0 \
             (set by ALTER ROLE palisade_app IN DATABASE); its warnings: {warnings:?}"
        ));
    }
    if !findings.iter().any(|f| {
        f.check == "role_timeout"
            && f.object == "palisade_app"
            && f.detail.contains("statement_timeout")
    }) {
        let checks: Vec<String> = findings.iter().map(ToString::to_string).collect();
        missed.push(format!(
            "audit::report() has no role_timeout finding for palisade_app; its findings: {checks:?}"
        ));
    }
    assert!(missed.is_empty(), "{}", missed.join("\n"));
    // Reset: clean again.
    let warnings = migrate::self_check(&app.sql_runtime().await, Lane::Request)
        .await
        .unwrap();
    assert_eq!(warnings, Vec::<String>::new());
    let report = audit::report(&app.sql_as("palisade_owner").await)
        .await
        .unwrap();
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.check == "role_timeout" && f.object == "palisade_app"),
        "{:?}",
        report.findings
    );
}

/// S4, on the connection itself: request SQL (A's) sets the timeouts session-level, not
/// with ALTER ROLE. The pooled connection goes on to serve other tenants' requests; they
/// must still run with the lane's timeouts.
#[tokio::test]
async fn s4_timeouts_lifted_by_request_sql_do_not_outlive_the_request() {
    let app = spawn_app().await;
    let t = tenants(&app).await;
    let ctx = |who: &Signup| {
        let (session_id, proof) = app.session_proof(who);
        RequestContext {
            session_id,
            proof: proof.try_into().unwrap(),
            org_id: None,
        }
    };
    let db = &app.state.db;
    let pool_size = crate::helpers::server_connections_per_lane();
    let mut held = Vec::new();
    for _ in 0..pool_size {
        let tx = db
            .begin(&ctx(&t.attacker), Access::ReadWrite)
            .await
            .unwrap();
        for stmt in [
            "set statement_timeout = 0",
            "set lock_timeout = 0",
            "set idle_in_transaction_session_timeout = 0",
        ] {
            tx.query(stmt, &[]).await.unwrap();
        }
        held.push(tx);
    }
    for tx in held {
        tx.finish(Ok::<_, palisade::db::DbError>(())).await.unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..pool_size {
        let tx = db
            .begin(&ctx(&t.victim.viewer), Access::ReadOnly)
            .await
            .unwrap();
        let row = tx
            .query_one(
                "select pg_backend_pid(), current_setting('statement_timeout'),
                        current_setting('lock_timeout'),
                        current_setting('idle_in_transaction_session_timeout')",
                &[],
            )
            .await
            .unwrap();
        seen.push((
            row.get::<_, i32>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, String>(3),
        ));
        tx.finish(Ok::<_, palisade::db::DbError>(())).await.unwrap();
    }
    let lifted: Vec<_> = seen
        .iter()
        .filter(|(_, s, l, i)| (s.as_str(), l.as_str(), i.as_str()) != ("5s", "2s", "15s"))
        .collect();
    assert!(
        lifted.is_empty(),
        "V's requests ran with the timeouts A's request SQL set on the pooled connections \
         (pid, statement, lock, idle-in-transaction): {lifted:?}"
    );
}

/// Request SQL of one tenant cannot end another tenant's requests: the request role's
/// connections all run as palisade_app, and a role may signal its own backends unless
/// pg_cancel_backend / pg_terminate_backend are revoked from it.
#[tokio::test]
async fn request_sql_cannot_cancel_or_terminate_other_tenants_requests() {
    let app = spawn_app().await;
    let t = tenants(&app).await;
    let (session_id, proof) = app.session_proof(&t.victim.owner);
    let victim_ctx = RequestContext {
        session_id,
        proof: proof.try_into().unwrap(),
        org_id: Some(t.victim_org()),
    };
    // V's request, in flight on the server's request pool.
    let victim_tx = app
        .state
        .db
        .begin(&victim_ctx, Access::ReadOnly)
        .await
        .unwrap();
    let victim_pid: i32 = victim_tx
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // A's request SQL.
    let mut rt = app.sql_runtime().await;
    let tx = crate::fixtures::runtime_tx(&app, &mut rt, &t.attacker, Some(t.attacker.org_id)).await;
    let visible: i64 = tx
        .query_one(
            "select count(*) from pg_stat_activity where pid = $1",
            &[&victim_pid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(visible, 1, "V's backend is listed in pg_stat_activity");
    let shown = |r: &Result<tokio_postgres::Row, tokio_postgres::Error>| match r {
        Ok(row) => format!("returned {}", row.get::<_, bool>(0)),
        Err(e) => format!("refused ({})", e.code().map_or("?", |c| c.code())),
    };
    let cancel = tx
        .query_one("select pg_cancel_backend($1)", &[&victim_pid])
        .await;
    let cancelled = matches!(&cancel, Ok(r) if r.get::<_, bool>(0));
    drop(tx);
    let tx = crate::fixtures::runtime_tx(&app, &mut rt, &t.attacker, Some(t.attacker.org_id)).await;
    let terminate = tx
        .query_one("select pg_terminate_backend($1)", &[&victim_pid])
        .await;
    let terminated = matches!(&terminate, Ok(r) if r.get::<_, bool>(0));
    drop(tx);
    // Give a terminated backend a moment to go; then V's request carries on (or not).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let still = victim_tx
        .query_one("select count(*) from app.projects", &[])
        .await;
    let finished = victim_tx.finish(still.map(|r| r.get::<_, i64>(0))).await;
    assert!(
        !cancelled && !terminated && matches!(finished, Ok(2)),
        "A's request SQL signalled V's in-flight request: pg_cancel_backend {}, \
         pg_terminate_backend {}, V's request then -> {finished:?}",
        shown(&cancel),
        shown(&terminate)
    );
}
