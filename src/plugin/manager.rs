//! The plugin manager: the one owner of the plugin store and the lifecycle operations on it.
//! Heavy work (unpacking, hashing) runs outside the store lock; each operation commits with a
//! single durable record write under it.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::config::{decode_created_config, PluginConfigRootfs, PluginSettings};
use super::settable::apply_set_args;
use super::store::{new_plugin_id, Plugin, PluginRecord, Store};
use crate::distribution::blobstore::{BlobStore, StagedBlob};
use crate::distribution::extract::{unpack_create_context, UnpackLimit};
use crate::distribution::reference::Reference;
use crate::distribution::registry::RegistryClient;
use crate::error::{Error, Result};
use crate::events::{Event, EventBus};
use crate::fsutil;
use crate::runtime::executor::Executor;
use crate::runtime::logs::LogStore;
use crate::runtime::supervisor::Supervisor;

pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_PLUGIN_CONFIG: &str = "application/vnd.docker.plugin.v1+json";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub struct Manager {
    pub(super) plugins_root: PathBuf,
    /// `<exec-root>/plugins`: one socket directory per running plugin.
    pub(super) exec_plugins: PathBuf,
    pub(super) blobs: BlobStore,
    store: Mutex<Store>,
    pub(super) runtime: Runtime,
    /// Where plugins are pulled from and pushed to.
    pub(super) registry: RegistryClient,
    /// One lock per plugin, held for a whole lifecycle operation (enable may wait seconds for
    /// a socket) so operations on one plugin never interleave while others proceed.
    operation_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Users of a plugin (volumes, networks) by plugin ID: an in-use plugin is not disabled or
    /// removed unless forced.
    pub(super) refcounts: Mutex<HashMap<String, usize>>,
    /// Bumped whenever the set of enabled plugins changes; followers (the daemon's volume
    /// plugin sockets and metrics collectors) look again when it moves.
    changes: tokio::sync::watch::Sender<u64>,
    /// How far a create context or a pulled layer may unpack.
    pub(super) unpack_limit: UnpackLimit,
    /// Where lifecycle events go (`docker events`).
    pub(super) events: Arc<EventBus>,
}

/// How plugins are run: the executor behind its supervisor, their logs, and the timing knobs.
pub struct Runtime {
    pub supervisor: Supervisor,
    pub executor: Arc<dyn Executor>,
    pub logs: LogStore,
    pub options: RuntimeOptions,
    /// RPC timeout per plugin, from `enable?timeout=` (0 = none).
    pub rpc_timeouts: Mutex<HashMap<String, Duration>>,
    /// How many times each plugin was started by this daemon.
    pub generations: Mutex<HashMap<String, u64>>,
}

#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// How long `enable` waits for the plugin socket to accept a connection.
    pub start_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a plugin is stopped.
    pub stop_grace: Duration,
    /// The daemon's metrics socket, bound read-only into MetricsCollector plugins (None:
    /// metrics are off).
    pub metrics_socket: Option<PathBuf>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            start_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            metrics_socket: None,
        }
    }
}

/// Plugin names by capability, as `/info` reports them.
#[derive(Debug, Default, Clone)]
pub struct CapabilitySummary {
    pub volume: Vec<String>,
    pub network: Vec<String>,
    pub log: Vec<String>,
}

/// Which plugins `list` returns (moby's `enabled` filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnabledFilter {
    Any,
    EnabledOnly,
    DisabledOnly,
}

