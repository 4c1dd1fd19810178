//! The OCI runtime spec (`config.json` of a bundle) for a [`PluginSpec`]: the same run spec the
//! built-in executor follows, written for runc or crun.

use std::path::PathBuf;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDevice, LinuxDeviceBuilder,
    LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResourcesBuilder, MountBuilder, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};
use oci_spec::OciSpecError;

use crate::runtime::spec::{DeviceNode, DeviceRule, PluginSpec};

/// The runtime-spec version the bundle claims (what Debian's runc 1.1 and crun 1.8 read).
const OCI_VERSION: &str = "1.0.2";

fn device_type(kind: char) -> LinuxDeviceType {
    match kind {
        'b' => LinuxDeviceType::B,
        'c' => LinuxDeviceType::C,
        'u' => LinuxDeviceType::U,
        'p' => LinuxDeviceType::P,
        _ => LinuxDeviceType::A,
    }
}

fn device(node: &DeviceNode) -> Result<LinuxDevice, OciSpecError> {
    LinuxDeviceBuilder::default()
        .path(PathBuf::from(&node.path))
        .typ(device_type(node.kind))
        .major(node.major as i64)
        .minor(node.minor as i64)
        .file_mode(node.mode)
        .uid(node.uid)
        .gid(node.gid)
        .build()
}

fn device_rule(rule: &DeviceRule) -> Result<LinuxDeviceCgroup, OciSpecError> {
    let mut builder = LinuxDeviceCgroupBuilder::default()
        .allow(rule.allow)
        .typ(device_type(rule.kind))
        .access(rule.access.clone());
    if let Some(major) = rule.major {
        builder = builder.major(major as i64);
    }
    if let Some(minor) = rule.minor {
        builder = builder.minor(minor as i64);
    }
    builder.build()
}

/// `CAP_SYS_ADMIN` → the crate's capability; unknown names are dropped, as the built-in
/// executor drops them (with a warning there).
fn capabilities(names: &[String]) -> oci_spec::runtime::Capabilities {
    names
        .iter()
        .filter_map(|name| serde_json::from_value::<Capability>(name.as_str().into()).ok())
        .collect()
}

