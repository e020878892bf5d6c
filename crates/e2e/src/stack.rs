//! A whole network on one machine: private nats-server and PostgreSQL, the bus streams and
//! buckets, a canton-sim process per node, provisioned keys and an agent process beside every
//! node. The demo and the e2e tests start it the same way.
//!
//! Fields drop in declaration order, which is the teardown order: agents before the nodes they
//! watch, nodes before the database server, the bus last.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use canton_sim::network::LaunchOptions;
use canton_sim::{NetworkSpec, NodeKind, PostgresTarget, SimNetwork, SimNode};
use futures::StreamExt;
use nix::sys::signal::Signal;
use sidecar_bus::{BusSettings, Names, NatsAuth, NatsCredentials, Network, NetworkId};
use testkit::{ChildProcess, NatsCluster, NatsOptions, NatsServer, Postgres, binary_path};

use crate::keys::{NetworkKeys, NodeEntry};
use crate::orchestrator::{Orchestrator, SharedSims};

/// One `canton-agent` process and where its files are.
/// What an agent logs once its command consumer is bound (only agents that accept commands).
const AGENT_READY_LOG_LINE: &str = "command path ready";

pub struct AgentProcess {
    pub node: String,
    pub config_path: PathBuf,
    /// `http://127.0.0.1:<port>/metrics` when the stack serves metrics.
    pub metrics_url: Option<String>,
    pub process: ChildProcess,
}

/// One organisation's `canton-coordinator` and how to reach its API.
pub struct CoordinatorProcess {
    pub organisation: String,
    pub api_url: String,
    /// Holds the operator bearer token, for `canton-ops --token-file`.
    pub operator_token_file: PathBuf,
    pub config_path: PathBuf,
    /// `http://127.0.0.1:<port>/metrics` when the stack serves metrics.
    pub metrics_url: Option<String>,
    pub process: ChildProcess,
}

/// What the stack's NATS server requires: per-user nkeys with the generated permissions, over
/// TLS (`canton-ops gen nats-config`).
pub struct NatsLogin {
    /// `canton-ops gen nats-config`'s output directory (`accounts.conf`, `tls.conf`, `users/`).
    pub dir: PathBuf,
    pub tls: testkit::TlsFiles,
}

impl NatsLogin {
    /// The seed file of a generated user (`agent-<node>`, `coordinator-<organisation>`).
    pub fn seed_file(&self, user: &str) -> PathBuf {
        self.dir.join("users").join(format!("{user}.nk"))
    }

    /// How `user` logs in.
    pub fn auth(&self, user: &str) -> NatsAuth {
        NatsAuth {
            credentials: Some(NatsCredentials::NkeySeedFile(self.seed_file(user))),
            tls_ca_file: Some(self.tls.ca.clone()),
        }
    }

    /// The `[nats]` lines that make `user` log in.
    fn toml(&self, user: &str) -> String {
        format!(
            "nkey_seed_file = {:?}\ntls_ca_file = {:?}\n",
            self.seed_file(user),
            self.tls.ca
        )
    }
}

/// The stack's NATS: one server, or a JetStream cluster whose streams and buckets are
/// replicated on three members.
pub enum StackNats {
    One(NatsServer),
    Cluster(NatsCluster),
}

impl StackNats {
    /// Every server's client URL, comma-separated: the `nats.url` agents and coordinators get.
    pub fn url(&self) -> String {
        match self {
            Self::One(server) => server.url().to_owned(),
            Self::Cluster(cluster) => cluster.urls().join(","),
        }
    }

    /// Every server, in member order.
    pub fn servers(&self) -> &[NatsServer] {
        match self {
            Self::One(server) => std::slice::from_ref(server),
            Self::Cluster(cluster) => cluster.members(),
        }
    }

    /// Server `index` (0 for the single server), to kill, freeze or restart it.
    pub fn server_mut(&mut self, index: usize) -> Option<&mut NatsServer> {
        match self {
            Self::One(server) => (index == 0).then_some(server),
            Self::Cluster(cluster) => cluster.member_mut(index),
        }
    }

    /// The first server's client port: what a fault proxy of a single-server stack fronts.
    pub fn port(&self) -> u16 {
        self.servers()[0].port()
    }

