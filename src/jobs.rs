//! The background worker, on its own pool and role (palisade_jobs): delivers the email
//! outbox, turns queued password-reset requests into tokens and emails, moves the API calls
//! the limiter counted into the usage rollups, emails usage threshold notices, and deletes
//! expired rows, applies Stripe's webhook events and ends past_due grace periods. Every replica may run it: work is claimed with `for update skip locked`
//! (the API-call flush takes each counter row's lock).

use std::time::{Duration, Instant};

use crate::{
    crypto::tokens,
    db::{Access, DbError, Lane},
    email,
    state::State,
};

/// How often the outbox and the reset queue are polled.
const POLL: Duration = Duration::from_secs(2);
/// How often retention runs.
const PURGE_EVERY: Duration = Duration::from_secs(15 * 60);
/// How often past_due grace periods are checked.
const GRACE_CHECK_EVERY: Duration = Duration::from_secs(60);
/// Requests handled per transaction.
const RESET_BATCH: i32 = 20;
/// Usage notices emailed per transaction.
const NOTICE_BATCH: i32 = 20;
/// How often the API calls counted by the limiter are flushed into the rollups: what a
/// crash of the database may lose (the counters live in an UNLOGGED table).
pub const FLUSH_API_CALLS_EVERY: Duration = Duration::from_secs(10);

/// Moves the API calls counted by the limiter into the usage rollups; returns how many.
pub async fn flush_api_calls(state: &State) -> Result<i64, DbError> {
    let tx = state.db.begin_on(Lane::Jobs, Access::ReadWrite).await?;
    let moved = tx
        .query_one("select app.flush_api_calls()", &[])
        .await
        .map(|r| r.get::<_, i64>(0));
    tx.finish(moved).await
}

/// Emails the usage threshold notices not sent yet to each org's owners and admins;
/// returns how many emails were queued.
pub async fn send_usage_notices(state: &State) -> Result<usize, DbError> {
    let tx = state.db.begin_on(Lane::Jobs, Access::ReadWrite).await?;
    let result = async {
        let notices = tx
            .query(
                "select org_id, org_name, meter_key, period, threshold, used::text, quota, plan_id
                   from app.claim_usage_notices($1)",
                &[&NOTICE_BATCH],
            )
            .await?;
        let mut queued = 0;
        for n in notices {
            let (org_id, meter, period, threshold): (uuid::Uuid, String, chrono::NaiveDate, i32) =
                (n.get(0), n.get(2), n.get(3), n.get(4));
            let message = email::usage_notice(
                &state.auth.app_url,
                &email::UsageNotice {
                    org_name: n.get(1),
                    org_id,
                    meter: &meter,
                    period,
                    threshold,
                    used: n.get(5),
                    limit: n.get(6),
                    plan: n.get(7),
                },
            );
            let row = tx
                .query_one(
                    "select app.send_usage_notice($1, $2, $3, $4, $5, $6)",
                    &[
                        &org_id,
                        &meter,
                        &period,
                        &threshold,
                        &message.subject,
                        &state.outbox.seal(&message.body),
                    ],
                )
                .await?;
            queued += usize::try_from(row.get::<_, i32>(0)).unwrap_or(0);
        }
        Ok(queued)
    }
    .await;
    tx.finish(result).await
}

/// Handles queued password-reset requests; returns how many emails were queued.
pub async fn issue_password_resets(state: &State) -> Result<usize, DbError> {
    let tx = state.db.begin_on(Lane::Jobs, Access::ReadWrite).await?;
    let result = async {
        let requests = tx
            .query(
                "select id, email from app.claim_password_resets($1)",
                &[&RESET_BATCH],
            )
            .await?;
        let mut queued = 0;
        for request in requests {
            let id: i64 = request.get(0);
            let token = tokens::generate();
            let message =
                email::password_reset(&state.auth.app_url, &token, state.auth.password_reset_ttl);
            let row = tx
                .query_one(
                    "select app.issue_password_reset($1, $2, make_interval(secs => $3), $4, $5)",
                    &[
                        &id,
                        &tokens::hash(&token),
                        &state.auth.password_reset_ttl.as_secs_f64(),
                        &message.subject,
                        &state.outbox.seal(&message.body),
                    ],
                )
                .await?;
            queued += usize::from(row.get::<_, bool>(0));
        }
        Ok(queued)
    }
    .await;
    tx.finish(result).await
}

