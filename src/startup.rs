//! Wiring: resolve the database (embedded or external), migrate, self-check, build the
//! app, bind, serve, and shut down gracefully on Ctrl-C / SIGTERM.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use poem::{
    Body, Endpoint, EndpointExt, IntoResponse, Request, Response, Route, Server,
    http::{HeaderValue, StatusCode},
    listener::{Acceptor, Listener, TcpListener},
};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::NoTls;
use tracing::Instrument;

use crate::{
    api::{
        self, AppState, State,
        problem::{ApiError, ProblemJson, framework_problem},
    },
    auth::{jwt::JwtKeys, password::Passwords},
    config::{DatabaseSettings, Settings},
    db::{
        self, Db, bootstrap,
        embedded::{ClusterOptions, EmbeddedCluster},
        migrate,
    },
    email::{Sealer, sender::Mailer},
};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// HTTP limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

/// The database the server will use, and the cluster to stop on exit if embedded.
pub struct Database {
    pub runtime: tokio_postgres::Config,
    pub cluster: Option<EmbeddedCluster>,
}

/// Starts (embedded) or reaches (external) the database and brings its schema and
/// policies up to date, as the owner role.
pub async fn prepare_database(settings: &Settings) -> anyhow::Result<Database> {
    match &settings.database {
        DatabaseSettings::Embedded => {
            std::fs::create_dir_all(&settings.data_dir)?;
            let dir = settings.data_dir.join("postgres");
            let cluster = tokio::task::spawn_blocking(move || {
                EmbeddedCluster::start(&dir, ClusterOptions::default())
            })
            .await??;
            bootstrap::embedded(&cluster, db::DATABASE_NAME).await?;
            let mut owner = connect(&cluster.pg_config(db::OWNER_ROLE, db::DATABASE_NAME)).await?;
            migrate::run(&mut owner).await?;
            let runtime = cluster.pg_config(db::RUNTIME_LOGIN_ROLE, db::DATABASE_NAME);
            Ok(Database {
                runtime,
                cluster: Some(cluster),
            })
        }
        DatabaseSettings::External {
            runtime_url,
            owner_url,
        } => {
            if let Some(owner_url) = owner_url {
                let mut owner = connect(&parse_url("DATABASE_OWNER_URL", owner_url)?).await?;
                migrate::run(&mut owner).await?;
            }
            let mut runtime = parse_url("DATABASE_URL", runtime_url)?;
            if runtime.get_connect_timeout().is_none() {
                runtime.connect_timeout(Duration::from_secs(5));
            }
            Ok(Database {
                runtime,
                cluster: None,
            })
        }
    }
}

fn parse_url(name: &str, url: &SecretString) -> anyhow::Result<tokio_postgres::Config> {
    // The error text of a parse failure never includes the URL (it may hold a password).
    url.expose_secret()
        .parse()
        .map_err(|_| anyhow::anyhow!("{name} is not a valid PostgreSQL connection string"))
}

/// One connection outside the pool (migrations, self-check).
pub async fn connect(config: &tokio_postgres::Config) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = config
        .connect(NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection closed");
        }
    });
    Ok(client)
}

/// The runtime role's start-up checks: it cannot bypass RLS, every table is protected,
/// and the schema is as new as this build.
pub async fn check_runtime(runtime: &tokio_postgres::Config) -> anyhow::Result<()> {
    let client = connect(runtime).await?;
    // One transaction: behind PgBouncer in transaction mode, each prepare and its
    // execution then reach the same server connection.
    client.batch_execute("begin read only").await?;
    migrate::self_check(&client).await?;
    let version: Option<i32> = client
        .query_one("select app.schema_version()", &[])
        .await?
        .get(0);
    client.batch_execute("commit").await?;
    let expected = migrate::latest_version();
    if version.unwrap_or(0) < expected {
        anyhow::bail!(
            "the database schema is at {version:?} but this build needs {expected}; run `palisade migrate` \
             (with DATABASE_OWNER_URL set)"
        );
    }
    Ok(())
}

/// A development secret: generated once, kept in `<data_dir>/<name>` (mode 0600).
fn dev_secret(data_dir: &Path, name: &str) -> anyhow::Result<SecretString> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join(name);
    if let Ok(existing) = std::fs::read_to_string(&path)
        && existing.trim().len() >= crate::config::MIN_SECRET_BYTES
    {
        return Ok(existing.trim().to_owned().into());
    }
    let secret = format!(
        "{}{}",
        crate::auth::tokens::generate(),
        crate::auth::tokens::generate()
    );
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    std::io::Write::write_all(&mut file, secret.as_bytes())?;
    tracing::info!(path = %path.display(), "generated a development secret");
    Ok(secret.into())
}