    /// The single server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.servers().first().and_then(NatsServer::pid)
    }

    /// The first server's log.
    pub fn log_path(&self) -> Option<PathBuf> {
        self.servers().first().and_then(NatsServer::log_path)
    }

    /// JetStream replicas of the network's streams and buckets on these servers.
    pub fn replicas(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Cluster(cluster) => cluster.len().min(3),
        }
    }
}

pub struct Stack {
    /// Extra environment of every agent and coordinator started from now on (e.g. `OTEL_*`).
    pub process_env: Vec<(String, String)>,
    /// Agents and coordinators started from now on serve `/metrics` on a free port.
    pub serve_metrics: bool,
    /// Extra arguments of every agent and coordinator started from now on (e.g.
    /// `--log-format json`).
    pub process_args: Vec<String>,
    /// Environment of one agent's process only, by node (added after `process_env`).
    pub agent_env: BTreeMap<String, Vec<(String, String)>>,
    /// The `nats.url` of coordinators started from now on (default: every server), e.g. one
    /// cluster member only, to leave a coordinator with a minority.
    pub coordinator_nats_url: Option<String>,
    pub coordinators: BTreeMap<String, CoordinatorProcess>,
    pub agents: BTreeMap<String, AgentProcess>,
    /// Stops and starts nodes for the agents' lifecycle hooks.
    pub orchestrator: Orchestrator,
    pub sims: SharedSims,
    pub keys: NetworkKeys,
    pub network: Network,
    pub postgres: Postgres,
    pub nats: StackNats,
    /// Set when the server requires logins ([`StackOptions::nats_login`]).
    pub nats_login: Option<NatsLogin>,
    /// Configs, keys, journals and logs; removed on drop.
    pub dir: tempfile::TempDir,
}

/// How to start a [`Stack`].
pub struct StackOptions<'a> {
    pub topology: &'a str,
    pub heartbeat_interval: Duration,
    /// Agents accept signed commands (trust and journal configured).
    pub commands: bool,
    /// The NATS server requires TLS and a generated nkey user per agent and coordinator,
    /// each limited to its own subjects; otherwise it is open.
    pub nats_login: bool,
    /// A password added to every agent's database connection string (the test clusters trust
    /// local connections, so any password works): a secret whose leaks tests can look for.
    pub database_password: Option<&'a str>,
}

impl Stack {
    /// Starts servers and sim nodes and provisions keys; agents start with [`Stack::start_agents`].
    pub async fn start(options: &StackOptions<'_>) -> anyhow::Result<Self> {
        Self::start_with_nats(options, NatsServers::Test).await
    }

    /// [`Stack::start`] on servers with the deploy settings (`sync_interval: always`, the
    /// monitoring endpoints on): one server, or a cluster of `servers` with every stream and
    /// bucket replicated on three of them.
    pub async fn start_deployed(
        options: &StackOptions<'_>,
        servers: usize,
    ) -> anyhow::Result<Self> {
        Self::start_with_nats(options, NatsServers::Deployed { servers }).await
    }

