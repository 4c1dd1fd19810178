//! Every kernel call the executor makes while setting up a plugin, behind a trait so the setup
//! sequence can be recorded and checked in unit tests without root (youki's `Syscall` seam).
//!
//! [`LinuxSyscall`] makes the real calls; in unit tests, `RecordingSyscall` writes one line
//! per call and answers queries (file kinds, executables, mount flags) from what the test told
//! it.
//!
//! Path resolution inside a plugin's rootfs ([`resolve_in_root`]) lives here too: a rootfs is
//! untrusted content, so every component is looked at with `lstat` and symlinks are followed
//! by hand, scoped to the root (an absolute link or a `..` restarts or stops at the root, never
//! above it), creating what is missing on the way.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use caps::{CapSet, CapsHashSet};
use nix::libc;
use nix::mount::{MntFlags, MsFlags};

#[cfg(test)]
mod recording;
#[cfg(test)]
pub use recording::RecordingSyscall;

/// What a path is, as far as mounting onto it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    /// Anything that is not a directory (regular file, device, socket, ...).
    File,
}

/// A path resolved inside a root (a host path with no symlink below the root) and what is
/// there.
pub type InRoot = (PathBuf, FileKind);

/// What [`Syscall::resolve_in_root`] creates when the path (or a parent) is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Create {
    /// Nothing: a missing component is `ENOENT`.
    No,
    /// Directories all the way (mode 0755).
    Dir,
    /// Parent directories, then an empty file (mode 0755, as moby's init layer makes them).
    File,
}

/// One `mount(2)` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mount<'a> {
    pub source: Option<&'a Path>,
    pub target: &'a Path,
    pub fstype: Option<&'a str>,
    pub flags: MsFlags,
    pub data: Option<&'a str>,
}

impl<'a> Mount<'a> {
    /// A change to the mount at `target`: its propagation, or a remount (`MS_REMOUNT`).
    pub fn change(target: &'a Path, flags: MsFlags) -> Mount<'a> {
        Mount {
            source: None,
            target,
            fstype: None,
            flags,
            data: None,
        }
    }

    /// `source` bound onto `target`; `flags` are added to `MS_BIND` (`MS_REC` for a tree).
    pub fn bind(source: &'a Path, target: &'a Path, flags: MsFlags) -> Mount<'a> {
        Mount {
            source: Some(source),
            ..Mount::change(target, MsFlags::MS_BIND | flags)
        }
    }

    /// A new file system of type `fstype` from `source` on `target`.
    pub fn filesystem(
        source: &'a Path,
        target: &'a Path,
        fstype: &'a str,
        flags: MsFlags,
        data: Option<&'a str>,
    ) -> Mount<'a> {
        Mount {
            source: Some(source),
            fstype: Some(fstype),
            data,
            ..Mount::change(target, flags)
        }
    }
}

