//! `config.json` decoded as Go 1.19 `encoding/json` decodes it into moby 20.10's
//! `types.PluginConfig` (with [`crate::gojson::decode`]): Go-shaped mirrors of the schema,
//! moby's own `PluginInterfaceType.UnmarshalJSON`, and the conversion into berth's types.

use super::{
    ConfigError, PluginConfig, PluginConfigArgs, PluginConfigInterface, PluginConfigLinux,
    PluginConfigNetwork, PluginConfigRootfs, PluginConfigUser, PluginDevice, PluginEnv,
    PluginMount,
};
use crate::gojson::decode::{self, go_struct, Decoder, GoDecode, GoPtr, GoSlice};
use crate::gojson::{self, is_space, JsonError};

/// moby's `PluginInterfaceType` with its hand-written `UnmarshalJSON`, which works on the
/// raw token bytes: no unescaping; the version starts after the first `/`, the prefix ends
/// at the last `.` before it (`prefixIndex` 0 when there is none, so the capability then
/// loses its first byte); and when there is no `/` the capability is sliced up to the
/// *quoted* length, running two bytes past the string into the JSON text that follows
/// (`"foo",` gives capability `oo",`). The version is left alone when there is no `/`.
#[derive(Clone, Default, Debug)]
struct GoInterfaceType {
    prefix: Vec<u8>,
    capability: Vec<u8>,
    version: Vec<u8>,
}

impl GoInterfaceType {
    /// `PluginInterfaceType.String()`: `prefix.capability/version`.
    fn string_bytes(&self) -> Vec<u8> {
        let mut s = self.prefix.clone();
        s.push(b'.');
        s.extend_from_slice(&self.capability);
        s.push(b'/');
        s.extend_from_slice(&self.version);
        s
    }

    /// The string a single decode leaves (as Go's encoder would show it).
    fn to_string_once(&self) -> String {
        gojson::lossy(&self.string_bytes())
    }

    /// After moby's create-path round trip: `json.Marshal` of the string, then this
    /// `UnmarshalJSON` again on the raw (escaped) bytes. Escapes introduce neither `.`
    /// nor `/`, so the split is the same and the result is the escaped text itself.
    fn to_string_after_blob_roundtrip(&self) -> String {
        gojson::lossy(&gojson::go_escape_json(&self.string_bytes()))
    }
}

impl GoDecode for GoInterfaceType {
    fn go_type() -> String {
        "types.PluginInterfaceType".into()
    }
    fn decode(&mut self, d: &mut Decoder<'_>) -> Result<(), JsonError> {
        let (p, rest) = d.skip_value_and_rest();
        if p.len() < 2 || p[0] != b'"' || p[p.len() - 1] != b'"' {
            return Err(JsonError::Unmarshaler(format!(
                "{} is not a plugin interface type",
                gojson::quote_bytes(p)
            )));
        }
        // `p` re-sliced past its opening quote; Go may read up to cap, i.e. on into the
        // rest of the document.
        let buf = &rest[1..];
        let inner = &p[1..p.len() - 1];
        let mut version_index = p.len();
        let mut prefix_index = 0;
        for (i, &b) in inner.iter().enumerate() {
            match b {
                b'.' => prefix_index = i,
                b'/' => {
                    version_index = i;
                    break;
                }
                _ => {}
            }
        }
        self.prefix = inner[..prefix_index].to_vec();
        let cap_end = version_index.min(buf.len());
        self.capability = buf[(prefix_index + 1).min(cap_end)..cap_end].to_vec();
        if version_index < inner.len() {
            self.version = inner[version_index + 1..].to_vec();
        }
        Ok(())
    }
}

/// A decoded mirror turned into berth's schema type. `blob_roundtrip` applies the create path's
/// second decode to `Interface.Types` (see [`super::decode_created_config`]).
trait IntoSchema<T> {
    fn into_schema(self, blob_roundtrip: bool) -> T;
}

macro_rules! as_is {
    ($($t:ty),*) => {
        $(impl IntoSchema<$t> for $t {
            fn into_schema(self, _: bool) -> $t {
                self
            }
        })*
    };
}
as_is!(String, bool, u32);

impl<T: IntoSchema<U>, U> IntoSchema<Option<U>> for GoPtr<T> {
    fn into_schema(self, blob_roundtrip: bool) -> Option<U> {
        self.0.map(|v| v.into_schema(blob_roundtrip))
    }
}

impl<T: IntoSchema<U>, U> IntoSchema<Option<Vec<U>>> for GoSlice<T> {
    fn into_schema(self, blob_roundtrip: bool) -> Option<Vec<U>> {
        self.into_option().map(|v| {
            v.into_iter()
                .map(|t| t.into_schema(blob_roundtrip))
                .collect()
        })
    }
}

impl IntoSchema<String> for GoInterfaceType {
    fn into_schema(self, blob_roundtrip: bool) -> String {
        if blob_roundtrip {
            self.to_string_after_blob_roundtrip()
        } else {
            self.to_string_once()
        }
    }
}

