//! Wiring: resolve the database (embedded or external), migrate, self-check, build the
//! app, bind, serve, run the worker, and shut down gracefully on Ctrl-C / SIGTERM.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use poem::{
    EndpointExt, Response, Route, Server,
    endpoint::make_sync,
    listener::{Acceptor, Listener, TcpListener},
    web::Html,
};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::NoTls;

use crate::{
    api,
    config::{DatabaseSettings, Settings},
    db::{
        self, Connections, Lane, bootstrap,
        embedded::{ClusterOptions, EmbeddedCluster},
        migrate,
    },
    http::middleware::{self, HttpLimits, Routes},
    state::{AppState, State},
};

/// The database the server will use, and the cluster to stop on exit if embedded.
pub struct Database {
    pub connections: Connections,
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
            migrate::apply_default_plan(&owner, settings.default_plan.as_deref()).await?;
            let connections = embedded_connections(&cluster, db::DATABASE_NAME);
            Ok(Database {
                connections,
                cluster: Some(cluster),
            })
        }
        DatabaseSettings::External {
            runtime_url,
            credentials_url,
            jobs_url,
            owner_url,
        } => {
            if let Some(owner_url) = owner_url {
                let mut owner = connect(&parse_url("DATABASE_OWNER_URL", owner_url)?).await?;
                migrate::run(&mut owner).await?;
                migrate::apply_default_plan(&owner, settings.default_plan.as_deref()).await?;
            } else if settings.default_plan.is_some() {
                anyhow::bail!(
                    "DEFAULT_PLAN is written as the schema owner: set DATABASE_OWNER_URL"
                );
            }
            let request = parse_url("DATABASE_URL", runtime_url)?;
            // Default: the same server and database, as the lane's default login role.
            let lane_config = |name: &str, url: &Option<SecretString>, lane: Lane| match url {
                Some(url) => parse_url(name, url),
                None => {
                    let mut config = request.clone();
                    config.user(lane.default_login_role());
                    Ok(config)
                }
            };
            let mut connections = Connections {
                credentials: lane_config("DATABASE_AUTH_URL", credentials_url, Lane::Credentials)?,
                jobs: lane_config("DATABASE_WORKER_URL", jobs_url, Lane::Jobs)?,
                request,
            };
            for lane in Lane::ALL {
                let config = match lane {
                    Lane::Request => &mut connections.request,
                    Lane::Credentials => &mut connections.credentials,
                    Lane::Jobs => &mut connections.jobs,
                };
                if config.get_connect_timeout().is_none() {
                    config.connect_timeout(Duration::from_secs(5));
                }
            }
            Ok(Database {
                connections,
                cluster: None,
            })
        }
    }
}

/// Each lane's login role on database `dbname` of an embedded cluster.
pub fn embedded_connections(cluster: &EmbeddedCluster, dbname: &str) -> Connections {
    Connections {
        request: cluster.pg_config(Lane::Request.default_login_role(), dbname),
        credentials: cluster.pg_config(Lane::Credentials.default_login_role(), dbname),
        jobs: cluster.pg_config(Lane::Jobs.default_login_role(), dbname),
    }
}

fn parse_url(name: &str, url: &SecretString) -> anyhow::Result<tokio_postgres::Config> {
    // The error text of a parse failure never includes the URL (it may hold a password).
    url.expose_secret()
        .parse()
        .map_err(|_| anyhow::anyhow!("{name} is not a valid PostgreSQL connection string"))
}

/// One connection outside the pools (migrations, self-check, audit).
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

/// Every lane's start-up checks: its role cannot bypass RLS or cross into another lane,
/// every table is protected, and the schema is as new as this build. Role-level
/// timeouts that differ from the expected ones are logged as warnings.
pub async fn check_runtime(connections: &Connections) -> anyhow::Result<()> {
    for lane in Lane::ALL {
        let client = connect(connections.get(lane))
            .await
            .with_context(|| format!("connecting as the {lane:?} role"))?;
        // One transaction: behind PgBouncer in transaction mode, each prepare and its
        // execution then reach the same server connection.
        client.batch_execute("begin read only").await?;
        for warning in migrate::self_check(&client, lane).await? {
            tracing::warn!(lane = ?lane, "{warning}");
        }
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
    }
    Ok(())
}

