//! The agent's configuration: one TOML file plus `CANTON_AGENT__<SECTION>__<KEY>` environment
//! overrides, checked completely at start.
//!
//! Every key is read one at a time so that an error names the key, the value found (and
//! whether it came from the file or an environment variable) and what is expected. Keys nobody
//! reads are refused too: a misspelt `heartbeat.intreval` would otherwise silently keep the
//! default.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Environment, File, FileFormat, Value, ValueKind};
use sidecar_bus::{AuthSetting, NatsAuth, NatsCredentials, NetworkId, NodeId};

/// Prefix of environment overrides: `CANTON_AGENT__NATS__URL` sets `nats.url`.
pub const ENV_PREFIX: &str = "CANTON_AGENT";
const ENV_SEPARATOR: &str = "__";

/// What the agent sits beside: a Canton node of some kind, or an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeKind {
    Participant,
    Sequencer,
    Mediator,
    /// A Postgres-backed application in front of a participant (a Splice validator or SV app).
    App,
}

impl NodeKind {
    const NAMES: [(&'static str, NodeKind); 4] = [
        ("participant", NodeKind::Participant),
        ("sequencer", NodeKind::Sequencer),
        ("mediator", NodeKind::Mediator),
        ("app", NodeKind::App),
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, role)| *role == self)
            .map_or("app", |(name, _)| name)
    }

    /// Whether the node has a Canton admin API (every role but apps).
    pub fn has_admin_api(self) -> bool {
        self != NodeKind::App
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How often a probe runs and how long one run may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub period: Duration,
    pub timeout: Duration,
}

/// Connection to the NATS cluster of the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsConfig {
    /// One or more server URLs, comma separated.
    pub url: String,
    /// The credential (`nats.nkey_seed_file` or `nats.credentials`) and the CA of the
    /// servers' certificates (`nats.tls_ca_file`).
    pub auth: NatsAuth,
    /// Client pings; a dead server is noticed after about two of them.
    pub ping_interval: Duration,
    pub connect_timeout: Duration,
    /// Upper bound of the jittered pause between reconnect attempts.
    pub max_reconnect_delay: Duration,
}

/// Endpoints of the Canton node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CantonConfig {
    /// Admin API, e.g. `http://127.0.0.1:5002`.
    pub admin_url: String,
    /// The node's dedicated `grpc.condition.v1` server, when it runs one.
    pub grpc_health_url: Option<String>,
    /// Service name asked of the gRPC health server (empty = all services).
    pub grpc_health_service: String,
    /// The node's HTTP health endpoint (`http://host:port/health`), when it serves one.
    pub http_health_url: Option<String>,
    /// Ledger API of a participant, for the ledger end.
    pub ledger_api_url: Option<String>,
}

/// Per-probe schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSchedules {
    pub status: Schedule,
    pub grpc_health: Schedule,
    pub http_health: Schedule,
    pub synchronizers: Schedule,
    /// Ledger end (participants) or latest sequenced time (sequencers).
    pub progress: Schedule,
    pub database: Schedule,
}

/// Where the agent finds the trust material for signed commands (`[trust]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustConfig {
    /// The signed `NetworkConfig` envelope (bytes as published by the network's operators).
    pub network_config: PathBuf,
    /// The pinned ed25519 public key that must have signed the network configuration.
    pub config_key: [u8; 32],
    /// File holding the 32-byte ed25519 seed of the agent's own ack key.
    pub ack_key_seed: PathBuf,
    /// The id of that key in the network configuration.
    pub ack_key_id: String,
    /// The organisation whose coordinator this agent obeys.
    pub organisation: String,
    /// Bound on clock disagreement between coordinator and agent.
    pub max_clock_skew: Duration,
}

/// The command consumer and journal (`[commands]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandsConfig {
    /// Directory of the journal, on a persistent volume.
    pub journal_dir: PathBuf,
    /// How long the server waits for an ack before redelivering a command.
    pub ack_wait: Duration,
    /// Deliveries of one command before the server gives up on it (a poison command).
    pub max_deliver: i64,
    /// Commands delivered and not yet acked at once.
    pub max_ack_pending: i64,
}

/// The whole, validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    pub network: NetworkId,
    pub node: NodeId,
    pub kind: NodeKind,
    pub nats: NatsConfig,
    /// Interval of the heartbeat ticker.
    pub heartbeat_interval: Duration,
    /// Node state is written on every change and at least this often.
    pub state_refresh: Duration,
    /// Bound on a clean stop after SIGTERM.
    pub shutdown_grace: Duration,
    /// Absent for apps, which have no Canton admin API.
    pub canton: Option<CantonConfig>,
    /// libpq connection string or URL of the node's database, for the reachability probe.
    pub database_url: Option<ConnectionString>,
    /// For an app: the participant node it reads from (the backup runbook dumps the app
    /// before it, the restore runbook starts it after it).
    pub participant: Option<NodeId>,
    pub probes: ProbeSchedules,
    /// Signed commands; absent = heartbeats and probes only.
    pub commands: Option<CommandPath>,
    /// `backup`, `restore` and `verify` actions; absent = none.
    pub backup: Option<BackupSettings>,
    /// `stop` and `start` actions through hook commands; absent = none.
    pub lifecycle: Option<sidecar_backup::LifecycleConfig>,
    /// `[splice]`: the Splice app's admin API and the redeploy hook of network DR.
    pub splice: Option<SpliceConfig>,
    /// `[rehydrate]` (participants): the hook that replaces the node's database for a
    /// rehydration from the synchronizer.
    pub rehydrate: Option<RehydrateConfig>,
}

/// A database connection string (libpq key-value pairs or a URL). It may carry a password, so
/// its `Debug` form, which `--check-config` prints and logs may show, names only the database
/// and its hosts.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString(String);

impl ConnectionString {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The full text, password included: only for opening connections.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ConnectionString {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl From<String> for ConnectionString {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match sidecar_backup::Database::new(&self.0) {
            Ok(database) => write!(f, "{database:?}"),
            Err(_) => f.write_str("ConnectionString(not shown)"),
        }
    }
}

/// Backups of the node's database (`[backup]`); the database is `database.url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSettings {
    /// Absolute directory holding backup sets (`<root>/<set>/<node>.dump`).
    pub root: PathBuf,
    /// The node's database (`database.url`), dumped and restored as the node's role.
    pub database_url: ConnectionString,
    /// Searched for `pg_dump`/`pg_restore` of the server's major version before
    /// `/usr/lib/postgresql/<major>/bin`.
    pub pg_bin_dir: Option<PathBuf>,
    /// A SELECT returning (sequencer_ts_micros, ledger_offset); default per node kind.
    pub snapshot_point_query: Option<String>,
    /// Command run after a backup's manifest is written.
    pub upload: Option<sidecar_backup::CommandTemplate>,
    pub progress_interval: Duration,
    /// Database a restore connects to while it drops and recreates the node's.
    pub maintenance_database: String,
    /// For an app: the participant it reads from (named in its manifests).
    pub participant: Option<String>,
    pub method: BackupMethod,
}

