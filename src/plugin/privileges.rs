//! Privileges a plugin needs (moby `computePrivileges`) and the exact grant check.

use serde::{Deserialize, Serialize};

use super::config::PluginConfig;

/// One privilege. Deserialising is as lenient as Go's (clients post these back on pull and
/// upgrade): missing members and `null` give empty values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginPrivilege {
    #[serde(rename = "Name", deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(rename = "Description", deserialize_with = "null_as_default")]
    pub description: String,
    #[serde(rename = "Value", deserialize_with = "null_as_default")]
    pub value: Vec<String>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// moby `computePrivileges`: what the plugin's `Config` (not its Settings) asks for, in this
/// order: network (type other than `""`, `"null"`, `"bridge"`), host IPC, host PID, one `mount` per
/// mount with a source, one `device` per device with a path, all devices, capabilities.
/// Empty when nothing applies (moby answers JSON `null` then).
pub fn compute_privileges(config: &PluginConfig) -> Vec<PluginPrivilege> {
    let privilege = |name: &str, description: &str, value: Vec<String>| PluginPrivilege {
        name: name.to_string(),
        description: description.to_string(),
        value,
    };
    let yes = || vec!["true".to_string()];
    let mut out = Vec::new();
    if !matches!(config.network.kind.as_str(), "" | "null" | "bridge") {
        out.push(privilege(
            "network",
            "permissions to access a network",
            vec![config.network.kind.clone()],
        ));
    }
    if config.ipc_host {
        out.push(privilege(
            "host ipc namespace",
            "allow access to host ipc namespace",
            yes(),
        ));
    }
    if config.pid_host {
        out.push(privilege(
            "host pid namespace",
            "allow access to host pid namespace",
            yes(),
        ));
    }
    for mount in config.mounts.iter().flatten() {
        if let Some(source) = &mount.source {
            out.push(privilege(
                "mount",
                "host path to mount",
                vec![source.clone()],
            ));
        }
    }
    for device in config.linux.devices.iter().flatten() {
        if let Some(path) = &device.path {
            out.push(privilege(
                "device",
                "host device to access",
                vec![path.clone()],
            ));
        }
    }
    if config.linux.allow_all_devices {
        out.push(privilege(
            "allow-all-devices",
            "allow 'rwm' access to all devices",
            yes(),
        ));
    }
    if let Some(caps) = config.linux.capabilities.as_ref().filter(|c| !c.is_empty()) {
        out.push(privilege(
            "capabilities",
            "list of additional capabilities required",
            caps.clone(),
        ));
    }
    out
}

