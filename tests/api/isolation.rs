//! Tenant isolation, tried for real: through the API as another tenant, and in SQL as
//! the runtime role the server uses. Plus the catalog and start-up self-checks.

use std::time::Duration;

use palisade::db::{Access, Db, Lane, PoolOptions, RequestContext, migrate};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{Signup, TestApp, connect_as, spawn_app};

/// Two tenants with one project each.
async fn two_tenants(app: &TestApp) -> (Signup, Uuid, Signup, Uuid) {
    let a = app.signup("Alice").await;
    let b = app.signup("Bob").await;
    let pa = app.create_project(&a, a.org_id, "alpha-secret").await;
    let pb = app.create_project(&b, b.org_id, "bravo").await;
    (a, pa, b, pb)
}

#[tokio::test]
async fn another_tenant_gets_404_on_every_route() {
    let app = spawn_app().await;
    let (a, pa, b, _pb) = two_tenants(&app).await;
    let a_org = a.org_id;
    let b_org = b.org_id;

    // B names A's org in the path.
    app.get(&format!("/v1/orgs/{a_org}"), &b.token)
        .await
        .assert_problem(404, "not_found");
    app.get(&format!("/v1/orgs/{a_org}/projects"), &b.token)
        .await
        .assert_problem(404, "not_found");
    app.post(
        &format!("/v1/orgs/{a_org}/projects"),
        &b.token,
        json!({"name": "intruder"}),
    )
    .await
    .assert_problem(404, "not_found");
    app.get(&format!("/v1/orgs/{a_org}/projects/{pa}"), &b.token)
        .await
        .assert_problem(404, "not_found");
    app.patch(
        &format!("/v1/orgs/{a_org}/projects/{pa}"),
        &b.token,
        json!({"name": "pwned"}),
    )
    .await
    .assert_problem(404, "not_found");
    app.delete(&format!("/v1/orgs/{a_org}/projects/{pa}"), &b.token)
        .await
        .assert_problem(404, "not_found");

    // B names A's project under B's own org.
    app.get(&format!("/v1/orgs/{b_org}/projects/{pa}"), &b.token)
        .await
        .assert_problem(404, "not_found");
    app.patch(
        &format!("/v1/orgs/{b_org}/projects/{pa}"),
        &b.token,
        json!({"name": "pwned"}),
    )
    .await
    .assert_problem(404, "not_found");
    app.delete(&format!("/v1/orgs/{b_org}/projects/{pa}"), &b.token)
        .await
        .assert_problem(404, "not_found");

    // B's lists never contain A's rows.
    let list = app
        .get(&format!("/v1/orgs/{b_org}/projects"), &b.token)
        .await;
    let names: Vec<_> = list.assert_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, [json!("bravo")]);
    let orgs = app.get("/v1/orgs", &b.token).await;
    let ids: Vec<_> = orgs.assert_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].clone())
        .collect();
    assert_eq!(ids, [json!(b_org.to_string())]);

    // A's project is untouched and A still sees exactly it.
    let own = app
        .get(&format!("/v1/orgs/{a_org}/projects/{pa}"), &a.token)
        .await;
    assert_eq!(own.assert_status(200)["name"], "alpha-secret");
    let a_list = app
        .get(&format!("/v1/orgs/{a_org}/projects"), &a.token)
        .await;
    assert_eq!(
        a_list.assert_status(200)["items"].as_array().unwrap().len(),
        1
    );
}

