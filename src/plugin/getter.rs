//! The plugin getter: the one way from a protocol's user (the volume service; networks, IPAM,
//! authorization, log forwarding and conformance as they come) to a plugin, managed or legacy.
//! moby's `plugingetter` is the model: `get(name, capability, mode)` finds a plugin by name
//! among enabled managed plugins first, then legacy ones; `all(capability)` enumerates every
//! plugin of a kind. Both hand out [`PluginHandle`]s (RPC client, host-path mapper, identity),
//! so callers never ask where or how a plugin runs, and the manager knows nothing of what its
//! plugins are used for.
//!
//! The getter keeps one RPC client per managed plugin run (a restarted plugin gets a new
//! client, so adapters keyed by [`PluginHandle::same_activation`] are rebuilt) with the plugin's
//! deadline: its `enable --timeout`, else the daemon's call timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use super::manager::{plugin_capabilities, Manager};
use super::store::Plugin;
use crate::error::Error;
use crate::rpc::client::{PluginClient, RpcError, Transport};
use crate::rpc::discovery::{LegacyPlugins, LookupError};
use crate::rpc::handle::{PathMapper, PluginHandle, PluginKind};

/// What a plugin is asked for: its capability (`Interface.Types` of managed plugins) and the
/// `Implements` name of legacy ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    VolumeDriver,
    NetworkDriver,
    IpamDriver,
    Authz,
    LogDriver,
    MetricsCollector,
}

impl Capability {
    /// The capability in a managed plugin's `docker.<capability>/1.0` type (compared lower-case).
    pub fn managed(self) -> &'static str {
        match self {
            Capability::VolumeDriver => "volumedriver",
            Capability::NetworkDriver => "networkdriver",
            Capability::IpamDriver => "ipamdriver",
            Capability::Authz => "authz",
            Capability::LogDriver => "logdriver",
            Capability::MetricsCollector => "metricscollector",
        }
    }

    /// A legacy plugin's `Implements` entry (case-sensitive).
    pub fn implements(self) -> &'static str {
        match self {
            Capability::VolumeDriver => "VolumeDriver",
            Capability::NetworkDriver => "NetworkDriver",
            Capability::IpamDriver => "IpamDriver",
            Capability::Authz => "authz",
            Capability::LogDriver => "LogDriver",
            Capability::MetricsCollector => "MetricsCollector",
        }
    }
}

/// Whether a lookup takes a reference on the plugin (moby's `plugingetter` modes). A managed
/// plugin with references is "in use": `plugin disable` and `rm` refuse it unless forced.
/// References are given back with [`PluginGetter::release`], which needs no running plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Lookup,
    Acquire,
}

/// Why a plugin could not be got.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    /// No managed plugin and no legacy plugin of that name.
    #[error("plugin \"{0}\" not found")]
    NotFound(String),
    #[error("plugin {0} found but disabled")]
    Disabled(String),
    #[error("plugin {name} does not provide \"{capability}\" capability")]
    NotCapable { name: String, capability: String },
    /// A legacy plugin that was found but cannot be used (bad spec file, activation failed,
    /// implements something else), or a managed plugin whose socket cannot be addressed.
    #[error("{0}")]
    Unusable(String),
    /// The plugin store failed.
    #[error("{0}")]
    Store(Error),
}

impl From<GetError> for Error {
    fn from(e: GetError) -> Error {
        match e {
            GetError::NotFound(_) => Error::NotFound(e.to_string()),
            GetError::Disabled(_) => Error::Conflict(e.to_string()),
            GetError::NotCapable { .. } => Error::InvalidParameter(e.to_string()),
            GetError::Unusable(m) => Error::System(m),
            GetError::Store(e) => e,
        }
    }
}

impl From<RpcError> for GetError {
    fn from(e: RpcError) -> GetError {
        GetError::Unusable(e.to_string())
    }
}

/// Every plugin of a kind ([`PluginGetter::all`]).
#[derive(Debug, Default)]
pub struct Enumerated {
    pub plugins: Vec<PluginHandle>,
    /// Plugins of the kind that cannot be asked now, by name, with the reason.
    pub failed: Vec<(String, String)>,
}

pub struct PluginGetter {
    manager: Arc<Manager>,
    legacy: LegacyPlugins,
    /// The deadline of calls to plugins that set none of their own, and of enumerations.
    call_timeout: Duration,
    /// Clients of managed plugins by ID, with the run they were made for.
    managed_clients: Mutex<HashMap<String, (u64, PluginClient)>>,
}

/// How long an enumeration waits past the call deadline for legacy activations to report.
const ENUMERATION_MARGIN: Duration = Duration::from_millis(250);

impl PluginGetter {
    /// `call_timeout`: `--plugin-call-timeout`.
    pub fn new(manager: Arc<Manager>, legacy: LegacyPlugins, call_timeout: Duration) -> Self {
        PluginGetter {
            manager,
            legacy,
            call_timeout,
            managed_clients: Mutex::new(HashMap::new()),
        }
    }

