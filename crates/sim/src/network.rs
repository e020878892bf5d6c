//! The network launcher: a topology from one TOML file, a database per node, one `canton-sim`
//! process per node, and handles to stop, kill and restart single nodes.
//!
//! ```toml
//! name = "demo"            # database names start with it
//! synchronizer = "global"  # synchronizer name, also the participants' alias for it
//!
//! [[node]]
//! id = "sequencer1"
//! kind = "sequencer"
//!
//! [[node]]
//! id = "participant1"
//! kind = "participant"
//! http_health = false      # default true
//! manual_connect = false   # of the bootstrap registration
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use testkit::ChildProcess;

use crate::config::{
    BootstrapSynchronizer, NodeConfig, NodeKind, Ports, SynchronizerSettings, Workload,
};
use crate::control::ControlClient;
use crate::error::{Error, ErrorKind, Result};
use crate::node::{READY_MARKER, ReadyLine};

const START_DEADLINE: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);

fn default_name() -> String {
    "simnet".to_owned()
}

fn default_synchronizer() -> String {
    "global".to_owned()
}

fn yes() -> bool {
    true
}

/// A topology file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default = "default_synchronizer")]
    pub synchronizer: String,
    /// Postgres server for the node databases (`postgres://user@host:port`); the command line
    /// or the library caller may give one instead.
    #[serde(default)]
    pub postgres: Option<String>,
    /// Dynamic synchronizer parameters the synchronizer starts with (milliseconds; absent: the
    /// sim's defaults). The sequencer stores them in its database at first start.
    #[serde(default)]
    pub reconciliation_interval_ms: Option<u64>,
    #[serde(default)]
    pub ledger_time_record_time_tolerance_ms: Option<u64>,
    #[serde(default)]
    pub confirmation_response_timeout_ms: Option<u64>,
    #[serde(default)]
    pub mediator_reaction_timeout_ms: Option<u64>,
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub id: String,
    pub kind: NodeKind,
    #[serde(default)]
    pub organisation: Option<String>,
    #[serde(default = "yes")]
    pub http_health: bool,
    #[serde(default)]
    pub manual_connect: bool,
    /// Apps: the participant they stand in front of (default: the first participant).
    #[serde(default)]
    pub participant: Option<String>,
    #[serde(default)]
    pub workload: Workload,
    /// Participants: serve the repair service (Canton's `enable-repair-commands`).
    #[serde(default)]
    pub repair_commands_enabled: bool,
    /// Apps: how often the app reads its participant's ledger end (default 200 ms).
    #[serde(default)]
    pub poll_interval_ms: Option<u64>,
    /// Participants: HA replica names; each runs as node `<id>.<replica>` on the one database.
    #[serde(default)]
    pub replicas: Vec<String>,
}

impl NetworkSpec {
    pub fn from_toml(text: &str) -> Result<Self> {
        let spec: Self = toml::from_str(text)
            .map_err(|e| Error::with_source(ErrorKind::Config, "parsing the network file", e))?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("reading network file {}", path.display()),
                e,
            )
        })?;
        Self::from_toml(&text)
            .map_err(|e| Error::new(ErrorKind::Config, format!("{}: {e}", path.display())))
    }

    /// Checks ids, kinds and references.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::new(ErrorKind::Config, what));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return bad(format!(
                "network name {:?} must be 1 or more of [a-z0-9_] (it prefixes database names)",
                self.name
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for node in &self.nodes {
            if !seen.insert(node.id.as_str()) {
                return bad(format!("node id {:?} appears twice", node.id));
            }
            if !node.replicas.is_empty() && node.kind != NodeKind::Participant {
                return bad(format!(
                    "node {:?}: replicas are for participants, not a {}",
                    node.id, node.kind
                ));
            }
        }
        let count = |kind| self.nodes.iter().filter(|n| n.kind == kind).count();
        let sequencers = count(NodeKind::Sequencer);
        if sequencers > 1 {
            return bad(format!(
                "{sequencers} sequencers given; the launcher supports one synchronizer with one sequencer"
            ));
        }
        if sequencers == 0 && (count(NodeKind::Participant) + count(NodeKind::Mediator)) > 0 {
            return bad("participants and mediators need a sequencer node".to_owned());
        }
        for node in self.nodes.iter().filter(|n| n.kind == NodeKind::App) {
            let target = node.participant.as_deref();
            let found = self
                .nodes
                .iter()
                .any(|n| n.kind == NodeKind::Participant && target.is_none_or(|t| t == n.id));
            if !found {
                return bad(format!(
                    "app {:?} needs a participant{}",
                    node.id,
                    target.map(|t| format!(" named {t:?}")).unwrap_or_default()
                ));
            }
        }
        Ok(())
    }
}

