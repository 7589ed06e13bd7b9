//! Fault drills (issue 16): the real server binary, each drill with its own embedded
//! cluster (never the suite's shared one), under a little loopback load, while the
//! database restarts, every pool connection is terminated, the pool runs dry, or the
//! process gets SIGTERM with 200 requests in flight. Each drill prints one line,
//! `drill <name>: <figures>`, which `benches/chaos.sh` collects (it points
//! `PALISADE_DRILL_BIN` at the release binary).
//!
//! Timing bounds are generous for a loaded 2-core box yet far below what a hang would
//! take: a hung request shows up as the client's 30 s timeout.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use palisade::db::{
    self,
    embedded::{ClusterOptions, EmbeddedCluster, SUPERUSER},
};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_postgres::NoTls;

use crate::helpers::{PASSWORD, TempDir};

/// One drill at a time: each runs a server and a cluster of its own, and times them
/// (under `cargo test`; nextest runs each test in its own process, and
/// `.config/nextest.toml` puts the drills in a group of one).
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// What a client waits for at most: a request this slow has hung.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The binary under test: `PALISADE_DRILL_BIN` (the release build, from chaos.sh) or
/// this build's.
fn binary() -> PathBuf {
    std::env::var_os("PALISADE_DRILL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_palisade").into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `palisade serve` with its embedded cluster in a data directory of its own.
struct Server {
    child: tokio::process::Child,
    port: u16,
    base: String,
    http: reqwest::Client,
    /// The server's cluster (started by the server; the drill may restart it).
    cluster: EmbeddedCluster,
    cluster_dir: PathBuf,
    log: PathBuf,
    _data: TempDir,
}

impl Server {
    async fn start(env: &[(&str, &str)]) -> Server {
        let data = TempDir::new("palisade-drill");
        let log = data.0.join("server.log");
        let port = free_port();
        let mut command = tokio::process::Command::new(binary());
        command
            .arg("serve")
            .env("PALISADE_DATA_DIR", &data.0)
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("DEFAULT_PLAN", "enterprise")
            // The drills' load is one user's: rate limits are not under test.
            .env("RATE_LIMIT_USER", "off")
            .env("RATE_LIMIT_IP", "off")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        for var in [
            "DATABASE_URL",
            "DATABASE_AUTH_URL",
            "DATABASE_WORKER_URL",
            "DATABASE_OWNER_URL",
            "DATABASE_LISTEN_URL",
            "PALISADE_ENV",
            "LOG_FORMAT",
            "S3_BUCKET",
            "STRIPE_SECRET_KEY",
            "SMTP_URL",
        ] {
            command.env_remove(var);
        }
        command.envs(env.iter().copied());
        let child = command.spawn().expect("start palisade");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .build()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{base}/ready")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "palisade did not become ready; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A handle on the cluster the server started (found running, so not started
        // here). Whatever becomes of this test, the cluster stops when its process ends.
        let dir = data.0.join("postgres");
        let cluster = tokio::task::spawn_blocking(move || {
            EmbeddedCluster::start(&dir, ClusterOptions::default())
        })
        .await
        .unwrap()
        .expect("the server's cluster");
        let cluster_dir = cluster.data_dir().to_owned();
        cluster
            .stop_and_remove_after_exit_of(std::process::id(), &cluster_dir)
            .unwrap();
        Server {
            child,
            port,
            base,
            http,
            cluster,
            cluster_dir,
            log,
            _data: data,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Registers a user and signs in: (their org, an access token).
    async fn signup(&self) -> (String, String) {
        let email = format!("drill-{}@example.com", uuid::Uuid::new_v4().simple());
        let reg: Value = self
            .http
            .post(self.url("/v1/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD, "name": "Drill"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let org = reg["user"]["current_org_id"]
            .as_str()
            .unwrap_or_else(|| panic!("registered: {reg}"))
            .to_owned();
        let login: Value = self
            .http
            .post(self.url("/v1/auth/login"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["access_token"].as_str().unwrap().to_owned();
        (org, token)
    }

    /// A connection to the server's database as the cluster's superuser.
    async fn superuser(&self) -> tokio_postgres::Client {
        let (client, conn) = self
            .cluster
            .pg_config(SUPERUSER, db::DATABASE_NAME)
            .connect(NoTls)
            .await
            .expect("connect as the superuser");
        tokio::spawn(conn);
        client
    }

    /// Waits (up to 40 s) until the server counts at least `n` requests in flight --
    /// accepted, headers read, handler running -- on its metrics listener at
    /// `metrics_addr` (started with `METRICS_ADDR`). Returns the count seen. A fixed
    /// pause instead may end before a loaded machine has read every request's headers,
    /// and graceful shutdown closes a connection whose request it has not read.
    async fn await_in_flight(&self, metrics_addr: &str, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let seen = match self
                .http
                .get(format!("http://{metrics_addr}/metrics"))
                .send()
                .await
            {
                Ok(resp) => crate::metrics::sample(
                    &resp.text().await.unwrap_or_default(),
                    "palisade_http_requests_in_flight",
                    &[],
                )
                .map_or(0, |v| v as usize),
                Err(_) => 0,
            };
            if seen >= n {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "the server counts {seen} requests in flight, not {n}; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM to the server.
    fn terminate(&self) {
        let pid = self.child.id().expect("running");
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    }

    /// The embedded cluster was shut down cleanly: not left running, not crashed.
    /// Returns its state as `pg_controldata` says it.
    fn assert_cluster_shut_down(&self) -> String {
        assert!(
            !self.cluster_dir.join("postmaster.pid").exists(),
            "the embedded cluster is still running"
        );
        let bin = db::embedded::find_bin_dir().expect("PostgreSQL binaries");
        let control = std::process::Command::new(bin.join("pg_controldata"))
            .arg("-D")
            .arg(&self.cluster_dir)
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        let control = String::from_utf8_lossy(&control.stdout);
        let state = control
            .lines()
            .find_map(|l| l.strip_prefix("Database cluster state:"))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        assert_eq!(state, "shut down", "{control}");
        state
    }

    async fn stop_cluster(&self) -> Duration {
        let started = Instant::now();
        let dir = self.cluster_dir.clone();
        tokio::task::spawn_blocking(move || {
            EmbeddedCluster::start(&dir, ClusterOptions::default())?.stop()
        })
        .await
        .unwrap()
        .expect("pg_ctl stop");
        started.elapsed()
    }

    async fn start_cluster(&mut self) -> Duration {
        let started = Instant::now();
        let dir = self.cluster_dir.clone();
        self.cluster = tokio::task::spawn_blocking(move || {
            EmbeddedCluster::start(&dir, ClusterOptions::default())
        })
        .await
        .unwrap()
        .expect("pg_ctl start");
        started.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A drill that failed half-way: no server or cluster outlives it.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.start_kill();
            let _ = self.cluster.stop();
        }
    }
}

/// One response, timed from the drill's start.
#[derive(Debug, Clone)]
struct Sample {
    start: Duration,
    end: Duration,
    /// 0 when no response came (connection refused or reset, or the client timed out).
    status: u16,
    /// For a 503: `application/problem+json` with a `Retry-After`.
    well_formed_503: bool,
}

impl Sample {
    fn took(&self) -> Duration {
        self.end - self.start
    }

    /// 2xx, or a 503 problem+json with `Retry-After`.
    fn acceptable(&self) -> bool {
        (200..300).contains(&self.status) || (self.status == 503 && self.well_formed_503)
    }
}

async fn timed(t0: Instant, req: reqwest::RequestBuilder) -> Sample {
    let start = t0.elapsed();
    let (status, well_formed_503) = match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let problem = header("content-type").as_deref() == Some("application/problem+json")
                && header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s > 0));
            let body = resp.bytes().await;
            let problem = problem
                && body
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .is_some_and(|b| b["status"] == 503 && b["code"].is_string());
            (status, status == 503 && problem)
        }
        Err(_) => (0, false),
    };
    Sample {
        start,
        end: t0.elapsed(),
        status,
        well_formed_503,
    }
}

/// `clients` loops sending the request `make` builds until `stop`, each pausing
/// `pause` between requests.
fn load(
    clients: usize,
    pause: Duration,
    t0: Instant,
    stop: &Arc<AtomicBool>,
    make: impl Fn() -> reqwest::RequestBuilder + Send + Sync + 'static,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    let make = Arc::new(make);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, make) = (Arc::clone(stop), Arc::clone(&make));
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    samples.push(timed(t0, make()).await);
                    tokio::time::sleep(pause).await;
                }
                samples
            })
        })
        .collect();
    tokio::spawn(async move {
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_by_key(|s| s.start);
        all
    })
}

