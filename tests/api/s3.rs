//! The real S3 server of the test run: `s3s-fs` (crates.io), started once per test
//! process on a free port, stopped and deleted when the process exits. Each test gets its
//! own bucket. `.ci/run` installs s3s-fs; when it is missing here it is installed into
//! `target/tools` (about two minutes, once).

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use palisade::storage::S3Settings;

pub const S3S_FS_VERSION: &str = "0.14.1";
const ACCESS_KEY: &str = "palisade-test";
const SECRET_KEY: &str = "palisade-test-secret";

pub struct S3Server {
    pub endpoint: String,
}

static SERVER: OnceLock<S3Server> = OnceLock::new();

fn binary() -> PathBuf {
    if let Ok(bin) = std::env::var("S3S_FS_BIN") {
        return PathBuf::from(bin);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools");
    let candidates = [
        tools.join("bin/s3s-fs"),
        PathBuf::from(&home).join(".cargo/bin/s3s-fs"),
    ];
    if let Some(found) = candidates.iter().find(|p| p.exists()) {
        return found.clone();
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v s3s-fs"])
        .output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    eprintln!(
        "s3s-fs not found: installing {S3S_FS_VERSION} into {}",
        tools.display()
    );
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "install",
            "s3s-fs",
            "--locked",
            "--features",
            "binary",
            "--version",
        ])
        .arg(S3S_FS_VERSION)
        .arg("--root")
        .arg(&tools)
        .status()
        .expect("run cargo install s3s-fs");
    assert!(status.success(), "cargo install s3s-fs failed");
    tools.join("bin/s3s-fs")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The run's S3 server. Its process and the reaper outlive this function by design
/// (the reaper stops the server when the test process exits).
#[allow(clippy::zombie_processes)]
pub fn server() -> &'static S3Server {
    SERVER.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("palisade-s3-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("s3 root");
        let port = free_port();
        let child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        // Stopped and deleted when this test process exits, however it exits.
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while [ -d /proc/{} ]; do sleep 0.5; done; kill {} 2>/dev/null; rm -rf \"$0\"",
                std::process::id(),
                child.id()
            ))
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the s3s-fs reaper");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return S3Server {
                    endpoint: format!("http://127.0.0.1:{port}"),
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("s3s-fs did not start on port {port}");
    })
}

/// Settings for a fresh bucket of its own on the run's server.
pub fn settings() -> S3Settings {
    S3Settings {
        endpoint: Some(server().endpoint.clone()),
        // Short: s3s-fs keeps each object's metadata in a file named after the base64 of
        // bucket and key, and a long bucket name pushes it past 255 bytes.
        bucket: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        path_style: true,
        request_timeout: Duration::from_secs(30),
    }
}