    /// The daemon's deadline for plugin calls (`--plugin-call-timeout`): what a plugin without
    /// its own timeout gets, and what an enumeration gives every plugin.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The plugin `name` with `capability`: an enabled managed plugin (by name, `:latest`
    /// implied, ID or unique ID prefix), else a legacy plugin, activated if needed.
    pub async fn get(
        &self,
        name: &str,
        capability: Capability,
        mode: Mode,
    ) -> Result<PluginHandle, GetError> {
        if let Some(plugin) = self.managed(name)? {
            if !plugin.enabled {
                return Err(GetError::Disabled(name.to_string()));
            }
            if !plugin_capabilities(&plugin)
                .iter()
                .any(|c| c == capability.managed())
            {
                return Err(GetError::NotCapable {
                    name: name.to_string(),
                    capability: capability.managed().to_string(),
                });
            }
            let handle = self.managed_handle(&plugin)?;
            if mode == Mode::Acquire {
                self.manager.acquire(&plugin.id);
            }
            return Ok(handle);
        }
        match self.legacy.get(name, capability.implements()).await {
            Ok(plugin) => Ok(legacy_handle(&plugin.name, &plugin.client)),
            Err(LookupError::NotFound(_)) => Err(GetError::NotFound(name.to_string())),
            Err(e) => Err(GetError::Unusable(e.to_string())),
        }
    }

    /// Gives back a reference taken with [`Mode::Acquire`] on the plugin `name` (whatever its
    /// state now). Legacy plugins hold no references.
    pub fn release(&self, name: &str) {
        if let Ok(Some(plugin)) = self.managed(name) {
            self.manager.release_reference(&plugin.id);
        }
    }

    /// Start-up: the references users hold, by plugin name (each name once per reference),
    /// replace whatever was counted.
    pub fn set_references<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut counts = HashMap::new();
        for name in names {
            if let Ok(Some(plugin)) = self.managed(name) {
                *counts.entry(plugin.id).or_insert(0) += 1;
            }
        }
        self.manager.set_references(counts);
    }

    /// Every plugin with `capability`: the enabled managed ones and the legacy ones discovery
    /// activates within the call deadline (past it, those already activated). Plugins that
    /// cannot be asked are reported in `failed`.
    pub async fn all(&self, capability: Capability) -> Enumerated {
        let mut found = self.enabled(capability);
        let discovered = self.legacy.all_reporting(capability.implements());
        let legacy =
            match tokio::time::timeout(self.call_timeout + ENUMERATION_MARGIN, discovered).await {
                Ok((activated, failed)) => {
                    found.failed.extend(failed);
                    activated
                }
                Err(_) => self
                    .legacy
                    .cached()
                    .into_iter()
                    .filter(|p| p.implements(capability.implements()))
                    .collect(),
            };
        for plugin in legacy {
            if !found.plugins.iter().any(|h| h.name == plugin.name) {
                found
                    .plugins
                    .push(legacy_handle(&plugin.name, &plugin.client));
            }
        }
        found
    }

    /// The enabled managed plugins with `capability` (no legacy discovery).
    pub fn enabled(&self, capability: Capability) -> Enumerated {
        let mut found = Enumerated::default();
        for plugin in self.manager.enabled_with_capability(capability.managed()) {
            match self.managed_handle(&plugin) {
                Ok(handle) => found.plugins.push(handle),
                Err(e) => found.failed.push((plugin.name.clone(), e.to_string())),
            }
        }
        found
    }

    /// Moves whenever a managed plugin is enabled, disabled or removed.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.manager.changes()
    }

    /// The managed plugin `name`, if there is one. A name that is no managed plugin's (or not
    /// a valid reference at all) may still be a legacy plugin's.
    fn managed(&self, name: &str) -> Result<Option<Plugin>, GetError> {
        match self.manager.get(name) {
            Ok(plugin) => Ok(Some(plugin)),
            Err(Error::NotFound(_)) | Err(Error::InvalidParameter(_)) => Ok(None),
            Err(e) => Err(GetError::Store(e)),
        }
    }

    fn managed_handle(&self, plugin: &Plugin) -> Result<PluginHandle, GetError> {
        let endpoint = self.manager.endpoint(plugin);
        let mut clients = self
            .managed_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let client = match clients.get(&plugin.id) {
            Some((run, client)) if *run == endpoint.run => client.clone(),
            _ => {
                let timeout = endpoint.rpc_timeout.unwrap_or(self.call_timeout);
                let client = PluginClient::new(Transport::Unix(endpoint.socket), Some(timeout))?
                    .named(&plugin.name);
                clients.insert(plugin.id.clone(), (endpoint.run, client.clone()));
                client
            }
        };
        Ok(PluginHandle {
            name: plugin.name.clone(),
            kind: PluginKind::Managed {
                id: plugin.id.clone(),
            },
            client,
            paths: PathMapper::Managed {
                propagated_mount: plugin.config.propagated_mount.clone(),
                host_propagated: endpoint.paths.propagated_mount,
                rootfs: endpoint.paths.rootfs,
            },
        })
    }
}

fn legacy_handle(name: &str, client: &PluginClient) -> PluginHandle {
    PluginHandle {
        name: name.to_string(),
        kind: PluginKind::Legacy,
        client: client.clone(),
        paths: PathMapper::Identity,
    }
}
