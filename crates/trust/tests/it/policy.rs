use sidecar_trust::{ActionName, AgentPolicy, PolicyError};

#[test]
fn a_policy_file_grants_per_organisation_actions_on_nodes() {
    let text = r#"
        approval_required = ["restore", "stop"]

        [[rules]]
        organisation = "org-a"
        actions = ["*"]
        nodes = ["*"]

        [[rules]]
        organisation = "org-b"
        actions = ["disconnect", "reconnect"]
        nodes = ["p1"]
    "#;
    let policy: AgentPolicy = toml::from_str(text).unwrap();
    policy.validate().unwrap();

    assert!(policy.allows("org-a", ActionName::Restore, "p1"));
    assert!(policy.allows("org-b", ActionName::Disconnect, "p1"));
    assert!(!policy.allows("org-b", ActionName::Backup, "p1"));
    assert!(!policy.allows("org-b", ActionName::Disconnect, "p2"));
    assert!(!policy.allows("org-c", ActionName::Probe, "p1"));
    assert!(
        policy.allows("org-b", ActionName::Fence, "p1"),
        "fences only protect the node"
    );
    assert!(policy.needs_approval(ActionName::Stop));
    assert!(
        !policy.needs_approval(ActionName::ImportPartyAcs),
        "explicit list replaces the default"
    );
}

#[test]
fn the_default_approval_list_is_every_destructive_action() {
    let policy = AgentPolicy::own_organisation("org-a");
    for action in ActionName::ALL {
        assert_eq!(
            policy.needs_approval(action),
            action.destructive_by_default(),
            "{action}"
        );
    }
    assert!(policy.needs_approval(ActionName::Restore));
    assert!(!policy.needs_approval(ActionName::Backup));
}

#[test]
fn an_unknown_action_name_is_refused_naming_it() {
    let text = r#"
        [[rules]]
        organisation = "org-a"
        actions = ["bakcup"]
        nodes = ["*"]
    "#;
    let policy: AgentPolicy = toml::from_str(text).unwrap();
    let error = policy.validate().unwrap_err();
    assert!(matches!(&error, PolicyError::UnknownAction { action, .. } if action == "bakcup"));
    assert!(error.to_string().contains("org-a"));
}

#[test]
fn action_names_round_trip() {
    for action in ActionName::ALL {
        assert_eq!(ActionName::parse(action.as_str()), Some(action));
    }
}