impl Manager {
    /// Opens the store under `<data_root>/plugins`, finishing or undoing whatever a crash
    /// interrupted: staging directories, half-written blobs, unreferenced blobs.
    pub fn open(
        data_root: &Path,
        exec_root: &Path,
        executor: Arc<dyn Executor>,
        options: RuntimeOptions,
        registry: RegistryClient,
        events: Arc<EventBus>,
    ) -> Result<Manager> {
        let plugins_root = data_root.join("plugins");
        let exec_plugins = exec_root.join("plugins");
        fsutil::create_dir_mode(&exec_plugins, 0o700)?;
        let logs = LogStore::default();
        let supervisor = Supervisor::spawn(executor.clone(), logs.clone())?;
        let store = Store::load(&plugins_root)?;
        let blobs = BlobStore::open(&plugins_root.join("storage"))?;
        blobs.sweep_ingest()?;
        let tmp = plugins_root.join("tmp");
        fsutil::remove_all(&tmp)?;
        fsutil::create_dir_mode(&tmp, 0o700)?;
        let removed = blobs.collect_garbage(&store.referenced_blobs())?;
        if removed > 0 {
            log::info!("removed {removed} unreferenced blobs");
        }
        for record in store.records() {
            logs.open(
                &record.plugin.id,
                plugins_root.join(&record.plugin.id).join("plugin.log"),
            );
        }
        Ok(Manager {
            plugins_root,
            exec_plugins,
            blobs,
            store: Mutex::new(store),
            runtime: Runtime {
                supervisor,
                executor,
                logs,
                options,
                rpc_timeouts: Mutex::new(HashMap::new()),
                generations: Mutex::new(HashMap::new()),
            },
            registry,
            operation_locks: Mutex::new(HashMap::new()),
            refcounts: Mutex::new(HashMap::new()),
            changes: tokio::sync::watch::Sender::new(0),
            unpack_limit: UnpackLimit::default(),
            events,
        })
    }

    /// Tells followers that the set of enabled plugins changed.
    pub(super) fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// A receiver that sees every change of the set of enabled plugins.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Reports the number of enabled plugins at every metrics scrape (no-op while metrics are
    /// off).
    pub fn publish_metrics(self: &Arc<Self>) {
        let manager = Arc::downgrade(self);
        crate::metrics::gauge_source("plugins_enabled", "Enabled plugins", None, move || {
            let enabled = manager.upgrade().map_or(0, |m| {
                m.store().records().filter(|r| r.plugin.enabled).count()
            });
            vec![(String::new(), enabled as i64)]
        });
    }

    /// How far a create context or a pulled layer may unpack (`--max-unpacked-size`).
    pub fn with_unpack_limit(mut self, limit: UnpackLimit) -> Manager {
        self.unpack_limit = limit;
        self
    }

