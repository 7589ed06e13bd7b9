//! The operator's commands (`palisade users|orgs|sessions|outbox ...`, parsed in
//! `cli`): what an on-call engineer needs, run as the schema owner from the command line,
//! never over HTTP. Reads are plain SELECTs as the owner (who passes the forced policies:
//! `app.is_definer()` is true for it); every change is one call of a function of
//! policies/functions_operator.sql (or `app.set_org_plan`), which writes its audit row
//! (actor `system`, `via: cli`) in the same statement. Nothing here reads or prints a
//! password hash, a token or an email body.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::{
    config::Settings,
    db::{DbError, DbFailure, OutboxStats},
    startup,
};

/// A moment that may not have happened (a column that may be NULL).
type At = Option<DateTime<Utc>>;

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    /// One JSON document on stdout.
    Json,
}

/// An account, by id or by email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(Uuid),
    /// Trimmed and lower-cased, as accounts store it.
    Email(String),
}

/// Which failed emails `outbox retry` makes due again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    One(Uuid),
    AllFailed,
}

/// An operator command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    UsersList {
        email_contains: Option<String>,
        limit: i64,
    },
    UsersShow(UserRef),
    UsersDisable(UserRef),
    UsersEnable(UserRef),
    UsersResetPassword {
        user: UserRef,
        revoke_sessions: bool,
    },
    OrgsList {
        limit: i64,
    },
    OrgsShow(Uuid),
    OrgsSetPlan {
        org: Uuid,
        plan: String,
    },
    SessionsRevoke(UserRef),
    OutboxStatus,
    OutboxRetry(Retry),
    /// Rewrap every data key under the current master key.
    KeysRotateMaster,
    /// Seal an org's secrets under a new data key version.
    KeysRotateOrg(Uuid),
    KeysStatus,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::UsersList { .. } => "palisade users list",
            Op::UsersShow(_) => "palisade users show",
            Op::UsersDisable(_) => "palisade users disable",
            Op::UsersEnable(_) => "palisade users enable",
            Op::UsersResetPassword { .. } => "palisade users reset-password",
            Op::OrgsList { .. } => "palisade orgs list",
            Op::OrgsShow(_) => "palisade orgs show",
            Op::OrgsSetPlan { .. } => "palisade orgs set-plan",
            Op::SessionsRevoke(_) => "palisade sessions revoke",
            Op::OutboxStatus => "palisade outbox status",
            Op::OutboxRetry(_) => "palisade outbox retry",
            Op::KeysRotateMaster => "palisade keys rotate-master",
            Op::KeysRotateOrg(_) => "palisade keys rotate-org",
            Op::KeysStatus => "palisade keys status",
        }
    }
}

/// What a command found or did: its JSON document and the same as text; or why not
/// (a target that does not exist, an operation the database refused).
enum Outcome {
    Done { json: Value, text: String },
    Refused { code: String, message: String },
}

fn refused(code: &str, message: impl Into<String>) -> Outcome {
    Outcome::Refused {
        code: code.to_owned(),
        message: message.into(),
    }
}

/// Runs `op` as the schema owner and prints its outcome. Ok(false): refused or not found
/// (exit status 1), the reason on stderr (and, with `--format json`, as
/// `{"error": code, "detail": ...}` on stdout).
pub async fn run(settings: &Settings, op: Op, format: Format) -> anyhow::Result<bool> {
    let outcome = startup::as_owner(settings, op.name(), async |client| {
        if matches!(
            op,
            Op::KeysRotateMaster | Op::KeysRotateOrg(_) | Op::KeysStatus
        ) {
            return keys(client, settings, op).await;
        }
        match execute(client, op).await {
            Ok(outcome) => Ok(outcome),
            // A rule of policies/ (app.refuse): the operator's mistake, not a failure.
            Err(e) => {
                let err = DbError::from(e);
                match err.failure() {
                    DbFailure::Rule { code, message, .. } => Ok(refused(&code, message)),
                    _ => Err(err.into()),
                }
            }
        }
    })
    .await?;
    match outcome {
        Outcome::Done { json, text } => {
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&json)?),
                Format::Text => print!("{text}"),
            }
            Ok(true)
        }
        Outcome::Refused { code, message } => {
            if format == Format::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"error": code, "detail": message}))?
                );
            }
            eprintln!("palisade: {message}");
            Ok(false)
        }
    }
}

