//! The service manager's protocols: sockets passed by socket activation (`LISTEN_FDS`,
//! `LISTEN_FDNAMES`) and state notifications (`NOTIFY_SOCKET`: READY, RELOADING, STOPPING).
//! Both are no-ops when berth was started by hand.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

/// Sockets the service manager passed, taken from the environment once at start-up.
#[derive(Debug, Default)]
pub struct PassedSockets {
    /// In the order passed, with their `FileDescriptorName=` (systemd's default is the socket
    /// unit's name, `unknown` when the passer gave none).
    sockets: Vec<(Option<OwnedFd>, String)>,
}

/// Why passed sockets cannot serve a `fd://` host.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("reading the sockets systemd passed: {0}")]
    Environment(std::io::Error),
    #[error("no sockets were passed by systemd (LISTEN_FDS) for {0}")]
    NonePassed(String),
    #[error("no socket named {name:?} was passed by systemd (passed: {passed})")]
    NoSuchName { name: String, passed: String },
    #[error(
        "the socket passed as {name:?} is not a unix stream socket: berth serves only unix sockets"
    )]
    NotUnix { name: String },
}

impl PassedSockets {
    /// Takes the passed sockets and clears `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`, so
    /// nothing berth starts inherits them.
    ///
    /// # Safety
    /// Changes the environment: call before any other thread exists.
    pub unsafe fn take_from_env() -> Result<PassedSockets, ActivationError> {
        let passed = unsafe { sd_notify::listen_fds_with_names_and_unset_env() }
            .map_err(ActivationError::Environment)?;
        let sockets = passed
            // SAFETY: systemd hands these descriptors to this process alone; each is wrapped once.
            .map(|(fd, name)| (Some(unsafe { OwnedFd::from_raw_fd(fd) }), name))
            .collect();
        Ok(PassedSockets { sockets })
    }

    /// Sockets given directly (tests).
    pub fn from_fds(sockets: Vec<(OwnedFd, String)>) -> PassedSockets {
        PassedSockets {
            sockets: sockets.into_iter().map(|(fd, n)| (Some(fd), n)).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The listeners for `fd://` (`name` None: every socket not taken yet) or `fd://NAME` (the
    /// sockets named NAME; a number is also accepted as the descriptor's number, as dockerd's
    /// `fd://3`).
    pub fn take(&mut self, name: Option<&str>) -> Result<Vec<UnixListener>, ActivationError> {
        let host = match name {
            Some(n) => format!("fd://{n}"),
            None => "fd://".to_string(),
        };
        if self.sockets.is_empty() {
            return Err(ActivationError::NonePassed(host));
        }
        let by_number = name.and_then(|n| n.parse::<usize>().ok());
        let wanted = |index: usize, socket_name: &str| match name {
            None => true,
            Some(n) if socket_name == n => true,
            Some(_) => by_number == Some(index + 3),
        };
        let mut listeners = Vec::new();
        for (index, (fd, socket_name)) in self.sockets.iter_mut().enumerate() {
            if !wanted(index, socket_name) {
                continue;
            }
            let Some(fd) = fd.take() else { continue };
            let listener = UnixListener::from(fd);
            if listener.local_addr().is_err() {
                return Err(ActivationError::NotUnix {
                    name: socket_name.clone(),
                });
            }
            listeners.push(listener);
        }
        if listeners.is_empty() {
            return Err(ActivationError::NoSuchName {
                name: name.unwrap_or_default().to_string(),
                passed: self.names(),
            });
        }
        Ok(listeners)
    }

    /// Names of the sockets no host has taken.
    pub fn unused(&self) -> Vec<String> {
        self.sockets
            .iter()
            .filter(|(fd, _)| fd.is_some())
            .map(|(_, n)| n.clone())
            .collect()
    }

    fn names(&self) -> String {
        self.sockets
            .iter()
            .map(|(_, n)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What the daemon tells the service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonState {
    /// Plugins are restored and the API answers.
    Ready,
    /// SIGHUP: the configuration is being read again (READY follows).
    Reloading,
    /// Shutting down: plugins are being stopped.
    Stopping,
}

/// Notifies the service manager, if one is listening (`NOTIFY_SOCKET`); a no-op otherwise.
pub fn notify(state: DaemonState, status: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    use sd_notify::NotifyState;
    let first = match state {
        DaemonState::Ready => NotifyState::Ready,
        DaemonState::Reloading => NotifyState::Reloading,
        DaemonState::Stopping => NotifyState::Stopping,
    };
    let mut states = vec![first, NotifyState::Status(status)];
    if state == DaemonState::Reloading {
        // systemd 253+ wants the time of the reload with RELOADING=1; older ones ignore it.
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
    }
    if let Err(e) = sd_notify::notify(&states) {
        log::warn!("notifying the service manager ({state:?}): {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// A listener on `<dir>/<file>.sock` passed under `name`.
    fn named(dir: &std::path::Path, file: &str, name: &str) -> (OwnedFd, String) {
        let l = UnixListener::bind(dir.join(format!("{file}.sock"))).unwrap();
        (OwnedFd::from(l), name.to_string())
    }

    fn listener(dir: &std::path::Path, name: &str) -> (OwnedFd, String) {
        named(dir, name, name)
    }

    #[test]
    fn fd_hosts_take_all_sockets_or_the_named_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut passed = PassedSockets::from_fds(vec![
            listener(dir.path(), "api"),
            listener(dir.path(), "other"),
        ]);
        let api = passed.take(Some("api")).unwrap();
        assert_eq!(api.len(), 1);
        assert_eq!(
            api[0].local_addr().unwrap().as_pathname(),
            Some(dir.path().join("api.sock").as_path())
        );
        assert_eq!(passed.unused(), vec!["other"]);
        assert!(matches!(
            passed.take(Some("nosuch")),
            Err(ActivationError::NoSuchName { .. })
        ));
        assert_eq!(passed.take(None).unwrap().len(), 1);
        assert!(passed.unused().is_empty());
    }

    #[test]
    fn descriptor_numbers_and_non_unix_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let mut passed = PassedSockets::from_fds(vec![
            named(dir.path(), "first", "unknown"),
            named(dir.path(), "second", "unknown"),
        ]);
        // The second passed socket is descriptor 4.
        let second = passed.take(Some("4")).unwrap();
        assert_eq!(
            second[0].local_addr().unwrap().as_pathname(),
            Some(dir.path().join("second.sock").as_path())
        );
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut passed = PassedSockets::from_fds(vec![(OwnedFd::from(tcp), "tcp".into())]);
        assert!(matches!(
            passed.take(None),
            Err(ActivationError::NotUnix { .. })
        ));
        assert!(matches!(
            PassedSockets::default().take(None),
            Err(ActivationError::NonePassed(_))
        ));
    }

    #[test]
    fn notify_is_silent_without_a_manager() {
        // No NOTIFY_SOCKET in the test environment: nothing is sent and nothing fails.
        let _unused = UnixDatagram::unbound().unwrap();
        notify(DaemonState::Ready, "ready");
    }
}
