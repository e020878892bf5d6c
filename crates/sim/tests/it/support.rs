use std::future::Future;
use std::time::{Duration, Instant};

use canton_sim::network::LaunchOptions;
use canton_sim::{NetworkSpec, PostgresTarget, SimNetwork, SimNode};
use proto_canton::admin::participant::v30 as admin;
use proto_canton::admin::participant::v30::synchronizer_connectivity_service_client::SynchronizerConnectivityServiceClient;
use testkit::Postgres;
use tonic::transport::Channel;

/// A network and the Postgres cluster holding its databases (dropped after the network).
pub struct Net {
    pub net: SimNetwork,
    pub pg: Postgres,
}

/// Starts the topology in `toml` (its `name` is replaced by a unique one).
pub fn start(toml: &str) -> Net {
    start_on(Postgres::shared_or_start().unwrap(), toml)
}

/// Starts the topology in `toml` with its databases in `pg`.
pub fn start_on(pg: Postgres, toml: &str) -> Net {
    let mut spec = NetworkSpec::from_toml(toml).unwrap();
    spec.name = testkit::unique_id("n");
    let binary = testkit::binary_path("canton-sim").unwrap();
    let started = Instant::now();
    let net = SimNetwork::start(
        &spec,
        LaunchOptions {
            postgres: PostgresTarget::of(&pg),
            binary: &binary,
            work_dir: None,
        },
    )
    .unwrap();
    eprintln!(
        "{} nodes ready in {:?}",
        net.nodes().len(),
        started.elapsed()
    );
    Net { net, pg }
}

pub const SEQ_AND_PARTICIPANT: &str = r#"
[[node]]
id = "sequencer1"
kind = "sequencer"

[[node]]
id = "participant1"
kind = "participant"
"#;

/// Polls `check` until it returns `Some`, failing after `deadline`; logs the time it took.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            eprintln!("{what}: after {:?}", started.elapsed());
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "{what}: not reached within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn connectivity(node: &SimNode) -> SynchronizerConnectivityServiceClient<Channel> {
    SynchronizerConnectivityServiceClient::connect(node.admin_url().unwrap())
        .await
        .unwrap()
}

pub async fn connected(
    client: &mut SynchronizerConnectivityServiceClient<Channel>,
) -> Vec<admin::list_connected_synchronizers_response::Result> {
    client
        .list_connected_synchronizers(admin::ListConnectedSynchronizersRequest {})
        .await
        .unwrap()
        .into_inner()
        .connected_synchronizers
}

pub async fn registered(
    client: &mut SynchronizerConnectivityServiceClient<Channel>,
) -> Vec<admin::list_registered_synchronizers_response::Result> {
    client
        .list_registered_synchronizers(admin::ListRegisteredSynchronizersRequest {})
        .await
        .unwrap()
        .into_inner()
        .results
}

/// Waits until `node` lists `alias` as connected.
pub async fn wait_connected(node: &SimNode, alias: &str) {
    let mut client = connectivity(node).await;
    let what = format!("{} connected to {alias}", node.id());
    eventually(&what, Duration::from_secs(30), || {
        let mut client = client.clone();
        async move {
            connected(&mut client)
                .await
                .iter()
                .any(|c| c.synchronizer_alias == alias)
                .then_some(())
        }
    })
    .await;
    let _ = &mut client;
}

/// A gRPC sequencer connection config as the console builds it.
pub fn connection_config(
    alias: &str,
    url: &str,
    manual_connect: bool,
) -> admin::SynchronizerConnectionConfig {
    use proto_canton::admin::sequencer::v30::{
        SequencerConnection, SequencerConnections, sequencer_connection,
    };
    admin::SynchronizerConnectionConfig {
        synchronizer_alias: alias.to_owned(),
        sequencer_connections: Some(SequencerConnections {
            sequencer_connections: vec![SequencerConnection {
                r#type: Some(sequencer_connection::Type::Grpc(
                    sequencer_connection::Grpc {
                        connections: vec![url.to_owned()],
                        transport_security: false,
                        custom_trust_certificates: None,
                    },
                )),
                alias: "sequencer1".to_owned(),
                sequencer_id: None,
            }],
            sequencer_trust_threshold: 1,
            ..Default::default()
        }),
        manual_connect,
        ..Default::default()
    }
}

/// `psql` output of `sql` on the node's own database.
pub fn sql(net: &Net, node: &SimNode, sql: &str) -> String {
    net.pg.psql(node.database_name(), sql).unwrap()
}