fn count(samples: &[Sample], f: impl Fn(&Sample) -> bool) -> usize {
    samples.iter().filter(|s| f(s)).count()
}

fn slowest(samples: &[Sample]) -> Duration {
    samples.iter().map(Sample::took).max().unwrap_or_default()
}

/// Stop PostgreSQL for 2 s under load, then start it again: /ready turns 503 within 1 s
/// and back to 200 within 5 s of its return, no request outlasts the pool timeout (plus
/// slack), every failure is a 503 problem+json with Retry-After, and the same process
/// serves again once the database is back.
#[tokio::test]
async fn drill_database_restart_under_load() {
    let _one = ONE_AT_A_TIME.lock().await;
    const POOL_TIMEOUT: Duration = Duration::from_millis(2000);
    let mut server = Server::start(&[
        ("DATABASE_POOL_TIMEOUT_MS", "2000"),
        ("REQUEST_TIMEOUT_SECONDS", "10"),
    ])
    .await;
    let (org, token) = server.signup().await;
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (http, url) = (
        server.http.clone(),
        server.url(&format!("/v1/orgs/{org}/projects")),
    );
    let reads = load(3, Duration::from_millis(100), t0, &stop, {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        move || http.get(&url).bearer_auth(&token)
    });
    let writes = load(1, Duration::from_millis(100), t0, &stop, move || {
        http.post(&url)
            .bearer_auth(&token)
            .json(&json!({"name": format!("drill-{}", uuid::Uuid::new_v4())}))
    });
    let (http, url) = (server.http.clone(), server.url("/ready"));
    let probes = load(1, Duration::from_millis(50), t0, &stop, move || {
        http.get(&url)
    });

    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopping = t0.elapsed();
    let stop_took = server.stop_cluster().await;
    let down = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let starting = t0.elapsed();
    let start_took = server.start_cluster().await;
    let up = t0.elapsed();
    // Load until /ready has been 200 for a while (or long past the 5 s bound).
    tokio::time::sleep(Duration::from_secs(7)).await;
    stop.store(true, Ordering::Relaxed);
    let mut traffic = reads.await.unwrap();
    traffic.extend(writes.await.unwrap());
    traffic.sort_by_key(|s| s.start);
    let probes = probes.await.unwrap();

    let log = server.log_text();
    let first_503 = probes
        .iter()
        .find(|p| p.end >= stopping && p.status == 503)
        .unwrap_or_else(|| panic!("/ready never turned 503 while the database was down"));
    // From the moment pg_ctl is told to stop (it then takes a checkpoint's time to
    // return, while the server already refuses work).
    let ready_503_after = first_503.end.saturating_sub(stopping);
    assert!(
        ready_503_after <= Duration::from_secs(1),
        "/ready turned 503 {} after the database began to stop",
        secs(ready_503_after)
    );
    // While the database is down, /ready is never 200.
    let ready_while_down = count(&probes, |p| {
        p.start >= down && p.end <= starting && p.status == 200
    });
    assert_eq!(
        ready_while_down, 0,
        "/ready said 200 with the database down"
    );
    let first_200 = probes
        .iter()
        .find(|p| p.start >= up && p.status == 200)
        .unwrap_or_else(|| panic!("/ready never came back to 200; log:\n{log}"));
    let ready_200_after = first_200.end - up;
    assert!(
        ready_200_after <= Duration::from_secs(5),
        "/ready came back {} after the database returned",
        secs(ready_200_after)
    );
    for samples in [&traffic, &probes] {
        let bad: Vec<_> = samples.iter().filter(|s| !s.acceptable()).collect();
        assert!(bad.is_empty(), "not 2xx nor a proper 503: {bad:?}\n{log}");
        let slowest = slowest(samples);
        assert!(
            slowest <= POOL_TIMEOUT + Duration::from_secs(2),
            "a request took {} (pool timeout {})",
            secs(slowest),
            secs(POOL_TIMEOUT)
        );
    }
    let failed = count(&traffic, |s| s.status == 503);
    assert!(failed > 0, "the load never saw the outage");
    // The same process serves again: every request sent after /ready returned succeeds.
    let after: Vec<_> = traffic
        .iter()
        .filter(|s| s.start >= first_200.end)
        .collect();
    let after_writes = count(&traffic, |s| s.start >= first_200.end && s.status == 201);
    assert!(
        after.len() >= 20,
        "only {} requests after recovery",
        after.len()
    );
    assert!(
        after.iter().all(|s| s.status == 200 || s.status == 201),
        "a request failed after recovery: {after:?}"
    );
    assert!(after_writes > 0, "no write after recovery");
    eprintln!(
        "drill restart: ready 503 after {} of pg_ctl stop (which took {}), 200 after {} \
         of the database returning (pg_ctl start took {}); {} reads and writes, {} answered \
         503 (all problem+json with Retry-After), slowest {}, 0 over 5 s; {} after recovery \
         ({} of them writes), all 2xx without a server restart",
        secs(ready_503_after),
        secs(stop_took),
        secs(ready_200_after),
        secs(start_took),
        traffic.len(),
        failed,
        secs(slowest(&traffic)),
        after.len(),
        after_writes
    );
}

