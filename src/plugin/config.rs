//! The plugin's `config.json` ("Config") and `Settings`, named and ordered as Docker emits them
//! (struct field order is the wire order). Decoding a config as Go does is the job of
//! `config/go_decode.rs`.

mod go_decode;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::gojson::JsonError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginConfig {
    pub args: PluginConfigArgs,
    pub description: String,
    /// Set by 20.10's `plugin create`; omitted when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub docker_version: String,
    pub documentation: String,
    pub entrypoint: Option<Vec<String>>,
    pub env: Option<Vec<PluginEnv>>,
    pub interface: PluginConfigInterface,
    pub ipc_host: bool,
    pub linux: PluginConfigLinux,
    pub mounts: Option<Vec<PluginMount>>,
    pub network: PluginConfigNetwork,
    pub pid_host: bool,
    pub propagated_mount: String,
    pub user: PluginConfigUser,
    pub work_dir: String,
    #[serde(rename = "rootfs", default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<PluginConfigRootfs>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginConfigArgs {
    pub description: String,
    pub name: String,
    pub settable: Option<Vec<String>>,
    pub value: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginEnv {
    pub description: String,
    pub name: String,
    pub settable: Option<Vec<String>>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginConfigInterface {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol_scheme: String,
    pub socket: String,
    pub types: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginConfigLinux {
    pub allow_all_devices: bool,
    pub capabilities: Option<Vec<String>>,
    pub devices: Option<Vec<PluginDevice>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginDevice {
    pub description: String,
    pub name: String,
    pub path: Option<String>,
    pub settable: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginMount {
    pub description: String,
    pub destination: String,
    pub name: String,
    pub options: Option<Vec<String>>,
    pub settable: Option<Vec<String>>,
    pub source: Option<String>,
    #[serde(rename = "Type")]
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginConfigNetwork {
    #[serde(rename = "Type")]
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginConfigUser {
    #[serde(rename = "GID", default, skip_serializing_if = "is_zero")]
    pub gid: u32,
    #[serde(rename = "UID", default, skip_serializing_if = "is_zero")]
    pub uid: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginConfigRootfs {
    pub diff_ids: Option<Vec<String>>,
    #[serde(rename = "type")]
    pub kind: String,
}

/// What `docker plugin set` edits; initialised from the config (`InitEmptySettings`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginSettings {
    pub args: Vec<String>,
    pub devices: Vec<PluginDevice>,
    pub env: Vec<String>,
    pub mounts: Vec<PluginMount>,
}

impl PluginSettings {
    /// moby `InitEmptySettings`: mounts and devices are copied from the config, `Env` holds
    /// `NAME=VALUE` for every config env with a non-null value (config order), `Args` copies the
    /// default args. Every list is `[]`, never `null`, even when the config has none.
    pub fn init_from(config: &PluginConfig) -> PluginSettings {
        PluginSettings {
            args: config.args.value.clone().unwrap_or_default(),
            devices: config.linux.devices.clone().unwrap_or_default(),
            env: config
                .env
                .iter()
                .flatten()
                .filter_map(|e| e.value.as_ref().map(|v| format!("{}={}", e.name, v)))
                .collect(),
            mounts: config.mounts.clone().unwrap_or_default(),
        }
    }
}

/// A `config.json` that does not decode. The text is what follows `failed to parse config: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Go's own error text.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// A config blob holds more than one JSON value (moby's `dec.More()` check).
    #[error("invalid config json")]
    MoreThanOneValue,
}

/// An untyped error in moby (500), prefixed as pull, upgrade and create prefix it.
impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::System(format!("failed to parse config: {e}"))
    }
}

/// Decode `config.json` as Go's encoding/json would into moby's struct: keys match
/// case-insensitively, unknown keys are ignored, missing keys and `null` give zero values.
/// The error text is what follows `failed to parse config: ` (Go-like where practical).
///
/// This is `json.Unmarshal` (what `POST /plugins/create` applies to the uploaded `config.json`):
/// the whole input must be one JSON value (`unexpected end of JSON input`,
/// `invalid character 'x' after top-level value`). Faithful to Go also in the corners dockerd
/// 20.10 was seen to follow: duplicate keys decode into the same field in turn (objects merge,
/// `null` leaves strings/bools alone and resets lists/pointers, list elements merge with the
/// previous occupant of the slot), `ſ`/`K` fold to `s`/`k` in keys, the first type mismatch
/// is reported with Go's struct-field path, and `Interface.Types` goes through moby's own
/// `PluginInterfaceType.UnmarshalJSON` (see `config/go_decode.rs`).
pub fn decode_config(bytes: &[u8]) -> Result<PluginConfig, ConfigError> {
    go_decode::unmarshal(bytes, false)
}

/// Decode a config blob as moby's `setupNewPlugin` does (pull, upgrade, and the second half of
/// create): `json.NewDecoder(..).Decode` of the first value, then `dec.More()` must be false.
/// Errors: `EOF` (empty), `unexpected EOF` (truncated), syntax errors as for [`decode_config`],
/// `invalid config json` (more values follow; *not* prefixed with `failed to parse config: ` in
/// moby).
pub fn decode_config_stream(bytes: &[u8]) -> Result<PluginConfig, ConfigError> {
    go_decode::decode_stream(bytes)
}

/// What a plugin made by `POST /plugins/create` holds: moby decodes the uploaded `config.json`,
/// stores it as a blob with Go's `json.Marshal`, and decodes that blob again. Because
/// `PluginInterfaceType.UnmarshalJSON` keeps the raw (still JSON-escaped) bytes, the round trip
/// changes `Interface.Types` entries containing `"`, `\`, control characters, `<`, `>`, `&`,
/// U+2028/U+2029 or invalid UTF-8 (dockerd 20.10 shows `"foo"` as `.oo\",/` after create, where
/// a single decode gives `.oo",/`). Everything else is identical to [`decode_config`].
pub fn decode_created_config(bytes: &[u8]) -> Result<PluginConfig, ConfigError> {
    go_decode::unmarshal(bytes, true)
}

/// Go's `%q` of a string, for the plugin modules that format names in errors as moby does.
pub use crate::gojson::go_quote;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_init() {
        // nothing in the config: lists are [] (not null)
        let s = PluginSettings::init_from(&PluginConfig::default());
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"Args":[],"Devices":[],"Env":[],"Mounts":[]}"#
        );
        // null-valued env entries are left out; order kept
        let c = decode_config(
            br#"{"Env":[{"Name":"B","Value":"2"},{"Name":"NOVAL","Value":null},{"Name":"A","Value":""}],
            "Args":{"Value":["--x"]},"Mounts":[{"Name":"m","Source":null}],"Linux":{"Devices":[{"Name":"d","Path":"/dev/x"}]}}"#,
        )
        .unwrap();
        let s = PluginSettings::init_from(&c);
        assert_eq!(s.env, vec!["B=2".to_string(), "A=".to_string()]);
        assert_eq!(s.args, vec!["--x".to_string()]);
        assert_eq!(s.mounts, c.mounts.clone().unwrap());
        assert_eq!(s.devices, c.linux.devices.clone().unwrap());
    }
}