/// In SQL, as the runtime role, inside a transaction with B's context.
#[tokio::test]
async fn runtime_role_with_b_context_cannot_see_or_change_a_rows() {
    let app = spawn_app().await;
    let (a, pa, b, pb) = two_tenants(&app).await;
    let mut db = app.sql_runtime().await;
    let tx = db.transaction().await.unwrap();
    let role = app.set_context(&tx, &b, Some(b.org_id)).await;
    assert_eq!(role.as_deref(), Some("owner"));

    let visible: Vec<Uuid> = tx
        .query("select id from app.projects", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(visible, [pb]);
    let by_id = tx
        .query(
            "select 1 from app.projects where id = $1 or org_id = $2",
            &[&pa, &a.org_id],
        )
        .await
        .unwrap();
    assert!(by_id.is_empty());
    let updated = tx
        .execute(
            "update app.projects set name = 'pwned' where id = $1",
            &[&pa],
        )
        .await
        .unwrap();
    assert_eq!(updated, 0);
    let deleted = tx
        .execute("delete from app.projects where org_id = $1", &[&a.org_id])
        .await
        .unwrap();
    assert_eq!(deleted, 0);
    let orgs = tx
        .query("select 1 from app.orgs where id = $1", &[&a.org_id])
        .await
        .unwrap();
    assert!(orgs.is_empty());
    let users = tx
        .query("select email from app.users where id = $1", &[&a.user_id])
        .await
        .unwrap();
    assert!(users.is_empty());
    tx.rollback().await.unwrap();

    // Inserting into A's org fails: org_id is not insertable by the runtime role at all...
    let tx = db.transaction().await.unwrap();
    app.set_context(&tx, &b, Some(b.org_id)).await;
    let err = tx
        .execute(
            "insert into app.projects (org_id, name) values ($1, 'intruder')",
            &[&a.org_id],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    tx.rollback().await.unwrap();
    // ...and moving B's own row into A's org fails the tenant guard's check.
    let tx = db.transaction().await.unwrap();
    app.set_context(&tx, &b, Some(b.org_id)).await;
    let err = tx
        .execute(
            "update app.projects set org_id = $1 where id = $2",
            &[&a.org_id, &pb],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    tx.rollback().await.unwrap();
    // The password hash column is not readable by the runtime role even for oneself.
    let err = db
        .query("select password_hash from app.users", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );

    // Naming A's org in B's context gives no role and no rows.
    let tx = db.transaction().await.unwrap();
    let role = app.set_context(&tx, &b, Some(a.org_id)).await;
    assert_eq!(role, None);
    let n: i64 = tx
        .query_one("select count(*) from app.projects", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    tx.rollback().await.unwrap();

    let su = app.sql_superuser().await;
    let name: String = su
        .query_one("select name from app.projects where id = $1", &[&pa])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "alpha-secret");
}

/// With no context (unset) or a reset one (''), every table in schema app shows 0 rows.
#[tokio::test]
async fn without_context_every_table_is_empty() {
    let app = spawn_app().await;
    let (a, ..) = two_tenants(&app).await;
    // A failed sign-in leaves a row in login_attempts.
    app.login(&a.email, "wrong password here")
        .await
        .assert_problem(401, "invalid_credentials");
    let mut db = app.sql_runtime().await;
    // Every table must hold rows to hide; invitations, the outbox, the reset queue and API
    // keys get one through their only doors (and every request fills a rate-limit bucket);
    // the key is rotated, so a replaced secret waits out its grace window.
    crate::fixtures::rotated_key(&app, &a, a.org_id, "hidden").await;
    app.post(
        &format!("/v1/orgs/{}/invitations", a.org_id),
        &a.token,
        serde_json::json!({"email": "invitee@example.com", "role": "member"}),
    )
    .await
    .assert_status(201);
    app.request(
        reqwest::Method::POST,
        "/v1/auth/password-reset/request",
        None,
        Some(serde_json::json!({"email": a.email})),
    )
    .await
    .assert_status(202);
    // Usage: a meter, an event (its rollups and distinct value), a threshold notice (a
    // one-event limit), and flushed API calls.
    app.set_plan(a.org_id, "pro").await;
    app.sql_superuser()
        .await
        .execute(
            "update app.plan_limits set included = 1 where plan_id = 'pro' and meter = 'events'",
            &[],
        )
        .await
        .unwrap();
    app.post(
        &format!("/v1/orgs/{}/meters", a.org_id),
        &a.token,
        serde_json::json!({"key": "users", "name": "Users", "aggregation": "unique_count"}),
    )
    .await
    .assert_status(201);
    let ingested = app
        .post(
            &format!("/v1/orgs/{}/usage-events", a.org_id),
            &a.token,
            serde_json::json!({"events": [{"id": "e1", "meter": "users", "subject": "u1", "timestamp": chrono::Utc::now()}]}),
        )
        .await;
    assert_eq!(ingested.assert_status(200)["accepted"], 1);
    assert!(app.flush_api_calls().await > 0);
    // Workspace: a restricted project with a member, a conversation with an event (its
    // segment and the org's storage total), a document with a chunk, a queued purge.
    let project = app
        .post(
            &format!("/v1/orgs/{}/projects", a.org_id),
            &a.token,
            serde_json::json!({"name": "Restricted", "access": "restricted"}),
        )
        .await;
    let project_id = project.assert_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.request(
        reqwest::Method::PUT,
        &format!(
            "/v1/orgs/{}/projects/{project_id}/members/{}",
            a.org_id, a.user_id
        ),
        Some(&a.token),
        Some(serde_json::json!({"role": "admin"})),
    )
    .await
    .assert_status(200);
    let conversation = app
        .post(
            &format!("/v1/orgs/{}/conversations", a.org_id),
            &a.token,
            serde_json::json!({"project_id": project_id}),
        )
        .await;
    let conversation_id = conversation.assert_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(
        &format!(
            "/v1/orgs/{}/conversations/{conversation_id}/events",
            a.org_id
        ),
        &a.token,
        serde_json::json!({"events": [{"n": 1}]}),
    )
    .await
    .assert_status(201);
    crate::attacks::seal_secrets(&app, a.org_id, &a.token, &a.token).await;
    app.sql_superuser()
        .await
        .batch_execute(&format!(
            "insert into app.documents (id, org_id, title, filename, content_type, bytes, sha256)
             values ('{doc}', '{org}', 'd', 'd.txt', 'text/plain', 1, sha256('d'));
             insert into app.document_chunks (org_id, document_id, chunk_no, content)
             values ('{org}', '{doc}', 1, 'chunk');
             insert into app.storage_purge (org_id, object_key) values ('{org}', 'orgs/{org}/x');
             {billing}
             {assistant}",
            doc = Uuid::new_v4(),
            org = a.org_id,
            billing = crate::attacks::billing_rows_sql(a.org_id),
            assistant = crate::attacks::assistant_rows_sql(a.org_id, a.user_id, Uuid::new_v4()),
        ))
        .await
        .unwrap();
    let tables: Vec<String> = db
        .query(
            "select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace
              where n.nspname = 'app' and c.relkind in ('r', 'p') order by 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "app.api_key_secrets",
            "app.api_keys",
            "app.assistant_conversations",
            "app.assistant_messages",
            "app.audit_log",
            "app.billing_customers",
            "app.billing_events",
            "app.billing_sessions",
            "app.billing_subscriptions",
            "app.context_key",
            "app.conversation_segments",
            "app.conversations",
            "app.document_chunks",
            "app.documents",
            "app.email_outbox",
            "app.invitations",
            "app.login_attempts",
            "app.memberships",
            "app.meters",
            "app.org_data_keys",
            "app.org_plans",
            "app.org_settings",
            "app.org_storage",
            "app.orgs",
            "app.password_reset_requests",
            "app.plan_limits",
            "app.plans",
            "app.project_members",
            "app.projects",
            "app.rate_limits",
            "app.refresh_tokens",
            "app.search_terms",
            "app.secrets",
            "app.sessions",
            "app.storage_purge",
            "app.usage_api_calls",
            "app.usage_days",
            "app.usage_distinct",
            "app.usage_events",
            "app.usage_notices",
            "app.usage_periods",
            "app.user_tokens",
            "app.users",
        ],
        "a new table: add it here (the attack matrix, matrix.rs, picks it up from the catalog)"
    );
    // The plan catalogue is public by design (GET /v1/plans): every row, with or without
    // a context. Every other table shows nothing.
    const PUBLIC: &[&str] = &["app.plan_limits", "app.plans"];
    let su = app.sql_superuser().await;
    for table in &tables {
        let total: i64 = su
            .query_one(&format!("select count(*) from {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert!(total > 0, "{table} has data to hide");
        for reset in [false, true] {
            let tx = db.transaction().await.unwrap();
            if reset {
                tx.batch_execute(
                    "select set_config('app.current_org_id', '', true), set_config('app.current_user_id', '', true),
                            set_config('app.current_org_role', '', true), set_config('app.current_session_id', '', true),
                            set_config('app.current_api_key_id', '', true)",
                )
                .await
                .unwrap();
            }
            match tx
                .query_one(&format!("select count(*) from {table}"), &[])
                .await
            {
                Ok(row) => {
                    let seen: i64 = row.get(0);
                    let which = if reset { "a reset" } else { "no" };
                    let expected = if PUBLIC.contains(&table.as_str()) {
                        total
                    } else {
                        0
                    };
                    assert_eq!(
                        seen, expected,
                        "{table} shows {seen} rows with {which} context"
                    );
                }
                // No grant at all (e.g. the outbox): sees even less than zero rows.
                Err(e) => assert_eq!(
                    e.code(),
                    Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
                    "{table}: {e}"
                ),
            }
            tx.rollback().await.unwrap();
        }
    }
}

#[tokio::test]
async fn viewers_read_but_the_policy_refuses_their_writes() {
    let app = spawn_app().await;
    let (a, pa, b, _) = two_tenants(&app).await;
    let su = app.sql_superuser().await;
    su.execute(
        "insert into app.memberships (org_id, user_id, role) values ($1, $2, 'viewer')",
        &[&a.org_id, &b.user_id],
    )
    .await
    .unwrap();
    let base = format!("/v1/orgs/{}/projects", a.org_id);
    app.get(&base, &b.token).await.assert_status(200);
    app.get(&format!("{base}/{pa}"), &b.token)
        .await
        .assert_status(200);
    app.post(&base, &b.token, json!({"name": "nope"}))
        .await
        .assert_problem(403, "forbidden");
    app.patch(&format!("{base}/{pa}"), &b.token, json!({"name": "nope"}))
        .await
        .assert_problem(403, "forbidden");
    app.delete(&format!("{base}/{pa}"), &b.token)
        .await
        .assert_problem(403, "forbidden");
    // Promoted to member, the same requests succeed.
    su.execute(
        "update app.memberships set role = 'member' where org_id = $1 and user_id = $2",
        &[&a.org_id, &b.user_id],
    )
    .await
    .unwrap();
    app.patch(
        &format!("{base}/{pa}"),
        &b.token,
        json!({"name": "renamed"}),
    )
    .await
    .assert_status(200);
    // Removed from the org, access ends on the very next request.
    su.execute(
        "delete from app.memberships where org_id = $1 and user_id = $2",
        &[&a.org_id, &b.user_id],
    )
    .await
    .unwrap();
    app.get(&format!("{base}/{pa}"), &b.token)
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn self_check_rejects_roles_that_can_bypass_rls() {
    let app = spawn_app().await;
    let su = app.sql_superuser().await;
    let suffix = Uuid::new_v4().simple().to_string();
    let cases = [
        (format!("bypass_{suffix}"), "login bypassrls", "bypass"),
        (format!("super_{suffix}"), "login superuser", "bypass"),
        (
            format!("viaowner_{suffix}"),
            "login in role palisade_owner",
            "owner",
        ),
        (format!("viagroup_{suffix}"), "login", "bypass"),
    ];
    su.execute(&format!("create role grp_{suffix} nologin bypassrls"), &[])
        .await
        .unwrap();
    for (role, attrs, expect) in &cases {
        su.batch_execute(&format!("create role {role} {attrs}"))
            .await
            .unwrap();
        if role.starts_with("viagroup") {
            su.batch_execute(&format!("grant grp_{suffix} to {role}"))
                .await
                .unwrap();
        }
        let client = connect_as(role, &app.db_name).await;
        let err = migrate::self_check(&client, Lane::Request)
            .await
            .expect_err(role)
            .to_string();
        assert!(
            err.contains("refusing to serve") && err.contains(expect),
            "{role}: {err}"
        );
    }
    // The real roles pass, each in its own lane only.
    for lane in Lane::ALL {
        let warnings = migrate::self_check(&app.sql_lane(lane).await, lane)
            .await
            .unwrap();
        assert_eq!(warnings, Vec::<String>::new(), "{lane:?}");
    }
    let err = migrate::self_check(&app.sql_lane(Lane::Credentials).await, Lane::Request)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("must be a member of palisade_runtime"),
        "{err}"
    );
}

#[tokio::test]
async fn self_check_rejects_a_table_without_forced_rls() {
    let app = spawn_app().await;
    let owner = app.sql_as("palisade_owner").await;
    owner
        .batch_execute("alter table app.projects no force row level security")
        .await
        .unwrap();
    let err = migrate::self_check(&app.sql_runtime().await, Lane::Request)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("app.projects"), "{err}");
    owner
        .batch_execute("alter table app.projects force row level security")
        .await
        .unwrap();
    // A new table with an org_id anywhere, without RLS, is caught too.
    owner
        .batch_execute("create table public.leaky (org_id uuid, secret text)")
        .await
        .unwrap();
    let err = migrate::self_check(&app.sql_runtime().await, Lane::Request)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("public.leaky"), "{err}");
}

/// Fails when a table lacks enabled+forced RLS or a policy, or a security definer
/// function lacks a pinned search_path or is executable by PUBLIC.
#[tokio::test]
async fn catalog_every_table_protected_every_definer_pinned() {
    let app = spawn_app().await;
    let db = app.sql_superuser().await;
    let bad_tables: Vec<String> = db
        .query(
            "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
              where n.nspname = 'app' and c.relkind in ('r', 'p')
                and (not c.relrowsecurity or not c.relforcerowsecurity
                     or not exists (select 1 from pg_policy p where p.polrelid = c.oid)
                     or not exists (select 1 from pg_policy p where p.polrelid = c.oid and not p.polpermissive))",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        bad_tables.is_empty(),
        "tables without forced RLS, a policy or a restrictive guard: {bad_tables:?}"
    );

    let definers: Vec<(String, Option<Vec<String>>)> = db
        .query(
            "select p.proname::text, p.proconfig from pg_proc p join pg_namespace n on n.oid = p.pronamespace
              where n.nspname = 'app' and p.prosecdef",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: i64 = db
        .query_one(
            "select count(*) from pg_proc p where p.pronamespace = 'app'::regnamespace and p.prosecdef",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(definers.len() as i64, expected);
    // 74 since V12: the audit log's request_meta, bind_request_meta, audit_table_change,
    // verify_audit_chain, audit_chain_heads, audit_hash_at and purge_audit_log.
    // 85 since V13: billing's begin, record_checkout, portal_opened (request role),
    // receive_event (credential role), and claim_billing_events, event_done,
    // sync_subscription, complete_checkout, payment_failed, expire_grace, email_owners
    // (worker role). 86: email_outbox_stats (worker role, for metrics). 89 since V15:
    // orgs_create_settings (trigger), assistant_admit, assistant_record_usage (request role).
    // 92 since V17: search_terms_add, search_terms_count (trigger), search_chunks (request
    // role, the assistant's retrieval candidates). 93 since V18:
    // api_keys_follow_creator_disabled (trigger on app.users).
    assert_eq!(definers.len(), 93, "{definers:?}");
    for (name, config) in &definers {
        let pinned = config
            .as_ref()
            .is_some_and(|c| c.iter().any(|s| s == "search_path=pg_catalog, pg_temp"));
        assert!(
            pinned,
            "security definer app.{name} must pin search_path: {config:?}"
        );
    }
    let public_exec: Vec<String> = db
        .query(
            "select p.proname::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
              where n.nspname = 'app' and has_function_privilege('public', p.oid, 'execute')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        public_exec.is_empty(),
        "functions executable by PUBLIC: {public_exec:?}"
    );
    let owned: i64 = db
        .query_one(
            "select count(*) from pg_class c join pg_roles r on r.oid = c.relowner
              where r.rolname in ('palisade_app', 'palisade_runtime', 'palisade_auth',
                                  'palisade_credentials', 'palisade_worker', 'palisade_jobs')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owned, 0, "the runtime roles own nothing");
    let attrs = db
        .query_one(
            "select rolsuper, rolbypassrls from pg_roles where rolname = 'palisade_app'",
            &[],
        )
        .await
        .unwrap();
    assert!(!attrs.get::<_, bool>(0) && !attrs.get::<_, bool>(1));
}

/// Every policies/*.sql file is applied by the server.
#[test]
fn every_policy_file_is_applied() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    on_disk.sort();
    let mut applied: Vec<String> = migrate::POLICY_FILES
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    applied.sort();
    assert_eq!(on_disk, applied);
}

/// A request cancelled mid-transaction must not leave its tenant context (or an open
/// transaction) on a pooled connection. The cancel lands while the database is provably
/// running the request's statement (pg_stat_activity), not after a guessed delay.
#[tokio::test]
async fn cancelled_request_leaves_no_context_on_the_pool() {
    let app = spawn_app().await;
    let (a, _pa, b, _) = two_tenants(&app).await;
    let db = Db::new(
        &crate::helpers::connections(&app.db_name),
        PoolOptions {
            request_size: 1,
            credentials_size: 1,
            jobs_size: 1,
            timeout: Duration::from_secs(5),
            statement_cache: true,
        },
    );
    let context = |who: &crate::helpers::Signup, org| {
        let (session_id, proof) = app.session_proof(who);
        RequestContext {
            session_id,
            proof: proof.try_into().unwrap(),
            org_id: org,
        }
    };
    let marker = format!("cancel-me-{}", Uuid::new_v4().simple());
    let sleep_sql = format!("select pg_sleep(30), '{marker}'");
    let work = async {
        let tx = db
            .begin(&context(&a, Some(a.org_id)), Access::ReadWrite)
            .await
            .unwrap();
        let n: i64 = tx
            .query_one("select count(*) from app.projects", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "context works before the cancel");
        tx.query(&sleep_sql, &[]).await.unwrap();
        unreachable!("cancelled before this");
    };
    let su = app.sql_superuser().await;
    let running = async {
        loop {
            let active: i64 = su
                .query_one(
                    "select count(*) from pg_stat_activity where state = 'active' and query like $1",
                    &[&format!("%{marker}%")],
                )
                .await
                .unwrap()
                .get(0);
            if active == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        _ = work => unreachable!("the sleep cannot finish first"),
        _ = running => {}
    }
    // The request's future is dropped here, mid-statement. The only connection of the
    // request pool is now the next request's: another user's, with no org.
    let tx = db
        .begin(&context(&b, None), Access::ReadOnly)
        .await
        .unwrap();
    let row = tx
        .query_one(
            "select current_setting('app.current_org_id', true), app.current_user_id(),
                    (select count(*) from app.projects)",
            &[],
        )
        .await
        .unwrap();
    let org: Option<String> = row.get(0);
    let user: Option<Uuid> = row.get(1);
    assert!(org.unwrap_or_default().is_empty());
    assert_eq!(user, Some(b.user_id));
    assert_eq!(row.get::<_, i64>(2), 0);
    tx.finish(Ok::<_, palisade::db::DbError>(())).await.unwrap();
}

/// Results carry built-in types only (see `palisade::db`): a query returning an
/// app-defined type is caught in debug builds, so the suite finds one that forgets.
#[tokio::test]
#[should_panic(expected = "select it as text")]
async fn a_result_of_an_app_defined_type_is_caught() {
    let app = spawn_app().await;
    let a = app.signup("Typed").await;
    let principal = palisade::http::security::Principal::User {
        user_id: a.user_id,
        session_id: app.session_proof(&a).0,
    };
    let _ = app
        .state
        .as_user(&principal, Access::ReadOnly, async |tx| {
            tx.query("select 'owner'::app.org_role", &[]).await?;
            Ok(())
        })
        .await;
}
