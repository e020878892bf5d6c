use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::auth::NatsAuth;
use crate::error::{Error, SetupErrorKind};
use crate::kv::{CasOptions, Kv};
use crate::names::{Bucket, Names};

/// Explicit stream and bucket settings; nothing is left to server defaults.
#[derive(Clone, Debug)]
pub struct BusSettings {
    /// JetStream replicas of every stream and bucket (1 in tests, 3 in production).
    pub replicas: usize,
    /// How long an undelivered command stays in the command stream.
    pub command_max_age: Duration,
    /// How long acks and results are kept.
    pub ack_max_age: Duration,
    /// How long audit records are kept.
    pub audit_max_age: Duration,
    /// Window in which a repeated `Nats-Msg-Id` is dropped by the server.
    pub duplicate_window: Duration,
    /// Timeout of every JetStream API request and publish ack.
    pub request_timeout: Duration,
    /// Revisions kept per run record (for audit and debugging).
    pub run_history: i64,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            command_max_age: Duration::from_secs(24 * 3600),
            ack_max_age: Duration::from_secs(7 * 24 * 3600),
            audit_max_age: Duration::from_secs(365 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            request_timeout: Duration::from_secs(5),
            run_history: 8,
        }
    }
}

/// A connected network: the JetStream context and every bucket, with names from [`Names`].
#[derive(Clone)]
pub struct Network {
    pub names: Names,
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    buckets: HashMap<Bucket, Kv>,
}

impl Network {
    /// Creates (or updates to these settings) the network's streams and buckets.
    pub async fn ensure(
        client: async_nats::Client,
        names: Names,
        settings: &BusSettings,
    ) -> Result<Self, Error<SetupErrorKind>> {
        if !client.is_server_compatible(2, 11, 0) {
            let version = client.server_info().version;
            return Err(Error::new(
                SetupErrorKind::ServerTooOld,
                format!("nats-server {version}"),
            ));
        }
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(settings.request_timeout)
            .build(client.clone());
        for (name, subjects, max_age) in [
            (
                names.command_stream(),
                names.commands(),
                settings.command_max_age,
            ),
            (names.ack_stream(), names.acks(), settings.ack_max_age),
            (names.audit_stream(), names.audits(), settings.audit_max_age),
            (
                names.proposal_stream(),
                names.all_proposals(),
                settings.audit_max_age,
            ),
        ] {
            let config = stream::Config {
                name: name.clone(),
                subjects: vec![subjects],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: settings.replicas,
                max_age,
                duplicate_window: settings.duplicate_window,
                discard: stream::DiscardPolicy::Old,
                allow_direct: true,
                ..Default::default()
            };
            jetstream
                .create_or_update_stream(config)
                .await
                .map_err(|e| {
                    Error::with_source(SetupErrorKind::Stream, format!("stream {name}"), e)
                })?;
        }
        let mut buckets = HashMap::new();
        for bucket in Bucket::ALL {
            let name = names.bucket(bucket);
            let config = kv::Config {
                bucket: name.clone(),
                history: if bucket == Bucket::Runs {
                    settings.run_history
                } else {
                    1
                },
                storage: stream::StorageType::File,
                num_replicas: settings.replicas,
                // Leases expire by per-key TTL; the marker makes the expiry visible to watchers.
                limit_markers: (bucket == Bucket::Leader).then_some(Duration::from_secs(1)),
                ..Default::default()
            };
            let store = jetstream
                .create_or_update_key_value(config)
                .await
                .map_err(|e| {
                    Error::with_source(SetupErrorKind::Bucket, format!("bucket {name}"), e)
                })?;
            buckets.insert(bucket, Kv::new(store, name, CasOptions::default()));
        }
        Ok(Self {
            names,
            client,
            jetstream,
            buckets,
        })
    }

    /// The CAS wrapper of one bucket.
    pub fn kv(&self, bucket: Bucket) -> &Kv {
        // Every bucket is inserted by `ensure`; the map cannot miss one.
        &self.buckets[&bucket]
    }
}

/// Connects to NATS with the options every process uses: a client name, a ping interval short
/// enough to notice a dead server within seconds, and reconnects forever.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, Error<SetupErrorKind>> {
    connect_with(url, name, async_nats::ConnectOptions::new()).await
}

/// As [`connect`], logged in with `auth` and with replies under `inbox_prefix` (a user whose
/// permissions allow only its own inbox needs it), and also returns the connection's events
/// (disconnects, slow-consumer drops, permission violations), which a failure detector needs
/// to know when its own view is unreliable.
pub async fn connect_with_events(
    url: &str,
    name: &str,
    auth: &NatsAuth,
    inbox_prefix: &str,
) -> Result<
    (
        async_nats::Client,
        tokio::sync::mpsc::UnboundedReceiver<async_nats::Event>,
    ),
    Error<SetupErrorKind>,
> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let options = async_nats::ConnectOptions::new()
        .custom_inbox_prefix(inbox_prefix)
        .event_callback(move |event| {
            let sender = sender.clone();
            async move {
                // The receiver is gone only when the detector stopped; nothing left to tell.
                let _ = sender.send(event);
            }
        });
    let options = auth.apply(options).await?;
    let client = connect_with(url, name, options).await?;
    Ok((client, receiver))
}

/// The servers of a `nats.url` setting: one URL or several separated by commas (the members
/// of a cluster, any of which the client may use). async-nats parses a single address only, so
/// a list given to it whole would be refused as one URL with a bad port.
pub fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>, Error<SetupErrorKind>> {
    let addrs = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<async_nats::ServerAddr>().map_err(|e| {
                Error::with_source(SetupErrorKind::Connect, format!("nats url {url:?}"), e)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err(Error::new(
            SetupErrorKind::Connect,
            format!("nats url {urls:?} names no server"),
        ));
    }
    Ok(addrs)
}

async fn connect_with(
    url: &str,
    name: &str,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, Error<SetupErrorKind>> {
    let servers = server_addrs(url)?;
    options
        .name(name)
        .ping_interval(Duration::from_secs(2))
        .connection_timeout(Duration::from_secs(5))
        .connect(servers)
        .await
        .map_err(|e| Error::with_source(SetupErrorKind::Connect, format!("nats {url}"), e))
}

#[cfg(test)]
mod tests {
    use super::server_addrs;

    #[test]
    fn a_comma_separated_url_names_every_server() {
        let servers = server_addrs("nats://127.0.0.1:4222, nats://127.0.0.1:4223,").unwrap();
        let ports: Vec<u16> = servers.iter().map(|s| s.port()).collect();
        assert_eq!(ports, [4222, 4223]);
        assert_eq!(server_addrs("127.0.0.1:4222").unwrap().len(), 1);
    }

    #[test]
    fn an_empty_or_malformed_url_is_refused_naming_it() {
        assert!(
            server_addrs(" , ")
                .unwrap_err()
                .to_string()
                .contains("names no server")
        );
        let error = server_addrs("nats://127.0.0.1:4222,nats://host:notaport")
            .unwrap_err()
            .to_string();
        assert!(error.contains("nats://host:notaport"), "{error}");
    }
}
