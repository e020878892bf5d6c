//! The runbooks an operator can start, as step lists in the `Runbook` DSL, with their node
//! sets taken from the inventory (the nodes KV) and narrowed by StartRun parameters.
//!
//! Every runbook here that changes its nodes claims them; `dr-timestamp` only reads.

use std::collections::BTreeMap;
use std::time::Duration;

use proto_sidecar::NodeState;
use sidecar_core::{ActionKind, ActionSpec, Millis, NodeKind, NodeRef, Runbook};

/// Runbook names the catalogue knows.
/// (`restore` is built by the API from a recorded backup set, see `backup_sets`.)
pub const RUNBOOKS: [&str; 9] = [
    "backup",
    "disconnect",
    "dr-timestamp",
    "ignore-events",
    "network-dr",
    "reconnect",
    "repair-lost-synchronizer",
    "restore",
    "unignore-events",
];

/// A request the catalogue cannot turn into a runbook; nothing was started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    #[error("unknown runbook {0:?}; the catalogue has {known}", known = RUNBOOKS.join(", "))]
    UnknownRunbook(String),
    #[error(
        "node {node:?} is not in the inventory of organisation {organisation}; `canton-ops nodes` lists the known nodes"
    )]
    UnknownNode { node: String, organisation: String },
    #[error("parameter {key}: {detail}")]
    BadParameter { key: String, detail: String },
    #[error("runbook {runbook} selects no node; start the agents or name nodes of the right kind")]
    NoNodes { runbook: String },
}

/// One logical node of the organisation (HA replicas count once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventoryNode {
    pub id: String,
    pub kind: NodeKind,
    /// For an app: the participant it reads from.
    pub participant: Option<String>,
    /// For a Splice app: `sv` or `validator`.
    pub app_role: Option<String>,
    pub replicas: Vec<String>,
}

/// The logical nodes of one organisation, from the node states agents write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    pub organisation: String,
    pub nodes: BTreeMap<String, InventoryNode>,
}

impl Inventory {
    /// The organisation's nodes among `states`: those naming the organisation, and those
    /// naming none whose node the signed network configuration lists for it (`configured`).
    pub fn from_states<'a>(
        organisation: &str,
        configured: &[String],
        states: impl IntoIterator<Item = &'a NodeState>,
    ) -> Self {
        let mut nodes: BTreeMap<String, InventoryNode> = BTreeMap::new();
        for state in states {
            if !is_ours(organisation, configured, state) {
                continue;
            }
            let Some(kind) = node_kind(state.kind()) else {
                continue;
            };
            let entry = nodes
                .entry(state.node.clone())
                .or_insert_with(|| InventoryNode {
                    id: state.node.clone(),
                    kind,
                    participant: None,
                    app_role: None,
                    replicas: Vec::new(),
                });
            if !state.participant.is_empty() {
                entry.participant = Some(state.participant.clone());
            }
            if !state.app_role.is_empty() {
                entry.app_role = Some(state.app_role.clone());
            }
            if !state.replica.is_empty() {
                entry
                    .replicas
                    .push(format!("{}.{}", state.node, state.replica));
            }
        }
        Self {
            organisation: organisation.to_owned(),
            nodes,
        }
    }

    fn node_ref(node: &InventoryNode) -> NodeRef {
        NodeRef::new(&node.id, node.kind)
    }
}

/// The id an agent serves: `<node>` or, for an HA replica, `<node>.<replica>`.
pub fn state_node_id(state: &NodeState) -> String {
    if state.replica.is_empty() {
        state.node.clone()
    } else {
        format!("{}.{}", state.node, state.replica)
    }
}

/// Whether a node state belongs to `organisation`: it names it, or names none and the signed
/// network configuration lists its node (or, for a replica, the replica) for it.
pub fn is_ours(organisation: &str, configured: &[String], state: &NodeState) -> bool {
    state.organisation == organisation
        || state.organisation.is_empty()
            && (configured.contains(&state.node) || configured.contains(&state_node_id(state)))
}

pub fn node_kind(kind: proto_sidecar::NodeKind) -> Option<NodeKind> {
    match kind {
        proto_sidecar::NodeKind::Participant => Some(NodeKind::Participant),
        proto_sidecar::NodeKind::Sequencer => Some(NodeKind::Sequencer),
        proto_sidecar::NodeKind::Mediator => Some(NodeKind::Mediator),
        proto_sidecar::NodeKind::App => Some(NodeKind::App),
        proto_sidecar::NodeKind::Unspecified => None,
    }
}

/// A runbook ready to start or plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    pub runbook: Runbook,
    /// Every logical node the runbook touches.
    pub nodes: Vec<String>,
    pub claims_nodes: bool,
    pub warnings: Vec<String>,
}

/// What a StartRun or Plan asked for.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub runbook: &'a str,
    /// Explicit node selection; empty means every node of the kinds the runbook uses.
    pub nodes: &'a [String],
    pub parameters: &'a BTreeMap<String, String>,
    /// The run id (it names the backup set when no `backup_set` is given).
    pub run_id: &'a str,
}

