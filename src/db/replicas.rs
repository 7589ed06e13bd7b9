//! Read replicas (`DATABASE_REPLICA_URLS`) with read-your-writes.
//!
//! Read-only request transactions go to a healthy streaming replica, round robin; writes,
//! rate-limit statements and everything else stay on the primary. RLS works unchanged on
//! a replica: the context is transaction-local and the transaction is read only.
//!
//! **Health.** A prober samples the primary's WAL position (`pg_current_wal_lsn()`), then
//! each replica's replay position (`pg_last_wal_replay_lsn()`). A replica that has
//! replayed past the primary's sample holds every commit made before the sample was
//! taken, so its staleness is at most the time since its last such sample: that bound
//! is the replica's lag. Past `REPLICA_MAX_LAG_MS`, or when the probe fails, the replica
//! leaves the rotation; the next good probe brings it back.
//!
//! **Read-your-writes without sticky sessions.** A request that commits a write answers
//! with its commit LSN in the `Palisade-Consistency` header. A read presenting that
//! token goes to a replica only if the replica's replay position (as last probed; it
//! only grows) is at or past it, else to the primary. Without a token a read may lag by
//! up to `REPLICA_MAX_LAG_MS`.
//!
//! **Fallback.** A replica that fails at the start of a read (connection, pool) is taken
//! out at once and the read runs on the primary; a replica that does not know the
//! request's credential yet (a session or key minted after its replay position) or shows
//! the caller no membership is asked nothing more: the primary answers.

use std::{
    cell::Cell,
    future::Future,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;

/// A WAL position (`pg_lsn`): two 32-bit hex halves, `16/B374D848`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's text form; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (hi, lo) = text.trim().split_once('/')?;
        let valid =
            |h: &str| !h.is_empty() && h.len() <= 8 && h.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid(hi) || !valid(lo) {
            return None;
        }
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        Some(Lsn((hi << 32) | lo))
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The request's consistency: the token it presented, and the newest commit it made.
struct RequestConsistency {
    required: Option<Lsn>,
    committed: Cell<Option<Lsn>>,
}

tokio::task_local! {
    static CONSISTENCY: RequestConsistency;
}

/// Runs one request with its presented token (`required`); returns its output and the
/// LSN of its newest commit, if it committed a write while replicas are in use.
pub async fn scope<F: Future>(required: Option<Lsn>, f: F) -> (F::Output, Option<Lsn>) {
    let state = RequestConsistency {
        required,
        committed: Cell::new(None),
    };
    CONSISTENCY
        .scope(state, async move {
            let out = f.await;
            let committed = CONSISTENCY.try_with(|c| c.committed.get()).ok().flatten();
            (out, committed)
        })
        .await
}

/// The token this request presented (the newest of its own commits counts too).
fn required() -> Option<Lsn> {
    CONSISTENCY
        .try_with(|c| c.required.max(c.committed.get()))
        .ok()
        .flatten()
}

/// Whether a commit's LSN is wanted (the request runs in a [`scope`]).
pub(super) fn wants_commit_lsn() -> bool {
    CONSISTENCY.try_with(|_| ()).is_ok()
}

/// Records a commit of this request.
pub(super) fn record_commit(lsn: Lsn) {
    let _ = CONSISTENCY.try_with(|c| c.committed.set(c.committed.get().max(Some(lsn))));
}

/// One replica: its pool and what the prober last saw.
pub struct Replica {
    index: usize,
    pub(super) pool: Pool,
    up: AtomicBool,
    /// Replay position at the last good probe.
    replay: AtomicU64,
    /// Reads served (tests and metrics).
    reads: AtomicU64,
}

impl Replica {
    /// Out of the rotation until the next good probe.
    pub(super) fn mark_down(&self, why: &dyn std::fmt::Display) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(replica = self.index, error = %why, "read replica out of rotation");
            metrics::gauge!("palisade_db_replica_up", "replica" => label(self.index)).set(0.0);
        }
    }

    pub(super) fn served(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("palisade_db_reads_total", "target" => label(self.index)).increment(1);
    }
}

fn label(index: usize) -> &'static str {
    const LABELS: [&str; 8] = [
        "replica0", "replica1", "replica2", "replica3", "replica4", "replica5", "replica6",
        "replica7",
    ];
    LABELS.get(index).copied().unwrap_or("replica8+")
}

/// Every configured replica, and the rotation.
pub struct Replicas {
    list: Vec<Replica>,
    next: AtomicUsize,
    max_lag: Duration,
}

