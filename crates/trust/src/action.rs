use proto_sidecar::{Action, action::Kind};

/// The name of an action, as policies and plans spell it (the `Action.kind` field names).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ActionName {
    Disconnect,
    Reconnect,
    Connect,
    SetManualConnect,
    Backup,
    Restore,
    Stop,
    Start,
    SetPassive,
    Fence,
    Revoke,
    Probe,
    ExportPartyAcs,
    ImportPartyAcs,
    MigrateSynchronizer,
    IgnoreEvents,
    UnignoreEvents,
    DisableMember,
    SetPruningSchedule,
    Verify,
    DeleteBackup,
    MigrationDump,
    Redeploy,
    Rehydrate,
}

impl ActionName {
    pub const ALL: [ActionName; 24] = [
        Self::Disconnect,
        Self::Reconnect,
        Self::Connect,
        Self::SetManualConnect,
        Self::Backup,
        Self::Restore,
        Self::Stop,
        Self::Start,
        Self::SetPassive,
        Self::Fence,
        Self::Revoke,
        Self::Probe,
        Self::ExportPartyAcs,
        Self::ImportPartyAcs,
        Self::MigrateSynchronizer,
        Self::IgnoreEvents,
        Self::UnignoreEvents,
        Self::DisableMember,
        Self::SetPruningSchedule,
        Self::Verify,
        Self::DeleteBackup,
        Self::MigrationDump,
        Self::Redeploy,
        Self::Rehydrate,
    ];

    /// The action of a decoded command; `None` when the action is missing or of a kind this
    /// build does not know (a newer coordinator).
    pub fn of(action: Option<&Action>) -> Option<Self> {
        let kind = action?.kind.as_ref()?;
        Some(match kind {
            Kind::Disconnect(_) => Self::Disconnect,
            Kind::Reconnect(_) => Self::Reconnect,
            Kind::Connect(_) => Self::Connect,
            Kind::SetManualConnect(_) => Self::SetManualConnect,
            Kind::Backup(_) => Self::Backup,
            Kind::Restore(_) => Self::Restore,
            Kind::Stop(_) => Self::Stop,
            Kind::Start(_) => Self::Start,
            Kind::SetPassive(_) => Self::SetPassive,
            Kind::Fence(_) => Self::Fence,
            Kind::Revoke(_) => Self::Revoke,
            Kind::Probe(_) => Self::Probe,
            Kind::ExportPartyAcs(_) => Self::ExportPartyAcs,
            Kind::ImportPartyAcs(_) => Self::ImportPartyAcs,
            Kind::MigrateSynchronizer(_) => Self::MigrateSynchronizer,
            Kind::IgnoreEvents(_) => Self::IgnoreEvents,
            Kind::UnignoreEvents(_) => Self::UnignoreEvents,
            Kind::DisableMember(_) => Self::DisableMember,
            Kind::SetPruningSchedule(_) => Self::SetPruningSchedule,
            Kind::Verify(_) => Self::Verify,
            Kind::DeleteBackup(_) => Self::DeleteBackup,
            Kind::MigrationDump(_) => Self::MigrationDump,
            Kind::Redeploy(_) => Self::Redeploy,
            Kind::Rehydrate(_) => Self::Rehydrate,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disconnect => "disconnect",
            Self::Reconnect => "reconnect",
            Self::Connect => "connect",
            Self::SetManualConnect => "set_manual_connect",
            Self::Backup => "backup",
            Self::Restore => "restore",
            Self::Stop => "stop",
            Self::Start => "start",
            Self::SetPassive => "set_passive",
            Self::Fence => "fence",
            Self::Revoke => "revoke",
            Self::Probe => "probe",
            Self::ExportPartyAcs => "export_party_acs",
            Self::ImportPartyAcs => "import_party_acs",
            Self::MigrateSynchronizer => "migrate_synchronizer",
            Self::IgnoreEvents => "ignore_events",
            Self::UnignoreEvents => "unignore_events",
            Self::DisableMember => "disable_member",
            Self::SetPruningSchedule => "set_pruning_schedule",
            Self::Verify => "verify",
            Self::DeleteBackup => "delete_backup",
            Self::MigrationDump => "migration_dump",
            Self::Redeploy => "redeploy",
            Self::Rehydrate => "rehydrate",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == name)
    }

    /// Actions that destroy or irreversibly change node state; the default policy requires a
    /// signed operator approval for them.
    pub fn destructive_by_default(self) -> bool {
        matches!(
            self,
            Self::Restore
                | Self::ImportPartyAcs
                | Self::MigrateSynchronizer
                | Self::IgnoreEvents
                | Self::UnignoreEvents
                | Self::DisableMember
                | Self::Redeploy
                | Self::Rehydrate
        )
    }
}

impl std::fmt::Display for ActionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
