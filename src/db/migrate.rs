//! Migrations (refinery, from sql/) and then every policies/*.sql file, re-applied
//! idempotently in one transaction. Both run under one advisory lock, so servers
//! starting at once take turns instead of colliding. Also: the start-up self-check.

use anyhow::{Context, bail};
use tokio_postgres::Client;

use super::Lane;

refinery::embed_migrations!("sql");

/// Arbitrary constant naming Palisade's migration lock ("palisade" in ASCII, truncated).
const MIGRATION_LOCK_KEY: i64 = 0x7061_6c69_7361_6465;

macro_rules! policy_files {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../policies/", $name)))),*]
    };
}

/// policies/, in the order they are applied: the context first, tables, the shared
/// trigger, then functions, then the audit view.
pub const POLICY_FILES: &[(&str, &str)] = policy_files![
    "context.sql",
    // Before the tables: their policies call its access helpers.
    "functions_storage.sql",
    "users.sql",
    "orgs.sql",
    "memberships.sql",
    "sessions.sql",
    "projects.sql",
    "email_outbox.sql",
    "refresh_tokens.sql",
    "user_tokens.sql",
    "login_attempts.sql",
    "invitations.sql",
    "password_reset_requests.sql",
    "api_keys.sql",
    "plans.sql",
    "usage.sql",
    "project_members.sql",
    "conversations.sql",
    "documents.sql",
    "storage.sql",
    "billing.sql",
    "settings.sql",
    "secrets.sql",
    "assistant.sql",
    // After every table it puts a trigger on; before the functions that write it.
    "audit_log.sql",
    "updated_at.sql",
    "functions_email.sql",
    "functions_credentials.sql",
    "functions_sessions.sql",
    "functions_orgs.sql",
    "functions_api_keys.sql",
    "functions_rate_limits.sql",
    "functions_usage.sql",
    "functions_billing.sql",
    "functions_assistant.sql",
    "functions_jobs.sql",
    "functions_operator.sql",
    "audit.sql",
];

/// Every role policies/ grants to: deploy/roles.sql creates them.
const REQUIRED_ROLES: &[&str] = &[
    super::OWNER_ROLE,
    super::RUNTIME_GROUP_ROLE,
    super::CREDENTIALS_GROUP_ROLE,
    super::JOBS_GROUP_ROLE,
];

/// The newest migration version compiled into this binary.
pub fn latest_version() -> i32 {
    migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0)
}

/// Runs as the owner role: migrate, then apply policies.
pub async fn run(owner: &mut Client) -> anyhow::Result<()> {
    owner
        .execute(
            "select pg_catalog.pg_advisory_lock($1)",
            &[&MIGRATION_LOCK_KEY],
        )
        .await
        .context("taking the migration lock")?;
    let result = async {
        let report = migrations::runner()
            .run_async(owner)
            .await
            .context("running migrations")?;
        for m in report.applied_migrations() {
            tracing::info!(migration = %m, "applied");
        }
        apply_policies(owner).await
    }
    .await;
    owner
        .execute(
            "select pg_catalog.pg_advisory_unlock($1)",
            &[&MIGRATION_LOCK_KEY],
        )
        .await
        .context("releasing the migration lock")?;
    result
}

async fn apply_policies(owner: &mut Client) -> anyhow::Result<()> {
    let present: Vec<String> = owner
        .query(
            "select rolname::text from pg_catalog.pg_roles where rolname = any($1)",
            &[&REQUIRED_ROLES],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&str> = REQUIRED_ROLES
        .iter()
        .copied()
        .filter(|r| !present.iter().any(|p| p == r))
        .collect();
    if !missing.is_empty() {
        bail!(
            "roles {} are missing: run deploy/roles.sql once as a superuser (psql -f deploy/roles.sql)",
            missing.join(", ")
        );
    }
    let tx = owner.transaction().await?;
    // "policy ... does not exist, skipping" notices are expected on every re-apply.
    tx.batch_execute("set local client_min_messages = warning")
        .await?;
    for (name, sql) in POLICY_FILES {
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("applying policies/{name}"))?;
    }
    tx.commit().await?;
    Ok(())
}

