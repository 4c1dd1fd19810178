//! The API's listening sockets: those berth creates for `unix://` hosts and those systemd
//! passed for `fd://` hosts.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::config::Host;
use crate::systemd::PassedSockets;

/// The API's sockets, bound and not yet served.
pub struct ApiListeners {
    pub listeners: Vec<UnixListener>,
    /// Socket files berth created: removed when it stops (systemd's stay where they are).
    pub created: Vec<PathBuf>,
}

impl ApiListeners {
    pub fn open(hosts: &[Host], passed: &mut PassedSockets) -> anyhow::Result<ApiListeners> {
        let mut opened = ApiListeners {
            listeners: Vec::new(),
            created: Vec::new(),
        };
        for host in hosts {
            match host {
                Host::Unix(path) => {
                    opened.listeners.push(bind_socket(path)?);
                    opened.created.push(path.clone());
                }
                Host::Systemd(name) => {
                    let taken = passed
                        .take(name.as_deref())
                        .with_context(|| format!("--host {host}"))?;
                    opened.listeners.extend(taken);
                }
            }
        }
        let unused = passed.unused();
        if !unused.is_empty() {
            log::warn!(
                "systemd passed sockets no --host fd:// asked for, left unused: {}",
                unused.join(", ")
            );
        }
        Ok(opened)
    }
}

/// Binds a unix socket: a stale socket file left by a dead daemon is replaced, a live one is
/// refused. Mode 0660, group `docker` when that group exists (as dockerd does).
fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() || std::fs::symlink_metadata(path).is_ok() {
        if UnixStream::connect(path).is_ok() {
            bail!("another daemon is already listening on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("docker") {
        nix::unistd::chown(path, None, Some(group.gid))
            .with_context(|| format!("giving {} to group docker", path.display()))?;
    }
    Ok(listener)
}
