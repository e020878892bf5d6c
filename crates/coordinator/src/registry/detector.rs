//! The pure failure detector: verdicts from heartbeat arrival times and the detector's own
//! health. Every method takes `now`; nothing here reads a clock.

use std::collections::BTreeMap;
use std::time::Duration;

use proto_sidecar::{Heartbeat, Role};
use sidecar_bus::NodeId;
use tokio::time::Instant;

/// Failure-detector settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectorConfig {
    /// The heartbeat interval assumed for nodes that do not announce their own.
    pub heartbeat_interval: Duration,
    /// Silence after which a node is down; also how long the detector must be healthy before
    /// it gives negative verdicts again.
    pub failure_timeout: Duration,
    /// A detector tick this much later than scheduled means our own process stalled, so the
    /// silence we measured may be ours, not the nodes'.
    pub max_tick_lateness: Duration,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            failure_timeout: Duration::from_secs(5),
            max_tick_lateness: Duration::from_millis(500),
        }
    }
}

/// Detector settings that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DetectorConfigError {
    #[error(
        "registry.failure_timeout {failure_timeout:?} must exceed two registry.heartbeat_interval ({heartbeat_interval:?} each), or nodes go down before they are suspect"
    )]
    FailureTimeoutTooShort {
        failure_timeout: Duration,
        heartbeat_interval: Duration,
    },
    #[error("registry.heartbeat_interval and registry.max_tick_lateness must be above zero")]
    ZeroDuration,
}

impl DetectorConfig {
    pub fn validate(&self) -> Result<(), DetectorConfigError> {
        if self.heartbeat_interval.is_zero() || self.max_tick_lateness.is_zero() {
            return Err(DetectorConfigError::ZeroDuration);
        }
        if self.failure_timeout <= self.heartbeat_interval * 2 {
            return Err(DetectorConfigError::FailureTimeoutTooShort {
                failure_timeout: self.failure_timeout,
                heartbeat_interval: self.heartbeat_interval,
            });
        }
        Ok(())
    }
}

/// An advisory verdict on one node or replica. Step outcomes never depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// No verdict: never heard within the first failure timeout, or a negative verdict held
    /// back while the detector is unhealthy.
    Unknown,
    Alive,
    /// More than two heartbeat intervals of silence.
    Suspect,
    /// `failure_timeout` of silence while the detector was healthy throughout.
    Down,
}

/// Why the detector distrusts its own view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trouble {
    /// Our tick ran late: the process or host stalled.
    LateTick,
    /// The NATS client dropped heartbeats (slow consumer).
    DroppedMessages,
    /// A JetStream write did not commit in time: our server may be on the minority side of a
    /// partition, where heartbeats from the majority's nodes cannot reach us.
    NoQuorum,
}

/// What we know about one node or replica.
#[derive(Clone, Debug)]
pub struct Tracked {
    /// Monotonic arrival of the latest heartbeat; `None` if only expected so far.
    pub last_arrival: Option<Instant>,
    /// Since when we expect heartbeats (first sight or registration).
    pub expected_since: Instant,
    pub interval: Duration,
    pub last: Option<Heartbeat>,
}

/// One node or replica with its verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub node: NodeId,
    pub health: Health,
    /// Time since the latest heartbeat arrived; `None` if none has.
    pub heartbeat_age: Option<Duration>,
    pub last: Option<Heartbeat>,
}

/// A logical node with its HA replicas (or just itself when it has none).
#[derive(Clone, Debug, PartialEq)]
pub struct LogicalNodeView {
    pub logical: String,
    pub replicas: Vec<NodeView>,
    /// The alive replica that reports itself active (the most recently heard one if several
    /// do), or a standalone node that is alive.
    pub active: Option<NodeId>,
}

/// Heartbeat ages and the detector's own health.
#[derive(Clone, Debug)]
pub struct Detector {
    config: DetectorConfig,
    connected: bool,
    /// The detector has been healthy (connected, on time, nothing dropped) since this instant.
    healthy_since: Instant,
    nodes: BTreeMap<NodeId, Tracked>,
}

