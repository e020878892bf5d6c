//! What a coordinator concludes while faults are injected, read from its own `/metrics` every
//! 100 ms on a thread of its own: the detector's verdict per node, whether the detector trusts
//! its view, whether the coordinator holds its organisation's lease. Verdicts are computed when
//! asked, not logged, so sampling them is how a test sees one; a Down lasts at least until the
//! node's next heartbeat arrives, far longer than the sampling period.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use e2e::prometheus_text;

const PERIOD: Duration = Duration::from_millis(100);

/// One scrape of the coordinator's metrics.
#[derive(Clone, Debug)]
pub struct Reading {
    pub at: Instant,
    /// Nodes whose verdict is Down.
    pub down: Vec<String>,
    /// Nodes whose verdict is Alive.
    pub alive: Vec<String>,
    pub leader: bool,
    pub detector_healthy: bool,
}

/// Samples one coordinator's verdicts until dropped.
pub struct VerdictWatch {
    readings: Arc<Mutex<Vec<Reading>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl VerdictWatch {
    pub fn start(metrics_url: &str) -> Self {
        let readings = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (readings, stop, url) = (readings.clone(), stop.clone(), metrics_url.to_owned());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    // A frozen or restarting coordinator answers late or not at all: that is
                    // a gap in the readings, not a verdict.
                    if let Ok(reading) = read(&url) {
                        readings
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(reading);
                    }
                    std::thread::sleep(PERIOD.saturating_sub(started.elapsed()));
                }
            })
        };
        Self {
            readings,
            stop,
            thread: Some(thread),
        }
    }

    /// Watches the organisation's coordinator of `stack` (started with `serve_metrics`).
    pub fn of_coordinator(stack: &e2e::stack::Stack) -> Self {
        let url = stack.coordinators[crate::support::ORGANISATION]
            .metrics_url
            .as_deref()
            .expect("the coordinator serves /metrics (Stack::serve_metrics)");
        Self::start(url)
    }

    /// Readings taken at or after `since`, oldest first.
    pub fn since(&self, since: Instant) -> Vec<Reading> {
        self.readings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|reading| reading.at >= since)
            .cloned()
            .collect()
    }

    pub fn latest(&self) -> Option<Reading> {
        self.readings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
            .cloned()
    }

    /// Every (node, time after `since`) read Down at or after `since`, except `except`.
    pub fn downs_since(&self, since: Instant, except: &[&str]) -> Vec<(String, Duration)> {
        self.since(since)
            .into_iter()
            .flat_map(|reading| {
                reading
                    .down
                    .into_iter()
                    .filter(|node| !except.contains(&node.as_str()))
                    .map(move |node| (node, reading.at - since))
            })
            .collect()
    }

    /// Waits until the latest reading (taken after this call) satisfies `holds`; fails after
    /// `deadline`. Returns how long it took.
    pub fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        holds: impl Fn(&Reading) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            if self
                .latest()
                .is_some_and(|reading| reading.at >= started && holds(&reading))
            {
                eprintln!("{what} after {:?}", started.elapsed());
                return started.elapsed();
            }
            assert!(
                started.elapsed() < deadline,
                "{what}: not within {deadline:?}; last reading {:?}",
                self.latest()
            );
            std::thread::sleep(PERIOD);
        }
    }
}

impl Drop for VerdictWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read(url: &str) -> anyhow::Result<Reading> {
    let (status, body) = prometheus_text::scrape(url)?;
    anyhow::ensure!(status == 200, "HTTP {status}");
    let exposition = prometheus_text::parse(&body).map_err(anyhow::Error::msg)?;
    let nodes_with = |health: &str| -> Vec<String> {
        exposition
            .samples
            .iter()
            .filter(|s| s.name == "canton_coordinator_node_health" && s.value == 1.0)
            .filter(|s| s.labels.get("health").map(String::as_str) == Some(health))
            .filter_map(|s| s.labels.get("node").cloned())
            .collect()
    };
    let flag = |name: &str| exposition.values(name, &[]).first() == Some(&1.0);
    Ok(Reading {
        at: Instant::now(),
        down: nodes_with("down"),
        alive: nodes_with("alive"),
        leader: flag("canton_coordinator_leader"),
        detector_healthy: flag("canton_coordinator_detector_healthy"),
    })
}
