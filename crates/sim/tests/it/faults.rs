use std::time::{Duration, Instant};

use canton_sim::control::http_request;
use canton_sim::{Fault, FaultRule};
use proto_canton::admin::participant::v30 as admin;
use proto_canton::admin::participant::v30::participant_status_service_client::ParticipantStatusServiceClient;
use proto_canton::grpc_health::v1::health_check_response::ServingStatus;
use proto_canton::grpc_health::v1::health_client::HealthClient;
use proto_canton::ledger::v2::state_service_client::StateServiceClient;
use tonic::Code;

use crate::support::{
    SEQ_AND_PARTICIPANT, connected, connectivity, eventually, start, wait_connected,
};

const LIST_CONNECTED: &str = "/com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/ListConnectedSynchronizers";
const GET_LEDGER_END: &str = "/com.daml.ledger.api.v2.StateService/GetLedgerEnd";

fn rule(method: &str, fault: Fault, times: Option<u64>) -> FaultRule {
    FaultRule {
        method: method.to_owned(),
        fault,
        times,
    }
}

async fn readiness(url: String, service: &str) -> ServingStatus {
    let reply = HealthClient::connect(url)
        .await
        .unwrap()
        .check(proto_canton::grpc_health::v1::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(reply.status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_mode_is_observable_by_a_client() {
    let mut net = start(SEQ_AND_PARTICIPANT);
    let participant = net.net.node("participant1").unwrap();
    wait_connected(participant, "global").await;
    let control = participant.control();
    let mut client = connectivity(participant).await;

    // Error with a chosen code, for one call only.
    control
        .add_fault(&rule(
            LIST_CONNECTED,
            Fault::Error {
                code: 14,
                message: String::new(),
            },
            Some(1),
        ))
        .await
        .unwrap();
    let failed = client
        .list_connected_synchronizers(admin::ListConnectedSynchronizersRequest {})
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable);
    assert_eq!(
        connected(&mut client).await.len(),
        1,
        "the rule retired after one call"
    );
    assert!(control.faults().await.unwrap().is_empty());

    // Slow: the answer comes, late. A whole service is selected by its name.
    let id = control
        .add_fault(&rule(
            "com.digitalasset.canton.admin.participant.v30.ParticipantStatusService",
            Fault::Slow { delay_ms: 400 },
            None,
        ))
        .await
        .unwrap();
    let started = Instant::now();
    ParticipantStatusServiceClient::connect(participant.admin_url().unwrap())
        .await
        .unwrap()
        .participant_status(admin::ParticipantStatusRequest {})
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(control.faults().await.unwrap()[0].hits, 1);
    control.remove_fault(id).await.unwrap();

    // Hang: a caller with a deadline gives up; a waiting caller completes once the rule goes.
    let id = control
        .add_fault(&rule(GET_LEDGER_END, Fault::Hang, None))
        .await
        .unwrap();
    let mut ledger = StateServiceClient::connect(participant.ledger_url().unwrap())
        .await
        .unwrap();
    let mut request = tonic::Request::new(proto_canton::ledger::v2::GetLedgerEndRequest {});
    request.set_timeout(Duration::from_millis(300));
    // The client's deadline or tonic's server-side grpc-timeout, whichever fires first.
    let gave_up = ledger.get_ledger_end(request).await.unwrap_err().code();
    assert!(
        matches!(gave_up, Code::DeadlineExceeded | Code::Cancelled),
        "{gave_up:?}"
    );
    let mut waiting = ledger.clone();
    let held = tokio::spawn(async move {
        waiting
            .get_ledger_end(proto_canton::ledger::v2::GetLedgerEndRequest {})
            .await
    });
    eventually(
        "second call held by the hang",
        Duration::from_secs(5),
        || async {
            control
                .faults()
                .await
                .unwrap()
                .first()
                .filter(|f| f.hits >= 2)
                .map(|_| ())
        },
    )
    .await;
    assert!(!held.is_finished());
    control.remove_fault(id).await.unwrap();
    assert!(held.await.unwrap().is_ok());

    // HTTP endpoints take rules too.
    let health_addr = participant.http_health_addr().unwrap();
    control
        .add_fault(&rule(
            "/health",
            Fault::Error {
                code: 13,
                message: "boom".to_owned(),
            },
            Some(1),
        ))
        .await
        .unwrap();
    assert_eq!(
        http_request(health_addr, "GET", "/health", None)
            .await
            .unwrap()
            .0,
        500
    );
    assert_eq!(
        http_request(health_addr, "GET", "/health", None)
            .await
            .unwrap()
            .0,
        200
    );

    // Stop processing: the node answers but reports itself not ready and its connection unhealthy.
    control.set_processing_stopped(true).await.unwrap();
    let health_url = participant.grpc_health_url();
    eventually("readiness NOT_SERVING", Duration::from_secs(5), || async {
        (readiness(health_url.clone(), "participant").await == ServingStatus::NotServing)
            .then_some(())
    })
    .await;
    assert_eq!(
        readiness(health_url.clone(), "liveness").await,
        ServingStatus::Serving
    );
    assert_eq!(
        http_request(health_addr, "GET", "/health", None)
            .await
            .unwrap()
            .0,
        503
    );
    assert!(!connected(&mut client).await[0].healthy);
    assert!(control.info().await.unwrap().processing_stopped);
    control.set_processing_stopped(false).await.unwrap();
    eventually(
        "readiness SERVING again",
        Duration::from_secs(5),
        || async {
            (http_request(health_addr, "GET", "/health", None)
                .await
                .unwrap()
                .0
                == 200)
                .then_some(())
        },
    )
    .await;
    assert!(connected(&mut client).await[0].healthy);

    // Crash: the call fails and the process is gone; a restart comes back without the rule.
    control
        .add_fault(&rule(LIST_CONNECTED, Fault::Crash, None))
        .await
        .unwrap();
    let crashed = client
        .list_connected_synchronizers(admin::ListConnectedSynchronizersRequest {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            crashed.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        ),
        "{crashed:?}"
    );
    let node = net.net.node_mut("participant1").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.is_running() {
        assert!(
            Instant::now() < deadline,
            "crash fault did not end the process"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.start().unwrap();
    assert!(node.control().faults().await.unwrap().is_empty());
    wait_connected(node, "global").await;
}
