//! Helpers for the tests of `deploy/`: where the files are, YAML read into `serde_json`
//! values (with anchors, aliases and merge keys resolved, as Docker Compose and kustomize
//! resolve them), and the external tools the tests run.
//!
//! The tests themselves are in `tests/it`; this crate ships nothing.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{tool} not found: {hint}")]
    MissingTool { tool: String, hint: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    testkit::workspace_root().join("deploy")
}

/// Every file below `dir` whose name ends in one of `extensions`, sorted.
pub fn files_with_extensions(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current).map_err(|source| Error::Read {
            path: current.clone(),
            source,
        })?;
        for entry in entries {
            let path = entry
                .map_err(|source| Error::Read {
                    path: current.clone(),
                    source,
                })?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The documents of a YAML file (a `---`-separated stream), as JSON values.
pub fn load_yaml(path: &Path) -> Result<Vec<Value>> {
    parse_yaml(&read_text(path)?).map_err(|detail| Error::Parse {
        path: path.to_path_buf(),
        detail,
    })
}

/// The documents of a YAML stream as JSON values. Keys must be scalars; `<<` merge keys are
/// applied (explicit keys win over merged ones, earlier merged maps over later ones).
pub fn parse_yaml(text: &str) -> std::result::Result<Vec<Value>, String> {
    let documents = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    documents.iter().map(to_json).collect()
}

fn to_json(yaml: &Yaml) -> std::result::Result<Value, String> {
    Ok(match yaml {
        Yaml::Real(text) => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(text.clone()), Value::Number),
        Yaml::Integer(n) => Value::from(*n),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Null => Value::Null,
        Yaml::Array(items) => Value::Array(
            items
                .iter()
                .map(to_json)
                .collect::<std::result::Result<_, _>>()?,
        ),
        Yaml::Hash(hash) => {
            let mut explicit = Map::new();
            let mut merged = Map::new();
            for (key, value) in hash {
                let key = scalar_key(key)?;
                if key == "<<" {
                    let sources = match value {
                        Yaml::Array(items) => items.iter().collect::<Vec<_>>(),
                        single => vec![single],
                    };
                    for source in sources {
                        let Value::Object(entries) = to_json(source)? else {
                            return Err("a merge key (<<) must name a mapping".to_owned());
                        };
                        for (k, v) in entries {
                            merged.entry(k).or_insert(v);
                        }
                    }
                } else {
                    explicit.insert(key, to_json(value)?);
                }
            }
            for (k, v) in explicit {
                merged.insert(k, v);
            }
            Value::Object(merged)
        }
        Yaml::Alias(_) => return Err("an alias that names no anchor".to_owned()),
        Yaml::BadValue => return Err("a value YAML cannot represent".to_owned()),
    })
}

fn scalar_key(key: &Yaml) -> std::result::Result<String, String> {
    match key {
        Yaml::String(s) | Yaml::Real(s) => Ok(s.clone()),
        Yaml::Integer(n) => Ok(n.to_string()),
        Yaml::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("a mapping key that is not a scalar: {other:?}")),
    }
}

/// An external program: `env_var` when set, else the project venv's, else `PATH`.
pub fn tool(name: &str, env_var: &str, hint: &str) -> Result<PathBuf> {
    let candidates = [
        std::env::var_os(env_var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        Some(testkit::workspace_root().join(".venv/bin").join(name)),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .or_else(|| on_path(name))
        .ok_or_else(|| Error::MissingTool {
            tool: name.to_owned(),
            hint: hint.to_owned(),
        })
}

pub use testkit::on_path;

#[cfg(test)]
mod tests {
    use super::parse_yaml;
    use serde_json::json;

    #[test]
    fn merge_keys_give_way_to_explicit_keys_and_anchors_resolve() {
        let docs = parse_yaml(
            "base: &base {a: 1, b: 2}\nother: &other {b: 3, c: 4}\n\
             child:\n  <<: [*base, *other]\n  a: 10\nlist: [*base]\n---\nsecond: true\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["child"], json!({"a": 10, "b": 2, "c": 4}));
        assert_eq!(docs[0]["list"], json!([{"a": 1, "b": 2}]));
        assert_eq!(docs[1], json!({"second": true}));
    }

    #[test]
    fn broken_yaml_is_an_error() {
        assert!(parse_yaml("a: [1, 2\n").is_err());
        assert!(parse_yaml("a: *missing\n").is_err());
    }
}
