//! Deleting objects whose rows are gone (the worker drains `app.storage_purge`), and
//! `palisade storage reconcile`: the orphans a crash between an object's PUT and its
//! row's commit leaves behind.

use std::time::{Duration, SystemTime};

use crate::{
    db::{Access, DbError, Lane},
    state::State,
    storage::{ListedObject, ObjectKey, ObjectStore, Storage},
};

/// Objects deleted per worker pass.
pub const PURGE_BATCH: i32 = 100;

/// One worker pass over the purge queue: leases due keys (committed first, so a crash
/// retries them after the lease), deletes the objects, forgets the done ones and records
/// why the others failed. Returns how many objects were deleted.
pub async fn purge_objects(state: &State) -> Result<usize, DbError> {
    let tx = state.db.begin_on(Lane::Jobs, Access::ReadWrite).await?;
    let claimed = tx
        .query(
            "select id, object_key from app.claim_storage_purge($1)",
            &[&PURGE_BATCH],
        )
        .await;
    let claimed = tx.finish(claimed).await?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let mut done: Vec<i64> = Vec::with_capacity(claimed.len());
    let mut failed: Vec<(i64, String)> = Vec::new();
    for row in &claimed {
        let (id, key): (i64, String) = (row.get(0), row.get(1));
        let deleted = match ObjectKey::from_stored(&key) {
            Ok(key) => state.storage.delete(&key).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match deleted {
            Ok(()) => done.push(id),
            Err(e) => failed.push((id, e)),
        }
    }
    let tx = state.db.begin_on(Lane::Jobs, Access::ReadWrite).await?;
    let recorded = async {
        tx.execute("select app.finish_storage_purge($1)", &[&done])
            .await?;
        for (id, error) in &failed {
            tracing::warn!(id, error, "storage purge: delete failed; retried later");
            tx.execute("select app.fail_storage_purge($1, $2)", &[id, error])
                .await?;
        }
        Ok::<_, DbError>(())
    }
    .await;
    tx.finish(recorded).await?;
    Ok(done.len())
}

/// What reconcile found.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Objects a committed row names.
    pub live: usize,
    /// Objects queued for purge (the worker deletes them).
    pub purging: usize,
    /// Orphans younger than the grace period: possibly an append in flight, left alone.
    pub young: usize,
    /// Orphans: no row names them.
    pub orphans: Vec<ListedObject>,
    /// Orphans deleted (with `--apply`).
    pub deleted: usize,
}

/// Lists every object under `orgs/`, asks the database which are live or queued, and
/// reports (or, with `apply`, deletes) the orphans older than `grace`. `db` is a
/// connection that may call `app.storage_key_states` (the worker role, or the owner).
pub async fn reconcile(
    db: &tokio_postgres::Client,
    storage: &Storage,
    apply: bool,
    grace: Duration,
) -> anyhow::Result<Reconciled> {
    let objects = storage.list(ObjectKey::ROOT).await?;
    let mut report = Reconciled::default();
    let now = SystemTime::now();
    for chunk in objects.chunks(1000) {
        let keys: Vec<&str> = chunk.iter().map(|o| o.key.as_str()).collect();
        let states = db
            .query(
                "select object_key, state from app.storage_key_states($1)",
                &[&keys],
            )
            .await?;
        let state_of: std::collections::HashMap<&str, &str> =
            states.iter().map(|r| (r.get(0), r.get(1))).collect();
        for object in chunk {
            match state_of.get(object.key.as_str()).copied() {
                Some("live") => report.live += 1,
                Some(_) => report.purging += 1,
                None => {
                    let age = object
                        .last_modified
                        .and_then(|t| now.duration_since(t).ok())
                        .unwrap_or(Duration::MAX);
                    if age < grace {
                        report.young += 1;
                    } else {
                        report.orphans.push(object.clone());
                    }
                }
            }
        }
    }
    if apply {
        for orphan in &report.orphans {
            storage
                .delete(&ObjectKey::from_stored(&orphan.key)?)
                .await?;
            report.deleted += 1;
        }
    }
    Ok(report)
}
