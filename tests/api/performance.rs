//! The request path's performance invariants that a test can hold without timing
//! anything: the list query is index-backed for the runtime role, with the policy
//! helpers evaluated once per statement (InitPlans), not per row.

use crate::attacks::create_key;
use crate::helpers::spawn_app;

#[tokio::test]
async fn list_query_is_index_backed_under_rls() {
    let app = spawn_app().await;
    let a = app.signup("Alice").await;
    app.create_project(&a, a.org_id, "alpha").await;
    let mut db = app.sql_runtime().await;
    let tx = db.transaction().await.unwrap();
    app.set_context(&tx, &a, Some(a.org_id)).await;
    // A tiny table would be scanned anyway; forbid that to see what the policies allow.
    tx.batch_execute("set local enable_seqscan = off; set local enable_bitmapscan = off")
        .await
        .unwrap();
    let plan: Vec<String> = tx
        .query(
            "explain (costs off) select id, org_id, name, description, created_at, updated_at
               from app.projects order by created_at, id limit 21",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index Cond: (org_id = $") && !plan.contains("Sort"),
        "the tenant guard must be an index condition, with no sort:\n{plan}"
    );
    assert!(
        plan.contains("InitPlan"),
        "context helpers run once per statement:\n{plan}"
    );
}

/// 16 tenants hammer one server in parallel -- through PgBouncer with 2 server
/// connections when PALISADE_TEST_PGBOUNCER=1 (benches/pgbouncer-tests.sh) -- and no
/// response may carry another tenant's row, or fail. Rounds per tenant:
/// PALISADE_TENANT_LOAD_ROUNDS (default 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_tenants_never_see_each_others_rows() {
    let mut settings = crate::helpers::settings();
    settings.pool_size = 16;
    let app = std::sync::Arc::new(
        crate::helpers::spawn_app_with(settings, crate::helpers::limits()).await,
    );
    let rounds: usize = std::env::var("PALISADE_TENANT_LOAD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut tenants = Vec::new();
    for i in 0..16 {
        let t = app.signup(&format!("Tenant{i}")).await;
        app.create_project(&t, t.org_id, &format!("secret-of-{i}"))
            .await;
        tenants.push(t);
    }
    let mut tasks = Vec::new();
    for (i, t) in tenants.into_iter().enumerate() {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let (mut foreign, mut failed) = (0usize, Vec::new());
            for round in 0..rounds {
                let list = app
                    .get(
                        &format!("/v1/orgs/{}/projects?limit=100", t.org_id),
                        &t.token,
                    )
                    .await;
                if list.status != 200 {
                    failed.push(format!("list {}: {}", list.status, list.body));
                    continue;
                }
                let items = list.body["items"].as_array().unwrap();
                // Its own first project is always there: an empty list would hide a leak.
                if !items.iter().any(|p| p["name"] == format!("secret-of-{i}")) {
                    failed.push(format!(
                        "list of tenant {i} lacks its own project: {}",
                        list.body
                    ));
                }
                for item in items {
                    let own = item["org_id"] == t.org_id.to_string()
                        && item["name"]
                            .as_str()
                            .unwrap()
                            .ends_with(&format!("-of-{i}"));
                    foreign += usize::from(!own);
                }
                if round % 5 == 0 {
                    let created = app
                        .post(
                            &format!("/v1/orgs/{}/projects", t.org_id),
                            &t.token,
                            serde_json::json!({"name": format!("r{round}-of-{i}")}),
                        )
                        .await;
                    if created.status != 201 {
                        failed.push(format!("create {}: {}", created.status, created.body));
                    } else if created.body["org_id"] != t.org_id.to_string() {
                        foreign += 1;
                    }
                }
            }
            (foreign, failed)
        }));
    }
    let (mut foreign, mut failed) = (0, Vec::new());
    for task in tasks {
        let (f, e) = task.await.unwrap();
        foreign += f;
        failed.extend(e);
    }
    assert_eq!(foreign, 0, "responses carried another tenant's rows");
    assert!(
        failed.is_empty(),
        "{} failed requests, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    eprintln!(
        "parallel tenants: 16 x {rounds} rounds, {} requests, 0 foreign rows, 0 failures",
        16 * (rounds + rounds.div_ceil(5))
    );
}

