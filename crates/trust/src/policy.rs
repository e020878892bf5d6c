use std::collections::BTreeSet;

use crate::ActionName;

/// An agent's local policy: which organisation's coordinator may run which actions on which of
/// its nodes, and which actions need a signed operator approval. Loaded from the agent's
/// configuration file; a command outside it is rejected as `NotAllowedByPolicy`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPolicy {
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
    /// Actions that need an `OperatorApproval` signed by an operator key of the commanding
    /// organisation. Defaults to every destructive action.
    #[serde(default = "default_approval_required")]
    pub approval_required: BTreeSet<ActionName>,
}

/// One grant: `organisation` may run `actions` on `nodes`. `"*"` in `actions` or `nodes`
/// matches everything.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    pub organisation: String,
    pub actions: Vec<String>,
    pub nodes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "policy rule {rule} (organisation {organisation}) names unknown action {action:?}; use one of the Action names, e.g. \"backup\", or \"*\""
    )]
    UnknownAction {
        rule: usize,
        organisation: String,
        action: String,
    },
    #[error("policy rule {rule} has an empty organisation, action list or node list")]
    EmptyRule { rule: usize },
}

fn default_approval_required() -> BTreeSet<ActionName> {
    ActionName::ALL
        .into_iter()
        .filter(|action| action.destructive_by_default())
        .collect()
}

impl AgentPolicy {
    /// The usual policy: the agent's own organisation may run everything on every node, and
    /// destructive actions need an approval.
    pub fn own_organisation(organisation: &str) -> Self {
        Self {
            rules: vec![PolicyRule {
                organisation: organisation.to_owned(),
                actions: vec!["*".to_owned()],
                nodes: vec!["*".to_owned()],
            }],
            approval_required: default_approval_required(),
        }
    }

    /// Checks the names in every rule; call once after loading.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.organisation.is_empty() || rule.actions.is_empty() || rule.nodes.is_empty() {
                return Err(PolicyError::EmptyRule { rule: index });
            }
            for action in &rule.actions {
                if action != "*" && ActionName::parse(action).is_none() {
                    return Err(PolicyError::UnknownAction {
                        rule: index,
                        organisation: rule.organisation.clone(),
                        action: action.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether `organisation` may run `action` on `node`. Fences and revokes only protect the
    /// node, so every organisation whose coordinator may run anything here may send them.
    pub fn allows(&self, organisation: &str, action: ActionName, node: &str) -> bool {
        self.rules.iter().any(|rule| {
            rule.organisation == organisation
                && rule.nodes.iter().any(|n| n == "*" || n == node)
                && (matches!(action, ActionName::Fence | ActionName::Revoke)
                    || rule
                        .actions
                        .iter()
                        .any(|a| a == "*" || a == action.as_str()))
        })
    }

    pub fn needs_approval(&self, action: ActionName) -> bool {
        self.approval_required.contains(&action)
    }
}