/// Builds the runbook for a request against an inventory.
pub fn build(request: &Request<'_>, inventory: &Inventory) -> Result<Built, CatalogueError> {
    let params = Params(request.parameters);
    let selected = select(request, inventory)?;
    let runbook = match request.runbook {
        "backup" => backup(&params, &selected, request.run_id)?,
        "disconnect" => disconnect(&params, &selected)?,
        "reconnect" => reconnect(&params, &selected)?,
        "dr-timestamp" => dr_timestamp(&params, &selected)?,
        "ignore-events" => event_repair(&params, &selected, ActionKind::IgnoreEvents)?,
        "unignore-events" => event_repair(&params, &selected, ActionKind::UnignoreEvents)?,
        "network-dr" => network_dr(&params, &selected)?,
        "repair-lost-synchronizer" => repair_lost_synchronizer(&params, &selected)?,
        other => return Err(CatalogueError::UnknownRunbook(other.to_owned())),
    };
    let mut nodes: Vec<String> = runbook
        .steps
        .iter()
        .flat_map(|step| step.nodes().iter().map(|node| node.id.clone()))
        .collect();
    nodes.sort();
    nodes.dedup();
    if nodes.is_empty() {
        return Err(CatalogueError::NoNodes {
            runbook: request.runbook.to_owned(),
        });
    }
    let mut warnings = Vec::new();
    for node in &selected {
        if node.kind == NodeKind::App
            && request.runbook == "backup"
            && let Some(participant) = &node.participant
            && !selected.iter().any(|other| &other.id == participant)
        {
            warnings.push(format!(
                "app {} is backed up without its participant {participant}",
                node.id
            ));
        }
    }
    Ok(Built {
        runbook,
        nodes,
        claims_nodes: request.runbook != "dr-timestamp",
        warnings,
    })
}

fn select<'i>(
    request: &Request<'_>,
    inventory: &'i Inventory,
) -> Result<Vec<&'i InventoryNode>, CatalogueError> {
    if request.nodes.is_empty() {
        return Ok(inventory.nodes.values().collect());
    }
    request
        .nodes
        .iter()
        .map(|id| {
            // A replica id selects its logical node: HA replicas run once.
            let logical = id.split('.').next().unwrap_or(id);
            inventory
                .nodes
                .get(logical)
                .ok_or_else(|| CatalogueError::UnknownNode {
                    node: id.clone(),
                    organisation: inventory.organisation.clone(),
                })
        })
        .collect()
}

struct Params<'a>(&'a BTreeMap<String, String>);

impl Params<'_> {
    fn text(&self, key: &str, default: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }

    fn duration_ms(&self, key: &str, default: Duration) -> Result<Millis, CatalogueError> {
        let duration = match self.0.get(key) {
            None => default,
            Some(text) => {
                humantime::parse_duration(text).map_err(|error| CatalogueError::BadParameter {
                    key: key.to_owned(),
                    detail: format!("{text:?} is not a duration like 90s or 5m ({error})"),
                })?
            }
        };
        Millis::try_from(duration.as_millis()).map_err(|_| CatalogueError::BadParameter {
            key: key.to_owned(),
            detail: "duration too long".to_owned(),
        })
    }

    fn flag(&self, key: &str, default: bool) -> Result<bool, CatalogueError> {
        match self.0.get(key).map(String::as_str) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(CatalogueError::BadParameter {
                key: key.to_owned(),
                detail: format!("{other:?} must be true or false"),
            }),
        }
    }
}

fn of_kind(nodes: &[&InventoryNode], kinds: &[NodeKind]) -> Vec<NodeRef> {
    nodes
        .iter()
        .filter(|node| kinds.contains(&node.kind))
        .map(|node| Inventory::node_ref(node))
        .collect()
}

/// DESIGN §6: apps (done before their participants' dumps start) → participants ∥ mediators
/// → barrier → sequencers → verify every manifest. Each node's dump includes its identities.
/// Parameters: `backup_set` (default: the run id), `target`, `timeout` (per step).
fn backup(
    params: &Params<'_>,
    nodes: &[&InventoryNode],
    run_id: &str,
) -> Result<Runbook, CatalogueError> {
    let backup_set = params.text("backup_set", run_id);
    let timeout = params.duration_ms("timeout", Duration::from_secs(1_800))?;
    let dump = ActionSpec::new(ActionKind::Backup)
        .param("backup_set", &backup_set)
        .param("target", &params.text("target", ""))
        .param("include_identities", "true");
    let verify = ActionSpec::new(ActionKind::Verify).param("backup_set", &backup_set);
    let every = of_kind(
        nodes,
        &[
            NodeKind::App,
            NodeKind::Participant,
            NodeKind::Mediator,
            NodeKind::Sequencer,
        ],
    );
    Ok(Runbook::new("backup")
        .action_spec("apps", dump.clone(), &of_kind(nodes, &[NodeKind::App]))
        .timeout_ms(timeout)
        .done()
        .action_spec(
            "members",
            dump.clone(),
            &of_kind(nodes, &[NodeKind::Participant, NodeKind::Mediator]),
        )
        .timeout_ms(timeout)
        .done()
        .barrier("members-done")
        .action_spec("sequencers", dump, &of_kind(nodes, &[NodeKind::Sequencer]))
        .timeout_ms(timeout)
        .done()
        .action_spec("verify", verify, &every)
        .timeout_ms(timeout)
        .done())
}

