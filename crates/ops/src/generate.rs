//! `canton-ops gen nats-config`: the nats-server configuration of one network, with a user per
//! agent and per organisation's coordinators, each authenticated by its own nkey and allowed
//! only the subjects `sidecar_bus::Permissions` lists for it.
//!
//! Writes into `--out-dir`:
//! - `accounts.conf`: account `SIDECAR` (JetStream) with the users and their permissions,
//!   account `SYS` with the server's system user;
//! - `tls.conf` (with `--tls-cert`/`--tls-key`): the `tls` block clients must use;
//! - `nats-server.conf`: a single server (listen, JetStream with `sync_interval: always`)
//!   including the two files above; a cluster includes `accounts.conf` from its own file;
//! - `users/<user>.nk`: each user's nkey seed, mode 0600, for the process that logs in as it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::json;
use sidecar_bus::{Names, NetworkId, NodeId, Permissions, valid_token};

use crate::OpsError;
use crate::keys::{NetworkToml, write_file};
use crate::render::Out;

/// Account of the bus's users.
pub const SIDECAR_ACCOUNT: &str = "SIDECAR";
/// Account of the server's own system user.
pub const SYSTEM_ACCOUNT: &str = "SYS";

#[derive(Subcommand, Debug)]
pub enum GenCommand {
    /// Writes a nats-server configuration with a user per agent and per organisation's
    /// coordinators (nkeys), each limited to its own subjects, and their seed files.
    ///
    /// Nodes come from `--input` (the TOML of `keys network-config`: every organisation's
    /// nodes and every agent key's node, HA replicas included) and/or `--agent org/node`.
    NatsConfig {
        /// The network description `keys network-config` signs.
        #[arg(long)]
        input: Option<PathBuf>,
        /// The network id (must match `--input` when both are given).
        #[arg(long)]
        network: Option<String>,
        /// An agent as `<organisation>/<node>` (repeat or comma-separate).
        #[arg(long = "agent", value_delimiter = ',')]
        agents: Vec<String>,
        #[arg(long)]
        out_dir: PathBuf,
        /// The server's certificate (PEM); with `--tls-key`, clients must use TLS.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// CA that verifies client certificates, if clients present them.
        #[arg(long, requires = "tls_cert")]
        tls_ca: Option<PathBuf>,
        /// Client listen address of `nats-server.conf`.
        #[arg(long, default_value = "0.0.0.0:4222")]
        listen: String,
        /// JetStream store directory of `nats-server.conf`.
        #[arg(long, default_value = "/var/lib/nats/jetstream")]
        store_dir: PathBuf,
        /// Replace existing seed files (every process then needs its new seed).
        #[arg(long)]
        force: bool,
    },
}

/// One user of the generated configuration.
#[derive(Clone, Debug)]
pub struct UserSpec {
    /// `agent-<node>`, `coordinator-<organisation>` or `system`; also the seed file's stem.
    pub name: String,
    pub account: &'static str,
    /// `None` for the system user (its account is not the bus's).
    pub permissions: Option<Permissions>,
}

/// Everything the configuration holds, before keys are made.
#[derive(Clone, Debug)]
pub struct NatsSpec {
    pub network: NetworkId,
    pub users: Vec<UserSpec>,
}

impl NatsSpec {
    /// The users of `agents` (organisation, node), one coordinator user per organisation among
    /// them and in `organisations`, and the system user.
    pub fn new(
        network: NetworkId,
        agents: &BTreeSet<(String, NodeId)>,
        organisations: &BTreeSet<String>,
    ) -> Self {
        let names = Names::new(network.clone());
        let mut users: Vec<UserSpec> = agents
            .iter()
            .map(|(organisation, node)| UserSpec {
                name: format!("agent-{node}"),
                account: SIDECAR_ACCOUNT,
                permissions: Some(names.agent_permissions(node, organisation)),
            })
            .collect();
        let coordinators: BTreeSet<&String> = organisations
            .iter()
            .chain(agents.iter().map(|(organisation, _)| organisation))
            .collect();
        users.extend(coordinators.into_iter().map(|organisation| UserSpec {
            name: format!("coordinator-{organisation}"),
            account: SIDECAR_ACCOUNT,
            permissions: Some(names.coordinator_permissions(organisation)),
        }));
        users.push(UserSpec {
            name: "system".to_owned(),
            account: SYSTEM_ACCOUNT,
            permissions: None,
        });
        Self { network, users }
    }
}

fn quoted(text: &str) -> String {
    // nats-server's configuration strings take JSON's escapes.
    serde_json::Value::String(text.to_owned()).to_string()
}

fn subject_list(out: &mut String, indent: &str, subjects: &[String]) {
    for subject in subjects {
        let _ = writeln!(out, "{indent}  {}", quoted(subject));
    }
}