/// How `[backup]` takes a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupMethod {
    PgDump,
    /// `backup.snapshot_command` (volume snapshot, pgBackRest …) instead of pg_dump.
    Snapshot(sidecar_backup::SnapshotSpec),
}

/// Trust material and consumer settings of the command path; present only with `[trust]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandPath {
    pub trust: TrustConfig,
    pub commands: CommandsConfig,
}

/// A configuration that cannot be used. The message names the key and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {} not found; pass an existing file with --config", path.display())]
    MissingFile { path: PathBuf },
    #[error("config file {} cannot be read: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {} is not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}` is missing{origin}; expected {expected}")]
    Missing {
        key: String,
        origin: Origin,
        expected: String,
    },
    #[error("config key `{key}` has value {value:?}{origin}; expected {expected}")]
    Invalid {
        key: String,
        value: String,
        origin: Origin,
        expected: String,
    },
    #[error("config key `{key}`{origin} is unknown; known keys: {known}")]
    Unknown {
        key: String,
        origin: Origin,
        known: String,
    },
}

impl ConfigError {
    /// The offending key, when the error is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Missing { key, .. }
            | ConfigError::Invalid { key, .. }
            | ConfigError::Unknown { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Where a key's value came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Environment(String),
    /// Nothing set it (a missing key).
    Nowhere,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, " (in {})", path.display()),
            Origin::Environment(var) => write!(f, " (from environment variable {var})"),
            Origin::Nowhere => Ok(()),
        }
    }
}

impl AgentConfig {
    /// Reads `path` and the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Reads `path` with the given environment (tests pass their own instead of mutating the
    /// process environment).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::MissingFile {
                    path: path.to_owned(),
                }
            } else {
                ConfigError::Unreadable {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        Self::from_toml(&text, path, env)
    }

    /// Parses TOML `text` (said to come from `path`) with environment overrides.
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
        let overrides: HashMap<String, String> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(&prefix))
            .collect();
        let merged = config::Config::builder()
            .add_source(File::from_str(text, FileFormat::Toml))
            .add_source(
                Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator(ENV_SEPARATOR)
                    .separator(ENV_SEPARATOR)
                    .source(Some(overrides.clone().into_iter().collect())),
            )
            .build()
            .map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        let table: HashMap<String, Value> =
            merged
                .try_deserialize()
                .map_err(|e: config::ConfigError| ConfigError::Syntax {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?;
        let mut keys = Keys {
            values: BTreeMap::new(),
            file: path.to_owned(),
            overrides,
        };
        keys.flatten("", table);
        let config = read(&mut keys)?;
        keys.refuse_leftovers()?;
        Ok(config)
    }
}

const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
const DEFAULT_STATE_REFRESH: Duration = Duration::from_secs(30);

fn read(keys: &mut Keys) -> Result<AgentConfig, ConfigError> {
    let network = keys.parsed("network", "a network id: 1-32 of [a-z0-9-]", |s| {
        NetworkId::new(s).ok()
    })?;
    let node = keys.parsed(
        "node",
        "a node id `<node>` or `<node>.<replica>`, each 1-63 of [a-z0-9-]",
        |s| NodeId::new(s).ok(),
    )?;
    let kind = keys.parsed(
        "kind",
        "one of participant, sequencer, mediator, app",
        |s| {
            NodeKind::NAMES
                .iter()
                .find(|(name, _)| *name == s)
                .map(|(_, role)| *role)
        },
    )?;
    let nats = NatsConfig {
        url: keys.parsed(
            "nats.url",
            "nats://host:port (several separated by commas)",
            |s| sidecar_bus::server_addrs(s).ok().map(|_| s.to_owned()),
        )?,
        auth: read_nats_auth(keys)?,
        ping_interval: keys.duration("nats.ping_interval", Duration::from_secs(2))?,
        connect_timeout: keys.duration("nats.connect_timeout", Duration::from_secs(5))?,
        max_reconnect_delay: keys.duration("nats.max_reconnect_delay", Duration::from_secs(5))?,
    };
    let heartbeat_interval = keys.duration("heartbeat.interval", DEFAULT_HEARTBEAT)?;
    let state_refresh = keys.duration("state.refresh_interval", DEFAULT_STATE_REFRESH)?;
    let shutdown_grace = keys.duration("shutdown.grace", Duration::from_secs(5))?;

    let canton = if kind.has_admin_api() || keys.contains_prefix("canton.") {
        Some(CantonConfig {
            admin_url: keys.url("canton.admin_url")?,
            grpc_health_url: keys.optional_url("canton.grpc_health_url")?,
            grpc_health_service: keys
                .optional_string("canton.grpc_health_service")?
                .unwrap_or_default(),
            http_health_url: keys.optional_url("canton.http_health_url")?,
            ledger_api_url: keys.optional_url("canton.ledger_api_url")?,
        })
    } else {
        None
    };
    let database_url = keys
        .optional_string("database.url")?
        .map(ConnectionString::new);
    let participant = match keys.optional_string("participant")? {
        None => None,
        Some(_) if kind != NodeKind::App => {
            return Err(ConfigError::Invalid {
                key: "participant".to_owned(),
                value: format!("set for a {kind}"),
                origin: keys.origin("participant"),
                expected:
                    "`participant` only for kind = \"app\" (the participant the app reads from)"
                        .to_owned(),
            });
        }
        Some(id) => Some(NodeId::new(id.as_str()).map_err(|_| ConfigError::Invalid {
            key: "participant".to_owned(),
            value: id.clone(),
            origin: keys.origin("participant"),
            expected: "a node id, 1-63 of [a-z0-9-]".to_owned(),
        })?),
    };

    let probes = ProbeSchedules {
        status: keys.schedule("status", Duration::from_secs(2))?,
        grpc_health: keys.schedule("grpc_health", Duration::from_secs(2))?,
        http_health: keys.schedule("http_health", Duration::from_secs(2))?,
        synchronizers: keys.schedule("synchronizers", Duration::from_secs(5))?,
        progress: keys.schedule("progress", Duration::from_secs(5))?,
        database: keys.schedule("database", Duration::from_secs(5))?,
    };
    let commands = if keys.contains_prefix("trust.") || keys.contains_prefix("commands.") {
        Some(read_command_path(keys)?)
    } else {
        None
    };
    let backup = if keys.contains_prefix("backup.") {
        let mut backup = read_backup(keys, database_url.as_ref())?;
        // The top-level `participant` says it once for every part of the agent.
        if backup.participant.is_none() {
            backup.participant = participant.as_ref().map(|p| p.as_str().to_owned());
        }
        Some(backup)
    } else {
        None
    };
    let lifecycle = if keys.contains_prefix("lifecycle.") {
        Some(read_lifecycle(keys)?)
    } else {
        None
    };
    let splice = if keys.contains_prefix("splice.") {
        if kind != NodeKind::App {
            return Err(ConfigError::Invalid {
                key: "splice.admin_url".to_owned(),
                value: format!("set for a {kind}"),
                origin: keys.origin("splice.admin_url"),
                expected: "[splice] only for kind = \"app\" (a Splice SV or validator app)"
                    .to_owned(),
            });
        }
        Some(read_splice(keys, backup.as_ref(), &node)?)
    } else {
        None
    };
    let rehydrate = if keys.contains_prefix("rehydrate.") {
        if kind != NodeKind::Participant {
            return Err(ConfigError::Invalid {
                key: "rehydrate.hook".to_owned(),
                value: format!("set for a {kind}"),
                origin: keys.origin("rehydrate.hook"),
                expected: "[rehydrate] only for kind = \"participant\"".to_owned(),
            });
        }
        Some(read_rehydrate(keys, backup.as_ref(), &node)?)
    } else {
        None
    };
    Ok(AgentConfig {
        network,
        node,
        kind,
        nats,
        heartbeat_interval,
        state_refresh,
        shutdown_grace,
        canton,
        database_url,
        participant,
        probes,
        commands,
        backup,
        lifecycle,
        splice,
        rehydrate,
    })
}