/// Participants leave a synchronizer together: one attempt each within `deadline` (default
/// 60 s); a node that does not answer in time is reported and the others reconnect.
/// Parameters: `synchronizer_alias` (empty: every synchronizer), `deadline`, `compensate`.
fn disconnect(params: &Params<'_>, nodes: &[&InventoryNode]) -> Result<Runbook, CatalogueError> {
    let deadline = params.duration_ms("deadline", Duration::from_secs(60))?;
    let alias = params.text("synchronizer_alias", "");
    let participants = of_kind(nodes, &[NodeKind::Participant]);
    let step = Runbook::new("disconnect")
        .action_spec(
            "disconnect",
            ActionSpec::new(ActionKind::Disconnect).param("synchronizer_alias", &alias),
            &participants,
        )
        .timeout_ms(deadline)
        .retry(1, 0);
    let step = if params.flag("compensate", true)? {
        step.compensate_with(ActionKind::Reconnect)
    } else {
        step
    };
    let runbook = step.done();
    if !pinned_manual_connect(params, &alias)? {
        return Ok(runbook);
    }
    // Marked manual-connect, the participants stay away even when they restart; `reconnect`
    // with the same parameter clears the mark first.
    Ok(runbook
        .action_spec(
            "pin-manual-connect",
            manual_connect(&alias, true),
            &participants,
        )
        .timeout_ms(deadline)
        .done())
}

/// Participants reconnect together within `deadline` (default 60 s), one attempt each.
fn reconnect(params: &Params<'_>, nodes: &[&InventoryNode]) -> Result<Runbook, CatalogueError> {
    let deadline = params.duration_ms("deadline", Duration::from_secs(60))?;
    let alias = params.text("synchronizer_alias", "");
    let participants = of_kind(nodes, &[NodeKind::Participant]);
    let mut runbook = Runbook::new("reconnect");
    if pinned_manual_connect(params, &alias)? {
        runbook = runbook
            .action_spec(
                "unpin-manual-connect",
                manual_connect(&alias, false),
                &participants,
            )
            .timeout_ms(deadline)
            .done();
    }
    Ok(runbook
        .action_spec(
            "reconnect",
            ActionSpec::new(ActionKind::Reconnect).param("synchronizer_alias", &alias),
            &participants,
        )
        .timeout_ms(deadline)
        .retry(1, 0)
        .done())
}

/// The evidence of a disaster-recovery timestamp (DESIGN §6): every listed SV participant
/// reports its ACS commitment agreement with each counter-participant, one attempt within
/// `deadline` (default 30 s). A participant that does not answer is recorded, not a failure:
/// the proposal (`GetDrTimestamp`, see `crate::dr`) counts it against the quorum.
/// Parameters: `quorum` (`2/3` default, or a count), `margin` (default 15m), `deadline`,
/// `exclude` (comma-separated participants left out, e.g. mid party onboarding, whose
/// mismatches are expected). Read-only: it claims nothing.
fn dr_timestamp(params: &Params<'_>, nodes: &[&InventoryNode]) -> Result<Runbook, CatalogueError> {
    let deadline = params.duration_ms("deadline", Duration::from_secs(30))?;
    crate::dr::Settings::from_parameters(params.0)?;
    let excluded: Vec<&str> = params
        .0
        .get("exclude")
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let listed: Vec<NodeRef> = of_kind(nodes, &[NodeKind::Participant])
        .into_iter()
        .filter(|node| !excluded.contains(&node.id.as_str()))
        .collect();
    Ok(Runbook::new("dr-timestamp")
        .check(crate::dr::EVIDENCE_STEP, crate::dr::PROBE_PART, &listed)
        .timeout_ms(deadline)
        .retry(1, 0)
        .best_effort()
        .done())
}

