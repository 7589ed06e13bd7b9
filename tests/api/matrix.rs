//! The attack matrix: generated, not listed. Its case count grows by itself with every
//! new table (from the catalog) and every new route (from the committed openapi.json).
//!
//! * SQL: every table with an org_id column x {select, insert, update, delete} x nine
//!   contexts of the request role (palisade_app): another org's valid context, none,
//!   reset ('') settings, malformed values, V's org forged with set_config, a context
//!   left session-level by a previous transaction on the same connection, another org's
//!   API key (in its own org, and naming V's), and an API key's context of V's forged
//!   with set_config -- against V's real rows. A leak: a victim row returned, or a victim
//!   row inserted, changed or deleted (the superuser compares V's rows of that table after
//!   each case). A table without an org_id column is no case here (nor is a victim row
//!   of it required): the definer-only ones -- app.api_key_secrets,
//!   app.login_attempts, app.password_reset_requests, app.context_key -- grant the runtime
//!   roles nothing at all, so every statement on them is refused (42501) before a row is
//!   read (app.rate_limits, which carries org_id for metering since V10, is such a table
//!   and a case here); the public plan catalogue (app.plans, app.plan_limits) is readable
//!   by design and written by no runtime role (isolation.rs). S1 (attacks.rs) tries V's key secrets and rate-limit buckets under every forged
//!   context, and the secrets of V's keys are part of V's data compared after all cases.
//! * HTTP: every operation of openapi.json x {a user of another org, no credentials, V's
//!   lowest role (viewer), an API key of another org (X-API-Key), V's key with the lowest
//!   role (viewer, as Authorization: Bearer pal_...), a revoked key of V (X-API-Key)},
//!   with V's real ids in every path parameter and a schema-valid request body generated
//!   from the operation's requestBody schema. A leak: for the other org's user, anything
//!   but 404 under /v1/orgs/{org_id}; for no credentials, anything but 401 on a secured
//!   operation; for the viewer, a 2xx on a mutating method under /v1/orgs/{org_id}; for
//!   every key, anything but 403 `api_key_not_allowed` on a secured operation that takes
//!   no API key (its security lists no apiKeyAuth); on one that does: for the other
//!   org's key anything but 404, for V's viewer key anything but 403 on a write and 200 on
//!   a read (a control: the key works; 403 `forbidden` on the reads only an admin key may
//!   make, [`ADMIN_KEY_READS`]), for the revoked key anything but 401; for anyone
//!   outside V, a response body carrying one of V's ids, emails, project names or key
//!   names and secrets; and for everyone, a status the operation does not declare.
//!
//! After all cases V's data (per-table counts and checksums) must be unchanged.

use std::collections::{BTreeMap, HashSet};

use palisade::db::Lane;
use regex::Regex;
use reqwest::Method;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, types::ToSql};
use uuid::Uuid;

use crate::{
    attacks::{
        CONTEXT_SETTINGS, Forge, Tenants, forge_sql, set_key_context, state_diff, tenants,
        victim_state,
    },
    helpers::{Part, Signup, TestApp, multipart, spawn_app},
};

/// `PALISADE_MATRIX_VERBOSE=1`: print every case and its outcome.
fn verbose() -> bool {
    std::env::var("PALISADE_MATRIX_VERBOSE").is_ok_and(|v| v == "1")
}

