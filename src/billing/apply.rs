//! The worker side of billing: applies stored webhook events, and ends past_due grace
//! periods.
//!
//! Order-safety by re-reading: for anything about a subscription (its own events, a
//! completed subscription checkout, an invoice paid or failed) the worker reads the
//! subscription's *current* state from Stripe's API and projects that, stamped with the
//! moment the read began; the database ignores a projection older than the stored one.
//! Events may arrive late, twice or out of order (`updated` before `created`, `deleted`
//! before `updated`): every one of them leads to the same, newest state. (Comparing the
//! events' own `created` instead would tie within a second, which is exactly when
//! `created` and `updated` of one checkout arrive.) Checkout Sessions end once
//! (in_progress -> completed | cancelled | error), so their events need no order.

use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use super::stripe::{Stripe, StripeError, id_of, unix_time};
use crate::{
    db::{Access, DbError, Lane, Tx},
    email,
    state::State,
};

/// Events claimed per batch.
const BATCH: i32 = 20;
/// How long a claimed event is left to its worker before another may take it.
const LEASE_SECONDS: f64 = 120.0;

/// Why an event could not be applied (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error("{0}")]
    Invalid(&'static str),
}

/// True for the event types the worker acts on; others are stored as ignored at once.
pub fn applies(kind: &str) -> bool {
    matches!(
        kind,
        "checkout.session.completed"
            | "checkout.session.async_payment_succeeded"
            | "checkout.session.async_payment_failed"
            | "checkout.session.expired"
            | "invoice.paid"
            | "invoice.payment_succeeded"
            | "invoice.payment_failed"
    ) || kind.starts_with("customer.subscription.")
}

/// Applies every due event; returns how many were handled (processed or ignored).
pub async fn apply_events(state: &State) -> Result<usize, DbError> {
    let Some(stripe) = state.stripe.as_deref() else {
        return Ok(0);
    };
    let mut handled = 0;
    loop {
        let tx = state.db.begin_on(Lane::Jobs, Access::ReadWrite).await?;
        let claimed = tx
            .query(
                "select id, type, payload from app.claim_billing_events($1, make_interval(secs => $2))",
                &[&BATCH, &LEASE_SECONDS],
            )
            .await;
        let claimed = tx.finish(claimed).await?;
        if claimed.is_empty() {
            return Ok(handled);
        }
        for row in &claimed {
            let (id, kind, payload): (String, String, Value) = (row.get(0), row.get(1), row.get(2));
            match apply(state, stripe, &id, &kind, &payload).await {
                Ok(outcome) => {
                    handled += 1;
                    tracing::info!(event = %id, kind, outcome, "billing: webhook event applied");
                }
                Err(e) => {
                    tracing::warn!(event = %id, kind, error = %e, "billing: applying a webhook event failed; will retry");
                    let tx = state.db.begin_on(Lane::Jobs, Access::ReadWrite).await?;
                    let done = tx
                        .execute(
                            "select app.billing_event_done($1, 'retry', $2)",
                            &[&id, &e.to_string()],
                        )
                        .await;
                    tx.finish(done).await?;
                }
            }
        }
    }
}

/// A subscription read from Stripe, ready to project.
struct Read {
    subscription: super::stripe::Subscription,
    read_at: chrono::DateTime<Utc>,
}

