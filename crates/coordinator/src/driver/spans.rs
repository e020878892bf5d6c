//! The run's trace: a `run` span for the whole run and a `step` span per step, whose
//! `traceparent` goes into the signed body of each command, so the agents' action spans are
//! the steps' children. Spans live in memory for one tenure; the record keeps the
//! `traceparent`s, so a successor's spans join the same trace (under the run span it
//! remembers, which ended with the previous process).

use std::collections::BTreeMap;

use sidecar_telemetry::propagation;

use super::record::RunRecord;

pub struct RunSpans {
    run: tracing::Span,
    steps: BTreeMap<String, tracing::Span>,
}

fn run_span(record: &RunRecord, resumed: bool) -> tracing::Span {
    let runbook = &record.state.runbook.name;
    tracing::info_span!(
        parent: None,
        "run",
        otel.name = %format_args!("run {runbook}"),
        run = %record.run_id(),
        runbook = %runbook,
        organisation = %record.organisation,
        nodes = record.nodes.len(),
        resumed,
        outcome = tracing::field::Empty,
    )
}

impl RunSpans {
    /// The spans of a run this tenure starts.
    pub fn start(record: &RunRecord) -> Self {
        Self {
            run: run_span(record, false),
            steps: BTreeMap::new(),
        }
    }

    /// The spans of a run this tenure adopted: a `run` span continuing the recorded trace.
    pub fn resume(record: &RunRecord) -> Self {
        let run = run_span(record, true);
        propagation::set_parent(&run, &record.trace.run);
        Self {
            run,
            steps: BTreeMap::new(),
        }
    }

    pub fn traceparent(&self) -> String {
        propagation::traceparent(&self.run)
    }

    /// The `traceparent` of `step`'s span, opening it on first use.
    pub fn step(&mut self, record: &RunRecord, step: &str) -> String {
        let run = &self.run;
        let span = self.steps.entry(step.to_owned()).or_insert_with(|| {
            let runbook = &record.state.runbook.name;
            tracing::info_span!(
                parent: run,
                "step",
                otel.name = %format_args!("step {step}"),
                run = %record.run_id(),
                runbook = %runbook,
                step = %step,
                organisation = %record.organisation,
                outcome = tracing::field::Empty,
            )
        });
        propagation::traceparent(span)
    }

    /// Ends `step`'s span with its outcome.
    pub fn finish_step(&mut self, step: &str, outcome: &str) {
        if let Some(span) = self.steps.remove(step) {
            span.record("outcome", outcome);
        }
    }

    /// Ends the run span (and any step span still open) with the run's outcome.
    pub fn finish(self, outcome: &str) {
        for span in self.steps.into_values() {
            span.record("outcome", outcome);
        }
        self.run.record("outcome", outcome);
    }
}