/// DESIGN §6 repairs: one participant skips (or, for `unignore-events`, stops skipping) the
/// sequencer counters `from..=to` of one physical synchronizer. Only with Canton technical
/// support: `with_technical_support=true` must be given, and an operator's signed approval
/// gates the repair itself. The participant is disconnected (reconnected again if the repair
/// fails, so a refused repair leaves it as it was), repaired with `force = false` (the node
/// refuses counters it has already processed), reconnected, and its ACS commitments with every
/// counter-participant are read afterwards for the report. Parameters: `synchronizer_id`
/// (physical), `from`, `to`, `synchronizer_alias` (of the disconnect; default every
/// synchronizer), `with_technical_support`, `deadline` (per step, default 60 s).
fn event_repair(
    params: &Params<'_>,
    nodes: &[&InventoryNode],
    repair: ActionKind,
) -> Result<Runbook, CatalogueError> {
    let name = if repair == ActionKind::IgnoreEvents {
        "ignore-events"
    } else {
        "unignore-events"
    };
    let bad = |key: &str, detail: String| CatalogueError::BadParameter {
        key: key.to_owned(),
        detail,
    };
    if !params.flag("with_technical_support", false)? {
        return Err(bad(
            "with_technical_support",
            format!(
                "{name} changes which sequenced events the participant processes and can break \
                 its ledger; run it only together with Canton technical support and say so with \
                 with_technical_support=true"
            ),
        ));
    }
    let participants = of_kind(nodes, &[NodeKind::Participant]);
    let [participant] = participants.as_slice() else {
        return Err(bad(
            "node",
            format!(
                "{name} repairs exactly one participant; name it with --node (selected: {})",
                participants.len()
            ),
        ));
    };
    let synchronizer_id = params.text("synchronizer_id", "");
    if synchronizer_id.is_empty() {
        return Err(bad(
            "synchronizer_id",
            "the physical synchronizer id whose counters are repaired is required".to_owned(),
        ));
    }
    let counter = |key: &str| -> Result<i64, CatalogueError> {
        params
            .0
            .get(key)
            .ok_or_else(|| bad(key, "a sequencer counter is required".to_owned()))?
            .parse::<i64>()
            .ok()
            .filter(|counter| *counter >= 0)
            .ok_or_else(|| {
                bad(
                    key,
                    "must be a sequencer counter (an integer ≥ 0)".to_owned(),
                )
            })
    };
    let (from, to) = (counter("from")?, counter("to")?);
    if to < from {
        return Err(bad("to", format!("{to} is below from = {from}")));
    }
    let deadline = params.duration_ms("deadline", Duration::from_secs(60))?;
    let alias = params.text("synchronizer_alias", "");
    let nodes = [participant.clone()];
    let prompt = format!(
        "{name}: sequencer counters {from}..={to} of {synchronizer_id} on {} (with technical support)",
        participant.id
    );
    Ok(Runbook::new(name)
        .approval("approve", &prompt, &nodes)
        .action_spec(
            "disconnect",
            ActionSpec::new(ActionKind::Disconnect).param("synchronizer_alias", &alias),
            &nodes,
        )
        .timeout_ms(deadline)
        .compensate_with(ActionKind::Reconnect)
        .done()
        .action_spec(
            "repair",
            ActionSpec::new(repair)
                .param("synchronizer_id", &synchronizer_id)
                .param("from_inclusive", &from.to_string())
                .param("to_inclusive", &to.to_string())
                .param("force", "false"),
            &nodes,
        )
        .timeout_ms(deadline)
        .done()
        .action_spec(
            "reconnect",
            ActionSpec::new(ActionKind::Reconnect).param("synchronizer_alias", &alias),
            &nodes,
        )
        .timeout_ms(deadline)
        .done()
        .check("commitments", crate::dr::PROBE_PART, &nodes)
        .timeout_ms(deadline)
        .retry(1, 0)
        .best_effort()
        .done())
}