/// The kernel interface of the setup sequence. Paths are host paths before `pivot_root`
/// and paths in the plugin's root after it.
pub trait Syscall {
    fn mount(&self, mount: Mount<'_>) -> io::Result<()>;
    fn umount2(&self, target: &Path, flags: MntFlags) -> io::Result<()>;
    /// `open_tree(OPEN_TREE_CLONE)`: a detached copy of the mount tree at `source` that keeps
    /// the source's peer group (so mounts made in it still propagate to the host).
    fn clone_mount(&self, source: &Path, recursive: bool) -> io::Result<RawFd>;
    /// `move_mount` of a clone onto `target`; consumes (closes) `fd`.
    fn attach_mount(&self, fd: RawFd, target: &Path) -> io::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// Opens a directory (close-on-exec) to come back to it with [`Syscall::fchdir`].
    fn open_dir(&self, path: &Path) -> io::Result<RawFd>;
    fn fchdir(&self, fd: RawFd) -> io::Result<()>;
    fn close(&self, fd: RawFd);
    fn umask(&self, mask: u32);
    /// Kind of a host path, following symlinks (bind mount sources).
    fn stat_kind(&self, path: &Path) -> io::Result<FileKind>;
    /// [`resolve_in_root`]: the path of `path` inside `root`, never outside it.
    fn resolve_in_root(&self, root: &Path, path: &str, create: Create) -> io::Result<InRoot>;
    /// Creates the symlink `link -> target` unless something (even a dangling link) is at
    /// `link` already. The parent of `link` must have been resolved.
    fn symlink_if_missing(&self, target: &str, link: &Path) -> io::Result<()>;
    /// Replaces whatever is at `link` by the symlink `link -> target`.
    fn replace_with_symlink(&self, target: &str, link: &Path) -> io::Result<()>;
    /// `mkdir -p` (cgroup directories).
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// `mknod` of a `c`/`b` node; `EEXIST` is an error the caller may ignore.
    fn mknod(&self, path: &Path, kind: char, mode: u32, major: u64, minor: u64) -> io::Result<()>;
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// Writes `data` in one `write` (cgroup control files want exactly one per rule).
    fn write_file(&self, path: &Path, data: &str) -> io::Result<()>;
    /// The per-mount flags (`nosuid`, `nodev`, `noexec`, atime flags) of the mount holding
    /// `path`, to keep them on a read-only remount.
    fn mount_flags(&self, path: &Path) -> io::Result<MsFlags>;
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// Sets `lo` up in the (new) network namespace.
    fn loopback_up(&self) -> io::Result<()>;
    /// Drops every capability not in `keep` from the bounding set.
    fn limit_bounding_set(&self, keep: &CapsHashSet) -> io::Result<()>;
    fn clear_ambient_caps(&self) -> io::Result<()>;
    fn set_caps(&self, set: CapSet, caps: &CapsHashSet) -> io::Result<()>;
    /// `Ok` for a regular file with an execute bit; `ENOENT` when missing, `EACCES` otherwise.
    fn check_executable(&self, path: &Path) -> io::Result<()>;
    /// Signal dispositions to default, empty signal mask (the init process ignores SIGPIPE
    /// like every Rust program, and ignored dispositions survive execve).
    fn reset_signals(&self) -> io::Result<()>;
    /// Returns only on failure.
    fn execve(&self, path: &Path, args: &[String], env: &[String]) -> io::Error;
    /// A non-fatal problem worth the plugin's log.
    fn warn(&self, message: &str);
}

/// The real calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cpath(p: &Path) -> io::Result<CString> {
    cstring(p.as_os_str())
}

fn last_error<T>() -> io::Result<T> {
    Err(io::Error::last_os_error())
}

impl Syscall for LinuxSyscall {
    fn mount(&self, m: Mount<'_>) -> io::Result<()> {
        nix::mount::mount(m.source, m.target, m.fstype, m.flags, m.data).map_err(io::Error::from)
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        nix::mount::umount2(target, flags).map_err(io::Error::from)
    }

    fn clone_mount(&self, source: &Path, recursive: bool) -> io::Result<RawFd> {
        const OPEN_TREE_CLONE: libc::c_uint = 1;
        let path = cpath(source)?;
        let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
        if recursive {
            flags |= libc::AT_RECURSIVE as libc::c_uint;
        }
        // SAFETY: plain syscall with a valid NUL-terminated path.
        let fd =
            unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
        if fd < 0 {
            return last_error();
        }
        Ok(fd as RawFd)
    }

    fn attach_mount(&self, fd: RawFd, target: &Path) -> io::Result<()> {
        const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
        // SAFETY: `fd` came from `clone_mount` and is owned by this call from here on.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = cpath(target)?;
        let empty = c"";
        // SAFETY: plain syscall with valid NUL-terminated strings.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                fd,
                empty.as_ptr(),
                libc::AT_FDCWD,
                path.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        drop(owned);
        if rc < 0 {
            return last_error();
        }
        Ok(())
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        nix::unistd::pivot_root(new_root, put_old).map_err(io::Error::from)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        nix::unistd::chdir(path).map_err(io::Error::from)
    }