/// Refuses to serve unless the connected role -- the login role of `lane` -- is subject to
/// RLS everywhere: not a superuser, no BYPASSRLS, not a member of any role that is either,
/// not a member of the schema owner; a member of its lane's group role and of no other
/// lane's (so SQL on one pool cannot run another's functions); and every table in schema
/// `app` (and every table anywhere with an `org_id` column) has RLS enabled and forced and
/// at least one policy. Returns warnings that do not stop the server: role-level timeouts
/// that differ from the ones the server sets on each connection.
pub async fn self_check(client: &Client, lane: Lane) -> anyhow::Result<Vec<String>> {
    let privileged: Vec<String> = client
        .query(
            "select r.rolname::text from pg_catalog.pg_roles r
              where pg_catalog.pg_has_role(current_user, r.oid, 'member')
                and (r.rolsuper or r.rolbypassrls)",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !privileged.is_empty() {
        bail!(
            "refusing to serve: the {lane:?} role can bypass row-level security \
             (superuser or BYPASSRLS via: {}). Connect as a NOSUPERUSER NOBYPASSRLS role.",
            privileged.join(", ")
        );
    }
    let owns_schema: Option<bool> = client
        .query_opt(
            "select pg_catalog.pg_has_role(current_user, n.nspowner, 'member')
               from pg_catalog.pg_namespace n where n.nspname = 'app'",
            &[],
        )
        .await?
        .map(|r| r.get(0));
    match owns_schema {
        None => bail!("refusing to serve: schema app does not exist; run `palisade migrate` first"),
        Some(true) => bail!(
            "refusing to serve: the {lane:?} role is (a member of) the owner of schema app, \
             and an owner's functions cross tenants. Serve as a separate role (deploy/roles.sql)."
        ),
        Some(false) => {}
    }
    let groups: Vec<String> = Lane::ALL
        .iter()
        .map(|l| l.group_role().to_owned())
        .collect();
    let member_of: Vec<String> = client
        .query(
            "select g from pg_catalog.unnest($1::text[]) g
              where exists (select 1 from pg_catalog.pg_roles r where r.rolname = g)
                and pg_catalog.pg_has_role(current_user, g, 'member')",
            &[&groups],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if member_of != [lane.group_role()] {
        bail!(
            "refusing to serve: the {lane:?} pool's role must be a member of {} and of no other \
             Palisade group role (it is a member of: {}). See deploy/roles.sql.",
            lane.group_role(),
            if member_of.is_empty() {
                "none".to_owned()
            } else {
                member_of.join(", ")
            }
        );
    }
    let unprotected: Vec<String> = client
        .query(
            "select format('%I.%I', n.nspname, c.relname)
               from pg_catalog.pg_class c
               join pg_catalog.pg_namespace n on n.oid = c.relnamespace
              where c.relkind in ('r', 'p')
                and (n.nspname = 'app'
                     or exists (select 1 from pg_catalog.pg_attribute a
                                 where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped))
                and n.nspname not in ('pg_catalog', 'information_schema')
                and (not c.relrowsecurity or not c.relforcerowsecurity
                     or not exists (select 1 from pg_catalog.pg_policy p where p.polrelid = c.oid))
              order by 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !unprotected.is_empty() {
        bail!(
            "refusing to serve: these tables lack enabled+forced row-level security or a policy: {}",
            unprotected.join(", ")
        );
    }
    let role: String = client
        .query_one("select current_user::text", &[])
        .await?
        .get(0);
    Ok(super::audit::timeout_drift(client, &role, lane)
        .await?
        .into_iter()
        .map(|d| d.to_string())
        .collect())
}

/// `DEFAULT_PLAN`: makes `plan` the plan new organizations start on (`app.plans.is_default`),
/// as the schema owner. `None` leaves the database's choice. An unknown plan is an error.
pub async fn apply_default_plan(
    owner: &tokio_postgres::Client,
    plan: Option<&str>,
) -> anyhow::Result<()> {
    let Some(plan) = plan else { return Ok(()) };
    let exists = owner
        .query_opt("select 1 from app.plans where id = $1", &[&plan])
        .await?
        .is_some();
    if !exists {
        anyhow::bail!("DEFAULT_PLAN={plan:?}: no such plan in app.plans");
    }
    owner.batch_execute("begin").await?;
    owner
        .execute(
            "update app.plans set is_default = false where is_default and id <> $1",
            &[&plan],
        )
        .await?;
    owner
        .execute(
            "update app.plans set is_default = true where id = $1 and not is_default",
            &[&plan],
        )
        .await?;
    owner.batch_execute("commit").await?;
    Ok(())
}
