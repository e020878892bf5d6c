//! Tests of deploy/. Default tier: parsing, the real tools' own checks (nats-server -t,
//! haproxy -c, systemd-analyze verify, canton-agent --check-config), the static Dockerfile
//! check; process-heavy (`heavy_*`): a NATS cluster serving the coordinator and HAProxy in front
//! of an HA pair. Extras (`extras_*`): kustomize rendering and hadolint from the venv.
#![allow(clippy::unwrap_used)]

mod dockerfile;
mod files;
mod haproxy;
mod kubernetes;
mod nats;
mod support;
mod systemd;
