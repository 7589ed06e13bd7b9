//! The audit log (app.audit_log, sql/V12__audit_log.sql and policies/audit_log.sql):
//!
//! * the hash chain: tampering done as the database superuser (triggers off) -- an
//!   edited, deleted or reordered row -- is found by app.verify_audit_chain(), and what
//!   verification alone cannot see (a cut or rewritten tail) by the chain heads the
//!   worker stores;
//! * append-only: the schema owner's update, delete and truncate are refused (PT409); no lane's role may write
//!   it at all; the owner's way around the guard (DDL) is caught like the superuser's;
//! * 32 concurrent writers in one org make one unbroken chain;
//! * actor and context come from the server: the verified caller (a user or an API key),
//!   the request id it answered, the user agent, the peer address -- never from the
//!   request;
//! * sign-ins: a failed one of an existing account is in its chain and each of its
//!   orgs'; an unknown email writes nothing;
//! * an org's log outlives the org, intact and ending with `org.deleted`, readable by no
//!   request, until the retention purge.
//!
//! Every chain here is built through the real API. Which mutating operation writes which
//! row is the coverage test's (audit_coverage.rs).

use std::collections::BTreeSet;

use palisade::db::{self, Lane};
use serde_json::{Value, json};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::{
    fixtures::{
        AuditRow, add_member, audit_chain, audit_rows, new_org, outcome, runtime_tx, team,
        verify_chain,
    },
    helpers::{PASSWORD, Signup, TestApp, spawn_app},
};

/// A new org of `owner`'s with `projects` projects, all through the API: a chain of
/// 1 + `projects` rows (org.created, then project.created), verified intact.
async fn org_with_projects(app: &TestApp, owner: &Signup, name: &str, projects: usize) -> Uuid {
    let org = new_org(app, owner, name).await;
    for i in 1..=projects {
        app.create_project(owner, org, &format!("{name} project {i}"))
            .await;
    }
    let su = app.sql_superuser().await;
    let log = audit_chain(&su, org).await;
    let actions: Vec<&str> = log.iter().map(|r| r.action.as_str()).collect();
    let mut expected = vec!["org.created"];
    expected.extend(std::iter::repeat_n("project.created", projects));
    assert_eq!(actions, expected);
    assert_eq!(
        log.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=1 + projects as i64).collect::<Vec<_>>()
    );
    assert_eq!(verify_chain(&su, org).await, None, "intact to start with");
    org
}

/// Runs `sql` as the cluster's superuser with triggers disabled (`session_replication_role
/// = replica`), around the append-only guard.
async fn tamper(app: &TestApp, sql: &str) {
    app.sql_superuser()
        .await
        .batch_execute(&format!(
            "set session_replication_role = replica; {sql}; reset session_replication_role"
        ))
        .await
        .expect("the superuser rewrites history");
}

/// The SQLSTATE and hint of a refused statement.
fn refusal<T: std::fmt::Debug>(result: Result<T, tokio_postgres::Error>) -> (String, String) {
    let e = result.expect_err("refused");
    let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
    (
        db.code().code().to_owned(),
        db.hint().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn verification_finds_an_edited_row() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let org = org_with_projects(&app, &owner, "Edited", 4).await;
    tamper(
        &app,
        &format!(
            "update app.audit_log set metadata = metadata || '{{\"name\": \"nothing to see\"}}'
              where chain_id = '{org}' and seq = 3"
        ),
    )
    .await;
    let su = app.sql_superuser().await;
    assert_eq!(
        audit_chain(&su, org).await[2].metadata["name"],
        "nothing to see",
        "the edit landed"
    );
    let (seq, problem) = verify_chain(&su, org).await.expect("the edit is found");
    assert_eq!(seq, 3, "{problem}");
    assert!(problem.contains("hash does not match"), "{problem}");
}

/// An editor who also recomputes the edited row's hash only moves the break to the next
/// row, whose prev_hash no longer matches.
#[tokio::test]
async fn verification_finds_an_edit_with_its_hash_recomputed() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let org = org_with_projects(&app, &owner, "Rehashed", 4).await;
    tamper(
        &app,
        &format!(
            "update app.audit_log set actor_name = 'someone@else.example'
              where chain_id = '{org}' and seq = 3;
             update app.audit_log l set hash = app.audit_row_hash(l)
              where chain_id = '{org}' and seq = 3"
        ),
    )
    .await;
    let su = app.sql_superuser().await;
    let (seq, problem) = verify_chain(&su, org).await.expect("the edit is found");
    assert_eq!(seq, 4, "{problem}");
    assert!(problem.contains("prev_hash"), "{problem}");
}

