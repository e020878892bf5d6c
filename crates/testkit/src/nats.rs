use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::process::ChildProcess;
use crate::{Error, ErrorKind, Result, workspace_root};

/// Oldest nats-server we accept: per-message TTL, KV limit markers and `sync_interval` need it.
pub const MIN_NATS_VERSION: (u32, u32, u32) = (2, 11, 0);

const INSTALL_HINT: &str =
    "run `scripts/install-deps.sh` (installs nats-server 2.12.x into .venv) or set NATS_SERVER_BIN";

/// Settings of a private server.
#[derive(Clone, Debug, Default)]
pub struct NatsOptions {
    /// fsync every JetStream write (`sync_interval: always`), as the deploy configs do.
    pub sync_always: bool,
    /// Membership in a cluster of private servers (see [`NatsCluster`]).
    pub cluster: Option<ClusterMembership>,
    /// Configuration files included after the server's own settings (accounts, users, a
    /// `tls` block). nats-server includes only files beside its configuration, so each is
    /// copied into the server's directory under its own name.
    pub includes: Vec<PathBuf>,
    /// Serve the HTTP monitoring endpoints (`/varz`, `/jsz`) on a free 127.0.0.1 port, kept
    /// across restarts: what tests read the settings in force and the Raft leaders from.
    pub monitoring: bool,
}

/// How one server of a [`NatsCluster`] joins the others.
#[derive(Clone, Debug)]
pub struct ClusterMembership {
    /// Unique per server: JetStream's Raft groups tell peers apart by it.
    pub server_name: String,
    pub cluster_name: String,
    /// This server's route port.
    pub route_port: u16,
    /// Route ports of every member, this one included (nats-server ignores its own).
    pub route_ports: Vec<u16>,
}

/// A nats-server with JetStream, private to the caller or shared through `CS_TEST_NATS_URL`.
pub struct NatsServer {
    url: String,
    port: u16,
    process: Option<ChildProcess>,
    binary: PathBuf,
    config_path: PathBuf,
    dir: Option<TempDir>,
    monitor_port: Option<u16>,
    server_name: String,
}

impl NatsServer {
    /// Starts a private server on a free 127.0.0.1 port with its own store dir.
    pub fn start() -> Result<Self> {
        Self::start_with(NatsOptions::default())
    }

    /// Starts a private server with the given settings.
    pub fn start_with(options: NatsOptions) -> Result<Self> {
        let binary = nats_server_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("cs-nats-")
            .tempdir()
            .map_err(|e| Error::io(ErrorKind::Filesystem, "creating the nats-server dir", e))?;
        let config_path = dir.path().join("nats.conf");
        copy_includes(dir.path(), &options.includes)?;
        let monitor_port = options.monitoring.then(crate::free_port).transpose()?;
        let ports = |client| Ports {
            client,
            monitor: monitor_port,
        };
        write_config(&config_path, dir.path(), ports(None), &options)?;
        let mut server = Self {
            url: String::new(),
            port: 0,
            process: None,
            binary,
            config_path,
            dir: Some(dir),
            monitor_port,
            server_name: server_name(&options),
        };
        server.spawn()?;
        // Later restarts keep the port, so clients reconnect to the same address.
        let store = server.store_root();
        write_config(
            &server.config_path,
            &store,
            ports(Some(server.port)),
            &options,
        )?;
        Ok(server)
    }

