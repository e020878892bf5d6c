//! Secrets stay in their files. A stack with the generated NATS logins and a database password
//! planted in every agent's connection string runs a backup while agents and the coordinator
//! export traces and metrics over OTLP; afterwards no log of any process (agents, coordinator,
//! sim nodes, nats-server, PostgreSQL), no backup manifest, no `/metrics` text, no `canton-ops`
//! output and no byte of any OTLP export request (span names, attributes, events, resources,
//! metrics; the flush at exit included) contains the password, the operator token, any signing
//! seed (config, coordinator, operator, agent keys) or any NATS user seed.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::otlp::OtlpReceiver;
use e2e::stack::{Stack, StackOptions};

use crate::support::{ORGANISATION, ops_output};
use crate::telemetry::{otel_env, wait_for};

const PASSWORD: &str = "planted-db-password-5b1e07c2";

const TOPOLOGY: &str = r#"
name = "secrets"
[[node]]
id = "sequencer1"
kind = "sequencer"
organisation = "operator"
[[node]]
id = "mediator1"
kind = "mediator"
organisation = "operator"
[[node]]
id = "participant1"
kind = "participant"
organisation = "operator"
workload = { rate_per_second = 2.0 }
[[node]]
id = "app1"
kind = "app"
organisation = "operator"
"#;

fn files_under(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, found);
        } else {
            found.push(path);
        }
    }
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The signing seeds as raw bytes, which a binary span attribute would carry unencoded.
fn raw_seeds(stack: &Stack) -> Vec<(String, [u8; 32])> {
    let keys = &stack.keys;
    std::iter::once(&keys.config_signer)
        .chain(keys.coordinators.values())
        .chain(keys.operators.values())
        .chain(keys.agents.values())
        .map(|identity| {
            (
                format!("raw seed of {}", identity.key_id()),
                identity.seed(),
            )
        })
        .collect()
}

/// Where each secret occurs in the exported OTLP bytes.
fn leaks_in_exports(
    exported: &[u8],
    secrets: &[(String, String)],
    raw: &[(String, [u8; 32])],
) -> Vec<String> {
    let contains = |needle: &[u8]| {
        exported
            .windows(needle.len())
            .any(|window| window == needle)
    };
    secrets
        .iter()
        .map(|(name, secret)| (name, secret.as_bytes()))
        .chain(raw.iter().map(|(name, seed)| (name, &seed[..])))
        .filter(|(_, needle)| contains(needle))
        .map(|(name, _)| format!("{name} in the OTLP exports"))
        .collect()
}