#[tokio::test]
async fn verification_finds_a_deleted_row() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let org = org_with_projects(&app, &owner, "Gap", 4).await;
    tamper(
        &app,
        &format!("delete from app.audit_log where chain_id = '{org}' and seq = 3"),
    )
    .await;
    let su = app.sql_superuser().await;
    assert_eq!(audit_chain(&su, org).await.len(), 4, "the delete landed");
    let (seq, problem) = verify_chain(&su, org).await.expect("the deletion is found");
    assert_eq!(seq, 3, "{problem}");
    assert!(problem.contains("row 3 is missing"), "{problem}");
}

#[tokio::test]
async fn verification_finds_reordered_rows() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let org = org_with_projects(&app, &owner, "Swapped", 4).await;
    let su = app.sql_superuser().await;
    let before: Vec<Value> = audit_chain(&su, org)
        .await
        .iter()
        .map(|r| r.targets.clone())
        .collect();
    // Rows 3 and 4 trade places (through a free seq: the primary key holds throughout).
    tamper(
        &app,
        &format!(
            "update app.audit_log set seq = 1000 where chain_id = '{org}' and seq = 3;
             update app.audit_log set seq = 3 where chain_id = '{org}' and seq = 4;
             update app.audit_log set seq = 4 where chain_id = '{org}' and seq = 1000"
        ),
    )
    .await;
    let after: Vec<Value> = audit_chain(&su, org)
        .await
        .iter()
        .map(|r| r.targets.clone())
        .collect();
    assert_eq!(
        (&after[2], &after[3]),
        (&before[3], &before[2]),
        "the swap landed"
    );
    let (seq, problem) = verify_chain(&su, org)
        .await
        .expect("the reordering is found");
    assert_eq!(seq, 3, "{problem}");
    assert!(problem.contains("prev_hash"), "{problem}");
}

/// What the chain alone cannot show -- its newest rows cut off, or every row from some
/// point on rewritten with fresh hashes: app.verify_audit_chain() finds nothing wrong
/// (each remaining link is consistent), and the chain head stored before (what the
/// worker writes to the object store each day, app.audit_chain_heads()) no longer
/// matches app.audit_hash_at().
#[tokio::test]
async fn a_cut_or_rewritten_tail_is_found_by_the_stored_chain_head() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let cut = org_with_projects(&app, &owner, "Cut", 3).await;
    let rewritten = org_with_projects(&app, &owner, "Rewritten", 3).await;
    let jobs = app.sql_lane(Lane::Jobs).await;
    let head = |chain: Uuid| {
        let jobs = &jobs;
        async move {
            let r = jobs
                .query_one(
                    "select seq, hash from app.audit_chain_heads() where chain_id = $1",
                    &[&chain],
                )
                .await
                .unwrap();
            (r.get::<_, i64>(0), r.get::<_, String>(1))
        }
    };
    let hash_at = |chain: Uuid, seq: i64| {
        let jobs = &jobs;
        async move {
            jobs.query_one("select app.audit_hash_at($1, $2)", &[&chain, &seq])
                .await
                .unwrap()
                .get::<_, Option<String>>(0)
        }
    };
    let stored = [(cut, head(cut).await), (rewritten, head(rewritten).await)];
    for (chain, (seq, hash)) in &stored {
        assert_eq!(*seq, 4);
        assert_eq!(hash_at(*chain, *seq).await.as_ref(), Some(hash), "control");
    }

    tamper(
        &app,
        &format!(
            "delete from app.audit_log where chain_id = '{cut}' and seq = 4;
             update app.audit_log set metadata = '{{\"name\": \"harmless\"}}'
              where chain_id = '{rewritten}' and seq >= 2"
        ),
    )
    .await;
    // Re-link the rewritten rows one by one, in order, as a careful forger would.
    for seq in 2..=4i64 {
        tamper(
            &app,
            &format!(
                "update app.audit_log l
                    set prev_hash = (select p.hash from app.audit_log p
                                      where p.chain_id = l.chain_id and p.seq = l.seq - 1)
                  where chain_id = '{rewritten}' and seq = {seq};
                 update app.audit_log l set hash = app.audit_row_hash(l)
                  where chain_id = '{rewritten}' and seq = {seq}"
            ),
        )
        .await;
    }
    let su = app.sql_superuser().await;
    for (chain, (seq, hash)) in &stored {
        assert_eq!(
            verify_chain(&su, *chain).await,
            None,
            "a consistent chain verifies: only the stored head tells"
        );
        assert_ne!(
            hash_at(*chain, *seq).await.as_ref(),
            Some(hash),
            "the stored head no longer matches"
        );
    }
}

