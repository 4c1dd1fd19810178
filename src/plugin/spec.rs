//! The run spec of a plugin, built from its record in the store: moby's `InitSpec`
//! (`plugin/v2/plugin_linux.go`), turned into the runtime's [`PluginSpec`].

use std::collections::HashSet;

use super::store::Plugin;
use crate::error::Error;
use crate::runtime::spec::{
    canonical_capability, default_device_rules, default_masked_paths, default_mounts,
    devices_from_path, runtime_device_rules, DeviceError, DeviceRule, MountSpec, Namespaces,
    PluginPaths, PluginSpec, DEFAULT_CAPABILITIES, DEFAULT_PATH_ENV, DEFAULT_READONLY_PATHS,
    PLUGIN_SOCKET_DIR,
};

/// Why a plugin's record gives no run spec; moby's texts, untyped (500) there too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("mount source is not specified")]
    MountSourceMissing,
    #[error("device path is not specified")]
    DevicePathMissing,
    #[error(transparent)]
    Device(#[from] DeviceError),
}

impl From<SpecError> for Error {
    fn from(e: SpecError) -> Error {
        Error::System(e.to_string())
    }
}

/// moby `InitSpec` for this plugin. Fails like moby when a config mount has no source
/// (`mount source is not specified`) or a device path does not exist.
///
/// Differences from moby, on purpose: the `/dev/*` override drops only default mounts (moby's
/// loop also drops a config mount whose destination is in `Settings.Mounts`, and skips entries
/// while deleting); capability names are canonicalised (`sys_admin` → `CAP_SYS_ADMIN`) and
/// de-duplicated; the device rules end with what runc appends for the nodes it creates
/// ([`runtime_device_rules`]), so the spec is the complete rule list.
pub fn build_spec(plugin: &Plugin, paths: &PluginPaths) -> Result<PluginSpec, SpecError> {
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
            return Err(SpecError::MountSourceMissing);
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
            mounts.push(MountSpec::new(file, file, "bind", &["rbind", "ro"]));
        }
    }

    let mut device_rules = if config.linux.allow_all_devices {
        vec![DeviceRule::new(true, 'a', None, None)]
    } else {
        default_device_rules()
    };
    let mut devices = Vec::new();
    for device in &settings.devices {
        let Some(path) = &device.path else {
            return Err(SpecError::DevicePathMissing);
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
        masked_paths: default_masked_paths(),
        readonly_paths: DEFAULT_READONLY_PATHS
            .iter()
            .map(|p| p.to_string())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::config::{decode_config, PluginDevice, PluginSettings};
    use crate::runtime::spec::{DeviceNode, DEFAULT_MASKED_PATHS};
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

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

    /// Where [`default_mounts`] mount, in order.
    const DEFAULT_DESTINATIONS: [&str; 7] = [
        "/proc",
        "/dev",
        "/dev/pts",
        "/sys",
        "/sys/fs/cgroup",
        "/dev/mqueue",
        "/dev/shm",
    ];

    /// The default destinations followed by `more`.
    fn after_defaults<'a>(more: &[&'a str]) -> Vec<&'a str> {
        [&DEFAULT_DESTINATIONS[..], more].concat()
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
            after_defaults(&[
                "/data",
                "/data/config",
                "/data/cache",
                "/run/docker/plugins",
                "/etc/hosts",
                "/etc/resolv.conf"
            ])
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
                mode: std::fs::metadata("/dev/fuse").unwrap().mode() & 0o7777,
                uid: 0,
                gid: 0,
            }]
        );
        let rules = &spec.device_rules;
        assert_eq!(rules[..8], default_device_rules()[..]);
        // the fuse allow comes after moby's explicit fuse deny, so it wins
        assert_eq!(rules[8], DeviceRule::new(true, 'c', Some(10), Some(229)));
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
        assert_eq!(dests(&spec), after_defaults(&["/run/docker/plugins"]));
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
        assert_eq!(spec.device_rules[0], DeviceRule::new(true, 'a', None, None));
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
            SpecError::MountSourceMissing
        );
        assert_eq!(
            Error::from(SpecError::MountSourceMissing),
            Error::System("mount source is not specified".into())
        );
        // a config mount is copied verbatim, with no implicit bind
        let p = plugin(
            r#"{"Mounts":[{"Source":"none","Destination":"/t","Type":"tmpfs","Options":["size=1m"]}]}"#,
        );
        let spec = build_spec(&p, &paths()).unwrap();
        assert_eq!(
            spec.mounts[7],
            MountSpec::new("none", "/t", "tmpfs", &["size=1m"])
        );
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
            after_defaults(&["/dev", "/run/docker/plugins"])
        );
        assert_eq!(spec.mounts[6].kind, "bind");
    }

    #[test]
    fn device_errors() {
        let mut p = plugin("{}");
        p.settings.devices = vec![PluginDevice {
            path: Some("/dev/nonexistent-berth".into()),
            ..Default::default()
        }];
        assert_eq!(
            build_spec(&p, &paths()).unwrap_err().to_string(),
            "error gathering device information while adding custom device \"/dev/nonexistent-berth\": no such file or directory"
        );
        let dir = tempfile::Builder::new().prefix("brdev").tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let file = file.to_string_lossy().into_owned();
        p.settings.devices[0].path = Some(file.clone());
        assert_eq!(
            build_spec(&p, &paths()).unwrap_err().to_string(),
            format!("error gathering device information while adding custom device \"{file}\": not a device node")
        );
        p.settings.devices[0].path = None;
        assert_eq!(
            build_spec(&p, &paths()).unwrap_err().to_string(),
            "device path is not specified"
        );
    }
}
