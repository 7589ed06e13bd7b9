//! Helper for `benches/load.sh --routes storage` (workspace storage, issue 12): the API
//! against the object store it writes to, side by side, with the server's own S3 client.
//!
//! ```text
//! S3_ENDPOINT=... S3_BUCKET=... (the server's S3_* settings) \
//!   cargo run --release --example bench_storage -- <base url> <access token> <org id> <server pid>
//! ```
//!
//! Environment: `DURATION` seconds per measurement (default 10), `REPEAT` rounds (3),
//! `CLIENTS` ("8 32"), `SSE_SUBSCRIBERS` (1000), `SSE_RATE` appends per second (100).
//!
//! Rows, alternating the sides in each round (A B A B):
//! * `append`: 100-event batches of 1 KB events through `POST .../events` (one
//!   conversation per client) vs `put-raw`: PUTting the same NDJSON bytes straight to
//!   the bucket with the server's `S3Store`;
//! * `read-paged`: reading a 10,000-event conversation through `GET .../events` in pages
//!   of 1,000 vs `get-raw`: GETting its 100 segment objects directly (8 at a time, as the
//!   server does);
//! * `sse`: `SSE_SUBSCRIBERS` live tails of one conversation while `SSE_RATE` events a
//!   second are appended: delivery latency (append sent → event received) and the
//!   server's resident memory per subscriber.
//!
//! Each row goes to stdout as `side route clients rate p50_ms p99_ms errors` (tab
//! separated; rate is batches, conversations or events per second).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::StreamExt;
use palisade::{
    config::Settings,
    storage::{ObjectKey, ObjectStore, Storage},
};
use serde_json::{Value, json};
use uuid::Uuid;

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
    org: Uuid,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}/v1/orgs/{}{path}", self.base, self.org)
    }
    async fn conversation(&self) -> Uuid {
        let resp: Value = self
            .http
            .post(self.url("/conversations"))
            .bearer_auth(&self.token)
            .json(&json!({"visibility": "org", "title": "bench"}))
            .send()
            .await
            .expect("create conversation")
            .json()
            .await
            .unwrap();
        resp["id"]
            .as_str()
            .unwrap_or_else(|| panic!("create conversation: {resp}"))
            .parse()
            .unwrap()
    }
    async fn append(&self, conversation: Uuid, body: &bytes::Bytes) -> bool {
        self.http
            .post(self.url(&format!("/conversations/{conversation}/events")))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 201)
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// 100 events of about 1 KB: the API body and the NDJSON segment the server stores.
fn batch() -> (bytes::Bytes, bytes::Bytes) {
    let events: Vec<Value> = (0..100)
        .map(|i| json!({"type": "message", "n": i, "text": "x".repeat(1000)}))
        .collect();
    let api = serde_json::to_vec(&json!({ "events": events })).unwrap();
    let mut raw = Vec::new();
    for e in &events {
        raw.extend_from_slice(&serde_json::to_vec(e).unwrap());
        raw.push(b'\n');
    }
    (api.into(), raw.into())
}

