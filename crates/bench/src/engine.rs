//! Engine: pure transitions per second of whole backup runs (every command Accepted, then
//! Done), on networks of 10, 100 and 1,000 nodes. A transition clones the run state and
//! applies one event; the baseline in the same run is the clone alone, so the ratio says what
//! the transition logic costs on top of copying the state. `bench engine` also runs the same
//! workloads under divan for its statistics.

use std::time::{Duration, Instant};

use sidecar_core::{AckStatus, Event, Millis, NodeKind, NodeRef, RunState, RunStatus, runbooks};

use crate::measure::{self, Summary};

const NOW: Millis = 1_800_000_000_000;

#[derive(Clone, Debug)]
pub struct Options {
    pub sizes: Vec<usize>,
    pub reps: usize,
}

impl Options {
    pub fn full() -> Self {
        Self {
            sizes: vec![10, 100, 1000],
            reps: 15,
        }
    }

    pub fn smoke() -> Self {
        Self {
            sizes: vec![10],
            reps: 2,
        }
    }
}

/// Half participants, half mediators and one sequencer: `size` nodes in all.
pub fn network(size: usize) -> Vec<NodeRef> {
    let members = size.saturating_sub(1);
    let mut nodes: Vec<NodeRef> = (0..members)
        .map(|i| {
            if i % 2 == 0 {
                NodeRef::new(&format!("p{i}"), NodeKind::Participant)
            } else {
                NodeRef::new(&format!("m{i}"), NodeKind::Mediator)
            }
        })
        .collect();
    nodes.push(NodeRef::new("s1", NodeKind::Sequencer));
    nodes
}

/// One backup run to its end; returns the transitions applied. Panics only if the engine
/// stops making progress, which is a bug the benchmark must not hide.
pub fn full_backup_run(nodes: &[NodeRef]) -> u64 {
    let mut state = sidecar_core::start_run("bench", runbooks::backup("set", nodes), 1, 1_000);
    (state, _) = sidecar_core::on_event(&state, Event::Started, NOW);
    let mut transitions = 1;
    while !state.status.is_finished() {
        let outstanding: Vec<(String, u32)> = state
            .outbox
            .values()
            .map(|o| (o.command_id.clone(), o.attempt))
            .collect();
        assert!(
            !outstanding.is_empty(),
            "a running backup always has commands out"
        );
        for (command_id, attempt) in outstanding {
            for status in [
                AckStatus::Accepted,
                AckStatus::Done {
                    result_hash: vec![1, 2, 3],
                },
            ] {
                (state, _) = sidecar_core::on_event(
                    &state,
                    Event::Ack {
                        command_id: command_id.clone(),
                        attempt,
                        status,
                    },
                    NOW,
                );
                transitions += 1;
            }
        }
    }
    assert_eq!(state.status, RunStatus::Succeeded);
    transitions
}

/// The state in the middle of a run of `nodes` (the members' step out), for the clone floor.
pub fn mid_run_state(nodes: &[NodeRef]) -> RunState {
    let state = sidecar_core::start_run("bench", runbooks::backup("set", nodes), 1, 1_000);
    sidecar_core::on_event(&state, Event::Started, NOW).0
}

#[derive(Clone, Debug)]
pub struct SizeResult {
    pub nodes: usize,
    pub transitions_per_run: u64,
    pub per_transition_us: Summary,
    pub clone_us: Summary,
}

pub fn run(options: &Options) -> anyhow::Result<Vec<SizeResult>> {
    measure::heading(
        "engine",
        "pure transitions of whole backup runs (clone + apply) vs cloning the state alone",
    );
    let mut results = Vec::new();
    for &size in &options.sizes {
        let nodes = network(size);
        let transitions = full_backup_run(&nodes);
        let mut per_transition = Vec::new();
        let sampling = Instant::now();
        // Large networks take seconds per run: stop after ten seconds, with three runs at least.
        while per_transition.len() < options.reps
            && (per_transition.len() < 3.min(options.reps)
                || sampling.elapsed() < Duration::from_secs(10))
        {
            let started = Instant::now();
            std::hint::black_box(full_backup_run(std::hint::black_box(&nodes)));
            per_transition.push(started.elapsed().as_secs_f64() * 1e6 / transitions as f64);
        }
        let state = mid_run_state(&nodes);
        let mut clones = Vec::new();
        for _ in 0..options.reps {
            let started = Instant::now();
            let mut copies = 0u64;
            while started.elapsed() < Duration::from_millis(20) || copies < 10 {
                std::hint::black_box(std::hint::black_box(&state).clone());
                copies += 1;
            }
            clones.push(started.elapsed().as_secs_f64() * 1e6 / copies as f64);
        }
        let result = SizeResult {
            nodes: size,
            transitions_per_run: transitions,
            per_transition_us: Summary::of(&per_transition)
                .ok_or_else(|| anyhow::anyhow!("no samples"))?,
            clone_us: Summary::of(&clones).ok_or_else(|| anyhow::anyhow!("no samples"))?,
        };
        print(&result);
        results.push(result);
    }
    Ok(results)
}

fn print(result: &SizeResult) {
    println!(
        " backup run of {} nodes: {} transitions per run; {:.0} transitions/s at the median",
        result.nodes,
        result.transitions_per_run,
        1e6 / result.per_transition_us.median
    );
    println!(
        "{}",
        measure::line("one transition", &result.per_transition_us, "µs")
    );
    println!(
        "{}",
        measure::line("clone of a mid-run state", &result.clone_us, "µs")
    );
    println!(
        "{}",
        measure::ratio_line(
            "transition / clone",
            result.per_transition_us.median,
            result.clone_us.median,
            None
        )
    );
}
