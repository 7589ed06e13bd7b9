//! Prometheus metrics, served on their own listener (`METRICS_ADDR`, off by default) at
//! `GET /metrics` in the text exposition format, through `metrics` +
//! `metrics-exporter-prometheus`.
//!
//! RED metrics per route *template* (`/v1/orgs/{org_id}/projects`, never a raw path),
//! method and status; latency histograms; each pool's size, idle connections and waiters;
//! database errors by SQLSTATE class; email outbox depth and age; argon2 permits in use;
//! rate-limit refusals by scope. Every label value comes from a bounded set: the spec's
//! templates (anything else is `unmatched`), seven methods (else `OTHER`), status codes,
//! the two-character SQLSTATE classes, the lanes and limiter scopes. No id ever becomes a
//! label, so a scan over a million ids adds no series.
//!
//! Without `METRICS_ADDR` no recorder is installed and every `metrics::` call is a no-op.

use std::{
    collections::HashSet,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{db::Lane, limits::Scope, state::AppState};

/// Requests answered, by route template, method and status.
pub const REQUESTS: &str = "palisade_http_requests_total";
/// Request latency in seconds, by route template and method.
pub const DURATION: &str = "palisade_http_request_duration_seconds";
/// Requests being handled now.
pub const IN_FLIGHT: &str = "palisade_http_requests_in_flight";
/// Database errors met by requests, by SQLSTATE class (`pool`, `connection` when there
/// is no SQLSTATE).
pub const DB_ERRORS: &str = "palisade_db_errors_total";
/// Requests refused by a rate limit, by scope (`api_key`, `user`, `ip`).
pub const RATE_LIMITED: &str = "palisade_rate_limit_rejections_total";

/// Latency buckets (seconds): 1 ms to 10 s.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
/// Set once a recorder is installed: until then the request path skips metrics entirely
/// (no route lookup, no label building).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether metrics are being recorded.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Installs the process-wide recorder (once; later calls return the same handle).
/// `None` when another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DURATION.to_owned()), &BUCKETS)
                .expect("non-empty buckets");
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    ENABLED.store(true, Ordering::Relaxed);
                    Some(handle)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        REQUESTS,
        "Requests answered, by route template, method and status."
    );
    metrics::describe_histogram!(
        DURATION,
        metrics::Unit::Seconds,
        "Request latency, by route template and method."
    );
    metrics::describe_gauge!(IN_FLIGHT, "Requests being handled now.");
    metrics::describe_counter!(
        DB_ERRORS,
        "Database errors met by requests, by SQLSTATE class (pool, connection without one)."
    );
    metrics::describe_counter!(RATE_LIMITED, "Requests refused by a rate limit, by scope.");
    metrics::describe_gauge!(
        "palisade_db_pool_connections",
        "Connections of each pool: open (size), idle, and the pool's maximum (max)."
    );
    metrics::describe_gauge!(
        "palisade_db_pool_waiting",
        "Callers waiting for a connection, by pool."
    );
    metrics::describe_gauge!(
        "palisade_email_outbox_pending",
        "Emails not yet delivered that will still be tried."
    );
    metrics::describe_gauge!(
        "palisade_email_outbox_oldest_pending_seconds",
        "Age of the oldest email still to be delivered (0 when none)."
    );
    metrics::describe_gauge!(
        "palisade_email_outbox_failed",
        "Emails given up after their last attempt (`palisade outbox` retries them)."
    );
    metrics::describe_gauge!(
        "palisade_argon2_permits_in_use",
        "Password hashes running now (of palisade_argon2_permits_max)."
    );
    metrics::describe_gauge!(
        "palisade_http_connections_open",
        "API connections open now (at most MAX_CONNECTIONS)."
    );
    metrics::describe_counter!(
        "palisade_http_connections_refused_total",
        "API connections refused with 503 too_many_connections at MAX_CONNECTIONS."
    );
    metrics::describe_gauge!(
        "palisade_argon2_permits_max",
        "Password hashes allowed at once (PASSWORD_HASH_CONCURRENCY)."
    );
}

/// Interns a label value for the life of the process: route templates are a bounded
/// set, computed once per app.
fn intern(value: &str) -> &'static str {
    static SEEN: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(v) = seen.get(value) {
        return v;
    }
    let leaked: &'static str = Box::leak(value.to_owned().into_boxed_str());
    seen.insert(leaked);
    leaked
}

/// The route templates of the API (from the OpenAPI document), for labels.
#[derive(Debug, Default)]
pub struct RouteLabels {
    templates: Vec<(Vec<&'static str>, &'static str)>,
}

/// A request that matches no template.
pub const UNMATCHED: &str = "unmatched";

impl RouteLabels {
    pub fn new<'a>(templates: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            templates: templates
                .into_iter()
                .map(|t| (t.split('/').map(intern).collect(), intern(t)))
                .collect(),
        }
    }

    /// The position of the template `path` matches (in the order given to `new`).
    pub fn position(&self, path: &str) -> Option<usize> {
        let n = path.split('/').count();
        self.templates.iter().position(|(template, _)| {
            template.len() == n
                && template.iter().zip(path.split('/')).all(|(t, s)| {
                    *t == s || (t.starts_with('{') && t.ends_with('}') && !s.is_empty())
                })
        })
    }

    /// The template `path` matches, or [`UNMATCHED`].
    pub fn route(&self, path: &str) -> &'static str {
        self.position(path)
            .map_or(UNMATCHED, |i| self.templates[i].1)
    }
}

