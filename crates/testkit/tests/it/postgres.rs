use std::process::Command;
use std::time::Duration;

use testkit::{Postgres, pg_bin, wait_until};

#[test]
fn dump_and_restore_a_database_between_clusters() {
    let source = Postgres::start().unwrap();
    let db = source.fresh_database("src").unwrap();
    source
        .psql(&db, "CREATE TABLE contracts (id int primary key, owner text); INSERT INTO contracts SELECT g, 'alice' FROM generate_series(1, 500) g")
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("node.dump");
    let status = Command::new(pg_bin("pg_dump").unwrap())
        .args(["-F", "c", "-f"])
        .arg(&dump)
        .arg(source.url(&db))
        .status()
        .unwrap();
    assert!(status.success());

    let target = Postgres::start().unwrap();
    let restored = target.fresh_database("dst").unwrap();
    let status = Command::new(pg_bin("pg_restore").unwrap())
        .args(["--no-owner", "-d"])
        .arg(target.url(&restored))
        .arg(&dump)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        target
            .psql(&restored, "SELECT count(*) FROM contracts")
            .unwrap(),
        "500"
    );
    assert_ne!(source.port(), target.port());
}

#[test]
fn postgres_is_gone_after_a_panicking_test() {
    let pid = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let cluster = Postgres::start().unwrap();
        *pid.lock().unwrap() = cluster.pid();
        panic!("test failure while postgres runs");
    });
    assert!(result.is_err());
    let pid = pid.lock().unwrap().unwrap();
    let took = wait_until("postgres exit", Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    })
    .unwrap();
    eprintln!("postgres {pid} gone {took:?} after the panic");
}

#[test]
fn restart_after_a_crash_keeps_the_data() {
    let mut cluster = Postgres::start().unwrap();
    let db = cluster.fresh_database("crash").unwrap();
    cluster
        .psql(&db, "CREATE TABLE t (v int); INSERT INTO t VALUES (7)")
        .unwrap();
    cluster.kill();
    cluster.restart().unwrap();
    assert_eq!(cluster.psql(&db, "SELECT v FROM t").unwrap(), "7");
}