/// The append-only guard holds for the schema owner (the role that runs the
/// migrations and owns the table): delete and truncate of a live org's chain are refused
/// with PT409 (its update too: the test below). The
/// lanes' roles cannot write it at all.
#[tokio::test]
async fn the_log_is_append_only_even_for_the_schema_owner() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let org = org_with_projects(&app, &owner, "Forever", 2).await;
    let su = app.sql_superuser().await;
    let before = audit_chain(&su, org).await;

    let schema_owner = app.sql_as(db::OWNER_ROLE).await;
    let refused = [
        ("delete", "delete from app.audit_log where chain_id = $1"),
        (
            "delete of one row",
            "delete from app.audit_log where chain_id = $1 and seq = 2",
        ),
        ("truncate", "truncate app.audit_log"),
    ];
    for (what, sql) in refused {
        let (code, hint) = refusal(schema_owner.execute(sql, &org_param(sql, &org)).await);
        assert_eq!(
            (code.as_str(), hint.as_str()),
            ("PT409", "audit_log_append_only"),
            "the schema owner's {what}"
        );
    }
    match schema_owner.execute(OWNER_UPDATE, &[&org]).await {
        Ok(0) => {}
        Ok(n) => panic!("the schema owner updated {n} audit rows"),
        Err(e) => assert_eq!(outcome::<()>(Err(e)), "PT409"),
    }

    // The lanes: the request role reads (its policies decide what), and writes nothing;
    // the credential and worker roles do not even read.
    let writes = [
        "insert into app.audit_log (org_id, seq, occurred_at, actor_type, action, prev_hash, hash)
         values ($1, 3, now(), 'system', 'forged.event', sha256(''), sha256(''))",
        "update app.audit_log set metadata = '{\"forged\": true}' where chain_id = $1",
        "delete from app.audit_log where chain_id = $1",
        "truncate app.audit_log",
    ];
    let mut runtime = app.sql_runtime().await;
    for sql in writes {
        let params = &org_param(sql, &org)[..];
        // With the org owner's real context, and with none.
        let tx = runtime_tx(&app, &mut runtime, &owner, Some(org)).await;
        assert_eq!(
            outcome(tx.execute(sql, params).await),
            "42501",
            "the request role, as the org's owner: {sql}"
        );
        drop(tx);
        assert_eq!(
            outcome(runtime.execute(sql, params).await),
            "42501",
            "the request role, no context: {sql}"
        );
        for lane in [Lane::Credentials, Lane::Jobs] {
            let c = app.sql_lane(lane).await;
            assert_eq!(
                outcome(c.execute(sql, params).await),
                "42501",
                "{lane:?}: {sql}"
            );
        }
    }
    for lane in [Lane::Credentials, Lane::Jobs] {
        let c = app.sql_lane(lane).await;
        assert_eq!(
            outcome(c.query("select 1 from app.audit_log", &[]).await),
            "42501",
            "{lane:?} reads"
        );
        // Nor call the writers.
        assert_eq!(
            outcome(
                c.execute("select app.audit_org_event($1, 'forged.event')", &[&org])
                    .await
            ),
            "42501",
            "{lane:?} calls app.audit_org_event"
        );
    }

    let after = audit_chain(&su, org).await;
    assert_eq!(
        format!("{before:?}"),
        format!("{after:?}"),
        "nothing changed"
    );
    assert_eq!(verify_chain(&su, org).await, None);
}

