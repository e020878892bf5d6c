//! Text and JSON output. JSON is one object per line, with stable field names.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use proto_sidecar as pb;
use serde_json::{Value, json};

use crate::{OpsError, Output};

pub struct Out {
    output: Output,
}

fn enum_name(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

pub fn run_status(status: pb::RunStatus) -> String {
    enum_name(status.as_str_name(), "RUN_STATUS_")
}

fn step_status(status: pb::StepStatus) -> String {
    enum_name(status.as_str_name(), "STEP_STATUS_")
}

fn ack_status(status: pb::AckStatus) -> String {
    enum_name(status.as_str_name(), "ACK_STATUS_")
}

pub fn parse_status(text: &str) -> Result<pb::RunStatus, OpsError> {
    pb::RunStatus::from_str_name(&format!("RUN_STATUS_{}", text.to_ascii_uppercase().replace('-', "_")))
        .ok_or_else(|| OpsError::Usage(format!(
            "--status {text:?}: expected pending, running, awaiting_approval, awaiting_decision, succeeded, failed, cancelled or compensated"
        )))
}

fn node_json(node: &pb::NodeResult) -> Value {
    let mut value = json!({
        "node": node.node,
        "command_id": node.command_id,
        "attempt": node.attempt,
        "status": ack_status(node.status()),
        "detail": node.detail,
        "result_hash": hex::encode(&node.result_hash),
    });
    if !node.result.is_empty() {
        value["result"] = serde_json::from_slice(&node.result)
            .unwrap_or_else(|_| Value::String(hex::encode(&node.result)));
    }
    if let Some(progress) = &node.progress {
        value["progress"] = json!({"done": progress.done, "total": progress.total});
    }
    value
}

pub fn summary_json(run: &pb::RunSummary) -> Value {
    json!({
        "run_id": run.run_id,
        "runbook": run.runbook,
        "status": run_status(run.status()),
        "current_step": run.current_step,
        "owner_epoch": run.owner_epoch,
        "detail": run.detail,
        "nodes": run.nodes,
        "started_at_unix_ms": run.started_at_unix_ms,
        "finished_at_unix_ms": run.finished_at_unix_ms,
        "steps": run.steps.iter().map(|step| json!({
            "step": step.step,
            "status": step_status(step.status()),
            "started_at_unix_ms": step.started_at_unix_ms,
            "finished_at_unix_ms": step.finished_at_unix_ms,
            "detail": step.detail,
            "nodes": step.nodes.iter().map(node_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn event_json(event: &pb::RunEvent) -> Value {
    let mut value = json!({
        "run_id": event.run_id,
        "seq": event.seq,
        "at_unix_ms": event.at_unix_ms,
        "kind": enum_name(event.kind().as_str_name(), "RUN_EVENT_KIND_"),
        "run_status": run_status(event.run_status()),
    });
    if !event.step.is_empty() {
        value["step"] = json!(event.step);
        value["step_status"] = json!(step_status(event.step_status()));
    }
    if !event.node.is_empty() {
        value["node"] = json!(event.node);
    }
    if let Some(node) = &event.node_result {
        value["node_result"] = node_json(node);
    }
    if !event.message.is_empty() {
        value["message"] = json!(event.message);
    }
    if let Some(run) = &event.run {
        value["run"] = summary_json(run);
    }
    value
}

fn line(value: &Value) {
    println!("{value}");
}

/// Sequencer time in µs as RFC 3339 (0 reads as never).
fn instant(micros: i64) -> String {
    match u64::try_from(micros) {
        Ok(micros) if micros > 0 => humantime::format_rfc3339_micros(
            std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros),
        )
        .to_string(),
        _ => "-".to_owned(),
    }
}

fn optional_micros(micros: i64) -> Value {
    if micros > 0 {
        json!(micros)
    } else {
        Value::Null
    }
}

pub fn dr_json(dr: &pb::GetDrTimestampResponse) -> Value {
    json!({
        "run_id": dr.run_id,
        "organisation": dr.organisation,
        "timestamp_micros": dr.timestamp_micros,
        "timestamp": instant(dr.timestamp_micros),
        "agreed_period_end_micros": dr.agreed_period_end_micros,
        "margin_micros": dr.margin_micros,
        "quorum": dr.quorum,
        "required": dr.required,
        "listed": dr.listed,
        "agreeing": dr.agreeing,
        "outside": dr.outside.iter().map(|o| json!({
            "node": o.node,
            "last_agreed_with_quorum_micros": optional_micros(o.last_agreed_with_quorum_micros),
        })).collect::<Vec<_>>(),
        "missing": dr.missing.iter().map(|m| json!({"node": m.node, "reason": m.reason})).collect::<Vec<_>>(),
        "evidence": dr.evidence.iter().map(|row| json!({
            "node": row.node,
            "counter": row.counter,
            "last_agreed_micros": optional_micros(row.last_agreed_micros),
            "mismatch_from_micros": optional_micros(row.mismatch_from_micros),
        })).collect::<Vec<_>>(),
        "recorded_at_unix_ms": dr.recorded_at_unix_ms,
    })
}

pub fn proposal_json(view: &pb::ProposalView) -> Value {
    let status =
        pb::ProposalStatus::try_from(view.status).map_or("unknown", |status| match status {
            pb::ProposalStatus::Awaiting => "awaiting",
            pb::ProposalStatus::Agreed => "agreed",
            pb::ProposalStatus::Aborted => "aborted",
            pb::ProposalStatus::Unspecified => "unknown",
        });
    let parameters: serde_json::Map<String, Value> = view
        .parameters
        .iter()
        .map(|p| (p.key.clone(), json!(p.value)))
        .collect();
    json!({
        "proposal_hash": view.proposal_hash,
        "proposal_id": view.proposal_id,
        "runbook": view.runbook,
        "proposer": view.proposer,
        "status": status,
        "organisations": view.organisations.iter().map(|o| o.organisation.clone()).collect::<Vec<_>>(),
        "accepted": view.accepted,
        "missing": view.missing,
        "aborted_by": (!view.aborted_by.is_empty()).then_some(&view.aborted_by),
        "abort_reason": (!view.abort_reason.is_empty()).then_some(&view.abort_reason),
        "parameters": parameters,
        "created_at_unix_ms": view.created_at_unix_ms,
        "phases": view.phases.iter().map(|phase| json!({
            "name": phase.name,
            "done_by": phase.done_by,
            "missing": phase.missing,
            "results": phase.results.iter().map(|r| json!({
                "node": r.node,
                "status": enum_name(
                    pb::AckStatus::try_from(r.status).unwrap_or_default().as_str_name(),
                    "ACK_STATUS_",
                ),
                "detail": r.detail,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

impl Out {
    pub fn new(output: Output) -> Self {
        Self { output }
    }

    /// Proposals: one line each with status and who is missing, then the parameters.
    pub fn proposals(&self, views: &[pb::ProposalView]) {
        if self.json() {
            for view in views {
                line(&proposal_json(view));
            }
            return;
        }
        if views.is_empty() {
            println!("no proposals on the network");
        }
        for view in views {
            let value = proposal_json(view);
            let short = view.proposal_hash.get(..12).unwrap_or(&view.proposal_hash);
            println!(
                "{short}  {} {} by {}: {}",
                view.runbook,
                view.proposal_id,
                view.proposer,
                value["status"].as_str().unwrap_or_default()
            );
            println!("  accepted: {}", view.accepted.join(", "));
            if !view.missing.is_empty() {
                println!("  waiting for: {}", view.missing.join(", "));
            }
            if !view.aborted_by.is_empty() {
                println!("  aborted by {}: {}", view.aborted_by, view.abort_reason);
            }
            for phase in &view.phases {
                println!(
                    "  phase {}: done by [{}], waiting for [{}]",
                    phase.name,
                    phase.done_by.join(", "),
                    phase.missing.join(", ")
                );
                for result in &phase.results {
                    let status = pb::AckStatus::try_from(result.status).unwrap_or_default();
                    println!(
                        "    {} {} {}",
                        result.node,
                        enum_name(status.as_str_name(), "ACK_STATUS_"),
                        result.detail
                    );
                }
            }
            for parameter in &view.parameters {
                if parameter.key == "timestamp_micros" {
                    let micros = parameter.value.parse().unwrap_or(0);
                    println!("  timestamp: {} ({micros} µs)", instant(micros));
                } else {
                    println!("  {}: {}", parameter.key, parameter.value);
                }
            }
        }
    }

    /// A recovery timestamp with its evidence table.
    pub fn dr_timestamp(&self, dr: &pb::GetDrTimestampResponse) {
        if self.json() {
            line(&dr_json(dr));
            return;
        }
        println!(
            "recovery timestamp {} ({} µs), run {}",
            instant(dr.timestamp_micros),
            dr.timestamp_micros,
            dr.run_id
        );
        println!(
            "  period end {} agreed by {} of {} listed SV participants (quorum {}: {} needed), margin {}",
            instant(dr.agreed_period_end_micros),
            dr.agreeing.len(),
            dr.listed.len(),
            dr.quorum,
            dr.required,
            humantime::format_duration(std::time::Duration::from_micros(
                u64::try_from(dr.margin_micros).unwrap_or(0)
            )),
        );
        println!("  agreeing: {}", dr.agreeing.join(", "));
        for outsider in &dr.outside {
            println!(
                "  outside the quorum: {} (last agreed with it at {})",
                outsider.node,
                instant(outsider.last_agreed_with_quorum_micros)
            );
        }
        for missing in &dr.missing {
            println!("  no answer: {} ({})", missing.node, missing.reason);
        }
        println!(
            "{:<20} {:<20} {:<30} {:<30}",
            "NODE", "COUNTER", "LAST AGREED", "MISMATCH FROM"
        );
        for row in &dr.evidence {
            println!(
                "{:<20} {:<20} {:<30} {:<30}",
                row.node,
                row.counter,
                instant(row.last_agreed_micros),
                instant(row.mismatch_from_micros)
            );
        }
    }

    pub fn json(&self) -> bool {
        self.output == Output::Json
    }

    pub fn value(&self, value: &Value) {
        line(value);
    }

    pub fn nodes(&self, nodes: &pb::ListNodesResponse) {
        for view in &nodes.nodes {
            let state = view.state.clone().unwrap_or_default();
            let health = enum_name(view.health().as_str_name(), "NODE_HEALTH_");
            let kind = enum_name(state.kind().as_str_name(), "NODE_KIND_");
            let id = if state.replica.is_empty() {
                state.node.clone()
            } else {
                format!("{}.{}", state.node, state.replica)
            };
            if self.json() {
                line(&json!({
                    "node": id, "kind": kind, "organisation": state.organisation,
                    "uid": state.uid, "health": health, "heartbeat_age_ms": view.heartbeat_age_ms,
                    "verdict_suspended": view.verdict_suspended,
                    "condition": enum_name(state.condition().as_str_name(), "NODE_CONDITION_"),
                }));
            } else {
                println!(
                    "{id:<16} {kind:<12} {:<10} {health:<8} {}",
                    state.organisation,
                    if view.verdict_suspended {
                        "(verdicts suspended)"
                    } else {
                        ""
                    }
                );
            }
        }
    }

    pub fn plan(&self, plan: &pb::PlanResponse) {
        if self.json() {
            for step in &plan.steps {
                line(&json!({
                    "step": step.step, "kind": step.kind, "action": step.action, "nodes": step.nodes,
                    "timeout_ms": step.timeout_ms, "max_attempts": step.max_attempts,
                    "idempotency": step.idempotency, "fix_forward": step.fix_forward,
                    "needs_approval": step.needs_approval, "compensated_by": step.compensated_by,
                }));
            }
            for warning in &plan.warnings {
                line(&json!({"warning": warning}));
            }
            return;
        }
        println!("runbook {}", plan.runbook);
        for (index, step) in plan.steps.iter().enumerate() {
            println!("{:>2}. {}", index + 1, step.description);
        }
        for warning in &plan.warnings {
            println!("warning: {warning}");
        }
    }

    pub fn started(&self, run: &pb::RunSummary, existing: bool) {
        if self.json() {
            line(&json!({"started": !existing, "existing": existing, "run": summary_json(run)}));
        } else if existing {
            println!(
                "run {} already exists ({})",
                run.run_id,
                run_status(run.status())
            );
        } else {
            println!(
                "started run {} ({} on {})",
                run.run_id,
                run.runbook,
                run.nodes.join(", ")
            );
        }
    }

    pub fn summary(&self, what: &str, run: &pb::RunSummary) {
        if self.json() {
            line(&json!({"result": what, "run": summary_json(run)}));
        } else {
            println!("{what}: run {} is {}", run.run_id, run_status(run.status()));
        }
    }

    /// A run with its steps, node outcomes and results.
    pub fn show(&self, run: &pb::RunSummary) {
        if self.json() {
            line(&summary_json(run));
            return;
        }
        println!(
            "run {} ({}) is {}{}",
            run.run_id,
            run.runbook,
            run_status(run.status()),
            if run.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", run.detail)
            }
        );
        for step in &run.steps {
            println!("  {:<24} {}", step.step, step_status(step.status()));
            for node in &step.nodes {
                println!(
                    "    {:<22} {:<15} {}",
                    node.node,
                    ack_status(node.status()),
                    node.detail
                );
                if !node.result.is_empty() {
                    println!("      result: {}", String::from_utf8_lossy(&node.result));
                }
            }
        }
    }

    pub fn runs(&self, runs: &pb::ListRunsResponse) {
        for run in &runs.runs {
            if self.json() {
                line(&summary_json(run));
            } else {
                println!(
                    "{:<28} {:<11} {:<18} step {}",
                    run.run_id,
                    run.runbook,
                    run_status(run.status()),
                    if run.current_step.is_empty() {
                        "-"
                    } else {
                        &run.current_step
                    }
                );
            }
        }
    }

    pub fn progress(&self) -> Progress {
        let bars = (!self.json() && std::io::stderr().is_terminal()).then(MultiProgress::new);
        Progress {
            json: self.json(),
            bars,
            steps: BTreeMap::new(),
        }
    }
}

/// WatchRun rendering: a bar per step on a terminal, plain lines otherwise, JSON per event.
pub struct Progress {
    json: bool,
    bars: Option<MultiProgress>,
    steps: BTreeMap<String, ProgressBar>,
}

impl Progress {
    fn bar(&mut self, step: &str, total: u64) -> Option<&ProgressBar> {
        let bars = self.bars.as_ref()?;
        if !self.steps.contains_key(step) {
            let bar = bars.add(ProgressBar::new(total.max(1)));
            bar.set_style(
                ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(step.to_owned());
            self.steps.insert(step.to_owned(), bar);
        }
        self.steps.get(step)
    }

    fn text(&self, text: String) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(text);
            }
            None => println!("{text}"),
        }
    }

    pub fn event(&mut self, event: &pb::RunEvent) {
        if self.json {
            line(&event_json(event));
            return;
        }
        let kind = event.kind();
        match kind {
            pb::RunEventKind::Snapshot => {
                if let Some(run) = &event.run {
                    self.text(format!(
                        "run {} ({}) is {}",
                        run.run_id,
                        run.runbook,
                        run_status(run.status())
                    ));
                    for step in &run.steps {
                        let done = step
                            .nodes
                            .iter()
                            .filter(|n| n.status() == pb::AckStatus::Done)
                            .count() as u64;
                        if let Some(bar) = self.bar(&step.step, step.nodes.len() as u64) {
                            bar.set_position(done);
                            bar.set_message(step_status(step.status()));
                        }
                    }
                }
            }
            pb::RunEventKind::StepStarted => {
                let total = event
                    .run
                    .as_ref()
                    .and_then(|r| r.steps.iter().find(|s| s.step == event.step))
                    .map_or(1, |s| s.nodes.len() as u64);
                if self.bars.is_some() {
                    if let Some(bar) = self.bar(&event.step, total) {
                        bar.set_message("running");
                    }
                } else {
                    self.text(format!("step {} started", event.step));
                }
            }
            pb::RunEventKind::NodeProgress => {
                if let Some(progress) = event.node_result.as_ref().and_then(|n| n.progress.as_ref()) {
                    let text = format!("  {} {}: {}/{}", event.step, event.node, progress.done, progress.total);
                    match self.bar(&event.step, 1) {
                        Some(bar) => bar.set_message(text.trim().to_owned()),
                        None => self.text(text),
                    }
                }
            }
            pb::RunEventKind::NodeFinished => {
                let result = event.node_result.clone().unwrap_or_default();
                let status = ack_status(result.status());
                let detail = if result.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", result.detail)
                };
                if let Some(bar) = self.bar(&event.step, 1) {
                    if result.status() == pb::AckStatus::Done {
                        if bar.position() + 1 > bar.length().unwrap_or(1) {
                            bar.inc_length(1);
                        }
                        bar.inc(1);
                    } else {
                        let text = format!("  {} {}: {status}{detail}", event.step, event.node);
                        self.text(text);
                    }
                } else {
                    self.text(format!("  {} {}: {status}{detail}", event.step, event.node));
                }
            }
            pb::RunEventKind::StepFinished => {
                let status = step_status(event.step_status());
                match self.steps.get(&event.step) {
                    Some(bar) => bar.finish_with_message(status),
                    None => self.text(format!("step {} {status}", event.step)),
                }
            }
            pb::RunEventKind::ApprovalRequired => self.text(format!(
                "step {} waits for approval: canton-ops approve {} {} --nodes <every node of the step>",
                event.step, event.run_id, event.step
            )),
            pb::RunEventKind::DecisionRequired => self.text(format!(
                "step {} needs a decision: canton-ops resume {} {} <node> --decision mark-done|retry|abort",
                event.step, event.run_id, event.step
            )),
            pb::RunEventKind::RunFinished => {
                let mut text = format!("run {} {}", event.run_id, run_status(event.run_status()));
                if !event.message.is_empty() {
                    text.push_str(&format!(": {}", event.message));
                }
                self.text(text);
            }
            pb::RunEventKind::Message => self.text(event.message.clone()),
            pb::RunEventKind::Unspecified => {}
        }
    }

    pub fn finish(&mut self) {
        for bar in self.steps.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}
