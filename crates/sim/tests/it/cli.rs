use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use canton_sim::network::NetworkEndpoints;

use crate::support::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_subcommand_prints_endpoints_and_stops_on_sigterm() {
    let pg = testkit::Postgres::shared_or_start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("net.toml");
    let name = testkit::unique_id("cli");
    std::fs::write(
        &file,
        format!(
            "name = \"{name}\"\n[[node]]\nid = \"sequencer1\"\nkind = \"sequencer\"\n[[node]]\nid = \"participant1\"\nkind = \"participant\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(testkit::binary_path("canton-sim").unwrap())
        .arg("network")
        .arg(&file)
        .arg("--postgres")
        .arg(format!(
            "postgres://{}@{}:{}",
            pg.user(),
            pg.host(),
            pg.port()
        ))
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // The endpoints are one pretty-printed JSON document ending with a closing brace line.
    let mut text = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "canton-sim network exited early"
        );
        text.push_str(&line);
        if line == "}\n" {
            break;
        }
    }
    let endpoints: NetworkEndpoints = serde_json::from_str(&text).unwrap();
    assert_eq!(endpoints.network, name);
    assert_eq!(endpoints.nodes.len(), 2);
    let control = canton_sim::ControlClient::new(endpoints.nodes[1].control);
    eventually("participant ready", Duration::from_secs(15), || async {
        control.info().await.ok().filter(|i| i.ready)
    })
    .await;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    assert!(status.success(), "{status:?}");
    for node in &endpoints.nodes {
        let pid = node.pid.unwrap();
        assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err());
    }
}