/// The guard is a trigger, and the schema owner owns the table: it may disable the
/// trigger (or drop it) -- DDL no policy stops. What it then deletes is found like the
/// superuser's tampering.
#[tokio::test]
async fn the_schema_owner_going_around_the_guard_is_found() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let org = org_with_projects(&app, &owner, "Around", 3).await;
    let schema_owner = app.sql_as(db::OWNER_ROLE).await;
    schema_owner
        .batch_execute(&format!(
            "alter table app.audit_log disable trigger audit_log_append_only;
             delete from app.audit_log where chain_id = '{org}' and seq = 2;
             alter table app.audit_log enable trigger audit_log_append_only"
        ))
        .await
        .expect("the owner's DDL");
    let su = app.sql_superuser().await;
    assert_eq!(audit_chain(&su, org).await.len(), 3, "the delete landed");
    let (seq, problem) = verify_chain(&su, org).await.expect("the deletion is found");
    assert_eq!(seq, 2, "{problem}");
    assert!(problem.contains("row 2 is missing"), "{problem}");
}

/// An update of the audit log as the schema owner (a "fix" in a maintenance script).
const OWNER_UPDATE: &str =
    "update app.audit_log set metadata = '{\"forged\": true}' where chain_id = $1";

/// The schema owner's update is refused like its delete -- PT409, hint
/// audit_log_append_only -- by app.audit_log_append_only(). Without the permissive
/// `audit_log_update_definer` policy, forced RLS would show the owner's update no row and
/// answer a silent "UPDATE 0": the trigger would never say no.
#[tokio::test]
async fn the_schema_owners_update_is_refused_with_pt409() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let org = org_with_projects(&app, &owner, "Forever", 1).await;
    let schema_owner = app.sql_as(db::OWNER_ROLE).await;
    let (code, hint) = refusal(schema_owner.execute(OWNER_UPDATE, &[&org]).await);
    assert_eq!(
        (code.as_str(), hint.as_str()),
        ("PT409", "audit_log_append_only")
    );
}

