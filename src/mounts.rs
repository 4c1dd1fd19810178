//! The mount table of this mount namespace (`/proc/self/mountinfo`) and taking mounts off it:
//! shared by the `local` volume driver and the plugin executor, so both read the kernel the
//! same way.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MntFlags;

use crate::goerr::errno_text;

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub id: u32,
    pub parent: u32,
    pub mount_point: PathBuf,
    /// `shared:N`, `master:N`, ...
    pub optional: Vec<String>,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
}

/// mountinfo writes space, tab, newline and backslash as `\040`, `\011`, `\012`, `\134`.
fn unescape(field: &str) -> OsString {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let Some(octal) = b.get(i + 1..i + 4).filter(|_| b[i] == b'\\') {
            if octal.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let value = octal
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut l = left.split(' ');
            let id = l.next()?.parse().ok()?;
            let parent = l.next()?.parse().ok()?;
            let _dev = l.next()?;
            let _root = l.next()?;
            let mount_point = PathBuf::from(unescape(l.next()?));
            let _options = l.next()?;
            let optional = l.map(String::from).collect();
            let mut r = right.split(' ');
            let fstype = r.next()?.to_string();
            let source = r.next().unwrap_or("").to_string();
            let super_options = r.next().unwrap_or("").to_string();
            Some(MountInfo {
                id,
                parent,
                mount_point,
                optional,
                fstype,
                source,
                super_options,
            })
        })
        .collect()
}

pub fn read_mountinfo() -> io::Result<Vec<MountInfo>> {
    Ok(parse_mountinfo(&fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// Mount points of this mount namespace, in mountinfo order (octal escapes undone).
pub fn mount_points() -> io::Result<Vec<PathBuf>> {
    Ok(read_mountinfo()?
        .into_iter()
        .map(|m| m.mount_point)
        .collect())
}

/// A mount that could not be taken off.
#[derive(Debug, thiserror::Error)]
pub enum UnmountError {
    /// `/proc/self/mountinfo` could not be read.
    #[error(transparent)]
    MountTable(#[from] io::Error),
    /// moby/sys/mount's `mountError` wording: `umount /v/_data, flags: 0x2: <errno>`.
    #[error("umount {}, flags: 0x{:x}: {}", target.display(), MntFlags::MNT_DETACH.bits(), errno_text(*errno as i32))]
    Failed { target: PathBuf, errno: Errno },
    #[error("umount {}: too many stacked mounts", .0.display())]
    TooManyStacked(PathBuf),
    #[error("mounts keep reappearing")]
    KeepReappearing,
}

impl From<UnmountError> for io::Error {
    fn from(e: UnmountError) -> io::Error {
        match e {
            UnmountError::MountTable(e) => e,
            UnmountError::Failed { errno, .. } => io::Error::new(io::Error::from(errno).kind(), e),
            other => io::Error::other(other),
        }
    }
}

/// Lazily detaches every mount stacked on `path` (each `umount2` takes off the top one). Not
/// mounted (`EINVAL`) and missing (`ENOENT`) are success.
pub fn unmount_stack(path: &Path) -> Result<(), UnmountError> {
    for _ in 0..64 {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINTR) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(errno) => {
                return Err(UnmountError::Failed {
                    target: path.to_path_buf(),
                    errno,
                })
            }
        }
    }
    Err(UnmountError::TooManyStacked(path.to_path_buf()))
}

/// Lazily detaches every mount whose mount point matches, deepest (then newest) first, until
/// the mount table shows none.
pub fn unmount_matching(matches: impl Fn(&Path) -> bool) -> Result<(), UnmountError> {
    for _ in 0..32 {
        let mut targets: Vec<MountInfo> = read_mountinfo()?
            .into_iter()
            .filter(|m| matches(&m.mount_point))
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        targets.sort_by_key(|m| {
            (
                std::cmp::Reverse(m.mount_point.components().count()),
                std::cmp::Reverse(m.id),
            )
        });
        for m in targets {
            match nix::mount::umount2(&m.mount_point, MntFlags::MNT_DETACH) {
                Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(errno) => {
                    return Err(UnmountError::Failed {
                        target: m.mount_point,
                        errno,
                    })
                }
            }
        }
    }
    Err(UnmountError::KeepReappearing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n\
                    42 27 254:0 /tmp/dk /tmp/with\\040space rw,relatime shared:1 master:3 - ext4 /dev/vda rw\n\
                    36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].mount_point, Path::new("/tmp/with space"));
        assert_eq!(m[1].optional, ["shared:1", "master:3"]);
        assert_eq!(m[1].parent, 27);
        assert_eq!(m[2].fstype, "cgroup");
        assert_eq!(m[2].super_options, "rw,devices");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/x\04"), r"/x\04");
        // not a byte: left as written
        assert_eq!(unescape(r"/x\777"), r"/x\777");
    }

    #[test]
    fn unmount_error_texts() {
        let e = UnmountError::Failed {
            target: "/v/_data".into(),
            errno: Errno::EPERM,
        };
        assert_eq!(
            e.to_string(),
            "umount /v/_data, flags: 0x2: operation not permitted"
        );
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::PermissionDenied);
    }
}
