use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::nats::find_on_path;
use crate::process::ChildProcess;
use crate::{Error, ErrorKind, Result, free_port, unique_id};

/// What postgres logs when backends of a killed server still hold its shared memory.
const SHARED_MEMORY_IN_USE: &str = "pre-existing shared memory block";
/// How long a restart waits for those backends to exit.
const RESTART_DEADLINE: Duration = Duration::from_secs(30);

const INSTALL_HINT: &str =
    "run `scripts/install-deps.sh` (installs Debian's postgresql) or set CS_PG_BINDIR";

/// A PostgreSQL cluster, private to the caller or shared through `CS_TEST_PG_URL`.
///
/// A private cluster is copied from a template made once by `initdb` and runs `postgres` as a
/// direct foreground child with fsync off: it starts in well under a second. When the tests run
/// as root, the server runs as the `postgres` user (it refuses root) and its dir is chowned.
pub struct Postgres {
    host: String,
    port: u16,
    user: String,
    process: Option<ChildProcess>,
    data_dir: PathBuf,
    owner: Option<(u32, u32)>,
    dir: Option<TempDir>,
}

impl Postgres {
    /// Starts a private cluster on a free 127.0.0.1 port.
    pub fn start() -> Result<Self> {
        let owner = server_owner()?;
        let template = template_dir(owner)?;
        let dir = tempfile::Builder::new()
            .prefix("cs-pg-")
            .tempdir()
            .map_err(|e| Error::io(ErrorKind::Filesystem, "creating the postgres dir", e))?;
        give_to(dir.path(), owner, 0o755)?;
        let data_dir = dir.path().join("data");
        run(
            Command::new("cp").arg("-a").arg(&template).arg(&data_dir),
            "copying the template cluster",
        )?;
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir)
            .map_err(|e| Error::io(ErrorKind::Filesystem, "creating the socket dir", e))?;
        give_to(&socket_dir, owner, 0o755)?;
        let mut cluster = Self {
            host: "127.0.0.1".to_owned(),
            port: 0,
            user: "postgres".to_owned(),
            process: None,
            data_dir,
            owner,
            dir: Some(dir),
        };
        cluster.spawn_on_free_port()?;
        Ok(cluster)
    }

    /// The shared cluster named by `CS_TEST_PG_URL` (`postgres://user@host:port`), or a private one.
    pub fn shared_or_start() -> Result<Self> {
        let Ok(url) = std::env::var("CS_TEST_PG_URL") else {
            return Self::start();
        };
        if url.is_empty() {
            return Self::start();
        }
        let rest = url
            .trim_start_matches("postgres://")
            .trim_start_matches("postgresql://");
        let (user, host_port) = rest.split_once('@').unwrap_or(("postgres", rest));
        let host_port = host_port.split('/').next().unwrap_or(host_port);
        let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "5432"));
        Ok(Self {
            host: host.to_owned(),
            port: port.parse().unwrap_or(5432),
            user: user.to_owned(),
            process: None,
            data_dir: PathBuf::new(),
            owner: None,
            dir: None,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// The server's log of a private cluster (connections are logged with their
    /// `application_name`); `None` for a shared one.
    pub fn log_path(&self) -> Option<&Path> {
        self.process.as_ref().map(|p| p.log_path())
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ChildProcess::pid)
    }

    /// Connection URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{}@{}:{}/{db}", self.user, self.host, self.port)
    }

    /// A key-value connection string of database `db` (for tokio-postgres and libpq tools).
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user={} dbname={db}",
            self.host, self.port, self.user
        )
    }

    /// Creates database `name`.
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(())
    }

    /// Creates a database with a unique name starting with `prefix` and returns its name.
    pub fn fresh_database(&self, prefix: &str) -> Result<String> {
        let name = unique_id(prefix);
        self.create_database(&name)?;
        Ok(name)
    }

    /// Runs SQL through `psql` and returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let output = Command::new(pg_bin("psql")?)
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &self.host,
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                &self.user,
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .map_err(|e| Error::io(ErrorKind::Child, "running psql", e))?;
        if !output.status.success() {
            return Err(Error::new(
                ErrorKind::Child,
                format!(
                    "psql on {db} failed for {sql:?}: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// SIGKILL the postmaster, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the cluster again on the same port after [`Postgres::kill`].
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        // The killed postmaster's backends notice its death on their own and exit; until the
        // last one has, its shared memory is still attached and postgres refuses to start.
        let started = Instant::now();
        let mut attempts = 1;
        loop {
            match self.spawn(self.port) {
                Err(error)
                    if error.to_string().contains(SHARED_MEMORY_IN_USE)
                        && started.elapsed() < RESTART_DEADLINE =>
                {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                outcome => {
                    if attempts > 1 {
                        eprintln!(
                            "postgres restarted after {attempts} attempts in {:?}: the killed \
                             server's backends held its shared memory",
                            started.elapsed()
                        );
                    }
                    return outcome;
                }
            }
        }
    }

    fn spawn_on_free_port(&mut self) -> Result<()> {
        let mut last_error = None;
        for _ in 0..5 {
            match self.spawn(free_port()?) {
                Ok(()) => return Ok(()),
                // Another process may take the port between probing and binding: try another.
                Err(e) if e.kind() == ErrorKind::Spawn => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::new(ErrorKind::Spawn, "postgres did not start")))
    }

    fn spawn(&mut self, port: u16) -> Result<()> {
        let root = self
            .dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default();
        let mut command = Command::new(pg_bin("postgres")?);
        command
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-k")
            .arg(root.join("sock"))
            .args(["-p", &port.to_string(), "-h", "127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200", "-c", "log_connections=on"])
            .args(["-c", "log_line_prefix=%m [%p] %a "]);
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        // fsync off survives a process crash (WAL reaches the page cache at commit), not a machine crash.
        // SIGQUIT is postgres's immediate shutdown: fine for throwaway clusters with fsync off.
        let mut process = ChildProcess::spawn(
            "postgres",
            command,
            &root.join("postgres.log"),
            Signal::SIGQUIT,
        )?;
        process.wait_for_log(Duration::from_secs(30), |log| {
            log.contains("database system is ready to accept connections")
                .then_some(())
        })?;
        self.port = port;
        self.process = Some(process);
        Ok(())
    }
}

/// Path of a PostgreSQL program: `CS_PG_BINDIR`, else the newest `/usr/lib/postgresql/<v>/bin`,
/// else `PATH`.
pub fn pg_bin(name: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CS_PG_BINDIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join(name));
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .max();
    if let Some(version) = newest {
        let path = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin/{name}"));
        if path.is_file() {
            return Ok(path);
        }
    }
    find_on_path(name).ok_or_else(|| {
        Error::new(
            ErrorKind::MissingBinary,
            format!("{name} not found: {INSTALL_HINT}"),
        )
    })
}

/// Uid/gid the server must run as: the `postgres` user when we are root, else ourselves.
fn server_owner() -> Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some((user.uid.as_raw(), user.gid.as_raw()))),
        _ => Err(Error::new(
            ErrorKind::MissingBinary,
            format!(
                "running as root but there is no `postgres` user to run the server as: {INSTALL_HINT}"
            ),
        )),
    }
}