/// 32 writers at once in one org (project creations through the API, by two signed-in
/// users and an API key): every one succeeds, and the chain has each of them once, with
/// seq 1..n and no gap, times in seq order, intact.
#[tokio::test]
async fn concurrent_writers_make_one_unbroken_chain() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let member = app.signup("Member").await;
    let org = new_org(&app, &owner, "Busy").await;
    add_member(&app, org, member.user_id, "member").await;
    // Room for 32 more projects whatever the default plan.
    app.set_plan(org, "enterprise").await;
    let key = app
        .post(
            &format!("/v1/orgs/{org}/api-keys"),
            &owner.token,
            json!({"name": "busy key", "role": "member"}),
        )
        .await
        .assert_status(201)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let su = app.sql_superuser().await;
    let start = audit_chain(&su, org).await.len() as i64;

    const WRITERS: usize = 32;
    let tokens = [owner.token.as_str(), member.token.as_str(), key.as_str()];
    let results = futures_util::future::join_all((0..WRITERS).map(|i| {
        let app = &app;
        let token = tokens[i % tokens.len()];
        async move {
            app.post(
                &format!("/v1/orgs/{org}/projects"),
                token,
                json!({"name": format!("concurrent {i}")}),
            )
            .await
        }
    }))
    .await;
    let mut created = BTreeSet::new();
    for r in &results {
        created.insert(r.assert_status(201)["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(created.len(), WRITERS);

    let log = audit_chain(&su, org).await;
    assert_eq!(
        log.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=start + WRITERS as i64).collect::<Vec<_>>(),
        "consecutive seqs, no gap, no fork"
    );
    let recorded: BTreeSet<String> = log
        .iter()
        .filter(|r| r.action == "project.created")
        .map(|r| r.targets[0]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recorded, created, "each creation once");
    let times: Vec<chrono::DateTime<chrono::Utc>> = su
        .query(
            "select occurred_at from app.audit_log where chain_id = $1 order by seq",
            &[&org],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "time follows seq: {times:?}"
    );
    assert_eq!(verify_chain(&su, org).await, None);
}

/// The actor is the verified caller and the context what the server saw: a signed-in
/// user's request is theirs, with the request id the server answered, the User-Agent
/// sent and the peer's address (not an X-Forwarded-For the client made up: no proxy is
/// trusted here); an API key's request is the key's.
#[tokio::test]
async fn actor_and_context_are_the_servers() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let org = owner.org_id;
    let su = app.sql_superuser().await;

    let user_agent = "palisade-audit-test/1.0 (+forged: admin)";
    let resp = app
        .send(
            app.http
                .post(format!("{}/v1/orgs/{org}/projects", app.base))
                .bearer_auth(&owner.token)
                .header("user-agent", user_agent)
                .header("x-forwarded-for", "203.0.113.66")
                .json(&json!({"name": "by a user"})),
        )
        .await;
    let project = resp.assert_status(201)["id"].as_str().unwrap().to_owned();
    let request_id = resp
        .headers
        .get("x-request-id")
        .expect("the server answers a request id")
        .to_str()
        .unwrap()
        .to_owned();
    let row = only(audit_rows(&su, org, "project.created").await);
    assert_eq!(row.targets[0]["id"], project);
    assert_eq!(
        (
            row.actor_type.as_str(),
            row.actor_id,
            row.actor_name.as_deref()
        ),
        ("user", Some(owner.user_id), Some(owner.email.as_str()))
    );
    assert_eq!(
        row.context,
        json!({"ip": "127.0.0.1", "user_agent": user_agent, "request_id": request_id})
    );

    // A request id the client chose is the one the server answers, and the one logged.
    let resp = app
        .send(
            app.http
                .patch(format!("{}/v1/orgs/{org}/projects/{project}", app.base))
                .bearer_auth(&owner.token)
                .header("x-request-id", "client-chosen-id-42")
                .json(&json!({"name": "renamed"})),
        )
        .await;
    resp.assert_status(200);
    assert_eq!(resp.headers["x-request-id"], "client-chosen-id-42");
    let row = only(audit_rows(&su, org, "project.updated").await);
    assert_eq!(row.context["request_id"], "client-chosen-id-42");
    assert_eq!(
        row.metadata["changes"]["name"],
        json!({"from": "by a user", "to": "renamed"})
    );

    // An API key's request: the key acts, named by its name and start.
    let created = app
        .post(
            &format!("/v1/orgs/{org}/api-keys"),
            &owner.token,
            json!({"name": "deploy bot", "role": "member"}),
        )
        .await;
    let created = created.assert_status(201);
    let key_id: Uuid = created["api_key"]["id"].as_str().unwrap().parse().unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let resp = app
        .send(
            app.http
                .post(format!("{}/v1/orgs/{org}/projects", app.base))
                .header("x-api-key", &secret)
                .header("user-agent", "deploy-bot/2")
                .json(&json!({"name": "by a key"})),
        )
        .await;
    let by_key = resp.assert_status(201)["id"].as_str().unwrap().to_owned();
    let rows = audit_rows(&su, org, "project.created").await;
    let row = rows
        .iter()
        .find(|r| r.targets[0]["id"] == by_key.as_str())
        .expect("the key's project is logged");
    assert_eq!(
        (row.actor_type.as_str(), row.actor_id),
        ("api_key", Some(key_id))
    );
    assert_eq!(
        row.actor_name.as_deref(),
        Some(format!("deploy bot ({}...)", &secret[..8]).as_str())
    );
    assert_eq!(row.context["user_agent"], "deploy-bot/2");
    assert_eq!(
        row.context["request_id"],
        resp.headers["x-request-id"].to_str().unwrap()
    );
    assert!(
        !row.to_text().contains(&secret[8..]),
        "no secret in the log"
    );
    assert_eq!(verify_chain(&su, org).await, None);
}