/// The application state from settings and a ready database.
pub fn state(settings: &Settings, runtime: tokio_postgres::Config) -> anyhow::Result<State> {
    let secret = match &settings.jwt_secret {
        Some(s) => s.clone(),
        None => dev_secret(&settings.data_dir, "jwt-secret")?,
    };
    let master_key = match &settings.master_key {
        Some(s) => s.clone(),
        None => dev_secret(&settings.data_dir, "master-key")?,
    };
    Ok(Arc::new(AppState {
        db: Db::new(runtime, settings.pool_size, settings.pool_timeout)
            .with_statement_cache(settings.statement_cache),
        jwt: JwtKeys::new(&settings.jwt.with_secret(secret)),
        passwords: Passwords::new(
            settings.password_hash_concurrency,
            settings.password_hash_wait,
        ),
        session_ttl: settings.session_ttl,
        auth: settings.auth.clone(),
        sealer: Sealer::new(&master_key),
        mailer: Mailer::from_settings(settings)?,
    }))
}

/// The whole HTTP application: API, docs, spec, and the middleware every request
/// passes through (request id + access log, body limit, timeout, problem+json errors).
pub fn app(state: State, limits: HttpLimits) -> impl Endpoint<Output = Response> {
    let service = api::service();
    let spec = service.spec_endpoint();
    let docs = service.swagger_ui();
    Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .nest("/", service)
        .data(state)
        .around(move |ep, req| handle(ep, req, limits))
}

async fn handle<E: Endpoint>(
    ep: Arc<E>,
    mut req: Request,
    limits: HttpLimits,
) -> poem::Result<Response> {
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("request", id = %request_id, %method, %path);
    let started = std::time::Instant::now();
    let mut resp = async {
        let declared = req
            .headers()
            .get(poem::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
            return too_large(limits.max_body_bytes);
        }
        // Bodies without Content-Length (chunked) are cut at the limit as they stream.
        // An HTTP/1 request that declares no body (most GETs) has none by the protocol's
        // framing, so it skips the adapter. HTTP/2 frames bodies without either header:
        // those are always cut.
        let chunked = req
            .headers()
            .contains_key(poem::http::header::TRANSFER_ENCODING);
        let http1 = req.version() <= poem::http::Version::HTTP_11;
        if !http1 || chunked || declared.is_some_and(|n| n > 0) {
            let body = req.take_body();
            req.set_body(Body::from_async_read(tokio::io::AsyncReadExt::take(
                body.into_async_read(),
                limits.max_body_bytes as u64 + 1,
            )));
        }
        match tokio::time::timeout(limits.request_timeout, ep.call(req)).await {
            Ok(Ok(out)) => out.into_response(),
            Ok(Err(err)) => framework_problem(err),
            // Dropping the handler's future rolls its transaction back (see db::Tx).
            Err(_) => ProblemJson::from(ApiError {
                code: "timeout",
                ..ApiError::unavailable("the request took too long and was cancelled", 1)
            })
            .into_response(),
        }
    }
    .instrument(span.clone())
    .await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let status = resp.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, elapsed_ms, "request failed");
        } else {
            tracing::info!(status, elapsed_ms, "request");
        }
    });
    Ok(resp)
}

fn too_large(limit: usize) -> Response {
    ProblemJson::from(ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body exceeds {limit} bytes"),
    ))
    .into_response()
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
}

/// `palisade migrate`.
pub async fn migrate_only(settings: Settings) -> anyhow::Result<()> {
    if matches!(
        &settings.database,
        DatabaseSettings::External {
            owner_url: None,
            ..
        }
    ) {
        anyhow::bail!(
            "`palisade migrate` needs DATABASE_OWNER_URL (the owner role's connection string)"
        );
    }
    let database = prepare_database(&settings).await?;
    tracing::info!(
        version = migrate::latest_version(),
        "migrations and policies applied"
    );
    if let Some(cluster) = database.cluster {
        tokio::task::spawn_blocking(move || cluster.stop()).await??;
    }
    Ok(())
}

/// `palisade serve`: runs until Ctrl-C / SIGTERM, then finishes in-flight requests
/// (up to 30 s) and stops the embedded cluster.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let database = prepare_database(&settings).await?;
    let result = async {
        check_runtime(&database.runtime).await?;
        let state = state(&settings, database.runtime.clone())?;
        let limits = HttpLimits {
            max_body_bytes: settings.max_body_bytes,
            request_timeout: settings.request_timeout,
        };
        let addr = format!("{}:{}", settings.host, settings.port);
        let acceptor = TcpListener::bind(addr.clone())
            .into_acceptor()
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = acceptor.local_addr();
        tracing::info!(address = ?local.first(), docs = "/docs", "serving");
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let sender = tokio::spawn(crate::email::sender::run(
            state.db.clone(),
            state.sealer.clone(),
            state.mailer.clone(),
            async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            },
        ));
        let served = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(
                app(state, limits),
                shutdown_signal(),
                Some(Duration::from_secs(30)),
            )
            .await;
        let _ = stop_tx.send(true);
        let _ = sender.await;
        served?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Some(cluster) = database.cluster {
        tracing::info!("stopping the embedded PostgreSQL cluster");
        tokio::task::spawn_blocking(move || cluster.stop()).await??;
    }
    result
}