/// DESIGN §6 `network-dr` (Splice; the synchronizer is lost beyond repair), for this
/// organisation's nodes once every organisation agreed the recovery timestamp: participants
/// disconnect (reconnected again if the run is rolled back) → SV apps, then validator apps,
/// write their migration dump at the timestamp (validators with `force`; participants keep
/// running) → an operator confirms the new synchronizer is deployed (this approval also signs
/// the redeploys) → each app's redeploy hook brings its participant back on a new database
/// with the migration id, initialised from the dump, identity checked → participants
/// reconnect → ACS commitments are read for the report. Parameters: `timestamp` (RFC 3339;
/// the API fills it from the agreed proposal), `migration_id` (the new synchronizer's),
/// `incident` (RFC 3339, when the synchronizer was lost: the data-loss window ends there),
/// `synchronizer_alias`, `deadline` (dumps and reconnect, default 10m), `redeploy_timeout`
/// (default 30m).
fn network_dr(params: &Params<'_>, nodes: &[&InventoryNode]) -> Result<Runbook, CatalogueError> {
    let bad = |key: &str, detail: String| CatalogueError::BadParameter {
        key: key.to_owned(),
        detail,
    };
    let instant = |key: &str| -> Result<Option<(String, std::time::SystemTime)>, CatalogueError> {
        let Some(text) = params.0.get(key) else {
            return Ok(None);
        };
        let at = humantime::parse_rfc3339_weak(text).map_err(|error| {
            bad(
                key,
                format!("{text:?} is not an RFC 3339 time like 2026-12-01T17:45:00Z ({error})"),
            )
        })?;
        Ok(Some((humantime::format_rfc3339_micros(at).to_string(), at)))
    };
    let (timestamp, at) = instant("timestamp")?.ok_or_else(|| {
        bad(
            "timestamp",
            "the agreed recovery timestamp is required: pass --param proposal=<hash> of an \
             accepted dr-timestamp proposal"
                .to_owned(),
        )
    })?;
    let migration_id = params
        .0
        .get("migration_id")
        .and_then(|id| id.parse::<i64>().ok())
        .filter(|id| *id >= 1)
        .ok_or_else(|| {
            bad(
                "migration_id",
                "the new synchronizer's migration id is required (an integer ≥ 1, the current \
                 one plus one)"
                    .to_owned(),
            )
        })?;
    let window = match instant("incident")? {
        Some((incident, lost)) if lost < at => {
            return Err(bad(
                "incident",
                format!("{incident} is before the recovery timestamp {timestamp}"),
            ));
        }
        Some((incident, lost)) => format!(
            "data written between {timestamp} and the incident at {incident} ({}) is lost",
            humantime::format_duration(Duration::from_secs(
                lost.duration_since(at).unwrap_or_default().as_secs()
            ))
        ),
        None => format!("data written after {timestamp} is lost"),
    };
    let deadline = params.duration_ms("deadline", Duration::from_secs(600))?;
    let redeploy_timeout = params.duration_ms("redeploy_timeout", Duration::from_secs(1_800))?;
    let alias = params.text("synchronizer_alias", "");
    let apps: Vec<&&InventoryNode> = nodes.iter().filter(|n| n.kind == NodeKind::App).collect();
    for app in &apps {
        if !matches!(app.app_role.as_deref(), Some("sv" | "validator")) {
            return Err(bad(
                "node",
                format!(
                    "app {} does not report a Splice role; give its agent a [splice] section \
                     (role = \"sv\" or \"validator\") or leave it out with --node",
                    app.id
                ),
            ));
        }
    }
    let participants = of_kind(nodes, &[NodeKind::Participant]);
    for participant in &participants {
        if !apps
            .iter()
            .any(|app| app.participant.as_deref() == Some(participant.id.as_str()))
        {
            return Err(bad(
                "node",
                format!(
                    "participant {} has no Splice app among the selected nodes; network DR \
                     redeploys a participant through its app",
                    participant.id
                ),
            ));
        }
    }
    let apps_of = |role: &str| -> Vec<NodeRef> {
        apps.iter()
            .filter(|app| app.app_role.as_deref() == Some(role))
            .map(|app| Inventory::node_ref(app))
            .collect()
    };
    let (svs, validators) = (apps_of("sv"), apps_of("validator"));
    let every_app: Vec<NodeRef> = svs.iter().chain(&validators).cloned().collect();
    let id = migration_id.to_string();
    let dump = |force: &str| {
        ActionSpec::new(ActionKind::MigrationDump)
            .param("timestamp", &timestamp)
            .param("migration_id", &id)
            .param("force", force)
    };
    let app_names: Vec<&str> = every_app.iter().map(|app| app.id.as_str()).collect();
    let prompt = format!(
        "network DR to migration {migration_id}: is the new synchronizer deployed? Approving \
         redeploys {} on new databases from their dumps at {timestamp}; {window}; apps {} \
         restart from that point",
        participants
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        app_names.join(", ")
    );
    let mut runbook = Runbook::new("network-dr")
        .action_spec(
            "disconnect",
            ActionSpec::new(ActionKind::Disconnect).param("synchronizer_alias", &alias),
            &participants,
        )
        .timeout_ms(deadline)
        .compensate_with(ActionKind::Reconnect)
        .done();
    for (step, apps, force) in [
        ("dump-svs", &svs, "false"),
        ("dump-validators", &validators, "true"),
    ] {
        if !apps.is_empty() {
            runbook = runbook
                .action_spec(step, dump(force), apps)
                .timeout_ms(deadline)
                .retry(1, 0)
                .done();
        }
    }
    Ok(runbook
        .approval("new-synchronizer", &prompt, &every_app)
        .action_spec(
            "redeploy",
            ActionSpec::new(ActionKind::Redeploy).param("migration_id", &id),
            &every_app,
        )
        .timeout_ms(redeploy_timeout)
        .retry(1, 0)
        // Redeployed participants belong to the new synchronizer: never rolled back.
        .fix_forward()
        .done()
        .action_spec(
            "reconnect",
            ActionSpec::new(ActionKind::Reconnect).param("synchronizer_alias", &alias),
            &participants,
        )
        .timeout_ms(deadline)
        .retry(5, 2_000)
        .done()
        .check("commitments", crate::dr::PROBE_PART, &participants)
        .timeout_ms(deadline)
        .retry(1, 0)
        .best_effort()
        .done())
}

