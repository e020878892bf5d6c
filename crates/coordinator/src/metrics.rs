//! The coordinator's instruments, built once from the meter `main.rs` hands over and passed as
//! values (no global registry). Registry and connection views are observed at collection time;
//! runs, steps and takeovers are recorded when they happen.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sidecar_core::Millis;
use sidecar_telemetry::{Counter, Histogram, KeyValue, Meter};

use crate::driver::ports::{Clock, SystemClock};

/// Buckets (seconds) from a quick probe step to a long restore.
const DURATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0, 3600.0,
];

#[derive(Clone, Debug)]
pub struct CoordinatorMetrics {
    organisation: KeyValue,
    runs: Counter<u64>,
    run_duration: Histogram<f64>,
    step_duration: Histogram<f64>,
    takeovers: Counter<u64>,
    /// When the organisation's latest backup run succeeded (unix ms), for the age gauge.
    last_backup: Arc<Mutex<Option<Millis>>>,
}

impl Default for CoordinatorMetrics {
    /// Instruments that record nothing (tests, the simulation).
    fn default() -> Self {
        Self::new(&sidecar_telemetry::noop_meter(), "")
    }
}

impl CoordinatorMetrics {
    pub fn new(meter: &Meter, organisation: &str) -> Self {
        let histogram = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build()
        };
        let metrics = Self {
            organisation: KeyValue::new("organisation", organisation.to_owned()),
            runs: meter
                .u64_counter("canton_coordinator_runs")
                .with_description("Finished runs by runbook and outcome")
                .build(),
            run_duration: histogram(
                "canton_coordinator_run_duration",
                "Start to finish of a run, by runbook and outcome",
            ),
            step_duration: histogram(
                "canton_coordinator_step_duration",
                "Start to finish of a step, by runbook, step and outcome",
            ),
            takeovers: meter
                .u64_counter("canton_coordinator_failovers")
                .with_description(
                    "Leader tenures this coordinator started (fence and takeover of the organisation's runs)",
                )
                .build(),
            last_backup: Arc::new(Mutex::new(None)),
        };
        let (last_backup, organisation_label) =
            (metrics.last_backup.clone(), metrics.organisation.clone());
        meter
            .f64_observable_gauge("canton_coordinator_backup_age")
            .with_unit("s")
            .with_description("Time since the organisation's latest successful backup run finished")
            .with_callback(move |observer| {
                let last = *last_backup.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(at) = last {
                    let age_ms = SystemClock.now_ms().saturating_sub(at).max(0);
                    observer.observe(
                        age_ms as f64 / 1000.0,
                        std::slice::from_ref(&organisation_label),
                    );
                }
            })
            .build();
        metrics
    }

    pub fn run_finished(&self, runbook: &str, outcome: &str, took: Duration) {
        let attributes = [
            self.organisation.clone(),
            KeyValue::new("runbook", runbook.to_owned()),
            KeyValue::new("outcome", outcome.to_owned()),
        ];
        self.runs.add(1, &attributes);
        self.run_duration.record(took.as_secs_f64(), &attributes);
    }

    pub fn step_finished(&self, runbook: &str, step: &str, outcome: &str, took: Duration) {
        self.step_duration.record(
            took.as_secs_f64(),
            &[
                self.organisation.clone(),
                KeyValue::new("runbook", runbook.to_owned()),
                KeyValue::new("step", step.to_owned()),
                KeyValue::new("outcome", outcome.to_owned()),
            ],
        );
    }

    pub fn took_over(&self) {
        self.takeovers
            .add(1, std::slice::from_ref(&self.organisation));
    }

    /// A backup run of the organisation succeeded at `at` (unix ms); older news is ignored.
    pub fn backup_succeeded(&self, at: Millis) {
        let mut last = self
            .last_backup
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|known| known < at) {
            *last = Some(at);
        }
    }
}

/// Lower-case label of a status (`Succeeded` → `succeeded`).
pub fn status_label(status: impl std::fmt::Debug) -> String {
    format!("{status:?}").to_lowercase()
}