/// The whole HTTP application: the API, its OpenAPI document at `/openapi.json`,
/// Swagger UI at `/docs`, and the middleware every request passes through.
pub fn app(state: State, limits: HttpLimits) -> impl poem::Endpoint<Output = Response> {
    let service = api::service();
    let raw = service.spec();
    let spec = crate::http::spec::finish(&raw);
    let docs = crate::http::spec::swagger_html(&service.swagger_ui_html(), &raw, &spec);
    let routes = Arc::new(Routes::from_spec(
        &serde_json::from_str(&spec).expect("the finished spec is JSON"),
    ));
    Route::new()
        .at(
            "/openapi.json",
            make_sync(move |_| {
                Response::builder()
                    .content_type("application/json; charset=utf-8")
                    .body(spec.clone())
            }),
        )
        .at("/docs", make_sync(move |_| Html(docs.clone())))
        .nest("/", service)
        .data(state)
        .around(move |ep, req| middleware::handle(ep, req, limits, Arc::clone(&routes)))
}

/// Serves `GET /metrics` on `addr` (its own listener, not the API's port) until aborted,
/// and runs the recorder's upkeep. Returns once bound, with the bound address.
pub async fn serve_metrics(
    state: State,
    addr: std::net::SocketAddr,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let handle = crate::metrics::install()
        .context("METRICS_ADDR is set but the metrics recorder could not be installed")?;
    let acceptor = TcpListener::bind(addr.to_string())
        .into_acceptor()
        .await
        .with_context(|| format!("binding METRICS_ADDR {addr}"))?;
    let bound = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .unwrap_or(addr);
    tracing::info!(address = %bound, "serving metrics at /metrics");
    let upkeep = handle.clone();
    let task = tokio::spawn(async move {
        let app = crate::metrics::app(state, handle);
        let upkeep = async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                upkeep.run_upkeep();
            }
        };
        tokio::select! {
            served = Server::new_with_acceptor(acceptor).run(app) => {
                if let Err(err) = served {
                    tracing::error!(error = %err, "metrics listener stopped");
                }
            }
            () = upkeep => {}
        }
    });
    Ok((bound, task))
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

/// `palisade audit [--format json]`: the isolation report (see `db::audit`), read as the
/// schema owner (the embedded default's, or `DATABASE_OWNER_URL`). Returns whether it is
/// clean (no findings).
pub async fn audit_only(settings: Settings, json: bool) -> anyhow::Result<bool> {
    as_owner(&settings, "palisade audit", async |client| {
        let report = db::audit::report(client).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.to_text());
        }
        Ok(report.findings.is_empty())
    })
    .await
}

/// Runs `f` on a connection as the schema owner: the embedded default's (started, migrated
/// and stopped around it) or `DATABASE_OWNER_URL`.
pub(crate) async fn as_owner<T>(
    settings: &Settings,
    command: &str,
    f: impl AsyncFnOnce(&tokio_postgres::Client) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let (owner, cluster) = match &settings.database {
        DatabaseSettings::External {
            owner_url: Some(url),
            ..
        } => (parse_url("DATABASE_OWNER_URL", url)?, None),
        DatabaseSettings::External {
            owner_url: None, ..
        } => anyhow::bail!("`{command}` runs as the schema owner: set DATABASE_OWNER_URL"),
        DatabaseSettings::Embedded => {
            let database = prepare_database(settings).await?;
            let cluster = database.cluster.expect("embedded");
            (
                cluster.pg_config(db::OWNER_ROLE, db::DATABASE_NAME),
                Some(cluster),
            )
        }
    };
    let result = async {
        let client = connect(&owner).await?;
        f(&client).await
    }
    .await;
    // A cluster a running server started stays up (`palisade users ...` next to `serve`).
    if let Some(cluster) = cluster.filter(EmbeddedCluster::started_here) {
        tokio::task::spawn_blocking(move || cluster.stop()).await??;
    }
    result
}

