//! Test harness: one private PostgreSQL cluster per test run (the same code as the
//! embedded default), a migrated template database, and a fresh database cloned from
//! it for every test. The cluster is stopped and deleted when the test process exits,
//! however it exits.

use std::sync::{Arc, OnceLock};

use palisade::{
    config::Settings,
    db::{
        self, Connections, Lane, bootstrap,
        embedded::{ClusterOptions, EmbeddedCluster, SUPERUSER},
        migrate,
    },
    http::middleware::HttpLimits,
    startup,
    state::{AppState, State},
};
use poem::listener::{Acceptor, Listener, TcpListener};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_postgres::NoTls;
use uuid::Uuid;

const TEMPLATE_DB: &str = "palisade_template";
pub const PASSWORD: &str = "violet kettle under moonlight";

static CLUSTER: OnceLock<EmbeddedCluster> = OnceLock::new();
static PGBOUNCER: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();

/// `PALISADE_TEST_PGBOUNCER=1` (benches/pgbouncer-tests.sh): the app's three pools go
/// through a PgBouncer in transaction mode with 2 server connections per database and
/// user, and the app runs with `statement_cache = false`. Direct connections (setup, SQL
/// checks) still reach the cluster. Returns PgBouncer's socket directory (port 6432).
pub fn pgbouncer() -> Option<&'static std::path::Path> {
    PGBOUNCER
        .get_or_init(|| {
            if std::env::var("PALISADE_TEST_PGBOUNCER").map_or(true, |v| v != "1") {
                return None;
            }
            Some(start_pgbouncer(cluster()))
        })
        .as_deref()
}

/// Server connections PgBouncer keeps per database and role (transaction mode).
pub const PGBOUNCER_POOL_SIZE: usize = 2;

/// How many transactions a test can hold open at once to reach every server connection
/// of the request lane: the pool's size, or PgBouncer's behind it.
pub fn server_connections_per_lane() -> usize {
    match pgbouncer() {
        Some(_) => PGBOUNCER_POOL_SIZE,
        None => settings().pool_size,
    }
}

fn start_pgbouncer(cluster: &EmbeddedCluster) -> std::path::PathBuf {
    use std::{os::unix::fs::PermissionsExt, process::Command};
    let dir = std::env::temp_dir().join(format!("palisade-pgbouncer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    // pgbouncer refuses to run as root: it drops to the cluster's OS user.
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    // Each lane logs in as its own role; pgbouncer passes the user through (trust on the
    // cluster's private socket).
    let users: String = Lane::ALL
        .iter()
        .map(|l| format!("\"{}\" \"\"\n", l.default_login_role()))
        .collect();
    std::fs::write(dir.join("users.txt"), users).unwrap();
    let ini = format!(
        "[databases]\n* = host={sock} port=5432\n\
         [pgbouncer]\nlisten_addr =\nlisten_port = 6432\nunix_socket_dir = {dir}\n\
         auth_type = trust\nauth_file = {dir}/users.txt\npool_mode = transaction\n\
         default_pool_size = {PGBOUNCER_POOL_SIZE}\nserver_idle_timeout = 2\n\
         max_client_conn = 2000\nlogfile = {dir}/pgbouncer.log\n{user}",
        sock = cluster.socket_dir().display(),
        dir = dir.display(),
        user = if as_root { "user = postgres\n" } else { "" },
    );
    let ini_path = dir.join("pgbouncer.ini");
    std::fs::write(&ini_path, ini).unwrap();
    // Runs until this test process exits, however it exits (so it is never a zombie).
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "pgbouncer \"$1\" & child=$!; while [ -d /proc/{pid} ] && kill -0 $child 2>/dev/null; do sleep 0.5; done; kill $child 2>/dev/null; rm -rf \"$2\"",
            pid = std::process::id()
        ))
        .arg("sh")
        .arg(&ini_path)
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start pgbouncer (apt-get install -y pgbouncer)");
    for _ in 0..100 {
        if dir.join(".s.PGSQL.6432").exists() {
            return dir;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "pgbouncer did not start; see {}/pgbouncer.log",
        dir.display()
    );
}

/// The run's cluster, with roles and a migrated template database.
pub fn cluster() -> &'static EmbeddedCluster {
    CLUSTER.get_or_init(|| {
        // Blocking work on a plain thread: this may be called from inside a runtime.
        std::thread::spawn(|| {
            let dir = std::env::temp_dir().join(format!("palisade-test-{}", std::process::id()));
            let cluster = EmbeddedCluster::start(&dir, ClusterOptions { ephemeral: true })
                .expect("start the test PostgreSQL cluster");
            cluster
                .stop_and_remove_after_exit_of(std::process::id(), cluster.data_dir())
                .expect("start the cluster reaper");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                bootstrap::embedded(&cluster, TEMPLATE_DB)
                    .await
                    .expect("bootstrap roles");
                let mut owner = startup::connect(&cluster.pg_config(db::OWNER_ROLE, TEMPLATE_DB))
                    .await
                    .unwrap();
                migrate::run(&mut owner)
                    .await
                    .expect("migrate the template");
                // Tests run on the unlimited plan unless they choose one (plans.rs moves
                // its orgs, and checks the migrated default on a fresh migration).
                migrate::apply_default_plan(&owner, Some("enterprise"))
                    .await
                    .expect("default plan for tests");
            });
            // All template connections are closed with the runtime: it can be cloned now.
            drop(rt);
            cluster
        })
        .join()
        .expect("cluster setup")
    })
}