/// The bundle's `config.json` for `spec`, in the cgroup `cgroups_path` (`/berth/<id>`).
pub fn runtime_spec(spec: &PluginSpec, cgroups_path: &str) -> Result<Spec, OciSpecError> {
    let caps = capabilities(&spec.capabilities);
    // The builder starts from the crate's defaults (an rlimit, noNewPrivileges): every field
    // moby leaves unset is cleared below.
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .args(spec.args.clone())
        .env(spec.env.clone())
        .cwd(PathBuf::from(&spec.cwd))
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(capabilities(&spec.inheritable_capabilities))
                .ambient(oci_spec::runtime::Capabilities::new())
                .build()?,
        )
        .build()?;
    process.set_rlimits(None);
    process.set_no_new_privileges(None);
    process.set_apparmor_profile(None);
    process.set_selinux_label(None);
    process.set_oom_score_adj(None);
    process.set_scheduler(None);
    process.set_io_priority(None);

    let ns = &spec.namespaces;
    let mut namespaces = Vec::new();
    for (wanted, typ) in [
        (ns.mount, LinuxNamespaceType::Mount),
        (ns.network, LinuxNamespaceType::Network),
        (ns.uts, LinuxNamespaceType::Uts),
        (ns.pid, LinuxNamespaceType::Pid),
        (ns.ipc, LinuxNamespaceType::Ipc),
    ] {
        if wanted {
            namespaces.push(LinuxNamespaceBuilder::default().typ(typ).build()?);
        }
    }

    let mounts = spec
        .mounts
        .iter()
        .map(|m| {
            MountBuilder::default()
                .destination(PathBuf::from(&m.destination))
                .typ(m.kind.clone())
                .source(PathBuf::from(&m.source))
                .options(m.options.clone())
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .devices(
            spec.devices
                .iter()
                .map(device)
                .collect::<Result<Vec<_>, _>>()?,
        )
        .resources(
            LinuxResourcesBuilder::default()
                .devices(
                    spec.device_rules
                        .iter()
                        .map(device_rule)
                        .collect::<Result<Vec<_>, _>>()?,
                )
                .build()?,
        )
        .cgroups_path(PathBuf::from(cgroups_path))
        .rootfs_propagation(spec.rootfs_propagation.clone())
        .masked_paths(spec.masked_paths.clone())
        .readonly_paths(spec.readonly_paths.clone())
        .build()?;

    let mut builder = SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path(spec.paths.rootfs.clone())
                .readonly(false)
                .build()?,
        )
        .mounts(mounts)
        .process(process)
        .linux(linux);
    if !spec.hostname.is_empty() {
        builder = builder.hostname(spec.hostname.clone());
    }
    let mut config = builder.build()?;
    // the crate's default spec names a hostname; moby sets none (the host's name is kept)
    if spec.hostname.is_empty() {
        config.set_hostname(None);
    }
    config.set_annotations(None);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::{self, MountSpec, Namespaces, PluginPaths};

    fn plugin_spec() -> PluginSpec {
        let mut mounts = spec::default_mounts();
        mounts.push(MountSpec::new(
            "/run/p/sock",
            "/run/docker/plugins",
            "bind",
            &["rbind", "rshared"],
        ));
        PluginSpec {
            id: "abc".into(),
            paths: PluginPaths {
                rootfs: "/p/rootfs".into(),
                propagated_mount: "/p/propagated-mount".into(),
                socket_dir: "/run/p/sock".into(),
            },
            args: vec!["/bin/plugin".into(), "-v".into()],
            env: vec![spec::DEFAULT_PATH_ENV.into(), "A=1".into()],
            cwd: "/data".into(),
            hostname: String::new(),
            namespaces: Namespaces {
                network: false,
                pid: true,
                ipc: true,
                uts: true,
                mount: true,
            },
            mounts,
            rootfs_propagation: "rshared".into(),
            capabilities: vec!["CAP_CHOWN".into(), "CAP_SYS_ADMIN".into()],
            inheritable_capabilities: vec!["CAP_SYS_ADMIN".into()],
            devices: vec![DeviceNode {
                path: "/dev/fuse".into(),
                kind: 'c',
                major: 10,
                minor: 229,
                mode: 0o666,
                uid: 0,
                gid: 0,
            }],
            device_rules: vec![
                DeviceRule::new(false, 'a', None, None),
                DeviceRule::new(true, 'c', Some(136), None),
            ],
            masked_paths: vec!["/proc/kcore".into()],
            readonly_paths: vec!["/proc/sys".into()],
        }
    }

    #[test]
    fn the_run_spec_becomes_the_runtime_spec() {
        let json =
            serde_json::to_value(runtime_spec(&plugin_spec(), "/berth/abc").unwrap()).unwrap();
        let process = &json["process"];
        assert_eq!(process["args"], serde_json::json!(["/bin/plugin", "-v"]));
        assert_eq!(process["cwd"], "/data");
        assert_eq!(process["user"], serde_json::json!({"uid": 0, "gid": 0}));
        assert_eq!(process["terminal"], false);
        assert!(process.get("rlimits").is_none());
        assert!(process.get("noNewPrivileges").is_none());
        let mut bounding: Vec<&str> = process["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        bounding.sort();
        assert_eq!(bounding, ["CAP_CHOWN", "CAP_SYS_ADMIN"]);
        assert_eq!(
            process["capabilities"]["inheritable"],
            serde_json::json!(["CAP_SYS_ADMIN"])
        );
        assert_eq!(process["capabilities"]["ambient"], serde_json::json!([]));
        assert_eq!(
            json["root"],
            serde_json::json!({"path": "/p/rootfs", "readonly": false})
        );
        let linux = &json["linux"];
        let types: Vec<&str> = linux["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["mount", "uts", "pid", "ipc"],
            "host network: no netns"
        );
        assert_eq!(linux["cgroupsPath"], "/berth/abc");
        assert_eq!(linux["rootfsPropagation"], "rshared");
        assert_eq!(linux["maskedPaths"], serde_json::json!(["/proc/kcore"]));
        assert_eq!(
            linux["resources"]["devices"],
            serde_json::json!([
                {"allow": false, "type": "a", "access": "rwm"},
                {"allow": true, "type": "c", "major": 136, "access": "rwm"}
            ])
        );
        assert_eq!(linux["devices"][0]["path"], "/dev/fuse");
        assert_eq!(linux["devices"][0]["major"], 10);
        let sockets = json["mounts"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            sockets,
            serde_json::json!({"destination": "/run/docker/plugins", "type": "bind",
                "source": "/run/p/sock", "options": ["rbind", "rshared"]})
        );
        assert!(json.get("hostname").is_none());
    }
}