    async fn start_with_nats(
        options: &StackOptions<'_>,
        servers: NatsServers,
    ) -> anyhow::Result<Self> {
        let spec = NetworkSpec::from_toml(options.topology).context("parsing the topology")?;
        let dir = tempfile::Builder::new()
            .prefix("canton-sidecar-stack-")
            .tempdir()
            .context("creating the stack's work dir")?;
        let postgres = Postgres::start().context("starting PostgreSQL")?;
        let names = Names::new(NetworkId::new(spec.name.as_str())?);
        let (sims, postgres) = start_sims(spec, postgres, dir.path()).await?;
        let entries: Vec<NodeEntry> = sims
            .nodes()
            .iter()
            .map(|node| NodeEntry {
                id: node.id().to_owned(),
                organisation: node.config().organisation.clone(),
            })
            .collect();
        let nats_login = if options.nats_login {
            Some(generate_nats_login(names.network(), &entries, dir.path())?)
        } else {
            None
        };
        let nats_options = NatsOptions {
            includes: nats_login
                .as_ref()
                .map(|login| vec![login.dir.join("accounts.conf"), login.dir.join("tls.conf")])
                .unwrap_or_default(),
            ..NatsOptions::default()
        };
        let nats = servers.start(nats_options)?;
        // The stack sets the bus up and reads it as the first organisation's coordinator would.
        let setup_user = entries
            .first()
            .map(|entry| entry.organisation.clone())
            .unwrap_or_default();
        let setup_auth = nats_login
            .as_ref()
            .map(|login| login.auth(&format!("coordinator-{setup_user}")))
            .unwrap_or_default();
        let network = ensure_network(&nats, names, &setup_auth, &setup_user).await?;
        let keys = NetworkKeys::provision(
            sims.spec().name.as_str(),
            &entries,
            &dir.path().join("keys"),
        )?;
        let sims: SharedSims = Arc::new(Mutex::new(sims));
        let orchestrator = Orchestrator::serve(sims.clone()).await?;
        let stack = Self {
            process_env: Vec::new(),
            serve_metrics: false,
            process_args: Vec::new(),
            agent_env: BTreeMap::new(),
            coordinator_nats_url: None,
            coordinators: BTreeMap::new(),
            agents: BTreeMap::new(),
            orchestrator,
            sims,
            keys,
            network,
            postgres,
            nats,
            nats_login,
            dir,
        };
        stack.write_agent_configs(options)?;
        Ok(stack)
    }

    /// Runs `f` on the sim network (blocking: nodes start and stop synchronously).
    pub fn with_sims<T>(&self, f: impl FnOnce(&mut SimNetwork) -> T) -> anyhow::Result<T> {
        let mut sims = self
            .sims
            .lock()
            .map_err(|_| anyhow::anyhow!("the sim network's lock was poisoned"))?;
        Ok(f(&mut sims))
    }

    /// Starts `organisation`'s coordinator and waits until it leads (fenced its agents and
    /// claimed the runs it owns).
    pub async fn start_coordinator(
        &mut self,
        organisation: &str,
        deadline: Duration,
    ) -> anyhow::Result<Duration> {
        self.start_coordinator_with_env(organisation, deadline, &[])
            .await
    }

