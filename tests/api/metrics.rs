//! `GET /metrics` (METRICS_ADDR): RED metrics by route template, pool, outbox, argon2 and
//! rate-limit gauges and counters, and labels that never carry an id.
//!
//! The recorder is process-wide and other tests run beside these, so counters are read
//! as lower bounds, and series are looked up by labels only these tests produce.

use std::{sync::Arc, time::Duration};

use palisade::{
    email::sender::deliver_batch,
    limits::{Quota, RateLimits},
    startup,
};
use uuid::Uuid;

use crate::helpers::{PASSWORD, TestApp, limits, settings, spawn_app, spawn_app_with};

async fn serve_metrics(app: &TestApp) -> String {
    let (addr, _task) = startup::serve_metrics(
        Arc::clone(&app.state),
        "127.0.0.1:0".parse().expect("an address"),
    )
    .await
    .expect("the metrics listener binds");
    format!("http://{addr}/metrics")
}

async fn scrape(url: &str) -> String {
    let resp = reqwest::get(url).await.expect("scrape");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    resp.text().await.unwrap()
}

/// The value of the one sample named `name` whose labels include every `labels` pair.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(matching.len() <= 1, "{name} {labels:?}: {matching:?}");
    matching.first().copied()
}

fn looks_like_uuid(s: &str) -> bool {
    s.as_bytes().windows(36).any(|w| {
        w.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
    })
}