/// A client connected as `user` to database `dbname`.
pub async fn connect_as(user: &str, dbname: &str) -> tokio_postgres::Client {
    let config = cluster().pg_config(user, dbname);
    let (client, conn) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// A fresh database cloned from the template.
pub async fn fresh_database() -> String {
    let name = format!("t_{}", Uuid::new_v4().simple());
    let admin = connect_as(SUPERUSER, "postgres").await;
    admin
        .batch_execute(&format!(
            "create database {name} template {TEMPLATE_DB} owner {}",
            db::OWNER_ROLE
        ))
        .await
        .expect("clone the template");
    name
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub db_name: String,
    pub state: State,
    /// This test's own data directory (development secrets), deleted with it.
    pub data_dir: TempDir,
}

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Signup {
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub email: String,
    pub token: String,
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl TestResponse {
    /// Asserts an RFC 9457 problem with this status and code.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "body: {}",
            self.body
        );
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        assert_eq!(self.body["type"], format!("/problems/{code}"));
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        &self.body
    }
}

/// Development settings with this test's own secrets; nothing is read from or written to
/// the repository's `.data` (each test gets its data directory in `spawn_app_with`).
pub fn settings() -> Settings {
    let mut settings = Settings::development();
    settings.jwt_secret = Some(format!("test-secret-{}", Uuid::new_v4()).into());
    settings.master_key = Some(format!("test-master-key-{}", Uuid::new_v4()).into());
    settings.pool_size = 4;
    settings.credentials_pool_size = 2;
    settings.password_hash_concurrency = 2;
    // Limits on, so every test runs the limiter statement, but far above what a test
    // sends (tests of the limits set their own).
    let generous = Some(palisade::limits::Quota {
        quota: 1_000_000,
        window: std::time::Duration::from_secs(60),
    });
    settings.rate_limits = palisade::limits::RateLimits {
        api_key: generous,
        user: generous,
        ip: generous,
    };
    if std::env::var("PALISADE_TEST_STATEMENT_CACHE").is_ok_and(|v| v == "off") {
        settings.statement_cache = false;
    }
    // The real S3 server of the run, a bucket per test.
    settings.s3 = Some(crate::s3::settings());
    settings
}

