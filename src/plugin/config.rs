//! The plugin's `config.json` ("Config") and `Settings`, named and ordered as Docker emits them.
//! OWNER: helper "config" — implement `decode_config`; struct field order is the wire order.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginConfig {
    #[serde(rename = "Args")]
    pub args: PluginConfigArgs,
    #[serde(rename = "Description")]
    pub description: String,
    /// Set by 20.10's `plugin create`; omitted when empty.
    #[serde(
        rename = "DockerVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub docker_version: String,
    #[serde(rename = "Documentation")]
    pub documentation: String,
    #[serde(rename = "Entrypoint")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Env")]
    pub env: Option<Vec<PluginEnv>>,
    #[serde(rename = "Interface")]
    pub interface: PluginConfigInterface,
    #[serde(rename = "IpcHost")]
    pub ipc_host: bool,
    #[serde(rename = "Linux")]
    pub linux: PluginConfigLinux,
    #[serde(rename = "Mounts")]
    pub mounts: Option<Vec<PluginMount>>,
    #[serde(rename = "Network")]
    pub network: PluginConfigNetwork,
    #[serde(rename = "PidHost")]
    pub pid_host: bool,
    #[serde(rename = "PropagatedMount")]
    pub propagated_mount: String,
    #[serde(rename = "User")]
    pub user: PluginConfigUser,
    #[serde(rename = "WorkDir")]
    pub work_dir: String,
    #[serde(rename = "rootfs", default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<PluginConfigRootfs>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginConfigArgs {
    #[serde(rename = "Description")]
    pub description: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Settable")]
    pub settable: Option<Vec<String>>,
    #[serde(rename = "Value")]
    pub value: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginEnv {
    #[serde(rename = "Description")]
    pub description: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Settable")]
    pub settable: Option<Vec<String>>,
    #[serde(rename = "Value")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginConfigInterface {
    #[serde(
        rename = "ProtocolScheme",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub protocol_scheme: String,
    #[serde(rename = "Socket")]
    pub socket: String,
    #[serde(rename = "Types")]
    pub types: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginConfigLinux {
    #[serde(rename = "AllowAllDevices")]
    pub allow_all_devices: bool,
    #[serde(rename = "Capabilities")]
    pub capabilities: Option<Vec<String>>,
    #[serde(rename = "Devices")]
    pub devices: Option<Vec<PluginDevice>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginDevice {
    #[serde(rename = "Description")]
    pub description: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Path")]
    pub path: Option<String>,
    #[serde(rename = "Settable")]
    pub settable: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginMount {
    #[serde(rename = "Description")]
    pub description: String,
    #[serde(rename = "Destination")]
    pub destination: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Options")]
    pub options: Option<Vec<String>>,
    #[serde(rename = "Settable")]
    pub settable: Option<Vec<String>>,
    #[serde(rename = "Source")]
    pub source: Option<String>,
    #[serde(rename = "Type")]
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginConfigNetwork {
    #[serde(rename = "Type")]
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    #[serde(rename = "diff_ids")]
    pub diff_ids: Option<Vec<String>>,
    #[serde(rename = "type")]
    pub kind: String,
}

/// What `docker plugin set` edits; initialised from the config (`InitEmptySettings`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginSettings {
    #[serde(rename = "Args")]
    pub args: Vec<String>,
    #[serde(rename = "Devices")]
    pub devices: Vec<PluginDevice>,
    #[serde(rename = "Env")]
    pub env: Vec<String>,
    #[serde(rename = "Mounts")]
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
/// `PluginInterfaceType.UnmarshalJSON` (see [`go_decode`]).
pub fn decode_config(bytes: &[u8]) -> Result<PluginConfig, String> {
    go_decode::unmarshal(bytes).map(|c| c.into_config(false))
}

/// Decode a config blob as moby's `setupNewPlugin` does (pull, upgrade, and the second half of
/// create): `json.NewDecoder(..).Decode` of the first value, then `dec.More()` must be false.
/// Errors: `EOF` (empty), `unexpected EOF` (truncated), syntax errors as for [`decode_config`],
/// `invalid config json` (more values follow; *not* prefixed with `failed to parse config: ` in
/// moby).
pub fn decode_config_stream(bytes: &[u8]) -> Result<PluginConfig, String> {
    go_decode::decode_stream(bytes).map(|c| c.into_config(false))
}

/// What a plugin made by `POST /plugins/create` holds: moby decodes the uploaded `config.json`,
/// stores it as a blob with Go's `json.Marshal`, and decodes that blob again. Because
/// `PluginInterfaceType.UnmarshalJSON` keeps the raw (still JSON-escaped) bytes, the round trip
/// changes `Interface.Types` entries containing `"`, `\`, control characters, `<`, `>`, `&`,
/// U+2028/U+2029 or invalid UTF-8 (dockerd 20.10 shows `"foo"` as `.oo\",/` after create, where
/// a single decode gives `.oo",/`). Everything else is identical to [`decode_config`].
pub fn decode_created_config(bytes: &[u8]) -> Result<PluginConfig, String> {
    go_decode::unmarshal(bytes).map(|c| c.into_config(true))
}

/// Go's `%q` of a string, for the plugin modules that format names in errors as moby does.
pub use crate::gojson::go_quote;

/// An emulation of Go 1.19 `encoding/json` decoding into moby 20.10's `types.PluginConfig`.
///
/// Structure mirrors Go's: the whole input is first validated by
/// [`crate::gojson::check_syntax`] (the state machine of `encoding/json/scanner.go`, so syntax
/// errors carry Go's texts), then a decoder walks the valid bytes into "Go-shaped" mirror
/// types: slices keep Go's length/capacity behaviour, pointers are `Option`s, type mismatches
/// are remembered (first one wins, decoding continues) while errors from `UnmarshalJSON`
/// methods abort at once. Values under unknown keys are skipped without recursion, so nesting
/// depth is only limited by the scanner's [`crate::gojson::MAX_DEPTH`] (Go's
/// `maxNestingDepth`). String unquoting, quoting and type-error texts come from
/// [`crate::gojson`] as well.
pub mod go_decode {
    use super::*;
    use crate::gojson::{self, is_space, Mode};

    // ------------------------------------------------------------------------------------
    // Decoder
    // ------------------------------------------------------------------------------------

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Kind {
        Object,
        Array,
        String,
        Number,
        Bool,
        Null,
    }

    impl Kind {
        /// `UnmarshalTypeError.Value` for this kind.
        fn go_name(self) -> &'static str {
            match self {
                Kind::Object => "object",
                Kind::Array => "array",
                Kind::String => "string",
                Kind::Number => "number",
                Kind::Bool => "bool",
                Kind::Null => "null",
            }
        }
    }

    /// Walks input already accepted by [`gojson::check_syntax`].
    pub(super) struct Decoder<'a> {
        data: &'a [u8],
        pos: usize,
        /// First type mismatch (Go's `savedError`).
        saved: Option<String>,
        /// Go's `errorContext`: innermost struct name and the JSON field names on the path.
        ctx_struct: Option<&'static str>,
        ctx_fields: Vec<&'static str>,
    }

    /// An error that aborts decoding at once (from an `UnmarshalJSON` method).
    pub(super) type Fatal = String;

    impl<'a> Decoder<'a> {
        fn new(data: &'a [u8]) -> Decoder<'a> {
            Decoder {
                data,
                pos: 0,
                saved: None,
                ctx_struct: None,
                ctx_fields: Vec::new(),
            }
        }

        fn skip_ws(&mut self) {
            while self.pos < self.data.len() && is_space(self.data[self.pos]) {
                self.pos += 1;
            }
        }

        fn peek(&mut self) -> u8 {
            self.skip_ws();
            self.data.get(self.pos).copied().unwrap_or(b' ')
        }

        fn kind(&mut self) -> Kind {
            match self.peek() {
                b'{' => Kind::Object,
                b'[' => Kind::Array,
                b'"' => Kind::String,
                b't' | b'f' => Kind::Bool,
                b'n' => Kind::Null,
                _ => Kind::Number,
            }
        }

        /// Consumes `c` if it is next (after whitespace).
        fn eat(&mut self, c: u8) -> bool {
            if self.peek() == c {
                self.pos += 1;
                true
            } else {
                false
            }
        }

        /// Skips a string token whose opening quote is at `pos`; returns the inner bytes' range.
        fn string_token(&mut self) -> (usize, usize) {
            let start = self.pos + 1;
            let mut i = start;
            while i < self.data.len() {
                match self.data[i] {
                    b'\\' => i += 2,
                    b'"' => break,
                    _ => i += 1,
                }
            }
            let end = i.min(self.data.len());
            self.pos = (end + 1).min(self.data.len());
            (start, end)
        }

        /// Skips a number or literal token.
        fn scalar_token(&mut self) -> &'a [u8] {
            let start = self.pos;
            while self.pos < self.data.len()
                && matches!(self.data[self.pos], b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'.' | b'+' | b'-')
            {
                self.pos += 1;
            }
            &self.data[start..self.pos]
        }

        /// Skips one value of any shape without recursion; returns its raw bytes.
        fn skip_value(&mut self) -> &'a [u8] {
            self.skip_ws();
            let start = self.pos;
            let mut depth = 0usize;
            loop {
                self.skip_ws();
                let Some(&c) = self.data.get(self.pos) else {
                    break;
                };
                match c {
                    b'{' | b'[' => {
                        depth += 1;
                        self.pos += 1;
                    }
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        self.pos += 1;
                    }
                    b',' | b':' => self.pos += 1,
                    b'"' => {
                        self.string_token();
                    }
                    _ => {
                        if self.scalar_token().is_empty() {
                            self.pos += 1; // not reachable on valid input
                        }
                    }
                }
                if depth == 0 {
                    break;
                }
            }
            &self.data[start..self.pos]
        }

        /// Reads a string token and unquotes it as Go does.
        fn read_string(&mut self) -> String {
            self.skip_ws();
            let (s, e) = self.string_token();
            gojson::unquote(&self.data[s..e])
        }

        /// Go `saveError` with `addErrorContext` for a mismatched value; skips the value.
        fn mismatch(&mut self, value: &str, go_type: &str) {
            self.skip_value();
            self.mismatch_described(value, go_type);
        }

        fn mismatch_described(&mut self, value: &str, go_type: &str) {
            if self.saved.is_some() {
                return;
            }
            self.saved = Some(match self.ctx_struct {
                Some(st) => {
                    gojson::unmarshal_field_type_error(value, st, &self.ctx_fields, go_type)
                }
                None => gojson::unmarshal_type_error(value, go_type),
            });
        }

        /// Decodes the members of an object into a struct; `field` is called with the index of
        /// the matching field name (exact match first, then Go's case folding).
        fn object(
            &mut self,
            struct_name: &'static str,
            names: &[&'static str],
            mut field: impl FnMut(&mut Decoder<'a>, usize) -> Result<(), Fatal>,
        ) -> Result<(), Fatal> {
            self.eat(b'{');
            if self.eat(b'}') {
                return Ok(());
            }
            loop {
                let key = self.read_string();
                self.eat(b':');
                let idx = names
                    .iter()
                    .position(|n| *n == key)
                    .or_else(|| names.iter().position(|n| fold_eq(n, &key)));
                match idx {
                    Some(i) => {
                        let (old_struct, old_len) = (self.ctx_struct, self.ctx_fields.len());
                        self.ctx_struct = Some(struct_name);
                        self.ctx_fields.push(names[i]);
                        let r = field(self, i);
                        self.ctx_fields.truncate(old_len);
                        self.ctx_struct = old_struct;
                        r?;
                    }
                    None => {
                        self.skip_value();
                    }
                }
                if self.eat(b',') {
                    continue;
                }
                self.eat(b'}');
                return Ok(());
            }
        }
    }

    /// Go's key matching for a field name (all ASCII): ASCII case folding, plus `ſ` (U+017F)
    /// folding to `s` and the Kelvin sign (U+212A) to `k`.
    fn fold_eq(name: &str, key: &str) -> bool {
        let mut k = key.chars();
        for n in name.chars() {
            let Some(c) = k.next() else {
                return false;
            };
            let c = match c {
                '\u{017F}' => 's',
                '\u{212A}' => 'k',
                c => c,
            };
            if !c.eq_ignore_ascii_case(&n) {
                return false;
            }
        }
        k.next().is_none()
    }

    // ------------------------------------------------------------------------------------
    // Go-shaped values
    // ------------------------------------------------------------------------------------

    pub(super) trait GoDecode: Default + Clone {
        /// Go's `reflect.Type.String()` of the target, as printed in `UnmarshalTypeError`.
        fn go_type() -> String;
        fn decode(&mut self, d: &mut Decoder<'_>) -> Result<(), Fatal>;
    }

    impl GoDecode for String {
        fn go_type() -> String {
            "string".into()
        }
        fn decode(&mut self, d: &mut Decoder<'_>) -> Result<(), Fatal> {
            match d.kind() {
                Kind::String => *self = d.read_string(),
                Kind::Null => {
                    d.skip_value();
                }
                k => d.mismatch(k.go_name(), "string"),
            }
            Ok(())
        }
    }

    impl GoDecode for bool {
        fn go_type() -> String {
            "bool".into()
        }
        fn decode(&mut self, d: &mut Decoder<'_>) -> Result<(), Fatal> {
            match d.kind() {
                Kind::Bool => *self = d.skip_value() == b"true",
                Kind::Null => {
                    d.skip_value();
                }
                k => d.mismatch(k.go_name(), "bool"),
            }
            Ok(())
        }
    }

    impl GoDecode for u32 {
        fn go_type() -> String {
            "uint32".into()
        }
        fn decode(&mut self, d: &mut Decoder<'_>) -> Result<(), Fatal> {
            match d.kind() {
                Kind::Number => {
                    let lit = d.skip_value();
                    // strconv.ParseUint(lit, 10, 64) then an overflow check against uint32.
                    let parsed = std::str::from_utf8(lit)
                        .ok()
                        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|s| s.parse::<u64>().ok())
                        .and_then(|n| u32::try_from(n).ok());
                    match parsed {
                        Some(n) => *self = n,
                        None => {
                            let value = gojson::number_literal_kind(&String::from_utf8_lossy(lit));
                            d.mismatch_described(&value, "uint32");
                        }
                    }
                }
                Kind::Null => {
                    d.skip_value();
                }
                k => d.mismatch(k.go_name(), "uint32"),
            }
            Ok(())
        }
    }

    /// A Go pointer: `null` makes it nil, anything else allocates (if nil) and decodes into
    /// the pointee (errors name the pointee's type).
    #[derive(Clone, Default, Debug)]
    pub(super) struct GoPtr<T>(pub Option<T>);

    impl<T: GoDecode> GoDecode for GoPtr<T> {
        fn go_type() -> String {
            T::go_type()
        }
        fn decode(&mut self, d: &mut Decoder<'_>) -> Result<(), Fatal> {
            if d.kind() == Kind::Null {
                d.skip_value();
                self.0 = None;
                return Ok(());
            }
            self.0.get_or_insert_with(T::default).decode(d)
        }
    }

    /// A Go slice: `backing` is the whole capacity (elements past `len` keep whatever an
    /// earlier decode left there, as in Go).
    #[derive(Clone, Debug)]
    pub(super) struct GoSlice<T> {
        nil: bool,
        len: usize,
        backing: Vec<T>,
    }

    impl<T> Default for GoSlice<T> {
        fn default() -> Self {
            GoSlice {
                nil: true,
                len: 0,
                backing: Vec::new(),
            }
        }
    }

    impl<T: Clone> GoSlice<T> {
        pub(super) fn into_option(self) -> Option<Vec<T>> {
            if self.nil {
                None
            } else {
                let mut v = self.backing;
                v.truncate(self.len);
                Some(v)
            }
        }
    }

    impl<T: GoDecode> GoDecode for GoSlice<T> {
        fn go_type() -> String {
            format!("[]{}", T::go_type())
        }
        fn decode(&mut self, d: &mut Decoder<'_>) -> Result<(), Fatal> {
            match d.kind() {
                Kind::Null => {
                    d.skip_value();
                    *self = GoSlice::default();
                    return Ok(());
                }
                Kind::Array => {}
                k => {
                    d.mismatch(k.go_name(), &Self::go_type());
                    return Ok(());
                }
            }
            d.eat(b'[');
            let mut i = 0;
            if !d.eat(b']') {
                loop {
                    if i >= self.backing.len() {
                        // Go grows to cap*1.5 (at least 4), copying only the first len elements.
                        let cap = self.backing.len();
                        let new_cap = (cap + cap / 2).max(4);
                        self.backing.truncate(self.len);
                        self.backing.resize(new_cap, T::default());
                    }
                    if i >= self.len {
                        self.len = i + 1;
                    }
                    self.backing[i].decode(d)?;
                    i += 1;
                    if d.eat(b',') {
                        continue;
                    }
                    d.eat(b']');
                    break;
                }
            }
            if i < self.len {
                self.len = i;
            }
            if i == 0 {
                self.backing = Vec::new();
                self.len = 0;
            }
            self.nil = false;
            Ok(())
        }
    }

    /// moby's `PluginInterfaceType` with its hand-written `UnmarshalJSON`, which works on the
    /// raw token bytes: no unescaping; the version starts after the first `/`, the prefix ends
    /// at the last `.` before it (`prefixIndex` 0 when there is none, so the capability then
    /// loses its first byte); and when there is no `/` the capability is sliced up to the
    /// *quoted* length, running two bytes past the string into the JSON text that follows
    /// (`"foo",` gives capability `oo",`). The version is left alone when there is no `/`.
    #[derive(Clone, Default, Debug)]
    pub(super) struct GoInterfaceType {
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
        pub(super) fn to_string_once(&self) -> String {
            gojson::lossy(&self.string_bytes())
        }

        /// After moby's create-path round trip: `json.Marshal` of the string, then this
        /// `UnmarshalJSON` again on the raw (escaped) bytes. Escapes introduce neither `.`
        /// nor `/`, so the split is the same and the result is the escaped text itself.
        pub(super) fn to_string_after_blob_roundtrip(&self) -> String {
            gojson::lossy(&gojson::go_escape_json(&self.string_bytes()))
        }
    }

    impl GoDecode for GoInterfaceType {
        fn go_type() -> String {
            "types.PluginInterfaceType".into()
        }
        fn decode(&mut self, d: &mut Decoder<'_>) -> Result<(), Fatal> {
            d.skip_ws();
            let start = d.pos;
            let p = d.skip_value();
            if p.len() < 2 || p[0] != b'"' || p[p.len() - 1] != b'"' {
                return Err(format!(
                    "{} is not a plugin interface type",
                    gojson::quote_bytes(p)
                ));
            }
            // `p` re-sliced past its opening quote; Go may read up to cap, i.e. on into the
            // rest of the document.
            let buf = &d.data[start + 1..];
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

    /// Declares a Go-shaped mirror struct and its decoding (fields keyed by their JSON names).
    macro_rules! go_struct {
        ($name:ident, $go_name:literal { $($field:ident : $ty:ty = $key:literal),* $(,)? }) => {
            #[derive(Clone, Default, Debug)]
            pub(super) struct $name {
                $(pub(super) $field: $ty,)*
            }

            impl GoDecode for $name {
                fn go_type() -> String {
                    concat!("types.", $go_name).to_string()
                }
                fn decode(&mut self, d: &mut Decoder<'_>) -> Result<(), Fatal> {
                    match d.kind() {
                        Kind::Object => {}
                        Kind::Null => {
                            d.skip_value();
                            return Ok(());
                        }
                        k => {
                            d.mismatch(k.go_name(), &Self::go_type());
                            return Ok(());
                        }
                    }
                    const NAMES: &[&str] = &[$($key),*];
                    d.object($go_name, NAMES, |d, i| {
                        let mut n = 0usize;
                        $(
                            if i == n {
                                return self.$field.decode(d);
                            }
                            n += 1;
                        )*
                        let _ = n;
                        Ok(())
                    })
                }
            }
        };
    }

    go_struct!(GoArgs, "PluginConfigArgs" {
        name: String = "Name",
        description: String = "Description",
        settable: GoSlice<String> = "Settable",
        value: GoSlice<String> = "Value",
    });

    go_struct!(GoEnv, "PluginEnv" {
        name: String = "Name",
        description: String = "Description",
        settable: GoSlice<String> = "Settable",
        value: GoPtr<String> = "Value",
    });

    go_struct!(GoInterface, "PluginConfigInterface" {
        protocol_scheme: String = "ProtocolScheme",
        socket: String = "Socket",
        types: GoSlice<GoInterfaceType> = "Types",
    });

    go_struct!(GoDevice, "PluginDevice" {
        name: String = "Name",
        description: String = "Description",
        settable: GoSlice<String> = "Settable",
        path: GoPtr<String> = "Path",
    });

    go_struct!(GoLinux, "PluginConfigLinux" {
        allow_all_devices: bool = "AllowAllDevices",
        capabilities: GoSlice<String> = "Capabilities",
        devices: GoSlice<GoDevice> = "Devices",
    });

    go_struct!(GoMount, "PluginMount" {
        name: String = "Name",
        description: String = "Description",
        settable: GoSlice<String> = "Settable",
        source: GoPtr<String> = "Source",
        destination: String = "Destination",
        kind: String = "Type",
        options: GoSlice<String> = "Options",
    });

    go_struct!(GoNetwork, "PluginConfigNetwork" {
        kind: String = "Type",
    });

    go_struct!(GoUser, "PluginConfigUser" {
        uid: u32 = "UID",
        gid: u32 = "GID",
    });

    go_struct!(GoRootfs, "PluginConfigRootfs" {
        diff_ids: GoSlice<String> = "diff_ids",
        kind: String = "type",
    });

    go_struct!(GoConfig, "PluginConfig" {
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

    fn map_slice<T: Clone, U>(s: GoSlice<T>, f: impl FnMut(T) -> U) -> Option<Vec<U>> {
        s.into_option().map(|v| v.into_iter().map(f).collect())
    }

    impl GoConfig {
        /// Into berth's types; `blob_roundtrip` applies the create path's second decode to
        /// `Interface.Types` (see [`super::decode_created_config`]).
        pub(super) fn into_config(self, blob_roundtrip: bool) -> PluginConfig {
            PluginConfig {
                args: PluginConfigArgs {
                    description: self.args.description,
                    name: self.args.name,
                    settable: self.args.settable.into_option(),
                    value: self.args.value.into_option(),
                },
                description: self.description,
                docker_version: self.docker_version,
                documentation: self.documentation,
                entrypoint: self.entrypoint.into_option(),
                env: map_slice(self.env, |e| PluginEnv {
                    description: e.description,
                    name: e.name,
                    settable: e.settable.into_option(),
                    value: e.value.0,
                }),
                interface: PluginConfigInterface {
                    protocol_scheme: self.interface.protocol_scheme,
                    socket: self.interface.socket,
                    types: map_slice(self.interface.types, |t| {
                        if blob_roundtrip {
                            t.to_string_after_blob_roundtrip()
                        } else {
                            t.to_string_once()
                        }
                    }),
                },
                ipc_host: self.ipc_host,
                linux: PluginConfigLinux {
                    allow_all_devices: self.linux.allow_all_devices,
                    capabilities: self.linux.capabilities.into_option(),
                    devices: map_slice(self.linux.devices, |d| PluginDevice {
                        description: d.description,
                        name: d.name,
                        path: d.path.0,
                        settable: d.settable.into_option(),
                    }),
                },
                mounts: map_slice(self.mounts, |m| PluginMount {
                    description: m.description,
                    destination: m.destination,
                    name: m.name,
                    options: m.options.into_option(),
                    settable: m.settable.into_option(),
                    source: m.source.0,
                    kind: m.kind,
                }),
                network: PluginConfigNetwork {
                    kind: self.network.kind,
                },
                pid_host: self.pid_host,
                propagated_mount: self.propagated_mount,
                user: PluginConfigUser {
                    gid: self.user.gid,
                    uid: self.user.uid,
                },
                work_dir: self.work_dir,
                rootfs: self.rootfs.0.map(|r| PluginConfigRootfs {
                    diff_ids: r.diff_ids.into_option(),
                    kind: r.kind,
                }),
            }
        }
    }

    fn decode_valid(data: &[u8]) -> Result<GoConfig, String> {
        let mut d = Decoder::new(data);
        let mut config = GoConfig::default();
        config.decode(&mut d)?;
        match d.saved {
            Some(e) => Err(e),
            None => Ok(config),
        }
    }

    /// `json.Unmarshal(data, &config)`.
    pub(super) fn unmarshal(data: &[u8]) -> Result<GoConfig, String> {
        gojson::check_syntax(data, Mode::Unmarshal)?;
        decode_valid(data)
    }

    /// `json.NewDecoder(r).Decode(&config)` followed by moby's `dec.More()` check.
    pub(super) fn decode_stream(data: &[u8]) -> Result<GoConfig, String> {
        let n = gojson::check_syntax(data, Mode::Decoder)?;
        let config = decode_valid(&data[..n])?;
        // Decoder.More: another value follows unless the next non-space byte is `]`/`}`/EOF.
        match data[n..].iter().find(|&&c| !is_space(c)) {
            None | Some(b']') | Some(b'}') => Ok(config),
            Some(_) => Err("invalid config json".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Err(e) => e,
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
        let s = |b: &str| decode_config_stream(b.as_bytes());
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

    #[test]
    fn settings_init() {
        // nothing in the config: lists are [] (not null)
        let s = PluginSettings::init_from(&PluginConfig::default());
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"Args":[],"Devices":[],"Env":[],"Mounts":[]}"#
        );
        // null-valued env entries are left out; order kept
        let c = ok(
            r#"{"Env":[{"Name":"B","Value":"2"},{"Name":"NOVAL","Value":null},{"Name":"A","Value":""}],
            "Args":{"Value":["--x"]},"Mounts":[{"Name":"m","Source":null}],"Linux":{"Devices":[{"Name":"d","Path":"/dev/x"}]}}"#,
        );
        let s = PluginSettings::init_from(&c);
        assert_eq!(s.env, vec!["B=2".to_string(), "A=".to_string()]);
        assert_eq!(s.args, vec!["--x".to_string()]);
        assert_eq!(s.mounts, c.mounts.clone().unwrap());
        assert_eq!(s.devices, c.linux.devices.clone().unwrap());
    }
}