/// `palisade keys ...`: the envelope encryption's rotations (`crate::secrets`), with the
/// master keys of this process's configuration (`PALISADE_MASTER_KEY`,
/// `PALISADE_MASTER_KEY_PREVIOUS`). Prints ids, versions and counts; never a key.
async fn keys(client: &Client, settings: &Settings, op: Op) -> anyhow::Result<Outcome> {
    use crate::secrets::{self, KeyError, MasterKeys};
    let master = MasterKeys::new(&settings.master_key()?, &settings.master_key_previous);
    let result = match op {
        Op::KeysRotateMaster => secrets::rotate_master(client, &master).await.map(|r| {
            let text = format!(
                "rewrapped {} data key(s) under master key {}; {} already were\n",
                r.rewrapped, r.master_key_id, r.unchanged
            );
            (json!(r), text)
        }),
        Op::KeysRotateOrg(org) => secrets::rotate_org(client, &master, org).await.map(|r| {
            let text = format!(
                "org {}: data key v{}; {} secret(s) sealed again; {} older version(s) retired\n",
                r.org_id, r.version, r.resealed, r.retired
            );
            (json!(r), text)
        }),
        _ => secrets::key_status(client, &master).await.map(|s| {
            let mut text = format!("current master key: {}\n", s.current_master_key_id);
            for k in &s.master_keys {
                let _ = writeln!(
                    text,
                    "  master key {} ({}): {} data key(s) of {} org(s)",
                    k.master_key_id, k.configured, k.data_keys, k.orgs
                );
            }
            if s.secrets_on_retired_versions.is_empty() {
                text.push_str("no secret is sealed under a retired data key\n");
            }
            for r in &s.secrets_on_retired_versions {
                let _ = writeln!(
                    text,
                    "  org {}: {} secret(s) on retired data keys (run keys rotate-org)",
                    r.org_id, r.secrets
                );
            }
            (json!(s), text)
        }),
    };
    match result {
        Ok((json, text)) => Ok(Outcome::Done { json, text }),
        Err(e @ KeyError::Unopenable { .. }) => Ok(refused("key_unopenable", e.to_string())),
        Err(e @ KeyError::Tampered { .. }) => Ok(refused("secret_tampered", e.to_string())),
        Err(e @ KeyError::NoSuchOrg(_)) => Ok(refused("not_found", e.to_string())),
        Err(KeyError::Db(e)) => Err(e.into()),
    }
}

async fn execute(client: &Client, op: Op) -> Result<Outcome, tokio_postgres::Error> {
    match op {
        Op::UsersList {
            email_contains,
            limit,
        } => users_list(client, email_contains.as_deref(), limit).await,
        Op::UsersShow(user) => with_user(client, &user, users_show).await,
        Op::UsersDisable(user) => with_user(client, &user, users_disable).await,
        Op::UsersEnable(user) => with_user(client, &user, users_enable).await,
        Op::UsersResetPassword {
            user,
            revoke_sessions,
        } => {
            with_user(client, &user, async |client, user| {
                users_reset_password(client, user, revoke_sessions).await
            })
            .await
        }
        Op::OrgsList { limit } => orgs_list(client, limit).await,
        Op::OrgsShow(org) => orgs_show(client, org).await,
        Op::OrgsSetPlan { org, plan } => orgs_set_plan(client, org, &plan).await,
        Op::SessionsRevoke(user) => with_user(client, &user, sessions_revoke).await,
        Op::OutboxStatus => outbox_status(client).await,
        Op::OutboxRetry(retry) => outbox_retry(client, retry).await,
        Op::KeysRotateMaster | Op::KeysRotateOrg(_) | Op::KeysStatus => {
            unreachable!("keys commands run in operator::keys")
        }
    }
}

