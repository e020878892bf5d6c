//! Every YAML and JSON file under deploy/ parses, and the compose files give each agent what
//! the real agent binary accepts.

use std::collections::BTreeMap;
use std::path::Path;

use deploy_check::{deploy_dir, files_with_extensions, load_yaml, read_text};
use serde_json::Value;

use crate::support::{check_agent_config, describe, interpolate, provision};

#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    let yaml = files_with_extensions(&deploy_dir(), &["yaml", "yml"]).unwrap();
    let json = files_with_extensions(&deploy_dir(), &["json"]).unwrap();
    let mut documents = 0;
    for path in &yaml {
        let docs = load_yaml(path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            docs.iter().all(Value::is_object),
            "{}: every document is a mapping",
            path.display()
        );
        documents += docs.len();
    }
    for path in &json {
        serde_json::from_str::<Value>(&read_text(path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    eprintln!(
        "{} YAML files ({documents} documents), {} JSON files",
        yaml.len(),
        json.len()
    );
    // compose (2), kubernetes (base 8, overlays 3, component 2), nats (1).
    assert!(yaml.len() >= 14, "found only {yaml:?}");
}

fn compose(name: &str) -> Value {
    let mut docs = load_yaml(&deploy_dir().join("compose").join(name)).unwrap();
    assert_eq!(docs.len(), 1, "{name} is one document");
    docs.remove(0)
}

/// The services of compose.yaml with compose.ha.yaml applied (maps merge, scalars replace).
fn compose_with_ha() -> Value {
    let mut base = compose("compose.yaml");
    merge(&mut base, compose("compose.ha.yaml"));
    base
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                match into.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        into.insert(key, value);
                    }
                }
            }
        }
        (into, from) => *into = from,
    }
}

fn agents(compose: &Value) -> BTreeMap<String, BTreeMap<String, String>> {
    compose["services"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| name.starts_with("agent-"))
        .map(|(name, service)| {
            let env = service["environment"]
                .as_object()
                .unwrap_or_else(|| panic!("{name} has an environment map"))
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            (name.clone(), env)
        })
        .collect()
}

#[test]
fn compose_services_have_images_and_every_agent_its_own_node_key_and_journal() {
    for (file, network) in [
        ("compose.yaml", compose("compose.yaml")),
        ("compose.ha.yaml", compose_with_ha()),
    ] {
        let services = network["services"].as_object().unwrap();
        for (name, service) in services {
            let image = service["image"].as_str().unwrap_or_default();
            assert!(
                image.contains(':'),
                "{file}: {name} names a tagged image: {image:?}"
            );
        }
        let agents = agents(&network);
        let nodes: Vec<&str> = services
            .keys()
            .filter(|name| {
                name.starts_with("sequencer")
                    || name.starts_with("mediator")
                    || name.starts_with("participant")
            })
            .filter(|name| !name.ends_with("-haproxy"))
            .map(String::as_str)
            .collect();
        assert_eq!(
            agents.len(),
            nodes.len(),
            "{file}: an agent beside every node ({nodes:?})"
        );
        let mut seen = BTreeMap::new();
        for (name, env) in &agents {
            for key in [
                "CANTON_AGENT__NODE",
                "CANTON_AGENT__KIND",
                "CANTON_AGENT__CANTON__ADMIN_URL",
                "CANTON_AGENT__DATABASE__URL",
                "CANTON_AGENT__TRUST__ACK_KEY_SEED",
                "CANTON_AGENT__TRUST__ACK_KEY_ID",
                "CANTON_AGENT__TRUST__CONFIG_KEY",
                "CANTON_AGENT__COMMANDS__JOURNAL_DIR",
            ] {
                assert!(env.contains_key(key), "{file}: {name} sets {key}");
            }
            for key in [
                "CANTON_AGENT__NODE",
                "CANTON_AGENT__TRUST__ACK_KEY_ID",
                "CANTON_AGENT__COMMANDS__JOURNAL_DIR",
            ] {
                if let Some(other) = seen.insert((key, env[key].clone()), name.clone()) {
                    panic!("{file}: {name} and {other} share {key} = {}", env[key]);
                }
            }
        }
    }
    let ha = compose("compose.ha.yaml");
    let image = ha["x-participant1-replica"]["image"].as_str().unwrap();
    assert!(
        image.contains("CANTON_ENTERPRISE_IMAGE:?"),
        "the HA variant requires the enterprise image: {image}"
    );
}

/// Container paths of the compose agents and where the test puts them.
fn mounts(secrets: &Path, scratch: &Path) -> Vec<(String, String)> {
    vec![
        (
            "/etc/canton-sidecar/secrets".to_owned(),
            secrets.display().to_string(),
        ),
        (
            "/var/lib/canton-sidecar/journal".to_owned(),
            scratch.join("journal").display().to_string(),
        ),
        (
            "/var/backups/canton-sidecar".to_owned(),
            scratch.join("backups").display().to_string(),
        ),
    ]
}

fn remap(text: &str, mounts: &[(String, String)]) -> String {
    mounts
        .iter()
        .fold(text.to_owned(), |text, (container, host)| {
            text.replace(container, host)
        })
}

#[test]
fn compose_agents_pass_the_agents_own_configuration_check() {
    let provisioned = provision();
    let scratch = provisioned.dir.path().join("scratch");
    let mounts = mounts(&provisioned.secrets(), &scratch);
    let config = scratch.join("agent.toml");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(
        &config,
        remap(
            &read_text(&deploy_dir().join("compose/agent.toml")).unwrap(),
            &mounts,
        ),
    )
    .unwrap();
    let agents = agents(&compose_with_ha());
    for (name, env) in &agents {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.clone(), remap(&interpolate(v, &provisioned.env), &mounts)))
            .collect();
        let output = check_agent_config(&config, &env);
        assert!(output.status.success(), "{name}: {}", describe(&output));
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(
            printed.contains(env["CANTON_AGENT__NODE"].as_str()),
            "{name}: the checked configuration is the node's own:\n{printed}"
        );
    }
    eprintln!("{} compose agents accepted", agents.len());
}
