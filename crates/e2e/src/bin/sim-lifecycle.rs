//! Lifecycle hook for agents beside canton-sim nodes: asks the test orchestrator to stop or
//! start a node, or reports its status, as `systemctl stop|start|is-active` would.
//!
//! `sim-lifecycle <orchestrator url> stop|start|status <node>`. Exit status: 0 done (status:
//! running), 3 status: stopped (the `is-active` convention), 1 failure with the reason on stderr.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: sim-lifecycle <orchestrator url> stop|start|status <node>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, verb, node] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let method = match verb.as_str() {
        "stop" | "start" => "POST",
        "status" => "GET",
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match request(url, method, &format!("/nodes/{node}/{verb}")) {
        Ok((200, body)) if verb == "status" && body.trim() == "stopped" => {
            println!("{node}: stopped");
            ExitCode::from(3)
        }
        Ok((200, body)) => {
            println!("{node}: {}", body.trim());
            ExitCode::SUCCESS
        }
        Ok((code, body)) => {
            eprintln!("sim-lifecycle: {verb} {node}: HTTP {code}: {}", body.trim());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("sim-lifecycle: {verb} {node} via {url}: {error}");
            ExitCode::FAILURE
        }
    }
}

fn request(url: &str, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let authority = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(authority)?;
    // A start waits for the node to be ready, which takes seconds on a loaded machine.
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