    /// The lock serialising lifecycle operations on plugin `id`.
    pub(super) fn operation_lock(&self, id: &str) -> Arc<Mutex<()>> {
        self.operation_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the on-disk state half-written (every
        // write is atomic), so the in-memory map is still usable.
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn list(&self, enabled: EnabledFilter, keep: impl Fn(&Plugin) -> bool) -> Vec<Plugin> {
        self.store()
            .records()
            .map(|r| &r.plugin)
            .filter(|p| match enabled {
                EnabledFilter::Any => true,
                EnabledFilter::EnabledOnly => p.enabled,
                EnabledFilter::DisabledOnly => !p.enabled,
            })
            .filter(|p| keep(p))
            .cloned()
            .collect()
    }

    pub fn get(&self, name: &str) -> Result<Plugin> {
        Ok(self.store().resolve(name)?.plugin.clone())
    }

    pub fn summary(&self) -> CapabilitySummary {
        let mut volume = BTreeSet::new();
        let mut network = BTreeSet::new();
        let mut log = BTreeSet::new();
        for record in self.store().records().filter(|r| r.plugin.enabled) {
            for capability in plugin_capabilities(&record.plugin) {
                match capability.as_str() {
                    "volumedriver" => volume.insert(record.plugin.name.clone()),
                    "networkdriver" => network.insert(record.plugin.name.clone()),
                    "logdriver" => log.insert(record.plugin.name.clone()),
                    _ => false,
                };
            }
        }
        CapabilitySummary {
            volume: volume.into_iter().collect(),
            network: network.into_iter().collect(),
            log: log.into_iter().collect(),
        }
    }

    /// `docker plugin set`: validated and applied atomically, then persisted.
    pub fn set(&self, name: &str, args: &[String]) -> Result<()> {
        let mut store = self.store();
        let mut record = store.resolve(name)?.clone();
        if record.plugin.enabled {
            return Err(Error::System(
                "cannot set on an active plugin, disable plugin before setting".into(),
            ));
        }
        let plugin = &mut record.plugin;
        apply_set_args(&mut plugin.config, &mut plugin.settings, args)?;
        store.save(record)
    }

    /// `docker plugin rm`. The record is gone once this returns; the directory and blobs
    /// nobody else uses are deleted before it returns too, but outside the lock.
    pub fn remove(&self, name: &str, force: bool) -> Result<()> {
        let id = self.store().resolve(name)?.plugin.id.clone();
        let lock = self.operation_lock(&id);
        let _operation = lock.lock().unwrap_or_else(|p| p.into_inner());
        let aside = {
            let mut store = self.store();
            let record = store.resolve(&id)?;
            if !force {
                if self.in_use(&id) {
                    return Err(Error::Conflict(format!(
                        "plugin {} is in use",
                        record.plugin.name
                    )));
                }
                if record.plugin.enabled {
                    return Err(Error::Conflict(format!(
                        "plugin {} is enabled",
                        record.plugin.name
                    )));
                }
            }
            if record.plugin.enabled {
                drop(store);
                if let Err(e) = self.stop_plugin(&id) {
                    log::error!("disabling plugin {name} for removal: {e}");
                }
                store = self.store();
            }
            store.remove(&id)?
        };
        self.events.publish(Event::plugin(&id, name, "remove"));
        self.runtime.logs.forget(&id);
        self.changed();
        if let Err(e) = fsutil::remove_all(&aside) {
            log::error!("failed to remove {}: {e}", aside.display());
        }
        let store = self.store();
        self.blobs.collect_garbage(&store.referenced_blobs())?;
        Ok(())
    }

    /// `docker plugin create`: `context` is the tar the CLI uploads (config.json + rootfs/).
    /// Blocking: call it from a blocking thread. Returns the plugin's name.
    /// Where an uploaded create context waits until it is whole: an anonymous file on the
    /// store's disk, gone with its handle.
    pub fn upload_spool(&self) -> Result<fs::File> {
        Ok(fsutil::anonymous_file(&self.plugins_root.join("tmp"))?)
    }

    pub fn create(&self, requested_name: &str, context: impl Read) -> Result<String> {
        let reference = Reference::parse_normalized(requested_name).map_err(|e| {
            Error::System(format!("failed to parse reference {requested_name}: {e}"))
        })?;
        if reference.digest.is_some() {
            return Err(Error::System(
                "canonical references are not permitted".into(),
            ));
        }
        let name = reference.with_default_tag().familiar_string();
        // A fast check before reading the upload; the binding one is at commit.
        self.ensure_name_free(&self.store(), &name)?;

        let staging = self
            .plugins_root
            .join("tmp")
            .join(format!(".rootfs{}", fsutil::random_hex(8)));
        fs::create_dir(&staging)?;
        let mut staged = Vec::new();
        let result =
            self.stage_create(context, &staging, &mut staged)
                .and_then(|mut record_parts| {
                    record_parts.plugin_reference = name.clone();
                    self.commit_new(&name, record_parts, &staging, &staged)
                });
        match result {
            Ok(id) => {
                self.events.publish(Event::plugin(&id, &name, "create"));
                Ok(name)
            }
            Err(e) => {
                let _ = fsutil::remove_all(&staging);
                for blob in &staged {
                    self.blobs.discard(blob);
                }
                Err(e)
            }
        }
    }

    pub(super) fn ensure_name_free(&self, store: &Store, name: &str) -> Result<()> {
        if store.name_taken(name) {
            return Err(Error::Conflict(format!("plugin {name} already exists")));
        }
        Ok(())
    }

    /// Unpacks the context into `rootfs`, stages the layer, config and manifest blobs.
    fn stage_create(
        &self,
        context: impl Read,
        rootfs: &Path,
        staged: &mut Vec<StagedBlob>,
    ) -> Result<NewPluginParts> {
        let layer_path = self.blobs.ingest_path();
        let layer_file = fs::File::create(&layer_path)?;
        // Registered before writing so a failure below still discards the partial file.
        staged.push(StagedBlob {
            path: layer_path.clone(),
            digest: String::new(),
            size: 0,
        });
        let mut writer = BufWriter::new(layer_file);
        let unpacked = unpack_create_context(context, rootfs, &mut writer, self.unpack_limit)?;
        let layer_file = writer
            .into_inner()
            .map_err(|e| Error::System(e.to_string()))?;
        layer_file.sync_all()?;
        let layer = staged.last_mut().expect("layer staged above");
        layer.digest = unpacked.layer_digest.clone();
        layer.size = unpacked.layer_size;

        let mut config = decode_created_config(&unpacked.config_json)
            .map_err(|e| Error::System(format!("failed to parse config: {e}")))?;
        // dockerd 20.10 stamps its own version here (current daemons leave it empty); the
        // config is stored once, whatever API version the client spoke.
        config.docker_version = env!("CARGO_PKG_VERSION").to_string();
        config.rootfs = Some(PluginConfigRootfs {
            diff_ids: Some(vec![unpacked.layer_digest.clone()]),
            kind: "layers".into(),
        });
        let config_bytes = serde_json::to_vec(&config).map_err(|e| Error::System(e.to_string()))?;
        let config_blob = self.blobs.stage_bytes(&config_bytes)?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_PLUGIN_CONFIG, "size": config_blob.size, "digest": config_blob.digest},
            "layers": [{"mediaType": MEDIA_TYPE_LAYER_GZIP, "size": unpacked.layer_size, "digest": unpacked.layer_digest}],
        });
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|e| Error::System(e.to_string()))?;
        let manifest_blob = self.blobs.stage_bytes(&manifest_bytes)?;
        let parts = NewPluginParts {
            settings: PluginSettings::init_from(&config),
            plugin_reference: String::new(),
            config,
            config_digest: config_blob.digest.clone(),
            blobsums: vec![unpacked.layer_digest],
            manifest_digest: manifest_blob.digest.clone(),
        };
        staged.push(config_blob);
        staged.push(manifest_blob);
        Ok(parts)
    }

    /// The commit point of create: under the lock, the name is checked again, the rootfs and
    /// blobs move into place and the record is written last. Returns the new plugin's ID.
    pub(super) fn commit_new(
        &self,
        name: &str,
        parts: NewPluginParts,
        staging: &Path,
        staged: &[StagedBlob],
    ) -> Result<String> {
        let mut store = self.store();
        self.ensure_name_free(&store, name)?;
        let id = new_plugin_id();
        let dir = store.plugin_dir(&id);
        let result = (|| {
            fsutil::create_dir_mode(&dir, 0o700)?;
            fs::rename(staging, dir.join("rootfs"))?;
            for blob in staged {
                self.blobs.commit(blob)?;
            }
            let record = PluginRecord {
                plugin: Plugin {
                    config: parts.config,
                    enabled: false,
                    id: id.clone(),
                    name: name.to_string(),
                    plugin_reference: parts.plugin_reference,
                    settings: parts.settings,
                },
                config_digest: parts.config_digest,
                blobsums: parts.blobsums,
                manifest_digest: parts.manifest_digest,
            };
            store.save(record)
        })();
        if result.is_ok() {
            self.runtime.logs.open(&id, dir.join("plugin.log"));
        }
        if result.is_err() {
            let _ = fsutil::remove_all(&dir);
            let _ = self.blobs.collect_garbage(&store.referenced_blobs());
        }
        result.map(|()| id)
    }

    /// The blob store, for readers such as push.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }
}