/// DESIGN §6 repairs, `repair-lost-synchronizer`: the participants' synchronizer `source` is
/// lost (or no longer trusted) and a new one, `target`, is deployed. An operator's signed
/// approval → every participant disconnects (reconnected if the run is rolled back) → each
/// runs `MigrateSynchronizer` from `source` to `target` (registered with
/// `target_sequencer_urls`; `force` only with `source_lost=true`, as forcing on a live source
/// forks the ledger) → reconnects to `target` → its ACS commitments with every
/// counter-participant are read for the report. Mismatching commitments are reported, not
/// repaired: an ACS repair needs Canton technical support. Parameters: `source`, `target`,
/// `target_sequencer_urls` (comma-separated), `force`, `source_lost`, `deadline` (per step,
/// default 60 s).
fn repair_lost_synchronizer(
    params: &Params<'_>,
    nodes: &[&InventoryNode],
) -> Result<Runbook, CatalogueError> {
    let bad = |key: &str, detail: String| CatalogueError::BadParameter {
        key: key.to_owned(),
        detail,
    };
    let required = |key: &str, what: &str| -> Result<String, CatalogueError> {
        let value = params.text(key, "");
        if value.trim().is_empty() {
            return Err(bad(key, format!("{what} is required")));
        }
        Ok(value.trim().to_owned())
    };
    let source = required("source", "the alias of the lost synchronizer")?;
    let target = required("target", "the alias the new synchronizer gets")?;
    if source == target {
        return Err(bad(
            "target",
            format!("{target:?} is the lost synchronizer's alias; give the new one its own"),
        ));
    }
    let urls = required(
        "target_sequencer_urls",
        "the new synchronizer's sequencer URLs (comma-separated)",
    )?;
    if let Some(url) = urls
        .split(',')
        .map(str::trim)
        .find(|url| !(url.starts_with("http://") || url.starts_with("https://")))
    {
        return Err(bad(
            "target_sequencer_urls",
            format!("{url:?} is not an http:// or https:// sequencer URL"),
        ));
    }
    let force = params.flag("force", false)?;
    if force && !params.flag("source_lost", false)? {
        return Err(bad(
            "force",
            format!(
                "force migrates even if {source} still has work in flight, which forks the ledger \
                 while it lives; only for a lost or untrusted synchronizer: say so with \
                 source_lost=true"
            ),
        ));
    }
    let deadline = params.duration_ms("deadline", Duration::from_secs(60))?;
    let participants = of_kind(nodes, &[NodeKind::Participant]);
    let prompt = format!(
        "repair-lost-synchronizer: move every contract of {} from {source} to {target}{}; \
         mismatching commitments afterwards are reported, not repaired (an ACS repair needs \
         Canton technical support)",
        participants
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if force { " (forced)" } else { "" }
    );
    Ok(Runbook::new("repair-lost-synchronizer")
        .approval("approve", &prompt, &participants)
        .action_spec(
            "disconnect",
            ActionSpec::new(ActionKind::Disconnect).param("synchronizer_alias", &source),
            &participants,
        )
        .timeout_ms(deadline)
        .compensate_with(ActionKind::Reconnect)
        .done()
        .action_spec(
            "migrate",
            ActionSpec::new(ActionKind::MigrateSynchronizer)
                .param("source_synchronizer_alias", &source)
                .param("target_synchronizer_alias", &target)
                .param("target_sequencer_urls", &urls)
                .param("force", if force { "true" } else { "false" }),
            &participants,
        )
        .timeout_ms(deadline)
        // Migrated participants belong to the new synchronizer: never rolled back.
        .fix_forward()
        .done()
        .action_spec(
            "reconnect",
            ActionSpec::new(ActionKind::Reconnect).param("synchronizer_alias", &target),
            &participants,
        )
        .timeout_ms(deadline)
        .retry(5, 2_000)
        .done()
        .check("commitments", crate::dr::PROBE_PART, &participants)
        .timeout_ms(deadline)
        .retry(1, 0)
        .best_effort()
        .done())
}

/// `pin_manual_connect=true`: the disconnect also marks the synchronizer manual-connect (and
/// the reconnect clears it). The mark is per synchronizer, so the alias must be named.
fn pinned_manual_connect(params: &Params<'_>, alias: &str) -> Result<bool, CatalogueError> {
    let pinned = params.flag("pin_manual_connect", false)?;
    if pinned && alias.is_empty() {
        return Err(CatalogueError::BadParameter {
            key: "pin_manual_connect".to_owned(),
            detail: "needs synchronizer_alias=<alias>: manual-connect is set per synchronizer"
                .to_owned(),
        });
    }
    Ok(pinned)
}

fn manual_connect(alias: &str, on: bool) -> ActionSpec {
    ActionSpec::new(ActionKind::SetManualConnect)
        .param("synchronizer_alias", alias)
        .param("manual_connect", if on { "true" } else { "false" })
}

