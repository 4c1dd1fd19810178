//! The recording double of [`Syscall`] the setup-sequence tests run against: one line per
//! call, queries answered from what the test configured.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::libc;
use nix::mount::{MntFlags, MsFlags};

use super::{Create, FileKind, InRoot, Mount, Syscall};

/// Records every call as one line (`mount proc -> /r/proc type=proc flags=... data=...`) and
/// answers queries from its configuration. Resolution inside a root is lexical here (no disk).
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    calls: RefCell<Vec<String>>,
    /// Host paths `stat_kind` reports as regular files (everything else is a directory).
    pub files: HashSet<PathBuf>,
    /// Paths that exist for `resolve_in_root(.., Create::No)` and `check_executable`; `None`
    /// means every path exists.
    pub existing: Option<HashSet<PathBuf>>,
    /// Paths `resolve_in_root` reports as directories when they exist.
    pub dirs: HashSet<PathBuf>,
    next_fd: RefCell<RawFd>,
}

impl RecordingSyscall {
    pub fn new() -> RecordingSyscall {
        RecordingSyscall::default()
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn record(&self, line: String) {
        self.calls.borrow_mut().push(line);
    }

    fn exists(&self, path: &Path) -> bool {
        self.existing.as_ref().is_none_or(|set| set.contains(path))
    }
}

/// `MS_BIND|MS_REC` style names of mount flags, in bit order.
pub fn flag_names(flags: MsFlags) -> String {
    if flags.is_empty() {
        return "0".into();
    }
    flags
        .iter_names()
        .map(|(name, _)| name)
        .collect::<Vec<_>>()
        .join("|")
}

fn cap_names(caps: &CapsHashSet) -> String {
    let mut v: Vec<&Capability> = caps.iter().collect();
    v.sort_by_key(|c| c.index());
    v.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Lexical clean of `root` + `path` (what the recording double pretends resolution gives).
fn lexical_join(root: &Path, path: &str) -> PathBuf {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut p = root.to_path_buf();
    p.extend(parts);
    p
}

impl Syscall for RecordingSyscall {
    fn mount(&self, m: Mount<'_>) -> io::Result<()> {
        let mut line = format!(
            "mount {} -> {}",
            m.source
                .map(|s| s.display().to_string())
                .unwrap_or("-".into()),
            m.target.display()
        );
        if let Some(t) = m.fstype {
            line.push_str(&format!(" type={t}"));
        }
        line.push_str(&format!(" flags={}", flag_names(m.flags)));
        if let Some(d) = m.data {
            line.push_str(&format!(" data={d}"));
        }
        self.record(line);
        Ok(())
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        self.record(format!("umount2 {} {:?}", target.display(), flags));
        Ok(())
    }

    fn clone_mount(&self, source: &Path, recursive: bool) -> io::Result<RawFd> {
        let mut next = self.next_fd.borrow_mut();
        *next = (*next).max(100) + 1;
        self.record(format!(
            "clone_mount {}{} = fd {}",
            source.display(),
            if recursive { " recursive" } else { "" },
            *next
        ));
        Ok(*next)
    }

    fn attach_mount(&self, fd: RawFd, target: &Path) -> io::Result<()> {
        self.record(format!("attach_mount fd {fd} -> {}", target.display()));
        Ok(())
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        self.record(format!(
            "pivot_root {} {}",
            new_root.display(),
            put_old.display()
        ));
        Ok(())
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.record(format!("chdir {}", path.display()));
        Ok(())
    }

    fn open_dir(&self, path: &Path) -> io::Result<RawFd> {
        let mut next = self.next_fd.borrow_mut();
        *next = (*next).max(100) + 1;
        self.record(format!("open {} = fd {}", path.display(), *next));
        Ok(*next)
    }

    fn fchdir(&self, fd: RawFd) -> io::Result<()> {
        self.record(format!("fchdir fd {fd}"));
        Ok(())
    }

    fn close(&self, fd: RawFd) {
        self.record(format!("close fd {fd}"));
    }

    fn umask(&self, mask: u32) {
        self.record(format!("umask {mask:04o}"));
    }

    fn stat_kind(&self, path: &Path) -> io::Result<FileKind> {
        if !self.exists(path) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(if self.files.contains(path) {
            FileKind::File
        } else {
            FileKind::Dir
        })
    }

    fn resolve_in_root(&self, root: &Path, path: &str, create: Create) -> io::Result<InRoot> {
        let p = lexical_join(root, path);
        match create {
            Create::No => {
                if !self.exists(&p) {
                    return Err(io::Error::from_raw_os_error(libc::ENOENT));
                }
                let kind = if self.dirs.contains(&p) {
                    FileKind::Dir
                } else {
                    FileKind::File
                };
                Ok((p, kind))
            }
            Create::Dir => {
                self.record(format!("ensure dir {}", p.display()));
                Ok((p, FileKind::Dir))
            }
            Create::File => {
                self.record(format!("ensure file {}", p.display()));
                Ok((p, FileKind::File))
            }
        }
    }

    fn symlink_if_missing(&self, target: &str, link: &Path) -> io::Result<()> {
        self.record(format!(
            "symlink {} -> {target} (if missing)",
            link.display()
        ));
        Ok(())
    }

    fn replace_with_symlink(&self, target: &str, link: &Path) -> io::Result<()> {
        self.record(format!("symlink {} -> {target}", link.display()));
        Ok(())
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.record(format!("mkdir -p {} {mode:04o}", path.display()));
        Ok(())
    }

    fn mknod(&self, path: &Path, kind: char, mode: u32, major: u64, minor: u64) -> io::Result<()> {
        self.record(format!(
            "mknod {} {kind} {major}:{minor} {mode:04o}",
            path.display()
        ));
        Ok(())
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        self.record(format!("chown {} {uid}:{gid}", path.display()));
        Ok(())
    }

    fn write_file(&self, path: &Path, data: &str) -> io::Result<()> {
        self.record(format!("write {} {data:?}", path.display()));
        Ok(())
    }

    fn mount_flags(&self, path: &Path) -> io::Result<MsFlags> {
        Ok(if path.starts_with("/proc") {
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
        } else {
            MsFlags::empty()
        })
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.record(format!("sethostname {name}"));
        Ok(())
    }

    fn loopback_up(&self) -> io::Result<()> {
        self.record("loopback up".into());
        Ok(())
    }

    fn limit_bounding_set(&self, keep: &CapsHashSet) -> io::Result<()> {
        self.record(format!("capbset {}", cap_names(keep)));
        Ok(())
    }

    fn clear_ambient_caps(&self) -> io::Result<()> {
        self.record("capamb clear".into());
        Ok(())
    }

    fn set_caps(&self, set: CapSet, caps: &CapsHashSet) -> io::Result<()> {
        let name = match set {
            CapSet::Ambient => "ambient",
            CapSet::Bounding => "bounding",
            CapSet::Effective => "effective",
            CapSet::Inheritable => "inheritable",
            CapSet::Permitted => "permitted",
        };
        self.record(format!("capset {name} {}", cap_names(caps)));
        Ok(())
    }

    fn check_executable(&self, path: &Path) -> io::Result<()> {
        if self.exists(path) {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::ENOENT))
        }
    }

    fn reset_signals(&self) -> io::Result<()> {
        self.record("reset signals".into());
        Ok(())
    }

    fn execve(&self, path: &Path, args: &[String], env: &[String]) -> io::Error {
        self.record(format!("execve {} {args:?} {env:?}", path.display()));
        io::Error::other("recorded")
    }

    fn warn(&self, message: &str) {
        self.record(format!("warn {message}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_names_are_stable() {
        assert_eq!(
            flag_names(MsFlags::MS_BIND | MsFlags::MS_REC),
            "MS_BIND|MS_REC"
        );
        assert_eq!(flag_names(MsFlags::empty()), "0");
    }
}