struct Measured {
    rate: f64,
    p50: f64,
    p99: f64,
    errors: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Runs `op` in `clients` loops for `duration`; each call is one unit of the rate.
async fn closed_loop<F, Fut>(clients: usize, duration: Duration, op: F) -> Measured
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                while started.elapsed() < duration {
                    let t = Instant::now();
                    if op(c).await {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Measured {
        rate: all.len() as f64 / elapsed,
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
        errors,
    }
}

fn row(side: &str, route: &str, clients: usize, m: &Measured) {
    println!(
        "{side}\t{route}\t{clients}\t{:.1}\t{:.3}\t{:.3}\t{}",
        m.rate, m.p50, m.p99, m.errors
    );
    eprintln!(
        "  {side:<7} {route:<12} c={clients:<4} {:>10.1}/s   p50 {:.3} ms  p99 {:.3} ms  errors {}",
        m.rate, m.p50, m.p99, m.errors
    );
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, token, org, pid] = args.as_slice() else {
        eprintln!("usage: bench_storage <base url> <access token> <org id> <server pid>");
        std::process::exit(2);
    };
    let pid: u32 = pid.parse().expect("server pid");
    let duration = Duration::from_secs(env_or("DURATION", 10));
    let repeat: usize = env_or("REPEAT", 3);
    let clients: Vec<usize> = std::env::var("CLIENTS")
        .unwrap_or_else(|_| "8 32".into())
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect();
    let settings = Settings::from_env().expect("the server's settings (S3_*)");
    let storage = Arc::new(Storage::new(&settings.storage()).expect("object store"));
    let api = Arc::new(Api {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(2048)
            .build()
            .unwrap(),
        base: base.clone(),
        token: token.clone(),
        org: org.parse().expect("org id"),
    });
    let (api_body, raw_body) = batch();

    eprintln!("== storage: append (100 events of 1 KB) vs PUT of the same bytes");
    for &c in &clients {
        let mut conversations = Vec::new();
        for _ in 0..c {
            conversations.push(api.conversation().await);
        }
        let conversations = Arc::new(conversations);
        for _ in 0..repeat {
            let (a, b) = (Arc::clone(&api), api_body.clone());
            let cs = Arc::clone(&conversations);
            let m = closed_loop(c, duration, move |i| {
                let (a, b, cs) = (Arc::clone(&a), b.clone(), Arc::clone(&cs));
                async move { a.append(cs[i], &b).await }
            })
            .await;
            row("api", "append", c, &m);
            let (s, b) = (Arc::clone(&storage), raw_body.clone());
            let org = api.org;
            let m = closed_loop(c, duration, move |_| {
                let (s, b) = (Arc::clone(&s), b.clone());
                async move {
                    let key = ObjectKey::segment(org, Uuid::nil(), Uuid::new_v4());
                    s.put(&key, b, "application/x-ndjson").await.is_ok()
                }
            })
            .await;
            row("s3", "put-raw", c, &m);
        }
    }

    eprintln!("== storage: read a 10,000-event conversation, pages of 1,000 vs its 100 objects");
    let long = api.conversation().await;
    for _ in 0..100 {
        assert!(
            api.append(long, &api_body).await,
            "seeding the long conversation"
        );
    }
    let segments: Vec<ObjectKey> = storage
        .list(&format!("orgs/{}/conversations/{long}/events/", api.org))
        .await
        .expect("list (bench setup only)")
        .into_iter()
        .map(|o| ObjectKey::from_stored(&o.key).unwrap())
        .collect();
    assert_eq!(segments.len(), 100);
    let segments = Arc::new(segments);
    for &c in &clients {
        for _ in 0..repeat {
            let a = Arc::clone(&api);
            let m = closed_loop(c, duration, move |_| {
                let a = Arc::clone(&a);
                async move {
                    let mut after = 0;
                    let mut events = 0;
                    loop {
                        let Ok(resp) = a
                            .http
                            .get(a.url(&format!(
                                "/conversations/{long}/events?after={after}&limit=1000"
                            )))
                            .bearer_auth(&a.token)
                            .send()
                            .await
                        else {
                            return false;
                        };
                        let Ok(page) = resp.json::<Value>().await else {
                            return false;
                        };
                        events += page["items"].as_array().map_or(0, Vec::len);
                        match page["next_after"].as_i64() {
                            Some(n) => after = n,
                            None => return events == 10_000,
                        }
                    }
                }
            })
            .await;
            row("api", "read-paged", c, &m);
            let (s, keys) = (Arc::clone(&storage), Arc::clone(&segments));
            let m = closed_loop(c, duration, move |_| {
                let (s, keys) = (Arc::clone(&s), Arc::clone(&keys));
                async move {
                    let got: Vec<bool> = futures_util::stream::iter(0..keys.len())
                        .map(|i| {
                            let (s, keys) = (Arc::clone(&s), Arc::clone(&keys));
                            async move { s.get(&keys[i]).await.is_ok() }
                        })
                        .buffered(8)
                        .collect()
                        .await;
                    got.iter().all(|ok| *ok)
                }
            })
            .await;
            row("s3", "get-raw", c, &m);
        }
    }

    let subscribers: usize = env_or("SSE_SUBSCRIBERS", 1000);
    let rate: u64 = env_or("SSE_RATE", 100);
    eprintln!("== storage: {subscribers} live tails, {rate} events/s appended");
    let tail = api.conversation().await;
    let rss_before = rss_kb(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..subscribers {
        let (a, stop, connected) = (Arc::clone(&api), Arc::clone(&stop), Arc::clone(&connected));
        readers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let Ok(resp) = a
                .http
                .get(a.url(&format!("/conversations/{tail}/events/stream")))
                .bearer_auth(&a.token)
                .send()
                .await
            else {
                return (lat, 1u64);
            };
            if resp.status().as_u16() != 200 {
                return (lat, 1);
            }
            connected.fetch_add(1, Ordering::Relaxed);
            let mut body = resp.bytes_stream();
            let mut buf = String::new();
            while !stop.load(Ordering::Relaxed) {
                let next = tokio::time::timeout(Duration::from_millis(500), body.next()).await;
                let chunk = match next {
                    Err(_) => continue,
                    Ok(Some(Ok(c))) => c,
                    Ok(_) => return (lat, 1),
                };
                let received = now_micros();
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    for line in frame.lines() {
                        if let Some(data) = line.strip_prefix("data:")
                            && let Ok(v) = serde_json::from_str::<Value>(data.trim())
                            && let Some(sent) = v["event"]["sent_at"].as_u64()
                        {
                            lat.push(received.saturating_sub(sent) as f64 / 1000.0);
                        }
                    }
                }
            }
            (lat, 0)
        }));
    }
    let wait = Instant::now();
    while connected.load(Ordering::Relaxed) < subscribers as u64
        && wait.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected = rss_kb(pid);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut sent = 0u64;
    let mut failed = 0u64;
    while started.elapsed() < duration {
        tick.tick().await;
        let body = serde_json::to_vec(&json!({"events": [{"sent_at": now_micros()}]})).unwrap();
        // Sequential appends: one conversation's appends are ordered anyway.
        if api.append(tail, &body.into()).await {
            sent += 1;
        } else {
            failed += 1;
        }
    }
    let rss_peak = rss_kb(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = failed;
    for r in readers {
        let (lat, e) = r.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    all.sort_by(f64::total_cmp);
    let expected = sent * subscribers as u64;
    let m = Measured {
        rate: all.len() as f64 / duration.as_secs_f64(),
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
        errors: errors + expected.saturating_sub(all.len() as u64),
    };
    row("api", "sse", subscribers, &m);
    let per_sub = rss_connected.saturating_sub(rss_before) as f64 / subscribers.max(1) as f64;
    println!("mem\tsse-rss\t{subscribers}\t{per_sub:.1}\t{rss_before}\t{rss_peak}\t0");
    eprintln!(
        "  server RSS: {rss_before} KB before, {rss_connected} KB with {subscribers} tails \
         ({per_sub:.1} KB each), {rss_peak} KB at the end of the appends; {sent} appends, \
         {} of {expected} deliveries",
        all.len()
    );
}