/// A bounded method label.
pub fn method(method: &poem::http::Method) -> &'static str {
    use poem::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Counts a request as it starts; the guard counts it out when dropped.
pub fn request_started() -> Option<InFlight> {
    enabled().then(|| {
        metrics::gauge!(IN_FLIGHT).increment(1.0);
        InFlight
    })
}

pub struct InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT).decrement(1.0);
    }
}

/// Records one answered request; `route` names its template (asked only when metrics
/// are recorded).
pub fn request_done(
    route: impl FnOnce() -> &'static str,
    method: &poem::http::Method,
    status: u16,
    elapsed: Duration,
) {
    if !enabled() {
        return;
    }
    let (route, method) = (route(), self::method(method));
    metrics::counter!(REQUESTS, "route" => route, "method" => method, "status" => status_label(status))
        .increment(1);
    metrics::histogram!(DURATION, "route" => route, "method" => method)
        .record(elapsed.as_secs_f64());
}

fn status_label(status: u16) -> &'static str {
    static LABELS: OnceLock<Vec<&'static str>> = OnceLock::new();
    let labels = LABELS.get_or_init(|| (0..600).map(|s| intern(&s.to_string())).collect());
    labels.get(usize::from(status)).copied().unwrap_or("other")
}

/// Counts a database error by its SQLSTATE class.
pub fn db_error(class: &str) {
    if !enabled() {
        return;
    }
    let class = match class {
        "pool" => "pool",
        "connection" => "connection",
        c if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphanumeric()) => intern(c),
        _ => "other",
    };
    metrics::counter!(DB_ERRORS, "class" => class).increment(1);
}

/// Counts a request a rate limit refused.
pub fn rate_limited(scope: Scope) {
    if !enabled() {
        return;
    }
    metrics::counter!(RATE_LIMITED, "scope" => scope.policy_name()).increment(1);
}

/// Counts a connection refused at MAX_CONNECTIONS.
pub fn connection_refused() {
    if !enabled() {
        return;
    }
    metrics::counter!("palisade_http_connections_refused_total").increment(1);
}

/// Sets the gauges read at scrape time: pools and argon2 in memory, the outbox from the
/// database (on the worker's pool, at most one second; on failure the outbox gauges keep
/// their last values and the failure is logged).
pub async fn refresh(state: &AppState) {
    for lane in Lane::ALL {
        let status = state.db.pool_status(lane);
        let name = lane.name();
        let gauge = |s: &'static str| metrics::gauge!("palisade_db_pool_connections", "lane" => name, "state" => s);
        gauge("size").set(status.size as f64);
        gauge("idle").set(status.available as f64);
        gauge("max").set(status.max_size as f64);
        metrics::gauge!("palisade_db_pool_waiting", "lane" => name).set(status.waiting as f64);
    }
    metrics::gauge!("palisade_http_connections_open")
        .set(crate::http::accept::open_connections() as f64);
    let (in_use, max) = state.passwords.permits();
    metrics::gauge!("palisade_argon2_permits_in_use").set(in_use as f64);
    metrics::gauge!("palisade_argon2_permits_max").set(max as f64);
    match tokio::time::timeout(Duration::from_secs(1), state.db.outbox_stats()).await {
        Ok(Ok(stats)) => {
            metrics::gauge!("palisade_email_outbox_pending").set(stats.pending() as f64);
            metrics::gauge!("palisade_email_outbox_oldest_pending_seconds")
                .set(stats.oldest_pending_seconds.unwrap_or(0.0));
            metrics::gauge!("palisade_email_outbox_failed").set(stats.failed as f64);
        }
        Ok(Err(err)) => tracing::warn!(error = %err, "metrics: outbox stats failed"),
        Err(_) => tracing::warn!("metrics: outbox stats timed out"),
    }
}

/// The `/metrics` listener's app: `GET /metrics`, nothing else.
pub fn app(state: crate::state::State, handle: PrometheusHandle) -> impl poem::Endpoint {
    use poem::{EndpointExt, Response, Route, get, handler, web::Data};

    #[handler]
    async fn scrape(
        state: Data<&crate::state::State>,
        handle: Data<&PrometheusHandle>,
    ) -> Response {
        // The gauges are process-wide: one scrape at a time sets and renders them.
        static SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one = SCRAPE.lock().await;
        refresh(state.0).await;
        Response::builder()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(handle.render())
    }

    Route::new()
        .at("/metrics", get(scrape))
        .data(state)
        .data(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_by_template() {
        let labels = RouteLabels::new([
            "/v1/orgs",
            "/v1/orgs/{org_id}",
            "/v1/orgs/{org_id}/projects/{project_id}",
        ]);
        assert_eq!(labels.route("/v1/orgs"), "/v1/orgs");
        assert_eq!(
            labels.route("/v1/orgs/6f1c2d8e-0000-4000-8000-000000000001"),
            "/v1/orgs/{org_id}"
        );
        assert_eq!(
            labels.route("/v1/orgs/a/projects/b"),
            "/v1/orgs/{org_id}/projects/{project_id}"
        );
        assert_eq!(labels.route("/v1/orgs//projects/b"), UNMATCHED);
        assert_eq!(labels.route("/v1/orgs/a/other"), UNMATCHED);
        assert_eq!(labels.route("/wp-admin/6f1c2d8e"), UNMATCHED);
    }

    #[test]
    fn status_and_method_labels_are_bounded() {
        assert_eq!(status_label(404), "404");
        assert_eq!(status_label(999), "other");
        assert_eq!(method(&poem::http::Method::GET), "GET");
        let odd = poem::http::Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(method(&odd), "OTHER");
    }
}