/// An account found by id or email: its id and email.
struct User {
    id: Uuid,
    email: String,
}

/// Runs `f` on the account `user` names; not found: refused.
async fn with_user(
    client: &Client,
    user: &UserRef,
    f: impl AsyncFnOnce(&Client, User) -> Result<Outcome, tokio_postgres::Error>,
) -> Result<Outcome, tokio_postgres::Error> {
    let (id, email) = match user {
        UserRef::Id(id) => (Some(*id), None),
        UserRef::Email(email) => (None, Some(email.as_str())),
    };
    let row = client
        .query_opt(
            "select u.id, u.email from app.users u where u.id = $1 or u.email = $2",
            &[&id, &email],
        )
        .await?;
    match row {
        Some(row) => {
            f(
                client,
                User {
                    id: row.get(0),
                    email: row.get(1),
                },
            )
            .await
        }
        None => Ok(refused(
            "not_found",
            match user {
                UserRef::Id(id) => format!("no user with id {id}"),
                UserRef::Email(email) => format!("no user with email {email}"),
            },
        )),
    }
}

async fn users_list(
    client: &Client,
    email_contains: Option<&str>,
    limit: i64,
) -> Result<Outcome, tokio_postgres::Error> {
    let rows = client
        .query(
            "select u.id, u.email, u.name, u.email_verified_at is not null, u.disabled_at is not null,
                    u.created_at, (select count(*) from app.memberships m where m.user_id = u.id)
               from app.users u
              where $1::text is null or pg_catalog.strpos(u.email, pg_catalog.lower($1)) > 0
              order by u.created_at, u.id
              limit $2",
            &[&email_contains, &limit],
        )
        .await?;
    let mut items = Vec::new();
    let mut table = Vec::new();
    for r in &rows {
        let (id, email, name): (Uuid, String, String) = (r.get(0), r.get(1), r.get(2));
        let (verified, disabled): (bool, bool) = (r.get(3), r.get(4));
        let (created, orgs): (DateTime<Utc>, i64) = (r.get(5), r.get(6));
        table.push(vec![
            id.to_string(),
            email.clone(),
            name.clone(),
            yes_no(verified),
            yes_no(disabled),
            orgs.to_string(),
            when(Some(created)),
        ]);
        items.push(json!({
            "id": id, "email": email, "name": name, "verified": verified, "disabled": disabled,
            "orgs": orgs, "created_at": created,
        }));
    }
    let text = columns(
        &[
            "ID", "EMAIL", "NAME", "VERIFIED", "DISABLED", "ORGS", "CREATED",
        ],
        &table,
    ) + &format!("{} user(s)\n", items.len());
    Ok(Outcome::Done {
        json: json!({ "items": items }),
        text,
    })
}