/// `palisade storage reconcile [--apply] [--grace-seconds N]`: lists the object store,
/// reports the orphans (objects no committed row names, older than the grace period) and,
/// with `--apply`, deletes them. Dry run by default.
/// `palisade audit-log verify`: every audit chain, then every stored chain head (as the
/// schema owner). Ok(false) when anything is broken.
pub async fn audit_log_verify(settings: Settings) -> anyhow::Result<bool> {
    let storage = crate::storage::Storage::new(&settings.storage())?;
    storage.ensure_ready().await?;
    as_owner(&settings, "palisade audit-log verify", async |client| {
        let report = crate::audit_log::verify(client, &storage).await?;
        for problem in &report.problems {
            println!("BROKEN {problem}");
        }
        println!(
            "audit log: {} chains, {} rows, {} daily head files checked: {}",
            report.chains,
            report.rows,
            report.head_files,
            if report.problems.is_empty() {
                "intact".to_owned()
            } else {
                format!("{} problems", report.problems.len())
            }
        );
        Ok(report.problems.is_empty())
    })
    .await
}

pub async fn storage_reconcile(
    settings: Settings,
    apply: bool,
    grace: Duration,
) -> anyhow::Result<()> {
    let storage = crate::storage::Storage::new(&settings.storage())?;
    storage.ensure_ready().await?;
    as_owner(&settings, "palisade storage reconcile", async |client| {
        let report = crate::workspace::purge::reconcile(client, &storage, apply, grace).await?;
        for orphan in &report.orphans {
            println!(
                "{} {} ({} bytes)",
                if apply { "deleted" } else { "would delete" },
                orphan.key,
                orphan.size
            );
        }
        println!(
            "{}: {} live, {} queued for purge, {} orphans{}, {} younger than {}s left alone",
            storage.describe(),
            report.live,
            report.purging,
            report.orphans.len(),
            if apply {
                format!(" ({} deleted)", report.deleted)
            } else {
                " (dry run: --apply deletes them)".to_owned()
            },
            report.young,
            grace.as_secs()
        );
        Ok(())
    })
    .await
}

/// `palisade serve`: runs until Ctrl-C / SIGTERM, then refuses new connections, finishes
/// in-flight requests (up to `SHUTDOWN_TIMEOUT_SECONDS`) and stops the embedded cluster.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let database = prepare_database(&settings).await?;
    let result = async {
        check_runtime(&database.connections).await?;
        let state = AppState::new(&settings, &database.connections)?;
        state.storage.ensure_ready().await?;
        tracing::info!(store = %state.storage.describe(), "object store");
        // LISTEN needs a session: with PgBouncer in transaction mode, point
        // DATABASE_LISTEN_URL at PostgreSQL itself.
        let listen = match std::env::var("DATABASE_LISTEN_URL") {
            Ok(url) if !url.trim().is_empty() => {
                parse_url("DATABASE_LISTEN_URL", &SecretString::from(url))?
            }
            _ => database.connections.request.clone(),
        };
        let tails = tokio::spawn(crate::workspace::tail::listen(Arc::clone(&state), listen));
        let limits = HttpLimits {
            max_body_bytes: settings.max_body_bytes,
            request_timeout: settings.request_timeout,
            upload_bytes: settings.document_max_bytes,
            upload_timeout: settings.upload_timeout,
        };
        let addr = format!("{}:{}", settings.host, settings.port);
        let max_connections = crate::http::accept::connection_budget(settings.max_connections);
        let acceptor = crate::http::accept::Limited::new(
            TcpListener::bind(addr.clone())
                .into_acceptor()
                .await
                .with_context(|| format!("binding {addr}"))?,
            max_connections,
        );
        let local = acceptor.local_addr();
        tracing::info!(address = ?local.first(), docs = "/docs", max_connections, "serving");
        let metrics = match settings.metrics_addr {
            Some(addr) => Some(serve_metrics(Arc::clone(&state), addr).await?.1),
            None => None,
        };
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(crate::jobs::run(Arc::clone(&state), async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }));
        let served = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(
                app(state, limits),
                shutdown_signal(),
                Some(settings.shutdown_timeout),
            )
            .await;
        let _ = stop_tx.send(true);
        let _ = worker.await;
        tails.abort();
        if let Some(metrics) = metrics {
            metrics.abort();
        }
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
