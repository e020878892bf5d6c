//! End-to-end tests: real nats-server, PostgreSQL, canton-sim processes and product binaries.
mod backup_barrier;
mod disconnect;
mod dr_timestamp;
mod event_repair;
mod ha_backup;
mod joint_disconnect;
mod kills;
mod lifecycle;
mod nats_login;
mod out_of_order;
mod prometheus;
mod proposals;
mod restore;
mod retention;
mod secrets;
mod support;
mod telemetry;