async fn read_subscription(stripe: &Stripe, id: &str) -> Result<Option<Read>, StripeError> {
    let read_at = Utc::now();
    match stripe.subscription(id).await {
        Ok(subscription) => Ok(Some(Read {
            subscription,
            read_at,
        })),
        // Not in this Stripe account (e.g. another environment's): nothing to project.
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The subscription an invoice belongs to (API versions before and after 2025-03-31).
fn invoice_subscription(invoice: &Value) -> Option<String> {
    id_of(&invoice["subscription"])
        .or_else(|| id_of(&invoice["parent"]["subscription_details"]["subscription"]))
}

/// Applies one event; returns what was done.
async fn apply(
    state: &State,
    stripe: &Stripe,
    id: &str,
    kind: &str,
    payload: &Value,
) -> Result<&'static str, ApplyError> {
    let object = &payload["data"]["object"];
    let object_id = id_of(&object["id"]).ok_or(ApplyError::Invalid("data.object.id is missing"))?;
    // What to read from Stripe first (outside the transaction), and what to record.
    let (subscription, checkout, failed_invoice) = match kind {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            let paid = object["payment_status"].as_str() != Some("unpaid");
            let amount = object["amount_total"].as_i64();
            let outcome = paid.then_some(("completed", amount));
            (id_of(&object["subscription"]), outcome, false)
        }
        "checkout.session.async_payment_failed" => (None, Some(("error", None)), false),
        "checkout.session.expired" => (None, Some(("cancelled", None)), false),
        k if k.starts_with("customer.subscription.") => (Some(object_id.clone()), None, false),
        "invoice.paid" | "invoice.payment_succeeded" => (invoice_subscription(object), None, false),
        "invoice.payment_failed" => (invoice_subscription(object), None, true),
        _ => {
            let tx = state.db.begin_on(Lane::Jobs, Access::ReadWrite).await?;
            let done = tx
                .execute("select app.billing_event_done($1, 'ignored')", &[&id])
                .await;
            tx.finish(done).await?;
            return Ok("ignored");
        }
    };
    let read = match &subscription {
        Some(sub) => read_subscription(stripe, sub).await?,
        None => None,
    };
    let tx = state.db.begin_on(Lane::Jobs, Access::ReadWrite).await?;
    let result = async {
        if let Some((outcome, amount)) = checkout {
            tx.query_one(
                "select org_id from app.billing_complete_checkout($1, $2, $3)",
                &[&object_id, &outcome, &amount],
            )
            .await?;
        }
        if let Some(read) = &read {
            sync(state, stripe, &tx, read).await?;
        }
        if failed_invoice {
            let org: Option<Uuid> = tx
                .query_one(
                    "select app.billing_payment_failed($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &id_of(&object["customer"]),
                        &object["metadata"]["org_id"].as_str(),
                        &object_id,
                        &object["amount_due"].as_i64(),
                        &object["currency"].as_str(),
                        &object["attempt_count"].as_i64().map(|n| n as i32),
                        &unix_time(&object["next_payment_attempt"]),
                    ],
                )
                .await?
                .get(0);
            if let Some(org) = org {
                let grace_days = state.billing_grace.as_secs().div_ceil(24 * 3600);
                let message = email::payment_failed(&state.auth.app_url, org, grace_days);
                email_owners(state, &tx, org, "payment_failed", &message).await?;
            }
        }
        tx.execute("select app.billing_event_done($1, 'processed')", &[&id])
            .await?;
        Ok::<_, ApplyError>("processed")
    }
    .await;
    tx.finish(result).await
}

/// Projects a subscription read; emails the owners when the org's plan changed.
async fn sync(state: &State, stripe: &Stripe, tx: &Tx, read: &Read) -> Result<(), ApplyError> {
    let s = &read.subscription;
    let row = tx
        .query_one(
            "select org_id, old_plan, new_plan, new_status from app.billing_sync_subscription(
                 $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, make_interval(secs => $12))",
            &[
                &s.id,
                &s.customer,
                &s.org_hint,
                &s.status,
                &s.price_id,
                &stripe.plan_of(&s.price_id),
                &s.current_period_start,
                &s.current_period_end,
                &s.cancel_at_period_end,
                &s.canceled_at,
                &read.read_at,
                &state.billing_grace.as_secs_f64(),
            ],
        )
        .await?;
    let org: Option<Uuid> = row.get(0);
    let (old, new, status): (Option<String>, Option<String>, Option<String>) =
        (row.get(1), row.get(2), row.get(3));
    if let (Some(org), Some(old), Some(new)) = (org, old, new)
        && old != new
    {
        let message = email::plan_changed(
            &state.auth.app_url,
            org,
            &old,
            &new,
            status.as_deref().unwrap_or("active"),
        );
        email_owners(state, tx, org, "plan_changed", &message).await?;
    }
    Ok(())
}

async fn email_owners(
    state: &State,
    tx: &Tx,
    org: Uuid,
    template: &str,
    message: &email::Message,
) -> Result<(), DbError> {
    tx.execute(
        "select app.billing_email_owners($1, $2, $3, $4)",
        &[
            &org,
            &template,
            &message.subject,
            &state.outbox.seal(&message.body),
        ],
    )
    .await?;
    Ok(())
}

/// Moves orgs whose past_due grace has ended to the default plan's limits, emailing their
/// owners; returns how many moved.
pub async fn expire_grace(state: &State) -> Result<usize, DbError> {
    let tx = state.db.begin_on(Lane::Jobs, Access::ReadWrite).await?;
    let result = async {
        let moved = tx
            .query(
                "select org_id, old_plan, new_plan from app.billing_expire_grace(make_interval(secs => $1))",
                &[&state.billing_grace.as_secs_f64()],
            )
            .await?;
        for row in &moved {
            let (org, old, new): (Uuid, String, String) = (row.get(0), row.get(1), row.get(2));
            let message = email::plan_changed(&state.auth.app_url, org, &old, &new, "past_due");
            email_owners(state, &tx, org, "plan_changed", &message).await?;
        }
        Ok(moved.len())
    }
    .await;
    tx.finish(result).await
}
