//! Device access: the v1 devices cgroup (step 2) and the nodes of the plugin's `/dev`
//! (step 7).

use std::path::Path;

use nix::libc;

use super::mounts::is_bind;
use super::{fail, InitRequest, SetupError, Step};
use crate::runtime::spec::{DeviceNode, DeviceRule, PluginSpec};
use crate::runtime::syscall::{Create, Syscall};

/// `a`, `c 1:3 rwm`, `c *:* m`: a rule as the v1 devices controller reads it.
pub fn device_rule_line(rule: &DeviceRule) -> String {
    if rule.kind == 'a' && rule.major.is_none() && rule.minor.is_none() {
        return "a".into();
    }
    let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "*".into());
    format!(
        "{} {}:{} {}",
        rule.kind,
        n(rule.major),
        n(rule.minor),
        rule.access
    )
}

/// Nodes every plugin gets in its `/dev` (runc's defaults).
pub fn default_devices() -> Vec<DeviceNode> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(path, major, minor)| DeviceNode {
        path: path.into(),
        kind: 'c',
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

const DEV_SYMLINKS: [(&str, &str); 4] = [
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
];

/// Step 2: the spec's device rules written to the plugin's devices cgroup, in order, and this
/// process moved into it; only a warning where the host has no v1 devices hierarchy.
pub(super) fn join_devices_cgroup(sys: &dyn Syscall, req: &InitRequest) -> Result<(), SetupError> {
    let Some(dir) = &req.devices_cgroup else {
        sys.warn(if req.cgroup2_only {
            "device rules are not enforced: the host has only cgroup v2, whose device \
             control needs BPF programs (not implemented)"
        } else {
            "device rules are not enforced: no v1 devices cgroup on this host"
        });
        return Ok(());
    };
    sys.mkdir_all(dir, 0o755)
        .step(|| format!("creating cgroup {}", dir.display()))?;
    for rule in &req.spec.device_rules {
        let file = dir.join(if rule.allow {
            "devices.allow"
        } else {
            "devices.deny"
        });
        let line = device_rule_line(rule);
        sys.write_file(&file, &line)
            .step(|| format!("writing {line:?} to {}", file.display()))?;
    }
    sys.write_file(&dir.join("cgroup.procs"), "0")
        .step(|| format!("joining cgroup {}", dir.display()))
}

/// Step 7: the default and the spec's device nodes, `/dev/ptmx` and the `/dev/fd`...
/// symlinks, unless `/dev` is a bind mount (then it holds what its source holds).
pub(super) fn populate_dev(sys: &dyn Syscall, spec: &PluginSpec) -> Result<(), SetupError> {
    let dev_is_bound = spec
        .mounts
        .iter()
        .any(|m| m.destination.trim_end_matches('/') == "/dev" && is_bind(m));
    if dev_is_bound {
        return Ok(());
    }
    let root = spec.paths.rootfs.as_path();
    for device in default_devices().iter().chain(&spec.devices) {
        create_device(sys, root, device)?;
    }
    let (dev, _) = sys
        .resolve_in_root(root, "/dev", Create::Dir)
        .step(|| "creating /dev".into())?;
    sys.replace_with_symlink("pts/ptmx", &dev.join("ptmx"))
        .step(|| "creating /dev/ptmx".into())?;
    for (target, link) in DEV_SYMLINKS {
        let name = link.trim_start_matches("/dev/");
        sys.symlink_if_missing(target, &dev.join(name))
            .step(|| format!("creating {link}"))?;
    }
    Ok(())
}

fn parent_and_name(path: &str) -> Option<(&str, &str)> {
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/')?;
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    Some((if parent.is_empty() { "/" } else { parent }, name))
}

fn create_device(sys: &dyn Syscall, root: &Path, device: &DeviceNode) -> Result<(), SetupError> {
    let what = || format!("creating device {}", device.path);
    let Some((parent, name)) = parent_and_name(&device.path) else {
        return fail(what(), "not a file path");
    };
    let (dir, _) = sys.resolve_in_root(root, parent, Create::Dir).step(what)?;
    let node = dir.join(name);
    match sys.mknod(
        &node,
        device.kind,
        device.mode & 0o7777,
        device.major,
        device.minor,
    ) {
        Ok(()) => {}
        // something (a mount or an earlier node) is there already: leave it
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(()),
        Err(e) => return Err(e).step(what),
    }
    sys.chown(&node, device.uid, device.gid).step(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_lines() {
        assert_eq!(
            device_rule_line(&DeviceRule {
                allow: false,
                kind: 'a',
                major: None,
                minor: None,
                access: "rwm".into()
            }),
            "a"
        );
        assert_eq!(
            device_rule_line(&DeviceRule::new(true, 'c', Some(136), None)),
            "c 136:* rwm"
        );
    }
}
