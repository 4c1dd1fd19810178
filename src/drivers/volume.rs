//! The VolumeDriver protocol (moby `volume/drivers/proxy.go` + `adapter.go`) and the
//! [`VolumeDriver`] trait the volume service sees every driver through.
//!
//! [`VolumeDriverClient`] is moby's proxy and adapter in one: it sends `/VolumeDriver.<Method>`
//! with moby's request shapes, turns an in-band `Err` into an error, maps reported mountpoints
//! to host paths ([`PathMapper`], moby's `ScopedPath`) and caches `Capabilities`. Deadlines are
//! not its business: each call has the one deadline the RPC client gives it
//! (`crate::rpc::client`), bounded by the operation the volume service runs it in.
//!
//! Errors ([`DriverError`]) display as moby's do after `create <name>: ` and the like: a non-200
//! answer → `VolumeDriver.Create: <Err or body>`; a 200 answer with `Err` set → `<Err>`; an
//! unreachable plugin → the transport text (`dial unix …: connect: …`).
//!
//! Answers are read as Go's `encoding/json` would: keys case-insensitively, unknown fields
//! ignored, `null` like a missing field.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::field;
use crate::error::Error;
use crate::rpc::client::{shorten, PluginClient, Retry, RpcError};
pub use crate::rpc::handle::PathMapper;
use crate::rpc::handle::PluginHandle;

/// The `Implements` / capability name of volume plugins.
pub const VOLUME_DRIVER: &str = "VolumeDriver";

pub use super::DEFAULT_RETRY;

/// The largest `VolumeDriver.List` answer accepted: room for about 200,000 volumes, while a
/// plugin that answers without end costs berth at most this plus the buffer's last growth
/// (every other method answers one volume at most, within the RPC client's default limit).
pub const LIST_REPLY_LIMIT: usize = 16 << 20;

/// `local` or `global` (`Capabilities.Scope`).
pub const LOCAL_SCOPE: &str = "local";
pub const GLOBAL_SCOPE: &str = "global";

// Request bodies, with moby's field order (`volumeDriverProxy*Request`).

#[derive(Serialize)]
struct NameRequest<'a> {
    #[serde(rename = "Name")]
    name: &'a str,
}

#[derive(Serialize)]
struct CreateRequest<'a> {
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "Opts")]
    opts: Option<&'a BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct MountRequest<'a> {
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "ID")]
    id: &'a str,
}

/// `{}` (List, Capabilities).
#[derive(Serialize)]
struct EmptyRequest {}

/// A volume as a plugin reports it (`Get` / `List`).
#[derive(Debug, Clone, PartialEq)]
pub struct DriverVolume {
    pub name: String,
    /// As reported by the plugin (inside its rootfs for managed plugins).
    pub mountpoint: String,
    /// `mountpoint` mapped to the host ([`PathMapper::host_path`]).
    pub host_mountpoint: String,
    /// RFC 3339 as reported (moby parses it when it shows it; List's is ignored by moby).
    pub created_at: Option<String>,
    /// Free-form `Status` (Get only, normally).
    pub status: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// `local` or `global`, lower-cased; `local` when the plugin does not say.
    pub scope: String,
}

/// What went wrong in a VolumeDriver call; `Display` is what moby shows after `create <n>: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverError {
    /// `VolumeDriver.Create` etc.
    pub method: String,
    pub kind: DriverErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverErrorKind {
    /// The call failed: unreachable, deadline, non-200 status, undecodable answer.
    Rpc(RpcError),
    /// A 200 answer with `Err` set (moby `errors.New(ret.Err)`), or an answer missing what the
    /// method must return; or the built-in driver failing.
    Plugin(String),
    /// The request is wrong for this driver (the built-in driver's name and option rules): a 400.
    Invalid(String),
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            DriverErrorKind::Rpc(e) => e.fmt(f),
            DriverErrorKind::Plugin(m) | DriverErrorKind::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            DriverErrorKind::Rpc(e) => Some(e),
            DriverErrorKind::Plugin(_) | DriverErrorKind::Invalid(_) => None,
        }
    }
}

