//! The audit log's housekeeping, outside any request: each day's chain heads written to
//! the object store, the retention purge of deleted orgs' chains, and the verification
//! behind `palisade audit-log verify`. The log itself is written by PostgreSQL
//! (policies/audit_log.sql); the API reads it (`api::tenancy::audit_log`).
//!
//! Why the heads leave the database: the hash chain shows any edit made through SQL that
//! leaves the chain's hashes as they were -- but a database superuser can rewrite a
//! chain and recompute every hash after the edit. The heads in the object store (another
//! system, other credentials) pin each chain's newest (seq, hash) as of each day, so such
//! a rewrite no longer matches them.

use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    db::{Access, DbError, Lane},
    state::State,
    storage::{ObjectKey, ObjectStore, Storage},
};

/// One chain's newest link, as the daily file records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainHead {
    pub chain_id: Uuid,
    /// `org` or `account`.
    pub scope: String,
    pub seq: i64,
    /// SHA-256, hex.
    pub hash: String,
}

/// Writes today's chain heads (every chain's newest link) to the object store; returns
/// how many chains it holds. Rewriting it later the same day only pins newer links.
pub async fn write_chain_heads(state: &State, day: NaiveDate) -> anyhow::Result<usize> {
    let tx = state.db.begin_on(Lane::Jobs, Access::ReadOnly).await?;
    let rows = tx
        .query(
            "select chain_id, scope, seq, hash from app.audit_chain_heads()",
            &[],
        )
        .await;
    let rows = tx.finish(rows).await?;
    let mut body = String::new();
    for r in &rows {
        let head = ChainHead {
            chain_id: r.get(0),
            scope: r.get(1),
            seq: r.get(2),
            hash: r.get(3),
        };
        body.push_str(&serde_json::to_string(&head)?);
        body.push('\n');
    }
    state
        .storage
        .put(
            &ObjectKey::audit_heads(day),
            body.into_bytes().into(),
            "application/x-ndjson",
        )
        .await?;
    Ok(rows.len())
}

/// Deletes the chains of orgs deleted more than `AUDIT_RETENTION_DAYS` ago.
pub async fn purge(state: &State) -> Result<i64, DbError> {
    let tx = state.db.begin_on(Lane::Jobs, Access::ReadWrite).await?;
    let days = i32::try_from(state.audit_retention_days).unwrap_or(i32::MAX);
    let row = tx
        .query_one(
            "select app.purge_audit_log(make_interval(days => $1))",
            &[&days],
        )
        .await;
    Ok(tx.finish(row).await?.get(0))
}

/// What `palisade audit-log verify` found.
#[derive(Debug, Default)]
pub struct Verification {
    pub chains: usize,
    pub rows: i64,
    pub head_files: usize,
    /// One line per problem: the chain, the seq, what is wrong.
    pub problems: Vec<String>,
}

/// Verifies every chain in the database (as the schema owner), then every stored chain
/// head against the rows it pins.
pub async fn verify(
    client: &tokio_postgres::Client,
    storage: &Storage,
) -> anyhow::Result<Verification> {
    let mut report = Verification::default();
    let chains = client
        .query(
            "select chain_id, seq from app.audit_chain_heads() order by chain_id",
            &[],
        )
        .await?;
    for chain in &chains {
        let chain_id: Uuid = chain.get(0);
        report.chains += 1;
        report.rows += chain.get::<_, i64>(1);
        for broken in client
            .query(
                "select seq, problem from app.verify_audit_chain($1)",
                &[&chain_id],
            )
            .await?
        {
            report.problems.push(format!(
                "chain {chain_id}: seq {}: {}",
                broken.get::<_, i64>(0),
                broken.get::<_, String>(1)
            ));
        }
    }
    let mut files = storage.list(ObjectKey::AUDIT_HEADS).await?;
    files.sort_by(|a, b| a.key.cmp(&b.key));
    for file in files {
        let Some(day) = file
            .key
            .strip_prefix(ObjectKey::AUDIT_HEADS)
            .and_then(|name| name.strip_suffix(".ndjson"))
            .and_then(|d| d.parse::<NaiveDate>().ok())
        else {
            continue;
        };
        report.head_files += 1;
        let body = storage.get(&ObjectKey::audit_heads(day)).await?;
        for line in String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| !l.is_empty())
        {
            let Ok(head) = serde_json::from_str::<ChainHead>(line) else {
                report
                    .problems
                    .push(format!("heads {day}: unreadable line {line:?}"));
                continue;
            };
            let now: Option<String> = client
                .query_one(
                    "select app.audit_hash_at($1, $2)",
                    &[&head.chain_id, &head.seq],
                )
                .await?
                .get(0);
            let org_gone = now.is_none()
                && client
                    .query_one(
                        "select not exists (select 1 from app.orgs where id = $1)
                            and not exists (select 1 from app.users where id = $1)",
                        &[&head.chain_id],
                    )
                    .await?
                    .get::<_, bool>(0);
            match now {
                Some(hash) if hash == head.hash => {}
                // Purged after its retention with its org: nothing left to compare.
                None if org_gone => {}
                Some(_) => report.problems.push(format!(
                    "chain {}: seq {}: hash differs from the head stored on {day} (history rewritten)",
                    head.chain_id, head.seq
                )),
                None => report.problems.push(format!(
                    "chain {}: seq {}: row missing, but the head stored on {day} names it (history truncated)",
                    head.chain_id, head.seq
                )),
            }
        }
    }
    Ok(report)
}

/// Today, as the heads files name days (UTC).
pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}