impl Replicas {
    pub fn new(pools: Vec<Pool>, max_lag: Duration) -> Arc<Self> {
        Arc::new(Self {
            list: pools
                .into_iter()
                .enumerate()
                .map(|(index, pool)| Replica {
                    index,
                    pool,
                    // Out until a probe has seen it caught up.
                    up: AtomicBool::new(false),
                    replay: AtomicU64::new(0),
                    reads: AtomicU64::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            max_lag,
        })
    }

    /// A replica for a read-only transaction of this request, if one is up and has
    /// replayed past the request's token.
    pub(super) fn pick(&self) -> Option<&Replica> {
        let required = required().map_or(0, |l| l.0);
        let n = self.list.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.list[(start + i) % n])
            .find(|r| r.up.load(Ordering::Acquire) && r.replay.load(Ordering::Acquire) >= required)
    }

    /// Reads each replica has served.
    pub fn reads(&self) -> Vec<u64> {
        self.list
            .iter()
            .map(|r| r.reads.load(Ordering::Relaxed))
            .collect()
    }

    /// Whether each replica is in the rotation.
    pub fn up(&self) -> Vec<bool> {
        self.list
            .iter()
            .map(|r| r.up.load(Ordering::Acquire))
            .collect()
    }

    /// How often the prober looks: a quarter of the allowed lag, 50 ms to 1 s.
    pub fn probe_interval(&self) -> Duration {
        (self.max_lag / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Probes until the `Replicas` are dropped. `primary` samples the primary's WAL
    /// position.
    pub fn spawn_prober(self: &Arc<Self>, primary: Pool) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            // When each replica was last seen holding every commit of a primary sample,
            // and that sample's time.
            let mut caught_up: Vec<Option<Instant>> = Vec::new();
            loop {
                let Some(replicas) = weak.upgrade() else {
                    return;
                };
                caught_up.resize(replicas.list.len(), None);
                replicas.probe(&primary, &mut caught_up).await;
                let interval = replicas.probe_interval();
                drop(replicas);
                tokio::time::sleep(interval).await;
            }
        });
    }

    async fn probe(&self, primary: &Pool, caught_up: &mut [Option<Instant>]) {
        let limit = self.probe_interval().max(Duration::from_millis(500));
        let sampled = Instant::now();
        let target = match tokio::time::timeout(limit, current_lsn(primary)).await {
            Ok(Ok(lsn)) => Some(lsn),
            _ => None,
        };
        for (replica, seen) in self.list.iter().zip(caught_up.iter_mut()) {
            let replay = match tokio::time::timeout(limit, replay_lsn(&replica.pool)).await {
                Ok(Ok(Some(lsn))) => lsn,
                Ok(Ok(None)) => {
                    replica.mark_down(&"not in recovery (not a standby)");
                    continue;
                }
                Ok(Err(err)) => {
                    replica.mark_down(&err);
                    continue;
                }
                Err(_) => {
                    replica.mark_down(&"probe timed out");
                    continue;
                }
            };
            replica.replay.fetch_max(replay.0, Ordering::AcqRel);
            if target.is_some_and(|t| replay >= t) {
                *seen = Some(sampled);
            }
            let lag = seen.map(|at| at.elapsed());
            metrics::gauge!("palisade_db_replica_lag_seconds", "replica" => label(replica.index))
                .set(lag.map_or(f64::INFINITY, |l| l.as_secs_f64()));
            match lag {
                Some(lag) if lag <= self.max_lag => {
                    if !replica.up.swap(true, Ordering::AcqRel) {
                        tracing::info!(
                            replica = replica.index,
                            lag_ms = lag.as_millis() as u64,
                            "read replica in rotation"
                        );
                    }
                    metrics::gauge!("palisade_db_replica_up", "replica" => label(replica.index))
                        .set(1.0);
                }
                _ => replica.mark_down(&format_args!(
                    "lagging more than {} ms",
                    self.max_lag.as_millis()
                )),
            }
        }
    }
}

async fn current_lsn(primary: &Pool) -> Result<Lsn, super::DbError> {
    let client = primary.get().await?;
    let row = client
        .query_typed_one("select pg_catalog.pg_current_wal_lsn()::text", &[])
        .await?;
    Ok(Lsn::parse(row.get(0)).unwrap_or(Lsn(u64::MAX)))
}

/// The replica's replay position; `None` when it is not a standby.
async fn replay_lsn(replica: &Pool) -> Result<Option<Lsn>, super::DbError> {
    let client = replica.get().await?;
    let row = client
        .query_typed_one(
            "select pg_catalog.pg_is_in_recovery(), pg_catalog.pg_last_wal_replay_lsn()::text",
            &[],
        )
        .await?;
    let in_recovery: bool = row.get(0);
    let replay: Option<&str> = row.get(1);
    Ok(in_recovery.then(|| replay.and_then(Lsn::parse)).flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_and_orders() {
        let a = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(a.0, (0x16 << 32) | 0xB374_D848);
        assert_eq!(a.to_string(), "16/B374D848");
        assert!(Lsn::parse("0/FF").unwrap() < Lsn::parse("1/0").unwrap());
        for bad in ["", "16", "/1", "1/", "x/1", "123456789/0", "1/2/3", "-1/0"] {
            assert_eq!(Lsn::parse(bad), None, "{bad}");
        }
    }
}