impl Detector {
    pub fn new(config: DetectorConfig, now: Instant) -> Self {
        Self {
            config,
            connected: true,
            healthy_since: now,
            nodes: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// A node we expect to hear from (known from its stored state) even if it never speaks.
    pub fn expect(&mut self, node: NodeId, now: Instant) {
        let interval = self.config.heartbeat_interval;
        self.nodes.entry(node).or_insert(Tracked {
            last_arrival: None,
            expected_since: now,
            interval,
            last: None,
        });
    }

    pub fn on_heartbeat(&mut self, node: NodeId, heartbeat: Heartbeat, now: Instant) {
        let interval = match heartbeat.interval_ms {
            0 => self.config.heartbeat_interval,
            ms => Duration::from_millis(ms),
        };
        let tracked = self.nodes.entry(node).or_insert(Tracked {
            last_arrival: None,
            expected_since: now,
            interval,
            last: None,
        });
        tracked.last_arrival = Some(now);
        tracked.interval = interval;
        tracked.last = Some(heartbeat);
    }

    pub fn on_disconnected(&mut self) {
        self.connected = false;
    }

    /// Connected again: trust returns only after a full failure timeout from now.
    pub fn on_connected(&mut self, now: Instant) {
        if !self.connected {
            self.connected = true;
            self.healthy_since = now;
        }
    }

    pub fn on_trouble(&mut self, _trouble: Trouble, now: Instant) {
        self.healthy_since = self.healthy_since.max(now);
    }

    /// A tick scheduled for `scheduled` ran at `now`.
    pub fn on_tick(&mut self, scheduled: Instant, now: Instant) -> Option<Trouble> {
        let late = now.saturating_duration_since(scheduled) > self.config.max_tick_lateness;
        late.then(|| {
            self.on_trouble(Trouble::LateTick, now);
            Trouble::LateTick
        })
    }

    /// Whether negative verdicts are held back at `now`.
    pub fn suspended(&self, now: Instant) -> bool {
        !self.connected || now < self.healthy_since + self.config.failure_timeout
    }

    pub fn health(&self, node: &NodeId, now: Instant) -> Option<Health> {
        self.nodes
            .get(node)
            .map(|tracked| self.verdict(tracked, now))
    }

    fn verdict(&self, tracked: &Tracked, now: Instant) -> Health {
        let silent_since = tracked.last_arrival.unwrap_or(tracked.expected_since);
        let silence = now.saturating_duration_since(silent_since);
        let raw = if tracked.last_arrival.is_some() && silence <= tracked.interval * 2 {
            Health::Alive
        } else if tracked.last_arrival.is_none() && silence < self.config.failure_timeout {
            Health::Unknown
        } else if silence < self.config.failure_timeout {
            Health::Suspect
        } else {
            Health::Down
        };
        if raw > Health::Alive && self.suspended(now) {
            Health::Unknown
        } else {
            raw
        }
    }

    fn node_view(&self, node: &NodeId, tracked: &Tracked, now: Instant) -> NodeView {
        NodeView {
            node: node.clone(),
            health: self.verdict(tracked, now),
            heartbeat_age: tracked
                .last_arrival
                .map(|at| now.saturating_duration_since(at)),
            last: tracked.last.clone(),
        }
    }

    /// The group of one logical node, or `None` when no replica of it is tracked. Reads only
    /// that node's entries: the driver asks once per command sent, and a whole view per
    /// command is quadratic in the network size.
    pub fn group(&self, now: Instant, logical: &str) -> Option<LogicalNodeView> {
        let first = NodeId::new(logical).ok()?;
        // Its replicas sort after it (`<logical>.<replica>`), among other ids that share the
        // prefix (`<logical>-x`), and before any id that does not.
        let replicas: Vec<NodeView> = self
            .nodes
            .range(first..)
            .take_while(|(node, _)| node.as_str().starts_with(logical))
            .filter(|(node, _)| node.logical() == logical)
            .map(|(node, tracked)| self.node_view(node, tracked, now))
            .collect();
        if replicas.is_empty() {
            return None;
        }
        Some(LogicalNodeView {
            logical: logical.to_owned(),
            active: active_replica(&replicas),
            replicas,
        })
    }

    /// Every node grouped under its logical node, ordered by logical id. Grouped by key, not
    /// by adjacency: `p1-b` sorts between `p1` and `p1.a`.
    pub fn view(&self, now: Instant) -> Vec<LogicalNodeView> {
        let mut groups: BTreeMap<&str, Vec<NodeView>> = BTreeMap::new();
        for (node, tracked) in &self.nodes {
            groups
                .entry(node.logical())
                .or_default()
                .push(self.node_view(node, tracked, now));
        }
        groups
            .into_iter()
            .map(|(logical, replicas)| LogicalNodeView {
                logical: logical.to_owned(),
                active: active_replica(&replicas),
                replicas,
            })
            .collect()
    }
}

impl LogicalNodeView {
    /// The replica a new command to this logical node should go to, or `None` when it has no
    /// replicas: the active one; while none is known (mid-failover), the most recently heard
    /// replica, else the first. The command's own answer or expiry decides what happens next;
    /// this choice only decides where an attempt goes.
    pub fn command_replica(&self) -> Option<NodeId> {
        let replicas: Vec<&NodeView> = self
            .replicas
            .iter()
            .filter(|view| view.node.replica().is_some())
            .collect();
        if let Some(active) = &self.active
            && active.replica().is_some()
        {
            return Some(active.clone());
        }
        replicas
            .iter()
            .filter(|view| view.heartbeat_age.is_some())
            .min_by_key(|view| view.heartbeat_age)
            .or_else(|| replicas.first())
            .map(|view| view.node.clone())
    }
}

fn active_replica(replicas: &[NodeView]) -> Option<NodeId> {
    replicas
        .iter()
        .filter(|view| view.health == Health::Alive)
        .filter(|view| {
            view.last.as_ref().is_some_and(|hb| {
                matches!(hb.role(), Role::Active | Role::Standalone)
                    || (replicas.len() == 1 && hb.role() == Role::Unspecified)
            })
        })
        .min_by_key(|view| view.heartbeat_age)
        .map(|view| view.node.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn heartbeat(role: Role) -> Heartbeat {
        Heartbeat {
            interval_ms: 1000,
            role: role as i32,
            ..Default::default()
        }
    }

    #[test]
    fn one_group_is_the_views_group_also_among_ids_sharing_a_prefix() {
        let t0 = Instant::now();
        let mut detector = Detector::new(DetectorConfig::default(), t0);
        for id in ["p1", "p1-b", "p1.a", "p1.b", "p10", "p2"] {
            detector.on_heartbeat(node(id), heartbeat(Role::Standalone), t0 + SECOND);
        }
        let now = t0 + 2 * SECOND;
        let view = detector.view(now);
        let logical: Vec<&str> = view.iter().map(|g| g.logical.as_str()).collect();
        assert_eq!(logical, ["p1", "p1-b", "p10", "p2"]);
        for group in &view {
            let one = detector.group(now, &group.logical).unwrap();
            let ids = |g: &LogicalNodeView| -> Vec<String> {
                g.replicas.iter().map(|r| r.node.to_string()).collect()
            };
            assert_eq!(ids(&one), ids(group));
            assert_eq!(one.active, group.active);
        }
        assert_eq!(detector.group(now, "p1").map(|g| g.replicas.len()), Some(3));
        assert!(detector.group(now, "p3").is_none());
    }

    #[test]
    fn config_is_validated_with_named_keys() {
        let bad = DetectorConfig {
            failure_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        let error = bad.validate().unwrap_err();
        assert!(error.to_string().contains("registry.failure_timeout"));
        assert!(DetectorConfig::default().validate().is_ok());
    }

    #[test]
    fn alive_then_suspect_after_two_intervals_then_down_after_the_timeout() {
        let t0 = Instant::now();
        let mut detector = Detector::new(DetectorConfig::default(), t0);
        let p1 = node("p1");
        let start = t0 + 6 * SECOND;
        detector.on_heartbeat(p1.clone(), heartbeat(Role::Standalone), start);
        assert_eq!(
            detector.health(&p1, start + 2 * SECOND),
            Some(Health::Alive)
        );
        assert_eq!(
            detector.health(&p1, start + 2 * SECOND + Duration::from_millis(1)),
            Some(Health::Suspect)
        );
        assert_eq!(
            detector.health(&p1, start + 5 * SECOND - Duration::from_millis(1)),
            Some(Health::Suspect)
        );
        assert_eq!(detector.health(&p1, start + 5 * SECOND), Some(Health::Down));
    }

    #[test]
    fn a_node_starts_unknown_for_one_failure_timeout() {
        let t0 = Instant::now();
        let mut detector = Detector::new(DetectorConfig::default(), t0);
        let p1 = node("p1");
        detector.expect(p1.clone(), t0);
        assert_eq!(
            detector.health(&p1, t0 + 5 * SECOND - Duration::from_millis(1)),
            Some(Health::Unknown)
        );
        assert_eq!(detector.health(&p1, t0 + 5 * SECOND), Some(Health::Down));
    }

    #[test]
    fn negative_verdicts_wait_a_full_timeout_after_reconnecting() {
        let t0 = Instant::now();
        let mut detector = Detector::new(DetectorConfig::default(), t0);
        let p1 = node("p1");
        detector.on_heartbeat(p1.clone(), heartbeat(Role::Standalone), t0 + 5 * SECOND);
        detector.on_disconnected();
        assert_eq!(
            detector.health(&p1, t0 + 20 * SECOND),
            Some(Health::Unknown)
        );
        let back = t0 + 30 * SECOND;
        detector.on_connected(back);
        assert_eq!(
            detector.health(&p1, back + 4 * SECOND),
            Some(Health::Unknown)
        );
        assert_eq!(detector.health(&p1, back + 5 * SECOND), Some(Health::Down));
    }

    #[test]
    fn a_late_tick_suspends_verdicts() {
        let t0 = Instant::now();
        let mut detector = Detector::new(DetectorConfig::default(), t0);
        let p1 = node("p1");
        detector.on_heartbeat(p1.clone(), heartbeat(Role::Standalone), t0 + 5 * SECOND);
        let scheduled = t0 + 9 * SECOND;
        assert_eq!(detector.on_tick(scheduled, scheduled), None);
        assert_eq!(detector.health(&p1, scheduled), Some(Health::Suspect));
        let stalled = scheduled + 2 * SECOND;
        assert_eq!(
            detector.on_tick(scheduled, stalled),
            Some(Trouble::LateTick)
        );
        assert_eq!(detector.health(&p1, stalled), Some(Health::Unknown));
        assert!(detector.suspended(stalled + 4 * SECOND));
        assert_eq!(
            detector.health(&p1, stalled + 5 * SECOND),
            Some(Health::Down)
        );
    }

    #[test]
    fn replicas_are_grouped_with_the_active_one_marked() {
        let t0 = Instant::now();
        let mut detector = Detector::new(DetectorConfig::default(), t0);
        let now = t0 + 6 * SECOND;
        detector.on_heartbeat(node("p1.a"), heartbeat(Role::Passive), now);
        detector.on_heartbeat(node("p1.b"), heartbeat(Role::Active), now);
        detector.on_heartbeat(node("s1"), heartbeat(Role::Standalone), now);
        let view = detector.view(now);
        assert_eq!(view.len(), 2);
        assert_eq!(view[0].logical, "p1");
        assert_eq!(view[0].replicas.len(), 2);
        assert_eq!(view[0].active, Some(node("p1.b")));
        assert_eq!(view[1].active, Some(node("s1")));
        // A silent active replica is no longer marked.
        let later = now + 3 * SECOND;
        detector.on_heartbeat(node("p1.a"), heartbeat(Role::Passive), later);
        assert_eq!(detector.view(later)[0].active, None);
    }

    #[test]
    fn commands_go_to_the_active_replica_else_the_latest_heard() {
        let t0 = Instant::now();
        let mut detector = Detector::new(DetectorConfig::default(), t0);
        detector.expect(node("p1.a"), t0);
        detector.expect(node("p1.b"), t0);
        detector.on_heartbeat(node("s1"), heartbeat(Role::Standalone), t0);
        let group = |detector: &Detector, at| {
            detector
                .view(at)
                .into_iter()
                .find(|group| group.logical == "p1")
                .unwrap()
        };
        assert_eq!(group(&detector, t0).command_replica(), Some(node("p1.a")));
        assert_eq!(
            detector.view(t0)[1].command_replica(),
            None,
            "s1 has no replicas"
        );
        let now = t0 + SECOND;
        detector.on_heartbeat(node("p1.a"), heartbeat(Role::Passive), now);
        detector.on_heartbeat(node("p1.b"), heartbeat(Role::Active), now);
        assert_eq!(group(&detector, now).command_replica(), Some(node("p1.b")));
        // The active went silent and the other has not taken over yet: the latest heard.
        let later = now + 3 * SECOND;
        detector.on_heartbeat(node("p1.a"), heartbeat(Role::Passive), later);
        assert_eq!(
            group(&detector, later).command_replica(),
            Some(node("p1.a"))
        );
    }

    #[derive(Clone, Debug)]
    enum Input {
        Heartbeat(usize),
        Disconnect,
        Connect,
        Tick { late_ms: u64 },
        Dropped,
    }

    fn input() -> impl Strategy<Value = (u64, Input)> {
        let event = prop_oneof![
            6 => (0usize..3).prop_map(Input::Heartbeat),
            1 => Just(Input::Disconnect),
            1 => Just(Input::Connect),
            2 => (0u64..1500).prop_map(|late_ms| Input::Tick { late_ms }),
            1 => Just(Input::Dropped),
        ];
        (0u64..3000, event)
    }

    proptest! {
        /// Replays random inputs against a reference that tracks, independently, when each
        /// node was last heard and since when the detector was trustworthy.
        #[test]
        fn verdicts_respect_silence_and_detector_health(
            inputs in proptest::collection::vec(input(), 0..60),
            probe_gap_ms in 0u64..8000,
        ) {
            let config = DetectorConfig::default();
            let t0 = Instant::now();
            let mut detector = Detector::new(config, t0);
            let nodes = [node("p1"), node("p2.a"), node("p2.b")];
            for n in &nodes {
                detector.expect(n.clone(), t0);
            }
            let mut now = t0;
            let mut connected = true;
            let mut trusted_since = t0;
            let mut heard: [Option<Instant>; 3] = [None; 3];
            let check = |detector: &Detector, now: Instant, connected: bool, trusted_since: Instant, heard: &[Option<Instant>; 3]| {
                let suspended = !connected || now < trusted_since + config.failure_timeout;
                prop_assert_eq!(detector.suspended(now), suspended);
                for (i, n) in nodes.iter().enumerate() {
                    let health = detector.health(n, now).unwrap();
                    let silence = now.saturating_duration_since(heard[i].unwrap_or(t0));
                    match health {
                        Health::Down => {
                            prop_assert!(!suspended, "down while suspended");
                            prop_assert!(silence >= config.failure_timeout);
                        }
                        Health::Suspect => {
                            prop_assert!(!suspended, "suspect while suspended");
                            prop_assert!(silence > config.heartbeat_interval * 2);
                        }
                        Health::Alive => {
                            prop_assert!(heard[i].is_some());
                            prop_assert!(silence <= config.heartbeat_interval * 2);
                        }
                        Health::Unknown => prop_assert!(
                            suspended || (heard[i].is_none() && silence < config.failure_timeout)
                        ),
                    }
                }
                Ok(())
            };
            for (gap_ms, event) in inputs {
                now += Duration::from_millis(gap_ms);
                match event {
                    Input::Heartbeat(i) => {
                        detector.on_heartbeat(nodes[i].clone(), heartbeat(Role::Active), now);
                        heard[i] = Some(now);
                    }
                    Input::Disconnect => {
                        detector.on_disconnected();
                        connected = false;
                    }
                    Input::Connect => {
                        detector.on_connected(now);
                        if !connected {
                            trusted_since = now;
                        }
                        connected = true;
                    }
                    Input::Tick { late_ms } => {
                        let late = Duration::from_millis(late_ms);
                        let scheduled = now.checked_sub(late).unwrap_or(now);
                        let stalled = detector.on_tick(scheduled, now).is_some();
                        prop_assert_eq!(stalled, late > config.max_tick_lateness);
                        if stalled {
                            trusted_since = now;
                        }
                    }
                    Input::Dropped => {
                        detector.on_trouble(Trouble::DroppedMessages, now);
                        trusted_since = now;
                    }
                }
                check(&detector, now, connected, trusted_since, &heard)?;
            }
            let probe = now + Duration::from_millis(probe_gap_ms);
            check(&detector, probe, connected, trusted_since, &heard)?;
        }
    }
}