    fn open_dir(&self, path: &Path) -> io::Result<RawFd> {
        let p = cpath(path)?;
        // SAFETY: valid NUL-terminated path.
        let fd = unsafe {
            libc::open(
                p.as_ptr(),
                libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return last_error();
        }
        Ok(fd)
    }

    fn fchdir(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: fchdir on an fd; a bad fd is just an error.
        if unsafe { libc::fchdir(fd) } < 0 {
            return last_error();
        }
        Ok(())
    }

    fn close(&self, fd: RawFd) {
        // SAFETY: the caller owns fd and closes it once.
        unsafe { libc::close(fd) };
    }

    fn umask(&self, mask: u32) {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }

    fn stat_kind(&self, path: &Path) -> io::Result<FileKind> {
        Ok(if fs::metadata(path)?.is_dir() {
            FileKind::Dir
        } else {
            FileKind::File
        })
    }

    fn resolve_in_root(&self, root: &Path, path: &str, create: Create) -> io::Result<InRoot> {
        resolve_in_root(root, path, &create)
    }

    fn symlink_if_missing(&self, target: &str, link: &Path) -> io::Result<()> {
        match fs::symlink_metadata(link) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::os::unix::fs::symlink(target, link)
            }
            Err(e) => Err(e),
        }
    }

    fn replace_with_symlink(&self, target: &str, link: &Path) -> io::Result<()> {
        match fs::symlink_metadata(link) {
            Ok(m) if m.is_dir() => fs::remove_dir(link)?,
            Ok(_) => fs::remove_file(link)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::os::unix::fs::symlink(target, link)
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
    }

    fn mknod(&self, path: &Path, kind: char, mode: u32, major: u64, minor: u64) -> io::Result<()> {
        let file_type = match kind {
            'c' | 'u' => libc::S_IFCHR,
            'b' => libc::S_IFBLK,
            'p' => libc::S_IFIFO,
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        let p = cpath(path)?;
        // SAFETY: valid NUL-terminated path.
        let rc = unsafe {
            libc::mknod(
                p.as_ptr(),
                file_type | (mode & 0o7777),
                libc::makedev(major as u32, minor as u32),
            )
        };
        if rc < 0 {
            return last_error();
        }
        Ok(())
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
    }

    fn write_file(&self, path: &Path, data: &str) -> io::Result<()> {
        use std::io::Write;
        let mut file = fs::OpenOptions::new().write(true).open(path)?;
        let written = file.write(data.as_bytes())?;
        if written != data.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
        }
        Ok(())
    }

    fn mount_flags(&self, path: &Path) -> io::Result<MsFlags> {
        use nix::sys::statvfs::FsFlags;
        let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
        let f = st.flags();
        let mut flags = MsFlags::empty();
        for (fs_flag, ms_flag) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(fs_flag) {
                flags |= ms_flag;
            }
        }
        Ok(flags)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(io::Error::from)
    }

    fn loopback_up(&self) -> io::Result<()> {
        // SAFETY: a datagram socket only used for interface ioctls, closed by OwnedFd.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return last_error();
        }
        // SAFETY: fd is a fresh socket we own.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ifreq is plain old data; zeroed is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
        unsafe {
            if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
                return last_error();
            }
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                return last_error();
            }
        }
        drop(sock);
        Ok(())
    }

    fn limit_bounding_set(&self, keep: &CapsHashSet) -> io::Result<()> {
        // Only capabilities the running kernel knows: dropping others is EINVAL.
        for cap in caps::runtime::thread_all_supported() {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(caps_error)?;
            }
        }
        Ok(())
    }

    fn clear_ambient_caps(&self) -> io::Result<()> {
        if caps::runtime::ambient_set_supported().is_err() {
            return Ok(());
        }
        caps::clear(None, CapSet::Ambient).map_err(caps_error)
    }

    fn set_caps(&self, set: CapSet, caps: &CapsHashSet) -> io::Result<()> {
        caps::set(None, set, caps).map_err(caps_error)
    }

    fn check_executable(&self, path: &Path) -> io::Result<()> {
        let meta = fs::metadata(path)?;
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::EACCES))
        }
    }

    fn reset_signals(&self) -> io::Result<()> {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        for signal in Signal::iterator() {
            if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
                continue;
            }
            // SAFETY: installing SIG_DFL is always sound.
            unsafe { sigaction(signal, &default) }.map_err(io::Error::from)?;
        }
        SigSet::empty().thread_set_mask().map_err(io::Error::from)
    }

    fn execve(&self, path: &Path, args: &[String], env: &[String]) -> io::Error {
        let to_c = |v: &[String]| -> io::Result<Vec<CString>> {
            v.iter().map(|s| cstring(OsStr::new(s))).collect()
        };
        let (p, a, e) = match (cpath(path), to_c(args), to_c(env)) {
            (Ok(p), Ok(a), Ok(e)) => (p, a, e),
            _ => return io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in exec arguments"),
        };
        match nix::unistd::execve(&p, &a, &e) {
            Ok(never) => match never {},
            Err(e) => io::Error::from(e),
        }
    }

    fn warn(&self, message: &str) {
        eprintln!("berth plugin-init: warning: {message}");
    }
}

fn caps_error(e: caps::errors::CapsError) -> io::Error {
    io::Error::other(e.to_string())
}