/// True when `granted` equals `required` as moby's fixed check compares them: same length,
/// both sorted by name (values sorted), every element's name and values equal. Description ignored.
///
/// The sort by name is stable, so entries sharing a name (several `mount`s) must come in the
/// same relative order in both lists, as in moby. Comparing from index 0 closes the 1.41 hole
/// where the first entry after sorting was never compared.
pub fn grants_match(required: &[PluginPrivilege], granted: &[PluginPrivilege]) -> bool {
    if required.len() != granted.len() {
        return false;
    }
    let normalise = |list: &[PluginPrivilege]| {
        let mut list: Vec<(String, Vec<String>)> = list
            .iter()
            .map(|p| {
                let mut value = p.value.clone();
                value.sort();
                (p.name.clone(), value)
            })
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    };
    normalise(required) == normalise(granted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::config::{
        decode_config, PluginConfigLinux, PluginConfigNetwork, PluginDevice, PluginMount,
    };

    fn p(name: &str, value: &[&str]) -> PluginPrivilege {
        PluginPrivilege {
            name: name.into(),
            description: String::new(),
            value: value.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn one(config: PluginConfig) -> (String, String, Vec<String>) {
        let mut privs = compute_privileges(&config);
        assert_eq!(privs.len(), 1, "{privs:?}");
        let x = privs.remove(0);
        (x.name, x.description, x.value)
    }

    fn t(name: &str, desc: &str, value: &[&str]) -> (String, String, Vec<String>) {
        (
            name.into(),
            desc.into(),
            value.iter().map(|v| v.to_string()).collect(),
        )
    }

    #[test]
    fn nothing_needed() {
        assert!(compute_privileges(&PluginConfig::default()).is_empty());
        for kind in ["", "null", "bridge"] {
            let c = PluginConfig {
                network: PluginConfigNetwork { kind: kind.into() },
                ..Default::default()
            };
            assert!(compute_privileges(&c).is_empty(), "{kind}");
        }
        // mounts without source, devices without path, empty capability list
        let c = decode_config(
            br#"{"Mounts":[{"Name":"m","Source":null,"Destination":"/x"}],
                 "Linux":{"Devices":[{"Name":"d","Path":null}],"Capabilities":[]}}"#,
        )
        .unwrap();
        assert!(compute_privileges(&c).is_empty());
    }

    #[test]
    fn row_network() {
        for kind in ["host", "none", "Bridge", "container"] {
            let c = PluginConfig {
                network: PluginConfigNetwork { kind: kind.into() },
                ..Default::default()
            };
            assert_eq!(
                one(c),
                t("network", "permissions to access a network", &[kind])
            );
        }
    }

    #[test]
    fn row_ipc_and_pid() {
        let c = PluginConfig {
            ipc_host: true,
            ..Default::default()
        };
        assert_eq!(
            one(c),
            t(
                "host ipc namespace",
                "allow access to host ipc namespace",
                &["true"]
            )
        );
        let c = PluginConfig {
            pid_host: true,
            ..Default::default()
        };
        assert_eq!(
            one(c),
            t(
                "host pid namespace",
                "allow access to host pid namespace",
                &["true"]
            )
        );
    }

    #[test]
    fn row_mount() {
        let c = PluginConfig {
            mounts: Some(vec![PluginMount {
                source: Some("/var/lib/docker/plugins/".into()),
                destination: "/mnt/state".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(
            one(c),
            t("mount", "host path to mount", &["/var/lib/docker/plugins/"])
        );
        // an empty but present source still counts
        let c = PluginConfig {
            mounts: Some(vec![PluginMount {
                source: Some(String::new()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(one(c), t("mount", "host path to mount", &[""]));
    }

    #[test]
    fn row_device() {
        let c = PluginConfig {
            linux: PluginConfigLinux {
                devices: Some(vec![PluginDevice {
                    path: Some("/dev/fuse".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(one(c), t("device", "host device to access", &["/dev/fuse"]));
    }

    #[test]
    fn row_allow_all_devices() {
        let c = PluginConfig {
            linux: PluginConfigLinux {
                allow_all_devices: true,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            one(c),
            t(
                "allow-all-devices",
                "allow 'rwm' access to all devices",
                &["true"]
            )
        );
    }

    #[test]
    fn row_capabilities() {
        let c = PluginConfig {
            linux: PluginConfigLinux {
                capabilities: Some(vec!["CAP_SYS_ADMIN".into(), "CAP_NET_ADMIN".into()]),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            one(c),
            t(
                "capabilities",
                "list of additional capabilities required",
                &["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]
            )
        );
    }

    #[test]
    fn table_order() {
        let c = decode_config(
            br#"{"Linux":{"Capabilities":["CAP_SYS_ADMIN"],"AllowAllDevices":true,
                 "Devices":[{"Path":"/dev/fuse"},{"Path":null},{"Path":"/dev/null"}]},
                 "Mounts":[{"Source":"/a"},{"Source":null},{"Source":"/b"}],
                 "PidHost":true,"IpcHost":true,"Network":{"Type":"host"}}"#,
        )
        .unwrap();
        let privs = compute_privileges(&c);
        let got: Vec<(&str, Vec<&str>)> = privs
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.value.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("network", vec!["host"]),
                ("host ipc namespace", vec!["true"]),
                ("host pid namespace", vec!["true"]),
                ("mount", vec!["/a"]),
                ("mount", vec!["/b"]),
                ("device", vec!["/dev/fuse"]),
                ("device", vec!["/dev/null"]),
                ("allow-all-devices", vec!["true"]),
                ("capabilities", vec!["CAP_SYS_ADMIN"]),
            ]
        );
        // wire form
        assert_eq!(
            serde_json::to_string(&privs[0]).unwrap(),
            r#"{"Name":"network","Description":"permissions to access a network","Value":["host"]}"#
        );
    }

    #[test]
    fn grants_equal_lists() {
        let req = vec![
            p("network", &["host"]),
            p("mount", &["/a"]),
            p("capabilities", &["A", "B"]),
        ];
        assert!(grants_match(&req, &req));
        assert!(grants_match(&[], &[]));
        // order of entries and of values does not matter; descriptions are ignored
        let mut granted = vec![
            p("capabilities", &["B", "A"]),
            p("network", &["host"]),
            p("mount", &["/a"]),
        ];
        granted[0].description = "anything".into();
        assert!(grants_match(&req, &granted));
    }

    #[test]
    fn grants_mismatch() {
        let req = vec![p("network", &["host"]), p("mount", &["/a"])];
        // length
        assert!(!grants_match(&req, &[]));
        assert!(!grants_match(&[], &req));
        assert!(!grants_match(&req, &req[..1]));
        // name
        assert!(!grants_match(
            &req,
            &[p("network", &["host"]), p("device", &["/a"])]
        ));
        // value
        assert!(!grants_match(
            &req,
            &[p("network", &["host"]), p("mount", &["/b"])]
        ));
        assert!(!grants_match(
            &req,
            &[p("network", &["host"]), p("mount", &["/a", "/b"])]
        ));
        assert!(!grants_match(
            &req,
            &[p("network", &["host"]), p("mount", &[])]
        ));
    }

    /// moby `manager_test.go` case "first-sorted-element-diff-value": 1.41 compared from index
    /// 1, so a difference in the entry sorted first was accepted.
    #[test]
    fn first_sorted_element_diff_value() {
        let required = vec![
            p("network", &["host"]),
            p("capabilities", &["CAP_SYS_ADMIN"]),
        ];
        let granted = vec![
            p("network", &["host"]),
            p("capabilities", &["CAP_SYS_NICE"]),
        ];
        assert!(!grants_match(&required, &granted));
        // the first entry before sorting differs
        let required = vec![p("allow-all-devices", &["true"]), p("mount", &["/a"])];
        let granted = vec![p("device", &["/dev/mem"]), p("mount", &["/a"])];
        assert!(!grants_match(&required, &granted));
        // a single-entry list is all first element
        assert!(!grants_match(
            &[p("mount", &["/"])],
            &[p("mount", &["/etc"])]
        ));
    }

    #[test]
    fn same_name_entries_keep_their_order() {
        // moby sorts by name only (not stable in general, but never swaps equal names in
        // these short lists): the mounts must pair up in order.
        let req = vec![p("mount", &["/a"]), p("mount", &["/b"])];
        assert!(grants_match(&req, &req.clone()));
        assert!(!grants_match(
            &req,
            &[p("mount", &["/b"]), p("mount", &["/a"])]
        ));
        let granted = vec![
            p("network", &["host"]),
            p("mount", &["/a"]),
            p("mount", &["/b"]),
        ];
        let required = vec![
            p("mount", &["/a"]),
            p("network", &["host"]),
            p("mount", &["/b"]),
        ];
        assert!(grants_match(&required, &granted));
    }

    #[test]
    fn lenient_decoding_of_posted_privileges() {
        let v: Vec<PluginPrivilege> = serde_json::from_str(
            r#"[{"Name":"mount","Value":null},{"Name":null,"Description":"d","Value":["x"]}, {}]"#,
        )
        .unwrap();
        assert_eq!(v[0], p("mount", &[]));
        assert_eq!(v[1].value, vec!["x".to_string()]);
        assert_eq!(v[2], PluginPrivilege::default());
    }
}