async fn users_show(client: &Client, user: User) -> Result<Outcome, tokio_postgres::Error> {
    let u = client
        .query_one(
            "select u.name, u.email_verified_at, u.disabled_at, u.created_at, u.current_org_id,
                    (select count(*) from app.sessions s
                      where s.user_id = u.id and s.revoked_at is null and s.expires_at > now()),
                    (select max(s.created_at) from app.sessions s where s.user_id = u.id)
               from app.users u where u.id = $1",
            &[&user.id],
        )
        .await?;
    let (name, verified_at, disabled_at): (String, At, At) = (u.get(0), u.get(1), u.get(2));
    let (created, current_org, live_sessions, last_sign_in): (
        DateTime<Utc>,
        Option<Uuid>,
        i64,
        At,
    ) = (u.get(3), u.get(4), u.get(5), u.get(6));
    let orgs = client
        .query(
            "select o.id, o.name, o.slug, o.personal, m.role::text
               from app.memberships m join app.orgs o on o.id = m.org_id
              where m.user_id = $1
              order by o.created_at, o.id",
            &[&user.id],
        )
        .await?;
    let keys = client
        .query(
            "select k.id, k.org_id, o.name, k.name, k.role::text, k.start,
                    case when k.revoked_at is not null then 'revoked'
                         when k.expires_at <= now() then 'expired'
                         when u.disabled_at is not null then 'suspended'
                         else 'active' end,
                    k.created_at, k.last_used_at, k.expires_at, k.revoked_at
               from app.api_keys k
               join app.orgs o on o.id = k.org_id
               join app.users u on u.id = k.created_by
              where k.created_by = $1
              order by k.created_at, k.id",
            &[&user.id],
        )
        .await?;
    let mut text = String::new();
    let _ = writeln!(text, "user      {} <{}>", user.id, user.email);
    let _ = writeln!(text, "name      {name}");
    let _ = writeln!(
        text,
        "verified  {}",
        verified_at.map_or("no".to_owned(), |t| format!("yes, {}", when(Some(t))))
    );
    let _ = writeln!(
        text,
        "disabled  {}",
        disabled_at.map_or("no".to_owned(), |t| format!("yes, since {}", when(Some(t))))
    );
    let _ = writeln!(text, "created   {}", when(Some(created)));
    let _ = writeln!(
        text,
        "sessions  {live_sessions} live; last sign-in {}",
        when(last_sign_in)
    );
    let mut org_items = Vec::new();
    let mut org_table = Vec::new();
    for o in &orgs {
        let (id, org_name, slug, personal, role): (Uuid, String, String, bool, String) =
            (o.get(0), o.get(1), o.get(2), o.get(3), o.get(4));
        org_table.push(vec![
            id.to_string(),
            org_name.clone(),
            slug.clone(),
            role.clone(),
            if personal { "personal" } else { "" }.to_owned(),
        ]);
        org_items.push(json!({
            "id": id, "name": org_name, "slug": slug, "personal": personal, "role": role,
        }));
    }
    let _ = writeln!(text, "\norgs ({})", org_items.len());
    text += &columns(&["ID", "NAME", "SLUG", "ROLE", ""], &org_table);
    let mut key_items = Vec::new();
    let mut key_table = Vec::new();
    for k in &keys {
        let (id, org_id, org_name, key_name, role, start, status): (
            Uuid,
            Uuid,
            String,
            String,
            String,
            String,
            String,
        ) = (
            k.get(0),
            k.get(1),
            k.get(2),
            k.get(3),
            k.get(4),
            k.get(5),
            k.get(6),
        );
        let (created_at, last_used, expires, revoked): (DateTime<Utc>, At, At, At) =
            (k.get(7), k.get(8), k.get(9), k.get(10));
        key_table.push(vec![
            id.to_string(),
            org_name.clone(),
            key_name.clone(),
            role.clone(),
            format!("{start}..."),
            status.clone(),
            when(last_used),
        ]);
        key_items.push(json!({
            "id": id, "org_id": org_id, "org_name": org_name, "name": key_name, "role": role,
            "start": start, "status": status, "created_at": created_at, "last_used_at": last_used,
            "expires_at": expires, "revoked_at": revoked,
        }));
    }
    let _ = writeln!(text, "\nAPI keys created ({})", key_items.len());
    text += &columns(
        &["ID", "ORG", "NAME", "ROLE", "START", "STATUS", "LAST USED"],
        &key_table,
    );
    Ok(Outcome::Done {
        json: json!({
            "id": user.id, "email": user.email, "name": name,
            "verified": verified_at.is_some(), "email_verified_at": verified_at,
            "disabled": disabled_at.is_some(), "disabled_at": disabled_at,
            "created_at": created, "current_org_id": current_org,
            "live_sessions": live_sessions, "last_sign_in_at": last_sign_in,
            "orgs": org_items, "api_keys": key_items,
        }),
        text,
    })
}

async fn users_disable(client: &Client, user: User) -> Result<Outcome, tokio_postgres::Error> {
    let row = client
        .query_one(
            "select changed, sessions_revoked from app.operator_disable_user($1)",
            &[&user.id],
        )
        .await?;
    let (changed, revoked): (bool, i32) = (row.get(0), row.get(1));
    let text = format!(
        "{} {} ({}); {revoked} live session(s) revoked; its API keys are refused until `palisade users enable`\n",
        if changed {
            "disabled"
        } else {
            "already disabled:"
        },
        user.email,
        user.id,
    );
    Ok(Outcome::Done {
        json: json!({
            "user_id": user.id, "email": user.email, "disabled": true, "changed": changed,
            "sessions_revoked": revoked,
        }),
        text,
    })
}