    /// [`Stack::start_coordinator`] with extra environment (e.g. `FAILPOINTS`); a coordinator
    /// already running for `organisation` is replaced (killed if still running), so this is
    /// also the restart after a crash. Each start logs to its own numbered file.
    pub async fn start_coordinator_with_env(
        &mut self,
        organisation: &str,
        deadline: Duration,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Duration> {
        self.start_coordinator_with(organisation, deadline, env, "")
            .await
    }

    /// [`Stack::start_coordinator_with_env`] with `extra_toml` appended to the configuration
    /// (whole sections, such as `[retention]`).
    pub async fn start_coordinator_with(
        &mut self,
        organisation: &str,
        deadline: Duration,
        env: &[(&str, &str)],
        extra_toml: &str,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let dir = self.dir.path().join(format!("coordinator-{organisation}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let signer = self.keys.coordinator(organisation)?;
        let port = testkit::free_port()?;
        let operator_token_file = dir.join("operator.token");
        std::fs::write(
            &operator_token_file,
            format!("{}\n", hex::encode(rand_token())),
        )?;
        let config = format!(
            "network = {network:?}\norganisation = {organisation:?}\nname = \"coordinator-1\"\n\n\
             [nats]\nurl = {nats:?}\nreplicas = {replicas}\n{login}\n\
             [signing]\nseed_file = {seed:?}\nkey_id = {key_id:?}\n\n\
             [network_config]\nfile = {config_file:?}\nconfig_public_key = {config_key:?}\n\
             config_key_id = {config_key_id:?}\n\n\
             [api]\nlisten = \"127.0.0.1:{port}\"\noperator_token_file = {token:?}\n\n\
             [leader]\nlease_ttl = \"4s\"\nshort_lease_for_tests = true\n\n\
             [driver]\nfence_timeout = \"10s\"\ntick = \"100ms\"\n\n{extra_toml}",
            network = self.names().network().as_str(),
            nats = self
                .coordinator_nats_url
                .clone()
                .unwrap_or_else(|| self.nats.url()),
            replicas = self.nats.replicas(),
            login = self
                .nats_login
                .as_ref()
                .map(|login| login.toml(&format!("coordinator-{organisation}")))
                .unwrap_or_default(),
            seed = self.keys.seed_path(signer.key_id()),
            key_id = signer.key_id(),
            config_file = self.keys.network_config_path,
            config_key = self.keys.config_key_hex(),
            config_key_id = self.keys.config_signer.key_id(),
            token = operator_token_file,
        );
        let config_path = dir.join("coordinator.toml");
        std::fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let mut command = std::process::Command::new(binary_path("canton-coordinator")?);
        command.arg("--config").arg(&config_path);
        let metrics_url = self.observe(&mut command)?;
        command.envs(env.iter().copied());
        if let Some(mut previous) = self.coordinators.remove(organisation) {
            previous.process.kill();
        }
        let log = (1..)
            .map(|n| dir.join(format!("coordinator-{n}.log")))
            .find(|path| !path.exists())
            .unwrap_or_else(|| dir.join("coordinator.log"));
        let mut process = ChildProcess::spawn(
            &format!("canton-coordinator {organisation}"),
            command,
            &log,
            Signal::SIGTERM,
        )?;
        let remaining = deadline.saturating_sub(started.elapsed());
        tokio::task::block_in_place(|| {
            process.wait_for_log(remaining, |log| {
                log.contains("leader: runs claimed").then_some(())
            })
        })
        .with_context(|| format!("coordinator of {organisation} did not become leader"))?;
        self.coordinators.insert(
            organisation.to_owned(),
            CoordinatorProcess {
                organisation: organisation.to_owned(),
                api_url: format!("http://127.0.0.1:{port}"),
                operator_token_file,
                config_path,
                metrics_url,
                process,
            },
        );
        Ok(started.elapsed())
    }

    /// A `canton-ops` command aimed at `organisation`'s coordinator with the operator token.
    pub fn ops(&self, organisation: &str) -> anyhow::Result<std::process::Command> {
        let coordinator = self
            .coordinators
            .get(organisation)
            .with_context(|| format!("no coordinator runs for organisation {organisation}"))?;
        let mut command = std::process::Command::new(binary_path("canton-ops")?);
        command
            .arg("--coordinator")
            .arg(&coordinator.api_url)
            .arg("--token-file")
            .arg(&coordinator.operator_token_file);
        Ok(command)
    }

    /// Stops coordinators and agents (SIGTERM, clean exit expected), then every node, then
    /// the servers. Returns what did not stop cleanly.
    pub async fn shutdown(mut self) -> anyhow::Result<Vec<String>> {
        let mut unclean = Vec::new();
        for (organisation, coordinator) in &mut self.coordinators {
            if !coordinator.process.stop(Duration::from_secs(10)) {
                unclean.push(format!("coordinator {organisation}"));
            }
        }
        for (id, agent) in &mut self.agents {
            if !agent.process.stop(Duration::from_secs(10)) {
                unclean.push(format!("agent {id}"));
            }
        }
        let sims = self.sims.clone();
        let nodes = tokio::task::spawn_blocking(move || {
            let mut failed = Vec::new();
            if let Ok(mut sims) = sims.lock() {
                for node in sims.nodes_mut() {
                    if let Err(error) = node.stop() {
                        failed.push(format!("node {}: {error:#}", node.id()));
                    }
                }
            }
            failed
        })
        .await?;
        unclean.extend(nodes);
        drop(self);
        Ok(unclean)
    }

    /// Ids of every node in topology order.
    pub fn node_ids(&self) -> anyhow::Result<Vec<String>> {
        self.with_sims(|sims| sims.nodes().iter().map(|n| n.id().to_owned()).collect())
    }

    pub fn names(&self) -> &Names {
        &self.network.names
    }

    /// Adds the stack's process environment and arguments and, when serving metrics, `--metrics-listen` on a
    /// free port; returns the metrics URL.
    fn observe(&self, command: &mut std::process::Command) -> anyhow::Result<Option<String>> {
        command.envs(self.process_env.iter().map(|(k, v)| (k, v)));
        command.args(&self.process_args);
        if !self.serve_metrics {
            return Ok(None);
        }
        let addr = format!("127.0.0.1:{}", testkit::free_port()?);
        command.arg("--metrics-listen").arg(&addr);
        Ok(Some(format!("http://{addr}/metrics")))
    }

    fn agent_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join("agents").join(node)
    }

    /// The configuration file of `node`'s agent, written by [`Stack::start`] and read when the
    /// agent starts (a test may change it in between).
    pub fn agent_config_path(&self, node: &str) -> PathBuf {
        self.agent_dir(node).join("agent.toml")
    }

    fn write_agent_configs(&self, options: &StackOptions<'_>) -> anyhow::Result<()> {
        let configs = self.with_sims(|sims| {
            sims.nodes()
                .iter()
                .map(|node| {
                    let config = agent_config(self, node, sims, options);
                    (node.id().to_owned(), config)
                })
                .collect::<Vec<_>>()
        })?;
        for (id, config) in configs {
            let dir = self.agent_dir(&id);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join("agent.toml");
            std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Starts an agent beside every node and waits until each has published its node state.
    pub async fn start_agents(&mut self, deadline: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let ids = self.node_ids()?;
        for id in &ids {
            self.spawn_agent(id)?;
        }
        self.wait_for_node_states(&ids, deadline - started.elapsed())
            .await?;
        Ok(started.elapsed())
    }

    /// Starts `node`'s agent from its configuration file (appending to the same log), in place
    /// of any earlier process of it, which is killed first.
    pub fn spawn_agent(&mut self, node: &str) -> anyhow::Result<()> {
        if let Some(mut previous) = self.agents.remove(node) {
            previous.process.kill();
        }
        let config_path = self.agent_config_path(node);
        let mut command = std::process::Command::new(binary_path("canton-agent")?);
        command.arg("--config").arg(&config_path);
        let metrics_url = self.observe(&mut command)?;
        if let Some(env) = self.agent_env.get(node) {
            command.envs(env.iter().map(|(k, v)| (k, v)));
        }
        let process = ChildProcess::spawn(
            &format!("canton-agent {node}"),
            command,
            &self.agent_dir(node).join("agent.log"),
            Signal::SIGTERM,
        )?;
        self.agents.insert(
            node.to_owned(),
            AgentProcess {
                node: node.to_owned(),
                config_path,
                metrics_url,
                process,
            },
        );
        Ok(())
    }

    /// SIGKILLs `node`'s agent (a crash: no clean stop) and starts it again on the same
    /// journal; returns once it logged that its command consumer is bound again.
    pub fn restart_agent(&mut self, node: &str, deadline: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.spawn_agent(node)?;
        let agent = self
            .agents
            .get_mut(node)
            .context("the agent just started")?;
        tokio::task::block_in_place(|| {
            agent.process.wait_for_log(deadline, |log| {
                log.contains(AGENT_READY_LOG_LINE).then_some(())
            })
        })
        .with_context(|| format!("the restarted agent of {node} did not bind its commands"))?;
        Ok(started.elapsed())
    }

    /// Waits until the nodes bucket holds a state for every id in `ids`.
    pub async fn wait_for_node_states(
        &mut self,
        ids: &[String],
        deadline: Duration,
    ) -> anyhow::Result<()> {
        let bucket = self.network.kv(sidecar_bus::Bucket::Nodes).store().clone();
        let waited = tokio::time::timeout(deadline, async {
            loop {
                let mut present = Vec::new();
                let mut keys = bucket.keys().await?.boxed();
                while let Some(key) = keys.next().await {
                    present.push(key?);
                }
                if ids.iter().all(|id| present.contains(id)) {
                    return anyhow::Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        match waited {
            Ok(result) => result,
            Err(_) => {
                let silent: Vec<String> = self
                    .agents
                    .values_mut()
                    .filter_map(|agent| (!agent.process.is_running()).then(|| agent.node.clone()))
                    .collect();
                bail!(
                    "agents did not publish node state within {deadline:?} (exited: {silent:?}); \
                     logs under {}",
                    self.dir.path().join("agents").display()
                )
            }
        }
    }

    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of every log of the stack (sim nodes, agents, coordinators),
    /// for a failure message: the work dir is removed when the test ends.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut logs = Vec::new();
        collect_logs(self.dir.path(), &mut logs);
        logs.sort();
        let mut text = String::new();
        for path in logs {
            let Ok(content) = std::fs::read_to_string(&path) else {
                continue;
            };
            let all: Vec<&str> = content.lines().collect();
            let shown = &all[all.len().saturating_sub(lines)..];
            text.push_str(&format!(
                "\n--- {} (last {} of {} lines)\n{}\n",
                path.strip_prefix(self.dir.path())
                    .unwrap_or(&path)
                    .display(),
                shown.len(),
                all.len(),
                shown.join("\n")
            ));
        }
        text
    }
}

/// Which NATS servers a stack runs on.
enum NatsServers {
    /// One server with the harness defaults.
    Test,
    /// Deploy settings on `servers` servers (a cluster when more than one).
    Deployed { servers: usize },
}

impl NatsServers {
    fn start(self, options: NatsOptions) -> anyhow::Result<StackNats> {
        Ok(match self {
            Self::Test => {
                StackNats::One(NatsServer::start_with(options).context("starting nats-server")?)
            }
            Self::Deployed { servers } => {
                let options = NatsOptions {
                    sync_always: true,
                    monitoring: true,
                    ..options
                };
                if servers > 1 {
                    StackNats::Cluster(
                        NatsCluster::start(servers, options)
                            .context("starting the nats-server cluster")?,
                    )
                } else {
                    StackNats::One(NatsServer::start_with(options).context("starting nats-server")?)
                }
            }
        })
    }
}

/// How long a fresh cluster may take to elect its JetStream meta leader; stream creation is
/// refused until then.
const META_LEADER_WAIT: Duration = Duration::from_secs(60);

/// Creates the network's streams and buckets as `organisation`'s coordinator would, asking
/// again while a fresh cluster has no meta leader yet.
async fn ensure_network(
    nats: &StackNats,
    names: Names,
    auth: &NatsAuth,
    organisation: &str,
) -> anyhow::Result<Network> {
    let started = Instant::now();
    let settings = BusSettings {
        replicas: nats.replicas(),
        ..BusSettings::default()
    };
    loop {
        let attempt = async {
            let (client, _events) = sidecar_bus::connect_with_events(
                &nats.url(),
                "canton-stack",
                auth,
                &names.coordinator_inbox(organisation),
            )
            .await?;
            Network::ensure(client, names.clone(), &settings).await
        };
        match attempt.await {
            Ok(network) => return Ok(network),
            Err(error) if started.elapsed() < META_LEADER_WAIT && nats.servers().len() > 1 => {
                tracing::info!("network setup not ready yet: {error}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => {
                return Err(error).context("creating the network's streams and buckets");
            }
        }
    }
}

fn collect_logs(dir: &Path, logs: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_logs(&path, logs);
        } else if path.extension().is_some_and(|ext| ext == "log") {
            logs.push(path);
        }
    }
}

/// Runs `canton-ops gen nats-config` for the stack's agents, with TLS material made here.
fn generate_nats_login(
    network: &NetworkId,
    entries: &[NodeEntry],
    dir: &Path,
) -> anyhow::Result<NatsLogin> {
    let tls_dir = dir.join("nats-tls");
    std::fs::create_dir_all(&tls_dir)?;
    let tls = testkit::tls_files(&tls_dir)?;
    let out = dir.join("nats-config");
    let mut command = std::process::Command::new(binary_path("canton-ops")?);
    command
        .args(["gen", "nats-config", "--network", network.as_str()])
        .arg("--out-dir")
        .arg(&out)
        .arg("--tls-cert")
        .arg(&tls.cert)
        .arg("--tls-key")
        .arg(&tls.key);
    for entry in entries {
        command
            .arg("--agent")
            .arg(format!("{}/{}", entry.organisation, entry.id));
    }
    let output = command
        .output()
        .context("running canton-ops gen nats-config")?;
    if !output.status.success() {
        bail!(
            "canton-ops gen nats-config failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(NatsLogin { dir: out, tls })
}

fn rand_token() -> [u8; 24] {
    use rand_core::RngCore;
    let mut token = [0u8; 24];
    rand_core::OsRng.fill_bytes(&mut token);
    token
}

/// How often the sim network is started afresh when a node lost the race for its port (ports
/// are picked free, then bound by the node's process, and parallel tests pick too).
const SIM_START_ATTEMPTS: usize = 3;

/// Starts the sim network; a port race restarts it on a new PostgreSQL server, since the
/// databases of the failed attempt already exist.
async fn start_sims(
    spec: NetworkSpec,
    mut postgres: Postgres,
    dir: &Path,
) -> anyhow::Result<(SimNetwork, Postgres)> {
    let binary = binary_path("canton-sim")?;
    let mut attempt = 1;
    loop {
        let target = PostgresTarget::of(&postgres);
        let work_dir = dir.join(format!("nodes-{attempt}"));
        let (spec_again, binary_again) = (spec.clone(), binary.clone());
        let started = tokio::task::spawn_blocking(move || {
            SimNetwork::start(
                &spec_again,
                LaunchOptions {
                    postgres: target,
                    binary: &binary_again,
                    work_dir: Some(work_dir),
                },
            )
        })
        .await?;
        match started {
            Ok(sims) => return Ok((sims, postgres)),
            Err(error)
                if attempt < SIM_START_ATTEMPTS
                    && format!("{error:#}").contains("Address already in use") =>
            {
                tracing::warn!(
                    attempt,
                    "a sim node lost a port race; starting again: {error:#}"
                );
                drop(postgres);
                postgres = Postgres::start().context("starting PostgreSQL")?;
                attempt += 1;
            }
            Err(error) => return Err(error).context("starting the sim network"),
        }
    }
}

/// The participant an app reads from: named in the topology, else its first participant (as
/// the sim's own planning does).
fn app_participant(spec: &NetworkSpec, node: &SimNode) -> Option<String> {
    if node.kind() != NodeKind::App {
        return None;
    }
    spec.nodes
        .iter()
        .find(|n| n.id == node.id())
        .and_then(|n| n.participant.clone())
        .or_else(|| {
            spec.nodes
                .iter()
                .find(|n| n.kind == NodeKind::Participant)
                .map(|n| n.id.clone())
        })
}

/// The TOML an operator would write for the agent beside `node`.
fn agent_config(
    stack: &Stack,
    node: &SimNode,
    sims: &SimNetwork,
    options: &StackOptions<'_>,
) -> String {
    let spec = sims.spec();
    let kind = match node.kind() {
        NodeKind::Participant => "participant",
        NodeKind::Sequencer => "sequencer",
        NodeKind::Mediator => "mediator",
        NodeKind::App => "app",
    };
    let mut toml = format!(
        "network = {network:?}\nnode = {node:?}\nkind = {kind:?}\n{participant}\n\
         [nats]\nurl = {url:?}\n{login}\n[heartbeat]\ninterval = {interval:?}\n\n\
         [database]\nurl = {database:?}\n",
        network = stack.names().network().as_str(),
        node = node.id(),
        participant = app_participant(spec, node)
            .map(|p| format!("participant = {p:?}\n"))
            .unwrap_or_default(),
        url = stack.nats.url(),
        login = stack
            .nats_login
            .as_ref()
            .map(|login| login.toml(&format!("agent-{}", node.id())))
            .unwrap_or_default(),
        interval = humantime::format_duration(options.heartbeat_interval).to_string(),
        database = match options.database_password {
            Some(password) => format!("{} password={password}", node.database()),
            None => node.database().to_owned(),
        },
    );
    if let Some(admin) = node.admin_url() {
        toml.push_str(&format!(
            "\n[canton]\nadmin_url = {admin:?}\ngrpc_health_url = {health:?}\n",
            health = node.grpc_health_url()
        ));
        if let Some(addr) = node.http_health_addr() {
            toml.push_str(&format!("http_health_url = \"http://{addr}/health\"\n"));
        }
        if let Some(ledger) = node.ledger_url() {
            toml.push_str(&format!("ledger_api_url = {ledger:?}\n"));
        }
    }
    if options.commands
        && let Ok(identity) = stack.keys.agent(node.id())
    {
        let dir = stack.agent_dir(node.id());
        toml.push_str(&format!(
            "\n[trust]\nnetwork_config = {config:?}\nconfig_key = {config_key:?}\n\
             ack_key_seed = {seed:?}\nack_key_id = {key_id:?}\norganisation = {org:?}\n\n\
             [commands]\njournal_dir = {journal:?}\nack_wait = \"10s\"\n",
            config = stack.keys.network_config_path,
            config_key = stack.keys.config_key_hex(),
            seed = stack.keys.seed_path(identity.key_id()),
            key_id = identity.key_id(),
            org = identity.organisation(),
            journal = dir.join("journal"),
        ));
        toml.push_str(&backup_and_lifecycle(stack, node));
        toml.push_str(&splice(node, sims));
        toml.push_str(&rehydrate(node));
    }
    toml
}

/// `[rehydrate]` of a participant (not of HA replicas, which share one database): a hook that
/// replaces its database with an empty one keeping its identity (`canton-sim
/// reset-database`), as an operator's script would truncate the database and start the node
/// again for a rehydration.
fn rehydrate(node: &SimNode) -> String {
    if node.kind() != NodeKind::Participant || node.config().replica.is_some() {
        return String::new();
    }
    let sim = testkit::binary_path("canton-sim")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "canton-sim".to_owned());
    format!(
        "\n[rehydrate]\nhook = [{sim:?}, \"reset-database\", \"--participant-control\", \
         \"http://{control}\"]\ntimeout = \"2m\"\nready_timeout = \"30s\"\n",
        control = node.control_addr(),
    )
}

/// `[splice]` of an app: its HTTP admin API, its role, and a redeploy hook that resets its
/// participant's database and imports the dump through the app (`canton-sim migrate`), as a
/// Helm upgrade with migration enabled would. An app of an organisation that runs a sequencer
/// is an SV app (SVs operate the synchronizer); any other is a validator's.
fn splice(node: &SimNode, sims: &SimNetwork) -> String {
    let spec = sims.spec();
    let (Some(http), Some(participant)) = (
        node.http_addr(),
        app_participant(spec, node).and_then(|id| sims.node(&id)),
    ) else {
        return String::new();
    };
    let organisation = &node.config().organisation;
    let sv = sims
        .nodes()
        .iter()
        .any(|n| n.kind() == NodeKind::Sequencer && &n.config().organisation == organisation);
    let sim = testkit::binary_path("canton-sim")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "canton-sim".to_owned());
    format!(
        "\n[splice]\nadmin_url = \"http://{http}\"\nrole = {role:?}\n\
         redeploy = [{sim:?}, \"migrate\", \"--participant-control\", \"http://{pc}\", \
         \"--app-control\", \"http://{ac}\"]\nredeploy_timeout = \"2m\"\n",
        role = if sv { "sv" } else { "validator" },
        pc = participant.control_addr(),
        ac = node.control_addr(),
    )
}

/// Where agents write backup sets (one shared root: files are named after their node).
pub fn backup_root(stack: &Stack) -> PathBuf {
    stack.dir.path().join("backups")
}

/// `[backup]` and `[lifecycle]`: dumps into the stack's backup root; stop and start through
/// the orchestrator, as `systemctl` or `kubectl` would in production.
fn backup_and_lifecycle(stack: &Stack, node: &SimNode) -> String {
    let hook = testkit::binary_path("sim-lifecycle")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "sim-lifecycle".to_owned());
    let url = stack.orchestrator.url();
    let argv = |verb: &str| format!("[{hook:?}, {url:?}, {verb:?}, \"{{node}}\"]");
    // The app keeps the offset it processed in its own table; it has no sequencer time.
    let app_query = if node.kind() == NodeKind::App {
        "snapshot_point_query = \"SELECT 0::bigint, processed_offset FROM app_state\"\n"
    } else {
        ""
    };
    format!(
        "\n[backup]\nroot = {root:?}\nprogress_interval = \"500ms\"\n{app_query}\n\
         [lifecycle]\nstop = {stop}\nstart = {start}\nstatus = {status}\nwait = \"60s\"\n",
        root = backup_root(stack),
        stop = argv("stop"),
        start = argv("start"),
        status = argv("status"),
    )
}