/// The Postgres server node databases are created in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl PostgresTarget {
    /// From `postgres://user@host:port[/db]`.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!("postgres URL {url:?} must look like postgres://user@host:port"),
                )
            })?;
        let (user, host_port) = rest.split_once('@').unwrap_or(("postgres", rest));
        let host_port = host_port.split('/').next().unwrap_or(host_port);
        let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "5432"));
        let port = port.parse().map_err(|_| {
            Error::new(
                ErrorKind::Config,
                format!("postgres URL {url:?}: bad port {port:?}"),
            )
        })?;
        Ok(Self {
            host: host.to_owned(),
            port,
            user: user.to_owned(),
        })
    }

    pub fn of(postgres: &testkit::Postgres) -> Self {
        Self {
            host: postgres.host().to_owned(),
            port: postgres.port(),
            user: postgres.user().to_owned(),
        }
    }

    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user={} dbname={db}",
            self.host, self.port, self.user
        )
    }

    /// Creates database `name` (refusing an existing one, which belongs to an earlier network).
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.admin_sql(&format!("CREATE DATABASE \"{name}\""), |stderr| {
            format!(
                "creating database {name} on {}:{}: {stderr}; use another network name or drop it",
                self.host, self.port
            )
        })
    }

    /// Drops database `name` (closing the connections still on it); a missing one is fine.
    pub fn drop_database(&self, name: &str) -> Result<()> {
        self.admin_sql(
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            |stderr| {
                format!(
                    "dropping database {name} on {}:{}: {stderr}",
                    self.host, self.port
                )
            },
        )
    }

    /// Runs one statement in the `postgres` maintenance database with psql; a refused one is
    /// reported with `refused(psql's stderr)`.
    fn admin_sql(&self, sql: &str, refused: impl FnOnce(&str) -> String) -> Result<()> {
        let psql = testkit::pg_bin("psql")
            .map_err(|e| Error::with_source(ErrorKind::Spawn, "finding psql", e))?;
        let output = Command::new(psql)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", &self.host])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                &self.user,
                "-d",
                "postgres",
            ])
            .args(["-c", sql])
            .output()
            .map_err(|e| Error::with_source(ErrorKind::Spawn, "running psql", e))?;
        if output.status.success() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Config,
            refused(String::from_utf8_lossy(&output.stderr).trim()),
        ))
    }
}

/// One node process with a fixed config (ports stay the same across restarts).
pub struct SimNode {
    config: NodeConfig,
    config_path: PathBuf,
    log_path: PathBuf,
    binary: PathBuf,
    database_name: String,
    /// The server of the node's database, for [`SimNode::redeploy_fresh`].
    postgres: Option<PostgresTarget>,
    process: Option<ChildProcess>,
    ready: Option<ReadyLine>,
    instance_id: String,
}

/// A node's endpoints, as printed by `canton-sim network`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEndpoints {
    pub id: String,
    pub kind: NodeKind,
    pub organisation: String,
    pub uid: String,
    pub member: String,
    pub database: String,
    pub database_name: String,
    pub admin: Option<SocketAddr>,
    pub ledger: Option<SocketAddr>,
    pub public: Option<SocketAddr>,
    pub grpc_health: SocketAddr,
    pub http_health: Option<SocketAddr>,
    pub control: SocketAddr,
    /// Apps: the Splice admin HTTP API.
    #[serde(default)]
    pub http: Option<SocketAddr>,
    pub pid: Option<u32>,
    pub log: PathBuf,
    pub config: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkEndpoints {
    pub network: String,
    pub synchronizer_alias: String,
    pub nodes: Vec<NodeEndpoints>,
}

