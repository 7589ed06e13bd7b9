//! Read replicas with read-your-writes, against a real streaming replica: a private
//! primary cluster (not the run's shared one, which other tests use), a standby made
//! from it with `pg_basebackup -R`, and servers that send their reads to it.

use std::{sync::Arc, time::Duration};

use palisade::{
    config::Settings,
    db::{
        self, bootstrap,
        embedded::{ClusterOptions, EmbeddedCluster, SUPERUSER},
        migrate,
    },
    startup,
    state::AppState,
};
use poem::listener::{Acceptor, Listener, TcpListener};
use serde_json::{Value, json};
use tokio_postgres::NoTls;

use crate::helpers::{TempDir, TestApp, limits, settings};

/// A primary with a migrated `palisade` database, and its streaming standby. Both are
/// stopped when dropped.
struct Pair {
    primary: EmbeddedCluster,
    standby: Option<EmbeddedCluster>,
    _dir: TempDir,
}

impl Drop for Pair {
    fn drop(&mut self) {
        if let Some(standby) = &self.standby {
            let _ = standby.stop();
        }
        let _ = self.primary.stop();
    }
}

async fn pair() -> Pair {
    let dir = TempDir::new("palisade-replica");
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let root = dir.0.clone();
    let primary = tokio::task::spawn_blocking(move || {
        EmbeddedCluster::start(&root.join("primary"), ClusterOptions { ephemeral: true })
    })
    .await
    .unwrap()
    .expect("start the primary");
    bootstrap::embedded(&primary, db::DATABASE_NAME)
        .await
        .expect("roles and database");
    let mut owner = startup::connect(&primary.pg_config(db::OWNER_ROLE, db::DATABASE_NAME))
        .await
        .unwrap();
    migrate::run(&mut owner).await.expect("migrate");
    migrate::apply_default_plan(&owner, Some("enterprise"))
        .await
        .unwrap();
    drop(owner);
    let mut pair = Pair {
        primary,
        standby: None,
        _dir: dir,
    };
    let replica_dir = pair._dir.0.join("standby");
    let primary = pair.primary_handle();
    let standby = tokio::task::spawn_blocking(move || primary.start_standby(&replica_dir))
        .await
        .unwrap()
        .expect("pg_basebackup and start the standby");
    pair.standby = Some(standby);
    pair
}

impl Pair {
    /// The primary, for a blocking task (same data directory; stopping it is `Pair`'s).
    fn primary_handle(&self) -> EmbeddedCluster {
        EmbeddedCluster::start(self.primary.data_dir(), ClusterOptions { ephemeral: true })
            .expect("the running primary")
    }

    fn standby(&self) -> &EmbeddedCluster {
        self.standby.as_ref().expect("a standby")
    }

    async fn superuser_on_standby(&self) -> tokio_postgres::Client {
        let (client, conn) = self
            .standby()
            .pg_config(SUPERUSER, db::DATABASE_NAME)
            .connect(NoTls)
            .await
            .expect("connect to the standby");
        tokio::spawn(conn);
        client
    }

    /// A server on the primary whose reads go to the standby, once the standby is in its
    /// rotation.
    async fn spawn_app(&self, max_lag: Duration) -> TestApp {
        let mut settings: Settings = settings();
        let data_dir = TempDir::new("palisade-replica-data");
        settings.data_dir = data_dir.0.clone();
        settings.statement_cache = true;
        settings.replica_max_lag = max_lag;
        let socket = self.standby().socket_dir().display().to_string();
        settings.replica_urls = vec![
            format!(
                "postgresql://{}@/{}?host={socket}&port=5432",
                db::RUNTIME_LOGIN_ROLE,
                db::DATABASE_NAME
            )
            .into(),
        ];
        let connections = startup::embedded_connections(&self.primary, db::DATABASE_NAME);
        startup::check_runtime(&connections)
            .await
            .expect("self-check");
        let state = AppState::new(&settings, &connections).expect("state");
        state.storage.ensure_ready().await.unwrap();
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
        tokio::spawn(
            poem::Server::new_with_acceptor(acceptor)
                .run(startup::app(Arc::clone(&state), limits())),
        );
        let app = TestApp {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            db_name: db::DATABASE_NAME.into(),
            state,
            data_dir,
        };
        let replicas = app.state.db.replicas().expect("replicas");
        wait_until(
            "the replica enters the rotation",
            Duration::from_secs(10),
            || replicas.up()[0],
        )
        .await;
        app
    }
}

