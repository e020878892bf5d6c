//! A participant's synchronizer connectivity through `canton-client`: disconnect (all or one),
//! reconnect (all or one), connect, and `set_manual_connect`. All naturally idempotent; each
//! also answers [`ActionHandler::already_done`] from one read of the registered
//! synchronizers, so an attempt interrupted after it took effect is not sent again.
//!
//! The result of every action is the participant's registered synchronizers afterwards, as
//! JSON: `{"synchronizers":[{"alias","connected","manual_connect"}]}`.

use canton_client::types::{
    RegisteredSynchronizer, SequencerValidation, SynchronizerChange, SynchronizerConnection,
};
use canton_client::{CantonClient, ErrorKind};
use futures::future::BoxFuture;
use proto_sidecar::action::Kind;
use serde::Serialize;

use super::{
    ActionContext, ActionError, ActionHandler, ActionName, ActionOutput, Command, Idempotency,
};

/// Checks sequencers that answer and does not require every one to be reachable: a
/// connectivity change during an outage of one sequencer must still go through.
const VALIDATION: SequencerValidation = SequencerValidation::Active;

/// One connectivity action of one participant.
pub struct ConnectivityAction {
    kind: ActionName,
    client: CantonClient,
}

impl ConnectivityAction {
    /// The connectivity actions a participant supports.
    pub fn all(client: &CantonClient) -> Vec<ConnectivityAction> {
        [
            ActionName::Disconnect,
            ActionName::Reconnect,
            ActionName::Connect,
            ActionName::SetManualConnect,
        ]
        .into_iter()
        .map(|kind| ConnectivityAction {
            kind,
            client: client.clone(),
        })
        .collect()
    }
}

#[derive(Serialize)]
struct SynchronizerView {
    alias: String,
    connected: bool,
    manual_connect: bool,
}

#[derive(Serialize)]
struct Outcome {
    synchronizers: Vec<SynchronizerView>,
}

fn output(registered: &[RegisteredSynchronizer], detail: String) -> ActionOutput {
    let outcome = Outcome {
        synchronizers: registered
            .iter()
            .map(|s| SynchronizerView {
                alias: s.alias.clone(),
                connected: s.connected,
                manual_connect: s.manual_connect,
            })
            .collect(),
    };
    ActionOutput {
        // A struct of strings and bools always serialises.
        result: serde_json::to_vec(&outcome).unwrap_or_default(),
        detail,
    }
}

fn classify(error: canton_client::Error) -> ActionError {
    match error.kind() {
        ErrorKind::Unavailable => {
            ActionError::Unavailable(format!("{error}; retry when the node is reachable"))
        }
        ErrorKind::DeadlineExceeded => ActionError::OutcomeUnknown(format!(
            "{error}; the node may still apply it; the action is idempotent, so a retry is safe"
        )),
        _ => ActionError::Failed(error.to_string()),
    }
}

/// The action's target: `None` = every synchronizer.
fn alias(name: &str) -> Option<String> {
    (!name.is_empty()).then(|| name.to_owned())
}

/// Whether the effect `kind` asks for is already in place.
fn in_place(kind: &Kind, registered: &[RegisteredSynchronizer]) -> bool {
    let find = |name: &str| registered.iter().find(|s| s.alias == name);
    match kind {
        Kind::Disconnect(d) => match alias(&d.synchronizer_alias) {
            None => registered.iter().all(|s| !s.connected),
            Some(name) => find(&name).is_some_and(|s| !s.connected),
        },
        Kind::Reconnect(r) => match alias(&r.synchronizer_alias) {
            None => registered
                .iter()
                .filter(|s| !s.manual_connect)
                .all(|s| s.connected),
            Some(name) => find(&name).is_some_and(|s| s.connected),
        },
        Kind::Connect(c) => find(&c.synchronizer_alias).is_some_and(|s| s.connected),
        Kind::SetManualConnect(m) => {
            find(&m.synchronizer_alias).is_some_and(|s| s.manual_connect == m.manual_connect)
        }
        _ => false,
    }
}

fn action_kind(command: &Command) -> Option<Kind> {
    command.action.as_ref().and_then(|a| a.kind.clone())
}