/// The list endpoint's one-round-trip path (Db::read_pipelined) fails closed like `begin()`: a
/// token verified (and cached) before its session was revoked gets 401 on the next
/// request, and the connection goes back to the pool clean for the next caller.
#[tokio::test]
async fn pipelined_read_refuses_a_revoked_session_and_keeps_the_pool_clean() {
    let mut settings = crate::helpers::settings();
    settings.pool_size = 1;
    let app = crate::helpers::spawn_app_with(settings, crate::helpers::limits()).await;
    let a = app.signup("Alice").await;
    let b = app.signup("Bob").await;
    app.create_project(&a, a.org_id, "alpha").await;
    let list_a = format!("/v1/orgs/{}/projects", a.org_id);
    app.get(&list_a, &a.token).await.assert_status(200);
    let sid = app.state.jwt.verify(&a.token).unwrap().sid;
    app.sql_superuser()
        .await
        .execute(
            "update app.sessions set revoked_at = now() where id = $1",
            &[&sid],
        )
        .await
        .unwrap();
    app.get(&list_a, &a.token)
        .await
        .assert_problem(401, "session_revoked");
    // The only pooled connection served the failed pipeline; it must be usable and
    // carry no context: Bob sees his (empty) org and nothing of Alice's.
    let body = app
        .get(&format!("/v1/orgs/{}/projects", b.org_id), &b.token)
        .await
        .assert_status(200)
        .clone();
    assert_eq!(body["items"].as_array().unwrap().len(), 0, "{body}");
    app.get(&list_a, &b.token)
        .await
        .assert_problem(404, "not_found");
}

/// PostgreSQL (before 18) caches no plan for a `language sql` function it cannot inline:
/// one with a SET clause or SECURITY DEFINER is parsed and planned again on every
/// statement that calls it. A policy runs its helpers on every statement of every
/// request, so none of them may be such a function (`app.hidden_projects()` was: 38 % of
/// the list transaction's backend CPU, benches/README-performance.md, issue 17). The
/// same holds for the helpers the limiter and the quota checks call on every request.
#[tokio::test]
async fn no_policy_or_per_request_helper_is_a_sql_function_planned_per_call() {
    let app = spawn_app().await;
    let mut db = app.sql_superuser().await;
    let rows = db
        .query(
            "select distinct p.proname::text
               from pg_proc p
               join pg_namespace n on n.oid = p.pronamespace
               join pg_language l on l.oid = p.prolang
              where n.nspname = 'app' and l.lanname = 'sql'
                and (p.prosecdef or p.proconfig is not null)
                and (exists (select 1 from pg_policies pol
                              where pol.schemaname = 'app'
                                and coalesce(pol.qual, '') || ' ' || coalesce(pol.with_check, '')
                                    like '%app.' || p.proname || '(%')
                     or p.proname in ('plan_rate_limit', 'period_of', 'org_limit',
                                      'period_usage', 'quota_used', 'usage_fold', 'project_role'))
              order by 1",
            &[],
        )
        .await
        .unwrap();
    let planned_per_call: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        planned_per_call.is_empty(),
        "SQL functions re-planned on every call, in policies or per-request helpers: {planned_per_call:?}"
    );
    // The check itself sees policies' helpers: app.current_org_id() is in them.
    let seen: i64 = db
        .query_one(
            "select count(*) from pg_policies
              where schemaname = 'app' and qual like '%app.current_org_id()%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        seen > 10,
        "policies name their helpers as app.<name>(: {seen}"
    );
    // The SQL helpers meant to be inlined are: a call of an inlined function is never
    // counted (track_functions counts SQL functions that ran through fmgr_sql). The audit
    // writers call app.audit_target() for every audited row; declared immutable around a
    // stable jsonb_build_object it was not inlined.
    let tx = db.transaction().await.unwrap();
    tx.batch_execute("set local track_functions = 'all'")
        .await
        .unwrap();
    let calls_of = async |signature: &str| -> i64 {
        tx.query_one(
            "select coalesce(pg_stat_get_xact_function_calls($1::text::regprocedure), 0)",
            &[&signature],
        )
        .await
        .unwrap()
        .get(0)
    };
    for (call, signature) in [
        (
            "select app.audit_target('project', gen_random_uuid(), 'x')",
            "app.audit_target(text,uuid,text)",
        ),
        ("select app.current_org_id()", "app.current_org_id()"),
    ] {
        tx.batch_execute(call).await.unwrap();
        assert_eq!(
            calls_of(signature).await,
            0,
            "{signature} ran as a call, not inlined"
        );
    }
    // The counter sees what is not inlined: app.audit_actor() is PL/pgSQL.
    tx.batch_execute("select app.audit_actor(null)")
        .await
        .unwrap();
    assert_eq!(
        calls_of("app.audit_actor(uuid)").await,
        1,
        "the counter sees calls"
    );
}