async fn users_enable(client: &Client, user: User) -> Result<Outcome, tokio_postgres::Error> {
    let changed: bool = client
        .query_one("select app.operator_enable_user($1)", &[&user.id])
        .await?
        .get(0);
    let text = format!(
        "{} {} ({})\n",
        if changed {
            "enabled"
        } else {
            "not disabled, nothing to do:"
        },
        user.email,
        user.id
    );
    Ok(Outcome::Done {
        json: json!({
            "user_id": user.id, "email": user.email, "disabled": false, "changed": changed,
        }),
        text,
    })
}

async fn users_reset_password(
    client: &Client,
    user: User,
    revoke_sessions: bool,
) -> Result<Outcome, tokio_postgres::Error> {
    let revoked: i32 = client
        .query_one(
            "select app.operator_password_reset($1, $2)",
            &[&user.id, &revoke_sessions],
        )
        .await?
        .get(0);
    let mut text = format!(
        "password-reset email queued for {} ({}): the worker sends it (at most one per account a minute)\n",
        user.email, user.id
    );
    if revoke_sessions {
        let _ = writeln!(text, "{revoked} live session(s) revoked");
    }
    Ok(Outcome::Done {
        json: json!({
            "user_id": user.id, "email": user.email, "reset_email": "queued",
            "sessions_revoked": revoked,
        }),
        text,
    })
}

async fn sessions_revoke(client: &Client, user: User) -> Result<Outcome, tokio_postgres::Error> {
    let revoked: i32 = client
        .query_one("select app.operator_revoke_sessions($1)", &[&user.id])
        .await?
        .get(0);
    Ok(Outcome::Done {
        json: json!({"user_id": user.id, "email": user.email, "sessions_revoked": revoked}),
        text: format!(
            "revoked {revoked} live session(s) of {} ({}), with their refresh tokens\n",
            user.email, user.id
        ),
    })
}

async fn orgs_list(client: &Client, limit: i64) -> Result<Outcome, tokio_postgres::Error> {
    let rows = client
        .query(
            "select o.id, o.name, o.slug, o.personal, op.plan_id, op.status, o.created_at,
                    (select count(*) from app.memberships m where m.org_id = o.id)
               from app.orgs o left join app.org_plans op on op.org_id = o.id
              order by o.created_at, o.id
              limit $1",
            &[&limit],
        )
        .await?;
    let mut items = Vec::new();
    let mut table = Vec::new();
    for r in &rows {
        let (id, name, slug, personal): (Uuid, String, String, bool) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let (plan, status, created, members): (Option<String>, Option<String>, DateTime<Utc>, i64) =
            (r.get(4), r.get(5), r.get(6), r.get(7));
        table.push(vec![
            id.to_string(),
            name.clone(),
            slug.clone(),
            plan.clone().unwrap_or_else(|| "-".into()),
            status.clone().unwrap_or_else(|| "-".into()),
            members.to_string(),
            if personal { "personal" } else { "" }.to_owned(),
            when(Some(created)),
        ]);
        items.push(json!({
            "id": id, "name": name, "slug": slug, "personal": personal, "plan": plan,
            "plan_status": status, "members": members, "created_at": created,
        }));
    }
    let text = columns(
        &[
            "ID", "NAME", "SLUG", "PLAN", "STATUS", "MEMBERS", "", "CREATED",
        ],
        &table,
    ) + &format!("{} org(s)\n", items.len());
    Ok(Outcome::Done {
        json: json!({ "items": items }),
        text,
    })
}