/// Every secret of the stack, named for the failure message.
fn secrets(stack: &Stack) -> Vec<(String, String)> {
    let mut secrets = vec![("database password".to_owned(), PASSWORD.to_owned())];
    let coordinator = &stack.coordinators[ORGANISATION];
    secrets.push((
        "operator token".to_owned(),
        read_trimmed(&coordinator.operator_token_file),
    ));
    let keys = &stack.keys;
    let identities = std::iter::once(&keys.config_signer)
        .chain(keys.coordinators.values())
        .chain(keys.operators.values())
        .chain(keys.agents.values());
    for identity in identities {
        secrets.push((
            format!("seed of {}", identity.key_id()),
            hex::encode(identity.seed()),
        ));
    }
    let login = stack.nats_login.as_ref().expect("logins");
    let mut seeds = Vec::new();
    files_under(&login.dir.join("users"), &mut seeds);
    for seed in seeds {
        secrets.push((format!("NATS seed {}", seed.display()), read_trimmed(&seed)));
    }
    for (name, secret) in &secrets {
        assert!(
            secret.len() >= 16,
            "{name} is too short to search for: {secret:?}"
        );
    }
    secrets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_manifests_metrics_or_cli_output() {
    let started = Instant::now();
    let receiver = OtlpReceiver::start("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("starting the OTLP receiver");
    let mut stack = Stack::start(&StackOptions {
        topology: TOPOLOGY,
        heartbeat_interval: Duration::from_millis(500),
        commands: true,
        nats_login: true,
        database_password: Some(PASSWORD),
    })
    .await
    .expect("starting the stack");
    stack.serve_metrics = true;
    stack.process_env = otel_env(Some(&receiver.endpoint()));
    stack
        .start_agents(Duration::from_secs(60))
        .await
        .expect("agents");
    stack
        .start_coordinator(ORGANISATION, Duration::from_secs(60))
        .await
        .expect("coordinator");

    // The planted password really is in the agents' configuration, so finding it nowhere
    // else means something.
    let agent_config = stack.work_dir().join("agents/participant1/agent.toml");
    assert!(
        read_trimmed(&agent_config).contains(PASSWORD),
        "{} lacks the planted password",
        agent_config.display()
    );

    let mut outputs: Vec<(String, String)> = Vec::new();
    for args in [
        &["run", "backup", "--wait"][..],
        &["--output", "json", "runs"],
        &["nodes"],
        &["proposals"],
    ] {
        let output = ops_output(&stack, args);
        assert!(output.status.success(), "canton-ops {args:?}: {output:?}");
        outputs.push((
            format!("canton-ops {}", args.join(" ")),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ));
    }
    let check = std::process::Command::new(testkit::binary_path("canton-agent").expect("agent"))
        .arg("--config")
        .arg(&agent_config)
        .arg("--check-config")
        .output()
        .expect("canton-agent --check-config");
    outputs.push((
        "canton-agent --check-config".to_owned(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        ),
    ));
    let metrics = stack
        .agents
        .values()
        .filter_map(|agent| agent.metrics_url.clone())
        .chain(
            stack
                .coordinators
                .values()
                .filter_map(|c| c.metrics_url.clone()),
        );
    for url in metrics {
        let (status, text) = e2e::prometheus_text::scrape(&url).expect("scrape");
        assert_eq!(status, 200, "{url}");
        outputs.push((url, text));
    }

    // The run's spans from the coordinator and every agent's backup action are exported, so
    // the search below covers what the backup traced.
    wait_for(&receiver, "backup spans exported", |r| {
        r.spans.iter().any(|s| s.name == "run backup")
            && r.spans.iter().filter(|s| s.name == "action backup").count() >= 4
    })
    .await;

    let mut files = Vec::new();
    files_under(stack.work_dir(), &mut files);
    files.retain(|path| {
        path.extension()
            .is_some_and(|ext| ext == "log" || ext == "json")
    });
    files.extend(stack.nats.log_path());
    files.extend(stack.postgres.log_path().map(Path::to_path_buf));
    let manifests = files
        .iter()
        .filter(|path| path.to_string_lossy().ends_with(".manifest.json"))
        .count();
    assert!(manifests >= 4, "the backup wrote manifests: {files:?}");
    for path in &files {
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
        outputs.push((path.display().to_string(), text));
    }

    let secrets = secrets(&stack);
    let bytes: usize = outputs.iter().map(|(_, text)| text.len()).sum();
    let leaks: Vec<String> = outputs
        .iter()
        .flat_map(|(place, text)| {
            secrets
                .iter()
                .filter(|(_, secret)| text.contains(secret.as_str()))
                .map(move |(name, _)| format!("{name} in {place}"))
        })
        .collect();
    eprintln!(
        "searched {} outputs and files ({bytes} bytes, {manifests} manifests) for {} secrets",
        outputs.len(),
        secrets.len()
    );
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
    let raw = raw_seeds(&stack);
    let unclean = stack.shutdown().await.expect("shutdown");
    assert!(unclean.is_empty(), "{unclean:?}");
    // After shutdown: the processes' last batches (flushed at exit) are in too.
    let exported = receiver.exported_bytes();
    let received = receiver.received();
    assert!(
        exported
            .windows(b"run backup".len())
            .any(|w| w == b"run backup"),
        "the exports hold the run span"
    );
    let export_leaks = leaks_in_exports(&exported, &secrets, &raw);
    eprintln!(
        "searched {} OTLP export requests ({} bytes, {} spans, {} metric names) for {} secrets",
        received.trace_requests + received.metric_requests,
        exported.len(),
        received.spans.len(),
        received.metrics.len(),
        secrets.len() + raw.len()
    );
    assert!(
        export_leaks.is_empty(),
        "secrets exported: {export_leaks:#?}"
    );
    eprintln!("test took {:?}", started.elapsed());
}