/// A permissive policy that reads the context (or runs a subquery) applies to the request
/// role only: for the schema owner -- every security definer function -- the table's
/// `*_all_definer` policy already admits every row, and PostgreSQL ORs permissive
/// policies in an order of its own. `api_keys_select_admin`, applied to everyone, verified
/// the context MAC on every key lookup of the limiter and of the key's context statement:
/// two wasted verifications on each request made with an API key.
#[tokio::test]
async fn permissive_policies_that_read_the_context_skip_the_owner() {
    let app = spawn_app().await;
    let mut db = app.sql_superuser().await;
    let rows = db
        .query(
            "select tablename || '.' || policyname
               from pg_policies
              where schemaname = 'app' and permissive = 'PERMISSIVE' and 'public' = any (roles)
                and not (coalesce(qual, 'true') in ('true', '( SELECT app.is_definer() AS is_definer)')
                         and coalesce(with_check, 'true') in ('true', '( SELECT app.is_definer() AS is_definer)'))
              order by 1",
            &[],
        )
        .await
        .unwrap();
    let for_everyone: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        for_everyone.is_empty(),
        "permissive policies that check the context for the owner too (write them `to palisade_runtime`): {for_everyone:?}"
    );
    // What it buys, on the hottest of them: the owner reads a key and a secret a rotation
    // replaced (as the limiter and app.set_api_key_context() do) without verifying any
    // context.
    let owner = app.signup("Olga").await;
    crate::fixtures::rotated_key(&app, &owner, owner.org_id, "ci").await;
    let tx = db.transaction().await.unwrap();
    tx.batch_execute("set local track_functions = 'pl'; set local role palisade_owner")
        .await
        .unwrap();
    let seen: i64 = tx
        .query_one(
            "select count(*) from app.api_keys k join app.api_key_secrets s on s.key_id = k.id
              where k.org_id = $1",
            &[&owner.org_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 1, "the owner reads the key and its replaced secret");
    assert_eq!(
        verifications(&tx).await,
        0,
        "reading a key as the owner verified a context"
    );
    // The counter does count: the owner asking for the context verifies it.
    tx.batch_execute("select app.current_org_id()")
        .await
        .unwrap();
    assert_eq!(
        verifications(&tx).await,
        1,
        "the counter sees verifications"
    );
}