/// Request SQL cannot choose what the log says about it: the actor is the verified
/// context's, and an audit context the request role writes itself -- over the one the
/// server sealed, or replayed with the seal of an earlier transaction -- is logged as {}.
#[tokio::test]
async fn request_sql_cannot_forge_the_audit_context() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let org = owner.org_id;
    let (sid, proof) = app.session_proof(&owner);
    let mut db = app.sql_runtime().await;
    let meta = json!({"ip": "192.0.2.1", "user_agent": "real", "request_id": "real-id"});
    let forged = r#"{"ip": "203.0.113.66", "user_agent": "forged", "request_id": "forged-id"}"#;
    let set_meta = "select set_config('app.request_meta', $1, true), set_config('app.request_meta_mac', $2, true)";
    // A write transaction as the server runs it: the context with its sealed audit
    // context. Its project is logged with that context.
    let bind = "select app.set_request_context($1, $2, $3, $4)";
    let tx = db.transaction().await.unwrap();
    tx.query_one(bind, &[&sid, &proof, &org, &meta])
        .await
        .unwrap();
    let sealed: (String, String) = {
        let r = tx
            .query_one(
                "select current_setting('app.request_meta'), current_setting('app.request_meta_mac')",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    tx.execute("insert into app.projects (name) values ('sealed')", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The same, but the request's SQL rewrites the audit context before the commit.
    let tx = db.transaction().await.unwrap();
    tx.query_one(bind, &[&sid, &proof, &org, &meta])
        .await
        .unwrap();
    let mac: String = tx
        .query_one("select current_setting('app.request_meta_mac')", &[])
        .await
        .unwrap()
        .get(0);
    tx.query_one(set_meta, &[&forged, &mac]).await.unwrap();
    tx.execute("insert into app.projects (name) values ('rewritten')", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // A transaction with no audit context of its own replays the first one's, seal and
    // all.
    let tx = runtime_tx(&app, &mut db, &owner, Some(org)).await;
    tx.query_one(set_meta, &[&sealed.0, &sealed.1])
        .await
        .unwrap();
    tx.execute("insert into app.projects (name) values ('replayed')", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let su = app.sql_superuser().await;
    let rows = audit_rows(&su, org, "project.created").await;
    let context_of = |name: &str| {
        rows.iter()
            .find(|r| r.targets[0]["name"] == name)
            .unwrap_or_else(|| panic!("{name} logged: {rows:#?}"))
            .context
            .clone()
    };
    assert_eq!(context_of("sealed"), meta);
    assert_eq!(context_of("rewritten"), json!({}));
    assert_eq!(context_of("replayed"), json!({}));
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(
            (r.actor_type.as_str(), r.actor_id),
            ("user", Some(owner.user_id))
        );
    }
}

/// A failed sign-in of an existing account is in the account's chain and in the chain of
/// each of its orgs (their admins see their members' failures); a successful one too. An
/// unknown email has no log: nothing is written anywhere.
#[tokio::test]
async fn sign_ins_and_failures_are_logged_for_the_account_and_each_org() {
    let app = spawn_app().await;
    let t = team(&app, "Signins").await;
    let who = &t.member;
    let orgs = [who.org_id, t.org_id];
    let su = app.sql_superuser().await;
    let total = || {
        let su = &su;
        async move {
            su.query_one("select count(*) from app.audit_log", &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };

    let resp = app
        .send(
            app.http
                .post(format!("{}/v1/auth/login", app.base))
                .header("user-agent", "guesser/1")
                .json(&json!({"email": who.email, "password": "not the password"})),
        )
        .await;
    assert_eq!(resp.status.as_u16(), 401, "{}", resp.body);
    let request_id = resp.headers["x-request-id"].to_str().unwrap().to_owned();
    let target = json!([{"type": "user", "id": who.user_id, "name": who.email}]);
    for chain in std::iter::once(who.user_id).chain(orgs) {
        let row = only(audit_rows(&su, chain, "auth.login_failed").await);
        assert_eq!(row.metadata, json!({"reason": "invalid_password"}));
        assert_eq!(
            row.context,
            json!({"ip": "127.0.0.1", "user_agent": "guesser/1", "request_id": request_id}),
            "chain {chain}"
        );
        if chain != who.user_id {
            assert_eq!(row.targets, target, "the org's row names the account");
        }
        assert_eq!(verify_chain(&su, chain).await, None);
    }
    // Not in the chain of an org they do not belong to.
    assert!(
        audit_rows(&su, t.owner.org_id, "auth.login_failed")
            .await
            .is_empty()
    );

    // An unknown email: nothing, anywhere.
    let before = total().await;
    let unknown = format!("nobody-{}@example.com", Uuid::new_v4().simple());
    app.login(&unknown, "whatever it is")
        .await
        .assert_problem(401, "invalid_credentials");
    assert_eq!(total().await, before, "an unknown email writes nothing");

    // A successful sign-in: the same three chains.
    let logins = |chain: Uuid| {
        let su = &su;
        async move { audit_rows(su, chain, "auth.login").await.len() }
    };
    let counts_before = [
        logins(who.user_id).await,
        logins(orgs[0]).await,
        logins(orgs[1]).await,
    ];
    app.login(&who.email, PASSWORD).await.assert_status(200);
    let counts_after = [
        logins(who.user_id).await,
        logins(orgs[0]).await,
        logins(orgs[1]).await,
    ];
    assert_eq!(counts_after, counts_before.map(|n| n + 1));
}

/// Deleting an org leaves its log: still there, intact, ending with `org.deleted` by
/// the owner who deleted it; no request reads it any more (not the API, not request SQL
/// with its former owner's context). The retention purge removes it, and only it.
#[tokio::test]
async fn a_deleted_orgs_log_outlives_it_unreadable_until_purged() {
    let app = spawn_app().await;
    let owner = app.signup("Owner").await;
    let org = org_with_projects(&app, &owner, "Doomed", 2).await;
    let kept = org_with_projects(&app, &owner, "Kept", 1).await;
    let path = format!("/v1/orgs/{org}/audit-log");
    // A control: before, its owner reads it through the API.
    let page = app.get(&path, &owner.token).await;
    assert_eq!(
        page.assert_status(200)["items"].as_array().unwrap().len(),
        3
    );

    app.delete(&format!("/v1/orgs/{org}"), &owner.token)
        .await
        .assert_status(204);
    let su = app.sql_superuser().await;
    let log = audit_chain(&su, org).await;
    let actions: Vec<&str> = log.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "org.created",
            "project.created",
            "project.created",
            "org.deleted"
        ],
        "the projects that went with the org are not logged again"
    );
    let last = log.last().unwrap();
    assert_eq!(
        (last.actor_type.as_str(), last.actor_id),
        ("user", Some(owner.user_id))
    );
    assert_eq!(last.targets[0]["id"], org.to_string());
    assert_eq!(verify_chain(&su, org).await, None);

    // No request reads it: the API...
    app.get(&path, &owner.token)
        .await
        .assert_problem(404, "not_found");
    app.get(&format!("{path}/export"), &owner.token)
        .await
        .assert_problem(404, "not_found");
    // ... nor request SQL, with the former owner's context naming the org, or their
    // personal org, or none.
    let mut db = app.sql_runtime().await;
    for context in [Some(org), Some(owner.org_id), None] {
        let tx = runtime_tx(&app, &mut db, &owner, context).await;
        let seen: i64 = tx
            .query_one(
                "select count(*) from app.audit_log where chain_id = $1 or org_id = $1",
                &[&org],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(seen, 0, "context {context:?}");
        drop(tx);
    }
    // Still append-only while it is kept: only the purge deletes (and only the chains
    // of orgs that are gone).
    let jobs = app.sql_lane(Lane::Jobs).await;
    let purged: i64 = jobs
        .query_one("select app.purge_audit_log(interval '365 days')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(purged, 0, "within the retention");
    assert_eq!(audit_chain(&su, org).await.len(), 4);
    let purged: i64 = jobs
        .query_one("select app.purge_audit_log(interval '0 seconds')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(purged, 4, "exactly the deleted org's chain");
    assert!(audit_chain(&su, org).await.is_empty());
    assert_eq!(
        audit_chain(&su, kept).await.len(),
        2,
        "a live org's is kept"
    );
    assert_eq!(verify_chain(&su, kept).await, None);
}

/// `[org]` for a statement with a `$1`, else none.
fn org_param<'a>(sql: &str, org: &'a Uuid) -> Vec<&'a (dyn ToSql + Sync)> {
    if sql.contains("$1") {
        vec![org]
    } else {
        vec![]
    }
}

/// The one row of `rows`.
#[track_caller]
fn only(rows: Vec<AuditRow>) -> AuditRow {
    assert_eq!(rows.len(), 1, "{rows:#?}");
    rows.into_iter().next().unwrap()
}

impl AuditRow {
    /// Everything the row says, as text.
    fn to_text(&self) -> String {
        format!("{self:?}")
    }
}

/// An append is one audit row, `conversation.events_appended` with its sequence range,
/// whether or not its events carry usage: the counters it moves (cost, tokens) are the
/// append's, not a `conversation.updated` of their own. A change of the conversation's
/// own fields is still `conversation.updated`, with what changed.
#[tokio::test]
async fn an_append_is_one_audit_row_with_or_without_usage() {
    let app = spawn_app().await;
    let owner = app.signup("Ines").await;
    let org = owner.org_id;
    let conversation: Uuid =
        crate::workspace::conversation(&app, &owner, org, json!({"title": "Chat"}))
            .await
            .parse()
            .unwrap();
    let events = format!("/v1/orgs/{org}/conversations/{conversation}/events");
    app.post(
        &events,
        &owner.token,
        json!({"events": [{"type": "message"}]}),
    )
    .await
    .assert_status(201);
    let usage = json!({"cost": 0.25, "prompt_tokens": 12, "completion_tokens": 3});
    app.post(
        &events,
        &owner.token,
        json!({"events": [{"type": "llm", "usage": usage}, {"type": "llm", "usage": usage}]}),
    )
    .await
    .assert_status(201);
    app.patch(
        &format!("/v1/orgs/{org}/conversations/{conversation}"),
        &owner.token,
        json!({"title": "Chat 2"}),
    )
    .await
    .assert_status(200);
    let su = app.sql_superuser().await;
    let log = audit_chain(&su, org).await;
    let about: Vec<(&str, &Value)> = log
        .iter()
        .filter(|r| r.action.starts_with("conversation."))
        .map(|r| (r.action.as_str(), &r.metadata))
        .collect();
    let actions: Vec<&str> = about.iter().map(|(a, _)| *a).collect();
    assert_eq!(
        actions,
        [
            "conversation.created",
            "conversation.events_appended",
            "conversation.events_appended",
            "conversation.updated"
        ]
    );
    assert_eq!(about[2].1["first_seq"], 2);
    assert_eq!(about[2].1["last_seq"], 3);
    assert_eq!(
        about[3].1["changes"],
        json!({"title": {"from": "Chat", "to": "Chat 2"}}),
        "only the field the request changed"
    );
    // The counters did move.
    let row = su
        .query_one(
            "select prompt_tokens, completion_tokens, accumulated_cost::float8 from app.conversations where id = $1",
            &[&conversation],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 24);
    assert_eq!(row.get::<_, i64>(1), 6);
    assert!((row.get::<_, f64>(2) - 0.5).abs() < 1e-9);
    assert_eq!(verify_chain(&su, org).await, None);
}
