use std::process::Output;

use serde_json::Value;
use testkit::NatsServer;

use crate::support::{Behaviour, Harness, OPERATOR_TOKEN, READ_TOKEN, demo_nodes};

struct Ops {
    url: String,
    token: &'static str,
}

impl Ops {
    async fn run(&self, args: &[&str]) -> Output {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_canton-ops"))
            .args(args)
            .env("CANTON_OPS_COORDINATOR", &self.url)
            .env("CANTON_OPS_TOKEN", self.token)
            .output()
            .await
            .unwrap();
        eprintln!(
            "canton-ops {args:?} -> {:?}\n{}{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    async fn json(&self, args: &[&str]) -> (i32, Vec<Value>) {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let output = self.run(&all).await;
        let lines = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        (output.status.code().unwrap(), lines)
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_against_a_live_coordinator_in_text_and_json() {
    let server = NatsServer::shared_or_start().unwrap();
    let harness = Harness::new(server.url(), demo_nodes()).await;
    let coordinator = harness.coordinator().await;
    let ops = Ops {
        url: format!("http://{}", coordinator.api_addr),
        token: OPERATOR_TOKEN,
    };

    let nodes = ops.run(&["nodes"]).await;
    assert_eq!(nodes.status.code(), Some(0));
    assert!(stdout(&nodes).contains("s1"), "{}", stdout(&nodes));
    let (code, nodes) = ops.json(&["nodes"]).await;
    assert_eq!(code, 0);
    assert_eq!(nodes.len(), 5);
    assert!(
        nodes
            .iter()
            .any(|n| n["node"] == "m1" && n["kind"] == "mediator")
    );

    let plan = ops.run(&["plan", "backup"]).await;
    assert_eq!(plan.status.code(), Some(0));
    let text = stdout(&plan);
    let members = text.find("members").unwrap();
    let sequencers = text.find("sequencers").unwrap();
    assert!(members < sequencers, "{text}");
    let (code, steps) = ops.json(&["plan", "disconnect", "--node", "p1,p2"]).await;
    assert_eq!(code, 0);
    assert_eq!(steps[0]["nodes"], serde_json::json!(["p1", "p2"]));

    // run --wait in JSON: the start line, then one event per line, ending with run_finished.
    let (code, lines) = ops
        .json(&["run", "backup", "--wait", "--request-id", "cli-1"])
        .await;
    assert_eq!(code, 0, "{lines:#?}");
    assert_eq!(lines[0]["started"], true);
    let run_id = lines[0]["run"]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(lines[1]["kind"], "snapshot");
    let last = lines.last().unwrap();
    assert_eq!(last["kind"], "run_finished");
    assert_eq!(last["run_status"], "succeeded");
    // A run that finishes before the watch attaches is reported by the snapshot alone, so
    // s1's result is either an event of its own or a node of a snapshot's run.
    let s1_done_in = |line: &serde_json::Value| {
        line["run"]["steps"].as_array().is_some_and(|steps| {
            steps.iter().any(|step| {
                step["nodes"].as_array().is_some_and(|nodes| {
                    nodes
                        .iter()
                        .any(|n| n["node"] == "s1" && n["status"] == "done")
                })
            })
        })
    };
    assert!(
        lines.iter().any(|l| {
            (l["kind"] == "node_finished" && l["node"] == "s1")
                || (l["kind"] == "snapshot" && s1_done_in(l))
        }),
        "{lines:#?}"
    );

    // watch of a finished run, in text (no terminal: plain lines).
    let watch = ops.run(&["watch", &run_id]).await;
    assert_eq!(watch.status.code(), Some(0));
    assert!(stdout(&watch).contains("succeeded"));

    // show: every step with its nodes, in text and with the results in JSON.
    let show = ops.run(&["show", &run_id]).await;
    assert_eq!(show.status.code(), Some(0));
    assert!(
        stdout(&show).contains("succeeded") && stdout(&show).contains("s1"),
        "{}",
        stdout(&show)
    );
    let (code, shown) = ops.json(&["show", &run_id]).await;
    assert_eq!(code, 0);
    assert_eq!(shown[0]["run_id"], run_id.as_str());
    assert!(shown[0]["steps"].as_array().is_some_and(|s| !s.is_empty()));

    let (code, runs) = ops.json(&["runs", "--status", "succeeded"]).await;
    assert_eq!(code, 0);
    assert!(runs.iter().any(|r| r["run_id"] == run_id.as_str()));
    let runs_text = ops.run(&["runs"]).await;
    assert!(stdout(&runs_text).contains(&run_id));

    // A run that ends compensated exits 12 and names the silent node.
    harness.responder.set("p2", Behaviour::Silent);
    let compensated = ops
        .run(&["run", "disconnect", "--param", "deadline=1s", "--wait"])
        .await;
    assert_eq!(compensated.status.code(), Some(12));
    assert!(
        stdout(&compensated).contains("p2"),
        "{}",
        stdout(&compensated)
    );
    harness.responder.set("p2", Behaviour::Answer);

    // Refusals: unknown node (4), nothing waiting for approval or a decision (4).
    let unknown = ops.run(&["run", "reconnect", "--node", "p9"]).await;
    assert_eq!(unknown.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("p9"));
    let approve = ops
        .run(&["approve", &run_id, "verify", "--nodes", "p1"])
        .await;
    assert_eq!(approve.status.code(), Some(4));
    let resume = ops
        .run(&["resume", &run_id, "members", "p1", "--decision", "retry"])
        .await;
    assert_eq!(resume.status.code(), Some(4));
    let cancel = ops.run(&["cancel", &run_id]).await;
    assert_eq!(cancel.status.code(), Some(4));

    // A cancel of a live run.
    harness.responder.set("p1", Behaviour::Silent);
    let (code, started) = ops
        .json(&["run", "reconnect", "--node", "p1", "--param", "deadline=2s"])
        .await;
    assert_eq!(code, 0);
    let live = started[0]["run"]["run_id"].as_str().unwrap().to_owned();
    let (code, cancelled) = ops.json(&["cancel", &live, "--reason", "test"]).await;
    assert_eq!(code, 0);
    assert_eq!(cancelled[0]["result"], "cancelling");
    let watched = ops.run(&["watch", &live]).await;
    assert_eq!(watched.status.code(), Some(11));

    // Roles and reachability.
    let reader = Ops {
        url: ops.url.clone(),
        token: READ_TOKEN,
    };
    assert_eq!(reader.run(&["runs"]).await.status.code(), Some(0));
    assert_eq!(reader.run(&["run", "backup"]).await.status.code(), Some(5));
    let nowhere = Ops {
        url: "http://127.0.0.1:1".into(),
        token: OPERATOR_TOKEN,
    };
    assert_eq!(nowhere.run(&["runs"]).await.status.code(), Some(3));
}

#[tokio::test]
async fn keys_gen_and_a_signed_network_config_that_trust_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let ops = Ops {
        url: "http://127.0.0.1:1".into(),
        token: OPERATOR_TOKEN,
    };
    let path = dir.path().to_str().unwrap();
    for name in ["config", "coord"] {
        let output = ops
            .run(&["keys", "gen", "--name", name, "--out-dir", path])
            .await;
        assert_eq!(output.status.code(), Some(0));
    }
    let again = ops
        .run(&["keys", "gen", "--name", "coord", "--out-dir", path])
        .await;
    assert_eq!(
        again.status.code(),
        Some(4),
        "an existing seed is not overwritten"
    );
    std::fs::write(
        dir.path().join("net.toml"),
        r#"
network = "demo"
serial = 3
config_key_id = "net/config"
config_seed_file = "config.seed"
[[organisations]]
id = "org-a"
nodes = ["p1"]
[[keys]]
key_id = "org-a/coord"
purpose = "coordinator"
organisation = "org-a"
public_key_file = "coord.pub"
"#,
    )
    .unwrap();
    let out = dir.path().join("net.bin");
    let (code, lines) = ops
        .json(&[
            "keys",
            "network-config",
            "--input",
            dir.path().join("net.toml").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .await;
    assert_eq!(code, 0);
    let public = hex::decode(lines[0]["config_public_key"].as_str().unwrap()).unwrap();
    let pinned = proto_sidecar::PublicKey {
        key_id: "net/config".into(),
        purpose: proto_sidecar::KeyPurpose::Config.into(),
        organisation: "network".into(),
        ed25519: public,
        ..Default::default()
    };
    let roots: sidecar_trust::KeyRing =
        std::iter::once(sidecar_trust::TrustedKey::from_proto(&pinned).unwrap()).collect();
    let verified = sidecar_trust::verify_network_config(
        &std::fs::read(&out).unwrap(),
        &roots,
        "demo",
        None,
        crate::support::now_ms(),
    )
    .unwrap();
    assert_eq!(verified.serial, 3);
    assert!(verified.keys.get("org-a/coord").is_some());
    // A key of an unlisted organisation is refused, naming it.
    std::fs::write(
        dir.path().join("bad.toml"),
        "network = \"demo\"\nserial = 1\nconfig_key_id = \"c\"\nconfig_seed_file = \"config.seed\"\n[[keys]]\nkey_id = \"x\"\npurpose = \"operator\"\norganisation = \"org-z\"\npublic_key_file = \"coord.pub\"\n",
    )
    .unwrap();
    let bad = ops
        .run(&[
            "keys",
            "network-config",
            "--input",
            dir.path().join("bad.toml").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("org-z"));
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made by the `openssl` command.
fn tls_material(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>, std::path::PathBuf) {
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    openssl(&[&["genpkey", "-out", "ca.key"][..], &ec[..]].concat());
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-days",
        "2",
        "-subj",
        "/CN=test ca",
        "-out",
        "ca.pem",
    ]);
    openssl(&[&["genpkey", "-out", "server.key"][..], &ec[..]].concat());
    openssl(&[
        "req",
        "-new",
        "-key",
        "server.key",
        "-subj",
        "/CN=127.0.0.1",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    (
        std::fs::read(dir.join("server.pem")).unwrap(),
        std::fs::read(dir.join("server.key")).unwrap(),
        dir.join("ca.pem"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_tls_needs_the_ca_and_refuses_plaintext() {
    let server = NatsServer::shared_or_start().unwrap();
    let harness = Harness::new(server.url(), demo_nodes()).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = tls_material(dir.path());
    let mut config = harness.config();
    config.tls = Some((cert, key));
    let coordinator = canton_coordinator::service::Coordinator::start(config)
        .await
        .unwrap();
    crate::support::wait_driving(&coordinator).await;
    let tls = Ops {
        url: format!("https://{}", coordinator.api_addr),
        token: OPERATOR_TOKEN,
    };
    let ca = ca.to_str().unwrap();

    let (code, nodes) = tls.json(&["--ca-file", ca, "nodes"]).await;
    assert_eq!(code, 0, "{nodes:#?}");
    assert_eq!(nodes.len(), 5);
    // https:// without a CA is a usage error that says what to pass.
    let no_ca = tls.run(&["runs"]).await;
    assert_eq!(no_ca.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_ca.stderr).contains("--ca-file"));
    // A CA that did not sign the server's certificate: unreachable (3), and the error says why.
    let other = tempfile::tempdir().unwrap();
    let (_, _, other_ca) = tls_material(other.path());
    let untrusted = tls
        .run(&["--ca-file", other_ca.to_str().unwrap(), "runs"])
        .await;
    assert_eq!(untrusted.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("certificate"),
        "the error says why"
    );
    let plaintext = Ops {
        url: format!("http://{}", coordinator.api_addr),
        token: OPERATOR_TOKEN,
    };
    let plain = plaintext.run(&["runs"]).await;
    assert_eq!(plain.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&plain.stderr).contains("https://"));
    // TLS does not replace the token: a wrong one is still refused.
    let stranger = Ops {
        url: tls.url.clone(),
        token: "not-a-token",
    };
    let refused = stranger.run(&["--ca-file", ca, "runs"]).await;
    assert_eq!(refused.status.code(), Some(5));
}