/// A request statement meets one tenant guard per table: the runtime lane's
/// `<table>_guard_runtime` alone, not also a guard written for everyone with a definer arm
/// -- each guard is an InitPlan of `app.current_org_id()`, so two of them verified the
/// context twice per table per statement (a list of projects: 2 verifications, now 1; a
/// conversation append: 23, now 18). The catalog rule, then what it buys.
#[tokio::test]
async fn a_request_statement_meets_one_tenant_guard_per_table() {
    let app = spawn_app().await;
    let mut db = app.sql_superuser().await;
    let rows = db
        .query(
            "select tablename::text from pg_policies
              where schemaname = 'app' and permissive = 'RESTRICTIVE'
                and roles && array['public', 'palisade_runtime']::name[]
                and (coalesce(qual, '') like '%current_org_id%'
                     or coalesce(with_check, '') like '%current_org_id%')
              group by tablename having count(*) > 1 order by 1",
            &[],
        )
        .await
        .unwrap();
    let twice: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        twice.is_empty(),
        "tables whose request statements check the org in two guards: {twice:?}"
    );
    let owner = app.signup("Nia").await;
    app.create_project(&owner, owner.org_id, "one").await;
    let key = create_key(&app, &owner, owner.org_id, "member", "member")
        .await
        .secret;
    let tx = db.transaction().await.unwrap();
    tx.batch_execute("set local track_functions = 'pl'")
        .await
        .unwrap();
    tx.query_one(
        "select app.set_api_key_context($1, $2)::text",
        &[&key, &owner.org_id],
    )
    .await
    .unwrap();
    tx.batch_execute("set local role palisade_runtime")
        .await
        .unwrap();
    let before = verifications(&tx).await;
    let seen: i64 = tx
        .query_one("select count(*) from app.projects", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 1, "the key's org has one project");
    assert_eq!(
        verifications(&tx).await - before,
        1,
        "a list of projects verifies the context once"
    );
}

/// The statements every request runs before its own -- the limiter's and the context's,
/// inside the owner's definer functions, and the MAC check of every verification -- and
/// every other statement of a definer function (the audit chain's, the storage
/// counter's) meet no restrictive policy with an expression: each table has the lanes form
/// (a guard naming the three lanes, the owner's `using (true)`), not a guard for everyone
/// with a `(select app.is_definer())` arm, an InitPlan in each of those statements.
/// Measured in-backend (one index probe as the owner, 10,000 orgs): a membership 10.5 µs
/// in the old form, a user or an API key row 6.2–6.4 µs in this one. Then the owner's
/// context statement for a key, run for real, is checked to still work and still refuse
/// a stranger's role.
#[tokio::test]
async fn the_request_paths_definer_statements_meet_no_policy_expression() {
    let app = spawn_app().await;
    let db = app.sql_superuser().await;
    let hot = [
        "context_key",
        "sessions",
        "memberships",
        "users",
        "api_key_secrets",
        "api_keys",
        "rate_limits",
        "org_plans",
        "plans",
    ];
    // No table at all has one: the audit writer's chain, the storage counter, the
    // outbox and the rest are read and written by the owner too.
    let rows = db
        .query(
            "select tablename || '.' || policyname from pg_policies
              where schemaname = 'app'
                and permissive = 'RESTRICTIVE'
                and roles && array['public', 'palisade_owner']::name[]
                and coalesce(qual, 'true') <> 'true'
              order by 1",
            &[],
        )
        .await
        .unwrap();
    let met: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        met.is_empty(),
        "restrictive policies the owner's definer statements evaluate: {met:?}"
    );
    // Each of those tables still guards every lane (the isolation report's rule, here
    // for these tables by name).
    for table in hot {
        let lanes: i64 = db
            .query_one(
                "select count(distinct lane) from pg_policies p,
                        unnest(array['palisade_runtime', 'palisade_credentials',
                                     'palisade_jobs']::name[]) lane
                  where p.schemaname = 'app' and p.tablename = $1
                    and p.permissive = 'RESTRICTIVE'
                    and (p.roles && array['public', lane]::name[])",
                &[&table],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(lanes, 3, "app.{table}: a restrictive guard for each lane");
    }
    // The key path through those tables, end to end: the owner's functions still find
    // the key, its creator and the plan; the runtime role still reads no secret.
    let owner = app.signup("Pia").await;
    let key = create_key(&app, &owner, owner.org_id, "member", "member")
        .await
        .secret;
    app.create_project(&owner, owner.org_id, "seen").await;
    let resp = app
        .http
        .get(format!("{}/v1/orgs/{}/projects", app.base, owner.org_id))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["items"][0]["name"], "seen", "{body}");
    let mut runtime = app.sql_runtime().await;
    let tx = runtime.transaction().await.unwrap();
    let denied = tx
        .query_one("select count(*) from app.api_key_secrets", &[])
        .await
        .unwrap_err();
    assert_eq!(
        denied.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
}

