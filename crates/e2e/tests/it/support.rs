//! What every e2e test needs: a running network with agents and a coordinator, `canton-ops`
//! with JSON output, and the manifests of a backup set.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use e2e::stack::{Stack, StackOptions, backup_root};
use serde_json::Value;

/// The organisation that runs every node of the test networks.
pub const ORGANISATION: &str = "operator";

/// The demo's network: sequencer, mediator, three participants with workload, one app.
pub const DEMO_TOPOLOGY: &str = include_str!("../../demo/network.toml");

/// Starts the stack, an agent beside every node and the coordinator, logging each wait.
pub async fn running_stack(topology: &str) -> Stack {
    start(topology, "", false).await
}

/// [`running_stack`] with `coordinator_toml` added to the coordinator's configuration.
pub async fn running_stack_with(topology: &str, coordinator_toml: &str) -> Stack {
    start(topology, coordinator_toml, false).await
}

/// [`running_stack`] with a NATS server that requires each process's generated login.
pub async fn running_stack_with_logins(topology: &str) -> Stack {
    start(topology, "", true).await
}

async fn start(topology: &str, coordinator_toml: &str, nats_login: bool) -> Stack {
    let started = Instant::now();
    let mut stack = Stack::start(&StackOptions {
        topology,
        heartbeat_interval: Duration::from_millis(500),
        commands: true,
        nats_login,
        database_password: None,
    })
    .await
    .expect("starting the stack");
    eprintln!("stack up in {:?}", started.elapsed());
    let took = stack
        .start_agents(Duration::from_secs(60))
        .await
        .expect("starting the agents");
    eprintln!("agents published node state in {took:?}");
    let took = stack
        .start_coordinator_with(ORGANISATION, Duration::from_secs(60), &[], coordinator_toml)
        .await
        .expect("starting the coordinator");
    eprintln!("coordinator leads after {took:?}");
    stack
}

/// `canton-ops <args>` of the organisation's operator, run to completion.
pub fn ops_output(stack: &Stack, args: &[&str]) -> std::process::Output {
    ops_output_of(stack, ORGANISATION, args)
}

/// `canton-ops <args>` of `organisation`'s operator, run to completion.
pub fn ops_output_of(stack: &Stack, organisation: &str, args: &[&str]) -> std::process::Output {
    tokio::task::block_in_place(|| {
        stack
            .ops(organisation)
            .expect("canton-ops command")
            .args(args)
            .output()
            .expect("running canton-ops")
    })
}

/// `canton-ops --output json <args>`: exit status and one JSON value per output line.
pub fn ops_json(stack: &Stack, args: &[&str]) -> (ExitStatus, Vec<Value>) {
    ops_json_of(stack, ORGANISATION, args)
}

/// [`ops_json`] as `organisation`'s operator.
pub fn ops_json_of(stack: &Stack, organisation: &str, args: &[&str]) -> (ExitStatus, Vec<Value>) {
    let started = Instant::now();
    let output = ops_output_of(
        stack,
        organisation,
        &[&["--output", "json"][..], args].concat(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let values = stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("canton-ops printed non-JSON {line:?}: {error}"))
        })
        .collect();
    eprintln!(
        "canton-ops ({organisation}) {} -> {} in {:?}; stderr: {}",
        args.join(" "),
        output.status,
        started.elapsed(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    (output.status, values)
}

/// The final run summary in `run --wait` output (carried by its RUN_FINISHED event).
pub fn final_run(values: &[Value]) -> &Value {
    values
        .iter()
        .rev()
        .find_map(|value| (value["kind"] == "run_finished").then(|| &value["run"]))
        .unwrap_or_else(|| panic!("no result line in {values:#?}"))
}

pub fn set_dir(stack: &Stack, set: &str) -> PathBuf {
    backup_root(stack).join(set)
}

/// Every `<node>.manifest.json` of backup set `set`, by node.
pub fn manifests(stack: &Stack, set: &str) -> BTreeMap<String, Value> {
    let dir = set_dir(stack, set);
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(node) = name.strip_suffix(".manifest.json") {
            let bytes = std::fs::read(&path).expect("reading a manifest");
            let manifest: Value = serde_json::from_slice(&bytes).expect("a manifest is JSON");
            found.insert(node.to_owned(), manifest);
        }
    }
    found
}

/// `manifest[field][bound]` as a number (`field` is an interval such as `ledger_offset`).
pub fn bound(manifest: &Value, field: &str, bound: &str) -> i64 {
    manifest[field][bound]
        .as_i64()
        .unwrap_or_else(|| panic!("manifest has no {field}.{bound}: {manifest:#}"))
}

/// The steps of the `backup` runbook that dump.
pub const DUMP_STEPS: [&str; 3] = ["apps", "members", "sequencers"];