/// The initdb'd template for this PostgreSQL version and owner, made once and shared by all test
/// processes. Made in a private dir and renamed into place, so concurrent makers cannot collide.
fn template_dir(owner: Option<(u32, u32)>) -> Result<PathBuf> {
    let initdb = pg_bin("initdb")?;
    let version = initdb
        .parent()
        .and_then(Path::parent)
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("any")
        .to_owned();
    let uid = owner.map_or_else(|| nix::unistd::geteuid().as_raw(), |(uid, _)| uid);
    let base = std::env::temp_dir();
    let template = base.join(format!("cs-pg-template-{version}-{uid}"));
    if template.join("PG_VERSION").is_file() {
        return Ok(template);
    }
    let staging_root = tempfile::Builder::new()
        .prefix("cs-pg-template-staging-")
        .tempdir_in(&base)
        .map_err(|e| {
            Error::io(
                ErrorKind::Filesystem,
                "creating the template staging dir",
                e,
            )
        })?;
    give_to(staging_root.path(), owner, 0o755)?;
    let staging = staging_root.path().join("data");
    let mut command = Command::new(&initdb);
    command
        .arg("-D")
        .arg(&staging)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .current_dir(staging_root.path());
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    run(&mut command, "initdb of the template cluster")?;
    match std::fs::rename(&staging, &template) {
        Ok(()) => Ok(template),
        Err(_) if template.join("PG_VERSION").is_file() => Ok(template),
        Err(e) => Err(Error::io(
            ErrorKind::Filesystem,
            format!("moving the template to {}", template.display()),
            e,
        )),
    }
}

fn give_to(path: &Path, owner: Option<(u32, u32)>, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
        Error::io(
            ErrorKind::Filesystem,
            format!("chmod {}", path.display()),
            e,
        )
    })?;
    if let Some((uid, gid)) = owner {
        chown(path, Some(uid), Some(gid)).map_err(|e| {
            Error::io(
                ErrorKind::Filesystem,
                format!("chown {}", path.display()),
                e,
            )
        })?;
    }
    Ok(())
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let output = command
        .output()
        .map_err(|e| Error::io(ErrorKind::Spawn, what.to_owned(), e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Spawn,
        format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    ))
}
