//! Reads the shared fact files (`canton-3.4-wire-appendix.md`, `canton-admin-api.md`) that the
//! .proto files were written from. They live in `shared/` beside the repository; set
//! `CANTON_SHARED_DIR` to read them from elsewhere.

use std::collections::BTreeMap;
use std::path::PathBuf;

pub fn shared_file(name: &str) -> String {
    let dir = std::env::var_os("CANTON_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let path = dir.join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read the fact file {} ({error}); the wire tests compare our .proto files with it. \
             Put the shared/ folder beside the repository or set CANTON_SHARED_DIR",
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