/// `[rehydrate]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RehydrateConfig {
    /// Replaces the participant's database with a new, empty one, keeping its identity, and
    /// leaves the node running with its synchronizers registered but not connected.
    pub hook: sidecar_backup::CommandTemplate,
    /// Bound on the hook.
    pub timeout: Duration,
    /// How long the participant may take to answer its admin API after the hook.
    pub ready_timeout: Duration,
    /// Where the per-command markers are kept (default `<backup.root>/rehydrate/<node>`).
    pub state_dir: PathBuf,
}

/// Placeholders of `[rehydrate] hook`.
pub const REHYDRATE_PLACEHOLDERS: &[&str] = &["node", "command_id", "backup_set", "backup_dir"];

fn read_rehydrate(
    keys: &mut Keys,
    backup: Option<&BackupSettings>,
    node: &NodeId,
) -> Result<RehydrateConfig, ConfigError> {
    let hook = keys
        .command("rehydrate.hook", REHYDRATE_PLACEHOLDERS)?
        .ok_or_else(|| ConfigError::Missing {
            key: "rehydrate.hook".to_owned(),
            origin: Origin::Nowhere,
            expected: format!(
                "the command that replaces the participant's database keeping its identity \
                 ({COMMAND_EXPECTED}; placeholders {{node}}, {{command_id}}, {{backup_set}}, \
                 {{backup_dir}})"
            ),
        })?;
    let timeout = keys.duration("rehydrate.timeout", Duration::from_secs(1_800))?;
    let ready_timeout = keys.duration("rehydrate.ready_timeout", Duration::from_secs(300))?;
    let state_dir = match keys.optional_string("rehydrate.state_dir")? {
        Some(dir) => PathBuf::from(dir),
        None => match backup {
            Some(backup) => backup.root.join("rehydrate").join(node.as_str()),
            None => {
                return Err(ConfigError::Missing {
                    key: "rehydrate.state_dir".to_owned(),
                    origin: Origin::Nowhere,
                    expected: "the directory of the rehydration markers (default: \
                               <backup.root>/rehydrate/<node>, but there is no [backup])"
                        .to_owned(),
                });
            }
        },
    };
    Ok(RehydrateConfig {
        hook,
        timeout,
        ready_timeout,
        state_dir,
    })
}

/// What a Splice app is to network disaster recovery: SVs dump through the SV API first,
/// validators through the validator API (with `force`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpliceRole {
    Sv,
    Validator,
}

impl SpliceRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sv => "sv",
            Self::Validator => "validator",
        }
    }
}

/// `[splice]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpliceConfig {
    /// The app's HTTP base, e.g. `http://127.0.0.1:5014` (paths `/api/sv/…`, `/api/validator/…`).
    pub admin_url: String,
    pub role: SpliceRole,
    /// A file holding the bearer token the admin endpoints require (participant admin rights).
    pub token_file: Option<PathBuf>,
    /// Where migration dumps are written: `<dir>/migration-<id>/` (default
    /// `<backup.root>/migration/<node>`).
    pub dump_dir: PathBuf,
    /// Brings the participant back on a new database with migration enabled (network DR).
    pub redeploy: Option<sidecar_backup::CommandTemplate>,
    pub redeploy_timeout: Duration,
}

/// Placeholders of `[splice] redeploy`.
pub const REDEPLOY_PLACEHOLDERS: &[&str] = &["node", "migration_id", "dump", "command_id"];

fn read_splice(
    keys: &mut Keys,
    backup: Option<&BackupSettings>,
    node: &NodeId,
) -> Result<SpliceConfig, ConfigError> {
    let admin_url = keys.url("splice.admin_url")?;
    let role = keys.parsed("splice.role", "sv or validator", |s| match s {
        "sv" => Some(SpliceRole::Sv),
        "validator" => Some(SpliceRole::Validator),
        _ => None,
    })?;
    let token_file = keys
        .optional_string("splice.token_file")?
        .map(PathBuf::from);
    let dump_dir = match keys.optional_string("splice.dump_dir")? {
        Some(dir) => PathBuf::from(dir),
        None => match backup {
            Some(backup) => backup.root.join("migration").join(node.as_str()),
            None => {
                return Err(ConfigError::Missing {
                    key: "splice.dump_dir".to_owned(),
                    origin: Origin::Nowhere,
                    expected: "the directory migration dumps are written to (default: \
                               <backup.root>/migration/<node>, but there is no [backup])"
                        .to_owned(),
                });
            }
        },
    };
    let redeploy = keys.command("splice.redeploy", REDEPLOY_PLACEHOLDERS)?;
    let redeploy_timeout = keys.duration("splice.redeploy_timeout", Duration::from_secs(1_800))?;
    Ok(SpliceConfig {
        admin_url,
        role,
        token_file,
        dump_dir,
        redeploy,
        redeploy_timeout,
    })
}

