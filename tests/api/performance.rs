//! The request path's performance invariants that a test can hold without timing
//! anything: the list query is index-backed for the runtime role, with the policy
//! helpers evaluated once per statement (InitPlans), not per row.

use crate::helpers::spawn_app;

#[tokio::test]
async fn list_query_is_index_backed_under_rls() {
    let app = spawn_app().await;
    let a = app.signup("Alice").await;
    app.create_project(&a, a.org_id, "alpha").await;
    let claims = app.state.jwt.verify(&a.token).unwrap();
    let mut db = app.sql_runtime().await;
    let tx = db.transaction().await.unwrap();
    tx.query_one(
        "select app.set_request_context($1, $2, $3)",
        &[&claims.sid, &claims.sub, &a.org_id],
    )
    .await
    .unwrap();
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
