//! Extras tier: Debian's Prometheus (`scripts/install-deps.sh extras` installs it) scrapes an
//! agent's `/metrics` and answers queries for its series through the HTTP API, so the text is
//! what a real Prometheus accepts, not only what our own reader parses.
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::prometheus_text;
use e2e::stack::{Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::Value;
use testkit::ChildProcess;

const TEST: &str = "extras_prometheus_scrapes_an_agent_and_answers_queries_for_its_series";

/// One synchronizer and one participant: enough agents to scrape.
const TOPOLOGY: &str = r#"
name = "scrape"
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
"#;

/// `PROMETHEUS_BIN`, else `prometheus` on `PATH` (Debian puts it in /usr/bin).
fn prometheus_binary() -> Option<PathBuf> {
    std::env::var_os("PROMETHEUS_BIN")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .filter(|path| path.is_file())
        .or_else(|| testkit::on_path("prometheus"))
}

/// `GET /api/v1/query?query=<query>`: the `data.result` vector of a successful answer.
fn query(base: &str, query: &str) -> anyhow::Result<Vec<Value>> {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    let (status, body) = prometheus_text::scrape(&format!("{base}/api/v1/query?query={encoded}"))?;
    anyhow::ensure!(status == 200, "query {query}: HTTP {status}: {body}");
    let answer: Value = serde_json::from_str(&body)?;
    anyhow::ensure!(answer["status"] == "success", "query {query}: {answer}");
    Ok(answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The sample value of one result of an instant query (`"value": [time, "text"]`).
fn sample_value(result: &Value) -> Option<f64> {
    result["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extras_prometheus_scrapes_an_agent_and_answers_queries_for_its_series() {
    let Some(prometheus) = prometheus_binary() else {
        testkit::skip(
            TEST,
            "no prometheus binary (Debian package `prometheus`, installed by \
             `scripts/install-deps.sh extras`; or set PROMETHEUS_BIN)",
        );
        return;
    };
    let mut stack = Stack::start(&StackOptions {
        topology: TOPOLOGY,
        heartbeat_interval: Duration::from_millis(500),
        commands: false,
        nats_login: false,
        database_password: None,
    })
    .await
    .expect("starting the stack");
    stack.serve_metrics = true;
    stack
        .start_agents(Duration::from_secs(60))
        .await
        .expect("starting the agents");
    let agent_url = stack.agents["participant1"]
        .metrics_url
        .clone()
        .expect("agent metrics url");
    let target = agent_url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .expect("metrics url shape")
        .to_owned();

    let dir = stack.work_dir().join("prometheus");
    std::fs::create_dir_all(&dir).expect("prometheus dir");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: canton-agent\n    static_configs:\n      \
             - targets: [\"{target}\"]\n"
        ),
    )
    .expect("writing the scrape configuration");
    let listen = format!("127.0.0.1:{}", testkit::free_port().expect("free port"));
    let mut command = std::process::Command::new(&prometheus);
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"));
    let mut server = ChildProcess::spawn(
        "prometheus",
        command,
        &dir.join("prometheus.log"),
        Signal::SIGTERM,
    )
    .expect("starting prometheus");
    let base = format!("http://{listen}");

    // Scrapes every second; the first ones happen once the server has loaded its config.
    let started = Instant::now();
    let published = loop {
        let answer =
            tokio::task::block_in_place(|| query(&base, "canton_agent_heartbeats_published_total"));
        if let Ok(results) = &answer
            && let Some(value) = results.iter().find_map(sample_value)
            && value >= 1.0
        {
            break value;
        }
        assert!(
            server.is_running(),
            "prometheus exited: {}",
            server.log_tail(30)
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no heartbeat counter through the query API within 60 s; last answer {answer:?}; \
             log:\n{}",
            server.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "prometheus answered canton_agent_heartbeats_published_total = {published} after {:?}",
        started.elapsed()
    );

    // The scrape itself went well, and every series name our own reader sees, Prometheus
    // stored too (waiting for a scrape after ours, since new series can appear in between).
    let up = tokio::task::block_in_place(|| query(&base, "up{job=\"canton-agent\"}"))
        .expect("querying up");
    assert_eq!(
        up.iter().filter_map(sample_value).collect::<Vec<_>>(),
        [1.0],
        "{up:?}"
    );
    let (status, text) =
        tokio::task::block_in_place(|| prometheus_text::scrape(&agent_url)).expect("scraping");
    assert_eq!(status, 200);
    let ours: BTreeSet<String> = prometheus_text::parse(&text)
        .expect("our reader parses /metrics")
        .samples
        .into_iter()
        .map(|sample| sample.name)
        .collect();
    let started = Instant::now();
    loop {
        let names = tokio::task::block_in_place(|| {
            query(&base, "count by (__name__) ({job=\"canton-agent\"})")
        })
        .expect("querying the series names");
        let stored: BTreeSet<String> = names
            .iter()
            .filter_map(|r| r["metric"]["__name__"].as_str().map(str::to_owned))
            .collect();
        let missing: Vec<&String> = ours.difference(&stored).collect();
        if missing.is_empty() {
            eprintln!(
                "prometheus stored all {} series names of the agent after {:?}",
                ours.len(),
                started.elapsed()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "series Prometheus did not store within 30 s: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Prometheus's own linter accepts the exposition (promtool ships in the same package).
    if let Some(promtool) = testkit::on_path("promtool") {
        use std::io::Write as _;
        let mut check = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starting promtool");
        check
            .stdin
            .take()
            .expect("promtool stdin")
            .write_all(text.as_bytes())
            .expect("feeding promtool");
        let output = check.wait_with_output().expect("promtool");
        assert!(
            output.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert!(
        server.stop(Duration::from_secs(10)),
        "prometheus did not stop cleanly"
    );
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}