/// `nats.nkey_seed_file` or `nats.credentials`, and `nats.tls_ca_file`, each file read and
/// checked now.
fn read_nats_auth(keys: &mut Keys) -> Result<NatsAuth, ConfigError> {
    const SEED: &str = "nats.nkey_seed_file";
    const CREDS: &str = "nats.credentials";
    const CA: &str = "nats.tls_ca_file";
    let values: BTreeMap<&str, Value> = [SEED, CREDS, CA]
        .into_iter()
        .filter_map(|key| keys.values.get(key).map(|value| (key, value.clone())))
        .collect();
    let seed = keys.optional_string(SEED)?.map(PathBuf::from);
    let creds = keys.optional_string(CREDS)?.map(PathBuf::from);
    let credentials = match (seed, creds) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid {
                key: CREDS.to_owned(),
                value: "set together with nats.nkey_seed_file".to_owned(),
                origin: keys.origin(CREDS),
                expected: "one NATS credential: nats.nkey_seed_file or nats.credentials".to_owned(),
            });
        }
        (Some(path), None) => Some(NatsCredentials::NkeySeedFile(path)),
        (None, Some(path)) => Some(NatsCredentials::CredsFile(path)),
        (None, None) => None,
    };
    let auth = NatsAuth {
        credentials,
        tls_ca_file: keys.optional_string(CA)?.map(PathBuf::from),
    };
    auth.check().map_err(|error| {
        let (key, expected) = match error.setting {
            AuthSetting::NkeySeedFile => (
                SEED,
                "a readable file holding a NATS user nkey seed (SU…), as `canton-ops gen nats-config` writes",
            ),
            AuthSetting::CredsFile => (
                CREDS,
                "a readable NATS .creds file (user JWT and user nkey seed)",
            ),
            AuthSetting::TlsCaFile => (
                CA,
                "a readable PEM file with the CA certificate of the NATS servers",
            ),
        };
        ConfigError::Invalid {
            key: key.to_owned(),
            value: values
                .get(key)
                .map_or_else(|| error.path.display().to_string(), ToString::to_string),
            origin: keys.origin(key),
            expected: format!("{expected}; it {}", error.detail),
        }
    })?;
    Ok(auth)
}

const COMMAND_EXPECTED: &str =
    "a command as a list of strings, e.g. [\"systemctl\", \"stop\", \"canton-{node}\"]";

fn read_backup(
    keys: &mut Keys,
    database_url: Option<&ConnectionString>,
) -> Result<BackupSettings, ConfigError> {
    let root = keys.parsed(
        "backup.root",
        "an absolute directory path where backup sets are written",
        |s| Some(PathBuf::from(s)).filter(|p| p.is_absolute()),
    )?;
    let database_url = database_url.cloned().ok_or_else(|| ConfigError::Missing {
        key: "database.url".to_owned(),
        origin: Origin::Nowhere,
        expected: "the node's database connection string, which [backup] dumps and restores"
            .to_owned(),
    })?;
    if let Err(error) = sidecar_backup::Database::new(database_url.expose()) {
        return Err(ConfigError::Invalid {
            key: "database.url".to_owned(),
            // It may hold a password.
            value: "(not shown)".to_owned(),
            origin: keys.origin("database.url"),
            expected: error.context().to_owned(),
        });
    }
    let pg_bin_dir = keys.optional_parsed(
        "backup.pg_bin_dir",
        "an absolute directory holding pg_dump and pg_restore",
        |s| Some(PathBuf::from(s)).filter(|p| p.is_absolute()),
    )?;
    let snapshot_point_query = keys.optional_string("backup.snapshot_point_query")?;
    let upload = keys.command("backup.upload", sidecar_backup::UPLOAD_PLACEHOLDERS)?;
    let progress_interval = keys.duration("backup.progress_interval", Duration::from_secs(2))?;
    let maintenance_database = keys.parsed_or(
        "backup.maintenance_database",
        "a database name",
        "postgres".to_owned(),
        |s| Some(s.to_owned()),
    )?;
    let participant = keys.optional_string("backup.participant")?;
    let snapshot = keys.parsed_or("backup.method", "pg_dump or snapshot", false, |s| match s {
        "pg_dump" => Some(false),
        "snapshot" => Some(true),
        _ => None,
    })?;
    let components_value = keys.values.get("backup.snapshot_components").cloned();
    let components = keys
        .strings("backup.snapshot_components", "a list of component names")?
        .unwrap_or_default();
    let command_value = keys.values.get("backup.snapshot_command").cloned();
    let command = keys.command(
        "backup.snapshot_command",
        sidecar_backup::SNAPSHOT_PLACEHOLDERS,
    )?;
    let method = match (snapshot, command) {
        (true, Some(command)) => BackupMethod::Snapshot(sidecar_backup::SnapshotSpec {
            command,
            components,
        }),
        (true, None) => {
            return Err(ConfigError::Missing {
                key: "backup.snapshot_command".to_owned(),
                origin: Origin::Nowhere,
                expected: format!("with backup.method = \"snapshot\": {COMMAND_EXPECTED}"),
            });
        }
        (false, command) => {
            let stray = command
                .map(|_| ("backup.snapshot_command", command_value))
                .or_else(|| {
                    (!components.is_empty())
                        .then_some(("backup.snapshot_components", components_value))
                });
            if let Some((key, Some(value))) = stray {
                return Err(keys.invalid(
                    key,
                    &value,
                    "nothing unless backup.method = \"snapshot\"",
                ));
            }
            BackupMethod::PgDump
        }
    };
    Ok(BackupSettings {
        root,
        database_url,
        pg_bin_dir,
        snapshot_point_query,
        upload,
        progress_interval,
        maintenance_database,
        participant,
        method,
    })
}

fn read_lifecycle(keys: &mut Keys) -> Result<sidecar_backup::LifecycleConfig, ConfigError> {
    let hook = |keys: &mut Keys, key: &str, placeholders: &[&str]| {
        keys.command(key, placeholders)?
            .ok_or_else(|| ConfigError::Missing {
                key: key.to_owned(),
                origin: Origin::Nowhere,
                expected: format!("{COMMAND_EXPECTED}; [lifecycle] needs stop, start and status"),
            })
    };
    let stop = hook(keys, "lifecycle.stop", sidecar_backup::STOP_PLACEHOLDERS)?;
    let start = hook(keys, "lifecycle.start", sidecar_backup::START_PLACEHOLDERS)?;
    let status = hook(
        keys,
        "lifecycle.status",
        sidecar_backup::STATUS_PLACEHOLDERS,
    )?;
    let wait = keys.duration("lifecycle.wait", Duration::from_secs(120))?;
    let poll_value = keys.values.get("lifecycle.poll").cloned();
    let poll = keys.duration("lifecycle.poll", Duration::from_millis(500))?;
    if poll > wait
        && let Some(value) = poll_value
    {
        return Err(keys.invalid(
            "lifecycle.poll",
            &value,
            "a duration no longer than lifecycle.wait",
        ));
    }
    Ok(sidecar_backup::LifecycleConfig {
        stop,
        start,
        status,
        wait,
        poll,
    })
}