#[tokio::test]
async fn requests_are_counted_by_route_template_and_no_id_becomes_a_label() {
    let app = spawn_app().await;
    let url = serve_metrics(&app).await;
    let user = app.signup("Metrics").await;
    let org = user.org_id;

    // 25 distinct project ids and 25 distinct unknown paths.
    let mut ids = Vec::new();
    for _ in 0..25 {
        let id = Uuid::new_v4();
        app.get(&format!("/v1/orgs/{org}/projects/{id}"), &user.token)
            .await
            .assert_problem(404, "not_found");
        let junk = Uuid::new_v4();
        app.get(&format!("/metrics-probe/{junk}/x"), &user.token)
            .await
            .assert_problem(404, "not_found");
        ids.push(id);
        ids.push(junk);
    }
    let project = app.create_project(&user, org, "Gauged").await;
    app.get(&format!("/v1/orgs/{org}/projects/{project}"), &user.token)
        .await
        .assert_status(200);

    let text = scrape(&url).await;
    let template = "/v1/orgs/{org_id}/projects/{project_id}";
    let not_found = sample(
        &text,
        "palisade_http_requests_total",
        &[("route", template), ("method", "GET"), ("status", "404")],
    )
    .expect("the 404s are counted under the template");
    assert!(not_found >= 25.0, "{not_found}");
    assert!(
        sample(
            &text,
            "palisade_http_requests_total",
            &[("route", template), ("method", "GET"), ("status", "200")],
        )
        .is_some_and(|n| n >= 1.0)
    );
    let unmatched = sample(
        &text,
        "palisade_http_requests_total",
        &[("route", "unmatched"), ("method", "GET"), ("status", "404")],
    )
    .expect("unknown paths share one label");
    assert!(unmatched >= 25.0, "{unmatched}");
    // Latency is a histogram (buckets, sum, count) per template and method.
    let count = sample(
        &text,
        "palisade_http_request_duration_seconds_count",
        &[("route", template), ("method", "GET")],
    )
    .expect("a latency histogram");
    assert!(count >= 26.0, "{count}");
    let slowest = sample(
        &text,
        "palisade_http_request_duration_seconds_bucket",
        &[("route", template), ("method", "GET"), ("le", "+Inf")],
    );
    assert_eq!(slowest, Some(count));

    // Bounded cardinality: no id (the ones used here or any other) in any label.
    for line in text.lines().filter(|l| l.starts_with("palisade_")) {
        assert!(!looks_like_uuid(line), "an id became a label: {line}");
    }
    for id in &ids {
        assert!(!text.contains(&id.to_string()));
    }
    assert!(!text.contains("metrics-probe"));

    // Pools and argon2, from the state.
    let max = sample(
        &text,
        "palisade_db_pool_connections",
        &[("lane", "request"), ("state", "max")],
    );
    assert_eq!(max, Some(settings().pool_size as f64));
    assert!(
        sample(
            &text,
            "palisade_db_pool_connections",
            &[("lane", "request"), ("state", "size")],
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert!(sample(&text, "palisade_db_pool_waiting", &[("lane", "jobs")]).is_some());
    assert_eq!(
        sample(&text, "palisade_argon2_permits_max", &[]),
        Some(settings().password_hash_concurrency as f64)
    );
    assert!(sample(&text, "palisade_argon2_permits_in_use", &[]).is_some());

    // The public port does not serve metrics.
    let public = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
}

#[tokio::test]
async fn outbox_depth_and_age_database_errors_and_rate_limit_refusals() {
    // Per-IP limit of 2 on the unauthenticated endpoints.
    let mut s = settings();
    let per_hour = |quota| {
        Some(Quota {
            quota,
            window: Duration::from_secs(3600),
        })
    };
    s.rate_limits = RateLimits {
        api_key: per_hour(1000),
        user: per_hour(1000),
        ip: per_hour(2),
    };
    let app = spawn_app_with(s, limits()).await;
    let url = serve_metrics(&app).await;
    let before = scrape(&url).await;
    let refused_before = sample(
        &before,
        "palisade_rate_limit_rejections_total",
        &[("scope", "ip")],
    )
    .unwrap_or(0.0);
    let unique_before =
        sample(&before, "palisade_db_errors_total", &[("class", "23")]).unwrap_or(0.0);

    // A registration queues a verification email; the same email again is a unique
    // violation (SQLSTATE class 23); the third request passes the IP limit.
    app.register("outbox@example.com", PASSWORD, "Outbox")
        .await
        .assert_status(201);
    app.register("outbox@example.com", PASSWORD, "Outbox")
        .await
        .assert_problem(409, "email_taken");
    app.register("late@example.com", PASSWORD, "Late")
        .await
        .assert_problem(429, "rate_limited");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let text = scrape(&url).await;
    let refused = sample(
        &text,
        "palisade_rate_limit_rejections_total",
        &[("scope", "ip")],
    )
    .expect("refusals are counted");
    assert!(
        refused >= refused_before + 1.0,
        "{refused_before} -> {refused}"
    );
    let unique = sample(&text, "palisade_db_errors_total", &[("class", "23")])
        .expect("database errors are counted by class");
    assert!(unique >= unique_before + 1.0, "{unique_before} -> {unique}");
    // The outbox gauges are this app's database's (set at this scrape).
    let pending = sample(&text, "palisade_email_outbox_pending", &[]).expect("outbox depth");
    assert_eq!(pending, 1.0, "one verification email waits");
    let age =
        sample(&text, "palisade_email_outbox_oldest_pending_seconds", &[]).expect("outbox age");
    assert!((1.0..600.0).contains(&age), "{age}");
    assert_eq!(
        sample(&text, "palisade_email_outbox_failed", &[]),
        Some(0.0)
    );

    // Given up (as after its tenth failed attempt): failed, not pending.
    app.sql_superuser()
        .await
        .execute("update app.email_outbox set attempts = 10", &[])
        .await
        .unwrap();
    assert_eq!(outbox(&scrape(&url).await), (0.0, 1.0, 0.0));

    // Back in line and delivered: nothing pending, nothing failed.
    app.sql_superuser()
        .await
        .execute("update app.email_outbox set attempts = 0", &[])
        .await
        .unwrap();
    let sent = deliver_batch(&app.state.db, &app.state.outbox, &app.state.mailer)
        .await
        .unwrap();
    assert_eq!(sent, 1);
    assert_eq!(outbox(&scrape(&url).await), (0.0, 0.0, 0.0));
}

/// The outbox gauges: pending, failed, oldest pending age.
fn outbox(text: &str) -> (f64, f64, f64) {
    let gauge = |name| sample(text, name, &[]).unwrap_or_else(|| panic!("{name} is exported"));
    (
        gauge("palisade_email_outbox_pending"),
        gauge("palisade_email_outbox_failed"),
        gauge("palisade_email_outbox_oldest_pending_seconds"),
    )
}
