//! What every e2e test needs: a running network with agents and a coordinator, `canton-ops`
//! with JSON output, and the manifests of a backup set.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use e2e::prometheus_text::{self, Exposition};
use e2e::stack::{Stack, StackOptions, backup_root};
use serde_json::Value;
use testkit::TcpProxy;

/// The organisation that runs every node of the test networks.
pub const ORGANISATION: &str = "operator";

/// The demo's network: sequencer, mediator, three participants with workload, one app.
pub const DEMO_TOPOLOGY: &str = include_str!("../../demo/network.toml");

/// Every node of [`DEMO_TOPOLOGY`], in id order; a backup dumps each.
pub const DEMO_NODES: [&str; 6] = [
    "app1",
    "mediator1",
    "participant1",
    "participant2",
    "participant3",
    "sequencer1",
];

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

/// [`running_stack`] with `node`'s agent reaching NATS through a fault proxy, every agent and
/// the coordinator serving `/metrics`.
pub async fn running_stack_behind_proxy(topology: &str, node: &str) -> (Stack, TcpProxy) {
    let mut proxy = None;
    let stack = start_prepared(topology, "", false, |stack| {
        stack.serve_metrics = true;
        let between = TcpProxy::in_front_of(stack.nats.port()).expect("starting the proxy");
        let config = stack.agent_config_path(node);
        let text = std::fs::read_to_string(&config).expect("the agent's config");
        let direct = format!("url = {:?}", stack.nats.url());
        assert_eq!(text.matches(&direct).count(), 1, "one NATS url in {text}");
        let proxied = text.replace(&direct, &format!("url = {:?}", between.nats_url()));
        std::fs::write(&config, proxied).expect("rewriting the agent's config");
        eprintln!("agent {node} reaches NATS through {}", between.nats_url());
        proxy = Some(between);
    })
    .await;
    (stack, proxy.expect("the proxy was started"))
}

/// [`running_stack`] with the coordinator reaching NATS through a fault proxy (the agents
/// directly), every agent and the coordinator serving `/metrics`.
pub async fn running_stack_with_coordinator_behind_proxy(topology: &str) -> (Stack, TcpProxy) {
    let mut proxy = None;
    let stack = start_prepared(topology, "", false, |stack| {
        stack.serve_metrics = true;
        let between = TcpProxy::in_front_of(stack.nats.port()).expect("starting the proxy");
        stack.coordinator_nats_url = Some(between.nats_url());
        eprintln!(
            "the coordinator reaches NATS through {}",
            between.nats_url()
        );
        proxy = Some(between);
    })
    .await;
    (stack, proxy.expect("the proxy was started"))
}

async fn start(topology: &str, coordinator_toml: &str, nats_login: bool) -> Stack {
    start_prepared(topology, coordinator_toml, nats_login, |_| {}).await
}

/// Starts the stack, lets `prepare` change it (agent configs, settings) before any agent
/// starts, then starts the agents and the coordinator.
pub async fn start_prepared(
    topology: &str,
    coordinator_toml: &str,
    nats_login: bool,
    prepare: impl FnOnce(&mut Stack),
) -> Stack {
    let started = Instant::now();
    let mut stack = Stack::start(&StackOptions {
        nats_login,
        ..stack_options(topology)
    })
    .await
    .expect("starting the stack");
    eprintln!("stack up in {:?}", started.elapsed());
    prepare(&mut stack);
    with_agents_and_coordinator(stack, coordinator_toml).await
}

/// How the tests start a stack: 500 ms heartbeats, agents that take commands, open NATS.
pub fn stack_options(topology: &str) -> StackOptions<'_> {
    StackOptions {
        topology,
        heartbeat_interval: Duration::from_millis(500),
        commands: true,
        nats_login: false,
        database_password: None,
    }
}

/// Starts an agent beside every node of `stack` and the coordinator, logging each wait.
pub async fn with_agents_and_coordinator(mut stack: Stack, coordinator_toml: &str) -> Stack {
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

/// No test asks `canton-ops` for anything that takes this long; past it the call is stuck,
/// and the stack's logs say where (a test timeout would end the process without them).
const OPS_DEADLINE: Duration = Duration::from_secs(150);

/// `canton-ops <args>` of `organisation`'s operator, run to completion.
pub fn ops_output_of(stack: &Stack, organisation: &str, args: &[&str]) -> std::process::Output {
    tokio::task::block_in_place(|| {
        let child = stack
            .ops(organisation)
            .expect("canton-ops command")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running canton-ops");
        let pid = child.id();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(child.wait_with_output());
        });
        match finished.recv_timeout(OPS_DEADLINE) {
            Ok(output) => output.expect("running canton-ops"),
            Err(_) => {
                // Not reaped yet (the waiting thread still holds it), so the pid is still ours.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid")),
                    nix::sys::signal::Signal::SIGKILL,
                );
                panic!(
                    "canton-ops {} gave no answer within {OPS_DEADLINE:?}; the stack's logs:{}",
                    args.join(" "),
                    stack.log_tails(60)
                )
            }
        }
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

/// `canton-ops run backup --request-id <request_id> --param backup_set=<set> [--wait]`.
pub fn backup_args(request_id: &str, set: &str, wait: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "backup",
        "--request-id",
        request_id,
        "--param",
        &format!("backup_set={set}"),
    ]
    .map(str::to_owned)
    .to_vec();
    if wait {
        args.push("--wait".to_owned());
    }
    args
}

