//! Typed adapters over the plugin RPC client, one per plugin protocol, built on the
//! [`PluginHandle`]s the plugin getter hands out.

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
