//! How a process proves who it is to NATS and which CA it trusts for the server's certificate.
//!
//! Files are checked when the configuration is read ([`NatsAuth::check`]), so a wrong path or
//! a seed of the wrong kind stops the process at start with the key named, instead of showing
//! up later as an endless reconnect loop. Seeds are read again at every connect and never kept
//! in the configuration (which is logged in debug output).

use std::path::{Path, PathBuf};

use crate::error::{Error, SetupErrorKind};

/// The credential a process logs in with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NatsCredentials {
    /// A file holding a user nkey seed (`SU…`), as `canton-ops gen nats-config` writes.
    NkeySeedFile(PathBuf),
    /// A `.creds` file (user JWT and seed), for servers in operator (JWT) mode.
    CredsFile(PathBuf),
}

/// Credentials and TLS trust of one NATS client; the default is neither.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsAuth {
    pub credentials: Option<NatsCredentials>,
    /// PEM file of the CA that signed the servers' certificates; when set, TLS is required.
    pub tls_ca_file: Option<PathBuf>,
}

/// Which setting a [`NatsAuth::check`] failure is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthSetting {
    NkeySeedFile,
    CredsFile,
    TlsCaFile,
}

/// A credential or CA file that cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", path.display())]
pub struct AuthFileError {
    pub setting: AuthSetting,
    pub path: PathBuf,
    pub detail: String,
}

const SEED_MARKER: &str = "-----BEGIN USER NKEY SEED-----";
const JWT_MARKER: &str = "-----BEGIN NATS USER JWT-----";
const CERTIFICATE_MARKER: &str = "-----BEGIN CERTIFICATE-----";