pub(super) struct NewPluginParts {
    pub(super) config: super::config::PluginConfig,
    pub(super) settings: PluginSettings,
    pub(super) plugin_reference: String,
    pub(super) config_digest: String,
    pub(super) blobsums: Vec<String>,
    pub(super) manifest_digest: String,
}

/// The capabilities a plugin declares (`docker.<capability>/<version>`), lower-cased; types
/// whose prefix is not `docker` are ignored as moby ignores them.
pub fn plugin_capabilities(plugin: &Plugin) -> Vec<String> {
    plugin
        .config
        .interface
        .types
        .iter()
        .flatten()
        .filter_map(|t| parse_capability(t))
        .filter(|(prefix, _)| prefix == "docker")
        .map(|(_, capability)| capability.to_ascii_lowercase())
        .collect()
}

/// Splits `<prefix>.<capability>/<version>`: at the first `/`, then the last `.`.
pub fn parse_capability(text: &str) -> Option<(String, String)> {
    let head = text.split_once('/').map(|(h, _)| h).unwrap_or(text);
    let (prefix, capability) = head.rsplit_once('.')?;
    Some((prefix.to_string(), capability.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_strings_split_like_moby() {
        assert_eq!(
            parse_capability("docker.volumedriver/1.0"),
            Some(("docker".into(), "volumedriver".into()))
        );
        assert_eq!(
            parse_capability("com.example.foo.logdriver/2"),
            Some(("com.example.foo".into(), "logdriver".into()))
        );
        assert_eq!(parse_capability("nodot/1.0"), None);
    }
}
