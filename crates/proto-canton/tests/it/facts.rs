//! Reads the fact files (`canton-3.4-wire-appendix.md`, `canton-admin-api.md`) that the .proto
//! files were written from. A copy lives in `crates/proto-canton/facts/` so the wire tests run on
//! any clean checkout; `CANTON_SHARED_DIR` points them at another copy, and when the team's
//! `shared/` folder sits beside the repository a test checks that our copy has not drifted.

use std::collections::BTreeMap;
use std::path::PathBuf;

pub const FACT_FILES: [&str; 2] = ["canton-3.4-wire-appendix.md", "canton-admin-api.md"];

pub fn vendored_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("facts")
}

/// The team's shared folder beside the repository, when present.
pub fn team_shared_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    dir.join(FACT_FILES[0]).is_file().then_some(dir)
}

pub fn shared_file(name: &str) -> String {
    let dir = std::env::var_os("CANTON_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(vendored_dir);
    let path = dir.join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read the fact file {} ({error}); the wire tests compare our .proto files with it. \
             Restore crates/proto-canton/facts/ or set CANTON_SHARED_DIR",
            path.display()
        )
    })
}

pub fn appendix() -> String {
    shared_file("canton-3.4-wire-appendix.md")
}

pub fn notes() -> String {
    shared_file("canton-admin-api.md")
}

/// A message's or enum's entries as the appendix writes them: `name = 3 : rep string` for
/// fields, `NAME=3` for enum values.
#[derive(Debug, Default)]
pub struct AppendixTypes {
    pub messages: BTreeMap<String, Vec<String>>,
    pub enums: BTreeMap<String, Vec<String>>,
}

pub fn appendix_types(text: &str) -> AppendixTypes {
    let mut types = AppendixTypes::default();
    let mut in_messages = false;
    for line in text.lines() {
        if line.starts_with("## A.2") {
            in_messages = true;
            continue;
        }
        if !in_messages {
            continue;
        }
        if let Some(rest) = line.strip_prefix("- enum `") {
            let (name, values) = rest.split_once("`: ").expect("enum line has a name");
            let values = values.split(", ").map(str::to_owned).collect();
            types.enums.entry(name.to_owned()).or_insert(values);
        } else if let Some(rest) = line.strip_prefix("- `") {
            let (name, fields) = rest.split_once("`: ").expect("message line has a name");
            let fields = if fields == "(empty)" {
                Vec::new()
            } else {
                fields.split("; ").map(str::to_owned).collect()
            };
            types.messages.entry(name.to_owned()).or_insert(fields);
        }
    }
    types
}

/// Every `/package.Service/Method` path listed in the appendix's section A.1.
pub fn appendix_paths(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("- `/"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(path, _)| format!("/{path}"))
        .collect()
}

#[test]
fn vendored_facts_match_the_team_copy_when_present() {
    let Some(shared) = team_shared_dir() else {
        eprintln!(
            "SKIP: no shared/ folder beside the repository; the vendored facts are used as they are"
        );
        return;
    };
    for name in FACT_FILES {
        let ours = std::fs::read_to_string(vendored_dir().join(name)).unwrap();
        let team = std::fs::read_to_string(shared.join(name)).unwrap();
        assert!(
            ours == team,
            "crates/proto-canton/facts/{name} differs from {}: copy it over",
            shared.display()
        );
    }
}