/// A Go-shaped mirror of a schema struct (same field names) and its conversion into it.
macro_rules! config_struct {
    ($go:ident = $package:ident . $go_name:ident => $schema:ident {
        $($field:ident : $ty:ty = $key:literal),* $(,)?
    }) => {
        go_struct!($go = $package . $go_name { $($field: $ty = $key),* });

        impl IntoSchema<$schema> for $go {
            fn into_schema(self, blob_roundtrip: bool) -> $schema {
                $schema {
                    $($field: self.$field.into_schema(blob_roundtrip),)*
                }
            }
        }
    };
}

config_struct!(GoArgs = types.PluginConfigArgs => PluginConfigArgs {
    name: String = "Name",
    description: String = "Description",
    settable: GoSlice<String> = "Settable",
    value: GoSlice<String> = "Value",
});

config_struct!(GoEnv = types.PluginEnv => PluginEnv {
    name: String = "Name",
    description: String = "Description",
    settable: GoSlice<String> = "Settable",
    value: GoPtr<String> = "Value",
});

config_struct!(GoInterface = types.PluginConfigInterface => PluginConfigInterface {
    protocol_scheme: String = "ProtocolScheme",
    socket: String = "Socket",
    types: GoSlice<GoInterfaceType> = "Types",
});

config_struct!(GoDevice = types.PluginDevice => PluginDevice {
    name: String = "Name",
    description: String = "Description",
    settable: GoSlice<String> = "Settable",
    path: GoPtr<String> = "Path",
});

config_struct!(GoLinux = types.PluginConfigLinux => PluginConfigLinux {
    allow_all_devices: bool = "AllowAllDevices",
    capabilities: GoSlice<String> = "Capabilities",
    devices: GoSlice<GoDevice> = "Devices",
});

config_struct!(GoMount = types.PluginMount => PluginMount {
    name: String = "Name",
    description: String = "Description",
    settable: GoSlice<String> = "Settable",
    source: GoPtr<String> = "Source",
    destination: String = "Destination",
    kind: String = "Type",
    options: GoSlice<String> = "Options",
});

config_struct!(GoNetwork = types.PluginConfigNetwork => PluginConfigNetwork {
    kind: String = "Type",
});

config_struct!(GoUser = types.PluginConfigUser => PluginConfigUser {
    uid: u32 = "UID",
    gid: u32 = "GID",
});

config_struct!(GoRootfs = types.PluginConfigRootfs => PluginConfigRootfs {
    diff_ids: GoSlice<String> = "diff_ids",
    kind: String = "type",
});

config_struct!(GoConfig = types.PluginConfig => PluginConfig {
    args: GoArgs = "Args",
    description: String = "Description",
    docker_version: String = "DockerVersion",
    documentation: String = "Documentation",
    entrypoint: GoSlice<String> = "Entrypoint",
    env: GoSlice<GoEnv> = "Env",
    interface: GoInterface = "Interface",
    ipc_host: bool = "IpcHost",
    linux: GoLinux = "Linux",
    mounts: GoSlice<GoMount> = "Mounts",
    network: GoNetwork = "Network",
    pid_host: bool = "PidHost",
    propagated_mount: String = "PropagatedMount",
    user: GoUser = "User",
    work_dir: String = "WorkDir",
    rootfs: GoPtr<GoRootfs> = "rootfs",
});

/// `json.Unmarshal(data, &config)`.
pub(super) fn unmarshal(data: &[u8], blob_roundtrip: bool) -> Result<PluginConfig, ConfigError> {
    let config: GoConfig = decode::unmarshal(data)?;
    Ok(config.into_schema(blob_roundtrip))
}

