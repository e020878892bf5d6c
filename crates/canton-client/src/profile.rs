//! Release-line profiles: which gRPC paths and request shapes a node of a given Canton version
//! understands. The admin API packages are `v30` on every 3.x line, yet messages were renumbered
//! and services renamed between lines, so the client must know the line before it sends.

use crate::error::{Error, ErrorKind, Result};
use std::fmt;

/// A Canton release line this client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Profile {
    /// Release line 3.4: the baseline our protos are written from.
    Line3_4,
    /// Release line 3.5: `ParticipantReplicationService` and the renumbered
    /// `ImportPartyAcsRequest`; everything else as 3.4.
    Line3_5,
}

impl Profile {
    pub const SUPPORTED: [Profile; 2] = [Profile::Line3_4, Profile::Line3_5];

    /// The profile for a version string as a node reports it (`3.4.11`, `3.4.12-SNAPSHOT`,
    /// `3.5.0-snapshot.20260120.1`). An unknown release line is an error, never a guess.
    pub fn for_version(version: &str) -> Result<Profile> {
        let (major, minor) = release_line(version).ok_or_else(|| {
            Error::new(
                ErrorKind::UnsupportedVersion,
                format!(
                    "cannot read a release line from the node's version {version:?}; expected MAJOR.MINOR[.PATCH…]"
                ),
            )
        })?;
        match (major, minor) {
            (3, 4) => Ok(Profile::Line3_4),
            (3, 5) => Ok(Profile::Line3_5),
            _ => Err(Error::new(
                ErrorKind::UnsupportedVersion,
                format!(
                    "the node runs Canton {version} (release line {major}.{minor}); this client speaks only {}. \
                     Nothing was sent: upgrade the sidecar or add a profile for {major}.{minor}",
                    Profile::SUPPORTED.map(|p| p.to_string()).join(", ")
                ),
            )),
        }
    }

    /// The replication service that owns `SetPassive` on this line.
    pub fn replication_service(self) -> &'static str {
        match self {
            Profile::Line3_4 => {
                "com.digitalasset.canton.admin.participant.v30.EnterpriseParticipantReplicationService"
            }
            Profile::Line3_5 => {
                "com.digitalasset.canton.admin.participant.v30.ParticipantReplicationService"
            }
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Line3_4 => "3.4",
            Profile::Line3_5 => "3.5",
        })
    }
}

fn release_line(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_release_lines_from_reported_versions() {
        for (version, profile) in [
            ("3.4.11", Profile::Line3_4),
            ("3.4.12-SNAPSHOT", Profile::Line3_4),
            ("3.5.0-snapshot.20260120.1", Profile::Line3_5),
            (" 3.5.10 ", Profile::Line3_5),
        ] {
            assert_eq!(Profile::for_version(version).unwrap(), profile, "{version}");
        }
    }

    #[test]
    fn refuses_unknown_lines_and_garbage() {
        for version in ["3.3.0", "3.6.0-SNAPSHOT", "2.10.1", "4.0.0", "", "x.y", "3"] {
            let error = Profile::for_version(version).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::UnsupportedVersion, "{version}");
        }
        let message = Profile::for_version("3.6.0").unwrap_err().to_string();
        assert!(
            message.contains("3.6") && message.contains("3.4, 3.5"),
            "{message}"
        );
    }
}
