//! Usage metering (issue 11): customer meters, idempotent ingestion with per-event
//! verdicts, every aggregation against a brute-force computation, the timestamp window,
//! thresholds exactly once under concurrency, API calls counted by the limiter statement,
//! the report as JSON and CSV, bad input, and cross-tenant attempts.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Signup, TestApp, TestResponse, limits, settings, spawn_app, spawn_app_with};

/// A signed-up user whose personal org is on `plan`.
async fn user_on(app: &TestApp, name: &str, plan: &str) -> Signup {
    let user = app.signup(name).await;
    app.set_plan(user.org_id, plan).await;
    user
}

async fn meter(app: &TestApp, who: &Signup, body: Value) {
    app.post(&format!("/v1/orgs/{}/meters", who.org_id), &who.token, body)
        .await
        .assert_status(201);
}

async fn ingest(app: &TestApp, who: &Signup, events: Value) -> TestResponse {
    app.post(
        &format!("/v1/orgs/{}/usage-events", who.org_id),
        &who.token,
        json!({ "events": events }),
    )
    .await
}

async fn usage(app: &TestApp, who: &Signup) -> BTreeMap<String, Value> {
    let resp = app
        .get(&format!("/v1/orgs/{}/usage", who.org_id), &who.token)
        .await;
    resp.assert_status(200)["meters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["meter"].as_str().unwrap().to_owned(), m.clone()))
        .collect()
}

fn used(u: &BTreeMap<String, Value>, meter: &str) -> f64 {
    u[meter]["used"].as_f64().unwrap()
}

async fn scalar(app: &TestApp, sql: &str, org: Uuid) -> i64 {
    app.sql_superuser()
        .await
        .query_one(sql, &[&org])
        .await
        .unwrap()
        .get(0)
}

/// The first instant of the current month (UTC).
fn period_start(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .unwrap()
}

#[tokio::test]
async fn every_aggregation_matches_a_brute_force_computation_over_the_events() {
    let app = spawn_app().await;
    let u = user_on(&app, "Agg", "pro").await;
    meter(
        &app,
        &u,
        json!({"key": "tokens", "name": "Tokens", "aggregation": "sum", "unit": "tokens"}),
    )
    .await;
    meter(
        &app,
        &u,
        json!({"key": "calls", "name": "Calls", "aggregation": "count"}),
    )
    .await;
    meter(
        &app,
        &u,
        json!({"key": "peak", "name": "Peak", "aggregation": "max", "value_property": "gb"}),
    )
    .await;
    meter(&app, &u, json!({"key": "users", "name": "Users", "aggregation": "unique_count", "value_property": "user"})).await;
    meter(
        &app,
        &u,
        json!({"key": "subjects", "name": "Subjects", "aggregation": "unique_count"}),
    )
    .await;
    meter(
        &app,
        &u,
        json!({"key": "seats.now", "name": "Seats now", "aggregation": "latest"}),
    )
    .await;

    // Deterministic pseudo-random events over the last 40 days (some too old, some in
    // the previous month: late), in batches that repeat some ids.
    let now = Utc::now();
    let start = period_start(now);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let meters = ["tokens", "calls", "peak", "users", "subjects", "seats.now"];
    let mut all: Vec<Value> = Vec::new();
    for i in 0..600 {
        let m = meters[(next() % 6) as usize];
        let ts = now - Duration::seconds((next() % (40 * 86400)) as i64);
        let value = (next() % 10_000) as f64 / 100.0;
        all.push(json!({
            "id": format!("ev-{i}"),
            "meter": m,
            "value": value,
            "subject": format!("cust-{}", next() % 17),
            "timestamp": ts,
            "properties": {"gb": (next() % 500) as f64 / 10.0, "user": format!("u{}", next() % 23)},
        }));
    }
    let mut accepted_ids = BTreeSet::new();
    for chunk in 0..4usize {
        // Each batch overlaps the previous one by 50 events.
        let from = (chunk * 150).saturating_sub(50);
        let batch: Vec<Value> = all[from..(chunk + 1) * 150].to_vec();
        let resp = ingest(&app, &u, Value::Array(batch.clone())).await;
        let body = resp.assert_status(200).clone();
        let rejected: BTreeSet<usize> = body["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["index"].as_u64().unwrap() as usize)
            .collect();
        let mut expect_accepted = 0;
        let mut expect_dupes = 0;
        for (i, e) in batch.iter().enumerate() {
            let ts: DateTime<Utc> = e["timestamp"].as_str().unwrap().parse().unwrap();
            let too_old = ts < now - Duration::days(35);
            assert_eq!(rejected.contains(&i), too_old, "event {e}: {body}");
            if too_old {
                continue;
            }
            if accepted_ids.insert(e["id"].as_str().unwrap().to_owned()) {
                expect_accepted += 1;
            } else {
                expect_dupes += 1;
            }
        }
        assert_eq!(body["accepted"], expect_accepted, "{body}");
        assert_eq!(body["duplicates"], expect_dupes, "{body}");
        for r in body["rejected"].as_array().unwrap() {
            assert_eq!(r["reason"], "timestamp_too_old");
        }
    }

    // Brute force over what was accepted: a late event counts at the period's start.
    let kept: Vec<&Value> = all
        .iter()
        .filter(|e| accepted_ids.contains(e["id"].as_str().unwrap()))
        .collect();
    let of = |m: &'static str| kept.iter().filter(move |e| e["meter"] == m).copied();
    let eff = |e: &Value| {
        let ts: DateTime<Utc> = e["timestamp"].as_str().unwrap().parse().unwrap();
        ts.max(start)
    };
    let sum: f64 = of("tokens").map(|e| e["value"].as_f64().unwrap()).sum();
    let count = of("calls").count() as f64;
    let max = of("peak")
        .map(|e| e["properties"]["gb"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let users: BTreeSet<String> = of("users")
        .map(|e| e["properties"]["user"].as_str().unwrap().to_owned())
        .collect();
    let subjects: BTreeSet<String> = of("subjects")
        .map(|e| e["subject"].as_str().unwrap().to_owned())
        .collect();
    let latest = of("seats.now")
        .max_by(|a, b| eff(a).cmp(&eff(b)))
        .map(|e| e["value"].as_f64().unwrap())
        .unwrap();
    let late = kept
        .iter()
        .filter(|e| {
            let ts: DateTime<Utc> = e["timestamp"].as_str().unwrap().parse().unwrap();
            ts < start
        })
        .count() as i64;

    let got = usage(&app, &u).await;
    assert!(
        (used(&got, "tokens") - sum).abs() < 1e-6,
        "sum {} vs {sum}",
        used(&got, "tokens")
    );
    assert_eq!(used(&got, "calls"), count);
    assert_eq!(used(&got, "peak"), max);
    assert_eq!(used(&got, "users"), users.len() as f64);
    assert_eq!(used(&got, "subjects"), subjects.len() as f64);
    assert_eq!(used(&got, "seats.now"), latest);
    assert_eq!(used(&got, "events"), kept.len() as f64);
    let late_reported: i64 = got
        .values()
        .filter(|m| m["kind"] == "custom")
        .map(|m| m["late_events"].as_i64().unwrap())
        .sum();
    assert_eq!(late_reported, late);
    assert_eq!(got["events"]["late_events"], late);

    // The rollups also match the raw events in the database (the same brute force in SQL).
    let raw_sum: f64 = app
        .sql_superuser()
        .await
        .query_one("select coalesce(sum(value), 0)::float8 from app.usage_events where org_id = $1 and meter_key = 'tokens'", &[&u.org_id])
        .await
        .unwrap()
        .get(0);
    assert!((raw_sum - sum).abs() < 1e-6);

    // Daily: every day of the range; the days add up to the period (sum and count), and
    // each day's distinct count is that day's distinct values.
    let today = now.date_naive();
    let from = start.date_naive();
    for (m, check_total) in [
        ("tokens", Some(sum)),
        ("calls", Some(count)),
        ("users", None),
    ] {
        let resp = app
            .get(
                &format!(
                    "/v1/orgs/{}/usage/daily?meter={m}&from={from}&to={today}",
                    u.org_id
                ),
                &u.token,
            )
            .await;
        let body = resp.assert_status(200);
        let days = body["days"].as_array().unwrap();
        assert_eq!(days.len() as i64, (today - from).num_days() + 1);
        let by_day: BTreeMap<NaiveDate, f64> = days
            .iter()
            .map(|d| {
                (
                    d["day"].as_str().unwrap().parse().unwrap(),
                    d["value"].as_f64().unwrap(),
                )
            })
            .collect();
        if let Some(total) = check_total {
            let s: f64 = by_day.values().sum();
            assert!((s - total).abs() < 1e-6, "{m}: {s} vs {total}");
        } else {
            for (day, v) in &by_day {
                let distinct: BTreeSet<&str> = of("users")
                    .filter(|e| eff(e).date_naive() == *day)
                    .map(|e| e["properties"]["user"].as_str().unwrap())
                    .collect();
                assert_eq!(*v, distinct.len() as f64, "{m} on {day}");
            }
        }
    }
}

#[tokio::test]
async fn each_event_is_judged_alone_and_a_bad_one_does_not_fail_the_batch() {
    let app = spawn_app().await;
    let u = user_on(&app, "Judge", "pro").await;
    meter(
        &app,
        &u,
        json!({"key": "tokens", "name": "Tokens", "aggregation": "sum"}),
    )
    .await;
    meter(
        &app,
        &u,
        json!({"key": "gb", "name": "GB", "aggregation": "max", "value_property": "gb"}),
    )
    .await;
    meter(
        &app,
        &u,
        json!({"key": "who", "name": "Who", "aggregation": "unique_count"}),
    )
    .await;
    let now = Utc::now();
    let resp = ingest(&app, &u, json!([
        {"id": "ok-1", "meter": "tokens", "value": 5, "timestamp": now},
        {"id": "bad-meter", "meter": "nope", "value": 1, "timestamp": now},
        {"id": "old", "meter": "tokens", "value": 1, "timestamp": now - Duration::days(36)},
        {"id": "future", "meter": "tokens", "value": 1, "timestamp": now + Duration::minutes(6)},
        {"id": "soon", "meter": "tokens", "value": 2, "timestamp": now + Duration::minutes(4)},
        {"id": "no-value", "meter": "tokens", "timestamp": now},
        {"id": "text-gb", "meter": "gb", "timestamp": now, "properties": {"gb": "lots"}},
        {"id": "no-subject", "meter": "who", "timestamp": now},
        {"id": "ok-1", "meter": "tokens", "value": 5, "timestamp": now},
        {"id": "nul", "meter": "tokens", "value": 1, "timestamp": now, "properties": {"note": "a\u{0}b"}},
        {"id": "huge-gb", "meter": "gb", "timestamp": now, "properties": {"gb": 1e300}},
    ])).await;
    let body = resp.assert_status(200);
    assert_eq!(body["accepted"], 2, "{body}");
    assert_eq!(body["duplicates"], 1, "{body}");
    let reasons: Vec<(u64, &str)> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            (1, "unknown_meter"),
            (2, "timestamp_too_old"),
            (3, "timestamp_in_future"),
            (5, "missing_value"),
            (6, "invalid_value"),
            (7, "missing_subject"),
            (9, "invalid_event"),
            (10, "invalid_value"),
        ]
    );
    assert_eq!(used(&usage(&app, &u).await, "tokens"), 7.0);
}

/// A repeated id in one batch: the first occurrence is the one stored and counted, with or
/// without a hard event limit (the two paths of `app.ingest_usage_events`), and a batch
/// holding only valid events reports nothing rejected.
#[tokio::test]
async fn a_repeated_id_in_one_batch_keeps_its_first_occurrence() {
    for plan in ["soft", "hard"] {
        let app = spawn_app().await;
        if plan == "hard" {
            app.sql_superuser()
                .await
                .execute(
                    "update app.plan_limits set included = 1000, enforcement = 'hard' \
                     where plan_id = 'pro' and meter = 'events'",
                    &[],
                )
                .await
                .unwrap();
        }
        let u = user_on(&app, &format!("First-{plan}"), "pro").await;
        meter(
            &app,
            &u,
            json!({"key": "tokens", "name": "Tokens", "aggregation": "sum"}),
        )
        .await;
        let now = Utc::now();
        let body = ingest(
            &app,
            &u,
            json!([
                {"id": "b", "meter": "tokens", "value": 3, "timestamp": now},
                {"id": "a", "meter": "tokens", "value": 10, "timestamp": now},
                {"id": "b", "meter": "tokens", "value": 500, "timestamp": now},
                {"id": "a", "meter": "tokens", "value": 700, "timestamp": now},
            ]),
        )
        .await
        .assert_status(200)
        .clone();
        assert_eq!(body["accepted"], 2, "{plan}: {body}");
        assert_eq!(body["duplicates"], 2, "{plan}: {body}");
        assert_eq!(body["rejected"], json!([]), "{plan}: {body}");
        assert_eq!(used(&usage(&app, &u).await, "tokens"), 13.0, "{plan}");
        let stored = scalar(
            &app,
            "select sum(value)::bigint from app.usage_events where org_id = $1",
            u.org_id,
        )
        .await;
        assert_eq!(stored, 13, "{plan}");
    }
}

#[tokio::test]
async fn bad_batches_are_4xx_problems_and_count_nothing() {
    // The server's default body limit (1 MiB), so 1,001 events are judged by count.
    let mut http = limits();
    http.max_body_bytes = 1024 * 1024;
    let app = spawn_app_with(settings(), http).await;
    let u = user_on(&app, "Bad", "pro").await;
    meter(
        &app,
        &u,
        json!({"key": "tokens", "name": "Tokens", "aggregation": "sum"}),
    )
    .await;
    let now = Utc::now();
    let ev =
        |i: usize| json!({"id": format!("e{i}"), "meter": "tokens", "value": 1, "timestamp": now});
    // A non-numeric value for a sum: the schema refuses the whole batch.
    let resp = ingest(
        &app,
        &u,
        json!([ev(0), {"id": "x", "meter": "tokens", "value": "abc", "timestamp": now}]),
    )
    .await;
    resp.assert_problem(422, "validation_failed");
    // 1,001 events.
    let resp = ingest(&app, &u, Value::Array((0..1001).map(ev).collect())).await;
    resp.assert_problem(422, "validation_failed");
    // A value beyond 10^15, a meter key that is no key, an id that is blank.
    ingest(
        &app,
        &u,
        json!([{"id": "v", "meter": "tokens", "value": 2e15, "timestamp": now}]),
    )
    .await
    .assert_problem(422, "validation_failed");
    ingest(
        &app,
        &u,
        json!([{"id": "v", "meter": "Tokens!", "value": 1, "timestamp": now}]),
    )
    .await
    .assert_problem(422, "validation_failed");
    ingest(
        &app,
        &u,
        json!([{"id": "  ", "meter": "tokens", "value": 1, "timestamp": now}]),
    )
    .await
    .assert_problem(422, "validation_failed");
    // Empty, and a timestamp that is not one.
    ingest(&app, &u, json!([]))
        .await
        .assert_problem(422, "validation_failed");
    ingest(
        &app,
        &u,
        json!([{"id": "t", "meter": "tokens", "value": 1, "timestamp": "yesterday"}]),
    )
    .await
    .assert_problem(422, "validation_failed");
    // 2 MB.
    let big = json!({"events": [{"id": "big", "meter": "tokens", "value": 1, "timestamp": now,
                                  "properties": {"blob": "x".repeat(2 * 1024 * 1024)}}]});
    let resp = app
        .post(
            &format!("/v1/orgs/{}/usage-events", u.org_id),
            &u.token,
            big,
        )
        .await;
    resp.assert_problem(413, "payload_too_large");
    // An unknown meter for creation, a reserved key, a bad aggregation.
    let path = format!("/v1/orgs/{}/meters", u.org_id);
    app.post(
        &path,
        &u.token,
        json!({"key": "events", "name": "E", "aggregation": "sum"}),
    )
    .await
    .assert_problem(422, "validation_failed");
    app.post(
        &path,
        &u.token,
        json!({"key": "x", "name": "X", "aggregation": "median"}),
    )
    .await
    .assert_problem(422, "validation_failed");
    app.post(
        &path,
        &u.token,
        json!({"key": "tokens", "name": "Again", "aggregation": "sum"}),
    )
    .await
    .assert_problem(409, "meter_key_taken");
    assert_eq!(
        scalar(
            &app,
            "select count(*) from app.usage_events where org_id = $1",
            u.org_id
        )
        .await,
        0
    );
    assert_eq!(used(&usage(&app, &u).await, "tokens"), 0.0);
}

#[tokio::test]
async fn daily_ranges_are_checked() {
    let app = spawn_app().await;
    let u = user_on(&app, "Days", "pro").await;
    let path = format!("/v1/orgs/{}/usage/daily?meter=api_calls", u.org_id);
    let resp = app.get(&path, &u.token).await;
    assert_eq!(
        resp.assert_status(200)["days"].as_array().unwrap().len(),
        30,
        "the last 30 days by default"
    );
    app.get(&format!("{path}&from=2026-02-30"), &u.token)
        .await
        .assert_problem(400, "invalid_date");
    app.get(&format!("{path}&from=2026-03-02&to=2026-03-01"), &u.token)
        .await
        .assert_problem(400, "invalid_range");
    app.get(&format!("{path}&from=2024-01-01&to=2026-01-01"), &u.token)
        .await
        .assert_problem(400, "invalid_range");
    app.get(
        &format!("/v1/orgs/{}/usage/daily?meter=A%00b", u.org_id),
        &u.token,
    )
    .await
    .assert_problem(400, "invalid_parameter");
    app.get(&format!("/v1/orgs/{}/meters/a%00b", u.org_id), &u.token)
        .await
        .assert_problem(404, "not_found");
    app.get(&format!("{path}&from=yesterday"), &u.token)
        .await
        .assert_problem(400, "invalid_parameter");
    app.get(
        &format!("/v1/orgs/{}/usage/daily?meter=projects", u.org_id),
        &u.token,
    )
    .await
    .assert_problem(404, "not_found");
}

#[tokio::test]
async fn the_same_batches_in_parallel_are_counted_once() {
    let app = spawn_app().await;
    let u = user_on(&app, "Par", "pro").await;
    meter(
        &app,
        &u,
        json!({"key": "tokens", "name": "Tokens", "aggregation": "sum"}),
    )
    .await;
    meter(
        &app,
        &u,
        json!({"key": "users", "name": "Users", "aggregation": "unique_count"}),
    )
    .await;
    let now = Utc::now();
    // 8 overlapping batches of 100 over 300 distinct ids.
    let batches: Vec<Value> = (0..8)
        .map(|b| {
            Value::Array(
                (0..100)
                    .map(|i| {
                        let n = (b * 37 + i) % 300;
                        json!({"id": format!("id-{n}"), "meter": if n % 2 == 0 { "tokens" } else { "users" },
                               "value": n, "subject": format!("s{}", n % 41), "timestamp": now})
                    })
                    .collect(),
            )
        })
        .collect();
    let distinct: BTreeSet<String> = batches
        .iter()
        .flat_map(|b| {
            b.as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned())
        })
        .collect();
    let results =
        futures_util::future::join_all(batches.iter().map(|b| ingest(&app, &u, b.clone()))).await;
    let accepted: i64 = results
        .iter()
        .map(|r| r.assert_status(200)["accepted"].as_i64().unwrap())
        .sum();
    let dupes: i64 = results
        .iter()
        .map(|r| r.body["duplicates"].as_i64().unwrap())
        .sum();
    assert_eq!(accepted as usize, distinct.len());
    assert_eq!(accepted + dupes, 800);
    let expected_sum: f64 = distinct
        .iter()
        .map(|id| id[3..].parse::<f64>().unwrap())
        .filter(|n| *n as i64 % 2 == 0)
        .sum();
    let expected_users: BTreeSet<i64> = distinct
        .iter()
        .map(|id| id[3..].parse::<i64>().unwrap())
        .filter(|n| n % 2 == 1)
        .map(|n| n % 41)
        .collect();
    let got = usage(&app, &u).await;
    assert_eq!(used(&got, "tokens"), expected_sum);
    assert_eq!(used(&got, "users"), expected_users.len() as f64);
    assert_eq!(used(&got, "events"), distinct.len() as f64);
    // The same batch again: all duplicates.
    let again = ingest(&app, &u, batches[0].clone()).await;
    assert_eq!(again.assert_status(200)["duplicates"], 100);
    assert_eq!(again.body["accepted"], 0);
}

#[tokio::test]
async fn thresholds_fire_once_each_under_concurrent_ingestion_and_email_admins() {
    let app = spawn_app().await;
    let u = user_on(&app, "Thr", "pro").await;
    let su = app.sql_superuser().await;
    // A DBA's pro plan with 100 events a month (soft: past it, overage).
    su.execute(
        "update app.plan_limits set included = 100 where plan_id = 'pro' and meter = 'events'",
        &[],
    )
    .await
    .unwrap();
    meter(
        &app,
        &u,
        json!({"key": "calls", "name": "Calls", "aggregation": "count"}),
    )
    .await;
    let now = Utc::now();
    let batches = (0..10).map(|b| {
        let events: Vec<Value> = (0..15)
            .map(|i| json!({"id": format!("b{b}-{i}"), "meter": "calls", "timestamp": now}))
            .collect();
        ingest(&app, &u, Value::Array(events))
    });
    for r in futures_util::future::join_all(batches).await {
        assert_eq!(r.assert_status(200)["accepted"], 15);
    }
    let got = usage(&app, &u).await;
    assert_eq!(used(&got, "events"), 150.0);
    assert_eq!(got["events"]["level"], "exceeded");
    assert_eq!(got["events"]["percent"], 150.0);
    let notices = |t: i32| {
        let su = &su;
        async move {
            su.query_one(
                "select count(*) from app.usage_notices where org_id = $1 and meter_key = 'events' and threshold = $2",
                &[&u.org_id, &t],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    assert_eq!(notices(80).await, 1);
    assert_eq!(notices(100).await, 1);
    assert_eq!(
        scalar(&app, "select count(*) from app.audit_log where org_id = $1 and action = 'usage.threshold_reached'", u.org_id).await,
        2
    );
    // The worker emails each notice once to the owner.
    let sent = palisade::jobs::send_usage_notices(&app.state)
        .await
        .unwrap();
    assert_eq!(sent, 2);
    assert_eq!(
        palisade::jobs::send_usage_notices(&app.state)
            .await
            .unwrap(),
        0
    );
    let emails: Vec<_> = app
        .emails_to(&u.email)
        .await
        .into_iter()
        .filter(|e| e.template == "usage_notice")
        .collect();
    assert_eq!(emails.len(), 2);
    assert!(
        emails.iter().any(|e| e.subject.contains("has reached")),
        "{:?}",
        emails.iter().map(|e| &e.subject).collect::<Vec<_>>()
    );
    assert!(emails.iter().any(|e| e.body.contains("80 %")));
}

#[tokio::test]
async fn a_hard_event_limit_rejects_past_it_per_event() {
    let app = spawn_app().await;
    let u = user_on(&app, "Hard", "pro").await;
    app.sql_superuser()
        .await
        .execute("update app.plan_limits set included = 50, enforcement = 'hard' where plan_id = 'pro' and meter = 'events'", &[])
        .await
        .unwrap();
    meter(
        &app,
        &u,
        json!({"key": "calls", "name": "Calls", "aggregation": "count"}),
    )
    .await;
    let now = Utc::now();
    let events: Vec<Value> = (0..60)
        .map(|i| json!({"id": format!("e{i}"), "meter": "calls", "timestamp": now}))
        .collect();
    let resp = ingest(&app, &u, Value::Array(events.clone())).await;
    let body = resp.assert_status(200);
    assert_eq!(body["accepted"], 50);
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 10);
    assert!(rejected.iter().all(|r| r["reason"] == "plan_limit_reached"));
    assert_eq!(rejected[0]["index"], 50);
    // Resending: the 50 are duplicates, the 10 still over.
    let again = ingest(&app, &u, Value::Array(events)).await;
    assert_eq!(again.assert_status(200)["duplicates"], 50);
    assert_eq!(again.body["accepted"], 0);
    assert_eq!(used(&usage(&app, &u).await, "calls"), 50.0);
}

#[tokio::test]
async fn api_calls_are_counted_by_key_and_by_user_without_a_write_per_request_path() {
    let app = spawn_app().await;
    let u = user_on(&app, "Calls", "pro").await;
    let key = app
        .post(
            &format!("/v1/orgs/{}/api-keys", u.org_id),
            &u.token,
            json!({"name": "ci"}),
        )
        .await;
    let key_body = key.assert_status(201).clone();
    let secret = key_body["secret"].as_str().unwrap();
    let key_id: Uuid = key_body["api_key"]["id"].as_str().unwrap().parse().unwrap();
    app.flush_api_calls().await; // the key creation itself
    let path = format!("/v1/orgs/{}/projects", u.org_id);
    for _ in 0..7 {
        app.get(&path, &u.token).await.assert_status(200);
    }
    for _ in 0..5 {
        let resp = app
            .send(
                app.http
                    .request(Method::GET, format!("{}{path}", app.base))
                    .header("x-api-key", secret),
            )
            .await;
        resp.assert_status(200);
    }
    // Requests outside any org are not an org's API calls.
    app.get("/v1/auth/me", &u.token).await.assert_status(200);
    assert_eq!(app.flush_api_calls().await, 12);
    let got = usage(&app, &u).await;
    assert_eq!(used(&got, "api_calls"), 13.0, "with the key creation");
    let su = app.sql_superuser().await;
    let by = |kind: &'static str, id: Uuid| {
        let su = &su;
        let org = u.org_id;
        async move {
            su.query_one(
                "select calls from app.usage_api_calls where org_id = $1 and subject_type = $2 and subject_id = $3",
                &[&org, &kind, &id],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    assert_eq!(by("user", u.user_id).await, 8);
    assert_eq!(by("api_key", key_id).await, 5);
    // Nothing left to flush; the counters were reset.
    assert_eq!(app.flush_api_calls().await, 1, "only the usage read above");
}

#[tokio::test]
async fn concurrent_flushes_count_each_call_once() {
    let app = spawn_app().await;
    let u = user_on(&app, "Flush", "pro").await;
    let path = format!("/v1/orgs/{}/projects", u.org_id);
    for _ in 0..20 {
        app.get(&path, &u.token).await.assert_status(200);
    }
    // Two workers (replicas) at once, while requests keep coming.
    let (a, b, _) = tokio::join!(app.flush_api_calls(), app.flush_api_calls(), async {
        for _ in 0..10 {
            app.get(&path, &u.token).await.assert_status(200);
        }
    });
    let rest = app.flush_api_calls().await;
    assert_eq!(a + b + rest, 30, "{a} + {b} + {rest}");
    let total: i64 = app
        .sql_superuser()
        .await
        .query_one(
            "select value::bigint from app.usage_periods where org_id = $1 and meter_key = 'api_calls'",
            &[&u.org_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 30);
}

#[tokio::test]
async fn metering_off_counts_no_api_calls() {
    let mut s = settings();
    s.usage_metering = false;
    let app = spawn_app_with(s, limits()).await;
    let u = user_on(&app, "Off", "pro").await;
    for _ in 0..3 {
        app.get(&format!("/v1/orgs/{}/projects", u.org_id), &u.token)
            .await
            .assert_status(200);
    }
    assert_eq!(app.flush_api_calls().await, 0);
}

#[tokio::test]
async fn the_report_is_json_or_csv_and_they_agree() {
    let app = spawn_app().await;
    let u = user_on(&app, "Rep", "pro").await;
    let su = app.sql_superuser().await;
    // 10 events included, then 2.5 cents per event.
    su.execute(
        "update app.plan_limits set included = 10, overage_price_cents = 2.5, package_size = 1
          where plan_id = 'pro' and meter = 'events'",
        &[],
    )
    .await
    .unwrap();
    meter(
        &app,
        &u,
        json!({"key": "tokens", "name": "Tokens, \"LLM\"", "aggregation": "sum", "unit": "tokens"}),
    )
    .await;
    let now = Utc::now();
    let events: Vec<Value> = (0..15)
        .map(|i| json!({"id": format!("e{i}"), "meter": "tokens", "value": 10, "timestamp": now}))
        .collect();
    ingest(&app, &u, Value::Array(events))
        .await
        .assert_status(200);
    let path = format!("/v1/orgs/{}/usage/report", u.org_id);
    let json_report = app.get(&path, &u.token).await.assert_status(200).clone();
    assert_eq!(json_report["closed"], false);
    assert_eq!(json_report["plan"], "pro");
    let lines: BTreeMap<String, Value> = json_report["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["meter"].as_str().unwrap().to_owned(), l.clone()))
        .collect();
    assert_eq!(lines["plan"]["amount_cents"], 4900);
    assert_eq!(lines["events"]["quantity"], 15.0);
    assert_eq!(lines["events"]["overage"], 5.0);
    assert_eq!(
        lines["events"]["amount_cents"], 13,
        "5 x 2.5 = 12.5, rounded"
    );
    assert_eq!(lines["tokens"]["quantity"], 150.0);
    assert_eq!(json_report["total_cents"], 4900 + 13);

    for csv in [
        app.get(&format!("{path}?format=csv"), &u.token).await,
        app.send(
            app.http
                .get(format!("{}{path}", app.base))
                .bearer_auth(&u.token)
                .header("accept", "text/csv"),
        )
        .await,
    ] {
        assert_eq!(csv.status.as_u16(), 200);
        assert!(
            csv.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        let text = csv.body.as_str().unwrap().to_owned();
        let mut reader = csv_rows(&text);
        let header = reader.remove(0);
        assert_eq!(header[1], "meter");
        assert_eq!(reader.len(), lines.len());
        for row in reader {
            let line = &lines[&row[1]];
            assert_eq!(row[0], json_report["period"].as_str().unwrap());
            assert_eq!(row[2], line["description"].as_str().unwrap());
            assert_eq!(
                row[4].parse::<f64>().unwrap(),
                line["quantity"].as_f64().unwrap()
            );
            assert_eq!(
                row[9].parse::<i64>().unwrap(),
                line["amount_cents"].as_i64().unwrap()
            );
        }
    }
    // A closed period is closed; a future one and a malformed one are 400.
    let last = (period_start(now) - Duration::days(1))
        .format("%Y-%m")
        .to_string();
    let closed = app.get(&format!("{path}?period={last}"), &u.token).await;
    assert_eq!(closed.assert_status(200)["closed"], true);
    assert_eq!(closed.body["lines"][1]["quantity"], 0.0);
    let next = (period_start(now) + Duration::days(32))
        .format("%Y-%m")
        .to_string();
    app.get(&format!("{path}?period={next}"), &u.token)
        .await
        .assert_problem(400, "period_not_started");
    app.get(&format!("{path}?period=2026-13"), &u.token)
        .await
        .assert_problem(400, "invalid_parameter");
}

/// A small RFC 4180 reader for the test (quoted fields, doubled quotes).
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => fields.push(std::mem::take(&mut field)),
                (c, _) => field.push(c),
            }
        }
        fields.push(field);
        rows.push(fields);
    }
    rows
}

#[tokio::test]
async fn another_orgs_meters_events_and_usage_are_invisible() {
    let app = spawn_app().await;
    let a = user_on(&app, "Alice", "pro").await;
    let b = user_on(&app, "Bob", "pro").await;
    meter(
        &app,
        &a,
        json!({"key": "tokens", "name": "Tokens", "aggregation": "sum"}),
    )
    .await;
    meter(
        &app,
        &b,
        json!({"key": "tokens", "name": "Tokens", "aggregation": "sum"}),
    )
    .await;
    let now = Utc::now();
    ingest(
        &app,
        &a,
        json!([{"id": "a1", "meter": "tokens", "value": 42, "timestamp": now}]),
    )
    .await
    .assert_status(200);
    let b_key = app
        .post(
            &format!("/v1/orgs/{}/api-keys", b.org_id),
            &b.token,
            json!({"name": "b"}),
        )
        .await
        .assert_status(201)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        format!("/v1/orgs/{}/meters", a.org_id),
        format!("/v1/orgs/{}/meters/tokens", a.org_id),
        format!("/v1/orgs/{}/usage", a.org_id),
        format!("/v1/orgs/{}/usage/daily?meter=tokens", a.org_id),
        format!("/v1/orgs/{}/usage/report", a.org_id),
        format!("/v1/orgs/{}/plan", a.org_id),
    ] {
        app.get(&path, &b.token)
            .await
            .assert_problem(404, "not_found");
        let with_key = app
            .send(
                app.http
                    .get(format!("{}{path}", app.base))
                    .header("x-api-key", &b_key),
            )
            .await;
        with_key.assert_problem(404, "not_found");
    }
    // B's key cannot ingest into A (404), nor can B's user; A's counts are unchanged.
    let body =
        json!({"events": [{"id": "b1", "meter": "tokens", "value": 1000, "timestamp": now}]});
    let resp = app
        .send(
            app.http
                .post(format!("{}/v1/orgs/{}/usage-events", app.base, a.org_id))
                .header("x-api-key", &b_key)
                .json(&body),
        )
        .await;
    resp.assert_problem(404, "not_found");
    app.post(
        &format!("/v1/orgs/{}/usage-events", a.org_id),
        &b.token,
        body,
    )
    .await
    .assert_problem(404, "not_found");
    assert_eq!(used(&usage(&app, &a).await, "tokens"), 42.0);
    assert_eq!(used(&usage(&app, &b).await, "tokens"), 0.0);
    // The same event id in another org is another event.
    ingest(
        &app,
        &b,
        json!([{"id": "a1", "meter": "tokens", "value": 1, "timestamp": now}]),
    )
    .await
    .assert_status(200);
    assert_eq!(used(&usage(&app, &b).await, "tokens"), 1.0);
    // A key ingests in its own org.
    let resp = app
        .send(
            app.http
                .post(format!("{}/v1/orgs/{}/usage-events", app.base, b.org_id))
                .header("x-api-key", &b_key)
                .json(&json!({"events": [{"id": "k1", "meter": "tokens", "value": 2, "timestamp": now}]})),
        )
        .await;
    assert_eq!(resp.assert_status(200)["accepted"], 1);
}

#[tokio::test]
async fn request_sql_cannot_write_usage_or_change_a_plan() {
    let app = spawn_app().await;
    let u = user_on(&app, "Inj", "pro").await;
    let mut db = app.sql_runtime().await;
    for sql in [
        "insert into app.usage_periods (org_id, meter_key, period, aggregation, value) values (app.current_org_id(), 'events', app.period_of(now()), 'count', -1000)",
        "update app.usage_periods set value = 0",
        "delete from app.usage_periods",
        "update app.org_plans set plan_id = 'enterprise'",
        "insert into app.usage_events (org_id, event_id, meter_key, occurred_at, period) values (app.current_org_id(), 'x', 'x', now(), app.period_of(now()))",
        "update app.plans set requests_per_minute = null",
        "update app.plan_limits set included = null",
        "update app.rate_limits set calls = calls + 1000",
        "select app.set_org_plan(app.current_org_id(), 'enterprise')",
        "select app.flush_api_calls()",
        "select app.take_quota(app.current_org_id(), 'projects', -100)",
        "select app.note_usage(app.current_org_id(), 'events', app.period_of(now()), 1, 1)",
    ] {
        let tx = crate::fixtures::runtime_tx(&app, &mut db, &u, Some(u.org_id)).await;
        let code = crate::fixtures::outcome(tx.execute(sql, &[]).await);
        assert_eq!(code, "42501", "{sql}");
        tx.rollback().await.unwrap();
    }
    assert_eq!(
        scalar(
            &app,
            "select count(*) from app.usage_periods where org_id = $1",
            u.org_id
        )
        .await,
        0
    );
}
