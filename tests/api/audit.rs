//! `palisade audit` and the `app.isolation_report` view behind it: clean on a fresh
//! database, and each planted weakness reported under the right check -- through the
//! library (`palisade::db::audit::report`) and through the real binary.
//!
//! Per-database plants (tables, functions, grants, views) go into each test's own
//! database. Roles are cluster-wide and other tests run in parallel, so every role plant
//! happens in one test, with unique names, dropped before it ends; the tests that expect
//! a clean report take the same lock, so they never see those roles.

use std::collections::BTreeSet;

use palisade::db::{self, audit};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::helpers::{cluster, connect_as, fresh_database};

/// Held by every test here that plants roles or needs a report free of planted roles.
static ROLES: Mutex<()> = Mutex::const_new(());

async fn report_of(db_name: &str) -> audit::Report {
    audit::report(&connect_as(db::OWNER_ROLE, db_name).await)
        .await
        .expect("the report runs as the owner")
}

/// (check, object) of every finding.
fn found(report: &audit::Report) -> BTreeSet<(String, String)> {
    report
        .findings
        .iter()
        .map(|f| (f.check.clone(), f.object.clone()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    expected
        .iter()
        .map(|(c, o)| (c.to_string(), o.to_string()))
        .collect()
}

#[tokio::test]
async fn a_fresh_database_has_no_findings() {
    let _roles = ROLES.lock().await;
    let db_name = fresh_database().await;
    let report = report_of(&db_name).await;
    println!("{}", report.to_text());
    assert_eq!(report.findings, Vec::<audit::Finding>::new());
    // The inventory behind it is real: every table of app, its functions, the lanes.
    assert!(
        report.tables.iter().any(|t| t.table == "app.projects"
            && t.rls_enabled
            && t.rls_forced
            && t.tenant
            && !t.policies.is_empty()),
        "{}",
        report.to_text()
    );
    assert!(
        report
            .functions
            .iter()
            .any(|f| f.function.starts_with("app.set_request_context(") && f.security_definer)
    );
    let lanes: BTreeSet<(&str, &str)> = report
        .roles
        .iter()
        .map(|r| (r.role.as_str(), r.lane.as_str()))
        .collect();
    for (role, lane) in [
        ("palisade_app", "palisade_runtime"),
        ("palisade_auth", "palisade_credentials"),
        ("palisade_worker", "palisade_jobs"),
    ] {
        assert!(lanes.contains(&(role, lane)), "{lanes:?}");
    }
    assert!(report.to_text().contains("== findings (0)"));
}

/// Plants `sql` as the owner in a fresh database; the report must then hold exactly
/// `expected` (check, object) findings, and none once `undo` ran.
async fn planted(sql: &str, undo: &str, expected: &[(&str, &str)]) {
    let _roles = ROLES.lock().await;
    let db_name = fresh_database().await;
    let owner = connect_as(db::OWNER_ROLE, &db_name).await;
    owner.batch_execute(sql).await.unwrap();
    let report = report_of(&db_name).await;
    assert_eq!(found(&report), pairs(expected), "{}", report.to_text());
    for f in &report.findings {
        assert!(
            report.to_text().contains(&format!("FINDING {f}")),
            "the text form lists {f}"
        );
    }
    owner.batch_execute(undo).await.unwrap();
    assert_eq!(
        report_of(&db_name).await.findings,
        Vec::<audit::Finding>::new()
    );
}

#[tokio::test]
async fn a_tenant_table_without_rls_is_reported() {
    planted(
        "create table app.leaky (org_id uuid not null, secret text)",
        "drop table app.leaky",
        &[
            ("rls_not_forced", "app.leaky"),
            ("no_policy", "app.leaky"),
            ("no_tenant_guard", "app.leaky"),
        ],
    )
    .await;
    // Enabled but not forced (the owner would bypass it), with only a permissive policy.
    planted(
        "create table app.leaky (org_id uuid not null, secret text);
         alter table app.leaky enable row level security;
         create policy leaky_all on app.leaky for all using (true);",
        "drop table app.leaky",
        &[
            ("rls_not_forced", "app.leaky"),
            ("no_tenant_guard", "app.leaky"),
        ],
    )
    .await;
    // Outside schema app too, wherever a table has an org_id.
    planted(
        "create table public.leaky (org_id uuid)",
        "drop table public.leaky",
        &[
            ("rls_not_forced", "public.leaky"),
            ("no_policy", "public.leaky"),
            ("no_tenant_guard", "public.leaky"),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_definer_function_without_search_path_is_reported() {
    planted(
        "create function app.leaky_definer(p uuid) returns integer
             language sql security definer as $$ select 1 $$",
        "drop function app.leaky_definer(uuid)",
        &[
            ("definer_search_path", "app.leaky_definer(uuid)"),
            ("definer_comment", "app.leaky_definer(uuid)"),
            ("public_execute", "app.leaky_definer(uuid)"),
        ],
    )
    .await;
    // A search_path that still names public is no pinning.
    planted(
        "create function app.leaky_definer(p uuid) returns integer
             language sql security definer set search_path = public, pg_temp as $$ select 1 $$;
         revoke all on function app.leaky_definer(uuid) from public;
         comment on function app.leaky_definer(uuid) is 'a test plant';",
        "drop function app.leaky_definer(uuid)",
        &[("definer_search_path", "app.leaky_definer(uuid)")],
    )
    .await;
}

#[tokio::test]
async fn a_grant_to_public_is_reported() {
    planted(
        "grant select on app.projects to public",
        "revoke select on app.projects from public",
        &[("public_grant", "app.projects")],
    )
    .await;
    planted(
        "grant select (name) on app.orgs to public",
        "revoke select (name) on app.orgs from public",
        &[("public_grant", "app.orgs.name")],
    )
    .await;
}

/// Some guards name the lanes instead of PUBLIC (users.sql says why); that is safe only
/// while every lane meets a restrictive policy on every guarded table and no other role
/// holds a privilege in app.
#[tokio::test]
async fn a_guard_missing_a_lane_and_a_grant_to_another_role_are_reported() {
    planted(
        "alter policy users_guard on app.users to palisade_runtime",
        "alter policy users_guard on app.users to palisade_runtime, palisade_credentials, palisade_jobs",
        &[("lane_unguarded", "app.users")],
    )
    .await;
    planted(
        "grant select on app.orgs to palisade_app;
         grant select (name) on app.projects to palisade_worker;",
        "revoke select on app.orgs from palisade_app;
         revoke select (name) on app.projects from palisade_worker;",
        &[
            ("stranger_grant", "app.orgs"),
            ("stranger_grant", "app.projects.name"),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_view_without_security_invoker_is_reported() {
    planted(
        "create view app.leaky_view as select id, name from app.orgs",
        "drop view app.leaky_view",
        &[("view_not_invoker", "app.leaky_view")],
    )
    .await;
}

/// Every role plant, in this one test: a runtime role with BYPASSRLS, one that can
/// become the schema owner, and a login role in two lanes. Reported, then gone once
/// the roles are dropped.
#[tokio::test]
async fn runtime_role_findings_are_reported_and_gone_with_the_roles() {
    let _roles = ROLES.lock().await;
    let db_name = fresh_database().await;
    let su = connect_as(db::embedded::SUPERUSER, "postgres").await;
    let suffix = &Uuid::new_v4().simple().to_string()[..12];
    let bypass = format!("audit_bypass_{suffix}");
    let owner = format!("audit_owner_{suffix}");
    let crossing = format!("audit_crossing_{suffix}");
    let plant = format!(
        "create role {bypass} login bypassrls in role palisade_runtime;
         create role {owner} login in role palisade_owner, palisade_jobs;
         create role {crossing} login in role palisade_runtime, palisade_credentials;"
    );
    let drop = format!("drop role if exists {bypass}, {owner}, {crossing}");
    let planted = su.batch_execute(&plant).await;
    let with_roles = if planted.is_ok() {
        Some(report_of(&db_name).await)
    } else {
        None
    };
    // Dropped before any assertion, so a failure here never leaves them behind.
    su.batch_execute(&drop).await.unwrap();
    planted.expect("plant the roles");
    let with_roles = with_roles.unwrap();
    let without = report_of(&db_name).await;

    let checks_for = |role: &str| -> BTreeSet<String> {
        with_roles
            .findings
            .iter()
            .filter(|f| f.object == role)
            .map(|f| f.check.clone())
            .collect()
    };
    // Each also lacks the lane's timeouts (role_timeout): they are new login roles.
    let set = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        checks_for(&bypass),
        set(&["runtime_bypass", "role_timeout"])
    );
    assert_eq!(checks_for(&owner), set(&["runtime_bypass", "role_timeout"]));
    assert_eq!(
        checks_for(&crossing),
        set(&["lane_crossing", "role_timeout"])
    );
    let detail = |check: &str, role: &str| {
        with_roles
            .findings
            .iter()
            .find(|f| f.check == check && f.object == role)
            .map(|f| f.detail.clone())
            .unwrap_or_default()
    };
    assert!(detail("runtime_bypass", &bypass).contains("BYPASSRLS"));
    assert!(detail("runtime_bypass", &owner).contains("owner of schema app"));
    assert!(
        detail("lane_crossing", &crossing).contains("palisade_credentials and palisade_runtime")
    );
    // The role that can become the owner may also write org_id everywhere, as the owner
    // can: reported per tenant table (INSERT and UPDATE). Nothing else was found.
    let tenant_tables: BTreeSet<String> = crate::attacks::tenant_tables(&su_in(&db_name).await)
        .await
        .into_iter()
        .collect();
    let mut writable = BTreeSet::new();
    for f in &with_roles.findings {
        if [&bypass, &owner, &crossing].contains(&&f.object) {
            continue;
        }
        assert!(
            f.check == "org_id_writable" && f.detail.starts_with(&format!("{owner} may ")),
            "unexpected: {f}"
        );
        writable.insert(f.object.clone());
    }
    assert_eq!(writable, tenant_tables);
    // With the roles gone, nothing is found.
    assert_eq!(without.findings, Vec::<audit::Finding>::new());
}

async fn su_in(db_name: &str) -> tokio_postgres::Client {
    connect_as(db::embedded::SUPERUSER, db_name).await
}

/// `palisade audit --format json` against database `db_name` over the cluster's socket:
/// (exit code, parsed report).
async fn run_cli(db_name: &str, format: &str) -> (Option<i32>, String) {
    let socket = cluster().socket_dir().display().to_string();
    let url = |user: &str| format!("postgresql:///{db_name}?host={socket}&port=5432&user={user}");
    let data_dir = crate::helpers::TempDir::new("palisade-audit-cli");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade"));
    command
        .args(["audit", "--format", format])
        .env("DATABASE_URL", url(db::RUNTIME_LOGIN_ROLE))
        .env("DATABASE_OWNER_URL", url(db::OWNER_ROLE))
        .env("PALISADE_DATA_DIR", &data_dir.0)
        .env("RUST_LOG", "warn");
    for var in [
        "DATABASE_AUTH_URL",
        "DATABASE_WORKER_URL",
        "PALISADE_ENV",
        "LOG_FORMAT",
    ] {
        command.env_remove(var);
    }
    let out = command.output().await.expect("run the palisade binary");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.code().is_some(),
        "killed by a signal; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), stdout)
}

#[tokio::test]
async fn the_cli_exits_0_on_a_clean_database_and_1_on_a_finding() {
    let _roles = ROLES.lock().await;
    let db_name = fresh_database().await;
    let (code, stdout) = run_cli(&db_name, "json").await;
    let json: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(json["findings"], serde_json::json!([]), "{stdout}");
    assert!(json["tables"].as_array().is_some_and(|t| !t.is_empty()));
    assert_eq!(code, Some(0));

    // A per-database plant: a security definer function without a pinned search_path.
    connect_as(db::OWNER_ROLE, &db_name)
        .await
        .batch_execute(
            "create function app.cli_plant() returns integer
                 language sql security definer as $$ select 1 $$;
             comment on function app.cli_plant() is 'planted by the audit test';
             revoke all on function app.cli_plant() from public;",
        )
        .await
        .unwrap();
    let (code, stdout) = run_cli(&db_name, "json").await;
    let json: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        json["findings"],
        serde_json::json!([{
            "check": "definer_search_path",
            "object": "app.cli_plant()",
            "detail": "security definer without a pinned search_path (or with public/$user in it)",
        }]),
        "{stdout}"
    );
    assert_eq!(code, Some(1));
    let (code, text) = run_cli(&db_name, "text").await;
    assert_eq!(code, Some(1));
    assert!(
        text.contains("FINDING definer_search_path: app.cli_plant()"),
        "{text}"
    );
}