impl DriverError {
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The plugin could not be reached or did not answer in time (moby's volume service treats
    /// these apart from "the plugin said no").
    pub fn is_unreachable(&self) -> bool {
        matches!(&self.kind, DriverErrorKind::Rpc(e) if e.is_unreachable())
    }

    /// The answer was larger than berth reads: what the plugin meant is unknown, so it is no
    /// "no such volume" either.
    pub fn is_too_large(&self) -> bool {
        matches!(&self.kind, DriverErrorKind::Rpc(RpcError::TooLarge { .. }))
    }

    /// The message alone, without the `VolumeDriver.X: ` of status errors.
    pub fn message(&self) -> String {
        match &self.kind {
            DriverErrorKind::Rpc(RpcError::Status { message, .. }) => message.clone(),
            DriverErrorKind::Rpc(e) => e.to_string(),
            DriverErrorKind::Plugin(m) | DriverErrorKind::Invalid(m) => m.clone(),
        }
    }

    /// A failure of `method` that is not an RPC error (an in-band `Err`, the built-in driver).
    pub fn failed(method: &str, message: impl Into<String>) -> DriverError {
        DriverError::plugin(method, message)
    }

    /// A request the driver refuses as wrong (400).
    pub fn invalid(method: &str, message: impl Into<String>) -> DriverError {
        DriverError {
            method: method.to_string(),
            kind: DriverErrorKind::Invalid(message.into()),
        }
    }

    fn rpc(method: &str, e: RpcError) -> DriverError {
        DriverError {
            method: method.to_string(),
            kind: DriverErrorKind::Rpc(e),
        }
    }

    /// A plugin's own message is passed on shortened (it reaches clients and warnings).
    fn plugin(method: &str, message: impl Into<String>) -> DriverError {
        DriverError {
            method: method.to_string(),
            kind: DriverErrorKind::Plugin(shorten(&message.into())),
        }
    }
}

/// A driver's refusal of the request is a 400; everything else a 500, as moby classes them.
impl From<DriverError> for Error {
    fn from(e: DriverError) -> Error {
        match &e.kind {
            DriverErrorKind::Invalid(m) => Error::InvalidParameter(m.clone()),
            _ => Error::System(e.to_string()),
        }
    }
}

/// What [`VolumeDriver::create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    /// The driver already had the volume and it is taken as it is (moby asks a plugin `Get`
    /// before `Create` and records no labels or options for such a volume).
    Existing,
}

/// A volume driver as the volume service sees it: the built-in `local` driver and every
/// plugin (through [`VolumeDriverClient`]) alike.
#[async_trait::async_trait]
pub trait VolumeDriver: Send + Sync {
    /// The name volumes record for this driver.
    fn name(&self) -> &str;

    /// Checks a create before the driver is asked anything (the built-in driver's name and
    /// option rules).
    fn validate(&self, _name: &str, _opts: &BTreeMap<String, String>) -> Result<(), DriverError> {
        Ok(())
    }

    /// `opts` as the client sent them: `None` when it sent none (plugins then get `null`, an
    /// empty map they get as `{}`, as dockerd passes them).
    async fn create(
        &self,
        name: &str,
        opts: Option<&BTreeMap<String, String>>,
    ) -> Result<Created, DriverError>;

    async fn remove(&self, name: &str) -> Result<(), DriverError>;

    /// `Ok(None)`: the driver answered that it has no such volume.
    async fn get(&self, name: &str) -> Result<Option<DriverVolume>, DriverError>;

    async fn list(&self) -> Result<Vec<DriverVolume>, DriverError>;

    /// Mounts for caller `id`; the host path of the volume's data.
    async fn mount(&self, name: &str, id: &str) -> Result<String, DriverError>;

    async fn unmount(&self, name: &str, id: &str) -> Result<(), DriverError>;

    /// `local` or `global`.
    async fn scope(&self) -> String;

    /// The deadline the driver's calls have of their own (a plugin's `enable --timeout`).
    fn call_timeout(&self) -> Option<Duration> {
        None
    }

    /// The mountpoint a recorded volume shows without asking anything (the built-in driver's
    /// are fixed paths; a plugin's show once inspected or mounted).
    fn known_mountpoint(&self, _name: &str) -> Option<String> {
        None
    }

    /// Bytes the volume uses, when the driver can tell (the built-in driver measures its
    /// directories; plugins cannot be asked).
    fn usage(&self, _name: &str) -> Option<u64> {
        None
    }
}

/// A VolumeDriver plugin (cheap to clone; clones share the capabilities cache).
#[derive(Debug, Clone)]
pub struct VolumeDriverClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    client: PluginClient,
    paths: PathMapper,
    retry: Retry,
    capabilities: Mutex<Option<Capabilities>>,
}

