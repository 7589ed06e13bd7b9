//! The embedded default: a private PostgreSQL cluster under `<data_dir>/postgres`,
//! built from the machine's PostgreSQL binaries, reachable only over a Unix socket
//! in its own 0700 directory (no TCP), started on demand and stopped on exit.
//!
//! PostgreSQL refuses to run as root, so when the server runs as root the cluster is
//! run as an unprivileged system user (`postgres` if present, else `nobody`).

use std::{
    fs,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::bail;

/// The superuser initdb creates; used only to bootstrap roles and databases.
pub const SUPERUSER: &str = "postgres";
const PORT: u16 = 5432;
const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH \
     or under /usr/lib/postgresql/*/bin. Install them with: sudo apt-get install -y postgresql";

#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// Tuning for a cluster whose data may be thrown away (tests): no fsync.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterOptions {
    pub ephemeral: bool,
}

#[derive(Debug)]
pub struct EmbeddedCluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    run_as: Option<RunAs>,
    options: ClusterOptions,
    /// False when `start` found the cluster already running (a server owns it).
    started_here: bool,
}

impl EmbeddedCluster {
    /// Initializes the cluster if `data_dir` holds none, then starts it (or reuses one
    /// already running there). Blocking: call from a blocking context.
    pub fn start(data_dir: &Path, options: ClusterOptions) -> anyhow::Result<Self> {
        let bin_dir = find_bin_dir().ok_or_else(missing_binaries_error)?;
        let run_as = if is_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let mut data_dir = absolute(data_dir)?;
        if let Some(user) = &run_as
            && !traversable_by_others(data_dir.parent().unwrap_or(Path::new("/")))
        {
            // e.g. a checkout under /root: the cluster's user could not reach it.
            let fallback = Path::new("/var/lib/palisade").join(short_hash(&data_dir));
            tracing::warn!(
                wanted = %data_dir.display(), using = %fallback.display(),
                "the PostgreSQL user cannot traverse the data directory's parents; using a system path"
            );
            fs::create_dir_all(&fallback)?;
            fs::set_permissions("/var/lib/palisade", fs::Permissions::from_mode(0o755))?;
            std::os::unix::fs::chown(&fallback, Some(user.uid), Some(user.gid))?;
            data_dir = fallback.join("postgres");
        }
        let mut cluster = Self {
            bin_dir,
            data_dir,
            run_as,
            options,
            started_here: false,
        };
        if !cluster.data_dir.join("PG_VERSION").exists() {
            cluster.init()?;
        }
        if !cluster.is_running() {
            cluster.pg_ctl_start()?;
            cluster.started_here = true;
        }
        Ok(cluster)
    }

    /// True when this process started the cluster (it was not already running).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the server's Unix socket (the data directory itself).
    pub fn socket_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Connection settings for `user` on `dbname` over the private socket.
    pub fn pg_config(&self, user: &str, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.socket_dir())
            .port(PORT)
            .user(user)
            .dbname(dbname)
            .application_name("palisade")
            .connect_timeout(std::time::Duration::from_secs(5));
        config
    }

    /// A streaming replica of this (running) cluster in `data_dir`: `pg_basebackup -R`
    /// over the private socket, then started as a hot standby on its own socket. For
    /// tests and benchmarks of read replicas. Blocking.
    pub fn start_standby(&self, data_dir: &Path) -> anyhow::Result<Self> {
        let data_dir = absolute(data_dir)?;
        // Empty, private, the cluster user's: pg_basebackup fills it.
        fs::create_dir_all(&data_dir)?;
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))?;
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(&data_dir, Some(user.uid), Some(user.gid))?;
        }
        let out = self
            .command("pg_basebackup")
            .args(["-h"])
            .arg(self.socket_dir())
            .args(["-p", &PORT.to_string(), "-U", SUPERUSER])
            .args(["-X", "stream", "-R", "-c", "fast", "-D"])
            .arg(&data_dir)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "pg_basebackup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // The copy holds the primary's socket lock file (the socket lives in the data
        // directory) and log: neither is the standby's.
        let _ = fs::remove_file(data_dir.join(format!(".s.PGSQL.{PORT}.lock")));
        let _ = fs::remove_file(data_dir.join("server.log"));
        let standby = Self {
            bin_dir: self.bin_dir.clone(),
            data_dir,
            run_as: self.run_as,
            options: self.options,
            started_here: true,
        };
        standby.pg_ctl_start()?;
        Ok(standby)
    }

    /// Fast shutdown: active transactions are rolled back, then the server stops.
    pub fn stop(&self) -> anyhow::Result<()> {
        // pg_ctl's progress goes nowhere: stdout is the commands' (e.g. `audit --format json`).
        let out = self
            .command("pg_ctl")
            .args(["stop", "-m", "fast", "-w", "-t", "60", "-D"])
            .arg(&self.data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        if !out.status.success() {
            bail!(
                "pg_ctl stop failed for {}: {}",
                self.data_dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Starts a detached watcher that, once process `pid` is gone (even if killed),
    /// stops this cluster at once and deletes `remove` -- how the test suite gets one
    /// throwaway cluster per run without leaking servers.
    pub fn stop_and_remove_after_exit_of(&self, pid: u32, remove: &Path) -> anyhow::Result<()> {
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 0.5; done; \"$0\" stop -m immediate -D \"$1\" >/dev/null 2>&1; rm -rf \"$2\""
        );
        self.command("sh")
            .arg("-c")
            .arg(script)
            .arg(self.bin_dir.join("pg_ctl"))
            .arg(&self.data_dir)
            .arg(remove)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let path = if program.contains('/') || program == "sh" {
            PathBuf::from(program)
        } else {
            self.bin_dir.join(program)
        };
        let mut cmd = Command::new(path);
        cmd.current_dir("/").env_remove("PGDATA");
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    fn init(&self) -> anyhow::Result<()> {
        fs::create_dir_all(&self.data_dir)?;
        fs::set_permissions(&self.data_dir, fs::Permissions::from_mode(0o700))?;
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(&self.data_dir, Some(user.uid), Some(user.gid))?;
        }
        tracing::info!(dir = %self.data_dir.display(), "initializing a private PostgreSQL cluster");
        let out = self
            .command("initdb")
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        // Only the Unix socket, only for this OS user (trust auth is safe behind 0700).
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir.join("postgresql.conf"))?;
        use std::io::Write;
        writeln!(
            conf,
            "\n# palisade embedded cluster\nlisten_addresses = ''\nunix_socket_permissions = 0700\n\
             max_connections = 200\nshared_buffers = 128MB\n"
        )?;
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .args(["status", "-D"])
            .arg(&self.data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let mut opts = format!("-k '{}'", self.socket_dir().display());
        if self.options.ephemeral {
            // Room for every test database's three lanes (and PgBouncer's) at once.
            opts.push_str(
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400",
            );
        }
        let log = self.data_dir.join("server.log");
        let out = self
            .command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(opts)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        if !out.status.success() {
            let tail = fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<_> = tail.lines().rev().take(10).collect();
            bail!(
                "PostgreSQL did not start: {}\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_owned())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

fn short_hash(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(path.as_os_str().as_encoded_bytes())[..6])
}

fn is_root() -> bool {
    // Safe without libc: the owner of /proc/self is the effective uid.
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn traversable_by_others(dir: &Path) -> bool {
    dir.ancestors()
        .all(|p| fs::metadata(p).map_or(true, |m| m.permissions().mode() & 0o001 != 0))
}

fn unprivileged_user() -> anyhow::Result<RunAs> {
    for name in ["postgres", "nobody"] {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").arg(flag).arg(name).output().ok()?;
            if !out.status.success() {
                return None;
            }
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        if let (Some(uid), Some(gid)) = (id("-u"), id("-g")) {
            return Ok(RunAs { uid, gid });
        }
    }
    bail!("running as root, but no unprivileged user (postgres or nobody) exists to run PostgreSQL")
}

/// `initdb` on PATH (symlinks resolved), else the newest /usr/lib/postgresql/*/bin.
pub fn find_bin_dir() -> Option<PathBuf> {
    find_bin_dir_in(std::env::var_os("PATH"), Path::new("/usr/lib/postgresql"))
}

fn find_bin_dir_in(path: Option<std::ffi::OsString>, lib_root: &Path) -> Option<PathBuf> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(path) = path {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if let Ok(real) = fs::canonicalize(&initdb)
                && let Some(bin) = real.parent()
                && has_all(bin)
            {
                return Some(bin.to_owned());
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(lib_root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_all(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The error a machine without PostgreSQL gets: it names the command that fixes it.
pub fn missing_binaries_error() -> anyhow::Error {
    anyhow::anyhow!(INSTALL_HINT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bin(dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        for b in ["initdb", "pg_ctl", "postgres"] {
            fs::write(dir.join(b), "").unwrap();
        }
    }

    #[test]
    fn finds_the_newest_installed_major_and_prefers_path() {
        let root = std::env::temp_dir().join(format!("palisade-bin-{}", uuid::Uuid::new_v4()));
        let lib = root.join("lib");
        assert_eq!(find_bin_dir_in(None, &lib), None, "nothing installed");
        fake_bin(&lib.join("15/bin"));
        fake_bin(&lib.join("16/bin"));
        fs::create_dir_all(lib.join("17/bin")).unwrap(); // incomplete: ignored
        assert_eq!(find_bin_dir_in(None, &lib), Some(lib.join("16/bin")));
        let on_path = root.join("path");
        fake_bin(&on_path);
        let found = find_bin_dir_in(Some(on_path.clone().into_os_string()), &lib);
        assert_eq!(found, Some(fs::canonicalize(&on_path).unwrap()));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn missing_binaries_error_names_the_install_command() {
        let msg = missing_binaries_error().to_string();
        assert!(msg.contains("apt-get install -y postgresql"), "{msg}");
    }
}