impl SimNode {
    /// Writes `config` to `dir/<id>.toml` and returns a handle; call [`SimNode::spawn`] and
    /// [`SimNode::wait_ready`] (or [`SimNode::start`]) to run it.
    pub fn prepare(
        config: NodeConfig,
        binary: &Path,
        dir: &Path,
        database_name: &str,
    ) -> Result<Self> {
        config.validate()?;
        let instance_id = config.instance_id();
        let config_path = dir.join(format!("{instance_id}.toml"));
        let text = toml::to_string(&config)
            .map_err(|e| Error::with_source(ErrorKind::Config, "encoding a node config", e))?;
        std::fs::write(&config_path, text).map_err(|e| {
            Error::with_source(
                ErrorKind::Io,
                format!("writing {}", config_path.display()),
                e,
            )
        })?;
        Ok(Self {
            log_path: dir.join(format!("{}.log", config.instance_id())),
            config,
            config_path,
            binary: binary.to_owned(),
            database_name: database_name.to_owned(),
            postgres: None,
            process: None,
            ready: None,
            instance_id,
        })
    }

    /// Starts the process without waiting for it to be ready.
    pub fn spawn(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let mut command = Command::new(&self.binary);
        command
            .arg("--kind")
            .arg(self.config.kind().as_str())
            .arg("--config")
            .arg(&self.config_path)
            .env(
                "RUST_LOG",
                std::env::var("CS_SIM_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            // Start-up errors should end the log with their message, not a backtrace.
            .env("RUST_LIB_BACKTRACE", "0");
        let process = ChildProcess::spawn(
            &format!("canton-sim {}", self.config.instance_id()),
            command,
            &self.log_path,
            Signal::SIGTERM,
        )
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Spawn,
                format!("starting node {}", self.config.id),
                e,
            )
        })?;
        self.process = Some(process);
        self.ready = None;
        Ok(())
    }

    /// Waits for the ready line of the current run.
    pub fn wait_ready(&mut self, deadline: Duration) -> Result<Duration> {
        let started = Instant::now();
        let id = self.config.id.clone();
        let process = self.process.as_mut().ok_or_else(|| {
            Error::new(
                ErrorKind::Spawn,
                format!("node {id} is not running; spawn it first"),
            )
        })?;
        let line = process
            .wait_for_log(deadline, |log| {
                log.lines()
                    .find_map(|line| line.strip_prefix(READY_MARKER))
                    .map(str::to_owned)
            })
            .map_err(|e| {
                Error::with_source(ErrorKind::Spawn, format!("waiting for node {id}"), e)
            })?;
        let ready: ReadyLine = serde_json::from_str(&line).map_err(|e| {
            Error::with_source(
                ErrorKind::Spawn,
                format!("node {id} printed a bad ready line"),
                e,
            )
        })?;
        self.ready = Some(ready);
        Ok(started.elapsed())
    }

    /// Spawns and waits until ready.
    pub fn start(&mut self) -> Result<Duration> {
        self.spawn()?;
        self.wait_ready(START_DEADLINE)
    }

    /// SIGTERM and wait for a clean exit; errors if the node had to be killed.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut process) = self.process.take() else {
            return Ok(());
        };
        if process.stop(STOP_GRACE) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "node {} did not exit cleanly within {STOP_GRACE:?}; log tail:\n{}",
                    self.config.id,
                    process.log_tail(20)
                ),
            ))
        }
    }

    /// SIGKILL, as a machine crash.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Stops (cleanly) and starts again with the same config and ports.
    pub fn restart(&mut self) -> Result<Duration> {
        self.stop()?;
        self.start()
    }

    /// Where the node's database lives (set by [`SimNetwork::start`]); needed by
    /// [`SimNode::redeploy_fresh`].
    pub fn set_postgres(&mut self, postgres: PostgresTarget) {
        self.postgres = Some(postgres);
    }

    /// A redeploy on a new, empty database with the same config and ports: stops the node,
    /// drops and recreates its database and starts it again. For a sequencer (with its
    /// mediator) this is a new synchronizer deployed at the same address. Not for HA replicas,
    /// whose peers share the database.
    pub fn redeploy_fresh(&mut self) -> Result<Duration> {
        let Some(postgres) = self.postgres.clone() else {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "node {}: the Postgres server of its database is not known; call set_postgres first",
                    self.instance_id
                ),
            ));
        };
        if self.config.replica.is_some() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "node {} is an HA replica; its peers share database {}",
                    self.instance_id, self.database_name
                ),
            ));
        }
        let started = Instant::now();
        self.stop()?;
        postgres.drop_database(&self.database_name)?;
        postgres.create_database(&self.database_name)?;
        self.start()?;
        Ok(started.elapsed())
    }

    /// Whether the process is alive (false after a crash fault, kill or stop).
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(ChildProcess::is_running)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ChildProcess::pid)
    }

    /// Sends a signal to the running process (SIGSTOP/SIGCONT to freeze it, …).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let process = self.process.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Spawn,
                format!("node {} is not running", self.config.id),
            )
        })?;
        process
            .signal(signal)
            .map_err(|e| Error::with_source(ErrorKind::Spawn, "signalling a node", e))
    }

    /// The instance id: `<node>.<replica>` for an HA replica, else the node id.
    pub fn id(&self) -> &str {
        &self.instance_id
    }

    pub fn kind(&self) -> NodeKind {
        self.config.kind()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn uid(&self) -> String {
        self.config.uid()
    }

    pub fn member(&self) -> String {
        self.config.member()
    }

    /// libpq connection string of the node's database.
    pub fn database(&self) -> &str {
        &self.config.database
    }

    pub fn database_name(&self) -> &str {
        &self.database_name
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    fn addr(&self, port: u16) -> SocketAddr {
        let ip = self
            .config
            .listen_address
            .parse()
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        SocketAddr::new(ip, port)
    }

    fn bound<T>(&self, pick: impl Fn(&crate::node::BoundPorts) -> T, fallback: T) -> T {
        self.ready
            .as_ref()
            .map(|r| pick(&r.ports))
            .unwrap_or(fallback)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        let configured = (self.kind() != NodeKind::App).then_some(self.config.ports.admin);
        self.bound(|p| p.admin, configured).map(|p| self.addr(p))
    }

    /// `http://host:port` of the admin API, for tonic clients.
    pub fn admin_url(&self) -> Option<String> {
        self.admin_addr().map(crate::node::url_of)
    }

    pub fn ledger_addr(&self) -> Option<SocketAddr> {
        let configured = (self.kind() == NodeKind::Participant).then_some(self.config.ports.ledger);
        self.bound(|p| p.ledger, configured).map(|p| self.addr(p))
    }

    pub fn ledger_url(&self) -> Option<String> {
        self.ledger_addr().map(crate::node::url_of)
    }

    pub fn public_addr(&self) -> Option<SocketAddr> {
        let configured = (self.kind() == NodeKind::Sequencer).then_some(self.config.ports.public);
        self.bound(|p| p.public, configured).map(|p| self.addr(p))
    }

    pub fn public_url(&self) -> Option<String> {
        self.public_addr().map(crate::node::url_of)
    }

    pub fn grpc_health_addr(&self) -> SocketAddr {
        self.addr(self.bound(|p| p.grpc_health, self.config.ports.grpc_health))
    }

    pub fn grpc_health_url(&self) -> String {
        crate::node::url_of(self.grpc_health_addr())
    }

    pub fn http_health_addr(&self) -> Option<SocketAddr> {
        self.bound(|p| p.http_health, self.config.ports.http_health)
            .map(|p| self.addr(p))
    }

    /// The app's Splice admin HTTP API.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        let configured = (self.kind() == NodeKind::App).then_some(self.config.ports.http);
        self.bound(|p| p.http, configured).map(|p| self.addr(p))
    }

    pub fn control_addr(&self) -> SocketAddr {
        self.addr(self.bound(|p| p.control, self.config.ports.control))
    }

    /// Client of the node's control endpoint (faults, action log).
    pub fn control(&self) -> ControlClient {
        ControlClient::new(self.control_addr())
    }

    pub fn endpoints(&self) -> NodeEndpoints {
        NodeEndpoints {
            id: self.instance_id.clone(),
            kind: self.kind(),
            organisation: self.config.organisation.clone(),
            uid: self.uid(),
            member: self.member(),
            database: self.config.database.clone(),
            database_name: self.database_name.clone(),
            admin: self.admin_addr(),
            ledger: self.ledger_addr(),
            public: self.public_addr(),
            grpc_health: self.grpc_health_addr(),
            http_health: self.http_health_addr(),
            control: self.control_addr(),
            http: self.http_addr(),
            pid: self.pid(),
            log: self.log_path.clone(),
            config: self.config_path.clone(),
        }
    }
}

