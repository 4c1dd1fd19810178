//! Durable file-system steps shared by the stores: atomic replace and directory sync.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content:
/// write a sibling temp file, fsync it, rename over, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        random_hex(8)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Asks the kernel to start writing `len` bytes of `file` from `offset` back to disk, without
/// waiting for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): a later fsync then has less to
/// wait for. Best effort; durability still comes only from that fsync.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // nix has no wrapper for it. SAFETY: a plain system call on a descriptor `file` keeps open;
    // no memory is passed.
    unsafe {
        nix::libc::sync_file_range(
            file.as_raw_fd(),
            offset,
            len,
            nix::libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Creates `dir` (and parents) with `mode` applied to the last component.
pub fn create_dir_mode(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
}

/// A file in `dir` with no name (`O_TMPFILE`): it disappears with its last handle, even when
/// the process is killed, so nothing is left to sweep.
pub fn anonymous_file(dir: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_TMPFILE)
        .open(dir)
}

/// Removes a file or directory tree; a missing path is not an error.
pub fn remove_all(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    }
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.json")]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn remove_all_accepts_missing_paths() {
        let dir = tempfile::tempdir().unwrap();
        remove_all(&dir.path().join("nothing")).unwrap();
        let tree = dir.path().join("a/b");
        fs::create_dir_all(&tree).unwrap();
        fs::write(tree.join("f"), b"x").unwrap();
        remove_all(&dir.path().join("a")).unwrap();
        assert!(!dir.path().join("a").exists());
    }
}

/// A unix socket path usable with `connect(2)`. Socket addresses hold at most 107 bytes; a
/// longer path is reached through a descriptor of its directory (`/proc/self/fd/<n>/<name>`),
/// kept open as long as this value lives. Deep data or exec roots then still work.
#[derive(Debug)]
pub struct SocketPath {
    path: std::path::PathBuf,
    _dir: Option<std::os::fd::OwnedFd>,
}

/// The longest path `connect(2)` takes (sun_path is 108 bytes with the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

impl SocketPath {
    pub fn new(path: &Path) -> io::Result<SocketPath> {
        use std::os::fd::FromRawFd;
        if path.as_os_str().len() <= MAX_SOCKET_PATH {
            return Ok(SocketPath {
                path: path.to_path_buf(),
                _dir: None,
            });
        }
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket path has no directory",
            ));
        };
        let flags = nix::fcntl::OFlag::O_PATH
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_CLOEXEC;
        let raw = nix::fcntl::open(dir, flags, nix::sys::stat::Mode::empty())?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let short = Path::new("/proc/self/fd").join(raw.to_string()).join(name);
        if short.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket file name too long",
            ));
        }
        Ok(SocketPath {
            path: short,
            _dir: Some(owned),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod socket_path_tests {
    use super::*;

    #[test]
    fn long_socket_paths_connect_through_their_directory() {
        let base = tempfile::tempdir().unwrap();
        let deep = base.path().join("d".repeat(60)).join("e".repeat(60));
        fs::create_dir_all(&deep).unwrap();
        let socket = deep.join("plugin.sock");
        assert!(socket.as_os_str().len() > MAX_SOCKET_PATH);
        let listener =
            std::os::unix::net::UnixListener::bind(SocketPath::new(&socket).unwrap().path())
                .unwrap();
        let reachable = SocketPath::new(&socket).unwrap();
        assert!(reachable.path().as_os_str().len() <= MAX_SOCKET_PATH);
        std::os::unix::net::UnixStream::connect(reachable.path()).unwrap();
        drop(listener);
        let short = base.path().join("s.sock");
        assert_eq!(SocketPath::new(&short).unwrap().path(), short.as_path());
    }
}
