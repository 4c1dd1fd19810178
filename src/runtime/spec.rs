//! The run specification of a plugin: what the executor is told to run (what an OCI spec
//! would say, limited to what plugins use), with moby's defaults for it. The plugin model
//! (`plugin/spec.rs`) builds one from a plugin's record; nothing here knows plugins.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::goerr::io_error_text;

/// Host paths a plugin runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginPaths {
    /// `<data-root>/plugins/<id>/rootfs`
    pub rootfs: PathBuf,
    /// `<data-root>/plugins/<id>/propagated-mount` (used when Config.PropagatedMount is set)
    pub propagated_mount: PathBuf,
    /// `<exec-root>/plugins/<id>`: bound at `/run/docker/plugins` inside; holds the socket.
    pub socket_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub source: String,
    /// Path inside the plugin's root.
    pub destination: String,
    /// `bind`, `proc`, `tmpfs`, `sysfs`, `devpts`, `mqueue`, `cgroup`, ...
    pub kind: String,
    /// OCI-style options: `rbind`, `ro`, `nosuid`, `rshared`, `mode=755`, ...
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    /// Path inside the plugin (`/dev/fuse`).
    pub path: String,
    /// `c` or `b`
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A devices-cgroup rule (`a`/`c`/`b`, major/minor `None` = `*`, access `rwm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: char,
    pub major: Option<u64>,
    pub minor: Option<u64>,
    pub access: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    /// false = share the host's (Network.Type "host")
    pub network: bool,
    /// false = PidHost
    pub pid: bool,
    /// false = IpcHost
    pub ipc: bool,
    pub uts: bool,
    pub mount: bool,
}

/// Everything the executor needs to start one plugin process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSpec {
    pub id: String,
    pub paths: PluginPaths,
    /// `Entrypoint ++ Settings.Args`
    pub args: Vec<String>,
    /// default PATH plus `Settings.Env`
    pub env: Vec<String>,
    /// `WorkDir`, default `/`
    pub cwd: String,
    pub hostname: String,
    pub namespaces: Namespaces,
    /// In order; mounted after the rootfs is prepared, before pivot_root.
    pub mounts: Vec<MountSpec>,
    /// `rshared` when a propagated mount is configured, else `rprivate`/`rslave`.
    pub rootfs_propagation: String,
    /// Final capability set (`CAP_*` names): Docker's defaults plus the config's. The bounding,
    /// effective and permitted sets of the process are exactly this.
    pub capabilities: Vec<String>,
    /// The inheritable set: only `Config.Linux.Capabilities` (what moby gives plugins; Docker's
    /// defaults are not made inheritable, cf. CVE-2022-24769).
    #[serde(default)]
    pub inheritable_capabilities: Vec<String>,
    pub devices: Vec<DeviceNode>,
    pub device_rules: Vec<DeviceRule>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
}

impl MountSpec {
    pub fn new(source: &str, destination: &str, kind: &str, options: &[&str]) -> MountSpec {
        MountSpec {
            source: source.into(),
            destination: destination.into(),
            kind: kind.into(),
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }
}

impl DeviceRule {
    /// A rule for every access (`rwm`).
    pub fn new(allow: bool, kind: char, major: Option<u64>, minor: Option<u64>) -> DeviceRule {
        DeviceRule {
            allow,
            kind,
            major,
            minor,
            access: "rwm".into(),
        }
    }
}

/// `PATH` every plugin starts with (moby `oci.DefaultPathEnv`).
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the socket directory appears inside a plugin.
pub const PLUGIN_SOCKET_DIR: &str = "/run/docker/plugins";

/// Docker's default capability set (moby `caps.DefaultCapabilities`), in moby's order.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// moby's default masked paths (`oci.DefaultLinuxSpec`); per-CPU `thermal_throttle`
/// directories that exist on the host are appended.
pub const DEFAULT_MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The mounts of moby's default Linux spec, in its order.
pub fn default_mounts() -> Vec<MountSpec> {
    vec![
        MountSpec::new("proc", "/proc", "proc", &["nosuid", "noexec", "nodev"]),
        MountSpec::new(
            "tmpfs",
            "/dev",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        MountSpec::new(
            "devpts",
            "/dev/pts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        MountSpec::new(
            "sysfs",
            "/sys",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        MountSpec::new(
            "cgroup",
            "/sys/fs/cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        ),
        MountSpec::new(
            "mqueue",
            "/dev/mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        MountSpec::new(
            "shm",
            "/dev/shm",
            "tmpfs",
            &["nosuid", "noexec", "nodev", "mode=1777"],
        ),
    ]
}

/// moby's default device cgroup rules: deny everything, allow the standard character devices,
/// and deny FUSE explicitly.
pub fn default_device_rules() -> Vec<DeviceRule> {
    let allow = |major, minor| DeviceRule::new(true, 'c', Some(major), Some(minor));
    vec![
        DeviceRule::new(false, 'a', None, None),
        allow(1, 5),                                      // /dev/zero
        allow(1, 3),                                      // /dev/null
        allow(1, 9),                                      // /dev/urandom
        allow(1, 8),                                      // /dev/random
        allow(5, 0),                                      // /dev/tty
        allow(5, 1),                                      // /dev/console
        DeviceRule::new(false, 'c', Some(10), Some(229)), // /dev/fuse
    ]
}

/// What the OCI runtime (runc) appends after the spec's own rules for the nodes it creates in
/// every container: `mknod` of any node (opening still needs a rule), `/dev/full`, the
/// devpts terminals and `/dev/pts/ptmx`.
pub fn runtime_device_rules() -> Vec<DeviceRule> {
    let mut mknod_any_c = DeviceRule::new(true, 'c', None, None);
    mknod_any_c.access = "m".into();
    let mut mknod_any_b = DeviceRule::new(true, 'b', None, None);
    mknod_any_b.access = "m".into();
    vec![
        mknod_any_c,
        mknod_any_b,
        DeviceRule::new(true, 'c', Some(1), Some(7)), // /dev/full
        DeviceRule::new(true, 'c', Some(136), None),  // /dev/pts/*
        DeviceRule::new(true, 'c', Some(5), Some(2)), // /dev/ptmx
    ]
}

/// `CAP_sys_admin`, `sys_admin` → `CAP_SYS_ADMIN`.
pub fn canonical_capability(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// [`DEFAULT_MASKED_PATHS`] plus the per-CPU `thermal_throttle` directories the host has.
pub fn default_masked_paths() -> Vec<String> {
    let mut paths: Vec<String> = DEFAULT_MASKED_PATHS.iter().map(|p| p.to_string()).collect();
    paths.extend(thermal_throttle_paths());
    paths
}

/// Per-CPU `thermal_throttle` directories moby masks when the host has them.
fn thermal_throttle_paths() -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/devices/system/cpu") else {
        return found;
    };
    let mut cpus: Vec<(u64, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("cpu")?.parse::<u64>().ok()?;
            Some((n, name))
        })
        .collect();
    cpus.sort();
    for (_, cpu) in cpus {
        let path = format!("/sys/devices/system/cpu/{cpu}/thermal_throttle");
        if Path::new(&path).is_dir() {
            found.push(path);
        }
    }
    found
}

/// The device node at `path` (not following a final symlink), shown at `inside`.
fn device_node(path: &Path, inside: String) -> std::io::Result<Option<DeviceNode>> {
    let meta = fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else {
        return Ok(None);
    };
    let rdev = meta.rdev();
    Ok(Some(DeviceNode {
        path: inside,
        kind,
        major: nix::sys::stat::major(rdev),
        minor: nix::sys::stat::minor(rdev),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }))
}

/// Depth-first, entries in lexical order (Go's `filepath.WalkDir`), not following symlinks.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    names.sort();
    for p in names {
        out.push(p.clone());
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            walk(&p, out);
        }
    }
}

/// A custom device that could not be added (moby `oci.DevicesFromPath`'s error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("error gathering device information while adding custom device \"{path}\": {reason}")]
pub struct DeviceError {
    pub path: String,
    /// Go's text for the failure: an errno text or `not a device node`.
    pub reason: String,
}

/// moby `oci.DevicesFromPath(path, path, "rwm")`: a device node (symlinks on the host are
/// followed first), or every device node below a directory, walked in lexical order.
pub fn devices_from_path(path_on_host: &str) -> Result<Vec<(DeviceNode, DeviceRule)>, DeviceError> {
    let fail = |reason: String| DeviceError {
        path: path_on_host.to_string(),
        reason,
    };
    let mut resolved = PathBuf::from(path_on_host);
    if fs::symlink_metadata(&resolved).is_ok_and(|m| m.file_type().is_symlink()) {
        if let Ok(real) = fs::canonicalize(&resolved) {
            resolved = real;
        }
    }
    let with_rule = |d: DeviceNode| {
        let rule = DeviceRule::new(true, d.kind, Some(d.major), Some(d.minor));
        (d, rule)
    };
    match device_node(&resolved, path_on_host.to_string()) {
        Ok(Some(d)) => return Ok(vec![with_rule(d)]),
        Ok(None) => {}
        Err(e) => return Err(fail(io_error_text(&e))),
    }
    let mut found = Vec::new();
    if resolved.is_dir() {
        let prefix = resolved.to_string_lossy().into_owned();
        let mut paths = Vec::new();
        walk(&resolved, &mut paths);
        for p in paths {
            let inside = p.to_string_lossy().replacen(&prefix, path_on_host, 1);
            if let Ok(Some(d)) = device_node(&p, inside) {
                found.push(with_rule(d));
            }
        }
    }
    if found.is_empty() {
        return Err(fail("not a device node".into()));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read without changing it (tests run on parallel threads).
    fn current_umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap()
    }

    #[test]
    fn device_errors_and_directories() {
        assert_eq!(
            devices_from_path("/dev/nonexistent-berth").unwrap_err(),
            DeviceError {
                path: "/dev/nonexistent-berth".into(),
                reason: "no such file or directory".into()
            }
        );
        // a directory contributes every device node below it (symlinks inside are not
        // followed); a symlink to the directory keeps its own path inside the plugin
        let dir = tempfile::Builder::new().prefix("brdev").tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join("sub/link")).unwrap();
        let sub = dir.path().join("sub").to_string_lossy().into_owned();
        assert_eq!(
            devices_from_path(&sub).unwrap_err().reason,
            "not a device node"
        );
        if nix::unistd::geteuid().is_root() {
            let node = dir.path().join("sub/deeper/zero");
            std::fs::create_dir(node.parent().unwrap()).unwrap();
            nix::sys::stat::mknod(
                &node,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o640),
                nix::sys::stat::makedev(1, 5),
            )
            .unwrap();
            let alias = dir.path().join("alias");
            std::os::unix::fs::symlink(dir.path().join("sub"), &alias).unwrap();
            let found = devices_from_path(&alias.to_string_lossy()).unwrap();
            assert_eq!(found.len(), 1);
            assert_eq!(
                found[0].0,
                DeviceNode {
                    path: format!("{}/deeper/zero", alias.display()),
                    kind: 'c',
                    major: 1,
                    minor: 5,
                    mode: 0o640 & !current_umask(),
                    uid: 0,
                    gid: 0,
                }
            );
            assert_eq!(found[0].1, DeviceRule::new(true, 'c', Some(1), Some(5)));
        }
        let found = devices_from_path("/dev").unwrap();
        assert!(found
            .iter()
            .any(|(d, _)| d.path == "/dev/null" && d.major == 1 && d.minor == 3));
    }

    #[test]
    fn masked_paths_start_with_mobys() {
        assert_eq!(
            default_masked_paths()[..DEFAULT_MASKED_PATHS.len()],
            DEFAULT_MASKED_PATHS.map(String::from)
        );
    }
}
