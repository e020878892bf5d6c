//! Leadership with real NATS: one winner, takeover with epoch + 1 after the holder freezes, and
//! a renewal that times out but applies.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use canton_coordinator::leadership::{Election, ElectionConfig, LeaseTiming, Role};
use sidecar_bus::Names;
use testkit::{NatsServer, wait_until};

use crate::{fresh_names, network};

fn config(holder: &str, ttl_secs: u64) -> ElectionConfig {
    ElectionConfig {
        organisation: "org-a".into(),
        holder: holder.into(),
        timing: LeaseTiming::short_for_tests(
            Duration::from_secs(ttl_secs),
            Duration::from_millis(300),
        )
        .unwrap(),
    }
}

/// A contender on its own single-threaded runtime whose thread can be blocked: its tasks and
/// its NATS connection stop while the monotonic clock goes on, as under SIGSTOP.
struct Freezable {
    election: Election,
    freeze: tokio::sync::mpsc::UnboundedSender<std_mpsc::Receiver<()>>,
    _thread: std::thread::JoinHandle<()>,
}

impl Freezable {
    fn start(url: String, names: Names, config: ElectionConfig) -> Self {
        let (election_tx, election_rx) = std_mpsc::channel();
        let (freeze, mut freezes) =
            tokio::sync::mpsc::unbounded_channel::<std_mpsc::Receiver<()>>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let net = network(&url, names).await;
                election_tx
                    .send(Election::start(&net, config).unwrap())
                    .unwrap();
                while let Some(thaw) = freezes.recv().await {
                    // Blocks the runtime's only thread until the test thaws it.
                    let _ = thaw.recv();
                }
            });
        });
        Self {
            election: election_rx.recv().unwrap(),
            freeze,
            _thread: thread,
        }
    }

    /// Freezes the contender's runtime; it thaws when the returned sender is used or dropped.
    fn freeze(&self) -> std_mpsc::Sender<()> {
        let (thaw, thawed) = std_mpsc::channel();
        self.freeze.send(thawed).unwrap();
        thaw
    }
}

fn wait_for_leader<'a>(contenders: &[&'a Election], deadline: Duration) -> (&'a Election, u64) {
    let mut found = None;
    let took = wait_until("a leader", deadline, || {
        found = contenders
            .iter()
            .find_map(|c| c.epoch_now().map(|epoch| (*c, epoch)));
        found.is_some()
    })
    .unwrap();
    eprintln!("leader elected after {took:?}");
    found.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_contenders_one_wins_and_the_other_takes_over_with_the_next_epoch() {
    let server = NatsServer::shared_or_start().unwrap();
    let names = fresh_names();
    let a = Freezable::start(server.url().into(), names.clone(), config("coord-a", 3));
    let b = Freezable::start(server.url().into(), names.clone(), config("coord-b", 3));
    let (a, b) = (&a, &b);
    let contenders = [&a.election, &b.election];

    let (leader, epoch) = wait_for_leader(&contenders, Duration::from_secs(30));
    let (holder, other) = if std::ptr::eq(leader, &a.election) {
        (a, b)
    } else {
        (b, a)
    };
    // Over several renewal periods exactly one holds the lease.
    let observe_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < observe_until {
        assert_eq!(holder.election.epoch_now(), Some(epoch));
        assert_eq!(other.election.epoch_now(), None);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        holder.election.stats().renewals >= 2,
        "{:?}",
        holder.election.stats()
    );

    let thaw = holder.freeze();
    let frozen_at = Instant::now();
    let mut old_leader_stopped = None;
    let took = wait_until("takeover", Duration::from_secs(30), || {
        let old = holder.election.epoch_now();
        let new = other.election.epoch_now();
        assert!(
            old.is_none() || new.is_none(),
            "two leaders at once: {old:?} and {new:?}"
        );
        if old.is_none() && old_leader_stopped.is_none() {
            old_leader_stopped = Some(frozen_at.elapsed());
        }
        new.is_some()
    })
    .unwrap();
    eprintln!(
        "frozen holder stopped counting itself leader after {old_leader_stopped:?}; takeover after {took:?}"
    );
    assert_eq!(other.election.epoch_now(), Some(epoch + 1));

    drop(thaw);
    let mut roles = holder.election.roles();
    tokio::time::timeout(
        Duration::from_secs(30),
        roles.wait_for(|r| *r == Role::Follower),
    )
    .await
    .unwrap()
    .unwrap();
    let lost = wait_until("the thawed holder notices", Duration::from_secs(30), || {
        holder.election.stats().losses == 1
    })
    .unwrap();
    eprintln!("thawed holder saw its lost CAS after {lost:?}");
    assert_eq!(holder.election.epoch_now(), None);
    assert_eq!(other.election.epoch_now(), Some(epoch + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_epoch_rejection_deposes_at_once() {
    let server = NatsServer::shared_or_start().unwrap();
    let net = network(server.url(), fresh_names()).await;
    let election = Election::start(&net, config("coord-a", 3)).unwrap();
    let (_, epoch) = wait_for_leader(&[&election], Duration::from_secs(30));
    assert!(!election.deposed(epoch), "an equal epoch is not stale");
    assert!(election.is_leader_now());
    assert!(election.deposed(epoch + 1));
    assert!(!election.is_leader_now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_times_out_but_applies_is_recognised_by_read_back() {
    // Private: the test freezes the server.
    let server = NatsServer::start().unwrap();
    let net = network(server.url(), fresh_names()).await;
    let election = Election::start(&net, config("coord-a", 4)).unwrap();
    let (_, epoch) = wait_for_leader(&[&election], Duration::from_secs(30));

    server.pause().unwrap();
    let result = wait_until("a lease write timing out", Duration::from_secs(30), || {
        election.stats().write_timeouts >= 1
    });
    server.resume().unwrap();
    eprintln!("lease write timed out after {:?}", result.unwrap());

    let took = wait_until(
        "read-back resolving the write",
        Duration::from_secs(30),
        || election.stats().resolved_by_read_back >= 1,
    )
    .unwrap();
    eprintln!(
        "resolved by read-back after {took:?}: {:?}",
        election.stats()
    );
    let renewals = election.stats().renewals;
    wait_until("renewals going on", Duration::from_secs(30), || {
        election.stats().renewals > renewals && election.is_leader_now()
    })
    .unwrap();
    assert_eq!(election.stats().losses, 0);
    assert_eq!(election.epoch_now(), Some(epoch), "the tenure continued");
}