async fn orgs_show(client: &Client, org: Uuid) -> Result<Outcome, tokio_postgres::Error> {
    let Some(o) = client
        .query_opt(
            "select o.name, o.slug, o.personal, o.created_at, op.plan_id, op.status,
                    op.changed_at, op.current_period_end,
                    (select count(*) from app.projects p where p.org_id = o.id),
                    (select count(*) from app.api_keys k where k.org_id = o.id
                        and k.revoked_at is null and (k.expires_at is null or k.expires_at > now()))
               from app.orgs o left join app.org_plans op on op.org_id = o.id
              where o.id = $1",
            &[&org],
        )
        .await?
    else {
        return Ok(refused(
            "not_found",
            format!("no organization with id {org}"),
        ));
    };
    let (name, slug, personal, created): (String, String, bool, DateTime<Utc>) =
        (o.get(0), o.get(1), o.get(2), o.get(3));
    let (plan, status, changed, period_end): (Option<String>, Option<String>, At, At) =
        (o.get(4), o.get(5), o.get(6), o.get(7));
    let (projects, keys): (i64, i64) = (o.get(8), o.get(9));
    let members = client
        .query(
            "select m.role::text, u.id, u.email, u.disabled_at is not null
               from app.memberships m join app.users u on u.id = m.user_id
              where m.org_id = $1
              order by m.role desc, u.email",
            &[&org],
        )
        .await?;
    let mut by_role = serde_json::Map::new();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "org       {org} {name} ({slug}){}",
        if personal { ", personal" } else { "" }
    );
    let _ = writeln!(
        text,
        "plan      {} ({}), since {}{}",
        plan.as_deref().unwrap_or("-"),
        status.as_deref().unwrap_or("-"),
        when(changed),
        period_end.map_or(String::new(), |t| format!(
            ", period ends {}",
            when(Some(t))
        ))
    );
    let _ = writeln!(text, "created   {}", when(Some(created)));
    let _ = writeln!(text, "projects  {projects}");
    let _ = writeln!(text, "API keys  {keys} live");
    let _ = writeln!(text, "members   {}", members.len());
    for m in &members {
        let (role, id, email, disabled): (String, Uuid, String, bool) =
            (m.get(0), m.get(1), m.get(2), m.get(3));
        let _ = writeln!(
            text,
            "  {role:<7} {email} ({id}){}",
            if disabled { " [disabled]" } else { "" }
        );
        if let Value::Array(list) = by_role.entry(role).or_insert_with(|| json!([])) {
            list.push(json!({"id": id, "email": email, "disabled": disabled}));
        }
    }
    Ok(Outcome::Done {
        json: json!({
            "id": org, "name": name, "slug": slug, "personal": personal, "created_at": created,
            "plan": {"id": plan, "status": status, "changed_at": changed, "current_period_end": period_end},
            "members": {"total": members.len(), "by_role": by_role},
            "projects": projects, "live_api_keys": keys,
        }),
        text,
    })
}

async fn orgs_set_plan(
    client: &Client,
    org: Uuid,
    plan: &str,
) -> Result<Outcome, tokio_postgres::Error> {
    let old: String = client
        .query_one("select app.set_org_plan($1, $2)", &[&org, &plan])
        .await?
        .get(0);
    Ok(Outcome::Done {
        json: json!({"org_id": org, "from": old, "to": plan}),
        text: format!("org {org}: plan {old} -> {plan}\n"),
    })
}

/// How many failures `outbox status` lists.
const FAILURES_SHOWN: i64 = 50;

