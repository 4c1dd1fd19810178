//! The run specification of a plugin: moby's `InitSpec` turned into berth's own small spec
//! (what the OCI spec would say, limited to what plugins use).
//! OWNER: helper "executor" — implement `build_spec`; fields may be added.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plugin::store::Plugin;

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

fn mount(source: &str, destination: &str, kind: &str, options: &[&str]) -> MountSpec {
    MountSpec {
        source: source.into(),
        destination: destination.into(),
        kind: kind.into(),
        options: options.iter().map(|o| o.to_string()).collect(),
    }
}

/// The mounts of moby's default Linux spec, in its order.
pub fn default_mounts() -> Vec<MountSpec> {
    vec![
        mount("proc", "/proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "tmpfs",
            "/dev",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
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
        mount(
            "sysfs",
            "/sys",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "cgroup",
            "/sys/fs/cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        ),
        mount(
            "mqueue",
            "/dev/mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "shm",
            "/dev/shm",
            "tmpfs",
            &["nosuid", "noexec", "nodev", "mode=1777"],
        ),
    ]
}

fn device_rule(allow: bool, kind: char, major: Option<u64>, minor: Option<u64>) -> DeviceRule {
    DeviceRule {
        allow,
        kind,
        major,
        minor,
        access: "rwm".into(),
    }
}

/// moby's default device cgroup rules: deny everything, allow the standard character devices,
/// and deny FUSE explicitly.
pub fn default_device_rules() -> Vec<DeviceRule> {
    let allow = |major, minor| device_rule(true, 'c', Some(major), Some(minor));
    vec![
        device_rule(false, 'a', None, None),
        allow(1, 5),                                  // /dev/zero
        allow(1, 3),                                  // /dev/null
        allow(1, 9),                                  // /dev/urandom
        allow(1, 8),                                  // /dev/random
        allow(5, 0),                                  // /dev/tty
        allow(5, 1),                                  // /dev/console
        device_rule(false, 'c', Some(10), Some(229)), // /dev/fuse
    ]
}

/// What the OCI runtime (runc) appends after the spec's own rules for the nodes it creates in
/// every container: `mknod` of any node (opening still needs a rule), `/dev/full`, the
/// devpts terminals and `/dev/pts/ptmx`.
pub fn runtime_device_rules() -> Vec<DeviceRule> {
    let mut mknod_any_c = device_rule(true, 'c', None, None);
    mknod_any_c.access = "m".into();
    let mut mknod_any_b = device_rule(true, 'b', None, None);
    mknod_any_b.access = "m".into();
    vec![
        mknod_any_c,
        mknod_any_b,
        device_rule(true, 'c', Some(1), Some(7)), // /dev/full
        device_rule(true, 'c', Some(136), None),  // /dev/pts/*
        device_rule(true, 'c', Some(5), Some(2)), // /dev/ptmx
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

/// moby `oci.DevicesFromPath(path, path, "rwm")`: a device node (symlinks on the host are
/// followed first), or every device node below a directory, walked in lexical order.
pub fn devices_from_path(path_on_host: &str) -> Result<Vec<(DeviceNode, DeviceRule)>, String> {
    let fail = |why: String| {
        format!("error gathering device information while adding custom device \"{path_on_host}\": {why}")
    };
    let mut resolved = PathBuf::from(path_on_host);
    if fs::symlink_metadata(&resolved).is_ok_and(|m| m.file_type().is_symlink()) {
        if let Ok(real) = fs::canonicalize(&resolved) {
            resolved = real;
        }
    }
    let with_rule = |d: DeviceNode| {
        let rule = device_rule(true, d.kind, Some(d.major), Some(d.minor));
        (d, rule)
    };
    match device_node(&resolved, path_on_host.to_string()) {
        Ok(Some(d)) => return Ok(vec![with_rule(d)]),
        Ok(None) => {}
        Err(e) => return Err(fail(crate::goerr::io_error_text(&e))),
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

/// moby `InitSpec` for this plugin. Fails like moby when a config mount has no source
/// (`mount source is not specified`) or a device path does not exist.
///
/// Differences from moby, on purpose: the `/dev/*` override drops only default mounts (moby's
/// loop also drops a config mount whose destination is in `Settings.Mounts`, and skips entries
/// while deleting); capability names are canonicalised (`sys_admin` → `CAP_SYS_ADMIN`) and
/// de-duplicated; the device rules end with what runc appends for the nodes it creates
/// ([`runtime_device_rules`]), so the spec is the complete rule list.
pub fn build_spec(plugin: &Plugin, paths: &PluginPaths) -> Result<PluginSpec, String> {
    let config = &plugin.config;
    let settings = &plugin.settings;

    let user_destinations: HashSet<&str> = settings
        .mounts
        .iter()
        .map(|m| m.destination.as_str())
        .collect();
    let mut mounts: Vec<MountSpec> = default_mounts()
        .into_iter()
        .filter(|m| {
            !(m.destination.starts_with("/dev/")
                && user_destinations.contains(m.destination.as_str()))
        })
        .collect();

    let propagated = !config.propagated_mount.is_empty();
    if propagated {
        mounts.push(MountSpec {
            source: paths.propagated_mount.to_string_lossy().into_owned(),
            destination: config.propagated_mount.clone(),
            kind: "bind".into(),
            options: vec!["rbind".into(), "rw".into(), "rshared".into()],
        });
    }
    for m in config.mounts.iter().flatten() {
        let Some(source) = &m.source else {
            return Err("mount source is not specified".into());
        };
        mounts.push(MountSpec {
            source: source.clone(),
            destination: m.destination.clone(),
            kind: m.kind.clone(),
            options: m.options.clone().unwrap_or_default(),
        });
    }
    mounts.push(MountSpec {
        source: paths.socket_dir.to_string_lossy().into_owned(),
        destination: PLUGIN_SOCKET_DIR.into(),
        kind: "bind".into(),
        options: vec!["rbind".into(), "rshared".into()],
    });
    let network_type = config.network.kind.as_str();
    if !network_type.is_empty() {
        for file in ["/etc/hosts", "/etc/resolv.conf"] {
            mounts.push(mount(file, file, "bind", &["rbind", "ro"]));
        }
    }

    let mut device_rules = if config.linux.allow_all_devices {
        vec![device_rule(true, 'a', None, None)]
    } else {
        default_device_rules()
    };
    let mut devices = Vec::new();
    for device in &settings.devices {
        let Some(path) = &device.path else {
            return Err("device path is not specified".into());
        };
        for (node, rule) in devices_from_path(path)? {
            devices.push(node);
            device_rules.push(rule);
        }
    }
    device_rules.extend(runtime_device_rules());

    let mut env = vec![DEFAULT_PATH_ENV.to_string()];
    env.extend(settings.env.iter().cloned());
    let mut args = config.entrypoint.clone().unwrap_or_default();
    args.extend(settings.args.iter().cloned());
    let cwd = if config.work_dir.is_empty() {
        "/".to_string()
    } else {
        config.work_dir.clone()
    };

    let mut inheritable: Vec<String> = Vec::new();
    for cap in config.linux.capabilities.iter().flatten() {
        let cap = canonical_capability(cap);
        if !inheritable.contains(&cap) {
            inheritable.push(cap);
        }
    }
    let mut capabilities: Vec<String> =
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    for cap in &inheritable {
        if !capabilities.contains(cap) {
            capabilities.push(cap.clone());
        }
    }

    let mut masked_paths: Vec<String> =
        DEFAULT_MASKED_PATHS.iter().map(|p| p.to_string()).collect();
    masked_paths.extend(thermal_throttle_paths());

    Ok(PluginSpec {
        id: plugin.id.clone(),
        paths: paths.clone(),
        args,
        env,
        cwd,
        // moby sets no hostname: the private UTS namespace keeps the host's name.
        hostname: String::new(),
        namespaces: Namespaces {
            network: network_type != "host",
            pid: !config.pid_host,
            ipc: !config.ipc_host,
            uts: true,
            mount: true,
        },
        mounts,
        rootfs_propagation: if propagated { "rshared" } else { "rslave" }.into(),
        capabilities,
        inheritable_capabilities: inheritable,
        devices,
        device_rules,
        masked_paths,
        readonly_paths: DEFAULT_READONLY_PATHS
            .iter()
            .map(|p| p.to_string())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::config::{decode_config, PluginSettings};

    const ID: &str = "5360746d9ae1a0e1b5c3c32f1f0e0e5e5d3f1c2b7a9e8d6c4b2a0f1e3d5c7b9a";

    fn paths() -> PluginPaths {
        PluginPaths {
            rootfs: format!("/var/lib/berth/plugins/{ID}/rootfs").into(),
            propagated_mount: format!("/var/lib/berth/plugins/{ID}/propagated-mount").into(),
            socket_dir: format!("/run/berth/plugins/{ID}").into(),
        }
    }

    fn plugin(config_json: &str) -> Plugin {
        let config = decode_config(config_json.as_bytes()).unwrap();
        let settings = PluginSettings::init_from(&config);
        Plugin {
            config,
            enabled: false,
            id: ID.into(),
            name: "test:latest".into(),
            plugin_reference: "test:latest".into(),
            settings,
        }
    }

    fn dests(spec: &PluginSpec) -> Vec<&str> {
        spec.mounts.iter().map(|m| m.destination.as_str()).collect()
    }

    const RCLONE: &str = r#"{
        "Description": "Rclone volume plugin",
        "Entrypoint": ["rclone", "serve", "docker"],
        "Env": [{"Name":"RCLONE_VERBOSE","Value":"0","Settable":["value"]},
                {"Name":"RCLONE_CONFIG","Value":"/data/config/rclone.conf"},
                {"Name":"NOVAL","Value":null}],
        "Interface": {"Socket": "rclone.sock", "Types": ["docker.volumedriver/1.0"]},
        "Linux": {"Capabilities": ["CAP_SYS_ADMIN"],
                  "Devices": [{"Name":"fuse","Path":"/dev/fuse"}]},
        "Network": {"Type": "host"},
        "PropagatedMount": "/data",
        "Mounts": [
            {"Name":"config","Source":"/var/lib/docker-plugins/rclone/config",
             "Destination":"/data/config","Type":"bind","Options":["rbind"],"Settable":["source"]},
            {"Name":"cache","Source":"/var/lib/docker-plugins/rclone/cache",
             "Destination":"/data/cache","Type":"bind","Options":["rbind"]}
        ],
        "Args": {"Name":"args","Value":["--verbose"],"Settable":["value"]},
        "WorkDir": "/data"
    }"#;

    #[test]
    fn rclone_like_plugin() {
        if !Path::new("/dev/fuse").exists() {
            eprintln!("no /dev/fuse on this host: skipped");
            return;
        }
        let spec = build_spec(&plugin(RCLONE), &paths()).unwrap();
        assert_eq!(spec.id, ID);
        assert_eq!(spec.args, ["rclone", "serve", "docker", "--verbose"]);
        assert_eq!(
            spec.env,
            [
                DEFAULT_PATH_ENV,
                "RCLONE_VERBOSE=0",
                "RCLONE_CONFIG=/data/config/rclone.conf"
            ]
        );
        assert_eq!(spec.cwd, "/data");
        assert_eq!(spec.hostname, "");
        assert_eq!(
            spec.namespaces,
            Namespaces {
                network: false,
                pid: true,
                ipc: true,
                uts: true,
                mount: true
            }
        );
        assert_eq!(
            dests(&spec),
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm",
                "/data",
                "/data/config",
                "/data/cache",
                "/run/docker/plugins",
                "/etc/hosts",
                "/etc/resolv.conf"
            ]
        );
        assert_eq!(
            spec.mounts[7],
            MountSpec {
                source: format!("/var/lib/berth/plugins/{ID}/propagated-mount"),
                destination: "/data".into(),
                kind: "bind".into(),
                options: vec!["rbind".into(), "rw".into(), "rshared".into()],
            }
        );
        assert_eq!(
            spec.mounts[8].source,
            "/var/lib/docker-plugins/rclone/config"
        );
        assert_eq!(spec.mounts[8].options, ["rbind"]);
        assert_eq!(
            spec.mounts[10],
            MountSpec {
                source: format!("/run/berth/plugins/{ID}"),
                destination: "/run/docker/plugins".into(),
                kind: "bind".into(),
                options: vec!["rbind".into(), "rshared".into()],
            }
        );
        assert_eq!(spec.mounts[11].options, ["rbind", "ro"]);
        assert_eq!(spec.rootfs_propagation, "rshared");
        assert_eq!(spec.capabilities.len(), 15);
        assert_eq!(spec.capabilities[..14], DEFAULT_CAPABILITIES);
        assert_eq!(spec.capabilities[14], "CAP_SYS_ADMIN");
        assert_eq!(spec.inheritable_capabilities, ["CAP_SYS_ADMIN"]);
        assert_eq!(
            spec.devices,
            [DeviceNode {
                path: "/dev/fuse".into(),
                kind: 'c',
                major: 10,
                minor: 229,
                mode: fs::metadata("/dev/fuse").unwrap().mode() & 0o7777,
                uid: 0,
                gid: 0,
            }]
        );
        let rules = &spec.device_rules;
        assert_eq!(rules[..8], default_device_rules()[..]);
        // the fuse allow comes after moby's explicit fuse deny, so it wins
        assert_eq!(rules[8], device_rule(true, 'c', Some(10), Some(229)));
        assert_eq!(rules[9..], runtime_device_rules()[..]);
        assert_eq!(
            spec.masked_paths[..12],
            DEFAULT_MASKED_PATHS.map(String::from)
        );
        assert_eq!(spec.readonly_paths, DEFAULT_READONLY_PATHS);
    }

    #[test]
    fn privilege_free_plugin() {
        let spec = build_spec(
            &plugin(r#"{"Entrypoint":["/plugin"],"Interface":{"Socket":"p.sock"}}"#),
            &paths(),
        )
        .unwrap();
        assert_eq!(spec.args, ["/plugin"]);
        assert_eq!(spec.env, [DEFAULT_PATH_ENV]);
        assert_eq!(spec.cwd, "/");
        assert_eq!(
            spec.namespaces,
            Namespaces {
                network: true,
                pid: true,
                ipc: true,
                uts: true,
                mount: true
            }
        );
        assert_eq!(
            dests(&spec),
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm",
                "/run/docker/plugins"
            ]
        );
        assert_eq!(spec.mounts[..7], default_mounts()[..]);
        assert_eq!(spec.rootfs_propagation, "rslave");
        assert_eq!(spec.capabilities, DEFAULT_CAPABILITIES);
        assert!(spec.inheritable_capabilities.is_empty());
        assert!(spec.devices.is_empty());
        let mut rules = default_device_rules();
        rules.extend(runtime_device_rules());
        assert_eq!(spec.device_rules, rules);
    }

    #[test]
    fn namespaces_follow_the_host_flags() {
        let spec = build_spec(
            &plugin(r#"{"PidHost":true,"IpcHost":true,"Network":{"Type":"bridge"}}"#),
            &paths(),
        )
        .unwrap();
        assert_eq!(
            spec.namespaces,
            Namespaces {
                network: true,
                pid: false,
                ipc: false,
                uts: true,
                mount: true
            }
        );
        // any non-empty network type adds the network files, "host" or not
        assert_eq!(
            &dests(&spec)[7..],
            ["/run/docker/plugins", "/etc/hosts", "/etc/resolv.conf"]
        );
        assert!(spec.args.is_empty());
    }

    #[test]
    fn allow_all_devices() {
        let mut p = plugin(
            r#"{"Linux":{"AllowAllDevices":true,"Capabilities":["sys_admin","CAP_SYS_ADMIN","CAP_CHOWN"]}}"#,
        );
        p.settings.devices.clear();
        let spec = build_spec(&p, &paths()).unwrap();
        assert_eq!(spec.device_rules[0], device_rule(true, 'a', None, None));
        assert_eq!(spec.device_rules[1..], runtime_device_rules()[..]);
        // canonical and without duplicates
        assert_eq!(spec.capabilities.len(), 15);
        assert_eq!(
            spec.inheritable_capabilities,
            ["CAP_SYS_ADMIN", "CAP_CHOWN"]
        );
    }

    #[test]
    fn mounts_need_a_source() {
        let p =
            plugin(r#"{"Mounts":[{"Name":"m","Source":null,"Destination":"/m","Type":"bind"}]}"#);
        assert_eq!(
            build_spec(&p, &paths()).unwrap_err(),
            "mount source is not specified"
        );
        // a config mount is copied verbatim, with no implicit bind
        let p = plugin(
            r#"{"Mounts":[{"Source":"none","Destination":"/t","Type":"tmpfs","Options":["size=1m"]}]}"#,
        );
        let spec = build_spec(&p, &paths()).unwrap();
        assert_eq!(spec.mounts[7], mount("none", "/t", "tmpfs", &["size=1m"]));
    }

    #[test]
    fn user_mounts_replace_default_dev_mounts() {
        let p = plugin(
            r#"{"Mounts":[{"Source":"/dev/shm","Destination":"/dev/shm","Type":"bind","Options":["rbind"]},
                          {"Source":"/dev","Destination":"/dev","Type":"bind","Options":["rbind"]}]}"#,
        );
        let spec = build_spec(&p, &paths()).unwrap();
        // /dev/shm's default goes; /dev is not under "/dev/" and stays, as in moby
        assert_eq!(
            dests(&spec),
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm",
                "/dev",
                "/run/docker/plugins"
            ]
        );
        assert_eq!(spec.mounts[6].kind, "bind");
    }

    /// Read without changing it (tests run on parallel threads).
    fn current_umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap()
    }

    #[test]
    fn device_errors_and_directories() {
        let mut p = plugin("{}");
        p.settings.devices = vec![crate::plugin::config::PluginDevice {
            path: Some("/dev/nonexistent-berth".into()),
            ..Default::default()
        }];
        assert_eq!(
            build_spec(&p, &paths()).unwrap_err(),
            "error gathering device information while adding custom device \"/dev/nonexistent-berth\": no such file or directory"
        );
        let dir = tempfile::Builder::new().prefix("brdev").tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let file = file.to_string_lossy().into_owned();
        p.settings.devices[0].path = Some(file.clone());
        assert_eq!(
            build_spec(&p, &paths()).unwrap_err(),
            format!("error gathering device information while adding custom device \"{file}\": not a device node")
        );
        p.settings.devices[0].path = None;
        assert_eq!(
            build_spec(&p, &paths()).unwrap_err(),
            "device path is not specified"
        );
        // a directory contributes every device node below it (symlinks inside are not
        // followed); a symlink to the directory keeps its own path inside the plugin
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join("sub/link")).unwrap();
        let sub = dir.path().join("sub").to_string_lossy().into_owned();
        assert!(devices_from_path(&sub).is_err());
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
            assert_eq!(found[0].1, device_rule(true, 'c', Some(1), Some(5)));
        }
        let found = devices_from_path("/dev").unwrap();
        assert!(found
            .iter()
            .any(|(d, _)| d.path == "/dev/null" && d.major == 1 && d.minor == 3));
    }
}