fn free_port() -> Result<u16> {
    testkit::free_port().map_err(|e| Error::with_source(ErrorKind::Io, "finding a free port", e))
}

/// Options of [`SimNetwork::start`].
pub struct LaunchOptions<'a> {
    pub postgres: PostgresTarget,
    /// The `canton-sim` binary (tests: `testkit::binary_path("canton-sim")`).
    pub binary: &'a Path,
    /// Where configs and logs go; a temporary dir removed on drop when `None`.
    pub work_dir: Option<PathBuf>,
}

/// A running topology.
pub struct SimNetwork {
    spec: NetworkSpec,
    nodes: Vec<SimNode>,
    work_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl SimNetwork {
    /// Creates a database per node, writes configs with fixed free ports, starts every node at
    /// once and waits until all are ready.
    pub fn start(spec: &NetworkSpec, options: LaunchOptions<'_>) -> Result<Self> {
        spec.validate()?;
        let (work_dir, temp) = match options.work_dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir).map_err(|e| {
                    Error::with_source(ErrorKind::Io, format!("creating {}", dir.display()), e)
                })?;
                (dir, None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("canton-sim-net-")
                    .tempdir()
                    .map_err(|e| Error::with_source(ErrorKind::Io, "creating a work dir", e))?;
                (temp.path().to_owned(), Some(temp))
            }
        };
        let configs = plan(spec, &options.postgres)?;
        let mut nodes = Vec::with_capacity(configs.len());
        let mut created = std::collections::HashSet::new();
        for (config, database_name) in configs {
            if created.insert(database_name.clone()) {
                options.postgres.create_database(&database_name)?;
            }
            let mut node = SimNode::prepare(config, options.binary, &work_dir, &database_name)?;
            node.set_postgres(options.postgres.clone());
            nodes.push(node);
        }
        let mut network = Self {
            spec: spec.clone(),
            nodes,
            work_dir,
            _temp: temp,
        };
        for node in &mut network.nodes {
            node.spawn()?;
        }
        let started = Instant::now();
        for node in &mut network.nodes {
            node.wait_ready(START_DEADLINE)?;
        }
        tracing::info!(nodes = network.nodes.len(), elapsed = ?started.elapsed(), "network ready");
        Ok(network)
    }

    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    pub fn nodes_mut(&mut self) -> &mut [SimNode] {
        &mut self.nodes
    }

    pub fn node(&self, id: &str) -> Option<&SimNode> {
        self.nodes.iter().find(|n| n.id() == id)
    }

    pub fn node_mut(&mut self, id: &str) -> Option<&mut SimNode> {
        self.nodes.iter_mut().find(|n| n.id() == id)
    }

    /// The first node of `kind`.
    pub fn first(&self, kind: NodeKind) -> Option<&SimNode> {
        self.nodes.iter().find(|n| n.kind() == kind)
    }

    pub fn spec(&self) -> &NetworkSpec {
        &self.spec
    }

    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    pub fn endpoints(&self) -> NetworkEndpoints {
        NetworkEndpoints {
            network: self.spec.name.clone(),
            synchronizer_alias: self.spec.synchronizer.clone(),
            nodes: self.nodes.iter().map(SimNode::endpoints).collect(),
        }
    }

    /// Stops every node (in parallel) and reports the ones that did not exit cleanly.
    pub fn stop(mut self) -> Result<()> {
        let failures: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .nodes
                .iter_mut()
                .map(|node| scope.spawn(move || node.stop().err().map(|e| e.to_string())))
                .collect();
            handles
                .into_iter()
                .filter_map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Some("stop panicked".to_owned()))
                })
                .collect()
        });
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::Timeout, failures.join("\n")))
        }
    }
}

