//! Cross-crate end-to-end tests and the demo driver.
//!
//! The demo (`canton-demo`, started by `scripts/demo.sh`) and the e2e tests share the
//! scaffolding here: private servers from `testkit`, product binaries from the target dir.