async fn apply(client: &CantonClient, kind: &Kind) -> Result<String, ActionError> {
    let node = client.node_name().to_owned();
    match kind {
        Kind::Disconnect(d) => match alias(&d.synchronizer_alias) {
            None => {
                client
                    .disconnect_all_synchronizers()
                    .await
                    .map_err(classify)?;
                Ok(format!("{node}: disconnected from every synchronizer"))
            }
            Some(name) => {
                client
                    .disconnect_synchronizer(&name)
                    .await
                    .map_err(classify)?;
                Ok(format!("{node}: disconnected from {name}"))
            }
        },
        Kind::Reconnect(r) => match alias(&r.synchronizer_alias) {
            None => {
                client
                    .reconnect_all_synchronizers(false)
                    .await
                    .map_err(classify)?;
                Ok(format!(
                    "{node}: reconnected every synchronizer not marked manual-connect"
                ))
            }
            Some(name) => {
                if client
                    .reconnect_synchronizer(&name, false)
                    .await
                    .map_err(classify)?
                {
                    Ok(format!("{node}: reconnected to {name}"))
                } else {
                    Err(ActionError::Unavailable(format!(
                        "{node}: synchronizer {name} is offline (its sequencers do not answer); retry when they are back"
                    )))
                }
            }
        },
        Kind::Connect(c) => {
            let registered = client
                .list_registered_synchronizers()
                .await
                .map_err(classify)?;
            let name = &c.synchronizer_alias;
            // Connecting an alias that is registered already is a reconnect (the node refuses
            // to register it twice).
            let connected = if registered.iter().any(|s| &s.alias == name) {
                client.reconnect_synchronizer(name, false).await
            } else {
                let connection = SynchronizerConnection {
                    alias: name.clone(),
                    sequencer_urls: c.sequencer_urls.clone(),
                    manual_connect: c.manual_connect,
                    priority: 0,
                    physical_synchronizer_id: None,
                    sequencer_trust_threshold: 1,
                };
                client.connect_synchronizer(&connection, VALIDATION).await
            }
            .map_err(classify)?;
            if connected {
                Ok(format!("{node}: connected to {name}"))
            } else {
                Err(ActionError::Unavailable(format!(
                    "{node}: synchronizer {name} is registered but offline; retry when its sequencers answer"
                )))
            }
        }
        Kind::SetManualConnect(m) => {
            let change = SynchronizerChange {
                manual_connect: Some(m.manual_connect),
                priority: None,
            };
            client
                .modify_synchronizer(&m.synchronizer_alias, &change, VALIDATION)
                .await
                .map_err(classify)?;
            Ok(format!(
                "{node}: {} manual_connect = {}",
                m.synchronizer_alias, m.manual_connect
            ))
        }
        _ => Err(ActionError::Failed(format!(
            "{node}: the connectivity handler cannot run this action"
        ))),
    }
}

impl ActionHandler for ConnectivityAction {
    fn kind(&self) -> ActionName {
        self.kind
    }

    fn idempotency(&self) -> Idempotency {
        Idempotency::Natural
    }

    fn already_done(
        &self,
        command: &Command,
    ) -> BoxFuture<'static, Result<Option<ActionOutput>, ActionError>> {
        let client = self.client.clone();
        let kind = action_kind(command);
        Box::pin(async move {
            let Some(kind) = kind else {
                return Ok(None);
            };
            let registered = client
                .list_registered_synchronizers()
                .await
                .map_err(classify)?;
            Ok(in_place(&kind, &registered).then(|| {
                output(
                    &registered,
                    format!("{}: already in place; not sent again", client.node_name()),
                )
            }))
        })
    }

    fn run(
        &self,
        command: Command,
        _context: ActionContext,
    ) -> BoxFuture<'static, Result<ActionOutput, ActionError>> {
        let client = self.client.clone();
        Box::pin(async move {
            let kind = action_kind(&command).ok_or_else(|| {
                ActionError::Failed(format!("command {} carries no action", command.command_id))
            })?;
            let detail = apply(&client, &kind).await?;
            let registered = client
                .list_registered_synchronizers()
                .await
                .map_err(classify)?;
            Ok(output(&registered, detail))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_sidecar::{Disconnect, Reconnect, SetManualConnect};

    fn sync(alias: &str, connected: bool, manual: bool) -> RegisteredSynchronizer {
        RegisteredSynchronizer {
            alias: alias.into(),
            connected,
            manual_connect: manual,
            priority: 0,
            physical_synchronizer_id: None,
            sequencer_urls: vec![],
        }
    }

    #[test]
    fn effects_in_place_are_recognised() {
        let all_off = [sync("a", false, false), sync("b", false, true)];
        let one_on = [sync("a", true, false), sync("b", false, true)];
        let disconnect_all = Kind::Disconnect(Disconnect::default());
        assert!(in_place(&disconnect_all, &all_off));
        assert!(!in_place(&disconnect_all, &one_on));
        let reconnect_all = Kind::Reconnect(Reconnect::default());
        assert!(
            in_place(&reconnect_all, &one_on),
            "manual-connect b is not expected"
        );
        assert!(!in_place(&reconnect_all, &all_off));
        let manual = Kind::SetManualConnect(SetManualConnect {
            synchronizer_alias: "a".into(),
            manual_connect: true,
        });
        assert!(!in_place(&manual, &one_on));
        assert!(in_place(&manual, &[sync("a", true, true)]));
        let unknown = Kind::Disconnect(Disconnect {
            synchronizer_alias: "zz".into(),
        });
        assert!(
            !in_place(&unknown, &all_off),
            "an unknown alias is for run() to refuse"
        );
    }
}
