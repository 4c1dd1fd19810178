//! Pure path rules: lexical cleaning of entry names and link targets, and where a symlink may
//! point. No system calls.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::ExtractError;

pub(super) const CLIMB: &str = "climbs above the root (\"..\" breakout)";

/// Lexically cleans a tar entry name (or hardlink target): a leading `/` is dropped (absolute
/// names are relative to the root), empty and `.` components vanish, `..` removes the previous
/// component. Returns the components joined by `/` (empty for the root itself), or `None` when a
/// `..` would climb above the root.
pub(super) fn clean_entry_path(name: &[u8]) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(name.len());
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.is_empty() {
                    return None;
                }
                let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(comp);
            }
        }
    }
    Some(out)
}

/// For a cleaned context path, the rootfs-relative part if it lies in `rootfs/` (`""` for the
/// `rootfs` directory itself).
pub(super) fn strip_rootfs(clean: &[u8]) -> Option<&[u8]> {
    if clean == b"rootfs" {
        Some(b"")
    } else {
        clean.strip_prefix(b"rootfs/")
    }
}

/// Whether a symlink at `link` (cleaned, root-relative) with target `target` stays inside the
/// root when the target is joined lexically to the link's directory. Absolute targets always do:
/// they are resolved inside the plugin's root at run time.
pub(super) fn symlink_target_stays_inside(link: &[u8], target: &[u8]) -> bool {
    if target.first() == Some(&b'/') {
        return true;
    }
    let mut depth = link.split(|&b| b == b'/').filter(|c| !c.is_empty()).count();
    depth = depth.saturating_sub(1); // the link's parent directory
    for comp in target.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    true
}

/// `("a/b", "c")` for `"a/b/c"`, `("", "c")` for `"c"`.
pub(super) fn split_last(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

pub(super) fn q(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

pub(super) fn unsafe_entry(name: &[u8], why: impl std::fmt::Display) -> ExtractError {
    ExtractError::Unsafe(format!("refusing unsafe tar entry {}: {why}", q(name)))
}

pub(super) fn bytes_path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_entry_path_rules() {
        let c = |s: &str| clean_entry_path(s.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(c("config.json").as_deref(), Some("config.json"));
        assert_eq!(c("./config.json").as_deref(), Some("config.json"));
        assert_eq!(c("/config.json").as_deref(), Some("config.json"));
        assert_eq!(c("rootfs/").as_deref(), Some("rootfs"));
        assert_eq!(c("./rootfs/./bin//sh").as_deref(), Some("rootfs/bin/sh"));
        assert_eq!(c("/rootfs/etc/../bin").as_deref(), Some("rootfs/bin"));
        assert_eq!(c("rootfs/../config.json").as_deref(), Some("config.json"));
        assert_eq!(c("a/b/../../c").as_deref(), Some("c"));
        assert_eq!(c("").as_deref(), Some(""));
        assert_eq!(c(".").as_deref(), Some(""));
        assert_eq!(c("./").as_deref(), Some(""));
        assert_eq!(c("/").as_deref(), Some(""));
        assert_eq!(c("..."), Some("...".into()));
        assert_eq!(c(".."), None);
        assert_eq!(c("../x"), None);
        assert_eq!(c("rootfs/../../etc/passwd"), None);
        assert_eq!(c("/../etc/passwd"), None);
        assert_eq!(c("a/../.."), None);
    }

    #[test]
    fn strip_rootfs_rules() {
        assert_eq!(strip_rootfs(b"rootfs"), Some(&b""[..]));
        assert_eq!(strip_rootfs(b"rootfs/bin/sh"), Some(&b"bin/sh"[..]));
        assert_eq!(strip_rootfs(b"rootfsx/a"), None);
        assert_eq!(strip_rootfs(b"config.json"), None);
        assert_eq!(strip_rootfs(b"x/rootfs/a"), None);
    }

    #[test]
    fn symlink_target_rules() {
        let ok = |l: &str, t: &str| symlink_target_stays_inside(l.as_bytes(), t.as_bytes());
        assert!(ok("bin/sh", "busybox"));
        assert!(ok("bin/sh", "../usr/bin/busybox"));
        assert!(ok("a/b/c", "../../x"));
        assert!(ok("etc", "/etc/hosts"));
        assert!(ok("link", "/"));
        assert!(
            ok("link", "/../../.."),
            "absolute targets resolve inside the root at run time"
        );
        assert!(ok("x", "."));
        assert!(ok("a/x", "b/../.."));
        assert!(!ok("x", ".."));
        assert!(!ok("link", "../etc/passwd"));
        assert!(!ok("a/b/c", "../../../x"));
        assert!(!ok("a/l", "b/../../../x"));
        assert!(!ok("a/l", "../../a"));
    }
}