fn replica_reads(app: &TestApp) -> u64 {
    app.state.db.replicas().expect("replicas").reads()[0]
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn consistency(resp: &crate::helpers::TestResponse) -> String {
    resp.headers
        .get("palisade-consistency")
        .expect("a write answers its consistency token")
        .to_str()
        .unwrap()
        .to_owned()
}

async fn list_names(
    app: &TestApp,
    org: uuid::Uuid,
    token: &str,
    consistency: Option<&str>,
) -> Vec<String> {
    let mut req = app
        .http
        .get(format!("{}/v1/orgs/{org}/projects?limit=100", app.base))
        .bearer_auth(token);
    if let Some(c) = consistency {
        req = req.header("Palisade-Consistency", c);
    }
    let resp = app.send(req).await;
    let body = resp.assert_status(200);
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn create(app: &TestApp, org: uuid::Uuid, token: &str, name: &str) -> String {
    let resp = app
        .post(
            &format!("/v1/orgs/{org}/projects"),
            token,
            json!({ "name": name }),
        )
        .await;
    resp.assert_status(201);
    consistency(&resp)
}

/// Reads with `token` until the replica serves one (it has replayed the token): each
/// answer must hold the write whoever serves it.
async fn replayed(app: &TestApp, org: uuid::Uuid, bearer: &str, token: &str) {
    let before = replica_reads(app);
    let expected = list_names(app, org, bearer, Some(token)).await.len();
    for _ in 0..200 {
        let names = list_names(app, org, bearer, Some(token)).await;
        assert_eq!(
            names.len(),
            expected,
            "a read with the token never goes back in time"
        );
        if replica_reads(app) > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the replica never replayed {token}: its reads stayed on the primary");
}

#[tokio::test]
async fn reads_go_to_the_replica_and_a_token_never_reads_stale() {
    let pair = pair().await;
    let app = pair.spawn_app(Duration::from_secs(60)).await;
    let replicas = || app.state.db.replicas().expect("replicas");

    // Sign-up and sign-in write on the primary; the next reads work at once (a session
    // the replica does not know yet is answered by the primary, never a 401).
    let user = app.signup("Reader").await;
    let org = user.org_id;
    let me = app.get("/v1/auth/me", &user.token).await;
    me.assert_status(200);

    // Write, then read with the token: never stale, 30 times over.
    for i in 0..30 {
        let token = create(&app, org, &user.token, &format!("p{i}")).await;
        let names = list_names(&app, org, &user.token, Some(&token)).await;
        assert!(
            names.contains(&format!("p{i}")),
            "read {i} missed its own write: {names:?}"
        );
    }

    // Caught up, reads are served by the replica (counted), RLS as on the primary.
    let last = create(&app, org, &user.token, "p30").await;
    replayed(&app, org, &user.token, &last).await;
    let before = replica_reads(&app);
    for _ in 0..20 {
        let names = list_names(&app, org, &user.token, None).await;
        assert_eq!(names.len(), 31);
    }
    let served = replica_reads(&app) - before;
    assert!(served >= 15, "the replica served {served} of 20 reads");
    let stranger = app.signup("Stranger").await;
    app.get(&format!("/v1/orgs/{org}/projects"), &stranger.token)
        .await
        .assert_problem(404, "not_found");

    // Replay paused: without the token a read is stale (and served by the replica);
    // with it, the primary answers with the write.
    let standby = pair.superuser_on_standby().await;
    pause_replay(&standby).await;
    let token = create(&app, org, &user.token, "after-pause").await;
    let before = replica_reads(&app);
    let stale = list_names(&app, org, &user.token, None).await;
    assert!(!stale.contains(&"after-pause".to_owned()), "{stale:?}");
    assert_eq!(
        replica_reads(&app),
        before + 1,
        "the stale read was the replica's"
    );
    let fresh = list_names(&app, org, &user.token, Some(&token)).await;
    assert!(fresh.contains(&"after-pause".to_owned()), "{fresh:?}");
    assert_eq!(
        replica_reads(&app),
        before + 1,
        "the token's read was the primary's"
    );
    // A token that does not parse asks for the primary too.
    let fresh = list_names(&app, org, &user.token, Some("not-a-token")).await;
    assert!(fresh.contains(&"after-pause".to_owned()));
    // Multi-statement reads take the same path (GET one project by id).
    let id = app
        .post(
            &format!("/v1/orgs/{org}/projects"),
            &user.token,
            json!({"name": "by-id"}),
        )
        .await;
    let token = consistency(&id);
    let id = id.assert_status(201)["id"].as_str().unwrap().to_owned();
    let resp = app
        .send(
            app.http
                .get(format!("{}/v1/orgs/{org}/projects/{id}", app.base))
                .bearer_auth(&user.token)
                .header("Palisade-Consistency", &token),
        )
        .await;
    assert_eq!(resp.assert_status(200)["name"], "by-id");
    standby
        .batch_execute("select pg_wal_replay_resume()")
        .await
        .unwrap();
    wait_until(
        "the replica replays the token",
        Duration::from_secs(10),
        || replicas().up()[0],
    )
    .await;
    replayed(&app, org, &user.token, &token).await;

    // Reads write nothing, so they answer no token.
    let read = app
        .get(&format!("/v1/orgs/{org}/projects"), &user.token)
        .await;
    assert!(!read.headers.contains_key("palisade-consistency"));
}

#[tokio::test]
async fn a_lagging_or_lost_replica_leaves_the_rotation_without_errors() {
    let pair = pair().await;
    let app = pair.spawn_app(Duration::from_millis(400)).await;
    let replicas = || app.state.db.replicas().expect("replicas");
    let user = app.signup("Lag").await;
    let org = user.org_id;
    create(&app, org, &user.token, "one").await;

    // Lagging past REPLICA_MAX_LAG_MS (replay paused while the primary writes): out.
    let standby = pair.superuser_on_standby().await;
    pause_replay(&standby).await;
    create(&app, org, &user.token, "two").await;
    wait_until("a lagging replica leaves", Duration::from_secs(5), || {
        !replicas().up()[0]
    })
    .await;
    let before = replica_reads(&app);
    let names = list_names(&app, org, &user.token, None).await;
    assert!(
        names.contains(&"two".to_owned()),
        "the primary answers: {names:?}"
    );
    assert_eq!(replica_reads(&app), before);
    standby
        .batch_execute("select pg_wal_replay_resume()")
        .await
        .unwrap();
    wait_until(
        "a caught-up replica returns",
        Duration::from_secs(5),
        || replicas().up()[0],
    )
    .await;

    // The replica stops: every read still answers 200, from the primary.
    drop(standby);
    pair.standby().stop().expect("stop the standby");
    for i in 0..20 {
        let names = list_names(&app, org, &user.token, None).await;
        assert_eq!(names.len(), 2, "read {i}");
        let me: Value = app
            .get("/v1/auth/me", &user.token)
            .await
            .assert_status(200)
            .clone();
        assert_eq!(me["user"]["id"], json!(user.user_id));
    }
    assert!(!replicas().up()[0], "a lost replica is out of the rotation");
}

/// Pauses WAL replay on the standby and waits until it has taken effect: a pause is
/// requested, then happens, and a write in between would still be replayed.
async fn pause_replay(standby: &tokio_postgres::Client) {
    standby
        .batch_execute("select pg_wal_replay_pause()")
        .await
        .unwrap();
    let asked = std::time::Instant::now();
    loop {
        let state: String = standby
            .query_one("select pg_get_wal_replay_pause_state()", &[])
            .await
            .unwrap()
            .get(0);
        if state == "paused" {
            return;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "replay still {state:?} 30 s after pg_wal_replay_pause()"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
