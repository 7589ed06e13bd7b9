//! The background worker, on its own pool and role (palisade_jobs): delivers the email
//! outbox, turns queued password-reset requests into tokens and emails, and deletes
//! expired rows. Every replica may run it: work is claimed with `for update skip locked`.

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
/// Requests handled per transaction.
const RESET_BATCH: i32 = 20;

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
    loop {
        if let Err(e) = issue_password_resets(&state).await {
            tracing::warn!(error = %e, "worker: password resets failed");
        }
        if let Err(e) = email::sender::deliver_batch(&state.db, &state.outbox, &state.mailer).await
        {
            tracing::warn!(error = %e, "worker: email delivery failed");
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
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
