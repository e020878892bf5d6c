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
pub const RUNBOOKS: [&str; 10] = [
    "backup",
    "disconnect",
    "dr-timestamp",
    "ignore-events",
    "network-dr",
    "reconnect",
    "rehydrate-participant",
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
    /// Canton's unique identifier of the node, once its agent reported it.
    pub uid: Option<String>,
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
                    uid: None,
                    replicas: Vec::new(),
                });
            if !state.participant.is_empty() {
                entry.participant = Some(state.participant.clone());
            }
            if !state.app_role.is_empty() {
                entry.app_role = Some(state.app_role.clone());
            }
            if !state.uid.is_empty() {
                entry.uid = Some(state.uid.clone());
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
    /// Every logical node the runbook changes (and claims); nodes its check steps only read
    /// are left out, unless the runbook only reads.
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
        "rehydrate-participant" => rehydrate_participant(&params, &selected, inventory, request)?,
        other => return Err(CatalogueError::UnknownRunbook(other.to_owned())),
    };
    let mut nodes = touched_nodes(&runbook, false);
    if nodes.is_empty() {
        // A runbook that only reads (dr-timestamp) lists what it reads; it claims nothing.
        nodes = touched_nodes(&runbook, true);
    }
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

/// The nodes a runbook's steps name, sorted, once each; without `reads`, nodes only probed by
/// check steps are left out: they are read, not changed, so the run does not claim them
/// (`rehydrate-participant` reads the sequencers' pruning status).
fn touched_nodes(runbook: &Runbook, reads: bool) -> Vec<String> {
    let mut nodes: Vec<String> = runbook
        .steps
        .iter()
        .filter(|step| reads || !matches!(step.kind, sidecar_core::StepKind::Check { .. }))
        .flat_map(|step| step.nodes().iter().map(|node| node.id.clone()))
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
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

/// A refused parameter, named by its key.
fn bad_parameter(key: &str, detail: String) -> CatalogueError {
    CatalogueError::BadParameter {
        key: key.to_owned(),
        detail,
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
    if !params.flag("with_technical_support", false)? {
        return Err(bad_parameter(
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
        return Err(bad_parameter(
            "node",
            format!(
                "{name} repairs exactly one participant; name it with --node (selected: {})",
                participants.len()
            ),
        ));
    };
    let synchronizer_id = params.text("synchronizer_id", "");
    if synchronizer_id.is_empty() {
        return Err(bad_parameter(
            "synchronizer_id",
            "the physical synchronizer id whose counters are repaired is required".to_owned(),
        ));
    }
    let counter = |key: &str| -> Result<i64, CatalogueError> {
        params
            .0
            .get(key)
            .ok_or_else(|| bad_parameter(key, "a sequencer counter is required".to_owned()))?
            .parse::<i64>()
            .ok()
            .filter(|counter| *counter >= 0)
            .ok_or_else(|| {
                bad_parameter(
                    key,
                    "must be a sequencer counter (an integer ≥ 0)".to_owned(),
                )
            })
    };
    let (from, to) = (counter("from")?, counter("to")?);
    if to < from {
        return Err(bad_parameter("to", format!("{to} is below from = {from}")));
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
    let instant = |key: &str| -> Result<Option<(String, std::time::SystemTime)>, CatalogueError> {
        let Some(text) = params.0.get(key) else {
            return Ok(None);
        };
        let at = humantime::parse_rfc3339_weak(text).map_err(|error| {
            bad_parameter(
                key,
                format!("{text:?} is not an RFC 3339 time like 2026-12-01T17:45:00Z ({error})"),
            )
        })?;
        Ok(Some((humantime::format_rfc3339_micros(at).to_string(), at)))
    };
    let (timestamp, at) = instant("timestamp")?.ok_or_else(|| {
        bad_parameter(
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
            bad_parameter(
                "migration_id",
                "the new synchronizer's migration id is required (an integer ≥ 1, the current \
                 one plus one)"
                    .to_owned(),
            )
        })?;
    let window = match instant("incident")? {
        Some((incident, lost)) if lost < at => {
            return Err(bad_parameter(
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
            return Err(bad_parameter(
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
            return Err(bad_parameter(
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

/// The probe part a sequencer answers about one member's history (`member` = `PAR::<uid>`).
pub const SEQUENCER_HISTORY: &str = "sequencer_history";
/// The probe part that holds once a participant processed past its stop point plus the
/// ledger-time-record-time tolerance (after a restore or a rehydration).
pub const DEDUP_SAFE: &str = "dedup_safe";

/// DESIGN §6 repairs, `rehydrate-participant` (Canton's full rehydration of a participant
/// from a never-pruned synchronizer): one participant, named with `--node`, gets a new, empty
/// database with its identity and rebuilds its ledger by replaying every event the
/// synchronizer sequenced for it. Only with Canton technical support
/// (`with_technical_support=true`) and an operator's signed approval of the destructive
/// `rehydrate` step.
///
/// Steps: `history` (each sequencer of the organisation, or those named with `--node`, still
/// holds every event since the participant registered: its pruning lower bound is not after
/// the registration; checked before anyone is asked to approve) → `approve` → `stop-apps`
/// (the participant's apps through their lifecycle hooks; started again if the run is rolled
/// back) → `disconnect` (reconnected if rolled back) → `backup` (the participant's dump with
/// identities and DARs into a backup set named after the run: the recovery point, and where
/// the hook finds the identity) → `history-recheck` (pruning may have run meanwhile) →
/// `rehydrate` (the agent's hook replaces the database keeping the identity; one attempt,
/// fix-forward: from here a failure stops for an operator instead of rolling back, because
/// the apps must not start on a participant that has not caught up) → `reconnect` (replay
/// starts) → `caught-up` (probe `dedup_safe`: processed sequencer time past the stop point the
/// rehydration recorded, plus the ledger-time-record-time tolerance, retried until
/// `catch_up`) → `start-apps` → best-effort `commitments`.
///
/// An organisation that runs no sequencer cannot read the pruning status: the operator then
/// states `synchronizer_never_pruned=true` after asking the synchronizer's operators.
/// Parameters: `with_technical_support`, `backup_set` (default: the run id),
/// `synchronizer_alias` (disconnect/reconnect; default every synchronizer), `deadline` (the
/// short steps, default 60s), `backup_timeout` (30m), `rehydrate_timeout` (2h), `catch_up`
/// (1h), `synchronizer_never_pruned`.
fn rehydrate_participant(
    params: &Params<'_>,
    nodes: &[&InventoryNode],
    inventory: &Inventory,
    request: &Request<'_>,
) -> Result<Runbook, CatalogueError> {
    const NAME: &str = "rehydrate-participant";
    if !params.flag("with_technical_support", false)? {
        return Err(bad_parameter(
            "with_technical_support",
            format!(
                "{NAME} replaces the participant's database and rebuilds it from the \
                 synchronizer; run it only together with Canton technical support and say so \
                 with with_technical_support=true"
            ),
        ));
    }
    let participants: Vec<&&InventoryNode> = nodes
        .iter()
        .filter(|node| node.kind == NodeKind::Participant)
        .collect();
    let [participant] = participants.as_slice() else {
        return Err(bad_parameter(
            "node",
            format!(
                "{NAME} rehydrates exactly one participant; name it with --node (selected: {})",
                participants.len()
            ),
        ));
    };
    if request.nodes.is_empty() {
        return Err(bad_parameter(
            "node",
            format!(
                "{NAME} replaces a participant's database only when the participant is named: \
                 pass --node {}",
                participant.id
            ),
        ));
    }
    if let Some(other) = nodes
        .iter()
        .find(|node| !matches!(node.kind, NodeKind::Participant | NodeKind::Sequencer))
    {
        return Err(bad_parameter(
            "node",
            format!(
                "{} is not a participant or sequencer; name the participant (its apps are \
                 stopped and started with it) and optionally the sequencers whose history is \
                 checked",
                other.id
            ),
        ));
    }
    if !participant.replicas.is_empty() {
        return Err(bad_parameter(
            "node",
            format!(
                "{} runs as HA replicas ({}); rehydrating a replicated participant is not \
                 supported: it needs every replica stopped but one",
                participant.id,
                participant.replicas.join(", ")
            ),
        ));
    }
    let uid = participant.uid.clone().ok_or_else(|| {
        bad_parameter(
            "node",
            format!(
                "{} has not reported its uid yet (canton-ops nodes shows it once its agent read \
                 the node's status); the run checks the identity before and after, start it \
                 when the uid is known",
                participant.id
            ),
        )
    })?;
    let named_sequencers = of_kind(nodes, &[NodeKind::Sequencer]);
    let sequencers = if named_sequencers.is_empty() {
        inventory
            .nodes
            .values()
            .filter(|node| node.kind == NodeKind::Sequencer)
            .map(Inventory::node_ref)
            .collect()
    } else {
        named_sequencers
    };
    let stated_unpruned = params.flag("synchronizer_never_pruned", false)?;
    if sequencers.is_empty() && !stated_unpruned {
        return Err(bad_parameter(
            "synchronizer_never_pruned",
            format!(
                "organisation {} runs no sequencer, so the run cannot read whether the \
                 synchronizer still holds every event of {} since it registered (rehydration \
                 replays them; a pruned synchronizer leaves the participant without a ledger); \
                 ask the synchronizer's operators for the sequencers' pruning status and pass \
                 synchronizer_never_pruned=true when its lower bound is before the \
                 participant's registration",
                inventory.organisation, participant.id
            ),
        ));
    }
    if !sequencers.is_empty() && stated_unpruned {
        return Err(bad_parameter(
            "synchronizer_never_pruned",
            format!(
                "the run reads the pruning status of {} itself; leave the parameter out",
                sequencers
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let backup_set = params.text("backup_set", request.run_id);
    let alias = params.text("synchronizer_alias", "");
    let deadline = params.duration_ms("deadline", Duration::from_secs(60))?;
    let backup_timeout = params.duration_ms("backup_timeout", Duration::from_secs(1_800))?;
    let rehydrate_timeout = params.duration_ms("rehydrate_timeout", Duration::from_secs(7_200))?;
    let catch_up = params.duration_ms("catch_up", Duration::from_secs(3_600))?;
    const CATCH_UP_PAUSE_MS: Millis = 1_000;
    let catch_up_attempts =
        u32::try_from((catch_up / CATCH_UP_PAUSE_MS).max(1)).unwrap_or(u32::MAX);
    let target = [Inventory::node_ref(participant)];
    let apps: Vec<NodeRef> = inventory
        .nodes
        .values()
        .filter(|node| {
            node.kind == NodeKind::App && node.participant.as_deref() == Some(&participant.id)
        })
        .map(Inventory::node_ref)
        .collect();
    let mut approvers = target.to_vec();
    approvers.extend(apps.iter().cloned());
    let history = ActionSpec::new(ActionKind::Probe)
        .param("names", SEQUENCER_HISTORY)
        .param("member", &format!("PAR::{uid}"));
    let prompt = format!(
        "{NAME} of {} ({uid}), with technical support: its database is replaced by a new, empty \
         one (backup set {backup_set} is taken first as the recovery point) and it replays \
         every event from the synchronizer ({}); {} stay stopped until it has caught up",
        participant.id,
        if sequencers.is_empty() {
            "stated never pruned by the operator".to_owned()
        } else {
            format!(
                "history checked on {}",
                sequencers
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        if apps.is_empty() {
            "no apps".to_owned()
        } else {
            format!(
                "apps {}",
                apps.iter()
                    .map(|a| a.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let mut runbook = Runbook::new(NAME);
    if !sequencers.is_empty() {
        runbook = runbook
            .check_spec("history", history.clone(), &sequencers)
            .timeout_ms(deadline)
            .retry(1, 0)
            .done();
    }
    runbook = runbook.approval("approve", &prompt, &approvers);
    if !apps.is_empty() {
        runbook = runbook
            .action("stop-apps", ActionKind::Stop, &apps)
            .timeout_ms(deadline.max(120_000))
            .compensate_with(ActionKind::Start)
            .done();
    }
    runbook = runbook
        .action_spec(
            "disconnect",
            ActionSpec::new(ActionKind::Disconnect).param("synchronizer_alias", &alias),
            &target,
        )
        .timeout_ms(deadline)
        .compensate_with(ActionKind::Reconnect)
        .done()
        .action_spec(
            "backup",
            ActionSpec::new(ActionKind::Backup)
                .param("backup_set", &backup_set)
                .param("include_identities", "true"),
            &target,
        )
        .timeout_ms(backup_timeout)
        .done();
    if !sequencers.is_empty() {
        runbook = runbook
            .check_spec("history-recheck", history, &sequencers)
            .timeout_ms(deadline)
            .retry(1, 0)
            .done();
    }
    runbook = runbook
        .action_spec(
            "rehydrate",
            ActionSpec::new(ActionKind::Rehydrate).param("backup_set", &backup_set),
            &target,
        )
        .timeout_ms(rehydrate_timeout)
        .retry(1, 0)
        .fix_forward()
        .done()
        .action_spec(
            "reconnect",
            ActionSpec::new(ActionKind::Reconnect).param("synchronizer_alias", &alias),
            &target,
        )
        .timeout_ms(deadline)
        .retry(5, 2_000)
        .fix_forward()
        .done()
        .check("caught-up", DEDUP_SAFE, &target)
        .timeout_ms(deadline)
        .retry(catch_up_attempts, CATCH_UP_PAUSE_MS)
        .fix_forward()
        .done();
    if !apps.is_empty() {
        runbook = runbook
            .action("start-apps", ActionKind::Start, &apps)
            .timeout_ms(deadline.max(300_000))
            .fix_forward()
            .done();
    }
    Ok(runbook
        .check("commitments", crate::dr::PROBE_PART, &target)
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
    let required = |key: &str, what: &str| -> Result<String, CatalogueError> {
        let value = params.text(key, "");
        if value.trim().is_empty() {
            return Err(bad_parameter(key, format!("{what} is required")));
        }
        Ok(value.trim().to_owned())
    };
    let source = required("source", "the alias of the lost synchronizer")?;
    let target = required("target", "the alias the new synchronizer gets")?;
    if source == target {
        return Err(bad_parameter(
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
        return Err(bad_parameter(
            "target_sequencer_urls",
            format!("{url:?} is not an http:// or https:// sequencer URL"),
        ));
    }
    let force = params.flag("force", false)?;
    if force && !params.flag("source_lost", false)? {
        return Err(bad_parameter(
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
            uid: Some(format!("{id}::1220ab")),
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

    fn rehydrate(
        inventory: &Inventory,
        nodes: &[&str],
        params: &[(&str, &str)],
    ) -> Result<Built, CatalogueError> {
        let parameters: BTreeMap<String, String> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let nodes: Vec<String> = nodes.iter().map(|n| (*n).to_owned()).collect();
        build(
            &Request {
                runbook: "rehydrate-participant",
                nodes: &nodes,
                parameters: &parameters,
                run_id: "r1",
            },
            inventory,
        )
    }

    /// `inventory()` with an app in front of p1.
    fn inventory_with_app() -> Inventory {
        let mut inventory = inventory();
        inventory.nodes.insert(
            "a1".to_owned(),
            InventoryNode {
                id: "a1".to_owned(),
                kind: NodeKind::App,
                participant: Some("p1".to_owned()),
                app_role: None,
                uid: None,
                replicas: Vec::new(),
            },
        );
        inventory
    }

    #[test]
    fn rehydration_checks_the_history_first_keeps_apps_stopped_until_caught_up_and_gates_the_rehydrate()
     {
        let with_app = inventory_with_app();
        let built = rehydrate(&with_app, &["p1"], &[("with_technical_support", "true")]).unwrap();
        let runbook = &built.runbook;
        let ids: Vec<&str> = runbook.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "history",
                "approve",
                "stop-apps",
                "disconnect",
                "backup",
                "history-recheck",
                "rehydrate",
                "reconnect",
                "caught-up",
                "start-apps",
                "commitments"
            ]
        );
        let step = |id: &str| runbook.steps.iter().find(|s| s.id == id).unwrap();
        let nodes_of =
            |id: &str| -> Vec<String> { step(id).nodes().iter().map(|n| n.id.clone()).collect() };
        assert_eq!(nodes_of("history"), ["s1"]);
        assert_eq!(nodes_of("approve"), ["p1", "a1"]);
        assert_eq!(nodes_of("stop-apps"), ["a1"]);
        assert_eq!(nodes_of("start-apps"), ["a1"]);
        for id in [
            "disconnect",
            "backup",
            "rehydrate",
            "reconnect",
            "caught-up",
        ] {
            assert_eq!(nodes_of(id), ["p1"], "{id}");
        }
        let history = step("history").sent_action().unwrap();
        assert_eq!(history.params["names"], SEQUENCER_HISTORY);
        assert_eq!(history.params["member"], "PAR::p1::1220ab");
        assert_eq!(
            step("caught-up").sent_action().unwrap().params["names"],
            DEDUP_SAFE
        );
        assert_eq!(
            step("backup").sent_action().unwrap().params["backup_set"],
            "r1"
        );
        assert_eq!(
            step("rehydrate").sent_action().unwrap().params["backup_set"],
            "r1"
        );
        assert_eq!(
            step("stop-apps").compensation().map(|c| c.kind),
            Some(ActionKind::Start)
        );
        assert_eq!(
            step("disconnect").compensation().map(|c| c.kind),
            Some(ActionKind::Reconnect)
        );
        for id in ["rehydrate", "reconnect", "caught-up", "start-apps"] {
            assert!(step(id).fix_forward, "{id} is not rolled back");
        }
        assert!(step("caught-up").retry.max_attempts >= 3_600);
        assert!(step("commitments").best_effort);
        // The sequencer is only read: not claimed.
        assert_eq!(built.nodes, ["a1", "p1"]);
        let state = sidecar_core::start_run("r1", runbook.clone(), 1, 1_000);
        assert_eq!(
            crate::api::destructive_steps_gated_by(&state, "approve"),
            ["rehydrate"]
        );

        // Without apps there is nothing to stop; a named sequencer is the one checked; the
        // backup set can be named.
        let mut two = inventory();
        two.nodes.insert(
            "s2".to_owned(),
            InventoryNode {
                id: "s2".to_owned(),
                kind: NodeKind::Sequencer,
                participant: None,
                app_role: None,
                uid: None,
                replicas: Vec::new(),
            },
        );
        let built = rehydrate(
            &two,
            &["p2", "s2"],
            &[
                ("with_technical_support", "true"),
                ("backup_set", "before-rehydration"),
            ],
        )
        .unwrap();
        let ids: Vec<&str> = built.runbook.steps.iter().map(|s| s.id.as_str()).collect();
        assert!(
            !ids.contains(&"stop-apps") && !ids.contains(&"start-apps"),
            "{ids:?}"
        );
        let history = built
            .runbook
            .steps
            .iter()
            .find(|s| s.id == "history")
            .unwrap();
        assert_eq!(
            history
                .nodes()
                .iter()
                .map(|n| n.id.as_str())
                .collect::<Vec<_>>(),
            ["s2"]
        );
        let backup = built
            .runbook
            .steps
            .iter()
            .find(|s| s.id == "backup")
            .unwrap();
        assert_eq!(
            backup.sent_action().unwrap().params["backup_set"],
            "before-rehydration"
        );
    }

    #[test]
    fn rehydration_is_refused_without_support_a_named_participant_its_uid_or_a_readable_history() {
        let inventory = inventory_with_app();
        let support = ("with_technical_support", "true");
        let refusal =
            |inventory: &Inventory, nodes: &[&str], params: &[(&str, &str)]| match rehydrate(
                inventory, nodes, params,
            ) {
                Err(CatalogueError::BadParameter { key, detail }) => (key, detail),
                other => panic!("expected a parameter error, got {other:?}"),
            };
        let (key, detail) = refusal(&inventory, &["p1"], &[]);
        assert_eq!(key, "with_technical_support");
        assert!(detail.contains("technical support"), "{detail}");
        let (key, detail) = refusal(&inventory, &[], &[support]);
        assert_eq!(key, "node");
        assert!(detail.contains("exactly one"), "{detail}");
        assert_eq!(refusal(&inventory, &["p1", "p2"], &[support]).0, "node");
        let (key, detail) = refusal(&inventory, &["p1", "a1"], &[support]);
        assert_eq!(key, "node");
        assert!(detail.contains("a1"), "{detail}");
        let mut only_one = inventory.clone();
        only_one.nodes.retain(|id, _| id == "p1" || id == "s1");
        assert_eq!(refusal(&only_one, &[], &[support]).0, "node", "not named");

        let mut unknown_uid = inventory.clone();
        unknown_uid.nodes.get_mut("p1").unwrap().uid = None;
        let (key, detail) = refusal(&unknown_uid, &["p1"], &[support]);
        assert_eq!(key, "node");
        assert!(detail.contains("uid"), "{detail}");
        let mut replicated = inventory.clone();
        replicated.nodes.get_mut("p1").unwrap().replicas = vec!["p1.a".into(), "p1.b".into()];
        let (_, detail) = refusal(&replicated, &["p1"], &[support]);
        assert!(detail.contains("HA replicas"), "{detail}");

        // Without a sequencer of ours the operator must state the history is complete.
        let mut no_sequencer = inventory.clone();
        no_sequencer.nodes.remove("s1");
        let (key, detail) = refusal(&no_sequencer, &["p1"], &[support]);
        assert_eq!(key, "synchronizer_never_pruned");
        assert!(detail.contains("pruning status"), "{detail}");
        let stated = rehydrate(
            &no_sequencer,
            &["p1"],
            &[support, ("synchronizer_never_pruned", "true")],
        )
        .unwrap();
        assert!(
            stated
                .runbook
                .steps
                .iter()
                .all(|s| !s.id.starts_with("history")),
            "nothing to check"
        );
        assert!(
            stated.runbook.steps.iter().any(
                |s| matches!(&s.kind, sidecar_core::StepKind::Approval { prompt, .. }
                    if prompt.contains("stated never pruned"))
            ),
            "the approval says the history was not checked"
        );
        assert_eq!(
            refusal(
                &inventory,
                &["p1"],
                &[support, ("synchronizer_never_pruned", "true")]
            )
            .0,
            "synchronizer_never_pruned",
            "a history the run can read is read"
        );
        assert_eq!(
            refusal(&inventory, &["p1"], &[support, ("catch_up", "soon")]).0,
            "catch_up"
        );
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
                    uid: None,
                    replicas: Vec::new(),
                },
                InventoryNode {
                    id: app.to_owned(),
                    kind: NodeKind::App,
                    participant: Some(participant.to_owned()),
                    app_role: Some(role.to_owned()),
                    uid: None,
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
