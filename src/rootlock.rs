//! One daemon per data root and exec root: an exclusive `flock` on `<root>/berth.lock`, taken
//! before anything under the root is touched (start-up sweeps kill stray plugin processes and
//! remove temp files, which would harm a daemon already using the root). The lock file says who
//! holds it, so a second daemon can name the first in its refusal.
//!
//! The lock belongs to the open file description: it is released when the daemon exits, however
//! it exits, and the descriptor is close-on-exec so plugin processes never inherit it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The file the lock is taken on, in each root.
pub const LOCK_FILE: &str = "berth.lock";

#[derive(Debug, thiserror::Error)]
pub enum RootLockError {
    #[error(
        "{root} is in use by another berth daemon ({holder}); stop it, or give this one \
         another --data-root and --exec-root"
    )]
    Held { root: String, holder: String },
    #[error("locking {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A held lock on one root; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RootLock {
    _file: File,
    pub path: PathBuf,
}

impl RootLock {
    /// Locks `root` (which exists) for this process, recording `pid` and `sockets` as the
    /// holder; fails at once, naming the holder, when another process has it.
    pub fn acquire(root: &Path, sockets: &[PathBuf]) -> Result<RootLock, RootLockError> {
        let path = root.join(LOCK_FILE);
        let io = |source| RootLockError::Io {
            path: path.display().to_string(),
            source,
        };
        // Not truncated on open: the holder's record must survive a failed attempt.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(RootLockError::Held {
                    root: root.display().to_string(),
                    holder: describe_holder(&holder),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let record = holder_record(std::process::id(), sockets);
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(record.as_bytes()).map_err(io)?;
        Ok(RootLock { _file: file, path })
    }
}

/// The lock file's content: `pid=<pid>` then one `socket=<path>` line per API socket.
fn holder_record(pid: u32, sockets: &[PathBuf]) -> String {
    let mut record = format!("pid={pid}\n");
    for socket in sockets {
        record.push_str(&format!("socket={}\n", socket.display()));
    }
    record
}

/// `PID 123, listening on unix:///run/berth.sock` from a lock file's content.
fn describe_holder(record: &str) -> String {
    let pid = record
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .unwrap_or("unknown");
    let sockets: Vec<String> = record
        .lines()
        .filter_map(|l| l.strip_prefix("socket="))
        .map(|s| format!("unix://{s}"))
        .collect();
    match sockets.is_empty() {
        true => format!("PID {pid}"),
        false => format!("PID {pid}, listening on {}", sockets.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_root_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let socket = PathBuf::from("/run/b.sock");
        let first = RootLock::acquire(dir.path(), std::slice::from_ref(&socket)).unwrap();
        let refused = RootLock::acquire(dir.path(), &[]).unwrap_err();
        let text = refused.to_string();
        let me = std::process::id();
        assert!(
            text.contains(&format!("(PID {me}, listening on unix:///run/b.sock)")),
            "{text}"
        );
        assert!(
            text.starts_with(&dir.path().display().to_string()),
            "{text}"
        );
        drop(first);
        RootLock::acquire(dir.path(), &[]).expect("free again once dropped");
    }

    #[test]
    fn a_record_without_sockets_names_the_pid_only() {
        assert_eq!(describe_holder("pid=7\n"), "PID 7");
        assert_eq!(describe_holder(""), "PID unknown");
    }
}