/// `accounts.conf` for `spec` with each user's public nkey (`public_keys[i]` for `users[i]`).
pub fn render_accounts(spec: &NatsSpec, public_keys: &[String]) -> String {
    let mut out = format!(
        "# The NATS users of canton-sidecar network {:?}, written by `canton-ops gen nats-config`.\n\
         # Every user logs in with its own nkey (seed files under users/) and may publish and\n\
         # subscribe only to the subjects listed with it; the server refuses everything else.\n\
         # Regenerate this file when nodes or organisations change; do not edit it by hand.\n\n\
         accounts {{\n",
        spec.network.as_str()
    );
    for account in [SIDECAR_ACCOUNT, SYSTEM_ACCOUNT] {
        let _ = writeln!(out, "  {account} {{");
        if account == SIDECAR_ACCOUNT {
            out.push_str("    jetstream: enabled\n");
        }
        out.push_str("    users: [\n");
        for (user, public) in spec.users.iter().zip(public_keys) {
            if user.account != account {
                continue;
            }
            let _ = writeln!(out, "      # {}", user.name);
            let _ = writeln!(out, "      {{");
            let _ = writeln!(out, "        nkey: {}", quoted(public));
            if let Some(permissions) = &user.permissions {
                out.push_str("        permissions: {\n          publish: { allow: [\n");
                subject_list(&mut out, "          ", &permissions.publish);
                out.push_str("          ] }\n          subscribe: { allow: [\n");
                subject_list(&mut out, "          ", &permissions.subscribe);
                out.push_str("          ] }\n        }\n");
            }
            out.push_str("      }\n");
        }
        out.push_str("    ]\n  }\n");
    }
    let _ = writeln!(out, "}}\nsystem_account: {SYSTEM_ACCOUNT}");
    out
}

/// TLS files of the server, as given on the command line.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
}

/// `tls.conf`: clients must use TLS; they authenticate with their nkey, so a CA for client
/// certificates is only named when one was given.
pub fn render_tls(tls: &TlsFiles) -> String {
    let mut out =
        String::from("# Clients must use TLS (written by `canton-ops gen nats-config`).\ntls {\n");
    let _ = writeln!(
        out,
        "  cert_file: {}",
        quoted(&tls.cert.display().to_string())
    );
    let _ = writeln!(
        out,
        "  key_file: {}",
        quoted(&tls.key.display().to_string())
    );
    if let Some(ca) = &tls.ca {
        let _ = writeln!(out, "  ca_file: {}", quoted(&ca.display().to_string()));
    }
    out.push_str("  timeout: 5\n}\n");
    out
}

/// `nats-server.conf` of a single server including the other generated files.
pub fn render_server(listen: &str, store_dir: &Path, tls: bool) -> String {
    let mut out = format!(
        "# One nats-server for canton-sidecar (written by `canton-ops gen nats-config`); a\n\
         # three-member cluster uses deploy/nats/nats-server.conf with this accounts.conf.\n\
         listen: {}\nmax_payload: 1MB\n\
         jetstream {{\n  store_dir: {}\n  # fsync before every acknowledgement: the runbook driver relies on acknowledged\n  # compare-and-set writes being durable.\n  sync_interval: always\n}}\n",
        quoted(listen),
        quoted(&store_dir.display().to_string()),
    );
    if tls {
        out.push_str("include \"tls.conf\"\n");
    }
    out.push_str("include \"accounts.conf\"\n");
    out
}

/// Who gets a user: the network, its agents (organisation, node) and its organisations.
struct Members {
    network: NetworkId,
    agents: BTreeSet<(String, NodeId)>,
    organisations: BTreeSet<String>,
}

/// The agents and organisations named by `--input` and `--agent`.
fn collect(
    input: Option<&Path>,
    network: Option<&str>,
    agents: &[String],
) -> Result<Members, OpsError> {
    let spec = match input {
        Some(path) => Some(NetworkToml::read(path)?),
        None => None,
    };
    let network = match (network, &spec) {
        (Some(given), Some(spec)) if given != spec.network => {
            return Err(OpsError::Usage(format!(
                "--network {given:?} differs from the network {:?} of --input",
                spec.network
            )));
        }
        (Some(given), _) => given.to_owned(),
        (None, Some(spec)) => spec.network.clone(),
        (None, None) => {
            return Err(OpsError::Usage(
                "name the network with --network or --input".to_owned(),
            ));
        }
    };
    let network = NetworkId::new(network.as_str())
        .map_err(|e| OpsError::Usage(format!("network {network:?}: {e}")))?;
    let node = |text: &str, what: &str| {
        NodeId::new(text).map_err(|e| OpsError::Usage(format!("{what}: node {text:?}: {e}")))
    };
    let organisation = |text: &str, what: &str| {
        if valid_token(text) {
            Ok(text.to_owned())
        } else {
            Err(OpsError::Usage(format!(
                "{what}: organisation {text:?} must be 1-128 of [A-Za-z0-9_-]"
            )))
        }
    };
    let mut found = BTreeSet::new();
    let mut organisations = BTreeSet::new();
    if let Some(spec) = &spec {
        for org in &spec.organisations {
            organisations.insert(organisation(&org.id, "--input")?);
            for id in &org.nodes {
                found.insert((org.id.clone(), node(id, "--input")?));
            }
        }
        for key in spec.keys.iter().filter(|k| k.purpose == "agent") {
            if !key.node.is_empty() {
                found.insert((
                    organisation(&key.organisation, "--input")?,
                    node(&key.node, "--input")?,
                ));
            }
        }
    }
    for agent in agents {
        let (org, id) = agent.split_once('/').ok_or_else(|| {
            OpsError::Usage(format!("--agent {agent:?} is not <organisation>/<node>"))
        })?;
        found.insert((organisation(org, "--agent")?, node(id, "--agent")?));
    }
    let mut owners = std::collections::BTreeMap::new();
    for (org, id) in &found {
        if let Some(other) = owners.insert(id.clone(), org.clone())
            && other != *org
        {
            return Err(OpsError::Usage(format!(
                "node {id} is listed for organisations {other} and {org}; an agent obeys one"
            )));
        }
    }
    if found.is_empty() {
        return Err(OpsError::Usage(
            "no agents: list nodes in --input or pass --agent <organisation>/<node>".to_owned(),
        ));
    }
    Ok(Members {
        network,
        agents: found,
        organisations,
    })
}

