//! The fault proxy between clients and a real nats-server: dropped publishes never arrive while
//! everything else does, a blackhole holds sockets open and bytes back, a cut closes and
//! refuses, and each heals back to forwarding.
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures::StreamExt;
use testkit::{NatsServer, TcpProxy};

/// Bound on every wait for something that should happen.
const DEADLINE: Duration = Duration::from_secs(20);
/// How long a blackholed socket is watched for bytes that must not come. Absence can only be
/// shown over some time; the bytes held meanwhile are then shown to arrive after the heal.
const SILENCE: Duration = Duration::from_millis(800);

async fn next_subject(subscription: &mut async_nats::Subscriber) -> String {
    let message = tokio::time::timeout(DEADLINE, subscription.next())
        .await
        .expect("a message within the deadline")
        .expect("the subscription is open");
    message.subject.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_publishes_never_arrive_while_other_traffic_does() {
    let server = NatsServer::start().unwrap();
    let proxy = TcpProxy::in_front_of(server.port()).unwrap();
    let direct = async_nats::connect(server.url()).await.unwrap();
    let mut seen = direct.subscribe("t.>").await.unwrap();
    let mut echo = direct.subscribe("svc.echo").await.unwrap();
    direct.flush().await.unwrap();
    let responder = direct.clone();
    tokio::spawn(async move {
        while let Some(request) = echo.next().await {
            if let Some(reply) = request.reply {
                let _ = responder.publish(reply, request.payload).await;
            }
        }
    });
    let through = async_nats::connect(proxy.nats_url()).await.unwrap();

    proxy.drop_publishes("t.ack.");
    // Spans many reads of the proxy; a payload holding a whole frame is skipped by its length.
    let big = vec![b'x'; 300_000];
    let disguised = b"PUB t.keep.fake 2\r\nno\r\n".to_vec();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "a/1");
    through.publish("t.ack.big", big.into()).await.unwrap();
    through.publish("t.keep.one", "one".into()).await.unwrap();
    through
        .publish_with_headers("t.ack.headers", headers, "h".into())
        .await
        .unwrap();
    through
        .publish("t.ack.disguised", disguised.into())
        .await
        .unwrap();
    through.publish("t.keep.two", "two".into()).await.unwrap();
    // Replies come back, and a publish with a reply subject outside the prefix goes out.
    let answer = tokio::time::timeout(DEADLINE, through.request("svc.echo", "ping".into()))
        .await
        .expect("an answer within the deadline")
        .expect("the request is answered");
    assert_eq!(answer.payload.as_ref(), b"ping");
    through.flush().await.unwrap();

    // One publisher's messages arrive in order: had a dropped one arrived, it would come
    // before the publish that followed it.
    assert_eq!(next_subject(&mut seen).await, "t.keep.one");
    assert_eq!(next_subject(&mut seen).await, "t.keep.two");
    assert_eq!(proxy.stats().dropped_publishes, 3);

    proxy.pass();
    through.publish("t.ack.healed", "".into()).await.unwrap();
    through.flush().await.unwrap();
    assert_eq!(next_subject(&mut seen).await, "t.ack.healed");
    assert_eq!(proxy.stats().dropped_publishes, 3);
}

/// A raw protocol connection through the proxy: the server's INFO read.
fn raw_connection(proxy: &TcpProxy) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(proxy.address()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(stream);
    assert!(read_line(&mut reader).starts_with("INFO "));
    reader
}

fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("a line within the deadline");
    line
}

fn send(reader: &mut BufReader<TcpStream>, bytes: &[u8]) {
    reader.get_mut().write_all(bytes).unwrap();
}

/// Whether the socket stays open and silent for [`SILENCE`].
fn silent(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(SILENCE)).unwrap();
    let mut byte = [0u8; 1];
    let silent = matches!(
        stream.read(&mut byte),
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    );
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    silent
}

#[test]
fn a_blackhole_keeps_sockets_open_and_holds_bytes_until_healed() {
    let server = NatsServer::start().unwrap();
    let proxy = TcpProxy::in_front_of(server.port()).unwrap();
    let mut open = raw_connection(&proxy);
    send(&mut open, b"CONNECT {\"verbose\":false}\r\nPING\r\n");
    assert_eq!(read_line(&mut open), "PONG\r\n");

    proxy.blackhole();
    send(&mut open, b"PING\r\n");
    assert!(
        silent(open.get_mut()),
        "a blackholed connection says nothing"
    );
    let mut held = TcpStream::connect(proxy.address()).expect("accepted, no reset");
    assert!(
        silent(&mut held),
        "a new connection is held without a greeting"
    );
    assert_eq!(proxy.stats().refused, 0);

    let healed = Instant::now();
    proxy.pass();
    assert_eq!(
        read_line(&mut open),
        "PONG\r\n",
        "the held PING went through"
    );
    held.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut held = BufReader::new(held);
    assert!(read_line(&mut held).starts_with("INFO "));
    eprintln!(
        "held bytes and connection through {:?} after the heal",
        healed.elapsed()
    );
}

/// Whether the socket is closed or reset (not merely quiet) within the deadline.
fn closed(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 512];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            // Bytes the server sent before the cut.
            Ok(_) => {}
            Err(error) => {
                return !matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
            }
        }
    }
}

#[test]
fn a_cut_closes_connections_and_refuses_new_ones_until_healed() {
    let server = NatsServer::start().unwrap();
    let proxy = TcpProxy::in_front_of(server.port()).unwrap();
    let mut open = raw_connection(&proxy);

    let cut = Instant::now();
    proxy.cut();
    assert!(closed(open.get_mut()), "the open connection is closed");
    eprintln!("open connection closed {:?} after the cut", cut.elapsed());
    match TcpStream::connect(proxy.address()) {
        Err(error) => eprintln!("new connection refused: {error}"),
        Ok(mut refused) => {
            refused.set_read_timeout(Some(DEADLINE)).unwrap();
            assert!(closed(&mut refused), "a new connection is reset");
        }
    }
    assert_eq!(proxy.stats().refused, 1);

    proxy.pass();
    raw_connection(&proxy);
    assert_eq!(proxy.stats().accepted, 2);
}