/// Resolves `path` as if `root` were `/`: symlinks are followed by hand (at most 255), an
/// absolute link target or `..` never leaves `root`, and every component that is used is
/// checked with `lstat` to be a real directory, so the returned path contains no symlink below
/// `root` and a `mount` onto it lands inside the rootfs. Missing components are created as
/// `create` says (directories 0755; a final file 0755 like moby's init layer). Returns the host
/// path and what is there.
pub fn resolve_in_root(root: &Path, path: &str, create: &Create) -> io::Result<InRoot> {
    fn parts(p: &OsStr) -> VecDeque<OsString> {
        p.as_bytes()
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .map(|c| OsStr::from_bytes(c).to_os_string())
            .collect()
    }
    let mut pending = parts(OsStr::new(path));
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    let here = |resolved: &[OsString]| -> PathBuf {
        let mut p = root.to_path_buf();
        p.extend(resolved);
        p
    };
    while let Some(component) = pending.pop_front() {
        if component == ".." {
            resolved.pop();
            continue;
        }
        let candidate = here(&resolved).join(&component);
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                let mut next = parts(target.as_os_str());
                next.extend(pending.drain(..));
                pending = next;
            }
            Ok(meta) => {
                if !meta.is_dir() && !pending.is_empty() {
                    return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
                }
                resolved.push(component);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match create {
                    Create::No => return Err(e),
                    Create::File if pending.is_empty() => {
                        fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o755)
                            .custom_flags(libc::O_NOFOLLOW)
                            .open(&candidate)?;
                    }
                    _ => match fs::DirBuilder::new().mode(0o755).create(&candidate) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            // something appeared meanwhile: look again
                            pending.push_front(component);
                            continue;
                        }
                        Err(e) => return Err(e),
                    },
                }
                resolved.push(component);
            }
            Err(e) => return Err(e),
        }
    }
    let path = here(&resolved);
    let meta = fs::symlink_metadata(&path)?;
    let kind = if meta.is_dir() {
        FileKind::Dir
    } else {
        FileKind::File
    };
    Ok((path, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tmp() -> tempfile::TempDir {
        tempfile::Builder::new().prefix("brs").tempdir().unwrap()
    }

    #[test]
    fn resolution_stays_inside_the_root() {
        let outside = tmp();
        let dir = tmp();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        // absolute and relative links that point above the root
        symlink(outside.path(), root.join("abs")).unwrap();
        symlink("../../../../../../..", root.join("up")).unwrap();
        symlink("/etc/../../..", root.join("etc/dots")).unwrap();
        symlink("/nowhere/x", root.join("dangling")).unwrap();

        let (p, kind) = resolve_in_root(&root, "/abs/sub", &Create::Dir).unwrap();
        assert_eq!(
            p,
            root.join(outside.path().strip_prefix("/").unwrap())
                .join("sub")
        );
        assert_eq!(kind, FileKind::Dir);
        assert!(fs::read_dir(outside.path()).unwrap().next().is_none());

        let (p, _) = resolve_in_root(&root, "up/mnt", &Create::Dir).unwrap();
        assert_eq!(p, root.join("mnt"));
        let (p, _) = resolve_in_root(&root, "/etc/dots/../x", &Create::Dir).unwrap();
        assert_eq!(p, root.join("x"));

        // a dangling link is created inside, following the link
        let (p, kind) = resolve_in_root(&root, "/dangling", &Create::File).unwrap();
        assert_eq!(p, root.join("nowhere/x"));
        assert_eq!(kind, FileKind::File);
        assert!(root.join("nowhere/x").is_file());

        // .. above the root stays at the root
        let (p, _) = resolve_in_root(&root, "/../../etc", &Create::No).unwrap();
        assert_eq!(p, root.join("etc"));
    }

    #[test]
    fn resolution_errors() {
        let dir = tmp();
        let root = dir.path();
        fs::write(root.join("file"), b"").unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        let err = resolve_in_root(root, "/file/x", &Create::Dir).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
        let err = resolve_in_root(root, "/loop1/x", &Create::Dir).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        let err = resolve_in_root(root, "/missing", &Create::No).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let (p, kind) = resolve_in_root(root, "/a/b/c", &Create::File).unwrap();
        assert_eq!(p, root.join("a/b/c"));
        assert_eq!(kind, FileKind::File);
        assert!(root.join("a/b").is_dir());
        assert_eq!(
            fs::metadata(root.join("a/b/c"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o755 & !current_umask()
        );
    }

    /// Read without changing it (tests run on parallel threads).
    fn current_umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap()
    }
}