fn read_command_path(keys: &mut Keys) -> Result<CommandPath, ConfigError> {
    let trust = TrustConfig {
        network_config: keys.path(
            "trust.network_config",
            "the path of the signed network configuration file",
        )?,
        config_key: keys.parsed(
            "trust.config_key",
            "64 hex digits: the ed25519 public key that signs the network configuration",
            |s| {
                let mut key = [0u8; 32];
                hex::decode_to_slice(s, &mut key).ok().map(|()| key)
            },
        )?,
        ack_key_seed: keys.path(
            "trust.ack_key_seed",
            "the path of the file with the agent's 32-byte ed25519 ack key seed",
        )?,
        ack_key_id: keys.parsed(
            "trust.ack_key_id",
            "the agent's ack key id as listed in the network configuration",
            |s| Some(s.to_owned()),
        )?,
        organisation: keys.parsed(
            "trust.organisation",
            "an organisation id: 1-128 of [A-Za-z0-9_-]",
            |s| sidecar_bus::valid_token(s).then(|| s.to_owned()),
        )?,
        max_clock_skew: keys.duration("trust.max_clock_skew", Duration::from_secs(2))?,
    };
    let commands = CommandsConfig {
        journal_dir: keys.path(
            "commands.journal_dir",
            "the journal directory on a persistent volume",
        )?,
        ack_wait: keys.duration("commands.ack_wait", Duration::from_secs(30))?,
        max_deliver: keys.count("commands.max_deliver", 20, 1..=10_000)?,
        max_ack_pending: keys.count("commands.max_ack_pending", 64, 1..=100_000)?,
    };
    Ok(CommandPath { trust, commands })
}

/// Flattened `section.key` → value, consumed as keys are read.
struct Keys {
    values: BTreeMap<String, Value>,
    file: PathBuf,
    overrides: HashMap<String, String>,
}

/// Every key the agent reads, for the "unknown key" message.
const KNOWN_KEYS: &[&str] = &[
    "network",
    "node",
    "kind",
    "nats.url",
    "nats.credentials",
    "nats.nkey_seed_file",
    "nats.tls_ca_file",
    "nats.ping_interval",
    "nats.connect_timeout",
    "nats.max_reconnect_delay",
    "heartbeat.interval",
    "state.refresh_interval",
    "shutdown.grace",
    "canton.admin_url",
    "canton.grpc_health_url",
    "canton.grpc_health_service",
    "canton.http_health_url",
    "canton.ledger_api_url",
    "database.url",
    "participant",
    "probes.<name>.period",
    "probes.<name>.timeout",
    "trust.network_config",
    "trust.config_key",
    "trust.ack_key_seed",
    "trust.ack_key_id",
    "trust.organisation",
    "trust.max_clock_skew",
    "commands.journal_dir",
    "commands.ack_wait",
    "commands.max_deliver",
    "commands.max_ack_pending",
    "backup.root",
    "backup.pg_bin_dir",
    "backup.snapshot_point_query",
    "backup.upload",
    "backup.progress_interval",
    "backup.maintenance_database",
    "backup.participant",
    "backup.method",
    "backup.snapshot_command",
    "backup.snapshot_components",
    "lifecycle.stop",
    "lifecycle.start",
    "lifecycle.status",
    "lifecycle.wait",
    "lifecycle.poll",
    "splice.admin_url",
    "splice.role",
    "splice.token_file",
    "splice.dump_dir",
    "splice.redeploy",
    "splice.redeploy_timeout",
    "rehydrate.hook",
    "rehydrate.timeout",
    "rehydrate.ready_timeout",
    "rehydrate.state_dir",
];

