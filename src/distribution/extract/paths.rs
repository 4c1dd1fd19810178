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
        let cases = [
            ("config.json", Some("config.json")),
            ("./config.json", Some("config.json")),
            ("/config.json", Some("config.json")),
            ("rootfs/", Some("rootfs")),
            ("./rootfs/./bin//sh", Some("rootfs/bin/sh")),
            ("/rootfs/etc/../bin", Some("rootfs/bin")),
            ("rootfs/../config.json", Some("config.json")),
            ("a/b/../../c", Some("c")),
            ("", Some("")),
            (".", Some("")),
            ("./", Some("")),
            ("/", Some("")),
            ("...", Some("...")),
            ("..", None),
            ("../x", None),
            ("rootfs/../../etc/passwd", None),
            ("/../etc/passwd", None),
            ("a/../..", None),
        ];
        for (name, want) in cases {
            let cleaned = clean_entry_path(name.as_bytes()).map(|v| String::from_utf8(v).unwrap());
            assert_eq!(cleaned.as_deref(), want, "{name:?}");
        }
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
        let inside = [
            ("bin/sh", "busybox"),
            ("bin/sh", "../usr/bin/busybox"),
            ("a/b/c", "../../x"),
            ("etc", "/etc/hosts"),
            ("link", "/"),
            // absolute targets resolve inside the root at run time
            ("link", "/../../.."),
            ("x", "."),
            ("a/x", "b/../.."),
        ];
        let escaping = [
            ("x", ".."),
            ("link", "../etc/passwd"),
            ("a/b/c", "../../../x"),
            ("a/l", "b/../../../x"),
            ("a/l", "../../a"),
        ];
        for (want, cases) in [(true, &inside[..]), (false, &escaping[..])] {
            for (link, target) in cases {
                let stays = symlink_target_stays_inside(link.as_bytes(), target.as_bytes());
                assert_eq!(stays, want, "{link} -> {target}");
            }
        }
    }
}