/// `app.hidden_projects()` runs once per statement for every member, viewer and key below
/// admin: it verifies the context once (one `app.verified_context()`), not once for each
/// of the role, org and user it reads (three MAC checks before).
#[tokio::test]
async fn a_members_restricted_project_check_verifies_the_context_once() {
    let app = spawn_app().await;
    let owner = app.signup("Omar").await;
    let key = create_key(&app, &owner, owner.org_id, "member", "member")
        .await
        .secret;
    let mut db = app.sql_superuser().await;
    let tx = db.transaction().await.unwrap();
    tx.batch_execute("set local track_functions = 'pl'")
        .await
        .unwrap();
    let role: String = tx
        .query_one(
            "select app.set_api_key_context($1, $2)::text",
            &[&key, &owner.org_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(role, "member");
    let before = verifications(&tx).await;
    let hidden: Vec<uuid::Uuid> = tx
        .query_one("select app.hidden_projects()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(hidden.is_empty(), "no restricted project yet: {hidden:?}");
    assert_eq!(verifications(&tx).await - before, 1);
}

/// The restricted-project check runs only for restricted rows: a member listing an org
/// with no restricted project never calls `app.hidden_projects()` (one MAC verification
/// and one query less per statement, on every list of every member, viewer and key below
/// admin); once the org has one, it runs once and still hides it.
#[tokio::test]
async fn a_member_meets_the_restricted_project_check_only_at_a_restricted_project() {
    let app = spawn_app().await;
    let owner = app.signup("Rhea").await;
    app.create_project(&owner, owner.org_id, "open one").await;
    app.create_project(&owner, owner.org_id, "open two").await;
    let key = create_key(&app, &owner, owner.org_id, "member", "member")
        .await
        .secret;
    let mut db = app.sql_superuser().await;
    // (calls of app.hidden_projects(), projects the member's key sees) in a fresh transaction
    async fn list(
        db: &mut tokio_postgres::Client,
        key: &str,
        org: uuid::Uuid,
    ) -> (i64, Vec<String>) {
        let tx = db.transaction().await.unwrap();
        tx.batch_execute("set local track_functions = 'pl'")
            .await
            .unwrap();
        tx.query_one("select app.set_api_key_context($1, $2)", &[&key, &org])
            .await
            .unwrap();
        tx.batch_execute("set local role palisade_runtime")
            .await
            .unwrap();
        let names: Vec<String> = tx
            .query("select name from app.projects order by name", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let calls = function_calls(&tx, "app.hidden_projects()").await;
        tx.rollback().await.unwrap();
        (calls, names)
    }
    let (calls, names) = list(&mut db, &key, owner.org_id).await;
    assert_eq!(names, ["open one", "open two"]);
    assert_eq!(calls, 0, "no restricted project, yet the check ran");
    app.post(
        &format!("/v1/orgs/{}/projects", owner.org_id),
        &owner.token,
        serde_json::json!({"name": "vault", "access": "restricted"}),
    )
    .await
    .assert_status(201);
    let (calls, names) = list(&mut db, &key, owner.org_id).await;
    assert_eq!(
        names,
        ["open one", "open two"],
        "the member's key sees the restricted project"
    );
    assert_eq!(
        calls, 1,
        "the check runs once per statement when it is needed"
    );
}

/// MAC verifications of the request context (`app.verified_context()` calls) so far in
/// this transaction; it must have set `track_functions` to `pl` or `all`.
async fn verifications(tx: &tokio_postgres::Transaction<'_>) -> i64 {
    function_calls(tx, "app.verified_context()").await
}

/// Calls of `function` (a regprocedure, e.g. `app.hidden_projects()`) so far in this
/// transaction, with `track_functions` at `pl` or `all`.
async fn function_calls(tx: &tokio_postgres::Transaction<'_>, function: &str) -> i64 {
    tx.query_one(
        "select coalesce(pg_stat_get_xact_function_calls($1::text::regprocedure), 0)",
        &[&function],
    )
    .await
    .unwrap()
    .get(0)
}