/// SIGSTOP, then SIGCONT, to the cluster's postmaster and every backend: `kill` on the
/// postmaster (first line of `postmaster.pid`) and its children.
fn signal_cluster(server: &Server, signal: &str) {
    let pid_file = std::fs::read_to_string(server.cluster_dir.join("postmaster.pid")).unwrap();
    let postmaster = pid_file.lines().next().unwrap().trim().to_owned();
    let children = std::process::Command::new("pgrep")
        .args(["-P", &postmaster])
        .output()
        .unwrap();
    let mut pids = vec![postmaster];
    pids.extend(
        String::from_utf8_lossy(&children.stdout)
            .split_whitespace()
            .map(str::to_owned),
    );
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .args(&pids)
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pids:?}");
}

/// The database freezes for 4 s (every PostgreSQL process stopped: what a network
/// partition looks like, no reset, nothing fails fast): /ready answers 503 within about
/// 1 s instead of hanging, no request outlasts `REQUEST_TIMEOUT_SECONDS` (each gets a
/// 503 with Retry-After), and once the database thaws the same process serves again.
#[tokio::test]
async fn drill_frozen_database() {
    let _one = ONE_AT_A_TIME.lock().await;
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
    let server = Server::start(&[
        ("REQUEST_TIMEOUT_SECONDS", "3"),
        ("DATABASE_POOL_TIMEOUT_MS", "2000"),
    ])
    .await;
    let (org, token) = server.signup().await;
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (http, url) = (
        server.http.clone(),
        server.url(&format!("/v1/orgs/{org}/projects")),
    );
    let traffic = load(3, Duration::from_millis(100), t0, &stop, move || {
        http.get(&url).bearer_auth(&token)
    });
    let (http, url) = (server.http.clone(), server.url("/ready"));
    let probes = load(1, Duration::from_millis(50), t0, &stop, move || {
        http.get(&url)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let frozen = t0.elapsed();
    signal_cluster(&server, "STOP");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let thawed = t0.elapsed();
    signal_cluster(&server, "CONT");
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    let traffic = traffic.await.unwrap();
    let probes = probes.await.unwrap();
    let log = server.log_text();

    let first_503 = probes
        .iter()
        .find(|p| p.end >= frozen && p.status == 503)
        .unwrap_or_else(|| panic!("/ready never turned 503 while the database was frozen"));
    let ready_503_after = first_503.end - frozen;
    assert!(
        ready_503_after <= Duration::from_millis(1500),
        "/ready turned 503 {} after the freeze",
        secs(ready_503_after)
    );
    let slowest_probe = probes
        .iter()
        .filter(|p| p.start >= frozen && p.end <= thawed)
        .map(Sample::took)
        .max()
        .unwrap_or_default();
    assert!(
        slowest_probe <= Duration::from_millis(1500),
        "a /ready probe took {} while the database was frozen",
        secs(slowest_probe)
    );
    let first_200 = probes
        .iter()
        .find(|p| p.start >= thawed && p.status == 200)
        .unwrap_or_else(|| panic!("/ready never came back to 200; log:\n{log}"));
    let ready_200_after = first_200.end - thawed;
    assert!(
        ready_200_after <= Duration::from_secs(5),
        "/ready came back {} after the thaw",
        secs(ready_200_after)
    );
    let bad: Vec<_> = traffic.iter().filter(|s| !s.acceptable()).collect();
    assert!(bad.is_empty(), "not 2xx nor a proper 503: {bad:?}\n{log}");
    let slowest = slowest(&traffic);
    assert!(
        slowest <= REQUEST_TIMEOUT + Duration::from_millis(1500),
        "a request took {} (request timeout {})",
        secs(slowest),
        secs(REQUEST_TIMEOUT)
    );
    let failed = count(&traffic, |s| s.status == 503);
    assert!(failed > 0, "the load never saw the freeze");
    let after: Vec<_> = traffic
        .iter()
        .filter(|s| s.start >= first_200.end)
        .collect();
    assert!(
        after.len() >= 20,
        "only {} requests after the thaw",
        after.len()
    );
    assert!(
        after.iter().all(|s| s.status == 200),
        "a request failed after the thaw: {after:?}"
    );
    eprintln!(
        "drill freeze: database stopped (SIGSTOP) for 4 s under load: ready 503 after {} \
         (slowest probe {}), 200 after {} of the thaw; {} requests, {} answered 503 \
         (problem+json, Retry-After), slowest {} (REQUEST_TIMEOUT_SECONDS 3); {} after the \
         thaw, all 200",
        secs(ready_503_after),
        secs(slowest_probe),
        secs(ready_200_after),
        traffic.len(),
        failed,
        secs(slowest),
        after.len()
    );
}

/// `pg_terminate_backend` on every connection of the server's pools while requests are
/// in flight (held at their context statement by a lock): those requests fail fast with
/// a 503 problem+json and Retry-After, and later requests succeed on fresh connections.
#[tokio::test]
async fn drill_terminate_every_pool_connection() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Server::start(&[]).await;
    let (org, token) = server.signup().await;
    let su = server.superuser().await;
    let mut locker = server.superuser().await;
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (http, url) = (
        server.http.clone(),
        server.url(&format!("/v1/orgs/{org}/projects")),
    );
    let writes = load(2, Duration::from_millis(50), t0, &stop, {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        move || {
            http.post(&url)
                .bearer_auth(&token)
                .json(&json!({"name": format!("drill-{}", uuid::Uuid::new_v4())}))
        }
    });
    let traffic = load(4, Duration::from_millis(50), t0, &stop, move || {
        http.get(&url).bearer_auth(&token)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Hold every request at its context statement, so they are in flight on the pool.
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("lock table app.sessions in access exclusive mode")
        .await
        .unwrap();
    let waiting_sql = "select count(*) from pg_stat_activity
                        where usename = $1 and wait_event_type = 'Lock'";
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut waiting = 0i64;
    while waiting < 3 && Instant::now() < deadline {
        waiting = su
            .query_one(waiting_sql, &[&db::RUNTIME_LOGIN_ROLE])
            .await
            .unwrap()
            .get(0);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(waiting >= 3, "only {waiting} requests reached the lock");
    let killed_at = t0.elapsed();
    let pids: Vec<i32> = su
        .query(
            "select pid, pg_terminate_backend(pid) from pg_stat_activity
              where datname = $1 and usename = any($2)",
            &[
                &db::DATABASE_NAME,
                &vec![
                    db::RUNTIME_LOGIN_ROLE,
                    db::CREDENTIALS_LOGIN_ROLE,
                    db::JOBS_LOGIN_ROLE,
                ],
            ],
        )
        .await
        .unwrap()
        .iter()
        .filter(|r| r.get(1))
        .map(|r| r.get(0))
        .collect();
    lock.commit().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut traffic = traffic.await.unwrap();
    traffic.extend(writes.await.unwrap());
    traffic.sort_by_key(|s| s.start);
    let log = server.log_text();

    assert!(pids.len() >= 3, "terminated {} backends", pids.len());
    let bad: Vec<_> = traffic.iter().filter(|s| !s.acceptable()).collect();
    assert!(bad.is_empty(), "not 2xx nor a proper 503: {bad:?}\n{log}");
    // The requests in flight at the kill: failed, fast (long before the 2 s lock timeout).
    let affected: Vec<_> = traffic
        .iter()
        .filter(|s| s.start < killed_at && s.end >= killed_at)
        .collect();
    assert!(affected.len() >= 3, "in flight at the kill: {affected:?}");
    assert!(
        affected.iter().all(|s| s.status == 503),
        "in flight at the kill: {affected:?}"
    );
    let slowest_after_kill = affected
        .iter()
        .map(|s| s.end - killed_at)
        .max()
        .unwrap_or_default();
    assert!(
        slowest_after_kill <= Duration::from_secs(1),
        "an affected request took {} after the kill",
        secs(slowest_after_kill)
    );
    // Later ones succeed, on new connections.
    let later: Vec<_> = traffic
        .iter()
        .filter(|s| s.start >= killed_at + Duration::from_millis(500))
        .collect();
    assert!(
        later.len() >= 20,
        "only {} requests after the kill",
        later.len()
    );
    assert!(
        later.iter().all(|s| s.status == 200 || s.status == 201),
        "a request failed after the kill: {later:?}"
    );
    let live: Vec<i32> = su
        .query(
            "select pid from pg_stat_activity where datname = $1 and usename = $2",
            &[&db::DATABASE_NAME, &db::RUNTIME_LOGIN_ROLE],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !live.is_empty() && live.iter().all(|p| !pids.contains(p)),
        "live {live:?}, killed {pids:?}"
    );
    eprintln!(
        "drill terminate: {} backends terminated with {} requests in flight; all {} answered \
         503 problem+json with Retry-After within {} of the kill; the {} requests sent from \
         0.5 s later (reads and writes) all 2xx on {} new connections",
        pids.len(),
        affected.len(),
        affected.len(),
        secs(slowest_after_kill),
        later.len(),
        live.len()
    );
}

/// SIGTERM with 200 requests in flight (headers sent, bodies half-way): new connections
/// are refused at once, every in-flight request completes with 201, the process exits 0
/// within the drain timeout, and the embedded cluster is shut down cleanly.
#[tokio::test]
async fn drill_sigterm_with_200_requests_in_flight() {
    let _one = ONE_AT_A_TIME.lock().await;
    const DRAIN: Duration = Duration::from_secs(20);
    const IN_FLIGHT: usize = 200;
    // The drill is about draining, not about waiting for a pool connection: 200
    // creations in one org serialize on its quota lock, and on a loaded CI machine the
    // last of them may wait longer than the default 5 s for a connection.
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut server = Server::start(&[
        ("SHUTDOWN_TIMEOUT_SECONDS", "20"),
        ("DATABASE_POOL_TIMEOUT_MS", "20000"),
        ("METRICS_ADDR", &metrics_addr),
    ])
    .await;
    let (org, token) = server.signup().await;
    let url = server.url(&format!("/v1/orgs/{org}/projects"));
    let http = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(0)
        .timeout(CLIENT_TIMEOUT)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let (release, released) = tokio::sync::watch::channel(false);
    let begun = Arc::new(AtomicUsize::new(0));
    let requests: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let (begun, released) = (Arc::clone(&begun), released.clone());
            // The body's first half now, the rest once released.
            let body = futures_util::stream::unfold(0, move |part| {
                let begun = Arc::clone(&begun);
                let mut released = released.clone();
                async move {
                    match part {
                        0 => {
                            begun.fetch_add(1, Ordering::SeqCst);
                            Some((Ok::<_, std::io::Error>(b"{\"name\": \"drill-".to_vec()), 1))
                        }
                        1 => {
                            let _ = released.wait_for(|r| *r).await;
                            Some((Ok(format!("{i}\"}}").into_bytes()), 2))
                        }
                        _ => None,
                    }
                }
            });
            let req = http
                .post(&url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(body));
            tokio::spawn(timed(t0, req))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while begun.load(Ordering::SeqCst) < IN_FLIGHT && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(begun.load(Ordering::SeqCst), IN_FLIGHT, "requests begun");
    // "In flight" as the server counts it: accepted, headers read, handler running. A
    // connection still in the kernel's accept queue at SIGTERM is not in flight (it is
    // reset when the listener closes), so wait for the server's own gauge rather than
    // a fixed pause that a loaded machine may outrun.
    let in_flight_at_term = server.await_in_flight(&metrics_addr, IN_FLIGHT).await;

    let term_at = Instant::now();
    server.terminate();
    // New connections are refused.
    let refused_after = loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                break term_at.elapsed();
            }
            _ if term_at.elapsed() > Duration::from_secs(2) => {
                panic!("still accepting connections 2 s after SIGTERM")
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    assert!(
        refused_after <= Duration::from_secs(1),
        "new connections refused only {} after SIGTERM",
        secs(refused_after)
    );
    release.send(true).unwrap();
    let mut samples = Vec::new();
    for r in requests {
        samples.push(r.await.unwrap());
    }
    let completed_after = term_at.elapsed();
    let status = tokio::time::timeout(DRAIN + Duration::from_secs(30), server.child.wait())
        .await
        .expect("the process exits")
        .unwrap();
    let exit_after = term_at.elapsed();
    let log = server.log_text();

    let not_created: Vec<_> = samples.iter().filter(|s| s.status != 201).collect();
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for s in &samples {
        *by_status.entry(s.status).or_default() += 1;
    }
    assert!(
        not_created.is_empty(),
        "{} of {IN_FLIGHT} in-flight requests did not complete with 201 (by status, 0 = \
         no response: {by_status:?}; in flight at SIGTERM {in_flight_at_term}): {:?}\n{log}",
        not_created.len(),
        &not_created[..not_created.len().min(5)]
    );
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert!(
        exit_after <= DRAIN,
        "exited {} after SIGTERM (drain timeout {})",
        secs(exit_after),
        secs(DRAIN)
    );
    let state = server.assert_cluster_shut_down();
    eprintln!(
        "drill sigterm: {IN_FLIGHT} requests in flight at SIGTERM, all 201 within {}; new \
         connections refused after {}; exit 0 after {} (drain timeout {}); cluster state \
         \"{state}\"",
        secs(completed_after),
        secs(refused_after),
        secs(exit_after),
        secs(DRAIN)
    );
}

/// A client that never finishes its request cannot hold the process up: after SIGTERM
/// it gets `SHUTDOWN_TIMEOUT_SECONDS`, then its connection is closed, the cluster stops
/// cleanly and the process exits 0.
#[tokio::test]
async fn drill_drain_timeout_bounds_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _one = ONE_AT_A_TIME.lock().await;
    const DRAIN: Duration = Duration::from_secs(3);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut server = Server::start(&[
        ("SHUTDOWN_TIMEOUT_SECONDS", "3"),
        ("METRICS_ADDR", &metrics_addr),
    ])
    .await;
    let (org, token) = server.signup().await;
    // Headers and the start of a body that never comes.
    let mut straggler = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    straggler
        .write_all(
            format!(
                "POST /v1/orgs/{org}/projects HTTP/1.1\r\nhost: 127.0.0.1\r\n\
                 authorization: Bearer {token}\r\ncontent-type: application/json\r\n\
                 content-length: 100\r\n\r\n{{\"name\": \"stra"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // The straggler is in flight once the server has read its headers.
    server.await_in_flight(&metrics_addr, 1).await;
    let term_at = Instant::now();
    server.terminate();
    let status = tokio::time::timeout(DRAIN + Duration::from_secs(30), server.child.wait())
        .await
        .expect("the process exits")
        .unwrap();
    let exit_after = term_at.elapsed();
    let log = server.log_text();
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    // It waited for the straggler, up to the drain timeout, then stopped the cluster.
    assert!(
        exit_after >= DRAIN - Duration::from_millis(100)
            && exit_after <= DRAIN + Duration::from_secs(10),
        "exited {} after SIGTERM (drain timeout {})",
        secs(exit_after),
        secs(DRAIN)
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), straggler.read_to_end(&mut rest))
        .await
        .expect("the straggler's connection is closed");
    assert!(
        read.is_err() || rest.is_empty(),
        "the straggler got an answer: {}",
        String::from_utf8_lossy(&rest)
    );
    let state = server.assert_cluster_shut_down();
    eprintln!(
        "drill drain-timeout: a request stalled mid-body at SIGTERM; its connection closed \
         and the process exited 0 after {} (SHUTDOWN_TIMEOUT_SECONDS 3); cluster state \
         \"{state}\"",
        secs(exit_after)
    );
}

/// Every pool connection busy (held at a lock): requests beyond the pool wait for
/// `DATABASE_POOL_TIMEOUT_MS`, no longer, then get a 503 problem+json with Retry-After;
/// once the connections are free again, requests succeed.
#[tokio::test]
async fn drill_pool_exhaustion() {
    let _one = ONE_AT_A_TIME.lock().await;
    const POOL_TIMEOUT: Duration = Duration::from_millis(500);
    const BEYOND: usize = 20;
    let server = Server::start(&[
        ("DATABASE_POOL_SIZE", "2"),
        ("DATABASE_POOL_TIMEOUT_MS", "500"),
    ])
    .await;
    let (org, token) = server.signup().await;
    let su = server.superuser().await;
    let mut locker = server.superuser().await;
    let url = server.url(&format!("/v1/orgs/{org}/projects"));
    let get = || server.http.get(&url).bearer_auth(&token);
    // Warm both connections.
    for _ in 0..4 {
        assert_eq!(timed(Instant::now(), get()).await.status, 200);
    }
    let t0 = Instant::now();
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("lock table app.sessions in access exclusive mode")
        .await
        .unwrap();
    let holders: Vec<_> = (0..2).map(|_| tokio::spawn(timed(t0, get()))).collect();
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let waiting: i64 = su
            .query_one(
                "select count(*) from pg_stat_activity
                  where usename = $1 and wait_event_type = 'Lock'",
                &[&db::RUNTIME_LOGIN_ROLE],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} requests hold the pool"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let beyond: Vec<_> = (0..BEYOND)
        .map(|_| tokio::spawn(timed(t0, get())))
        .collect();
    let mut refused = Vec::new();
    for r in beyond {
        refused.push(r.await.unwrap());
    }
    lock.commit().await.unwrap();
    let mut held = Vec::new();
    for r in holders {
        held.push(r.await.unwrap());
    }
    let mut after = Vec::new();
    for _ in 0..10 {
        after.push(timed(t0, get()).await);
    }
    let log = server.log_text();

    assert!(
        refused.iter().all(|s| s.status == 503 && s.well_formed_503),
        "beyond the pool: {refused:?}\n{log}"
    );
    let fastest = refused.iter().map(Sample::took).min().unwrap();
    let slowest = slowest(&refused);
    // They waited for a connection, and not much longer than the pool timeout.
    assert!(
        fastest >= POOL_TIMEOUT - Duration::from_millis(50),
        "answered after {} without waiting for the pool",
        secs(fastest)
    );
    assert!(
        slowest <= POOL_TIMEOUT + Duration::from_secs(1),
        "a request waited {} (pool timeout {})",
        secs(slowest),
        secs(POOL_TIMEOUT)
    );
    assert!(held.iter().all(Sample::acceptable), "{held:?}");
    assert!(after.iter().all(|s| s.status == 200), "{after:?}");
    eprintln!(
        "drill pool: {BEYOND} requests beyond a pool of 2 (both held) answered 503 \
         problem+json with Retry-After after {}..{} (DATABASE_POOL_TIMEOUT_MS 500); the 2 \
         holders {}; the next 10 all 200",
        secs(fastest),
        secs(slowest),
        held.iter()
            .map(|s| s.status.to_string())
            .collect::<Vec<_>>()
            .join(" and "),
    );
}
