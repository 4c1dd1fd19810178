//! Typed adapters over the plugin RPC client, one per plugin protocol, built on the
//! [`PluginHandle`]s the plugin getter hands out.

pub mod authz;
pub mod ipam;
pub mod log;
pub mod metrics;
pub mod network;
pub mod volume;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::rpc::client::{shorten, RpcError};
use crate::rpc::handle::PluginHandle;

/// Connection refusals are retried with backoff (moby gives up after ~15 s; berth's first
/// retries come sooner), always within the call's one deadline.
pub const DEFAULT_RETRY: crate::rpc::client::Retry = crate::rpc::client::Retry::Backoff {
    total: std::time::Duration::from_secs(15),
};

/// A JSON object field, matched case-insensitively (exact spelling first) as Go does.
pub(crate) fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// A string field of an answer; missing, `null` or not a string is empty.
pub(crate) fn text(v: &Value, name: &str) -> String {
    field(v, name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A failed NetworkDriver or IpamDriver call, worded as libnetwork's remote drivers word it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The call failed: unreachable, deadline, a non-200 answer (`<Interface>.<Method>: <Err>`),
    /// an undecodable answer.
    #[error("{0}")]
    Rpc(#[from] RpcError),
    /// A 200 answer whose error field is set.
    #[error("remote: {0}")]
    Remote(String),
}

impl CallError {
    /// The plugin answered 404: it does not implement the method.
    pub fn not_implemented(&self) -> bool {
        matches!(self, CallError::Rpc(e) if e.status_code() == Some(404))
    }
}

/// Untyped in libnetwork, so a 500.
impl From<CallError> for crate::error::Error {
    fn from(e: CallError) -> Self {
        crate::error::Error::System(e.to_string())
    }
}

/// One call whose answer is a JSON object with an in-band error field `error_field` (`Err` for
/// network drivers, `Error` for IPAM drivers).
pub(crate) async fn call_object(
    client: &crate::rpc::client::PluginClient,
    method: &str,
    body: &(impl serde::Serialize + ?Sized),
    error_field: &str,
) -> Result<Value, CallError> {
    let answer: Value = client.call(method, body, DEFAULT_RETRY).await?;
    if !answer.is_object() {
        return Err(CallError::Rpc(RpcError::Decode(format!(
            "{method}: error reading plugin resp: expected a JSON object, got {answer}"
        ))));
    }
    in_band_error(method, &answer, error_field)?;
    Ok(answer)
}

/// The answer's in-band error (`error_field`), passed on shortened. An error field of another
/// type than string fails Go's decoder, so it is no success either.
fn in_band_error(method: &str, answer: &Value, error_field: &str) -> Result<(), CallError> {
    match field(answer, error_field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(err)) if err.is_empty() => Ok(()),
        Some(Value::String(err)) => Err(CallError::Remote(shorten(err))),
        Some(other) => Err(CallError::Rpc(RpcError::Decode(shorten(&format!(
            "{method}: error reading plugin resp: {error_field} is not a string: {other}"
        ))))),
    }
}

/// Protocol adapters by plugin name, kept while the plugin is the same activation (adapters
/// cache what a plugin said about itself, such as its capabilities, so a restarted or
/// re-activated plugin gets a new one).
pub struct AdapterCache<A> {
    adapters: Mutex<HashMap<String, (PluginHandle, Arc<A>)>>,
}

impl<A> Default for AdapterCache<A> {
    fn default() -> Self {
        AdapterCache {
            adapters: Mutex::new(HashMap::new()),
        }
    }
}

impl<A> AdapterCache<A> {
    /// The adapter of `plugin`, made with `make` unless one for this activation exists.
    pub fn adapter(&self, plugin: &PluginHandle, make: impl FnOnce(&PluginHandle) -> A) -> Arc<A> {
        let mut adapters = self.adapters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, adapter)) = adapters.get(&plugin.name) {
            if known.same_activation(plugin) {
                return adapter.clone();
            }
        }
        let adapter = Arc::new(make(plugin));
        adapters.insert(plugin.name.clone(), (plugin.clone(), adapter.clone()));
        adapter
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn in_band_errors_are_strings_and_passed_on_shortened() {
        let m = "NetworkDriver.Join";
        assert_eq!(in_band_error(m, &json!({"Err": ""}), "Err"), Ok(()));
        assert_eq!(in_band_error(m, &json!({"Err": null}), "Err"), Ok(()));
        assert_eq!(in_band_error(m, &json!({}), "Err"), Ok(()));
        assert_eq!(
            in_band_error(m, &json!({"err": "no"}), "Err")
                .unwrap_err()
                .to_string(),
            "remote: no"
        );
        assert_eq!(
            in_band_error(m, &json!({"Error": 5}), "Error")
                .unwrap_err()
                .to_string(),
            "NetworkDriver.Join: error reading plugin resp: Error is not a string: 5"
        );
        let long = "x".repeat(1 << 20);
        let shown = in_band_error(m, &json!({ "Err": long }), "Err")
            .unwrap_err()
            .to_string();
        assert!(shown.len() < 5000, "{}", shown.len());
    }
}