impl NatsAuth {
    /// Reads every configured file and checks that it holds what it should.
    pub fn check(&self) -> Result<(), AuthFileError> {
        match &self.credentials {
            Some(NatsCredentials::NkeySeedFile(path)) => {
                read_user_seed(path).map_err(|detail| AuthFileError {
                    setting: AuthSetting::NkeySeedFile,
                    path: path.clone(),
                    detail,
                })?;
            }
            Some(NatsCredentials::CredsFile(path)) => {
                check_creds(path).map_err(|detail| AuthFileError {
                    setting: AuthSetting::CredsFile,
                    path: path.clone(),
                    detail,
                })?;
            }
            None => {}
        }
        if let Some(path) = &self.tls_ca_file {
            let text = read_text(path).map_err(|detail| AuthFileError {
                setting: AuthSetting::TlsCaFile,
                path: path.clone(),
                detail,
            })?;
            if !text.contains(CERTIFICATE_MARKER) {
                return Err(AuthFileError {
                    setting: AuthSetting::TlsCaFile,
                    path: path.clone(),
                    detail: "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Adds the credential and the TLS trust to `options`.
    pub async fn apply(
        &self,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, Error<SetupErrorKind>> {
        let options = match &self.credentials {
            None => options,
            Some(NatsCredentials::NkeySeedFile(path)) => {
                let seed = read_user_seed(path).map_err(|detail| {
                    Error::new(
                        SetupErrorKind::Credentials,
                        format!("nkey seed {}: {detail}", path.display()),
                    )
                })?;
                options.nkey(seed)
            }
            Some(NatsCredentials::CredsFile(path)) => {
                options.credentials_file(path).await.map_err(|e| {
                    Error::with_source(
                        SetupErrorKind::Credentials,
                        format!("creds file {}", path.display()),
                        e,
                    )
                })?
            }
        };
        Ok(match &self.tls_ca_file {
            Some(path) => options
                .add_root_certificates(path.clone())
                .require_tls(true),
            None => options,
        })
    }
}

/// The largest credential or CA file read: a seed or creds file is a few hundred bytes and
/// a full public CA bundle about 250 kB; anything larger is a wrong path (`/dev/zero`, a
/// dump), refused before it is read whole into memory.
const MAX_AUTH_FILE_BYTES: u64 = 1 << 20;

fn read_text(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_AUTH_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot be read ({e})"))?;
    if bytes.len() as u64 > MAX_AUTH_FILE_BYTES {
        return Err(format!(
            "holds more than {MAX_AUTH_FILE_BYTES} bytes: not a credential or CA file"
        ));
    }
    String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_owned())
}

/// The user seed in `path` (surrounding white space ignored).
fn read_user_seed(path: &Path) -> Result<String, String> {
    let seed = read_text(path)?.trim().to_owned();
    check_user_seed(&seed)?;
    Ok(seed)
}

fn check_user_seed(seed: &str) -> Result<(), String> {
    let pair =
        nkeys::KeyPair::from_seed(seed).map_err(|e| format!("does not hold an nkey seed ({e})"))?;
    if pair.key_pair_type() != nkeys::KeyPairType::User {
        return Err(format!(
            "holds a {:?} nkey seed; NATS clients log in with a user seed (SU…)",
            pair.key_pair_type()
        ));
    }
    Ok(())
}

/// A `.creds` file: a user JWT block and a user seed block.
fn check_creds(path: &Path) -> Result<(), String> {
    let text = read_text(path)?;
    if !text.contains(JWT_MARKER) {
        return Err(format!("holds no user JWT ({JWT_MARKER})"));
    }
    let seed = text
        .split_once(SEED_MARKER)
        .and_then(|(_, rest)| rest.lines().map(str::trim).find(|line| !line.is_empty()))
        .ok_or_else(|| format!("holds no user seed ({SEED_MARKER})"))?;
    check_user_seed(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn files_are_checked_for_what_they_hold() {
        let dir = std::env::temp_dir().join(format!("cs-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let user = nkeys::KeyPair::new_user().seed().unwrap();
        let account = nkeys::KeyPair::new_account().seed().unwrap();
        let good = NatsAuth {
            credentials: Some(NatsCredentials::NkeySeedFile(file(
                &dir,
                "user.nk",
                &format!("{user}\n"),
            ))),
            tls_ca_file: None,
        };
        assert_eq!(good.check(), Ok(()));

        let wrong_kind = NatsAuth {
            credentials: Some(NatsCredentials::NkeySeedFile(file(
                &dir, "acct.nk", &account,
            ))),
            tls_ca_file: None,
        };
        let error = wrong_kind.check().unwrap_err();
        assert_eq!(error.setting, AuthSetting::NkeySeedFile);
        assert!(error.detail.contains("user seed"), "{error}");

        let missing = NatsAuth {
            credentials: Some(NatsCredentials::CredsFile(dir.join("absent.creds"))),
            tls_ca_file: None,
        };
        assert_eq!(missing.check().unwrap_err().setting, AuthSetting::CredsFile);

        let creds = format!(
            "{JWT_MARKER}\neyJ0eXAi\n------END NATS USER JWT------\n\n{SEED_MARKER}\n{user}\n------END USER NKEY SEED------\n"
        );
        let with_creds = NatsAuth {
            credentials: Some(NatsCredentials::CredsFile(file(&dir, "u.creds", &creds))),
            tls_ca_file: Some(file(&dir, "not-a-ca.pem", "hello")),
        };
        assert_eq!(
            with_creds.check().unwrap_err().setting,
            AuthSetting::TlsCaFile
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A key naming an endless file is refused after the bound, naming the setting, for each
    /// of the three files.
    #[test]
    fn an_endless_file_is_refused_after_the_bound() {
        let endless = PathBuf::from("/dev/zero");
        let cases = [
            (
                NatsAuth {
                    credentials: Some(NatsCredentials::NkeySeedFile(endless.clone())),
                    tls_ca_file: None,
                },
                AuthSetting::NkeySeedFile,
            ),
            (
                NatsAuth {
                    credentials: Some(NatsCredentials::CredsFile(endless.clone())),
                    tls_ca_file: None,
                },
                AuthSetting::CredsFile,
            ),
            (
                NatsAuth {
                    credentials: None,
                    tls_ca_file: Some(endless.clone()),
                },
                AuthSetting::TlsCaFile,
            ),
        ];
        for (auth, setting) in cases {
            let error = auth.check().unwrap_err();
            assert_eq!(error.setting, setting);
            assert_eq!(error.path, endless);
            assert!(error.detail.contains("more than 1048576 bytes"), "{error}");
        }
    }
}
