//! Typed adapters over the plugin RPC client, one per plugin protocol, built on the
//! [`PluginHandle`]s the plugin getter hands out.

pub mod authz;
pub mod log;
pub mod volume;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::rpc::handle::PluginHandle;

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

/// A JSON object field of a plugin's answer, matched case-insensitively (exact spelling first)
/// as Go's `encoding/json` does.
pub(crate) fn field<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    let obj = v.as_object()?;
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}
