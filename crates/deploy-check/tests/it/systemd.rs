//! The systemd units: `systemd-analyze verify` accepts them (with the programs they start
//! pointed at the built binaries), and each carries the hardening the deploy README promises.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use deploy_check::{deploy_dir, files_with_extensions, on_path, read_text};

use crate::support::describe;

/// `[Section] Key=Value` lines of a unit; repeated keys keep every value.
fn directives(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut section = String::new();
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("a unit line without '=': {line:?}"));
        assert!(!section.is_empty(), "{line:?} stands before any section");
        found
            .entry(format!("{section}.{}", key.trim()))
            .or_default()
            .push(value.trim().to_owned());
    }
    found
}

const HARDENING: [(&str, &str); 9] = [
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("CapabilityBoundingSet", ""),
    ("SystemCallFilter", "@system-service"),
];

fn units() -> Vec<PathBuf> {
    files_with_extensions(&deploy_dir().join("systemd"), &["service"]).unwrap()
}

#[test]
fn systemd_units_are_hardened_and_run_unprivileged() {
    let units = units();
    assert_eq!(units.len(), 3, "{units:?}");
    for unit in &units {
        let directives = directives(&read_text(unit).unwrap());
        let name = unit.file_name().unwrap().to_string_lossy();
        for (key, value) in HARDENING {
            let values = directives
                .get(&format!("Service.{key}"))
                .cloned()
                .unwrap_or_default();
            assert!(
                values.iter().any(|v| v == value),
                "{name}: {key}={value} (has {values:?})"
            );
        }
        let user = &directives["Service.User"][0];
        assert!(user != "root" && user != "0", "{name} runs as {user}");
        assert!(
            directives.contains_key("Service.ExecStart"),
            "{name} starts something"
        );
        assert!(
            directives.contains_key("Install.WantedBy"),
            "{name} can be enabled"
        );
    }
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let Some(analyze) = on_path("systemd-analyze") else {
        // Parsing alone (the test above) is what remains without systemd.
        eprintln!("systemd-analyze not installed: units checked by parsing only");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let programs = [
        (
            "/usr/local/bin/canton-agent",
            testkit::binary_path("canton-agent").unwrap(),
        ),
        (
            "/usr/local/bin/canton-coordinator",
            testkit::binary_path("canton-coordinator").unwrap(),
        ),
        (
            "/usr/local/bin/nats-server",
            testkit::nats_server_binary().unwrap(),
        ),
    ];
    let mut names = Vec::new();
    for unit in units() {
        let text = programs
            .iter()
            .fold(read_text(&unit).unwrap(), |text, (path, built)| {
                text.replace(path, &built.display().to_string())
            });
        // A template is verified as one of its instances.
        let name = unit
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace("@.service", "@participant1.service");
        std::fs::write(dir.path().join(&name), text).unwrap();
        names.push(dir.path().join(name));
    }
    let output = Command::new(analyze)
        .arg("verify")
        .args(&names)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Lines about the machine's own units (a missing dependency of the host) are not ours.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|line| {
            names
                .iter()
                .any(|n| line.contains(&*n.file_name().unwrap().to_string_lossy()))
        })
        .collect();
    assert!(
        output.status.success() && ours.is_empty(),
        "{}",
        describe(&output)
    );
}