/// Node configs of a topology: fixed free ports, one database each, participants registered
/// to the sequencer, mediators reading from it, apps pointing at their participant.
fn plan(spec: &NetworkSpec, postgres: &PostgresTarget) -> Result<Vec<(NodeConfig, String)>> {
    let mut planned: Vec<(NodeConfig, String)> = Vec::new();
    // A replicated participant is one process per replica, all on the node's database.
    let instances = spec.nodes.iter().flat_map(|node| {
        let replicas: Vec<Option<String>> = if node.replicas.is_empty() {
            vec![None]
        } else {
            node.replicas.iter().cloned().map(Some).collect()
        };
        replicas.into_iter().map(move |replica| (node, replica))
    });
    let mut specs: Vec<&NodeSpec> = Vec::new();
    for (node, replica) in instances {
        specs.push(node);
        let database_name = format!("{}_{}", spec.name, node.id.replace('-', "_"));
        let ports = Ports {
            admin: if node.kind == NodeKind::App {
                0
            } else {
                free_port()?
            },
            ledger: if node.kind == NodeKind::Participant {
                free_port()?
            } else {
                0
            },
            public: if node.kind == NodeKind::Sequencer {
                free_port()?
            } else {
                0
            },
            grpc_health: free_port()?,
            http_health: if node.http_health {
                Some(free_port()?)
            } else {
                None
            },
            control: free_port()?,
            http: if node.kind == NodeKind::App {
                free_port()?
            } else {
                0
            },
        };
        let config = NodeConfig {
            id: node.id.clone(),
            kind: Some(node.kind),
            organisation: node
                .organisation
                .clone()
                .unwrap_or_else(|| "org1".to_owned()),
            database: postgres.conninfo(&database_name),
            listen_address: "127.0.0.1".to_owned(),
            ports,
            canton_version: "3.4.11".to_owned(),
            protocol_version: 34,
            synchronizer: (node.kind == NodeKind::Sequencer).then(|| SynchronizerSettings {
                name: spec.synchronizer.clone(),
                ledger_time_record_time_tolerance_ms: spec
                    .ledger_time_record_time_tolerance_ms
                    .unwrap_or(60_000),
                reconciliation_interval_ms: spec.reconciliation_interval_ms.unwrap_or(5_000),
                confirmation_response_timeout_ms: spec
                    .confirmation_response_timeout_ms
                    .unwrap_or(30_000),
                mediator_reaction_timeout_ms: spec.mediator_reaction_timeout_ms.unwrap_or(30_000),
                preparation_time_record_time_tolerance_ms: 60_000,
            }),
            bootstrap_synchronizers: Vec::new(),
            sequencer: None,
            participant: None,
            participant_admin: None,
            poll_interval_ms: node.poll_interval_ms.unwrap_or(200),
            workload: node.workload.clone(),
            peers: Vec::new(),
            repair_commands_enabled: node.repair_commands_enabled,
            replica,
        };
        planned.push((config, database_name));
    }
    let sequencer_url = planned
        .iter()
        .find(|(c, _)| c.kind() == NodeKind::Sequencer)
        .map(|(c, _)| format!("http://127.0.0.1:{}", c.ports.public));
    let participants: Vec<(String, String, String)> = planned
        .iter()
        .filter(|(c, _)| c.kind() == NodeKind::Participant)
        .map(|(c, _)| {
            (
                c.id.clone(),
                format!("http://127.0.0.1:{}", c.ports.ledger),
                format!("http://127.0.0.1:{}", c.ports.admin),
            )
        })
        .collect();
    let mut participant_members: Vec<String> = planned
        .iter()
        .filter(|(c, _)| c.kind() == NodeKind::Participant)
        .map(|(c, _)| c.member())
        .collect();
    participant_members.dedup();
    for ((config, _), node) in planned.iter_mut().zip(specs) {
        match config.kind() {
            NodeKind::Participant => {
                let own = config.member();
                config.peers = participant_members
                    .iter()
                    .filter(|m| **m != own)
                    .cloned()
                    .collect();
                if let Some(url) = &sequencer_url {
                    config.bootstrap_synchronizers.push(BootstrapSynchronizer {
                        alias: spec.synchronizer.clone(),
                        sequencer: url.clone(),
                        manual_connect: node.manual_connect,
                    });
                }
            }
            NodeKind::Mediator => config.sequencer = sequencer_url.clone(),
            NodeKind::App => {
                let target = participants
                    .iter()
                    .find(|(id, _, _)| node.participant.as_deref().is_none_or(|p| p == id));
                config.participant = target.map(|(_, ledger, _)| ledger.clone());
                config.participant_admin = target.map(|(_, _, admin)| admin.clone());
            }
            NodeKind::Sequencer => {}
        }
    }
    Ok(planned)
}