impl VolumeDriverClient {
    /// `name`: the driver name users see (legacy: discovery name; managed: `Name` with tag).
    pub fn new(name: String, client: PluginClient, paths: PathMapper) -> VolumeDriverClient {
        VolumeDriverClient::with_retry(name, client, paths, DEFAULT_RETRY)
    }

    /// As [`new`](Self::new), with another policy for plugins that refuse connections.
    pub fn with_retry(
        name: String,
        client: PluginClient,
        paths: PathMapper,
        retry: Retry,
    ) -> VolumeDriverClient {
        VolumeDriverClient {
            inner: Arc::new(Inner {
                name,
                client,
                paths,
                retry,
                capabilities: Mutex::new(None),
            }),
        }
    }

    /// The adapter for a plugin the getter handed out.
    pub fn for_plugin(plugin: &PluginHandle) -> VolumeDriverClient {
        VolumeDriverClient::new(
            plugin.name.clone(),
            plugin.client.clone(),
            plugin.paths.clone(),
        )
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn client(&self) -> &PluginClient {
        &self.inner.client
    }

    pub fn paths(&self) -> &PathMapper {
        &self.inner.paths
    }

    /// `VolumeDriver.Create {"Name","Opts"}`; `Opts` is `null` when the client sent none (CLI
    /// 28.x without `-o`), `{}` when it sent an empty map (CLI 20.10), as moby passes them.
    pub async fn create(
        &self,
        name: &str,
        opts: Option<&BTreeMap<String, String>>,
    ) -> Result<(), DriverError> {
        self.call_err_only("VolumeDriver.Create", &CreateRequest { name, opts })
            .await
    }

    /// `VolumeDriver.Remove {"Name"}`.
    pub async fn remove(&self, name: &str) -> Result<(), DriverError> {
        self.call_err_only("VolumeDriver.Remove", &NameRequest { name })
            .await
    }

    /// `VolumeDriver.Get {"Name"}`. `Ok(None)` when the plugin answers `{"Volume":null}` (or no
    /// `Volume`) without error — moby's "no such volume". Plugins built on go-plugins-helpers
    /// usually report a missing volume as an error instead (500 `{"Err":"…"}`), which is an
    /// `Err` here as in moby.
    pub async fn get(&self, name: &str) -> Result<Option<DriverVolume>, DriverError> {
        const M: &str = "VolumeDriver.Get";
        let answer = self.call(M, &NameRequest { name }).await?;
        match field(&answer, "Volume") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                let wire = WireVolume::deserialize(v)
                    .map_err(|e| DriverError::rpc(M, RpcError::Decode(format!("{M}: {e}"))))?;
                self.volume(M, wire).map(Some)
            }
        }
    }

    /// `VolumeDriver.List {}`. The answer is decoded straight into volumes, without a JSON
    /// tree: lists of thousands of volumes are the daemon's largest decode.
    pub async fn list(&self) -> Result<Vec<DriverVolume>, DriverError> {
        const M: &str = "VolumeDriver.List";
        let answer: ListAnswer = self
            .inner
            .client
            .call_bounded(M, &EmptyRequest {}, self.inner.retry, LIST_REPLY_LIMIT)
            .await
            .map_err(|e| DriverError::rpc(M, e))?;
        let ListAnswer::Object { volumes, err } = answer else {
            let ListAnswer::NotObject(answer) = answer else {
                unreachable!()
            };
            return Err(not_an_object(M, &answer));
        };
        let err = string_field(M, err, "Err")?;
        if !err.is_empty() {
            return Err(DriverError::plugin(M, err));
        }
        match volumes {
            None | Some(WireVolumes::Null) => Ok(Vec::new()),
            Some(WireVolumes::List(items)) => {
                items.into_iter().map(|v| self.volume(M, v)).collect()
            }
            Some(WireVolumes::Other(other)) => Err(DriverError::plugin(
                M,
                format!("{M}: Volumes is not a list: {other}"),
            )),
        }
    }

    /// `VolumeDriver.Path {"Name"}` → the host path of the volume's mountpoint (empty when the
    /// plugin reports none, e.g. an unmounted volume).
    pub async fn path(&self, name: &str) -> Result<String, DriverError> {
        const M: &str = "VolumeDriver.Path";
        let answer = self.call(M, &NameRequest { name }).await?;
        Ok(self.inner.paths.host_path(&string_field(
            M,
            loose(field(&answer, "Mountpoint")),
            "Mountpoint",
        )?))
    }

    /// `VolumeDriver.Mount {"Name","ID"}` → the host path to bind into the container.
    pub async fn mount(&self, name: &str, id: &str) -> Result<String, DriverError> {
        const M: &str = "VolumeDriver.Mount";
        let answer = self.call(M, &MountRequest { name, id }).await?;
        Ok(self.inner.paths.host_path(&string_field(
            M,
            loose(field(&answer, "Mountpoint")),
            "Mountpoint",
        )?))
    }

    /// `VolumeDriver.Unmount {"Name","ID"}`.
    pub async fn unmount(&self, name: &str, id: &str) -> Result<(), DriverError> {
        self.call_err_only("VolumeDriver.Unmount", &MountRequest { name, id })
            .await
    }

    /// `VolumeDriver.Capabilities {}`, asked once per client. A failing call (e.g. a 404 from a
    /// plugin without the method, or an unreachable plugin) gives `local`, as in moby; only an
    /// HTTP answer is cached (moby caches successes only; berth also remembers a plugin that
    /// answered with an error status, so it is not asked on every call), so an unreachable
    /// plugin is asked again next time.
    pub async fn capabilities(&self) -> Capabilities {
        const M: &str = "VolumeDriver.Capabilities";
        if let Some(c) = self.cached_capabilities() {
            return c;
        }
        let local = || Capabilities {
            scope: LOCAL_SCOPE.into(),
        };
        let (caps, cache) = match self.call(M, &EmptyRequest {}).await {
            Ok(answer) => {
                let scope = field(&answer, "Capabilities")
                    .and_then(|c| field(c, "Scope"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let scope = match scope.as_str() {
                    "" => LOCAL_SCOPE.to_string(),
                    LOCAL_SCOPE | GLOBAL_SCOPE => scope,
                    other => {
                        log::warn!(
                            "Volume driver {} returned an invalid scope {other:?}, using local",
                            self.name()
                        );
                        LOCAL_SCOPE.to_string()
                    }
                };
                (Capabilities { scope }, true)
            }
            Err(e) => {
                log::debug!(
                    "Volume driver {} returned an error while trying to query its capabilities, using default capabilities: {e}",
                    self.name()
                );
                (
                    local(),
                    matches!(e.kind, DriverErrorKind::Rpc(RpcError::Status { .. })),
                )
            }
        };
        if cache {
            *self
                .inner
                .capabilities
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(caps.clone());
        }
        caps
    }

    /// The cached capabilities, if a call has settled them.
    pub fn cached_capabilities(&self) -> Option<Capabilities> {
        self.inner
            .capabilities
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A call whose answer carries only `Err`.
    async fn call_err_only(
        &self,
        method: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<(), DriverError> {
        self.call(method, body).await.map(|_| ())
    }

    /// One call: the answer as JSON, with a non-empty in-band `Err` turned into an error.
    async fn call(
        &self,
        method: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<Value, DriverError> {
        let answer: Value = self
            .inner
            .client
            .call(method, body, self.inner.retry)
            .await
            .map_err(|e| DriverError::rpc(method, e))?;
        if !answer.is_object() {
            return Err(not_an_object(method, &answer));
        }
        // An `Err` of another type fails Go's decoder, so it is no success either.
        let err = string_field(method, loose(field(&answer, "Err")), "Err")?;
        if !err.is_empty() {
            return Err(DriverError::plugin(method, err));
        }
        Ok(answer)
    }

    fn volume(&self, method: &str, v: WireVolume) -> Result<DriverVolume, DriverError> {
        let WireVolume::Object {
            name,
            mountpoint,
            created_at,
            status,
        } = v
        else {
            let WireVolume::NotObject(v) = v else {
                unreachable!()
            };
            return Err(DriverError::plugin(
                method,
                format!("{method}: volume is not an object: {v}"),
            ));
        };
        let name = string_field(method, name, "Name")?;
        let mountpoint = string_field(method, mountpoint, "Mountpoint")?;
        let created_at = match created_at {
            None | Some(Loose::Null) => None,
            Some(Loose::Str(s)) if s.is_empty() => None,
            Some(Loose::Str(s)) => Some(s),
            Some(Loose::Other(other)) => {
                return Err(DriverError::plugin(
                    method,
                    format!("{method}: CreatedAt is not a string: {other}"),
                ))
            }
        };
        // Go drops an empty `Status` (omitempty), as it drops an absent one.
        let status = match status {
            Some(Loose::Other(Value::Object(m))) if !m.is_empty() => Some(m),
            _ => None,
        };
        Ok(DriverVolume {
            host_mountpoint: self.inner.paths.host_path(&mountpoint),
            name,
            mountpoint,
            created_at,
            status,
        })
    }
}

#[async_trait::async_trait]
impl VolumeDriver for VolumeDriverClient {
    fn name(&self) -> &str {
        &self.inner.name
    }

    /// moby's call pattern: a plugin that already has the volume is not asked to create it.
    async fn create(
        &self,
        name: &str,
        opts: Option<&BTreeMap<String, String>>,
    ) -> Result<Created, DriverError> {
        if let Ok(Some(_)) = VolumeDriverClient::get(self, name).await {
            return Ok(Created::Existing);
        }
        VolumeDriverClient::create(self, name, opts).await?;
        Ok(Created::New)
    }

    async fn remove(&self, name: &str) -> Result<(), DriverError> {
        VolumeDriverClient::remove(self, name).await
    }

    async fn get(&self, name: &str) -> Result<Option<DriverVolume>, DriverError> {
        VolumeDriverClient::get(self, name).await
    }

    async fn list(&self) -> Result<Vec<DriverVolume>, DriverError> {
        VolumeDriverClient::list(self).await
    }

    async fn mount(&self, name: &str, id: &str) -> Result<String, DriverError> {
        VolumeDriverClient::mount(self, name, id).await
    }

    async fn unmount(&self, name: &str, id: &str) -> Result<(), DriverError> {
        VolumeDriverClient::unmount(self, name, id).await
    }

    async fn scope(&self) -> String {
        self.capabilities().await.scope
    }

    fn call_timeout(&self) -> Option<Duration> {
        self.inner.client.timeout()
    }
}

/// A field of an answer decoded as a tree.
fn loose(v: Option<&Value>) -> Option<Loose> {
    v.map(|v| match v {
        Value::Null => Loose::Null,
        Value::String(s) => Loose::Str(s.clone()),
        other => Loose::Other(other.clone()),
    })
}

fn not_an_object(method: &str, answer: &Value) -> DriverError {
    DriverError::rpc(
        method,
        RpcError::Decode(format!(
            "{method}: error reading plugin resp: expected a JSON object, got {answer}"
        )),
    )
}

/// A string field; missing or `null` is empty; another type is an error (Go's decoder fails).
fn string_field(method: &str, v: Option<Loose>, name: &str) -> Result<String, DriverError> {
    match v {
        None | Some(Loose::Null) => Ok(String::new()),
        Some(Loose::Str(s)) => Ok(s),
        Some(Loose::Other(other)) => Err(DriverError::rpc(
            method,
            RpcError::Decode(format!(
                "{method}: error reading plugin resp: {name} is not a string: {other}"
            )),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Answers decoded as Go's encoding/json reads them into moby's structs: object keys matched
// case-insensitively (a repeated key: the last one wins), unknown keys skipped, and values of
// an unexpected type kept so the error can show them.

/// A JSON value where a string is expected.
enum Loose {
    Null,
    Str(String),
    Other(Value),
}

/// One volume of a `Get` or `List` answer.
enum WireVolume {
    Object {
        name: Option<Loose>,
        mountpoint: Option<Loose>,
        created_at: Option<Loose>,
        status: Option<Loose>,
    },
    NotObject(Value),
}

/// `Volumes` of a `List` answer.
enum WireVolumes {
    Null,
    List(Vec<WireVolume>),
    Other(Value),
}

/// A whole `List` answer.
enum ListAnswer {
    Object {
        volumes: Option<WireVolumes>,
        err: Option<Loose>,
    },
    NotObject(Value),
}

/// Builds the `Value` of anything that is not what the visitor wants, so errors can show it.
macro_rules! keep_other_values {
    ($wrap:expr) => {
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok($wrap(Value::Bool(v)))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok($wrap(Value::from(v)))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok($wrap(Value::from(v)))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok($wrap(Value::from(v)))
        }
    };
}

/// [`keep_other_values`] plus `null`, strings and arrays: everything but an object.
macro_rules! keep_non_objects {
    ($wrap:expr) => {
        keep_other_values!($wrap);
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($wrap(Value::Null))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok($wrap(Value::from(v)))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            other_seq(seq).map($wrap)
        }
    };
}

fn other_seq<'de, A: serde::de::SeqAccess<'de>>(seq: A) -> Result<Value, A::Error> {
    Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
}

fn other_map<'de, A: serde::de::MapAccess<'de>>(map: A) -> Result<Value, A::Error> {
    Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Loose;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            keep_other_values!(Loose::Other);
            fn visit_unit<E: serde::de::Error>(self) -> Result<Loose, E> {
                Ok(Loose::Null)
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Loose, E> {
                Ok(Loose::Null)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Loose, E> {
                Ok(Loose::Str(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Loose, E> {
                Ok(Loose::Str(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Loose, A::Error> {
                other_seq(seq).map(Loose::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Loose, A::Error> {
                other_map(map).map(Loose::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// An object key, matched against the fields a visitor knows without allocating.
struct Key<const N: usize>(&'static [&'static str; N]);

impl<'de, const N: usize> serde::de::DeserializeSeed<'de> for Key<N> {
    /// The index of the matching field, or `N` for an unknown key.
    type Value = usize;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        struct V<const N: usize>(&'static [&'static str; N]);
        impl<'de, const N: usize> serde::de::Visitor<'de> for V<N> {
            type Value = usize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<usize, E> {
                Ok(self
                    .0
                    .iter()
                    .position(|f| f.eq_ignore_ascii_case(key))
                    .unwrap_or(N))
            }
        }
        d.deserialize_str(V(self.0))
    }
}

impl<'de> Deserialize<'de> for WireVolume {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = WireVolume;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a volume")
            }
            keep_non_objects!(WireVolume::NotObject);
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<WireVolume, A::Error> {
                const FIELDS: [&str; 4] = ["Name", "Mountpoint", "CreatedAt", "Status"];
                let mut values: [Option<Loose>; 4] = [None, None, None, None];
                while let Some(i) = map.next_key_seed(Key(&FIELDS))? {
                    if i < FIELDS.len() {
                        values[i] = Some(map.next_value()?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                let [name, mountpoint, created_at, status] = values;
                Ok(WireVolume::Object {
                    name,
                    mountpoint,
                    created_at,
                    status,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for WireVolumes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = WireVolumes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of volumes")
            }
            keep_other_values!(WireVolumes::Other);
            fn visit_unit<E: serde::de::Error>(self) -> Result<WireVolumes, E> {
                Ok(WireVolumes::Null)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WireVolumes, E> {
                Ok(WireVolumes::Other(Value::from(v)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<WireVolumes, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(WireVolumes::List(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<WireVolumes, A::Error> {
                other_map(map).map(WireVolumes::Other)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ListAnswer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ListAnswer;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a List answer")
            }
            keep_non_objects!(ListAnswer::NotObject);
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ListAnswer, A::Error> {
                const FIELDS: [&str; 2] = ["Volumes", "Err"];
                let (mut volumes, mut err) = (None, None);
                while let Some(i) = map.next_key_seed(Key(&FIELDS))? {
                    match i {
                        0 => volumes = Some(map.next_value()?),
                        1 => err = Some(map.next_value()?),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(ListAnswer::Object { volumes, err })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_bodies_keep_mobys_field_order() {
        let id = "f".repeat(64);
        assert_eq!(
            serde_json::to_string(&MountRequest { name: "v", id: &id }).unwrap(),
            format!(r#"{{"Name":"v","ID":"{id}"}}"#)
        );
        assert_eq!(
            serde_json::to_string(&CreateRequest {
                name: "v",
                opts: None
            })
            .unwrap(),
            r#"{"Name":"v","Opts":null}"#
        );
        assert_eq!(serde_json::to_string(&EmptyRequest {}).unwrap(), "{}");
    }

    #[test]
    fn error_rendering() {
        let status = DriverError::rpc(
            "VolumeDriver.Create",
            RpcError::Status {
                method: "VolumeDriver.Create".into(),
                code: 500,
                message: "unknown filesystem type \"nosuchbackend\"".into(),
            },
        );
        assert_eq!(
            format!("create anc-rvol3: {status}"),
            "create anc-rvol3: VolumeDriver.Create: unknown filesystem type \"nosuchbackend\""
        );
        assert_eq!(status.method(), "VolumeDriver.Create");
        assert_eq!(
            status.message(),
            "unknown filesystem type \"nosuchbackend\""
        );
        assert!(!status.is_unreachable());

        let inband = DriverError::plugin("VolumeDriver.Create", "no space");
        assert_eq!(inband.to_string(), "no space");
        assert_eq!(inband.method(), "VolumeDriver.Create");

        let down = DriverError::rpc(
            "VolumeDriver.Get",
            RpcError::Transport("dial unix /x.sock: connect: connection refused".into()),
        );
        assert_eq!(
            down.to_string(),
            "dial unix /x.sock: connect: connection refused"
        );
        assert!(down.is_unreachable());
    }

    #[test]
    fn case_insensitive_fields() {
        let v = json!({"volume": {"name": "x"}, "Err": ""});
        assert_eq!(field(&v, "Volume").unwrap()["name"], "x");
        let text = |v: Value| string_field("M", loose(field(&v, "Mountpoint")), "Mountpoint");
        assert_eq!(text(json!({"mountpoint": "/p"})).unwrap(), "/p");
        assert_eq!(text(json!({"Mountpoint": null})).unwrap(), "");
        assert!(text(json!({"Mountpoint": 3})).is_err());
    }

    fn decode_list(body: &str) -> ListAnswer {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn list_answers_decode_as_go_reads_them() {
        let ListAnswer::Object { volumes, err } = decode_list(
            r#"{"volumes":[{"NAME":"a","mountPoint":"/m","Extra":{"x":[1]},"name":"b"},
                {"Name":"c","CreatedAt":"2026-01-02T03:04:05Z","Status":{"k":"v"}}],
               "err":"","Other":true}"#,
        ) else {
            panic!("not an object")
        };
        assert!(matches!(err, Some(Loose::Str(e)) if e.is_empty()));
        let Some(WireVolumes::List(items)) = volumes else {
            panic!("no list")
        };
        let [first, second]: [WireVolume; 2] = items.try_into().ok().unwrap();
        let WireVolume::Object {
            name, mountpoint, ..
        } = first
        else {
            panic!("not an object")
        };
        // A repeated key: the last one wins, as in Go.
        assert!(matches!(name, Some(Loose::Str(n)) if n == "b"));
        assert!(matches!(mountpoint, Some(Loose::Str(m)) if m == "/m"));
        let WireVolume::Object {
            created_at, status, ..
        } = second
        else {
            panic!("not an object")
        };
        assert!(matches!(created_at, Some(Loose::Str(c)) if c == "2026-01-02T03:04:05Z"));
        assert!(matches!(status, Some(Loose::Other(Value::Object(m))) if m["k"] == "v"));
    }

    #[test]
    fn list_answers_of_the_wrong_shape_keep_the_value_for_the_error() {
        assert!(matches!(
            decode_list("[1]"),
            ListAnswer::NotObject(Value::Array(_))
        ));
        assert!(matches!(
            decode_list("null"),
            ListAnswer::NotObject(Value::Null)
        ));
        let ListAnswer::Object { volumes, .. } = decode_list(r#"{"Volumes":{"a":1}}"#) else {
            panic!("not an object")
        };
        assert!(matches!(
            volumes,
            Some(WireVolumes::Other(Value::Object(_)))
        ));
        let ListAnswer::Object { volumes, .. } = decode_list(r#"{"Volumes":null}"#) else {
            panic!("not an object")
        };
        assert!(matches!(volumes, Some(WireVolumes::Null)));
        let ListAnswer::Object { volumes, .. } =
            decode_list(r#"{"Volumes":[7, {"Name": 5, "CreatedAt": false}]}"#)
        else {
            panic!("not an object")
        };
        let Some(WireVolumes::List(items)) = volumes else {
            panic!("no list")
        };
        assert!(matches!(&items[0], WireVolume::NotObject(v) if *v == json!(7)));
        let WireVolume::Object {
            name, created_at, ..
        } = &items[1]
        else {
            panic!("not an object")
        };
        assert!(matches!(name, Some(Loose::Other(v)) if *v == json!(5)));
        assert!(matches!(created_at, Some(Loose::Other(Value::Bool(false)))));
    }
}