    /// The shared server named by `CS_TEST_NATS_URL`, or a private one when it is unset.
    pub fn shared_or_start() -> Result<Self> {
        match std::env::var("CS_TEST_NATS_URL") {
            Ok(url) if !url.is_empty() => Ok(Self {
                port: url
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0),
                url,
                process: None,
                binary: PathBuf::new(),
                config_path: PathBuf::new(),
                dir: None,
                monitor_port: None,
                server_name: String::new(),
            }),
            _ => Self::start(),
        }
    }

    /// Client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>` of the monitoring endpoints, when started with
    /// [`NatsOptions::monitoring`].
    pub fn monitor_url(&self) -> Option<String> {
        self.monitor_port
            .map(|port| format!("http://127.0.0.1:{port}"))
    }

    /// The server's name (JetStream names Raft leaders and peers by it).
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Whether this handle owns the process (false for a shared server).
    pub fn is_private(&self) -> bool {
        self.process.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ChildProcess::pid)
    }

    /// The server's log (connections, permission violations), for a private server.
    pub fn log_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.path().join("nats.log"))
    }

    /// SIGKILL, as a crash: no flush, no goodbye to clients.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Sends a signal to the private server (SIGSTOP/SIGCONT to freeze it).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        match &self.process {
            Some(process) => process.signal(signal),
            None => Err(Error::new(
                ErrorKind::Child,
                "the nats-server is not running or is shared",
            )),
        }
    }

    /// Freezes the private server (SIGSTOP) and returns once it is stopped.
    pub fn pause(&self) -> Result<()> {
        self.running()?.pause()
    }

    /// Unfreezes the private server.
    pub fn resume(&self) -> Result<()> {
        self.running()?.resume()
    }

    fn running(&self) -> Result<&ChildProcess> {
        self.process.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Child,
                "the nats-server is not running or is shared",
            )
        })
    }

    /// Starts the server again on the same port and store after [`NatsServer::kill`].
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    fn store_root(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<()> {
        let dir = self.store_root();
        let mut command = Command::new(&self.binary);
        command.arg("-c").arg(&self.config_path);
        let mut process = ChildProcess::spawn(
            "nats-server",
            command,
            &dir.join("nats.log"),
            Signal::SIGTERM,
        )?;
        let port = process.wait_for_log(Duration::from_secs(30), |log| {
            let line = log
                .lines()
                .find(|l| l.contains("Listening for client connections on"))?;
            line.rsplit(':').next()?.trim().parse::<u16>().ok()
        })?;
        process.wait_for_log(Duration::from_secs(30), |log| {
            log.contains("Server is ready").then_some(())
        })?;
        self.port = port;
        self.url = format!("nats://127.0.0.1:{port}");
        self.process = Some(process);
        Ok(())
    }
}

fn server_name(options: &NatsOptions) -> String {
    options
        .cluster
        .as_ref()
        .map_or_else(|| "cs-test".to_owned(), |member| member.server_name.clone())
}

/// The ports a server listens on: clients (`None` = any, on the first start) and monitoring.
#[derive(Clone, Copy)]
struct Ports {
    client: Option<u16>,
    monitor: Option<u16>,
}

fn write_config(path: &Path, dir: &Path, ports: Ports, options: &NatsOptions) -> Result<()> {
    let port = ports
        .client
        .map_or_else(|| "-1".to_owned(), |p| p.to_string());
    let monitor = ports
        .monitor
        .map(|p| format!("http: \"127.0.0.1:{p}\"\n"))
        .unwrap_or_default();
    let sync = if options.sync_always {
        "\n  sync_interval: always"
    } else {
        ""
    };
    let server_name = server_name(options);
    let cluster = match &options.cluster {
        None => String::new(),
        Some(member) => {
            let routes: Vec<String> = member
                .route_ports
                .iter()
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            format!(
                "cluster {{\n  name: \"{}\"\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                member.cluster_name,
                member.route_port,
                routes.join(", ")
            )
        }
    };
    let mut text = format!(
        "listen: \"127.0.0.1:{port}\"\n{monitor}server_name: \"{server_name}\"\nmax_payload: 8MB\njetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 256MB\n  max_file_store: 4GB{sync}\n}}\n{cluster}",
        dir.join("js").display()
    );
    for name in options.includes.iter().filter_map(|path| path.file_name()) {
        text.push_str(&format!("include \"{}\"\n", name.to_string_lossy()));
    }
    std::fs::write(path, text).map_err(|e| {
        Error::io(
            ErrorKind::Filesystem,
            format!("writing {}", path.display()),
            e,
        )
    })
}

