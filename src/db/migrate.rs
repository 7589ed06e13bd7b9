//! Migrations (refinery, from sql/) and then every policies/*.sql file, re-applied
//! idempotently in one transaction. Both run under one advisory lock, so servers
//! starting at once take turns instead of colliding. Also: the start-up self-check.

use anyhow::{Context, bail};
use tokio_postgres::Client;

refinery::embed_migrations!("sql");

/// Arbitrary constant naming Palisade's migration lock ("palisade" in ASCII, truncated).
const MIGRATION_LOCK_KEY: i64 = 0x7061_6c69_7361_6465;

macro_rules! policy_files {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../policies/", $name)))),*]
    };
}

/// policies/, in the order they are applied: helpers first, tables, then functions.
pub const POLICY_FILES: &[(&str, &str)] = policy_files![
    "context.sql",
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
    "org_events.sql",
    "functions_email.sql",
    "functions_auth.sql",
    "functions_sessions.sql",
    "functions_orgs.sql",
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

/// Refuses to serve unless the connected (runtime) role is subject to RLS everywhere:
/// not a superuser, no BYPASSRLS, not a member of any role that is either, not a member
/// of the schema owner; and every table in schema `app` (and every table anywhere with
/// an `org_id` column) has RLS enabled and forced and at least one policy.
pub async fn self_check(runtime: &Client) -> anyhow::Result<()> {
    let privileged: Vec<String> = runtime
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
            "refusing to serve: the runtime role can bypass row-level security \
             (superuser or BYPASSRLS via: {}). Connect as a NOSUPERUSER NOBYPASSRLS role.",
            privileged.join(", ")
        );
    }
    let owns_schema: Option<bool> = runtime
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
            "refusing to serve: the runtime role is (a member of) the owner of schema app, \
             and an owner's functions cross tenants. Serve as a separate runtime role."
        ),
        Some(false) => {}
    }
    let unprotected: Vec<String> = runtime
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
    Ok(())
}
