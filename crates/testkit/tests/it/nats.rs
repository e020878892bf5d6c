use std::time::Duration;

use testkit::{ErrorKind, NatsServer, check_nats_server, wait_until};

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn private_server_accepts_tcp_and_restarts_on_the_same_port() {
    let mut server = NatsServer::start().unwrap();
    let port = server.port();
    assert!(server.url().starts_with("nats://127.0.0.1:"));
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    server.kill();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    server.restart().unwrap();
    assert_eq!(server.port(), port);
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
}

#[test]
fn server_is_gone_after_a_panicking_test() {
    let pid = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let server = NatsServer::start().unwrap();
        *pid.lock().unwrap() = server.pid();
        panic!("test failure while the server runs");
    });
    assert!(result.is_err());
    let pid = pid.lock().unwrap().unwrap();
    let took = wait_until("nats-server exit", Duration::from_secs(10), || {
        !pid_alive(pid)
    })
    .unwrap();
    eprintln!("nats-server {pid} gone {took:?} after the panic");
}

#[test]
fn too_old_or_missing_server_gives_a_one_line_fix() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("nats-server");
    std::fs::write(&fake, "#!/bin/sh\necho 'nats-server: v2.9.10'\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let error = check_nats_server(&fake).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TooOld);
    let message = error.to_string();
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains("2.9.10") && message.contains("install-deps.sh"),
        "{message}"
    );

    let missing = check_nats_server(&dir.path().join("absent")).unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::MissingBinary);
    assert_eq!(missing.to_string().lines().count(), 1);
}