impl Keys {
    fn flatten(&mut self, prefix: &str, table: HashMap<String, Value>) {
        for (name, value) in table {
            let key = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}.{name}")
            };
            match value.kind {
                ValueKind::Table(inner) => self.flatten(&key, inner.into_iter().collect()),
                _ => {
                    self.values.insert(key, value);
                }
            }
        }
    }

    fn origin(&self, key: &str) -> Origin {
        let var = format!(
            "{ENV_PREFIX}{ENV_SEPARATOR}{}",
            key.replace('.', ENV_SEPARATOR).to_ascii_uppercase()
        );
        if self.overrides.contains_key(&var) {
            Origin::Environment(var)
        } else {
            Origin::File(self.file.clone())
        }
    }

    fn contains_prefix(&self, prefix: &str) -> bool {
        self.values.keys().any(|k| k.starts_with(prefix))
    }

    fn invalid(&self, key: &str, value: &Value, expected: &str) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_owned(),
            value: value.to_string(),
            origin: self.origin(key),
            expected: expected.to_owned(),
        }
    }

    /// The value of `key` as text; `None` when absent (or set to an empty string, which is how
    /// an environment variable clears a file's value).
    fn optional_string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        let Some(value) = self.values.remove(key) else {
            return Ok(None);
        };
        match &value.kind {
            ValueKind::String(text) if text.trim().is_empty() => Ok(None),
            ValueKind::String(text) => Ok(Some(text.trim().to_owned())),
            _ => Err(self.invalid(key, &value, "a string")),
        }
    }

    fn optional_parsed<T>(
        &mut self,
        key: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(value) = self.values.get(key).cloned() else {
            return Ok(None);
        };
        let Some(text) = self.optional_string(key)? else {
            return Ok(None);
        };
        parse(&text)
            .map(Some)
            .ok_or_else(|| self.invalid(key, &value, expected))
    }

    fn parsed<T>(
        &mut self,
        key: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        self.optional_parsed(key, expected, parse)?
            .ok_or_else(|| ConfigError::Missing {
                key: key.to_owned(),
                origin: Origin::Nowhere,
                expected: expected.to_owned(),
            })
    }

    fn parsed_or<T>(
        &mut self,
        key: &str,
        expected: &str,
        default: T,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        Ok(self
            .optional_parsed(key, expected, parse)?
            .unwrap_or(default))
    }

    fn optional_url(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        self.optional_parsed(key, URL_EXPECTED, parse_http_url)
    }

    fn url(&mut self, key: &str) -> Result<String, ConfigError> {
        self.parsed(key, URL_EXPECTED, parse_http_url)
    }

    /// A positive duration written as `500ms`, `2s`, `1m 30s`.
    fn duration(&mut self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        self.parsed_or(
            key,
            "a positive duration such as 500ms, 2s or 1m",
            default,
            |s| humantime::parse_duration(s).ok().filter(|d| !d.is_zero()),
        )
    }

    /// A list of strings: a TOML array, or (from the environment) a JSON array.
    fn strings(&mut self, key: &str, expected: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(value) = self.values.remove(key) else {
            return Ok(None);
        };
        let items = match &value.kind {
            ValueKind::Array(items) => items
                .iter()
                .map(|item| match &item.kind {
                    ValueKind::String(text) => Some(text.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>(),
            ValueKind::String(text) if text.trim().is_empty() => return Ok(None),
            ValueKind::String(text) => serde_json::from_str::<Vec<String>>(text).ok(),
            _ => None,
        };
        items
            .map(Some)
            .ok_or_else(|| self.invalid(key, &value, expected))
    }

    /// A hook command (argv list) whose placeholders are among `placeholders`.
    fn command(
        &mut self,
        key: &str,
        placeholders: &[&str],
    ) -> Result<Option<sidecar_backup::CommandTemplate>, ConfigError> {
        let Some(value) = self.values.get(key).cloned() else {
            return Ok(None);
        };
        let Some(argv) = self.strings(key, COMMAND_EXPECTED)? else {
            return Ok(None);
        };
        sidecar_backup::CommandTemplate::new(&format!("`{key}`"), argv, placeholders)
            .map(Some)
            .map_err(|error| self.invalid(key, &value, error.context()))
    }

    fn path(&mut self, key: &str, expected: &str) -> Result<PathBuf, ConfigError> {
        self.parsed(key, expected, |s| Some(PathBuf::from(s)))
    }

    /// A whole number within `range`, written as a TOML integer or (from the environment) text.
    fn count(
        &mut self,
        key: &str,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<i64, ConfigError> {
        let Some(value) = self.values.remove(key) else {
            return Ok(default);
        };
        let number = match &value.kind {
            ValueKind::I64(n) => Some(*n),
            ValueKind::U64(n) => i64::try_from(*n).ok(),
            ValueKind::String(text) if text.trim().is_empty() => return Ok(default),
            ValueKind::String(text) => text.trim().parse().ok(),
            _ => None,
        };
        number.filter(|n| range.contains(n)).ok_or_else(|| {
            self.invalid(
                key,
                &value,
                &format!("a whole number from {} to {}", range.start(), range.end()),
            )
        })
    }

    fn schedule(&mut self, probe: &str, default_period: Duration) -> Result<Schedule, ConfigError> {
        let period_key = format!("probes.{probe}.period");
        let timeout_key = format!("probes.{probe}.timeout");
        let period = self.duration(&period_key, default_period)?;
        let timeout_value = self.values.get(&timeout_key).cloned();
        let timeout = self.duration(&timeout_key, period.min(Duration::from_secs(2)))?;
        if timeout > period {
            // A probe that may take longer than its period would report a hang late.
            return Err(ConfigError::Invalid {
                origin: self.origin(&timeout_key),
                value: timeout_value.map_or_else(|| format!("{timeout:?}"), |v| v.to_string()),
                key: timeout_key,
                expected: format!(
                    "a duration no longer than `{period_key}` ({})",
                    humantime::format_duration(period)
                ),
            });
        }
        Ok(Schedule { period, timeout })
    }

    fn refuse_leftovers(&self) -> Result<(), ConfigError> {
        match self.values.keys().next() {
            Some(key) => Err(ConfigError::Unknown {
                key: key.clone(),
                origin: self.origin(key),
                known: KNOWN_KEYS.join(", "),
            }),
            None => Ok(()),
        }
    }
}

const URL_EXPECTED: &str = "an http:// or https:// URL with host and port";

fn parse_http_url(text: &str) -> Option<String> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok()).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
network = "dev"
node = "p1"
kind = "participant"
[nats]
url = "nats://127.0.0.1:4222"
[canton]
admin_url = "http://127.0.0.1:5002"
"#;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_toml(
            text,
            Path::new("/etc/agent.toml"),
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    const BACKUP: &str = r#"
[database]
url = "host=127.0.0.1 port=5432 user=canton dbname=p1"
[backup]
root = "/var/lib/canton-agent/backups"
upload = ["rclone", "copy", "{dump}", "remote:{set}/"]
[lifecycle]
stop = ["systemctl", "stop", "canton-{node}"]
start = ["systemctl", "start", "canton-{node}"]
status = ["systemctl", "is-active", "canton-{node}"]
wait = "30s"
"#;

    #[test]
    fn backup_and_lifecycle_sections_are_read_with_defaults() {
        let text = format!("{MINIMAL}{BACKUP}");
        let config = parse(
            &text,
            &[(
                "CANTON_AGENT__LIFECYCLE__STOP",
                r#"["docker", "stop", "{node}"]"#,
            )],
        )
        .unwrap();
        let backup = config.backup.unwrap();
        assert_eq!(backup.root, Path::new("/var/lib/canton-agent/backups"));
        assert_eq!(
            backup.database_url.expose(),
            "host=127.0.0.1 port=5432 user=canton dbname=p1"
        );
        assert_eq!(backup.method, BackupMethod::PgDump);
        assert_eq!(backup.maintenance_database, "postgres");
        assert_eq!(backup.progress_interval, Duration::from_secs(2));
        assert_eq!(backup.upload.unwrap().argv()[0], "rclone");
        let lifecycle = config.lifecycle.unwrap();
        assert_eq!(lifecycle.stop.argv(), ["docker", "stop", "{node}"]);
        assert_eq!(lifecycle.wait, Duration::from_secs(30));
        assert_eq!(lifecycle.poll, Duration::from_millis(500));
        assert_eq!(parse(MINIMAL, &[]).unwrap().backup, None);
    }

    #[test]
    fn backup_and_lifecycle_errors_name_the_key() {
        let text = format!("{MINIMAL}{BACKUP}");
        let cases: &[(&str, &str, &str)] = &[
            (
                "root = \"/var/lib/canton-agent/backups\"",
                "root = \"backups\"",
                "backup.root",
            ),
            (
                "url = \"host=127.0.0.1 port=5432 user=canton dbname=p1\"\n",
                "",
                "database.url",
            ),
            (
                "dbname=p1\"",
                "dbname=p1 application_name=x\"",
                "database.url",
            ),
            (
                "\"canton-{node}\"]\nstart",
                "\"canton-{nod}\"]\nstart",
                "lifecycle.stop",
            ),
            (
                "status = [\"systemctl\", \"is-active\", \"canton-{node}\"]\n",
                "",
                "lifecycle.status",
            ),
            ("upload = [", "upload = \"rclone\"\nx = [", "backup.upload"),
            (
                "wait = \"30s\"",
                "wait = \"30s\"\npoll = \"1m\"",
                "lifecycle.poll",
            ),
            (
                "[backup]\n",
                "[backup]\nmethod = \"snapshot\"\n",
                "backup.snapshot_command",
            ),
            (
                "[backup]\n",
                "[backup]\nsnapshot_command = [\"snap\", \"{artefact}\"]\n",
                "backup.snapshot_command",
            ),
            (
                "[backup]\n",
                "[backup]\nmethod = \"zfs\"\n",
                "backup.method",
            ),
        ];
        for (from, to, key) in cases {
            assert!(text.contains(from), "{from}");
            let error = parse(&text.replace(from, to), &[]).unwrap_err();
            assert_eq!(error.key(), Some(*key), "{error}");
        }
        let empty_query = text.replace("[backup]\n", "[backup]\nsnapshot_point_query = 7\n");
        let error = parse(&empty_query, &[]).unwrap_err();
        assert_eq!(error.key(), Some("backup.snapshot_point_query"), "{error}");
        let snapshot = text.replace(
            "[backup]\n",
            "[backup]\nmethod = \"snapshot\"\nsnapshot_command = [\"snap\", \"{node}\", \"{artefact}\"]\nsnapshot_components = [\"p1\", \"app1\"]\n",
        );
        let BackupMethod::Snapshot(spec) = parse(&snapshot, &[]).unwrap().backup.unwrap().method
        else {
            panic!("snapshot method expected");
        };
        assert_eq!(spec.components, ["p1", "app1"]);
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let config = parse(MINIMAL, &[]).unwrap();
        assert_eq!(config.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(config.nats.ping_interval, Duration::from_secs(2));
        assert_eq!(config.state_refresh, Duration::from_secs(30));
        assert_eq!(config.kind, NodeKind::Participant);
        let canton = config.canton.unwrap();
        assert_eq!(canton.http_health_url, None);
        assert_eq!(
            config.probes.status,
            Schedule {
                period: Duration::from_secs(2),
                timeout: Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn environment_overrides_nested_keys_with_underscores() {
        let config = parse(
            MINIMAL,
            &[
                ("CANTON_AGENT__NATS__PING_INTERVAL", "3s"),
                ("CANTON_AGENT__PROBES__STATUS__PERIOD", "500ms"),
                ("CANTON_AGENT__NODE", "p1.b"),
                ("OTHER__NODE", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(config.nats.ping_interval, Duration::from_secs(3));
        assert_eq!(config.probes.status.period, Duration::from_millis(500));
        assert_eq!(config.probes.status.timeout, Duration::from_millis(500));
        assert_eq!(config.node.as_str(), "p1.b");
    }

    #[test]
    fn participant_is_only_for_apps() {
        let error = parse(MINIMAL, &[("CANTON_AGENT__PARTICIPANT", "p2")]).unwrap_err();
        assert_eq!(error.key(), Some("participant"));
        assert!(error.to_string().contains("only for kind"), "{error}");
        let app = parse(
            MINIMAL,
            &[
                ("CANTON_AGENT__KIND", "app"),
                ("CANTON_AGENT__PARTICIPANT", "p2"),
            ],
        )
        .unwrap();
        assert_eq!(
            app.participant.map(|p| p.as_str().to_owned()),
            Some("p2".into())
        );
    }

    #[test]
    fn bad_duration_names_key_value_origin_and_expectation() {
        let error = parse(MINIMAL, &[("CANTON_AGENT__HEARTBEAT__INTERVAL", "soon")]).unwrap_err();
        assert_eq!(error.key(), Some("heartbeat.interval"));
        let text = error.to_string();
        assert!(text.contains("\"soon\""), "{text}");
        assert!(text.contains("CANTON_AGENT__HEARTBEAT__INTERVAL"), "{text}");
        assert!(text.contains("positive duration"), "{text}");
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("kind = \"participant\"", "kind = \"validator\""),
            ("node = \"p1\"", "node = \"P_1\""),
            ("network = \"dev\"", "network = \"\""),
            (
                "admin_url = \"http://127.0.0.1:5002\"",
                "admin_url = \"127.0.0.1\"",
            ),
            ("url = \"nats://127.0.0.1:4222\"", "url = 4222"),
            ("[nats]", "[heartbeat]\nintreval = \"1s\"\n[nats]"),
        ];
        let expected_keys = [
            "kind",
            "node",
            "network",
            "canton.admin_url",
            "nats.url",
            "heartbeat.intreval",
        ];
        for ((from, to), key) in cases.iter().zip(expected_keys) {
            let text = MINIMAL.replace(from, to);
            let error = parse(&text, &[]).unwrap_err();
            assert_eq!(error.key(), Some(key), "{error}");
            assert!(
                error.to_string().contains("/etc/agent.toml") || key == "network",
                "{error}"
            );
        }
    }

    #[test]
    fn timeout_longer_than_period_is_refused() {
        let text = format!("{MINIMAL}\n[probes.database]\nperiod = \"1s\"\ntimeout = \"3s\"\n");
        let error = parse(&text, &[]).unwrap_err();
        assert_eq!(error.key(), Some("probes.database.timeout"));
        assert!(
            error.to_string().contains("probes.database.period"),
            "{error}"
        );
    }

    #[test]
    fn missing_key_and_missing_file_are_named() {
        let error = parse(&MINIMAL.replace("node = \"p1\"", ""), &[]).unwrap_err();
        assert!(matches!(error, ConfigError::Missing { ref key, .. } if key == "node"));
        let error =
            AgentConfig::load_with_env(Path::new("/nonexistent/agent.toml"), []).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/agent.toml"),
            "{error}"
        );
        assert!(matches!(error, ConfigError::MissingFile { .. }));
    }

    const COMMANDS: &str = r#"
[trust]
network_config = "/etc/canton-agent/network.cfg"
config_key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
ack_key_seed = "/etc/canton-agent/ack.seed"
ack_key_id = "org-a/agent-p1"
organisation = "org-a"
[commands]
journal_dir = "/var/lib/canton-agent/journal"
max_deliver = 5
"#;

    #[test]
    fn the_command_path_is_off_without_trust_and_read_with_it() {
        assert_eq!(parse(MINIMAL, &[]).unwrap().commands, None);
        let text = format!("{MINIMAL}{COMMANDS}");
        let path = parse(&text, &[("CANTON_AGENT__COMMANDS__ACK_WAIT", "5s")])
            .unwrap()
            .commands
            .unwrap();
        assert_eq!(path.trust.organisation, "org-a");
        assert_eq!(path.trust.config_key[0], 0xd7);
        assert_eq!(path.trust.max_clock_skew, Duration::from_secs(2));
        assert_eq!(path.commands.ack_wait, Duration::from_secs(5));
        assert_eq!(path.commands.max_deliver, 5);
        assert_eq!(path.commands.max_ack_pending, 64);
    }

    #[test]
    fn nats_credentials_are_checked_at_start_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("agent.nk");
        std::fs::write(&seed, "SUnot-a-seed\n").unwrap();
        let seed_key = "CANTON_AGENT__NATS__NKEY_SEED_FILE";
        let seed_path = seed.display().to_string();
        let error = parse(MINIMAL, &[(seed_key, seed_path.as_str())]).unwrap_err();
        assert_eq!(error.key(), Some("nats.nkey_seed_file"), "{error}");
        assert!(error.to_string().contains(seed_key), "{error}");

        let user = nkeys::KeyPair::new_user().seed().unwrap();
        std::fs::write(&seed, format!("{user}\n")).unwrap();
        let config = parse(MINIMAL, &[(seed_key, seed_path.as_str())]).unwrap();
        assert_eq!(
            config.nats.auth.credentials,
            Some(NatsCredentials::NkeySeedFile(seed.clone()))
        );
        assert!(
            !format!("{config:?}").contains(&user),
            "the seed stays out of the config"
        );

        let both = parse(
            MINIMAL,
            &[
                (seed_key, seed_path.as_str()),
                ("CANTON_AGENT__NATS__CREDENTIALS", "/etc/agent.creds"),
            ],
        )
        .unwrap_err();
        assert_eq!(both.key(), Some("nats.credentials"), "{both}");
        let no_ca = parse(
            MINIMAL,
            &[("CANTON_AGENT__NATS__TLS_CA_FILE", "/nonexistent/ca.pem")],
        )
        .unwrap_err();
        assert_eq!(no_ca.key(), Some("nats.tls_ca_file"), "{no_ca}");
    }

    #[test]
    fn command_path_errors_name_the_key() {
        let text = format!("{MINIMAL}{COMMANDS}");
        let cases: &[(&str, &str, &str)] = &[
            (
                "config_key = \"d75a",
                "config_key = \"zz5a",
                "trust.config_key",
            ),
            (
                "organisation = \"org-a\"",
                "organisation = \"org a\"",
                "trust.organisation",
            ),
            ("max_deliver = 5", "max_deliver = 0", "commands.max_deliver"),
            (
                "max_deliver = 5",
                "max_deliver = \"many\"",
                "commands.max_deliver",
            ),
            (
                "journal_dir = \"/var/lib/canton-agent/journal\"\n",
                "",
                "commands.journal_dir",
            ),
            ("ack_key_id = \"org-a/agent-p1\"\n", "", "trust.ack_key_id"),
        ];
        for (from, to, key) in cases {
            assert!(text.contains(from), "{from}");
            let error = parse(&text.replace(from, to), &[]).unwrap_err();
            assert_eq!(error.key(), Some(*key), "{error}");
        }
    }

    #[test]
    fn apps_need_no_canton_section() {
        let text = "network = \"dev\"\nnode = \"validator\"\nkind = \"app\"\n[nats]\nurl = \"nats://127.0.0.1:4222\"\n[database]\nurl = \"host=127.0.0.1 dbname=app\"\n";
        let config = parse(text, &[]).unwrap();
        assert_eq!(config.canton, None);
        assert_eq!(
            config.database_url.as_ref().map(ConnectionString::expose),
            Some("host=127.0.0.1 dbname=app")
        );
    }

    const SPLICE_APP: &str = r#"
network = "dev"
node = "sv1-app"
kind = "app"
participant = "sv1"
[nats]
url = "nats://127.0.0.1:4222"
[database]
url = "host=127.0.0.1 dbname=app"
[backup]
root = "/var/lib/canton-agent/backups"
[splice]
admin_url = "http://127.0.0.1:5014"
role = "sv"
redeploy = ["helm", "upgrade", "sv", "--set", "migration.id={migration_id}", "--set-file", "dump={dump}"]
"#;

    #[test]
    fn a_splice_section_gives_the_role_dump_dir_and_redeploy_hook_and_names_bad_keys() {
        let config = parse(SPLICE_APP, &[]).unwrap();
        let splice = config.splice.expect("[splice]");
        assert_eq!(splice.role, SpliceRole::Sv);
        assert_eq!(splice.admin_url, "http://127.0.0.1:5014");
        assert_eq!(
            splice.dump_dir,
            Path::new("/var/lib/canton-agent/backups/migration/sv1-app")
        );
        assert_eq!(splice.redeploy_timeout, Duration::from_secs(1_800));
        assert!(splice.redeploy.is_some());
        let cases = [
            ("role = \"sv\"", "role = \"super\"", "splice.role"),
            ("role = \"sv\"\n", "", "splice.role"),
            (
                "admin_url = \"http://127.0.0.1:5014\"",
                "admin_url = \"5014\"",
                "splice.admin_url",
            ),
            ("{migration_id}", "{migration}", "splice.redeploy"),
            (
                "[backup]\nroot = \"/var/lib/canton-agent/backups\"\n",
                "",
                "splice.dump_dir",
            ),
            (
                "kind = \"app\"\nparticipant = \"sv1\"",
                "kind = \"mediator\"\n[canton]\nadmin_url = \"http://127.0.0.1:5009\"",
                "splice.admin_url",
            ),
        ];
        for (from, to, key) in cases {
            assert!(SPLICE_APP.contains(from), "{from}");
            let error = parse(&SPLICE_APP.replace(from, to), &[]).unwrap_err();
            assert_eq!(error.key(), Some(key), "{error}");
        }
    }

    const REHYDRATED_PARTICIPANT: &str = r#"
network = "dev"
node = "p1"
kind = "participant"
[nats]
url = "nats://127.0.0.1:4222"
[canton]
admin_url = "http://127.0.0.1:5012"
[database]
url = "host=127.0.0.1 dbname=p1"
[backup]
root = "/var/lib/canton-agent/backups"
[rehydrate]
hook = ["/usr/local/bin/rehydrate-p1", "{node}", "--backup", "{backup_dir}", "--id", "{command_id}"]
"#;

    #[test]
    fn a_rehydrate_section_gives_the_hook_its_bounds_and_state_dir_and_names_bad_keys() {
        let config = parse(REHYDRATED_PARTICIPANT, &[]).unwrap();
        let rehydrate = config.rehydrate.expect("[rehydrate]");
        assert_eq!(rehydrate.timeout, Duration::from_secs(1_800));
        assert_eq!(rehydrate.ready_timeout, Duration::from_secs(300));
        assert_eq!(
            rehydrate.state_dir,
            Path::new("/var/lib/canton-agent/backups/rehydrate/p1")
        );
        let with = |extra: &str| format!("{REHYDRATED_PARTICIPANT}{extra}\n");
        let config = parse(
            &with("timeout = \"2h\"\nready_timeout = \"30s\"\nstate_dir = \"/srv/rehydrate\""),
            &[],
        )
        .unwrap();
        let rehydrate = config.rehydrate.unwrap();
        assert_eq!(rehydrate.timeout, Duration::from_secs(7_200));
        assert_eq!(rehydrate.state_dir, Path::new("/srv/rehydrate"));
        let cases = [
            ("{command_id}", "{run}", "rehydrate.hook"),
            (
                "hook = [\"/usr/local/bin/rehydrate-p1\", \"{node}\", \"--backup\", \"{backup_dir}\", \"--id\", \"{command_id}\"]",
                "timeout = \"1h\"",
                "rehydrate.hook",
            ),
            (
                "[backup]\nroot = \"/var/lib/canton-agent/backups\"\n",
                "",
                "rehydrate.state_dir",
            ),
            (
                "kind = \"participant\"",
                "kind = \"mediator\"",
                "rehydrate.hook",
            ),
        ];
        for (from, to, key) in cases {
            assert!(REHYDRATED_PARTICIPANT.contains(from), "{from}");
            let error = parse(&REHYDRATED_PARTICIPANT.replace(from, to), &[]).unwrap_err();
            assert_eq!(error.key(), Some(key), "{error}");
        }
        let error = parse(&with("ready = \"1s\""), &[]).unwrap_err();
        assert_eq!(error.key(), Some("rehydrate.ready"), "{error}");
    }
}