fn copy_includes(dir: &Path, includes: &[PathBuf]) -> Result<()> {
    for source in includes {
        let name = source.file_name().ok_or_else(|| {
            Error::new(
                ErrorKind::Filesystem,
                format!("include {} names no file", source.display()),
            )
        })?;
        std::fs::copy(source, dir.join(name)).map_err(|e| {
            Error::io(
                ErrorKind::Filesystem,
                format!("copying {}", source.display()),
                e,
            )
        })?;
    }
    Ok(())
}

/// Private nats-servers joined in one JetStream cluster on 127.0.0.1, each with its own store.
/// Members can be killed and restarted on their ports, to take a quorum away and give it back.
pub struct NatsCluster {
    members: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` servers routed to each other. JetStream elects its meta leader once a
    /// majority is up; callers wait for that through their client (`query_account` succeeds).
    pub fn start(size: usize, options: NatsOptions) -> Result<Self> {
        let route_ports = (0..size)
            .map(|_| crate::free_port())
            .collect::<Result<Vec<u16>>>()?;
        let cluster_name = crate::unique_id("cscluster");
        let members = route_ports
            .iter()
            .enumerate()
            .map(|(index, &route_port)| {
                NatsServer::start_with(NatsOptions {
                    cluster: Some(ClusterMembership {
                        server_name: format!("{cluster_name}-{index}"),
                        cluster_name: cluster_name.clone(),
                        route_port,
                        route_ports: route_ports.clone(),
                    }),
                    ..options.clone()
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { members })
    }

    pub fn member(&self, index: usize) -> Option<&NatsServer> {
        self.members.get(index)
    }

    pub fn member_mut(&mut self, index: usize) -> Option<&mut NatsServer> {
        self.members.get_mut(index)
    }

    /// Client URLs of every member, for a client that may use any of them.
    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.url().to_owned()).collect()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn members(&self) -> &[NatsServer] {
        &self.members
    }
}

/// The nats-server to run: `NATS_SERVER_BIN`, else the project venv's, else `nats-server` on PATH.
/// Refuses servers older than [`MIN_NATS_VERSION`] with a one-line fix.
pub fn nats_server_binary() -> Result<PathBuf> {
    let candidates = [
        std::env::var_os("NATS_SERVER_BIN")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        Some(workspace_root().join(".venv/bin/nats-server")),
    ];
    let binary = candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .or_else(|| find_on_path("nats-server"))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::MissingBinary,
                format!("nats-server not found: {INSTALL_HINT}"),
            )
        })?;
    check_nats_server(&binary)?;
    Ok(binary)
}

/// Fails with a one-line fix unless `binary` is a nats-server at least [`MIN_NATS_VERSION`].
pub fn check_nats_server(binary: &Path) -> Result<()> {
    let version = nats_server_version(binary)?;
    if version < MIN_NATS_VERSION {
        return Err(Error::new(
            ErrorKind::TooOld,
            format!(
                "nats-server {}.{}.{} at {} is too old (need >= {}.{}): {INSTALL_HINT}",
                version.0,
                version.1,
                version.2,
                binary.display(),
                MIN_NATS_VERSION.0,
                MIN_NATS_VERSION.1
            ),
        ));
    }
    Ok(())
}

/// Runs `<binary> --version` and parses `nats-server: v2.12.8`.
pub fn nats_server_version(binary: &Path) -> Result<(u32, u32, u32)> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| {
            Error::io(
                ErrorKind::MissingBinary,
                format!("running {} --version", binary.display()),
                e,
            )
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version(&text).ok_or_else(|| {
        Error::new(
            ErrorKind::MissingBinary,
            format!(
                "cannot read the version of {} from {text:?}: {INSTALL_HINT}",
                binary.display()
            ),
        )
    })
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let version = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = version.split(['.', '-']).map(|p| p.parse::<u32>());
    Some((
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    ))
}

pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn parses_server_version_lines() {
        assert_eq!(parse_version("nats-server: v2.12.8\n"), Some((2, 12, 8)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9, 10)));
        assert_eq!(
            parse_version("nats-server: v2.14.0-beta.1"),
            Some((2, 14, 0))
        );
        assert_eq!(parse_version("garbage"), None);
    }
}