/// Each lane's connection to test database `db_name`, directly or through PgBouncer.
pub fn connections(db_name: &str) -> Connections {
    match pgbouncer() {
        None => startup::embedded_connections(cluster(), db_name),
        Some(dir) => {
            let through = |lane: Lane| {
                let mut config = tokio_postgres::Config::new();
                config
                    .host_path(dir)
                    .port(6432)
                    .user(lane.default_login_role())
                    .dbname(db_name)
                    .connect_timeout(std::time::Duration::from_secs(5));
                config
            };
            Connections {
                request: through(Lane::Request),
                credentials: through(Lane::Credentials),
                jobs: through(Lane::Jobs),
            }
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(settings(), limits()).await
}

pub fn limits() -> HttpLimits {
    HttpLimits {
        max_body_bytes: 64 * 1024,
        request_timeout: std::time::Duration::from_secs(30),
        // Settings::development()'s DOCUMENT_MAX_BYTES (a test that lowers one lowers both).
        upload_bytes: 25 * 1024 * 1024,
        upload_timeout: std::time::Duration::from_secs(60),
    }
}

/// `PALISADE_TEST_LOG=1`: the servers' logs (e.g. the cause of a 500) on stderr.
/// While true, every event of every level, from every thread, is appended to
/// [`CAPTURED`] (the log-capture layer installed by `init_test_log`).
static CAPTURING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static CAPTURED: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
static CAPTURE_INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct CaptureWriter;

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The test binary's one global subscriber: the server's own log with
/// `PALISADE_TEST_LOG=1`; otherwise a capture layer, silent until a test starts a capture
/// (a thread-local subscriber is not enough: with tests on many threads, a callsite's
/// interest may be settled before it is set).
fn init_test_log() {
    static LOG: OnceLock<Option<tracing_appender::non_blocking::WorkerGuard>> = OnceLock::new();
    LOG.get_or_init(|| {
        if std::env::var("PALISADE_TEST_LOG").is_ok_and(|v| v == "1") {
            return Some(palisade::telemetry::init());
        }
        use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(|| CaptureWriter)
            .with_filter(tracing_subscriber::filter::dynamic_filter_fn(|_, _| {
                CAPTURING.load(std::sync::atomic::Ordering::SeqCst)
            }));
        if tracing_subscriber::registry()
            .with(layer)
            .try_init()
            .is_ok()
        {
            CAPTURE_INSTALLED.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        None
    });
}

/// Starts capturing every log line of the process (all levels); false when the capture
/// cannot be installed (`PALISADE_TEST_LOG=1` put the server's own log in its place).
pub fn start_log_capture() -> bool {
    init_test_log();
    CAPTURED.lock().unwrap().clear();
    CAPTURING.store(true, std::sync::atomic::Ordering::SeqCst);
    CAPTURE_INSTALLED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Stops the capture; returns what it saw.
pub fn stop_log_capture() -> String {
    CAPTURING.store(false, std::sync::atomic::Ordering::SeqCst);
    String::from_utf8_lossy(&CAPTURED.lock().unwrap()).into_owned()
}

pub async fn spawn_app_with(mut settings: Settings, limits: HttpLimits) -> TestApp {
    init_test_log();
    let db_name = fresh_database().await;
    let data_dir = TempDir::new("palisade-test-data");
    settings.data_dir = data_dir.0.clone();
    if pgbouncer().is_some() {
        settings.statement_cache = false;
    }
    let connections = connections(&db_name);
    startup::check_runtime(&connections)
        .await
        .expect("runtime self-check passes");
    let state = AppState::new(&settings, &connections).expect("state");
    state
        .storage
        .ensure_ready()
        .await
        .expect("object store ready");
    // The live-tail listener connects directly (LISTEN needs a session, not PgBouncer).
    tokio::spawn(palisade::workspace::tail::listen(
        Arc::clone(&state),
        startup::embedded_connections(cluster(), &db_name).request,
    ));
    // The server's own listener: TCP_NODELAY and the MAX_CONNECTIONS cap.
    let acceptor = palisade::http::accept::Limited::new(
        TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap(),
        settings.max_connections,
    );
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let app = startup::app(Arc::clone(&state), limits);
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    TestApp {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        db_name,
        state,
        data_dir,
    }
}

impl TestApp {
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> TestResponse {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> TestResponse {
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let streaming = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        let text = if streaming {
            // A live tail never ends: what arrives within a second is its body here.
            let mut stream = resp.bytes_stream();
            let mut text = String::new();
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
            while let Ok(Some(Ok(chunk))) =
                tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut stream)).await
            {
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
            text
        } else {
            resp.text().await.unwrap()
        };
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> TestResponse {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> TestResponse {
        self.request(Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> TestResponse {
        self.request(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> TestResponse {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    pub async fn register(&self, email: &str, password: &str, name: &str) -> TestResponse {
        self.request(
            Method::POST,
            "/v1/auth/register",
            None,
            Some(json!({"email": email, "password": password, "name": name})),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> TestResponse {
        self.request(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await
    }

    /// Registers a new user with a unique email and signs them in.
    pub async fn signup(&self, name: &str) -> Signup {
        let email = format!(
            "{}-{}@example.com",
            name.to_lowercase(),
            Uuid::new_v4().simple()
        );
        let reg = self.register(&email, PASSWORD, name).await;
        let body = reg.assert_status(201).clone();
        let login = self.login(&email, PASSWORD).await;
        let token = login.assert_status(200)["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        Signup {
            user_id: body["user"]["id"].as_str().unwrap().parse().unwrap(),
            org_id: body["user"]["current_org_id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
            email,
            token,
        }
    }

    /// Creates a project through the API and returns its id.
    pub async fn create_project(&self, who: &Signup, org: Uuid, name: &str) -> Uuid {
        let resp = self
            .post(
                &format!("/v1/orgs/{org}/projects"),
                &who.token,
                json!({"name": name}),
            )
            .await;
        resp.assert_status(201)["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// A direct connection to this test's database as `user`.
    pub async fn sql_as(&self, user: &str) -> tokio_postgres::Client {
        connect_as(user, &self.db_name).await
    }

    /// As the request role the server uses.
    pub async fn sql_runtime(&self) -> tokio_postgres::Client {
        self.sql_as(db::RUNTIME_LOGIN_ROLE).await
    }

    /// As the role of `lane`.
    pub async fn sql_lane(&self, lane: Lane) -> tokio_postgres::Client {
        self.sql_as(lane.default_login_role()).await
    }

    /// The session of `who`'s access token and its proof: what the server passes to
    /// `app.set_request_context`.
    pub fn session_proof(&self, who: &Signup) -> (Uuid, Vec<u8>) {
        let sid = self
            .state
            .jwt
            .verify(&who.token)
            .expect("a valid token")
            .sid;
        (sid, self.state.proofs.proof(sid).to_vec())
    }

    /// Runs `app.set_request_context` for `who` (in `org`) on `client`, as the server
    /// does; returns their role in `org`.
    pub async fn set_context(
        &self,
        client: &impl tokio_postgres::GenericClient,
        who: &Signup,
        org: Option<Uuid>,
    ) -> Option<String> {
        let (sid, proof) = self.session_proof(who);
        client
            .query_one(
                "select app.set_request_context($1, $2, $3)::text",
                &[&sid, &proof, &org],
            )
            .await
            .expect("the context statement succeeds")
            .get(0)
    }

    /// As the cluster's superuser (to arrange things no API allows).
    pub async fn sql_superuser(&self) -> tokio_postgres::Client {
        self.sql_as(SUPERUSER).await
    }
}

/// An email as the outbox holds it, body opened with the server's key.
#[derive(Debug, Clone)]
pub struct SentEmail {
    pub to: String,
    pub template: String,
    pub subject: String,
    pub body: String,
}

impl SentEmail {
    /// The value of `token=` in the body's link (tokens are base64url).
    pub fn token(&self) -> String {
        let start = self.body.find("token=").expect("a token link in the body") + "token=".len();
        self.body[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }
}

impl TestApp {
    /// Every email queued for `to`, oldest first -- read from the real outbox table.
    pub async fn emails_to(&self, to: &str) -> Vec<SentEmail> {
        let db = self.sql_superuser().await;
        let rows = db
            .query(
                "select to_email, template, subject, body_sealed from app.email_outbox
                  where to_email = $1 order by created_at, id",
                &[&to],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| SentEmail {
                to: r.get(0),
                template: r.get(1),
                subject: r.get(2),
                body: self
                    .state
                    .outbox
                    .open(r.get::<_, &[u8]>(3))
                    .expect("sealed with the app's key"),
            })
            .collect()
    }

    /// What the background worker does between two polls: turns queued password-reset
    /// requests into tokens and emails. Returns how many emails it queued.
    pub async fn run_worker(&self) -> usize {
        palisade::jobs::issue_password_resets(&self.state)
            .await
            .expect("the worker's pass succeeds")
    }

    /// The newest email queued for `to` with `template`.
    pub async fn last_email(&self, to: &str, template: &str) -> SentEmail {
        self.emails_to(to)
            .await
            .into_iter()
            .rev()
            .find(|e| e.template == template)
            .unwrap_or_else(|| panic!("no {template} email to {to}"))
    }
}

impl TestApp {
    /// Moves `org` to `plan`, as `palisade orgs set-plan` does (the schema owner).
    pub async fn set_plan(&self, org: Uuid, plan: &str) {
        self.sql_as(db::OWNER_ROLE)
            .await
            .query_one("select app.set_org_plan($1, $2)", &[&org, &plan])
            .await
            .expect("set the plan");
    }

    /// Moves the API calls the limiter counted into the rollups (the worker's flush).
    pub async fn flush_api_calls(&self) -> i64 {
        palisade::jobs::flush_api_calls(&self.state)
            .await
            .expect("flush API calls")
    }
}

/// One part of a `multipart/form-data` body: a field name, an optional file name and
/// part `Content-Type`, and the bytes.
pub struct Part<'a> {
    pub name: &'a str,
    pub filename: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

impl<'a> Part<'a> {
    pub fn text(name: &'a str, value: &'a str) -> Self {
        Self {
            name,
            filename: None,
            content_type: None,
            body: value.as_bytes(),
        }
    }
    pub fn file(filename: &'a str, content_type: Option<&'a str>, body: &'a [u8]) -> Self {
        Self {
            name: "file",
            filename: Some(filename),
            content_type,
            body,
        }
    }
}

/// A `multipart/form-data` body written by hand (exact control over part order and
/// malformed cases): its `Content-Type` header and bytes.
pub fn multipart(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = format!("palisade-test-{}", Uuid::new_v4().simple());
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{}\"", p.name);
        if let Some(f) = p.filename {
            disposition.push_str(&format!("; filename=\"{f}\""));
        }
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(b"\r\n");
        if let Some(ct) = p.content_type {
            body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(p.body);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl TestApp {
    /// `POST /v1/orgs/{org}/documents` with `parts`, as the holder of `token`.
    pub async fn upload(&self, org: Uuid, token: &str, parts: &[Part<'_>]) -> TestResponse {
        let (content_type, body) = multipart(parts);
        self.send(
            self.http
                .post(format!("{}/v1/orgs/{org}/documents", self.base))
                .bearer_auth(token)
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    /// One pass of the document worker, until nothing is left to process.
    pub async fn process_documents(&self) -> usize {
        let mut total = 0;
        loop {
            match palisade::workspace::documents::process_documents(&self.state)
                .await
                .unwrap()
            {
                0 => return total,
                n => total += n,
            }
        }
    }
}

/// Reads one HTTP/1.1 response (headers and a Content-Length body) from `stream`.
pub async fn read_response(stream: &mut tokio::net::TcpStream) -> (u16, String, String) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read");
        assert_eq!(
            n,
            1,
            "the server closed the connection: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    (status, head, String::from_utf8(body).unwrap())
}