/// Dump connections per node of backup run `run_id`, from the PostgreSQL server's connection
/// log: a dump connects with `application_name` = its command id `<run>/<step>/<node>`, so a
/// second dump of a node (an attempt on another replica too) is a second connection.
pub fn dump_connections(stack: &Stack, run_id: &str) -> BTreeMap<String, Vec<String>> {
    let path = stack
        .postgres
        .log_path()
        .expect("a private PostgreSQL server");
    let log = std::fs::read_to_string(path).expect("reading the PostgreSQL log");
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("connection authorized")) {
        let Some(name) = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("application_name="))
        else {
            continue;
        };
        let mut parts = name.split('/');
        let (Some(run), Some(step), Some(node), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if run == run_id && DUMP_STEPS.contains(&step) {
            by_node
                .entry(node.to_owned())
                .or_default()
                .push(name.to_owned());
        }
    }
    by_node
}

/// Publishes `message` signed with `signer`'s coordinator key on `publisher`'s proposal
/// subject, logged in with `publisher`'s coordinator NATS credential: what that
/// organisation's coordinator would send (signer = publisher), or a forgery (signer ≠
/// publisher) with a stolen credential.
pub async fn publish_proposal_message(
    stack: &Stack,
    signer: &str,
    publisher: &str,
    message: &proto_sidecar::ProposalMessage,
) {
    use prost::Message as _;
    let key = stack.keys.coordinator(signer).expect("coordinator key");
    let envelope = sidecar_trust::sign_proposal_message(key, message);
    let names = stack.names().clone();
    let login = stack
        .nats_login
        .as_ref()
        .expect("the server requires logins");
    let client = login
        .auth(&format!("coordinator-{publisher}"))
        .apply(async_nats::ConnectOptions::new())
        .await
        .expect("the coordinator seed")
        .custom_inbox_prefix(names.coordinator_inbox(publisher))
        .connect(stack.nats.url())
        .await
        .expect("connecting with the coordinator's credential");
    async_nats::jetstream::new(client)
        .publish(
            names.proposals(publisher),
            bytes::Bytes::from(envelope.encode_to_vec()),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
}

/// `canton-ops --output json <args>` as `organisation`, expected to succeed; its last answer.
pub fn ops_ok_of(stack: &Stack, organisation: &str, args: &[&str]) -> Value {
    let (status, values) = ops_json_of(stack, organisation, args);
    assert!(status.success(), "{organisation}: {args:?}: {values:#?}");
    values.last().cloned().unwrap_or(Value::Null)
}

/// The proposal `hash` as `organisation`'s coordinator lists it.
pub fn listed_proposal(stack: &Stack, organisation: &str, hash: &str) -> Value {
    let (status, values) = ops_json_of(stack, organisation, &["proposals", "list"]);
    assert!(status.success(), "{values:#?}");
    values
        .into_iter()
        .find(|view| view["proposal_hash"] == hash)
        .unwrap_or_else(|| panic!("{organisation} does not list proposal {hash}"))
}

/// The sim node's own action log: (gRPC method path, outcome), in order.
pub async fn node_calls(stack: &Stack, node: &str) -> Vec<(String, String)> {
    let control = stack
        .with_sims(|sims| sims.node(node).map(|n| n.control()))
        .expect("sims")
        .expect("node exists");
    control
        .actions(0)
        .await
        .expect("reading the node's action log")
        .iter()
        .map(|a| (a.method.clone(), a.outcome.clone()))
        .collect()
}

/// The method name of a gRPC path, without its service.
pub fn method_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or_default()
}

/// `sql` run in the sim node's own database, its output trimmed.
pub fn node_psql(stack: &Stack, node: &str, sql: &str) -> String {
    let database = stack
        .with_sims(|sims| sims.node(node).map(|n| n.database_name().to_owned()))
        .expect("sims")
        .unwrap_or_else(|| panic!("no node {node}"));
    stack
        .postgres
        .psql(&database, sql)
        .unwrap_or_else(|e| panic!("{node}: {sql}: {e}"))
        .trim()
        .to_owned()
}

/// Polls `holds` every 100 ms until it is true, logging how long it took; fails after
/// `deadline`.
pub fn wait_for(what: &str, deadline: Duration, mut holds: impl FnMut() -> bool) {
    let started = Instant::now();
    while !holds() {
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{what} after {:?}", started.elapsed());
}

/// The step `id` of a run summary (`--output json`).
pub fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|step| step["step"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {run:#}"))
}

/// Waits until the commitments computed since `since_micros` satisfy `enough`; a mismatched
/// period fails at once, whatever `enough` says.
pub fn wait_for_matching_commitments(
    stack: &Stack,
    since_micros: i64,
    deadline: Duration,
    enough: impl Fn(&[e2e::observe::Commitments]) -> bool,
) {
    wait_for(
        "matching commitments on the new synchronizer",
        deadline,
        || {
            let commitments =
                e2e::observe::commitments_since(stack, since_micros).expect("commitments");
            assert!(
                commitments.iter().all(|c| c.mismatched_periods == 0),
                "{commitments:?}"
            );
            enough(&commitments)
        },
    );
}