/// Deletes expired rows; returns (table, rows deleted) for tables that had some.
pub async fn purge_expired(state: &State) -> Result<Vec<(String, i64)>, DbError> {
    let tx = state.db.begin_on(Lane::Jobs, Access::ReadWrite).await?;
    let purged = tx
        .query("select table_name, deleted from app.purge_expired()", &[])
        .await;
    Ok(tx
        .finish(purged)
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .filter(|(_, n): &(String, i64)| *n > 0)
        .collect())
}

/// Runs until `shutdown` resolves.
pub async fn run(state: State, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut last_purge: Option<Instant> = None;
    let mut last_flush: Option<Instant> = None;
    let mut last_grace: Option<Instant> = None;
    let mut heads_written: Option<chrono::NaiveDate> = None;
    loop {
        let today = crate::audit_log::today();
        if heads_written != Some(today) {
            match crate::audit_log::write_chain_heads(&state, today).await {
                Ok(chains) => {
                    heads_written = Some(today);
                    tracing::info!(chains, %today, "audit log: chain heads stored");
                }
                Err(e) => tracing::warn!(error = %e, "worker: storing audit chain heads failed"),
            }
        }
        if last_flush.is_none_or(|t| t.elapsed() >= FLUSH_API_CALLS_EVERY) {
            match flush_api_calls(&state).await {
                Ok(_) => last_flush = Some(Instant::now()),
                Err(e) => tracing::warn!(error = %e, "worker: flushing API calls failed"),
            }
        }
        if let Err(e) = send_usage_notices(&state).await {
            tracing::warn!(error = %e, "worker: usage notices failed");
        }
        if let Err(e) = issue_password_resets(&state).await {
            tracing::warn!(error = %e, "worker: password resets failed");
        }
        if let Err(e) = email::sender::deliver_batch(&state.db, &state.outbox, &state.mailer).await
        {
            tracing::warn!(error = %e, "worker: email delivery failed");
        }
        match crate::billing::apply::apply_events(&state).await {
            Ok(0) => {}
            Ok(applied) => tracing::info!(applied, "billing: webhook events applied"),
            Err(e) => tracing::warn!(error = %e, "worker: applying billing events failed"),
        }
        if last_grace.is_none_or(|t| t.elapsed() >= GRACE_CHECK_EVERY) {
            match crate::billing::apply::expire_grace(&state).await {
                Ok(moved) => {
                    last_grace = Some(Instant::now());
                    if moved > 0 {
                        tracing::info!(
                            moved,
                            "billing: past_due grace ended, free plan's limits apply"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "worker: ending billing grace periods failed"),
            }
        }
        match crate::workspace::documents::process_documents(&state).await {
            Ok(0) => {}
            Ok(done) => tracing::info!(done, "documents: processed"),
            Err(e) => tracing::warn!(error = %e, "worker: document processing failed"),
        }
        match crate::workspace::purge::purge_objects(&state).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "storage: purged objects of deleted rows"),
            Err(e) => tracing::warn!(error = %e, "worker: object purge failed"),
        }
        if last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
            match purge_expired(&state).await {
                Ok(purged) => {
                    last_purge = Some(Instant::now());
                    for (table, deleted) in purged {
                        tracing::info!(table, deleted, "retention: expired rows deleted");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "worker: retention failed"),
            }
            match crate::audit_log::purge(&state).await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(deleted, "retention: deleted orgs' audit rows purged")
                }
                Err(e) => tracing::warn!(error = %e, "worker: audit log retention failed"),
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