/// `json.NewDecoder(r).Decode(&config)` followed by moby's `dec.More()` check.
pub(super) fn decode_stream(data: &[u8]) -> Result<PluginConfig, ConfigError> {
    let (config, end) = decode::decode_first::<GoConfig>(data)?;
    // Decoder.More: another value follows unless the next non-space byte is `]`/`}`/EOF.
    match data[end..].iter().find(|&&c| !is_space(c)) {
        None | Some(b']') | Some(b'}') => Ok(config.into_schema(false)),
        Some(_) => Err(ConfigError::MoreThanOneValue),
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;

    /// A config with every field set, as uploaded to dockerd 20.10 (byte-exact: the
    /// `Interface.Types` quirk reads the bytes after each string).
    const FULL: &str = r#"{"Args":{"Name":"args","Description":"extra args","Settable":["value"],"Value":["--a","--b"]},
 "Description":"full <plugin> & more","DockerVersion":"1.2.3","Documentation":"https://x","Entrypoint":["/bin/p","-v"],
 "Env":[{"Name":"DEBUG","Description":"dbg","Settable":["value"],"Value":"0"},{"Name":"NOVAL","Description":"","Settable":["value"],"Value":null},{"Name":"LOCKED","Description":"","Settable":null,"Value":"1"}],
 "Interface":{"Types":["docker.volumedriver/1.0","foo","a.b.c/1.0/x","x.y"],"Socket":"p.sock","ProtocolScheme":"moby.plugins.http/v1"},
 "IpcHost":true,"Linux":{"AllowAllDevices":true,"Capabilities":["CAP_SYS_ADMIN"],"Devices":[{"Name":"fuse","Description":"d","Settable":["path"],"Path":"/dev/fuse"},{"Name":"nopath","Description":"","Settable":["path"],"Path":null}]},
 "Mounts":[{"Name":"state","Description":"m","Settable":["source"],"Source":"/var/lib/x","Destination":"/mnt/state","Type":"bind","Options":["rbind","ro"]},{"Name":"nosrc","Description":"","Settable":["source"],"Source":null,"Destination":"/mnt/n","Type":"tmpfs","Options":null}],
 "Network":{"Type":"host"},"PidHost":true,"PropagatedMount":"/mnt/volumes","User":{"UID":5,"GID":6},"WorkDir":"/w",
 "rootfs":{"type":"foo","diff_ids":["sha256:abc"]}, "Unknown":{"deep":[1,2,{"x":null}]}}"#;

    /// `Config` of `GET /plugins/cfgprobe-full/json` on dockerd 20.10 after
    /// `POST /plugins/create` with [`FULL`] (raw bytes of the response).
    const FULL_DOCKERD_CONFIG: &str = r#"{"Args":{"Description":"extra args","Name":"args","Settable":["value"],"Value":["--a","--b"]},"Description":"full <plugin> & more","DockerVersion":"20.10.24+dfsg1","Documentation":"https://x","Entrypoint":["/bin/p","-v"],"Env":[{"Description":"dbg","Name":"DEBUG","Settable":["value"],"Value":"0"},{"Description":"","Name":"NOVAL","Settable":["value"],"Value":null},{"Description":"","Name":"LOCKED","Settable":null,"Value":"1"}],"Interface":{"ProtocolScheme":"moby.plugins.http/v1","Socket":"p.sock","Types":["docker.volumedriver/1.0",".oo\\\",/","a.b.c/1.0/x","x.y\\\"]/"]},"IpcHost":true,"Linux":{"AllowAllDevices":true,"Capabilities":["CAP_SYS_ADMIN"],"Devices":[{"Description":"d","Name":"fuse","Path":"/dev/fuse","Settable":["path"]},{"Description":"","Name":"nopath","Path":null,"Settable":["path"]}]},"Mounts":[{"Description":"m","Destination":"/mnt/state","Name":"state","Options":["rbind","ro"],"Settable":["source"],"Source":"/var/lib/x","Type":"bind"},{"Description":"","Destination":"/mnt/n","Name":"nosrc","Options":null,"Settable":["source"],"Source":null,"Type":"tmpfs"}],"Network":{"Type":"host"},"PidHost":true,"PropagatedMount":"/mnt/volumes","User":{"GID":6,"UID":5},"WorkDir":"/w","rootfs":{"diff_ids":["sha256:43c2608bd97e3dfc2086140eb478e83667b78e1d690008f8ca7ae6d61d1cdb7a"],"type":"layers"}}"#;

    /// `Settings` of the same response.
    const FULL_DOCKERD_SETTINGS: &str = r#"{"Args":["--a","--b"],"Devices":[{"Description":"d","Name":"fuse","Path":"/dev/fuse","Settable":["path"]},{"Description":"","Name":"nopath","Path":null,"Settable":["path"]}],"Env":["DEBUG=0","LOCKED=1"],"Mounts":[{"Description":"m","Destination":"/mnt/state","Name":"state","Options":["rbind","ro"],"Settable":["source"],"Source":"/var/lib/x","Type":"bind"},{"Description":"","Destination":"/mnt/n","Name":"nosrc","Options":null,"Settable":["source"],"Source":null,"Type":"tmpfs"}]}"#;

    fn ok(s: &str) -> PluginConfig {
        decode_config(s.as_bytes()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &[u8]) -> String {
        match decode_config(s) {
            Ok(c) => panic!("{:?} should fail, got {c:?}", String::from_utf8_lossy(s)),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn full_schema_round_trip_matches_dockerd() {
        let mut c = decode_created_config(FULL.as_bytes()).unwrap();
        // what create itself sets
        assert_eq!(c.docker_version, "1.2.3");
        assert_eq!(c.rootfs.as_ref().unwrap().kind, "foo");
        c.docker_version = "20.10.24+dfsg1".into();
        c.rootfs = Some(PluginConfigRootfs {
            diff_ids: Some(vec![
                "sha256:43c2608bd97e3dfc2086140eb478e83667b78e1d690008f8ca7ae6d61d1cdb7a".into(),
            ]),
            kind: "layers".into(),
        });
        assert_eq!(serde_json::to_string(&c).unwrap(), FULL_DOCKERD_CONFIG);
        let s = PluginSettings::init_from(&c);
        assert_eq!(serde_json::to_string(&s).unwrap(), FULL_DOCKERD_SETTINGS);
        // and what we print reads back the same through serde (the on-disk store)
        let back: PluginConfig = serde_json::from_str(FULL_DOCKERD_CONFIG).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn full_schema_single_decode() {
        let c = ok(FULL);
        assert_eq!(c.args.name, "args");
        assert_eq!(c.args.value, Some(vec!["--a".into(), "--b".into()]));
        assert_eq!(c.description, "full <plugin> & more");
        assert_eq!(c.entrypoint, Some(vec!["/bin/p".into(), "-v".into()]));
        let env = c.env.as_ref().unwrap();
        assert_eq!(env.len(), 3);
        assert_eq!(env[1].value, None);
        assert_eq!(env[2].settable, None);
        assert_eq!(
            c.interface.types,
            Some(vec![
                "docker.volumedriver/1.0".into(),
                ".oo\",/".into(),
                "a.b.c/1.0/x".into(),
                "x.y\"]/".into(),
            ])
        );
        assert_eq!(c.interface.protocol_scheme, "moby.plugins.http/v1");
        assert!(c.ipc_host && c.pid_host && c.linux.allow_all_devices);
        assert_eq!(c.linux.devices.as_ref().unwrap()[1].path, None);
        assert_eq!(c.mounts.as_ref().unwrap()[1].source, None);
        assert_eq!(
            c.mounts.as_ref().unwrap()[0].options,
            Some(vec!["rbind".into(), "ro".into()])
        );
        assert_eq!(c.network.kind, "host");
        assert_eq!((c.user.uid, c.user.gid), (5, 6));
        assert_eq!(c.work_dir, "/w");
        assert_eq!(c.rootfs.unwrap().diff_ids, Some(vec!["sha256:abc".into()]));
    }

    #[test]
    fn lower_case_keys() {
        let c = ok(r#"{"description":"foo plugin"}"#);
        assert_eq!(c.description, "foo plugin");
        assert_eq!(
            c,
            PluginConfig {
                description: "foo plugin".into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn nested_keys_in_any_case() {
        let c = ok(
            r#"{"ARGS":{"nAmE":"args","VALUE":["x"],"settable":["value"]},
            "interface":{"types":["docker.volumedriver/1.0"],"SOCKET":"s.sock","protocolscheme":"p"},
            "linux":{"devices":[{"pAtH":"/dev/fuse","name":"fuse","SETTABLE":["path"]}],
                     "capabilities":["CAP_SYS_ADMIN"],"allowalldevices":true},
            "mounts":[{"SOURCE":"/a","destination":"/b","TYPE":"bind","options":["rbind"],"NAME":"m"}],
            "env":[{"name":"A","value":"1","DESCRIPTION":"d"}],
            "network":{"type":"host"},"ipchost":true,"PIDHOST":true,"propagatedMount":"/p",
            "user":{"uid":1,"Gid":2},"workdir":"/w","entryPOINT":["/x"],"documentation":"doc",
            "dockerversion":"v","ROOTFS":{"DIFF_IDS":["a"],"TYPE":"layers"}}"#,
        );
        assert_eq!(c.args.name, "args");
        assert_eq!(c.args.value, Some(vec!["x".into()]));
        assert_eq!(c.args.settable, Some(vec!["value".into()]));
        assert_eq!(c.interface.socket, "s.sock");
        assert_eq!(c.interface.protocol_scheme, "p");
        assert_eq!(
            c.interface.types,
            Some(vec!["docker.volumedriver/1.0".into()])
        );
        let dev = &c.linux.devices.as_ref().unwrap()[0];
        assert_eq!(dev.path.as_deref(), Some("/dev/fuse"));
        assert_eq!(dev.name, "fuse");
        assert_eq!(dev.settable, Some(vec!["path".into()]));
        assert!(c.linux.allow_all_devices);
        assert_eq!(c.linux.capabilities, Some(vec!["CAP_SYS_ADMIN".into()]));
        let m = &c.mounts.as_ref().unwrap()[0];
        assert_eq!(
            (
                m.source.as_deref(),
                m.destination.as_str(),
                m.kind.as_str(),
                m.name.as_str()
            ),
            (Some("/a"), "/b", "bind", "m")
        );
        let e = &c.env.as_ref().unwrap()[0];
        assert_eq!(
            (e.name.as_str(), e.value.as_deref(), e.description.as_str()),
            ("A", Some("1"), "d")
        );
        assert_eq!(c.network.kind, "host");
        assert!(c.ipc_host && c.pid_host);
        assert_eq!(c.propagated_mount, "/p");
        assert_eq!((c.user.uid, c.user.gid), (1, 2));
        assert_eq!(c.work_dir, "/w");
        assert_eq!(c.entrypoint, Some(vec!["/x".into()]));
        assert_eq!(c.documentation, "doc");
        assert_eq!(c.docker_version, "v");
        let r = c.rootfs.unwrap();
        assert_eq!(
            (r.diff_ids, r.kind.as_str()),
            (Some(vec!["a".into()]), "layers")
        );
    }

    #[test]
    fn unicode_case_folding_of_keys() {
        // Go folds U+017F (long s) to s and U+212A (Kelvin sign) to k; observed on dockerd.
        assert_eq!(ok("{\"de\u{17f}cription\":\"x\"}").description, "x");
        let c = ok("{\"mounts\":[{\"name\":\"a\",\"\u{17f}ource\":\"/s\"}],\"\u{212a}ey\":1}");
        assert_eq!(c.mounts.unwrap()[0].source.as_deref(), Some("/s"));
        // other non-ASCII letters do not fold
        assert_eq!(ok("{\"Descriptión\":\"x\"}").description, "");
        // escapes in keys are resolved before matching
        assert_eq!(ok(r#"{"\u0044escription":"x"}"#).description, "x");
    }

    #[test]
    fn null_values_give_zero_values() {
        let c = ok(
            r#"{"Args":null,"Description":null,"Entrypoint":null,"Env":[{"Name":"A","Value":null,"Settable":null}],
            "Interface":{"Types":null,"Socket":null},"IpcHost":null,"Linux":{"Devices":[{"Name":"d","Path":null}],"Capabilities":null},
            "Mounts":[{"Source":null,"Options":null}],"Network":null,"User":{"UID":null},"rootfs":null}"#,
        );
        assert_eq!(c.args, PluginConfigArgs::default());
        assert_eq!(c.description, "");
        assert_eq!(c.entrypoint, None);
        assert_eq!(c.env.as_ref().unwrap()[0].value, None);
        assert_eq!(c.env.as_ref().unwrap()[0].settable, None);
        assert_eq!(c.interface.types, None);
        assert!(!c.ipc_host);
        assert_eq!(c.linux.devices.as_ref().unwrap()[0].path, None);
        assert_eq!(c.mounts.as_ref().unwrap()[0].source, None);
        assert_eq!(c.user, PluginConfigUser::default());
        assert_eq!(c.rootfs, None);
        // a top-level null is an empty config (accepted by dockerd)
        assert_eq!(ok("null"), PluginConfig::default());
        assert_eq!(ok(" \t\r\n{}\n "), PluginConfig::default());
        // empty lists stay empty lists
        let c = ok(r#"{"Entrypoint":[],"Interface":{"Types":[]}}"#);
        assert_eq!(c.entrypoint, Some(vec![]));
        assert_eq!(c.interface.types, Some(vec![]));
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(9999), "]".repeat(9999));
        assert_eq!(ok(&deep), PluginConfig::default());
        let c = ok(
            r#"{"Unknown":{"deep":[1,2,{"x":null,"y":"a\"}b"}]},"Description":"d","Args":{"Extra":true,"Name":"n"},
            "Env":[{"Bogus":[{}],"Name":"E"}],"x":"\ud83d\ude00"}"#,
        );
        assert_eq!(c.description, "d");
        assert_eq!(c.args.name, "n");
        assert_eq!(c.env.unwrap()[0].name, "E");
    }

    #[test]
    fn duplicate_keys_decode_in_turn() {
        // last wins for scalars; case variants hit the same field
        assert_eq!(
            ok(r#"{"DESCRIPTION":"x","description":"y"}"#).description,
            "y"
        );
        // null leaves a string alone
        assert_eq!(
            ok(r#"{"Description":"a","Description":null}"#).description,
            "a"
        );
        // objects merge
        let c = ok(r#"{"Linux":{"Capabilities":["a"]},"linux":{"AllowAllDevices":true}}"#);
        assert!(c.linux.allow_all_devices);
        assert_eq!(c.linux.capabilities, Some(vec!["a".into()]));
        // null resets a list
        assert_eq!(
            ok(r#"{"Args":{"Value":["a"]},"Args":{"Value":null}}"#)
                .args
                .value,
            None
        );
        assert_eq!(ok(r#"{"rootfs":{"type":"x"},"rootfs":null}"#).rootfs, None);
        let c = ok(r#"{"rootfs":{"type":"x"},"rootfs":{"diff_ids":["d"]}}"#)
            .rootfs
            .unwrap();
        assert_eq!((c.kind.as_str(), c.diff_ids), ("x", Some(vec!["d".into()])));
        // list elements merge with what was in their slot (observed on dockerd 20.10)
        let env = |s: &str| {
            ok(s)
                .env
                .unwrap()
                .into_iter()
                .map(|e| (e.description, e.name, e.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            env(r#"{"Env":[{"Name":"A","Value":"1"}],"Env":[{"Description":"d"}]}"#),
            vec![("d".into(), "A".into(), Some("1".into()))]
        );
        assert_eq!(
            env(r#"{"Env":[{"Name":"A","Value":"1"},{"Name":"B"}],"Env":[{"Description":"d"}]}"#),
            vec![("d".into(), "A".into(), Some("1".into()))]
        );
        assert_eq!(
            env(r#"{"Env":[{"Name":"A","Value":"1"}],"Env":[{"Value":null}]}"#),
            vec![("".into(), "A".into(), None)]
        );
        // ... including slots past the length that are still within the capacity
        assert_eq!(
            env(
                r#"{"Env":[{"Name":"A","Value":"1"},{"Name":"B","Value":"2"}],"Env":[{"Description":"d"}],"Env":[{},{}]}"#
            ),
            vec![
                ("d".into(), "A".into(), Some("1".into())),
                ("".into(), "B".into(), Some("2".into()))
            ]
        );
        let ep = |s: &str| ok(s).entrypoint;
        assert_eq!(
            ep(r#"{"Entrypoint":["a","b"],"Entrypoint":["c"],"Entrypoint":[null,null]}"#),
            Some(vec!["c".into(), "b".into()])
        );
        assert_eq!(
            ep(r#"{"Entrypoint":["a","b"],"Entrypoint":[],"Entrypoint":[null,null]}"#),
            Some(vec!["".into(), "".into()])
        );
        assert_eq!(
            ep(r#"{"Entrypoint":["a","b"],"Entrypoint":null,"Entrypoint":[null,null]}"#),
            Some(vec!["".into(), "".into()])
        );
        // growth past the capacity copies only the live elements (4 -> 6)
        assert_eq!(
            ep(
                r#"{"Entrypoint":["a","b","c"],"Entrypoint":["x"],"Entrypoint":[null,null,null,null,null]}"#
            ),
            Some(vec![
                "x".into(),
                "b".into(),
                "c".into(),
                "".into(),
                "".into()
            ])
        );
    }

    #[test]
    fn interface_types_follow_moby_unmarshaler() {
        let types = |s: &str| ok(s).interface.types.unwrap();
        // observed on dockerd 20.10 (values after a single decode)
        assert_eq!(
            types(
                r#"{"Interface":{"Types":["docker.volumedriver/1.0","foo","a.b.c/1.0/x","x.y"]}}"#
            ),
            vec![
                "docker.volumedriver/1.0",
                ".oo\",/",
                "a.b.c/1.0/x",
                "x.y\"]/"
            ]
        );
        assert_eq!(
            types(r#"{"Interface":{"Types":["a.b/1","c.d/2"]},"Interface":{"Types":["x.y",""]}}"#),
            vec!["x.y\",/1", ".]/2"]
        );
        assert_eq!(
            types(
                r#"{"Interface":{"Types":["a.b/1","c.d/2"]},"Interface":{"Types":["x.y"]},"Interface":{"Types":[".",".z"]}}"#
            ),
            vec![".\",/1", ".z\"]/2"]
        );
        assert_eq!(
            types(r#"{"Interface":{"Types":["nodot/1",".x/1","a.b/c.d/e","volumedriver/1.0"]}}"#),
            vec![".odot/1", ".x/1", "a.b/c.d/e", ".olumedriver/1.0"]
        );
        // raw bytes: escapes are not resolved (the escaped `/` is the first `/`)
        assert_eq!(
            types(r#"{"Interface":{"Types":["a\/b.c/1"]}}"#),
            vec![".\\/b.c/1"]
        );
        // create stores the config as a blob and decodes it again (observed)
        let created = |s: &str| {
            decode_created_config(s.as_bytes())
                .unwrap()
                .interface
                .types
                .unwrap()
        };
        assert_eq!(
            created(r#"{"Interface":{"Types":["docker.volumedriver/1.0","foo","x.y"]}}"#),
            vec!["docker.volumedriver/1.0", ".oo\\\",/", "x.y\\\"]/"]
        );
        assert_eq!(
            created("{\"Interface\":{\"Types\":[\"\u{e9}.\\u00ff/1\", \"a<\"]}}"),
            vec!["\u{e9}.\\\\u00ff/1", ".\\u003c\\\"]/"]
        );
        // observed: `"a\/b.c/1"` shows as `.\\/b.c/1`, `"\u00ff.a<b/1"` as `\\u00ff.a\u003cb/1`
        assert_eq!(
            created(
                r#"{"Interface":{"Types":["a\/b.c/1", "volumedriver/1.0", "nodot/1", "\u00ff.a<b/1"]}}"#
            ),
            vec![
                r".\\/b.c/1",
                ".olumedriver/1.0",
                ".odot/1",
                r"\\u00ff.a\u003cb/1"
            ]
        );
        let invalid =
            decode_created_config(b"{\"Interface\":{\"Types\":[\"\xc3\xa9.\xff/1\", \"a\xff\"]}}")
                .unwrap();
        assert_eq!(
            invalid.interface.types.unwrap(),
            vec!["\u{e9}.\\ufffd/1", ".\\ufffd\\\"]/"]
        );
        let once = decode_config(b"{\"Interface\":{\"Types\":[\"\xc3\xa9.\xff/1\"]}}").unwrap();
        assert_eq!(once.interface.types.unwrap(), vec!["\u{e9}.\u{fffd}/1"]);
    }

    /// Messages confirmed on dockerd 20.10 (`failed to parse config: <this>`).
    #[test]
    fn syntax_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "unexpected end of JSON input"),
            (b"   ", "unexpected end of JSON input"),
            (b"{", "unexpected end of JSON input"),
            (b"{\"a\":[1,2", "unexpected end of JSON input"),
            (b"{\"a\":\"abc", "unexpected end of JSON input"),
            (b"\"abc", "unexpected end of JSON input"),
            (b"x", "invalid character 'x' looking for beginning of value"),
            (
                b"{\"a\":1} xyz",
                "invalid character 'x' after top-level value",
            ),
            (b"{} {", "invalid character '{' after top-level value"),
            (b"{\"a\":1}}", "invalid character '}' after top-level value"),
            (
                b"{\"a\":tru}",
                "invalid character '}' in literal true (expecting 'e')",
            ),
            (
                b"{\"a\":nul}",
                "invalid character '}' in literal null (expecting 'l')",
            ),
            (
                b"{\"a\":fals}",
                "invalid character '}' in literal false (expecting 'e')",
            ),
            (
                b"{\"a\":fx}",
                "invalid character 'x' in literal false (expecting 'a')",
            ),
            (
                b"{\"a\":truex}",
                "invalid character 'x' after object key:value pair",
            ),
            (
                b"{\"a\":01}",
                "invalid character '1' after object key:value pair",
            ),
            (
                b"{\"a\":1.}",
                "invalid character '}' after decimal point in numeric literal",
            ),
            (
                b"{\"a\":1.x}",
                "invalid character 'x' after decimal point in numeric literal",
            ),
            (
                b"{\"a\":1e}",
                "invalid character '}' in exponent of numeric literal",
            ),
            (
                b"{\"a\":1e+}",
                "invalid character '}' in exponent of numeric literal",
            ),
            (b"{\"a\":-}", "invalid character '}' in numeric literal"),
            (b"{\"a\":-x}", "invalid character 'x' in numeric literal"),
            (
                b"{\"a\":\"\\x\"}",
                "invalid character 'x' in string escape code",
            ),
            (
                b"{\"a\":\"\\q\"}",
                "invalid character 'q' in string escape code",
            ),
            (
                b"{\"a\":\"\\u12x4\"}",
                "invalid character 'x' in \\u hexadecimal character escape",
            ),
            (
                b"{\"a\":\"\t\"}",
                "invalid character '\\t' in string literal",
            ),
            (
                b"{\"a\":\"\x01\"}",
                "invalid character '\\x01' in string literal",
            ),
            (b"{\"a\" 1}", "invalid character '1' after object key"),
            (
                b"{\"a\":1 \"b\":2}",
                "invalid character '\"' after object key:value pair",
            ),
            (
                b"{1:2}",
                "invalid character '1' looking for beginning of object key string",
            ),
            (
                b"{\"a\":1,}",
                "invalid character '}' looking for beginning of object key string",
            ),
            (
                b"[1,]",
                "invalid character ']' looking for beginning of value",
            ),
            (b"[1 2]", "invalid character '2' after array element"),
            (
                b"{'a':1}",
                "invalid character '\\'' looking for beginning of object key string",
            ),
            (
                b"{\xc3\xa9}",
                "invalid character '\u{c3}' looking for beginning of object key string",
            ),
            (
                b"{\x7f}",
                "invalid character '\\x7f' looking for beginning of object key string",
            ),
            (
                b"{\xc2}",
                "invalid character '\u{c2}' looking for beginning of object key string",
            ),
            (
                b"{\x80}",
                "invalid character '\\u0080' looking for beginning of object key string",
            ),
            (
                b"{\xa0}",
                "invalid character '\\u00a0' looking for beginning of object key string",
            ),
            (
                b"{\xad}",
                "invalid character '\\u00ad' looking for beginning of object key string",
            ),
            (
                b"{\x0b}",
                "invalid character '\\v' looking for beginning of object key string",
            ),
            (
                b"{\x07}",
                "invalid character '\\a' looking for beginning of object key string",
            ),
            (
                b"{\x00}",
                "invalid character '\\x00' looking for beginning of object key string",
            ),
            (
                b"{\\}",
                "invalid character '\\\\' looking for beginning of object key string",
            ),
            // top level: EOF feeds a space to a pending literal
            (
                b"1.",
                "invalid character ' ' after decimal point in numeric literal",
            ),
            (b"-", "invalid character ' ' in numeric literal"),
            (
                b"tru",
                "invalid character ' ' in literal true (expecting 'e')",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                err(input),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
        let too_deep = "[".repeat(10001);
        assert_eq!(
            err(too_deep.as_bytes()),
            "invalid character '[' exceeded max depth"
        );
        // strings are not validated as UTF-8, escapes only need to be well-formed
        ok("{\"a\":\"\\u00e9\\uD800\\uDC00\\uD800x\"}");
        assert!(decode_config(b"{\"a\":\"\xff\"}").is_ok());
    }

    /// Messages confirmed on dockerd 20.10.
    #[test]
    fn type_errors() {
        let cases: &[(&str, &str)] = &[
            ("[]", "json: cannot unmarshal array into Go value of type types.PluginConfig"),
            ("123", "json: cannot unmarshal number into Go value of type types.PluginConfig"),
            ("\"abc\"", "json: cannot unmarshal string into Go value of type types.PluginConfig"),
            (r#"{"Description":1}"#, "json: cannot unmarshal number into Go struct field PluginConfig.Description of type string"),
            (r#"{"Entrypoint":"x"}"#, "json: cannot unmarshal string into Go struct field PluginConfig.Entrypoint of type []string"),
            (r#"{"Entrypoint":["a",1]}"#, "json: cannot unmarshal number into Go struct field PluginConfig.Entrypoint of type string"),
            // the first mismatch wins
            (r#"{"Description":1,"Entrypoint":"x"}"#, "json: cannot unmarshal number into Go struct field PluginConfig.Description of type string"),
            (r#"{"Linux":{"Devices":[{"Path":1}]}}"#, "json: cannot unmarshal number into Go struct field PluginDevice.Linux.Devices.Path of type string"),
            (r#"{"Env":[{"Value":1}]}"#, "json: cannot unmarshal number into Go struct field PluginEnv.Env.Value of type string"),
            (r#"{"Env":{}}"#, "json: cannot unmarshal object into Go struct field PluginConfig.Env of type []types.PluginEnv"),
            (r#"{"Env":[1]}"#, "json: cannot unmarshal number into Go struct field PluginConfig.Env of type types.PluginEnv"),
            (r#"{"User":{"UID":-1}}"#, "json: cannot unmarshal number -1 into Go struct field PluginConfigUser.User.UID of type uint32"),
            (r#"{"User":{"UID":1.5}}"#, "json: cannot unmarshal number 1.5 into Go struct field PluginConfigUser.User.UID of type uint32"),
            (r#"{"User":{"UID":4294967296}}"#, "json: cannot unmarshal number 4294967296 into Go struct field PluginConfigUser.User.UID of type uint32"),
            (r#"{"User":{"UID":1e2}}"#, "json: cannot unmarshal number 1e2 into Go struct field PluginConfigUser.User.UID of type uint32"),
            (r#"{"User":{"UID":"1"}}"#, "json: cannot unmarshal string into Go struct field PluginConfigUser.User.UID of type uint32"),
            (r#"{"User":[]}"#, "json: cannot unmarshal array into Go struct field PluginConfig.User of type types.PluginConfigUser"),
            (r#"{"rootfs":"x"}"#, "json: cannot unmarshal string into Go struct field PluginConfig.rootfs of type types.PluginConfigRootfs"),
            (r#"{"rootfs":{"diff_ids":[1]}}"#, "json: cannot unmarshal number into Go struct field PluginConfigRootfs.rootfs.diff_ids of type string"),
            (r#"{"Args":[]}"#, "json: cannot unmarshal array into Go struct field PluginConfig.Args of type types.PluginConfigArgs"),
            (r#"{"Args":{"Value":"x"}}"#, "json: cannot unmarshal string into Go struct field PluginConfigArgs.Args.Value of type []string"),
            (r#"{"IpcHost":"true"}"#, "json: cannot unmarshal string into Go struct field PluginConfig.IpcHost of type bool"),
            (r#"{"IpcHost":0}"#, "json: cannot unmarshal number into Go struct field PluginConfig.IpcHost of type bool"),
            (r#"{"Mounts":[{"Options":[1]}]}"#, "json: cannot unmarshal number into Go struct field PluginMount.Mounts.Options of type string"),
            (r#"{"Interface":{"Types":"x"}}"#, "json: cannot unmarshal string into Go struct field PluginConfigInterface.Interface.Types of type []types.PluginInterfaceType"),
            // the field path uses the struct's JSON names, not the key as written
            (r#"{"linux":{"devices":[{"path":true}]}}"#, "json: cannot unmarshal bool into Go struct field PluginDevice.Linux.Devices.Path of type string"),
            (r#"{"Network":{"Type":{}}}"#, "json: cannot unmarshal object into Go struct field PluginConfigNetwork.Network.Type of type string"),
            // PluginInterfaceType.UnmarshalJSON errors abort at once and win over saved mismatches
            (r#"{"Interface":{"Types":[null]}}"#, "\"null\" is not a plugin interface type"),
            (r#"{"Interface":{"Types":[1]}}"#, "\"1\" is not a plugin interface type"),
            (r#"{"Interface":{"Types":[{"a": 1} ]}}"#, r#""{\"a\": 1}" is not a plugin interface type"#),
            (r#"{"Interface":{"Types":[true,1]}}"#, "\"true\" is not a plugin interface type"),
            (r#"{"Description":1,"Interface":{"Types":[1]}}"#, "\"1\" is not a plugin interface type"),
        ];
        for (input, want) in cases {
            assert_eq!(err(input.as_bytes()), *want, "input {input}");
        }
    }

    #[test]
    fn stream_decoding_for_blobs() {
        let s = |b: &str| decode_config_stream(b.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(s("").unwrap_err(), "EOF");
        assert_eq!(s("  \n").unwrap_err(), "EOF");
        assert_eq!(s("{").unwrap_err(), "unexpected EOF");
        assert_eq!(s("{\"a\":[1").unwrap_err(), "unexpected EOF");
        assert_eq!(
            s("{\"a\" 1}").unwrap_err(),
            "invalid character '1' after object key"
        );
        assert_eq!(s("{} x").unwrap_err(), "invalid config json");
        assert_eq!(s("{} {}").unwrap_err(), "invalid config json");
        assert_eq!(
            s("[]").unwrap_err(),
            "json: cannot unmarshal array into Go value of type types.PluginConfig"
        );
        assert_eq!(s("{}}").unwrap(), PluginConfig::default());
        assert_eq!(s(" {\"description\":\"d\"} \n").unwrap().description, "d");
        assert_eq!(s("null").unwrap(), PluginConfig::default());
        assert_eq!(s(FULL).unwrap(), decode_config(FULL.as_bytes()).unwrap());
    }
}
