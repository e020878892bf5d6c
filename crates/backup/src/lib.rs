//! Backups, restores and lifecycle actions of one Canton node, as a library the agent's action
//! handlers call.
//!
//! - Every child (`pg_dump`, `pg_restore`, hooks) runs in its own process group, reported to the
//!   caller's [`Observer`] before it is waited for, and killed as a group on cancel or drop;
//!   [`kill_process_group`] removes what a crashed agent left behind.
//! - A backup is published as `<root>/<set>/<node>.dump` plus `<node>.manifest.json`, each
//!   written to a hidden `.<command id>.*.tmp`, fsynced, renamed and the directory fsynced, so
//!   a visible file is always complete. The manifest carries the snapshot interval in
//!   sequencer time read around the dump and the checksum that [`Backups::already_done`] checks.
//! - A restore checks everything before it touches the database: manifest, checksum, archive,
//!   and that nothing of the node still runs ([`StoppedCheck`]).
//! - [`Lifecycle`] stops and starts a node through hook commands and waits until the status
//!   command confirms it.

mod backup;
mod child;
mod error;
mod files;
pub mod fuzzing;
mod lifecycle;
mod liveness;
mod manifest;
mod pg;
mod point;
mod restore;
mod template;

pub use backup::{
    BackupConfig, BackupJob, Backups, NodeRef, SNAPSHOT_PLACEHOLDERS, SnapshotSpec,
    UPLOAD_PLACEHOLDERS,
};
pub use child::{
    ChildCommand, ChildInfo, ChildOutput, GroupKill, NoObserver, Observer, Phase, ProcessGroup,
    Progress, kill_process_group, process_group_alive, run_child,
};
pub use error::{Error, ErrorKind, Result};
pub use files::{NodeFiles, encode_command_id};
pub use lifecycle::{
    Lifecycle, LifecycleConfig, NodeStatus, START_PLACEHOLDERS, STATUS_PLACEHOLDERS,
    STOP_PLACEHOLDERS, Transition,
};
pub use liveness::{Activity, AllStopped, NoConnections, StoppedCheck};
pub use manifest::{MANIFEST_FORMAT, Manifest, Method};
pub use pg::{Database, PgClients, ServerVersion};
pub use point::{
    Interval, NodeKind, SnapshotPoint, SnapshotPointSource, SqlPointSource, default_point_query,
};
pub use restore::{MARKER_TABLE, RestoreJob, RestoreOutcome};
pub use template::CommandTemplate;