async fn outbox_status(client: &Client) -> Result<Outcome, tokio_postgres::Error> {
    // States: pending (not tried yet, or leased right now), retrying (failed, will be
    // tried again), failed (given up after 10 attempts), sent -- the first three as the
    // metrics count them (app.email_outbox_stats). "Failed" as `outbox retry` means it:
    // not sent, and a last error or no attempts left.
    let stats = OutboxStats::from_row(&client.query_one(OutboxStats::SQL, &[]).await?);
    let (pending, retrying, failed, due) = (stats.waiting, stats.retrying, stats.failed, stats.due);
    let oldest = stats.oldest_pending_seconds;
    let sent: i64 = client
        .query_one(
            "select count(*) from app.email_outbox where sent_at is not null",
            &[],
        )
        .await?
        .get(0);
    let rows = client
        .query(
            "select id, template, to_email, attempts, last_error, next_attempt_at, created_at
               from app.email_outbox
              where sent_at is null and (last_error is not null or attempts >= 10)
              order by created_at, id
              limit $1",
            &[&FAILURES_SHOWN],
        )
        .await?;
    let mut failures = Vec::new();
    let mut table = Vec::new();
    for r in &rows {
        let (id, template, to, attempts): (Uuid, String, String, i32) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let (error, next, created): (Option<String>, DateTime<Utc>, DateTime<Utc>) =
            (r.get(4), r.get(5), r.get(6));
        let gave_up = attempts >= 10;
        table.push(vec![
            id.to_string(),
            template.clone(),
            to.clone(),
            attempts.to_string(),
            if gave_up {
                "gave up".to_owned()
            } else {
                when(Some(next))
            },
            error.clone().unwrap_or_default(),
        ]);
        failures.push(json!({
            "id": id, "template": template, "to_email": to, "attempts": attempts,
            "gave_up": gave_up, "next_attempt_at": (!gave_up).then_some(next),
            "created_at": created, "last_error": error,
        }));
    }
    let mut text = format!(
        "outbox: {pending} pending ({due} due now), {retrying} retrying, {failed} failed (gave up), {sent} sent\n\
         oldest pending: {}\n",
        oldest.map_or("none".to_owned(), |s| format!("{} old", age(s)))
    );
    if !failures.is_empty() {
        let _ = writeln!(
            text,
            "\nfailures ({} shown, oldest first; `palisade outbox retry` makes them due again)",
            failures.len()
        );
        text += &columns(
            &["ID", "TEMPLATE", "TO", "ATTEMPTS", "NEXT", "LAST ERROR"],
            &table,
        );
    }
    Ok(Outcome::Done {
        json: json!({
            "counts": {"pending": pending, "retrying": retrying, "failed": failed, "sent": sent},
            "due_now": due,
            "oldest_pending_age_seconds": oldest,
            "failures": failures,
        }),
        text,
    })
}

async fn outbox_retry(client: &Client, retry: Retry) -> Result<Outcome, tokio_postgres::Error> {
    let id = match retry {
        Retry::One(id) => Some(id),
        Retry::AllFailed => None,
    };
    let rows = client
        .query(
            "select id, template, to_email from app.operator_retry_emails($1)",
            &[&id],
        )
        .await?;
    if rows.is_empty()
        && let Some(id) = id
    {
        return Ok(refused(
            "not_found",
            format!("no failed email with id {id} (sent, still pending, or unknown)"),
        ));
    }
    let mut emails = Vec::new();
    let mut text = format!("{} failed email(s) due again\n", rows.len());
    for r in &rows {
        let (id, template, to): (Uuid, String, String) = (r.get(0), r.get(1), r.get(2));
        let _ = writeln!(text, "  {id} {template} to {to}");
        emails.push(json!({"id": id, "template": template, "to_email": to}));
    }
    Ok(Outcome::Done {
        json: json!({"retried": emails.len(), "emails": emails}),
        text,
    })
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// A time for text output, `-` for none.
fn when(t: At) -> String {
    t.map_or("-".to_owned(), |t| {
        t.format("%Y-%m-%d %H:%M:%SZ").to_string()
    })
}

/// A duration in seconds, as `3d 4h`, `2h 5m`, `4m 10s` or `12s`.
fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Rows under headers, each column as wide as its widest cell.
fn columns(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let _ = write!(out, "{cell:<w$}");
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(12.7), "12s");
        assert_eq!(age(250.0), "4m 10s");
        assert_eq!(age(7500.0), "2h 5m");
        assert_eq!(age(273_600.0), "3d 4h");
    }

    #[test]
    fn columns_align() {
        let out = columns(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "".into()]],
        );
        assert_eq!(out, "A    BB\nxxx  y\nz\n");
    }
}
