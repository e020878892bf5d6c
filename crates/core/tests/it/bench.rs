//! Prints engine transitions per second on a backup of many nodes. Asserts only correctness;
//! the number is for comparison (debug builds are far slower than release).

use sidecar_core::*;

use crate::harness::*;

// Measuring wall time is the point of this test; the engine itself never reads a clock.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
#[test]
fn engine_transitions_per_second() {
    let mut all = Vec::new();
    for i in 0..50 {
        all.push(NodeRef::new(&format!("p{i}"), NodeKind::Participant));
        all.push(NodeRef::new(&format!("m{i}"), NodeKind::Mediator));
    }
    all.push(NodeRef::new("s1", NodeKind::Sequencer));
    let runs = 20;
    let mut transitions = 0u64;
    let started = std::time::Instant::now();
    for run in 0..runs {
        let mut state = start_run(&format!("r{run}"), runbooks::backup("bs", &all), 1, SKEW);
        let now = T0;
        (state, _) = on_event(&state, Event::Started, now);
        transitions += 1;
        while !state.status.is_finished() {
            let ids: Vec<(String, u32)> = state
                .outbox
                .values()
                .map(|o| (o.command_id.clone(), o.attempt))
                .collect();
            assert!(!ids.is_empty(), "a running backup always has commands out");
            for (command_id, attempt) in ids {
                for status in [AckStatus::Accepted, done()] {
                    (state, _) = on_event(
                        &state,
                        Event::Ack {
                            command_id: command_id.clone(),
                            attempt,
                            status,
                        },
                        now,
                    );
                    transitions += 1;
                }
            }
        }
        assert_eq!(state.status, RunStatus::Succeeded);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "engine: {transitions} transitions over {runs} runs of {} nodes in {seconds:.3} s = {:.0} transitions/s",
        all.len(),
        transitions as f64 / seconds
    );
}