/// The run id of a request: the runbook name and a hash of organisation and request id, so a
/// retried StartRun names the same run. Always a valid subject token.
pub fn run_id(runbook: &str, organisation: &str, request_id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{organisation}/{runbook}/{request_id}"));
    format!("{runbook}-{}", &hex::encode(digest)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory() -> Inventory {
        let node = |id: &str, kind| InventoryNode {
            id: id.to_owned(),
            kind,
            participant: None,
            app_role: None,
            replicas: Vec::new(),
        };
        Inventory {
            organisation: "operator".to_owned(),
            nodes: [
                node("p1", NodeKind::Participant),
                node("p2", NodeKind::Participant),
                node("s1", NodeKind::Sequencer),
            ]
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect(),
        }
    }

    fn steps(runbook: &str, params: &[(&str, &str)]) -> Result<Vec<String>, CatalogueError> {
        steps_on(runbook, &[], params)
    }

    fn steps_on(
        runbook: &str,
        nodes: &[String],
        params: &[(&str, &str)],
    ) -> Result<Vec<String>, CatalogueError> {
        let parameters: BTreeMap<String, String> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let built = build(
            &Request {
                runbook,
                nodes,
                parameters: &parameters,
                run_id: "r1",
            },
            &inventory(),
        )?;
        Ok(built.runbook.steps.iter().map(|s| s.id.clone()).collect())
    }

    #[test]
    fn a_pinned_disconnect_marks_manual_connect_and_its_reconnect_clears_it_first() {
        assert_eq!(steps("disconnect", &[]).unwrap(), ["disconnect"]);
        let pinned = [
            ("pin_manual_connect", "true"),
            ("synchronizer_alias", "global"),
        ];
        assert_eq!(
            steps("disconnect", &pinned).unwrap(),
            ["disconnect", "pin-manual-connect"]
        );
        assert_eq!(
            steps("reconnect", &pinned).unwrap(),
            ["unpin-manual-connect", "reconnect"]
        );
        let error = steps("disconnect", &[("pin_manual_connect", "true")]).unwrap_err();
        assert!(error.to_string().contains("synchronizer_alias"), "{error}");
    }

    #[test]
    fn an_event_repair_needs_the_support_acknowledgement_one_participant_and_a_range() {
        let p1 = ["p1".to_owned()];
        let full = [
            ("with_technical_support", "true"),
            ("synchronizer_id", "global::1220ab::34-0"),
            ("from", "10"),
            ("to", "12"),
        ];
        for runbook in ["ignore-events", "unignore-events"] {
            assert_eq!(
                steps_on(runbook, &p1, &full).unwrap(),
                [
                    "approve",
                    "disconnect",
                    "repair",
                    "reconnect",
                    "commitments"
                ]
            );
        }
        let key_of = |nodes: &[String], params: &[(&str, &str)]| match steps_on(
            "ignore-events",
            nodes,
            params,
        ) {
            Err(CatalogueError::BadParameter { key, .. }) => key,
            other => panic!("expected a parameter error, got {other:?}"),
        };
        assert_eq!(key_of(&p1, &full[1..]), "with_technical_support");
        assert_eq!(key_of(&[], &full), "node", "two participants selected");
        let without = |skip: &str| -> Vec<(&str, &str)> {
            full.iter().copied().filter(|(k, _)| *k != skip).collect()
        };
        assert_eq!(key_of(&p1, &without("synchronizer_id")), "synchronizer_id");
        assert_eq!(key_of(&p1, &without("from")), "from");
        let mut inverted = without("to");
        inverted.push(("to", "9"));
        assert_eq!(key_of(&p1, &inverted), "to");
        let mut negative = without("from");
        negative.push(("from", "-1"));
        assert_eq!(key_of(&p1, &negative), "from");
    }

    /// Two SV participants with their apps and a validator with its app.
    fn splice_inventory() -> Inventory {
        let mut inventory = inventory();
        for (app, participant, role) in [
            ("sv1-app", "p1", "sv"),
            ("sv2-app", "p2", "sv"),
            ("v1-app", "v1", "validator"),
        ] {
            for node in [
                InventoryNode {
                    id: participant.to_owned(),
                    kind: NodeKind::Participant,
                    participant: None,
                    app_role: None,
                    replicas: Vec::new(),
                },
                InventoryNode {
                    id: app.to_owned(),
                    kind: NodeKind::App,
                    participant: Some(participant.to_owned()),
                    app_role: Some(role.to_owned()),
                    replicas: Vec::new(),
                },
            ] {
                inventory.nodes.insert(node.id.clone(), node);
            }
        }
        inventory
    }

    fn network_dr(
        inventory: &Inventory,
        nodes: &[String],
        params: &[(&str, &str)],
    ) -> Result<Runbook, CatalogueError> {
        let parameters: BTreeMap<String, String> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        build(
            &Request {
                runbook: "network-dr",
                nodes,
                parameters: &parameters,
                run_id: "r1",
            },
            inventory,
        )
        .map(|built| built.runbook)
    }

    #[test]
    fn network_dr_dumps_svs_before_validators_and_redeploys_only_after_the_approval() {
        let inventory = splice_inventory();
        let full = [
            ("timestamp", "2026-12-01T10:00:00Z"),
            ("migration_id", "3"),
            ("incident", "2026-12-01T10:42:00Z"),
        ];
        let runbook = network_dr(&inventory, &[], &full).unwrap();
        let ids: Vec<&str> = runbook.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "disconnect",
                "dump-svs",
                "dump-validators",
                "new-synchronizer",
                "redeploy",
                "reconnect",
                "commitments"
            ]
        );
        let nodes_of = |step: &str| -> Vec<String> {
            let def = runbook.steps.iter().find(|s| s.id == step).unwrap();
            def.nodes().iter().map(|n| n.id.clone()).collect()
        };
        assert_eq!(nodes_of("disconnect"), ["p1", "p2", "v1"]);
        assert_eq!(nodes_of("dump-svs"), ["sv1-app", "sv2-app"]);
        assert_eq!(nodes_of("dump-validators"), ["v1-app"]);
        assert_eq!(nodes_of("redeploy"), ["sv1-app", "sv2-app", "v1-app"]);
        let action = |step: &str| {
            runbook
                .steps
                .iter()
                .find(|s| s.id == step)
                .and_then(|s| s.sent_action())
                .cloned()
                .unwrap()
        };
        assert_eq!(action("dump-svs").params["force"], "false");
        assert_eq!(action("dump-validators").params["force"], "true");
        assert_eq!(
            action("dump-svs").params["timestamp"],
            "2026-12-01T10:00:00.000000Z"
        );
        assert_eq!(action("redeploy").params["migration_id"], "3");
        let approval = runbook
            .steps
            .iter()
            .find(|s| s.id == "new-synchronizer")
            .unwrap();
        let sidecar_core::StepKind::Approval { prompt, .. } = &approval.kind else {
            panic!("new-synchronizer is not an approval: {approval:?}");
        };
        assert!(prompt.contains("42m"), "the data-loss window: {prompt}");
        assert!(prompt.contains("v1-app"), "apps to reset: {prompt}");
        let state = sidecar_core::start_run("r1", runbook, 1, 1_000);
        assert_eq!(
            crate::api::destructive_steps_gated_by(&state, "new-synchronizer"),
            ["redeploy"]
        );
    }

    #[test]
    fn repair_lost_synchronizer_is_approved_first_and_forces_only_a_lost_source() {
        let full = [
            ("source", "global"),
            ("target", "global2"),
            (
                "target_sequencer_urls",
                "http://127.0.0.1:5018, https://seq2:5018",
            ),
        ];
        assert_eq!(
            steps("repair-lost-synchronizer", &full).unwrap(),
            [
                "approve",
                "disconnect",
                "migrate",
                "reconnect",
                "commitments"
            ]
        );
        let key_of = |params: &[(&str, &str)]| match steps("repair-lost-synchronizer", params) {
            Err(CatalogueError::BadParameter { key, .. }) => key,
            other => panic!("expected a parameter error, got {other:?}"),
        };
        let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
            full.iter().chain(extra).copied().collect()
        };
        assert_eq!(key_of(&full[1..]), "source");
        assert_eq!(key_of(&[full[0], full[2]]), "target");
        assert_eq!(key_of(&full[..2]), "target_sequencer_urls");
        assert_eq!(key_of(&[full[0], ("target", "global"), full[2]]), "target");
        assert_eq!(
            key_of(&[full[0], full[1], ("target_sequencer_urls", "seq2:5018")]),
            "target_sequencer_urls"
        );
        assert_eq!(key_of(&with(&[("force", "true")])), "force");
        assert_eq!(
            steps(
                "repair-lost-synchronizer",
                &with(&[("force", "true"), ("source_lost", "true")])
            )
            .unwrap()
            .len(),
            5
        );
    }

    #[test]
    fn network_dr_refuses_missing_parameters_and_participants_without_an_app() {
        let inventory = splice_inventory();
        let key_of =
            |nodes: &[String], params: &[(&str, &str)]| match network_dr(&inventory, nodes, params)
            {
                Err(CatalogueError::BadParameter { key, detail }) => {
                    assert!(!detail.is_empty());
                    key
                }
                other => panic!("expected a parameter error, got {other:?}"),
            };
        let at = ("timestamp", "2026-12-01T10:00:00Z");
        assert_eq!(key_of(&[], &[("migration_id", "3")]), "timestamp");
        assert_eq!(key_of(&[], &[at]), "migration_id");
        assert_eq!(key_of(&[], &[at, ("migration_id", "0")]), "migration_id");
        assert_eq!(
            key_of(
                &[],
                &[
                    at,
                    ("migration_id", "1"),
                    ("incident", "2026-12-01T09:00:00Z")
                ]
            ),
            "incident"
        );
        assert_eq!(
            key_of(&["p1".to_owned()], &[at, ("migration_id", "1")]),
            "node",
            "p1 without its app"
        );
        let mut roleless = inventory.clone();
        roleless.nodes.get_mut("v1-app").unwrap().app_role = None;
        match network_dr(&roleless, &[], &[at, ("migration_id", "1")]) {
            Err(CatalogueError::BadParameter { key, detail }) => {
                assert_eq!(key, "node");
                assert!(detail.contains("v1-app"), "{detail}");
            }
            other => panic!("expected a parameter error, got {other:?}"),
        }
    }
}