#[tokio::test]
async fn attack_matrix() {
    let app = spawn_app().await;
    let t = tenants(&app).await;
    let (sql_cases, http_cases, leaks) = run(&app, &t).await;
    let cases = sql_cases + http_cases;
    println!("attack matrix, SQL part: {sql_cases} cases");
    println!("attack matrix, HTTP part: {http_cases} cases");
    println!("attack matrix: {cases} cases, {} leaks", leaks.len());
    assert!(
        leaks.is_empty(),
        "{} leaks in {cases} cases:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

/// The matrix itself, against holes planted on purpose in this test's database: each
/// kind of leak it looks for is reported.
#[tokio::test]
async fn the_matrix_reports_planted_holes() {
    let app = spawn_app().await;
    let t = tenants(&app).await;
    let owner = app.sql_as("palisade_owner").await;
    // SQL: the tenant guards of app.projects gone (the permissive policies remain: any
    // viewer of any org -- or any key's context -- now passes them). And app.api_keys
    // without its guards, its admin policy replaced by one for API keys: only a key's
    // context passes it, so only the key contexts can report it.
    owner
        .batch_execute(
            "drop policy projects_guard on app.projects;
             drop policy projects_guard_runtime on app.projects;
             drop policy api_keys_guard on app.api_keys;
             drop policy api_keys_guard_runtime on app.api_keys;
             drop policy api_keys_select_admin on app.api_keys;
             create policy planted_api_keys_select_key on app.api_keys for select
                 using ((select app.current_api_key_id()) is not null);",
        )
        .await
        .unwrap();
    // SQL and HTTP: a key's context statement that trusts the org it is given (the org
    // of the route) instead of the key's own.
    let definition: String = owner
        .query_one(
            "select pg_get_functiondef('app.set_api_key_context(text, uuid, jsonb)'::regprocedure)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut planted = definition.clone();
    for (from, to) in [
        (
            "if p_org_id is distinct from v_org then",
            "if p_org_id is null then",
        ),
        (
            "perform app.bind_context(null, null, v_org, v_role, v_key);",
            "perform app.bind_context(null, null, p_org_id, v_role, v_key);",
        ),
    ] {
        assert_eq!(
            planted.matches(from).count(),
            1,
            "app.set_api_key_context changed: teach this test where to plant its hole ({from})"
        );
        planted = planted.replace(from, to);
    }
    owner.batch_execute(&planted).await.unwrap();
    // HTTP: A quietly a viewer of V, V's viewer quietly an admin, and V's viewer key
    // quietly an admin key.
    let su = app.sql_superuser().await;
    crate::fixtures::add_member_with(&su, t.victim_org(), t.attacker.user_id, "viewer").await;
    su.execute(
        "update app.memberships set role = 'admin' where org_id = $1 and user_id = $2",
        &[&t.victim_org(), &t.victim.viewer.user_id],
    )
    .await
    .unwrap();
    su.execute(
        "update app.api_keys set role = 'admin' where id = $1",
        &[&t.victim_viewer_key.id],
    )
    .await
    .unwrap();
    let (_, _, leaks) = run(&app, &t).await;
    // (How many of V's projects: the planted HTTP holes add and delete some first.)
    let expected = [
        "SQL app.projects Select with OtherOrg: returned",
        "SQL app.projects Update with OtherOrg: updated",
        "SQL app.projects Update with OtherOrg: V's rows changed",
        "SQL app.projects Select with OtherOrgKey: returned",
        "SQL app.projects Update with OtherOrgKey: updated",
        "SQL app.api_keys Select with OtherOrgKey: returned 3 of V's rows",
        "SQL app.api_keys Select with OtherOrgKeyNamingVictim: returned 3 of V's rows",
        "with OtherOrgKeyNamingVictim: A's key naming V bound role admin in V",
        "SQL app.memberships Select with OtherOrgKeyNamingVictim: returned",
        "as OtherOrgUser -> 200: another org's user must get 404 here",
        "as OtherOrgUser -> 403: another org's user must get 404 here",
        "(list_orgs) as OtherOrgUser -> 200: the response carries V's",
        "(update_org) as VictimViewer -> 200: V's viewer changed V",
        "(get_org) as OtherOrgKey -> 200: another org's API key must get 404 here",
        "(list_members) as OtherOrgKey -> 200: another org's API key must get 404 here",
        "(list_members) as OtherOrgKey -> 200: the response carries V's",
        "(create_project) as VictimViewerKey -> 201: V's viewer key changed V",
        "after all cases, V's data changed: app.projects",
        "after all cases, V's data changed: app.orgs (V)",
    ];
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|e| !leaks.iter().any(|l| l.contains(e)))
        .collect();
    assert!(
        missing.is_empty(),
        "not reported: {missing:#?}\nreported ({}):\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    // And nothing where nothing was planted: the other tables, the other contexts --
    // except A's own (planted) membership of V, which A rightly sees in A's context, A's
    // key naming V, which the planted context statement makes V's admin, and the keys
    // the planted policy shows a key's context (not a user's, nor a forged key's).
    let stray: Vec<&String> = leaks
        .iter()
        .filter(|l| l.starts_with("SQL ") && !l.starts_with("SQL app.projects"))
        .filter(|l| *l != "SQL app.memberships Select with OtherOrg: returned 1 of V's rows")
        .filter(|l| !l.contains(" with OtherOrgKeyNamingVictim: "))
        .filter(|l| !l.starts_with("SQL app.api_keys Select with OtherOrgKey: returned "))
        .collect();
    assert!(stray.is_empty(), "{stray:#?}");
}

/// Both parts (HTTP first: the SQL part's inserts copy V's rows into A's org where A may
/// insert -- A's own data then, but a response listing it would read like V's), then V's
/// data compared with before. Returns (SQL cases, HTTP cases, leaks).
async fn run(app: &TestApp, t: &Tenants) -> (usize, usize, Vec<String>) {
    let su = app.sql_superuser().await;
    // The viewer is one of the HTTP identities: their own account and sessions change
    // by their own hand (sign-out, new sessions). So is V's viewer key: its requests
    // record its last use. Everything else of V's org is compared.
    let skip = [t.victim.viewer.user_id, t.victim_viewer_key.id];
    let before = victim_state(&su, t, &skip).await;
    let (http_cases, mut leaks) = http_matrix(app, t).await;
    let (sql_cases, sql_leaks) = sql_matrix(app, t).await;
    leaks.extend(sql_leaks);
    let after = victim_state(&su, t, &skip).await;
    leaks.extend(
        state_diff(&before, &after)
            .into_iter()
            .map(|d| format!("after all cases, V's data changed: {d}")),
    );
    (sql_cases, http_cases, leaks)
}

// ---------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SqlContext {
    /// A's real context, in A's own org.
    OtherOrg,
    /// No context statement at all.
    Nothing,
    /// Every context setting set to ''.
    Reset,
    /// Values of the wrong shape ('not-a-uuid', ...).
    Malformed,
    /// V's org, owner, session and role written with set_config.
    ForgedVictim,
    /// A previous transaction on the connection (A's real one) left V's values and its
    /// own MAC session-level.
    LeftSessionLevel,
    /// The real context of A's API key, in A's org.
    OtherOrgKey,
    /// A's API key naming V's org: a key's context with no org.
    OtherOrgKeyNamingVictim,
    /// An API key's context in V (no user, V's org, the admin role, one of V's keys)
    /// written with set_config.
    ForgedVictimKey,
}

const SQL_CONTEXTS: [SqlContext; 9] = [
    SqlContext::OtherOrg,
    SqlContext::Nothing,
    SqlContext::Reset,
    SqlContext::Malformed,
    SqlContext::ForgedVictim,
    SqlContext::LeftSessionLevel,
    SqlContext::OtherOrgKey,
    SqlContext::OtherOrgKeyNamingVictim,
    SqlContext::ForgedVictimKey,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Select,
    Insert,
    Update,
    Delete,
}

const OPS: [Op; 4] = [Op::Select, Op::Insert, Op::Update, Op::Delete];

struct Column {
    name: String,
    ty: String,
    select: bool,
    insert: bool,
    update: bool,
    primary_key: bool,
}

struct Table {
    name: String,
    columns: Vec<Column>,
    /// A row of V's, copied with its identity changed: what an insert tries.
    candidate: Value,
}

impl Table {
    /// The names (quoted) of the columns `pick` chooses.
    fn cols(&self, pick: impl Fn(&Column) -> bool) -> Vec<String> {
        self.columns
            .iter()
            .filter(|c| pick(c))
            .map(|c| format!("\"{}\"", c.name.replace('"', "\"\"")))
            .collect()
    }
}

/// A table's columns and the request role's privileges on each, from the catalog.
async fn describe(su: &Client, table: &str, t: &Tenants) -> Table {
    let columns: Vec<Column> = su
        .query(
            "select a.attname::text, format_type(a.atttypid, a.atttypmod),
                    has_column_privilege('palisade_app', a.attrelid, a.attname, 'SELECT'),
                    has_column_privilege('palisade_app', a.attrelid, a.attname, 'INSERT'),
                    has_column_privilege('palisade_app', a.attrelid, a.attname, 'UPDATE'),
                    exists (select 1 from pg_index i where i.indrelid = a.attrelid and i.indisprimary
                                                      and a.attnum = any(i.indkey))
               from pg_attribute a
              where a.attrelid = $1::text::regclass and a.attnum > 0 and not a.attisdropped
              order by a.attnum",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| Column {
            name: r.get(0),
            ty: r.get(1),
            select: r.get(2),
            insert: r.get(3),
            update: r.get(4),
            primary_key: r.get(5),
        })
        .collect();
    let victim_rows: i64 = su
        .query_one(
            &format!("select count(*) from {table} where org_id = $1"),
            &[&t.victim_org()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        victim_rows > 0,
        "{table} has no row of the victim org: give V one in attacks::tenants(), \
         or this table's cases prove nothing"
    );
    let row: Value = su
        .query_one(
            &format!("select to_jsonb(x) from {table} x where x.org_id = $1 limit 1"),
            &[&t.victim_org()],
        )
        .await
        .unwrap()
        .get(0);
    // Change the row's identity (its primary key, but not org_id): a new id, or the
    // attacker where the key names a user -- "put me into V".
    let mut candidate = row.as_object().unwrap().clone();
    for c in columns
        .iter()
        .filter(|c| c.primary_key && c.name != "org_id")
    {
        let value = if c.name == "user_id" || c.name.ends_with("_user_id") {
            json!(t.attacker.user_id)
        } else if c.ty == "uuid" {
            json!(Uuid::new_v4())
        } else if matches!(c.ty.as_str(), "bigint" | "integer" | "smallint") {
            json!(i32::MAX - (Uuid::new_v4().as_u128() % 1_000_000) as i32)
        } else if c.ty == "text" {
            json!(format!("matrix-{}", Uuid::new_v4().simple()))
        } else if c.ty == "date" {
            json!(format!("19{:02}-01-01", Uuid::new_v4().as_u128() % 100))
        } else {
            panic!(
                "{table}: teach the matrix a new identity for primary key column {} ({})",
                c.name, c.ty
            )
        };
        candidate.insert(c.name.clone(), value);
    }
    Table {
        name: table.to_owned(),
        columns,
        candidate: Value::Object(candidate),
    }
}

/// A statement in a savepoint: rows affected, or the error.
async fn try_execute(
    c: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    c.batch_execute("savepoint matrix").await.unwrap();
    let result = c.execute(sql, params).await;
    let end = if result.is_ok() {
        "release savepoint matrix"
    } else {
        "rollback to savepoint matrix"
    };
    c.batch_execute(end).await.unwrap();
    result
}

async fn try_query(
    c: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    c.batch_execute("savepoint matrix").await.unwrap();
    let result = c.query(sql, params).await;
    let end = if result.is_ok() {
        "release savepoint matrix"
    } else {
        "rollback to savepoint matrix"
    };
    c.batch_execute(end).await.unwrap();
    result
}

/// Count and checksum of V's rows in `table`.
async fn victim_rows(su: &Client, table: &str, org: Uuid) -> String {
    su.query_one(
        &format!(
            "select count(*)::text || ':' || coalesce(md5(string_agg(x::text, ',' order by x::text)), '-')
               from {table} x where x.org_id = $1"
        ),
        &[&org],
    )
    .await
    .unwrap()
    .get(0)
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no sqlstate: {e}"))
}

async fn sql_matrix(app: &TestApp, t: &Tenants) -> (usize, Vec<String>) {
    let su = app.sql_superuser().await;
    let rt = app.sql_runtime().await;
    let org = t.victim_org();
    // A live session of A's own (the HTTP part signed A's earlier ones out).
    let auth = app.sql_lane(Lane::Credentials).await;
    let a = &Signup {
        user_id: t.attacker.user_id,
        org_id: t.attacker.org_id,
        email: t.attacker.email.clone(),
        token: mint_token(app, &auth, t.attacker.user_id).await,
    };
    let owner_sid = app.session_proof(&t.victim.owner).0;
    let victim_values = [
        ("app.current_user_id", t.victim.owner.user_id.to_string()),
        ("app.current_session_id", owner_sid.to_string()),
        ("app.current_org_id", org.to_string()),
        ("app.current_org_role", "owner".to_owned()),
    ];
    let victim_key_values = [
        ("app.current_user_id", String::new()),
        ("app.current_session_id", String::new()),
        ("app.current_org_id", org.to_string()),
        ("app.current_org_role", "admin".to_owned()),
        ("app.current_api_key_id", t.victim_key.id.to_string()),
    ];
    let mut tables = Vec::new();
    for name in crate::attacks::tenant_tables(&su).await {
        tables.push(describe(&su, &name, t).await);
    }
    assert!(!tables.is_empty(), "no table with an org_id column?");

    let mut cases = 0;
    let mut leaks = Vec::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for table in &tables {
        let name = &table.name;
        let selectable = table.cols(|c| c.select);
        let insertable = table.cols(|c| c.insert);
        let updatable = table.cols(|c| c.update);
        // V's rows as the superuser sees them, projected on what the request role may
        // select: a returned row equal to one of these is V's row.
        let victim_projection: HashSet<String> = if selectable.is_empty() {
            HashSet::new()
        } else {
            su.query(
                &format!(
                    "select to_jsonb(x)::text from (select {} from {name} where org_id = $1) x",
                    selectable.join(", ")
                ),
                &[&org],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
        };
        let mut baseline = victim_rows(&su, name, org).await;
        for op in OPS {
            for ctx in SQL_CONTEXTS {
                cases += 1;
                let case = format!("SQL {name} {op:?} with {ctx:?}");
                // The context.
                if ctx == SqlContext::LeftSessionLevel {
                    rt.batch_execute("begin").await.unwrap();
                    app.set_context(&rt, a, Some(a.org_id)).await;
                    let mac: String = rt
                        .query_one("select current_setting('app.context_mac')", &[])
                        .await
                        .unwrap()
                        .get(0);
                    let mut left: Vec<(&str, String)> = victim_values.to_vec();
                    left.push(("app.context_mac", mac));
                    rt.batch_execute(&forge_sql(Forge::SetConfigSession, &left))
                        .await
                        .unwrap();
                    rt.batch_execute("commit").await.unwrap();
                }
                rt.batch_execute("begin").await.unwrap();
                match ctx {
                    SqlContext::OtherOrg => {
                        app.set_context(&rt, a, Some(a.org_id)).await;
                    }
                    SqlContext::Nothing | SqlContext::LeftSessionLevel => {}
                    SqlContext::Reset => {
                        let reset: Vec<(&str, String)> = CONTEXT_SETTINGS
                            .iter()
                            .map(|k| (*k, String::new()))
                            .collect();
                        rt.batch_execute(&forge_sql(Forge::SetConfigLocal, &reset))
                            .await
                            .unwrap();
                    }
                    SqlContext::Malformed => {
                        let bad: Vec<(&str, String)> = CONTEXT_SETTINGS
                            .iter()
                            .map(|k| (*k, format!("not-a-{}", k.trim_start_matches("app."))))
                            .collect();
                        rt.batch_execute(&forge_sql(Forge::SetConfigLocal, &bad))
                            .await
                            .unwrap();
                    }
                    SqlContext::ForgedVictim => {
                        rt.batch_execute(&forge_sql(Forge::SetConfigLocal, &victim_values))
                            .await
                            .unwrap();
                    }
                    SqlContext::OtherOrgKey => {
                        let role = set_key_context(&rt, &t.attacker_key, a.org_id).await;
                        assert_eq!(
                            role.as_deref(),
                            Some("admin"),
                            "control: A's key in A's org"
                        );
                    }
                    SqlContext::OtherOrgKeyNamingVictim => {
                        if let Some(role) = set_key_context(&rt, &t.attacker_key, org).await {
                            leaks.push(format!("{case}: A's key naming V bound role {role} in V"));
                        }
                    }
                    SqlContext::ForgedVictimKey => {
                        rt.batch_execute(&forge_sql(Forge::SetConfigLocal, &victim_key_values))
                            .await
                            .unwrap();
                    }
                }
                // The attack.
                let mut results: Vec<Result<u64, tokio_postgres::Error>> = Vec::new();
                match op {
                    Op::Select => {
                        let sql = if selectable.is_empty() {
                            format!("select 'count:' || count(*) from {name}")
                        } else {
                            format!(
                                "select to_jsonb(x)::text from (select {} from {name}) x",
                                selectable.join(", ")
                            )
                        };
                        match try_query(&rt, &sql, &[]).await {
                            Ok(rows) => {
                                let seen: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                                let theirs = seen
                                    .iter()
                                    .filter(|r| {
                                        victim_projection.contains(*r)
                                            || (selectable.is_empty() && *r != "count:0")
                                    })
                                    .count();
                                if theirs > 0 {
                                    leaks.push(format!("{case}: returned {theirs} of V's rows"));
                                }
                                results.push(Ok(seen.len() as u64));
                            }
                            Err(e) => results.push(Err(e)),
                        }
                    }
                    Op::Insert => {
                        // The whole row, then the columns the role may insert.
                        let full = format!(
                            "insert into {name} select * from jsonb_populate_record(null::{name}, $1)"
                        );
                        results.push(try_execute(&rt, &full, &[&table.candidate]).await);
                        let cols = if insertable.is_empty() {
                            format!("insert into {name} default values")
                        } else {
                            let cols = insertable.join(", ");
                            format!(
                                "insert into {name} ({cols}) select {cols} from jsonb_populate_record(null::{name}, $1)"
                            )
                        };
                        let params: Vec<&(dyn ToSql + Sync)> = if insertable.is_empty() {
                            vec![]
                        } else {
                            vec![&table.candidate]
                        };
                        results.push(try_execute(&rt, &cols, &params).await);
                    }
                    Op::Update => {
                        let col = updatable.first().map_or("org_id", String::as_str);
                        let touched = try_execute(
                            &rt,
                            &format!("update {name} set {col} = {col} where org_id = $1"),
                            &[&org],
                        )
                        .await;
                        if let Ok(n) = &touched
                            && *n > 0
                        {
                            leaks.push(format!("{case}: updated {n} of V's rows"));
                        }
                        results.push(touched);
                        // Moving rows into V is writing into V.
                        let moved = try_execute(
                            &rt,
                            &format!(
                                "update {name} set org_id = $1 where org_id is distinct from $1"
                            ),
                            &[&org],
                        )
                        .await;
                        if let Ok(n) = &moved
                            && *n > 0
                        {
                            leaks.push(format!("{case}: moved {n} rows into V"));
                        }
                        results.push(moved);
                    }
                    Op::Delete => {
                        let deleted = try_execute(
                            &rt,
                            &format!("delete from {name} where org_id = $1"),
                            &[&org],
                        )
                        .await;
                        if let Ok(n) = &deleted
                            && *n > 0
                        {
                            leaks.push(format!("{case}: deleted {n} of V's rows"));
                        }
                        results.push(deleted);
                    }
                }
                if verbose() {
                    let shown: Vec<String> = results
                        .iter()
                        .map(|r| match r {
                            Ok(n) => format!("ok({n})"),
                            Err(e) => sqlstate(e),
                        })
                        .collect();
                    println!("{case}: {shown:?}");
                }
                for r in &results {
                    let key = match r {
                        Ok(_) => format!("{op:?}: ok"),
                        Err(e) => format!("{op:?}: {}", sqlstate(e)),
                    };
                    *outcomes.entry(key).or_default() += 1;
                }
                rt.batch_execute("commit; reset all").await.unwrap();
                let now = victim_rows(&su, name, org).await;
                if now != baseline {
                    leaks.push(format!("{case}: V's rows changed: {baseline} -> {now}"));
                    baseline = now;
                }
            }
        }
    }
    println!(
        "attack matrix, SQL part: {} tables ({}) x {} operations x {} contexts; outcomes {outcomes:?}",
        tables.len(),
        tables
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        OPS.len(),
        SQL_CONTEXTS.len()
    );
    (cases, leaks)
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Identity {
    /// A, signed in, a member of another org only.
    OtherOrgUser,
    /// No Authorization header.
    NoCredentials,
    /// V's viewer: the lowest role in V.
    VictimViewer,
    /// An API key of A's org (role admin), as `X-API-Key`.
    OtherOrgKey,
    /// V's API key with the lowest role (viewer), as `Authorization: Bearer pal_...`.
    VictimViewerKey,
    /// A revoked API key of V, as `X-API-Key`.
    RevokedVictimKey,
}

const IDENTITIES: [Identity; 6] = [
    Identity::OtherOrgUser,
    Identity::NoCredentials,
    Identity::VictimViewer,
    Identity::OtherOrgKey,
    Identity::VictimViewerKey,
    Identity::RevokedVictimKey,
];

impl Identity {
    fn is_key(self) -> bool {
        matches!(
            self,
            Identity::OtherOrgKey | Identity::VictimViewerKey | Identity::RevokedVictimKey
        )
    }

    /// V's own: responses may carry V's data.
    fn is_victim(self) -> bool {
        matches!(self, Identity::VictimViewer | Identity::VictimViewerKey)
    }
}

/// Reads that take an API key with the admin role only (the audit log): V's viewer key
/// gets 403 `forbidden` there, which is its control (the key authenticated, in V, as a
/// viewer).
const ADMIN_KEY_READS: [&str; 2] = ["list_audit_log", "export_audit_log"];

/// Operations on assistant conversations, which are private to whoever started them
/// (not role-governed): V's viewer key did not start the one the matrix names -- a V
/// member's -- so it must get 404 there, reading or writing (its control: the list of
/// its own, `list_assistant_conversations`, answers 200). The chat's body names a
/// workspace conversation of V, which is no assistant conversation of the key's: 404.
/// Operations on the caller's own data in an organization (a member's own LLM key): V's
/// viewer may change it -- only its own row, which the final comparison leaves out.
const OWN_DATA: [&str; 2] = ["set_my_llm_key", "delete_my_llm_key"];

const PRIVATE_TO_STARTER: [&str; 4] = [
    "assistant_chat",
    "get_assistant_conversation",
    "list_assistant_messages",
    "delete_assistant_conversation",
];

/// The committed document, parsed.
fn spec() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"))
        .expect("the committed openapi.json");
    serde_json::from_str(&text).expect("openapi.json is JSON")
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let path = r
                .strip_prefix("#/")
                .unwrap_or_else(|| panic!("only local $refs: {r}"));
            let mut node = spec;
            for part in path.split('/') {
                node = &node[part];
            }
            assert!(!node.is_null(), "unresolved $ref {r}");
            resolve(spec, node)
        }
        None => schema,
    }
}

/// V's ids, by the name of the parameter or property that carries them.
struct Ids {
    by_name: BTreeMap<&'static str, Uuid>,
    /// Path parameters that are not ids (a meter's key).
    keys: BTreeMap<&'static str, String>,
    /// Path parameters only (never a body property of that name): a secret's name.
    path_keys: BTreeMap<&'static str, String>,
}

impl Ids {
    fn get(&self, name: &str) -> Option<Uuid> {
        self.by_name.get(name).copied()
    }
}

/// Values the generator tries, in order, for a string with a pattern.
fn string_candidates() -> Vec<String> {
    let hex = &Uuid::new_v4().simple().to_string()[..12];
    vec![
        format!("matrix-{hex}"),
        format!("Matrix {hex}"),
        format!("matrix{hex}"),
        format!("matrix-{hex}@example.com"),
    ]
}

/// A schema-valid value for `schema`: every property (required or not, so updates
/// change something), enums (their last value: the highest role), formats uuid (V's id
/// of that name when there is one), email, date-time and password, lengths, patterns.
fn generate(spec: &Value, schema: &Value, name: &str, ids: &Ids) -> Value {
    let schema = resolve(spec, schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        let mut merged = Map::new();
        for part in all {
            match generate(spec, part, name, ids) {
                Value::Object(o) => merged.extend(o),
                other if all.len() == 1 => return other,
                other => panic!("allOf of non-objects at {name}: {other}"),
            }
        }
        return Value::Object(merged);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(first) = schema.get(key).and_then(|v| v.get(0)) {
            return generate(spec, first, name, ids);
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.last().expect("a non-empty enum").clone();
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or(
        if schema.get("properties").is_some() {
            "object"
        } else {
            "string"
        },
    );
    match ty {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (prop, sub) in props {
                    if resolve(spec, sub)["readOnly"] == json!(true) {
                        continue;
                    }
                    out.insert(prop.clone(), generate(spec, sub, prop, ids));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let n = schema["minItems"].as_u64().unwrap_or(1).max(1);
            Value::Array(
                (0..n)
                    .map(|_| generate(spec, &schema["items"], name, ids))
                    .collect(),
            )
        }
        "integer" | "number" => {
            let min = schema["minimum"].as_f64().unwrap_or(1.0);
            let max = schema["maximum"].as_f64().unwrap_or(f64::MAX);
            json!(min.max(1.0f64.min(max)) as i64)
        }
        "boolean" => json!(true),
        "string" => Value::String(generate_string(schema, name, ids)),
        other => panic!("teach the generator type {other} ({name})"),
    }
}

fn generate_string(schema: &Value, name: &str, ids: &Ids) -> String {
    if let Some(key) = ids.keys.get(name) {
        return key.clone();
    }
    let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
    let max = schema["maxLength"].as_u64().unwrap_or(10_000) as usize;
    let hex = Uuid::new_v4().simple().to_string();
    let value = match schema["format"].as_str() {
        Some("uuid") => return ids.get(name).unwrap_or_else(Uuid::new_v4).to_string(),
        // In the future: the date-times requests give are expiries (an API key's).
        Some("date-time") => {
            return (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
        }
        Some("email") => format!("matrix-{}@example.com", &hex[..12]),
        Some("password") => format!("Matrix-password-{hex}"),
        _ => {
            let fits = |s: &String| {
                let n = s.chars().count();
                n >= min
                    && n <= max
                    && schema["pattern"].as_str().is_none_or(|p| {
                        Regex::new(p)
                            .expect("the spec's pattern compiles")
                            .is_match(s)
                    })
            };
            string_candidates().into_iter().find(fits).unwrap_or_else(|| {
                panic!(
                    "teach the generator a string for {name}: minLength {min}, maxLength {max}, pattern {:?}",
                    schema["pattern"]
                )
            })
        }
    };
    let value: String = value.chars().take(max).collect();
    assert!(value.chars().count() >= min, "{name}: {value} too short");
    if let Some(p) = schema["pattern"].as_str() {
        assert!(
            Regex::new(p).unwrap().is_match(&value),
            "{name}: {value} !~ {p}"
        );
    }
    value
}

/// A new session of `user` and its access token, straight through the credential role
/// (no password hashing): each case gets a live one, whatever the previous case did.
async fn mint_token(app: &TestApp, auth: &Client, user: Uuid) -> String {
    let sid = Uuid::new_v4();
    let refresh = Sha256::digest(Uuid::new_v4().as_bytes()).to_vec();
    auth.execute(
        "select app.create_session($1, $2, interval '1 hour', 'attack-matrix', null, $3, $4)",
        &[&sid, &user, &refresh, &app.state.proofs.proof_hash(sid)],
    )
    .await
    .unwrap();
    app.state.jwt.issue(user, sid)
}

/// A generated form's fields as text (strings as they are, anything else as JSON).
fn form_fields(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .expect("a form is an object")
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect()
}

fn form_encode(v: &Value) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    form_fields(v)
        .into_iter()
        .map(|(k, v)| format!("{}={}", enc(&k), enc(&v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn http_matrix(app: &TestApp, t: &Tenants) -> (usize, Vec<String>) {
    let spec = spec();
    let auth = app.sql_lane(Lane::Credentials).await;
    let ids = Ids {
        by_name: BTreeMap::from([
            ("org_id", t.victim_org()),
            ("project_id", t.victim_projects[0].0),
            ("user_id", t.victim.owner.user_id),
            ("invitation_id", t.victim_invitation),
            ("session_id", app.session_proof(&t.victim.owner).0),
            ("key_id", t.victim_key.id),
            ("conversation_id", t.victim_conversation),
            ("document_id", t.victim_document),
            ("assistant_conversation_id", t.victim_assistant_conversation),
        ]),
        keys: BTreeMap::from([
            ("meter_key", t.victim_meter.clone()),
            ("meter", t.victim_meter.clone()),
        ]),
        // V's member's own secret (attacks::assistant_rows_sql).
        path_keys: BTreeMap::from([("name", "MINE".to_owned())]),
    };
    let secrets: Vec<String> = t
        .victim_secrets(app)
        .into_iter()
        .map(|s| s.to_lowercase())
        .collect();
    let global_security = spec["security"].as_array().is_some_and(|s| !s.is_empty());
    let mut cases = 0;
    let mut leaks = Vec::new();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let paths = spec["paths"].as_object().expect("paths");
    for (template, item) in paths {
        for (method_name, op) in item.as_object().unwrap() {
            let method = match method_name.as_str() {
                "get" => Method::GET,
                "put" => Method::PUT,
                "post" => Method::POST,
                "patch" => Method::PATCH,
                "delete" => Method::DELETE,
                "head" => Method::HEAD,
                "options" => Method::OPTIONS,
                "trace" => Method::TRACE,
                _ => continue, // "parameters", "summary", ...
            };
            let op_id = op["operationId"].as_str().unwrap_or(template);
            let declared: Vec<String> = op["responses"]
                .as_object()
                .map(|r| r.keys().cloned().collect())
                .unwrap_or_default();
            let security = op.get("security").or(spec.get("security"));
            let secured = match op.get("security") {
                Some(s) => s.as_array().is_some_and(|s| !s.is_empty()),
                None => global_security,
            };
            // The operation takes an API key: one of its security requirements is
            // apiKeyAuth.
            let takes_key = security
                .and_then(Value::as_array)
                .is_some_and(|reqs| reqs.iter().any(|r| r.get("apiKeyAuth").is_some()));
            let mutating = matches!(
                method,
                Method::POST | Method::PUT | Method::PATCH | Method::DELETE
            );
            let org_route = template.starts_with("/v1/orgs/{org_id}");
            for who in IDENTITIES {
                cases += 1;
                // The path with V's ids, the required query parameters, the body.
                let mut path = template.clone();
                let mut query = Vec::new();
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                for p in &params {
                    let p = resolve(&spec, p);
                    let pname = p["name"].as_str().unwrap();
                    match p["in"].as_str() {
                        Some("path") => {
                            let id = ids
                                .get(pname)
                                .map(|id| id.to_string())
                                .or_else(|| ids.keys.get(pname).cloned())
                                .or_else(|| ids.path_keys.get(pname).cloned())
                                .unwrap_or_else(|| {
                                    panic!("{op_id}: teach the matrix which of V's ids goes into path parameter {pname}")
                                });
                            path = path.replace(&format!("{{{pname}}}"), &id);
                        }
                        Some("query") if p["required"] == json!(true) => {
                            let v = generate(&spec, &p["schema"], pname, &ids);
                            let v = match v {
                                Value::String(s) => s,
                                other => other.to_string(),
                            };
                            query.push(format!("{pname}={v}"));
                        }
                        _ => {}
                    }
                }
                assert!(
                    !path.contains('{'),
                    "{op_id}: unfilled path parameter in {path}"
                );
                if !query.is_empty() {
                    path = format!("{path}?{}", query.join("&"));
                }
                let mut req = app
                    .http
                    .request(method.clone(), format!("{}{path}", app.base));
                if let Some(content) = op["requestBody"]["content"].as_object() {
                    if let Some(media) = content.get("application/json") {
                        let body = generate(&spec, &media["schema"], "body", &ids);
                        req = req.json(&body);
                    } else if let Some(media) = content.get("application/x-www-form-urlencoded") {
                        let body = generate(&spec, &media["schema"], "body", &ids);
                        req = req
                            .header("content-type", "application/x-www-form-urlencoded")
                            .body(form_encode(&body));
                    } else if let Some(media) = content.get("multipart/form-data") {
                        // Each property as a part; a `format: binary` one as a file.
                        let body = generate(&spec, &media["schema"], "body", &ids);
                        let props = &resolve(&spec, &media["schema"])["properties"];
                        let values: Vec<(String, String, bool)> = form_fields(&body)
                            .into_iter()
                            .map(|(k, v)| {
                                let file = props[&k]["format"] == "binary";
                                (k, v, file)
                            })
                            .collect();
                        let parts: Vec<Part<'_>> = values
                            .iter()
                            .map(|(k, v, file)| Part {
                                name: k,
                                filename: file.then_some("matrix.txt"),
                                content_type: file.then_some("text/plain"),
                                body: v.as_bytes(),
                            })
                            .collect();
                        let (content_type, body) = multipart(&parts);
                        req = req.header("content-type", content_type).body(body);
                    } else {
                        panic!(
                            "{op_id}: teach the matrix to generate {:?}",
                            content.keys().collect::<Vec<_>>()
                        );
                    }
                }
                match who {
                    Identity::OtherOrgUser => {
                        req = req.bearer_auth(mint_token(app, &auth, t.attacker.user_id).await);
                    }
                    Identity::VictimViewer => {
                        req =
                            req.bearer_auth(mint_token(app, &auth, t.victim.viewer.user_id).await);
                    }
                    Identity::NoCredentials => {}
                    Identity::OtherOrgKey => {
                        req = req.header("X-API-Key", &t.attacker_key.secret);
                    }
                    Identity::VictimViewerKey => {
                        req = req.bearer_auth(&t.victim_viewer_key.secret);
                    }
                    Identity::RevokedVictimKey => {
                        req = req.header("X-API-Key", &t.victim_revoked_key.secret);
                    }
                }
                let resp = app.send(req).await;
                let status = resp.status.as_u16();
                *statuses.entry(format!("{who:?} {status}")).or_default() += 1;
                let case = format!("HTTP {method} {template} ({op_id}) as {who:?} -> {status}");
                if verbose() {
                    println!("{case}: {}", resp.body);
                }
                if !declared
                    .iter()
                    .any(|d| d == &status.to_string() || d == "default")
                {
                    leaks.push(format!(
                        "{case}: status not declared in openapi.json (declared {declared:?}); body {}",
                        resp.body
                    ));
                }
                match who {
                    Identity::OtherOrgUser if org_route && status != 404 => {
                        leaks.push(format!(
                            "{case}: another org's user must get 404 here; body {}",
                            resp.body
                        ));
                    }
                    Identity::NoCredentials if secured && status != 401 => {
                        leaks.push(format!(
                            "{case}: a secured operation without credentials must be 401; body {}",
                            resp.body
                        ));
                    }
                    Identity::VictimViewer
                        if org_route
                            && mutating
                            && (200..300).contains(&status)
                            && !OWN_DATA.contains(&op_id) =>
                    {
                        leaks.push(format!("{case}: V's viewer changed V; body {}", resp.body));
                    }
                    // A key where the operation takes none.
                    _ if who.is_key()
                        && secured
                        && !takes_key
                        && (status != 403 || resp.body["code"] != "api_key_not_allowed") =>
                    {
                        leaks.push(format!(
                            "{case}: an API key must get 403 api_key_not_allowed here; body {}",
                            resp.body
                        ));
                    }
                    Identity::OtherOrgKey if takes_key && org_route && status != 404 => {
                        leaks.push(format!(
                            "{case}: another org's API key must get 404 here; body {}",
                            resp.body
                        ));
                    }
                    Identity::VictimViewerKey
                        if takes_key && org_route && mutating && (200..300).contains(&status) =>
                    {
                        leaks.push(format!(
                            "{case}: V's viewer key changed V; body {}",
                            resp.body
                        ));
                    }
                    Identity::VictimViewerKey
                        if takes_key
                            && org_route
                            && PRIVATE_TO_STARTER.contains(&op_id)
                            && (status != 404 || resp.body["code"] != "not_found") =>
                    {
                        leaks.push(format!(
                            "{case}: V's viewer key must get 404 here (another principal's private conversation); body {}",
                            resp.body
                        ));
                    }
                    Identity::VictimViewerKey if PRIVATE_TO_STARTER.contains(&op_id) => {}
                    Identity::VictimViewerKey
                        if takes_key && org_route && mutating && status != 403 =>
                    {
                        leaks.push(format!(
                            "{case}: V's viewer key must get 403 writing here; body {}",
                            resp.body
                        ));
                    }
                    Identity::VictimViewerKey
                        if takes_key
                            && org_route
                            && !mutating
                            && ADMIN_KEY_READS.contains(&op_id)
                            && (status != 403 || resp.body["code"] != "forbidden") =>
                    {
                        leaks.push(format!(
                            "{case}: V's viewer key must get 403 forbidden here (admin keys only); body {}",
                            resp.body
                        ));
                    }
                    // A control: the key works (else its other cases prove nothing).
                    Identity::VictimViewerKey
                        if takes_key
                            && org_route
                            && !mutating
                            && !ADMIN_KEY_READS.contains(&op_id)
                            && status != 200 =>
                    {
                        leaks.push(format!(
                            "{case}: V's viewer key must read V here; body {}",
                            resp.body
                        ));
                    }
                    Identity::RevokedVictimKey
                        if takes_key
                            && (status != 401 || resp.body["code"] != "api_key_revoked") =>
                    {
                        leaks.push(format!(
                            "{case}: a revoked key must get 401 api_key_revoked here; body {}",
                            resp.body
                        ));
                    }
                    _ => {}
                }
                if !who.is_victim() {
                    let text = resp.body.to_string().to_lowercase();
                    for s in &secrets {
                        if text.contains(s.as_str()) {
                            leaks.push(format!("{case}: the response carries V's {s:?}: {text}"));
                        }
                    }
                }
            }
        }
    }
    for op_id in ADMIN_KEY_READS
        .iter()
        .chain(&PRIVATE_TO_STARTER)
        .chain(&OWN_DATA)
    {
        assert!(
            paths.values().any(|item| item
                .as_object()
                .unwrap()
                .values()
                .any(|op| op["operationId"] == *op_id)),
            "ADMIN_KEY_READS names {op_id}, which openapi.json does not have"
        );
    }
    println!(
        "attack matrix, HTTP part: {} operations x {} identities; statuses {statuses:?}",
        cases / IDENTITIES.len(),
        IDENTITIES.len()
    );
    (cases, leaks)
}