pub fn run(command: &GenCommand, out: &Out) -> Result<u8, OpsError> {
    let GenCommand::NatsConfig {
        input,
        network,
        agents,
        out_dir,
        tls_cert,
        tls_key,
        tls_ca,
        listen,
        store_dir,
        force,
    } = command;
    let members = collect(input.as_deref(), network.as_deref(), agents)?;
    let spec = NatsSpec::new(members.network, &members.agents, &members.organisations);
    let users_dir = out_dir.join("users");
    std::fs::create_dir_all(&users_dir)
        .map_err(|e| OpsError::Internal(format!("creating {}: {e}", users_dir.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&users_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| OpsError::Internal(format!("chmod {}: {e}", users_dir.display())))?;
    }
    // Check every seed file first, so a refusal leaves nothing half replaced.
    let seed_paths: Vec<PathBuf> = spec
        .users
        .iter()
        .map(|user| users_dir.join(format!("{}.nk", user.name)))
        .collect();
    if !force && let Some(existing) = seed_paths.iter().find(|path| path.exists()) {
        return Err(OpsError::Refused(format!(
            "{} exists; pass --force to replace every user's key (each process then needs its new seed)",
            existing.display()
        )));
    }
    let mut public_keys = Vec::new();
    for path in &seed_paths {
        let pair = nkeys::KeyPair::new_user();
        let seed = pair
            .seed()
            .map_err(|e| OpsError::Internal(format!("encoding an nkey seed: {e}")))?;
        write_file(path, format!("{seed}\n").as_bytes(), true, true)?;
        public_keys.push(pair.public_key());
    }
    let tls = tls_cert
        .as_ref()
        .zip(tls_key.as_ref())
        .map(|(cert, key)| TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: tls_ca.clone(),
        });
    write_file(
        &out_dir.join("accounts.conf"),
        render_accounts(&spec, &public_keys).as_bytes(),
        false,
        true,
    )?;
    if let Some(tls) = &tls {
        write_file(
            &out_dir.join("tls.conf"),
            render_tls(tls).as_bytes(),
            false,
            true,
        )?;
    }
    write_file(
        &out_dir.join("nats-server.conf"),
        render_server(listen, store_dir, tls.is_some()).as_bytes(),
        false,
        true,
    )?;
    if out.json() {
        let users: Vec<_> = spec
            .users
            .iter()
            .zip(&public_keys)
            .zip(&seed_paths)
            .map(|((user, public), seed)| {
                json!({"user": user.name, "account": user.account, "public_key": public, "seed_file": seed})
            })
            .collect();
        out.value(&json!({"network": spec.network.as_str(), "out_dir": out_dir, "tls": tls.is_some(), "users": users}));
    } else {
        println!(
            "wrote {} (network {}, {} users, TLS {}); seeds in {}",
            out_dir.join("nats-server.conf").display(),
            spec.network,
            spec.users.len(),
            if tls.is_some() { "required" } else { "off" },
            users_dir.display()
        );
    }
    Ok(crate::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_agent_has_its_own_user_and_each_organisation_one_coordinator() {
        let agents: BTreeSet<(String, NodeId)> =
            [("org-a", "p1.a"), ("org-a", "s1"), ("org-b", "p2")]
                .into_iter()
                .map(|(o, n)| (o.to_owned(), NodeId::new(n).unwrap()))
                .collect();
        let spec = NatsSpec::new(NetworkId::new("dev").unwrap(), &agents, &BTreeSet::new());
        let names: Vec<&str> = spec.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "agent-p1.a",
                "agent-s1",
                "agent-p2",
                "coordinator-org-a",
                "coordinator-org-b",
                "system"
            ]
        );
        let keys: Vec<String> = (0..spec.users.len()).map(|i| format!("UKEY{i}")).collect();
        let text = render_accounts(&spec, &keys);
        assert!(text.contains("nkey: \"UKEY0\""), "{text}");
        assert!(text.contains("\"cs.dev.hb.p1.a\""), "{text}");
        assert!(text.contains("system_account: SYS"), "{text}");
        assert_eq!(text.matches("nkey:").count(), spec.users.len());
    }
}