/// [`ops_json`] with owned arguments.
pub fn ops_json_owned(stack: &Stack, args: &[String]) -> (ExitStatus, Vec<Value>) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ops_json(stack, &args)
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

/// [`wait_for`] with a condition that has to await.
pub async fn wait_for_async<F: std::future::Future<Output = bool>>(
    what: &str,
    deadline: Duration,
    mut holds: impl FnMut() -> F,
) {
    let started = Instant::now();
    while !holds().await {
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
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

/// `/metrics` of a process started while the stack served metrics, parsed.
pub fn scrape(url: &str) -> Exposition {
    let (status, body) = tokio::task::block_in_place(|| prometheus_text::scrape(url))
        .unwrap_or_else(|e| panic!("scraping {url}: {e:#}"));
    assert_eq!(status, 200, "{url}: {body}");
    prometheus_text::parse(&body)
        .unwrap_or_else(|e| panic!("{url} is not Prometheus text: {e}\n{body}"))
}

/// `/metrics` of `node`'s agent.
pub fn agent_metrics(stack: &Stack, node: &str) -> Exposition {
    let url = stack.agents[node]
        .metrics_url
        .clone()
        .unwrap_or_else(|| panic!("agent {node} serves no metrics"));
    scrape(&url)
}

/// The sum of the samples of `name` with `labels` (0 when there is none yet).
pub fn metric(exposition: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition.values(name, labels).iter().sum()
}

/// Whether `node`'s command consumer has nothing left to deliver or to be answered.
pub async fn commands_settled(stack: &Stack, node: &str) -> bool {
    let names = stack.names();
    let node = sidecar_bus::NodeId::new(node).expect("a node id");
    let Ok(stream) = stack
        .network
        .jetstream
        .get_stream(names.command_stream())
        .await
    else {
        return false;
    };
    stream
        .consumer_info(names.agent_consumer(&node))
        .await
        .is_ok_and(|info| info.num_pending == 0 && info.num_ack_pending == 0)
}

/// The agent journal's records (`journal.log`: a 16-byte header, then per record its length,
/// its SHA-256 and its JSON).
pub fn journal_records(stack: &Stack, node: &str) -> Vec<Value> {
    let path = stack
        .work_dir()
        .join("agents")
        .join(node)
        .join("journal")
        .join("journal.log");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut records = Vec::new();
    let mut at = 16;
    while at + 36 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let start = at + 36;
        let end = start + len as usize;
        let Some(payload) = bytes.get(start..end) else {
            break;
        };
        records.push(serde_json::from_slice(payload).expect("a journal record is JSON"));
        at = end;
    }
    records
}

/// A finished backup lost nothing and repeated nothing: every node's command the coordinator
/// recorded as done is journalled done by its agent, and PostgreSQL's connection log shows one
/// dump per node of `nodes`.
pub fn assert_backup_complete_once(stack: &Stack, run: &Value, nodes: &[&str]) {
    assert_backup_complete(stack, run, nodes, &[]);
}

/// [`assert_backup_complete_once`], where the agents of `crashed` were SIGKILLed during the
/// run: a dump their crash interrupted is run again after the restart (a guarded action whose
/// effect is not there), so those nodes may show a second dump connection, never a third.
pub fn assert_backup_complete(stack: &Stack, run: &Value, nodes: &[&str], crashed: &[&str]) {
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let run_id = run["run_id"].as_str().expect("run id");
    let mut acked = 0;
    for step in run["steps"].as_array().expect("steps") {
        for node in step["nodes"].as_array().into_iter().flatten() {
            let (Some(id), Some(command)) = (node["node"].as_str(), node["command_id"].as_str())
            else {
                continue;
            };
            assert_eq!(node["status"], "done", "{node:#}");
            let journalled = journal_records(stack, id).iter().any(|record| {
                record["record"] == "done" && record["command_id"].as_str() == Some(command)
            });
            assert!(journalled, "{command} is acked but not in {id}'s journal");
            acked += 1;
        }
    }
    assert!(acked >= nodes.len(), "{acked} acked commands: {run:#}");
    let connections = dump_connections(stack, run_id);
    for node in nodes {
        let seen = connections.get(*node).map_or(0, Vec::len);
        let allowed = if crashed.contains(node) { 1..=2 } else { 1..=1 };
        assert!(
            allowed.contains(&seen),
            "{node} dumped {seen} times: {connections:?}"
        );
    }
    eprintln!("{run_id}: {acked} acked commands journalled, each node dumped once");
}

/// The seed in the environment variable `var`, or one from the clock (printed by the caller, so
/// a failing run can be replayed).
pub fn seed_from_env(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

/// One step of SplitMix64: a well-mixed 64-bit value from `seed`.
pub fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
