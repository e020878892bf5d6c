//! Hook commands as argv templates: `["systemctl", "stop", "canton-{node}"]`. Placeholders are
//! `{name}`; `{{` and `}}` stand for literal braces. Unknown placeholders are refused when the
//! template is made, so a typo fails at configuration time, not during a runbook.

use crate::child::ChildCommand;
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandTemplate {
    key: String,
    argv: Vec<String>,
}

impl CommandTemplate {
    /// `key` names the configuration key in errors (`[lifecycle] stop`).
    pub fn new(key: &str, argv: Vec<String>, placeholders: &[&str]) -> Result<Self> {
        if argv.first().is_none_or(|program| program.trim().is_empty()) {
            return Err(Error::config(format!(
                "{key} is empty; give the command as an argv list, e.g. [\"systemctl\", \"stop\", \"canton-{{node}}\"]"
            )));
        }
        for arg in &argv {
            for name in placeholder_names(key, arg)? {
                if !placeholders.contains(&name.as_str()) {
                    return Err(Error::config(format!(
                        "{key}: unknown placeholder {{{name}}} in {arg:?}; known: {}",
                        placeholders
                            .iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
        Ok(Self {
            key: key.to_owned(),
            argv,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The command with placeholders replaced by `values`.
    pub fn render(&self, what: impl Into<String>, values: &[(&str, &str)]) -> ChildCommand {
        let mut argv = self.argv.iter().map(|arg| substitute(arg, values));
        let program = argv.next().unwrap_or_default();
        ChildCommand::new(what, program).args(argv)
    }
}

fn placeholder_names(key: &str, arg: &str) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                        _ => {
                            return Err(Error::config(format!(
                                "{key}: unclosed or malformed placeholder in {arg:?}; write {{name}}, or {{{{ for a literal brace"
                            )));
                        }
                    }
                }
                names.push(name);
            }
            '}' => {
                return Err(Error::config(format!(
                    "{key}: stray '}}' in {arg:?}; write }}}} for a literal brace"
                )));
            }
            _ => {}
        }
    }
    Ok(names)
}

fn substitute(arg: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                let value = values
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| *value)
                    .unwrap_or_default();
                out.push_str(value);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn placeholders_are_replaced_and_braces_escaped() {
        let template = CommandTemplate::new(
            "[lifecycle] stop",
            argv(&["docker", "stop", "canton-{node}", "{{literal}}"]),
            &["node"],
        )
        .unwrap();
        let command = template.render("stop", &[("node", "p1")]);
        assert_eq!(command.display(), "docker stop canton-p1 {literal}");
    }

    #[test]
    fn unknown_placeholders_and_empty_commands_are_refused_naming_the_key() {
        let error =
            CommandTemplate::new("[lifecycle] stop", argv(&["x", "{nod}"]), &["node"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("[lifecycle] stop"), "{error}");
        assert!(error.to_string().contains("{nod}"), "{error}");
        let error = CommandTemplate::new("[lifecycle] start", vec![], &[]).unwrap_err();
        assert!(
            error.to_string().contains("[lifecycle] start is empty"),
            "{error}"
        );
        let error =
            CommandTemplate::new("[backup] upload", argv(&["x", "{node"]), &["node"]).unwrap_err();
        assert!(error.to_string().contains("unclosed"), "{error}");
    }
}
