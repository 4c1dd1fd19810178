//! The volume service: `/volumes` semantics over the metadata store, the built-in `local`
//! driver and plugin drivers (managed and legacy). Every call to a plugin is bounded by a
//! deadline so one hung driver cannot stall requests about others.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;

use super::local::LocalDriver;
use super::store::{CreateOutcome, VolumeRecord, VolumeStore};
use super::types::{
    format_time, Volume, VolumeListResponse, VolumePruneReport, ANONYMOUS_LABEL, ZERO_TIME,
};
use crate::drivers::volume::{DriverVolume, PathMapper, VolumeDriverClient};
use crate::error::{Error, Result};
use crate::plugin::lifecycle::ManagedDriver;
use crate::plugin::manager::Manager;
use crate::rpc::client::{PluginClient, Transport};
use crate::rpc::discovery::{LegacyPlugins, LookupError};

pub const LOCAL: &str = "local";

/// What `GET /volumes` keeps (the API layer parses and validates the `filters` parameter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// `Some(true)`: only volumes nobody has mounted; `Some(false)`: only mounted ones.
    pub dangling: Option<bool>,
    /// Exact driver names; any may match.
    pub drivers: Vec<String>,
    /// Names or regular expressions matched anywhere in the name; any may match.
    pub names: Vec<String>,
    /// `key` or `key=value`; all must match.
    pub labels: Vec<String>,
}

/// What `POST /volumes/prune` removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneFilter {
    /// Also named volumes (always true before API 1.42).
    pub all: bool,
    pub labels: Vec<String>,
    /// `label!`: volumes with any of these are kept.
    pub not_labels: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct VolumeOptions {
    /// Deadline of each call to a volume plugin when the plugin has no RPC timeout of its own
    /// (and of every call made while listing).
    pub call_timeout: Duration,
}

impl Default for VolumeOptions {
    fn default() -> Self {
        VolumeOptions {
            call_timeout: Duration::from_secs(10),
        }
    }
}

pub struct VolumeService {
    store: VolumeStore,
    local: LocalDriver,
    plugins: Arc<Manager>,
    legacy: LegacyPlugins,
    options: VolumeOptions,
    /// Clients of managed plugins, by plugin ID, with the run generation they were made for.
    clients: Mutex<HashMap<String, (u64, VolumeDriverClient)>>,
    /// Adapters of legacy plugins, by name, kept while discovery hands out the same activated
    /// plugin (an adapter caches the plugin's capabilities).
    legacy_clients: Mutex<HashMap<String, VolumeDriverClient>>,
    /// Plugin volumes berth did not create but found by asking the plugins (inspect), by name
    /// → driver: moby's in-memory name cache. Their names are taken for other drivers while
    /// the plugin still has them, and a create with their driver adopts them as they are.
    seen: Mutex<HashMap<String, String>>,
    /// Mount references by volume: the caller IDs of `POST /volumes/{name}/mount`.
    mounts: Mutex<HashMap<String, BTreeSet<String>>>,
    /// One operation per volume name at a time.
    name_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    prune_running: AtomicBool,
}

/// What [`VolumeService::plugin_drivers`] found.
#[derive(Default)]
struct PluginDrivers {
    drivers: Vec<(String, VolumeDriverClient)>,
    warnings: Vec<String>,
    unactivated: Vec<String>,
}

/// A resolved driver.
#[derive(Clone)]
enum Driver {
    Local,
    Plugin {
        client: VolumeDriverClient,
        /// Set for managed plugins: the ID that volumes reference.
        managed: Option<String>,
    },
}

impl VolumeService {
    pub fn open(
        data_root: &Path,
        plugins: Arc<Manager>,
        legacy: LegacyPlugins,
        options: VolumeOptions,
    ) -> Result<VolumeService> {
        let root = data_root.join("volumes");
        let store = VolumeStore::open(&root.join("metadata.db"))
            .map_err(|e| Error::System(e.to_string()))?;
        let local = LocalDriver::new(&root);
        if let Err(e) = local.restore() {
            log::warn!("restoring local volumes: {e}");
        }
        let service = VolumeService {
            store,
            local,
            plugins,
            legacy,
            options,
            clients: Mutex::new(HashMap::new()),
            legacy_clients: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            mounts: Mutex::new(HashMap::new()),
            name_locks: Mutex::new(HashMap::new()),
            prune_running: AtomicBool::new(false),
        };
        service.recount_plugin_references()?;
        Ok(service)
    }

    /// Plugin reference counts follow from the volume records.
    fn recount_plugin_references(&self) -> Result<()> {
        let mut counts = HashMap::new();
        for record in self.records() {
            if record.driver == LOCAL {
                continue;
            }
            if let Some(id) = self.plugins.plugin_id_for_driver(&record.driver) {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
        self.plugins.set_references(counts);
        Ok(())
    }

    fn records(&self) -> Vec<Arc<VolumeRecord>> {
        self.store.snapshot()
    }

    fn record(&self, name: &str) -> Result<Option<VolumeRecord>> {
        self.store
            .get(name)
            .map_err(|e| Error::System(e.to_string()))
    }

    /// The record of `name`, or (`false`) a record made up for a volume only seen in a plugin.
    fn record_or_seen(&self, name: &str) -> Result<Option<(VolumeRecord, bool)>> {
        if let Some(record) = self.record(name)? {
            return Ok(Some((record, true)));
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        Ok(seen
            .get(name)
            .map(|driver| (VolumeRecord::new(name, driver.clone()), false)))
    }

    fn see(&self, name: &str, driver: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), driver.to_string());
    }

    fn unsee(&self, name: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    async fn lock_name(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .name_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    fn deadline_for(&self, managed: &ManagedDriver) -> Duration {
        managed.rpc_timeout.unwrap_or(self.options.call_timeout)
    }

    /// Finds the driver `name` among `local`, managed plugins and legacy plugins.
    async fn driver(&self, name: &str) -> Result<Driver> {
        if name == LOCAL {
            return Ok(Driver::Local);
        }
        let lookup_error = |e: Error| e.context(format!("error looking up volume plugin {name}"));
        if let Some(managed) = self.plugins.volume_driver(name).map_err(lookup_error)? {
            return Ok(Driver::Plugin {
                client: self.managed_client(&managed)?,
                managed: Some(managed.id),
            });
        }
        match self.legacy.get(name, "VolumeDriver").await {
            Ok(plugin) => Ok(Driver::Plugin {
                client: self.legacy_client(name, &plugin.client),
                managed: None,
            }),
            Err(LookupError::NotFound(_)) => Err(lookup_error(Error::NotFound(format!(
                "plugin \"{name}\" not found"
            )))),
            Err(e) => Err(lookup_error(Error::System(e.to_string()))),
        }
    }

    fn managed_client(&self, managed: &ManagedDriver) -> Result<VolumeDriverClient> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((generation, client)) = clients.get(&managed.id) {
            if *generation == managed.generation {
                return Ok(client.clone());
            }
        }
        let rpc = PluginClient::new(
            Transport::Unix(managed.socket.clone()),
            Some(self.deadline_for(managed)),
        )
        .map_err(|e| Error::System(e.to_string()))?;
        let mapper = PathMapper::Managed {
            propagated_mount: managed.propagated_mount.clone(),
            host_propagated: managed.host_propagated.clone(),
            rootfs: managed.rootfs.clone(),
        };
        let client = VolumeDriverClient::new(managed.name.clone(), rpc, mapper);
        clients.insert(managed.id.clone(), (managed.generation, client.clone()));
        Ok(client)
    }

    fn legacy_client(&self, name: &str, rpc: &PluginClient) -> VolumeDriverClient {
        let mut clients = self
            .legacy_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(name) {
            if client.client().same_plugin(rpc) {
                return client.clone();
            }
        }
        let client = VolumeDriverClient::new(name.to_string(), rpc.clone(), PathMapper::Identity);
        clients.insert(name.to_string(), client.clone());
        client
    }

    /// Every plugin volume driver to ask for a list or a volume: the enabled managed ones, and
    /// the legacy ones discovery activates within the call deadline (past it, those already
    /// activated). Drivers that cannot be asked come back as warnings (`list <driver>: …`) and,
    /// when activation failed, by name in `unactivated`.
    async fn plugin_drivers(&self) -> PluginDrivers {
        let mut found = PluginDrivers::default();
        for managed in self.plugins.enabled_volume_drivers() {
            match self.managed_client(&managed) {
                Ok(client) => found.drivers.push((managed.name.clone(), client)),
                Err(e) => found.warnings.push(format!("list {}: {e}", managed.name)),
            }
        }
        // Activation is bounded per plugin by the same deadline; the margin lets it report.
        let discovered = self.legacy.all_reporting("VolumeDriver");
        let margin = Duration::from_millis(250);
        let legacy =
            match tokio::time::timeout(self.options.call_timeout + margin, discovered).await {
                Ok((activated, failed)) => {
                    for (name, error) in failed {
                        found.warnings.push(format!("list {name}: {error}"));
                        found.unactivated.push(name);
                    }
                    activated
                }
                Err(_) => self
                    .legacy
                    .cached()
                    .into_iter()
                    .filter(|p| p.implements("VolumeDriver"))
                    .collect(),
            };
        for plugin in legacy {
            if !found.drivers.iter().any(|(n, _)| *n == plugin.name) {
                let client = self.legacy_client(&plugin.name, &plugin.client);
                found.drivers.push((plugin.name.clone(), client));
            }
        }
        found
    }

    /// Bounds a plugin call by the service deadline.
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl std::future::Future<
            Output = std::result::Result<T, crate::drivers::volume::DriverError>,
        >,
    ) -> std::result::Result<T, String> {
        match tokio::time::timeout(self.options.call_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "{what}: no answer within {:?}",
                self.options.call_timeout
            )),
        }
    }

    /// The driver's scope (`local` when it does not say or does not answer in time).
    async fn scope_of(&self, client: &VolumeDriverClient) -> String {
        tokio::time::timeout(self.options.call_timeout, client.capabilities())
            .await
            .map(|c| c.scope)
            .unwrap_or_else(|_| LOCAL.to_string())
    }

    /// `POST /volumes/create`.
    pub async fn create(
        &self,
        name: &str,
        driver_name: &str,
        driver_opts: BTreeMap<String, String>,
        mut labels: BTreeMap<String, String>,
        label_anonymous: bool,
    ) -> Result<Volume> {
        let anonymous = name.is_empty();
        let name = if anonymous {
            crate::fsutil::random_hex(32)
        } else {
            name.to_string()
        };
        if anonymous && label_anonymous {
            labels.insert(ANONYMOUS_LABEL.to_string(), String::new());
        }
        let driver_name_given = driver_name;
        let mut requested_driver = if driver_name.is_empty() {
            LOCAL
        } else {
            driver_name
        };
        let _guard = self.lock_name(&name).await;
        let wrap = |e: Error| e.context(format!("create {name}"));
        // Volumes record a managed plugin by its full name (`plugin`, `plugin:latest` and an ID
        // prefix are one driver), as moby records the driver's canonical name.
        let canonical = match requested_driver {
            LOCAL => LOCAL.to_string(),
            other => match self.plugins.volume_driver(other) {
                Ok(Some(managed)) => managed.name,
                _ => other.to_string(),
            },
        };
        let mut driver_name = canonical.as_str();

        let existing = self.record_or_seen(&name)?;
        if let Some((existing, recorded)) = &existing {
            // No driver given: whatever driver has the name answers (moby skips the check).
            if existing.driver == driver_name || driver_name_given.is_empty() {
                if *recorded {
                    return Ok(self.view(existing));
                }
                // Seen in a plugin: adopted below through that driver (its Get finds it).
                requested_driver = existing.driver.as_str();
                driver_name = existing.driver.as_str();
            } else {
                self.check_conflict(existing, &name).await.map_err(wrap)?;
            }
        }
        self.create_with(&name, requested_driver, driver_name, driver_opts, labels)
            .await
            .map_err(wrap)
    }

    /// A create for another driver than the one that has the name: a conflict while that
    /// driver still has it; else the stale record (or sighting) is dropped.
    async fn check_conflict(&self, existing: &VolumeRecord, name: &str) -> Result<()> {
        match self.driver_still_has(existing).await {
            Ok(true) => Err(Error::Conflict(format!(
                "driver '{}' already has volume '{name}': volume name must be unique",
                existing.driver
            ))),
            Ok(false) => self.forget(existing),
            Err(e) => Err(Error::Conflict(format!(
                "found reference to volume '{name}' in driver '{}', but got an error while checking the driver: {e}: volume name must be unique",
                existing.driver
            ))),
        }
    }

    /// Creates `name` with a driver (or adopts it from a plugin that has it) and records it.
    async fn create_with(
        &self,
        name: &str,
        requested_driver: &str,
        driver_name: &str,
        mut driver_opts: BTreeMap<String, String>,
        mut labels: BTreeMap<String, String>,
    ) -> Result<Volume> {
        let driver = self.driver(requested_driver).await?;
        let scope;
        match &driver {
            Driver::Local => {
                LocalDriver::validate_name(name).map_err(Error::InvalidParameter)?;
                LocalDriver::validate_options(&driver_opts).map_err(Error::InvalidParameter)?;
                self.local
                    .create(name, &driver_opts)
                    .map_err(Error::System)?;
                scope = LOCAL.to_string();
            }
            Driver::Plugin { client, .. } => {
                // moby's pattern: a plugin that already has the volume is not asked again, and
                // the volume is taken as it is (moby stores no labels or options for it).
                let known = self
                    .bounded("VolumeDriver.Get", client.get(name))
                    .await
                    .ok()
                    .flatten();
                if known.is_none() {
                    self.bounded("VolumeDriver.Create", client.create(name, &driver_opts))
                        .await
                        .map_err(Error::System)?;
                } else {
                    labels.clear();
                    driver_opts.clear();
                }
                scope = self.scope_of(client).await;
            }
        }
        let record = VolumeRecord {
            name: name.to_string(),
            driver: driver_name.to_string(),
            labels,
            options: driver_opts,
            created_at: chrono::Utc::now(),
            scope,
        };
        let record = match self
            .store
            .create_if_absent(record)
            .map_err(|e| Error::System(e.to_string()))?
        {
            CreateOutcome::Created(record) => {
                if let Driver::Plugin {
                    managed: Some(id), ..
                } = &driver
                {
                    self.plugins.acquire(id);
                }
                record
            }
            CreateOutcome::Existing(record) => record,
        };
        self.unsee(name);
        Ok(self.view(&record))
    }

    /// Whether the record's driver still has the volume; an error when the driver cannot be
    /// asked (it then keeps its claim: better refuse than shadow).
    async fn driver_still_has(&self, record: &VolumeRecord) -> Result<bool> {
        let driver = self.driver(&record.driver).await.map_err(|e| {
            e.context(format!(
                "error while checking if volume \"{}\" exists in driver \"{}\"",
                record.name, record.driver
            ))
        })?;
        match driver {
            Driver::Local => Ok(self.local.exists(&record.name)),
            Driver::Plugin { client, .. } => self.plugin_has(&client, &record.name).await,
        }
    }

    /// moby's `lookupVolume`: an unreachable plugin is an error; any other error from its
    /// `Get` (such as "no such volume") means it does not have the volume.
    async fn plugin_has(&self, client: &VolumeDriverClient, name: &str) -> Result<bool> {
        match tokio::time::timeout(self.options.call_timeout, client.get(name)).await {
            Err(_) => Err(Error::System(format!(
                "VolumeDriver.Get: no answer within {:?}",
                self.options.call_timeout
            ))),
            Ok(Ok(found)) => Ok(found.is_some()),
            Ok(Err(e)) if e.is_unreachable() => Err(Error::System(e.to_string())),
            Ok(Err(_)) => Ok(false),
        }
    }

    /// Drops a record (or sighting) and its plugin reference.
    fn forget(&self, record: &VolumeRecord) -> Result<()> {
        self.unsee(&record.name);
        if self
            .store
            .remove(&record.name)
            .map_err(|e| Error::System(e.to_string()))?
            && record.driver != LOCAL
        {
            if let Some(id) = self.plugins.plugin_id_for_driver(&record.driver) {
                self.plugins.release_reference(&id);
            }
        }
        Ok(())
    }

    /// `GET /volumes/{name}`.
    pub async fn inspect(&self, name: &str) -> Result<Volume> {
        let Some(record) = self.record(name)? else {
            // Not created through berth: a plugin may still have it (moby asks them all).
            return self.inspect_unrecorded(name).await;
        };
        if record.driver == LOCAL {
            return Ok(self.view(&record));
        }
        let driver = self.driver(&record.driver).await.map_err(|e| {
            e.context(format!(
                "get {name}: error while checking if volume \"{name}\" exists in driver \"{}\"",
                record.driver
            ))
        })?;
        let Driver::Plugin { client, .. } = &driver else {
            return Ok(self.view(&record));
        };
        let found = match tokio::time::timeout(self.options.call_timeout, client.get(name)).await {
            Err(_) => {
                return Err(Error::System(format!(
                    "get {name}: VolumeDriver.Get: no answer within {:?}",
                    self.options.call_timeout
                )))
            }
            Ok(Err(e)) if e.is_unreachable() => {
                return Err(Error::System(format!("get {name}: {e}")))
            }
            // Any other answer but a volume means the driver does not have it (moby).
            Ok(Err(_)) => None,
            Ok(Ok(found)) => found,
        };
        let mut volume = self.view(&record);
        match found {
            Some(v) => {
                volume.mountpoint = v.mountpoint.clone();
                volume.status = v.status.clone().or_else(|| Some(serde_json::Map::new()));
                if let Some(created) = v.created_at {
                    volume.created_at = created;
                }
            }
            None => return Err(no_such_volume(name)),
        }
        Ok(volume)
    }

    /// Asks every plugin driver's `Get` for a volume berth has no record of, each within the
    /// call deadline.
    async fn inspect_unrecorded(&self, name: &str) -> Result<Volume> {
        let drivers = self.plugin_drivers().await.drivers;
        let answers = join_all(drivers.iter().map(|(driver, client)| async move {
            let found = self.plugin_volume(client, name).await;
            (driver.clone(), client, found)
        }))
        .await;
        for (driver, client, found) in answers {
            if let Some(v) = found {
                self.see(name, &driver);
                return Ok(Volume {
                    created_at: v
                        .created_at
                        .clone()
                        .unwrap_or_else(|| ZERO_TIME.to_string()),
                    driver,
                    labels: None,
                    mountpoint: v.mountpoint.clone(),
                    name: v.name.clone(),
                    options: None,
                    scope: self.scope_of(client).await,
                    status: v.status.clone().or_else(|| Some(serde_json::Map::new())),
                });
            }
        }
        Err(no_such_volume(name))
    }

    async fn plugin_volume(&self, client: &VolumeDriverClient, name: &str) -> Option<DriverVolume> {
        tokio::time::timeout(self.options.call_timeout, client.get(name))
            .await
            .ok()
            .and_then(|r| r.ok())
            .flatten()
    }

    /// `GET /volumes`: every driver is asked in parallel, each within the deadline; a driver
    /// that fails or does not answer in time becomes a warning and its recorded volumes are
    /// listed from the store.
    pub async fn list(&self, filter: &ListFilter) -> Result<VolumeListResponse> {
        let snapshot = self.records();
        let records: HashMap<&str, &VolumeRecord> =
            snapshot.iter().map(|r| (r.name.as_str(), &**r)).collect();
        // Collected in precedence order (local, then each driver's answer, then recorded
        // volumes of drivers that did not answer); sorted and de-duplicated at the end, the
        // first of a name winning.
        let mut volumes: Vec<Volume> = Vec::with_capacity(snapshot.len());

        for record in snapshot.iter().filter(|r| r.driver == LOCAL) {
            volumes.push(self.view(record));
        }

        let PluginDrivers {
            drivers,
            mut warnings,
            unactivated,
        } = self.plugin_drivers().await;

        let answers = join_all(drivers.iter().map(|(name, client)| async move {
            let listed = self.bounded("VolumeDriver.List", client.list()).await;
            let scope = match listed {
                Ok(_) => self.scope_of(client).await,
                Err(_) => LOCAL.to_string(),
            };
            (name.clone(), listed, scope)
        }))
        .await;

        let mut answered: BTreeSet<String> = BTreeSet::new();
        // Drivers that were asked (or failed to activate): their recorded volumes are listed
        // even when they do not answer. Volumes of disabled or missing drivers are not, as
        // with dockerd.
        let mut asked: BTreeSet<String> = drivers.iter().map(|(n, _)| n.clone()).collect();
        asked.extend(unactivated);
        for (driver, listed, scope) in answers {
            match listed {
                Ok(found) => {
                    answered.insert(driver.clone());
                    volumes.reserve(found.len());
                    for v in found {
                        if let Some(volume) = self.plugin_volume_view(&records, &driver, &scope, v)
                        {
                            volumes.push(volume);
                        }
                    }
                }
                Err(e) => warnings.push(format!("list {driver}: {e}")),
            }
        }
        // Recorded volumes of drivers that were asked but did not answer (failed, frozen).
        for record in snapshot.iter() {
            if record.driver != LOCAL
                && asked.contains(&record.driver)
                && !answered.contains(&record.driver)
            {
                volumes.push(self.recorded_view(record));
            }
        }
        // Stable: of equal names the first collected stays.
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        volumes.dedup_by(|later, first| later.name == first.name);

        let in_use = self.mounted_names();
        volumes.retain(|volume| keep(volume, filter, &in_use));
        Ok(VolumeListResponse {
            volumes,
            warnings: (!warnings.is_empty()).then_some(warnings),
        })
    }

    /// The list entry of a volume a driver reported; none when the name is recorded for
    /// another driver.
    fn plugin_volume_view(
        &self,
        records: &HashMap<&str, &VolumeRecord>,
        driver: &str,
        scope: &str,
        found: DriverVolume,
    ) -> Option<Volume> {
        let record = records.get(found.name.as_str()).copied();
        if let Some(record) = record {
            if record.driver != driver {
                log::warn!(
                    "volume {} reported by driver {driver} belongs to driver {}; not listed",
                    found.name,
                    record.driver
                );
                return None;
            }
        }
        Some(Volume {
            created_at: found.created_at.unwrap_or_else(|| ZERO_TIME.to_string()),
            driver: driver.to_string(),
            labels: record.and_then(|r| non_empty(&r.labels)),
            mountpoint: found.host_mountpoint,
            name: found.name,
            options: record.and_then(|r| non_empty(&r.options)),
            scope: scope.to_string(),
            status: None,
        })
    }

    /// The API view of a record. Plugin volumes show no mountpoint until inspected or
    /// mounted (moby calls no `VolumeDriver.Path` for create or list of recorded volumes:
    /// `TestExternalVolumeDriverPathCalls`).
    fn view(&self, record: &VolumeRecord) -> Volume {
        let mountpoint = match record.driver.as_str() {
            LOCAL => self.local.mountpoint(&record.name).display().to_string(),
            _ => String::new(),
        };
        Volume {
            created_at: format_time(&record.created_at),
            driver: record.driver.clone(),
            labels: non_empty(&record.labels),
            mountpoint,
            name: record.name.clone(),
            options: non_empty(&record.options),
            scope: record.scope.clone(),
            status: None,
        }
    }

    fn recorded_view(&self, record: &VolumeRecord) -> Volume {
        Volume {
            created_at: ZERO_TIME.to_string(),
            mountpoint: String::new(),
            ..self.view(record)
        }
    }

    fn mounted_names(&self) -> BTreeSet<String> {
        self.mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// `DELETE /volumes/{name}`.
    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let _guard = self.lock_name(name).await;
        let Some((record, _)) = self.record_or_seen(name)? else {
            if force {
                return Ok(());
            }
            return Err(no_such_volume(name));
        };
        let users: Vec<String> = self
            .mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        if !users.is_empty() {
            return Err(Error::Conflict(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        // A driver that cannot be asked (disabled, gone) keeps its volume, forced or not: the
        // record is what keeps the plugin "in use".
        let driver = self.driver(&record.driver).await.map_err(|e| {
            e.context(format!(
                "get {name}: error while checking if volume \"{name}\" exists in driver \"{}\"",
                record.driver
            ))
        })?;
        let removed = match driver {
            Driver::Local => self.local.remove(name),
            Driver::Plugin { client, .. } => {
                // A plugin that forgot the volume: nothing to remove there.
                match self.plugin_has(&client, name).await {
                    Ok(false) if force => Ok(()),
                    Ok(false) => return Err(no_such_volume(name)),
                    _ => {
                        self.bounded("VolumeDriver.Remove", client.remove(name))
                            .await
                    }
                }
            }
        };
        match removed {
            Ok(()) => self.forget(&record),
            Err(e) => {
                if force {
                    self.forget(&record)?;
                }
                Err(Error::System(format!("remove {name}: {e}")))
            }
        }
    }

    /// `POST /volumes/prune`: unused local volumes created without driver options; from API
    /// 1.42 only anonymous ones unless `all`.
    pub async fn prune(&self, filter: &PruneFilter) -> Result<VolumePruneReport> {
        if self.prune_running.swap(true, Ordering::SeqCst) {
            return Err(Error::Conflict(
                "a prune operation is already running".into(),
            ));
        }
        let result = self.prune_locked(filter).await;
        self.prune_running.store(false, Ordering::SeqCst);
        result
    }

    async fn prune_locked(&self, filter: &PruneFilter) -> Result<VolumePruneReport> {
        let in_use = self.mounted_names();
        let mut report = VolumePruneReport {
            volumes_deleted: Vec::new(),
            space_reclaimed: 0,
        };
        for record in self.records() {
            if record.driver != LOCAL || !record.options.is_empty() || in_use.contains(&record.name)
            {
                continue;
            }
            if !filter.all && !record.labels.contains_key(ANONYMOUS_LABEL) {
                continue;
            }
            let labels = Some(&record.labels);
            if !labels_match(labels, &filter.labels) || labels_match_any(labels, &filter.not_labels)
            {
                continue;
            }
            let _guard = self.lock_name(&record.name).await;
            let size = self.local.usage(&record.name);
            match self.local.remove(&record.name) {
                Ok(()) => {
                    self.forget(&record)?;
                    report.volumes_deleted.push(record.name.clone());
                    report.space_reclaimed += size;
                }
                Err(e) => log::warn!("prune: removing volume {}: {e}", record.name),
            }
        }
        Ok(report)
    }

    /// berth extension `POST /volumes/{name}/mount`: mounts for caller `id` and returns the
    /// host path. References are counted per ID, as dockerd counts containers.
    pub async fn mount(&self, name: &str, id: &str) -> Result<String> {
        let _guard = self.lock_name(name).await;
        let Some(record) = self.record(name)? else {
            return Err(no_such_volume(name));
        };
        let first = self
            .mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .is_none_or(|ids| ids.is_empty());
        let path = match self.driver(&record.driver).await? {
            Driver::Local => if first {
                self.local.mount(name).map_err(Error::System)?
            } else {
                self.local.mountpoint(name)
            }
            .display()
            .to_string(),
            Driver::Plugin { client, .. } => self
                .bounded("VolumeDriver.Mount", client.mount(name, id))
                .await
                .map_err(|e| Error::System(format!("mount {name}: {e}")))?,
        };
        self.mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .insert(id.to_string());
        Ok(path)
    }

    /// berth extension `POST /volumes/{name}/unmount`.
    pub async fn unmount(&self, name: &str, id: &str) -> Result<()> {
        let _guard = self.lock_name(name).await;
        let Some(record) = self.record(name)? else {
            return Err(no_such_volume(name));
        };
        let last = {
            let mut mounts = self.mounts.lock().unwrap_or_else(|p| p.into_inner());
            let ids = mounts.entry(name.to_string()).or_default();
            if !ids.remove(id) {
                return Err(Error::Conflict(format!(
                    "unmount {name}: not mounted by {id}"
                )));
            }
            ids.is_empty()
        };
        match self.driver(&record.driver).await? {
            Driver::Local => {
                if last {
                    self.local.unmount(name).map_err(Error::System)?;
                }
            }
            Driver::Plugin { client, .. } => self
                .bounded("VolumeDriver.Unmount", client.unmount(name, id))
                .await
                .map_err(|e| Error::System(format!("unmount {name}: {e}")))?,
        }
        Ok(())
    }
}

/// moby's volume list filters.
fn keep(volume: &Volume, filter: &ListFilter, in_use: &BTreeSet<String>) -> bool {
    if let Some(dangling) = filter.dangling {
        if dangling == in_use.contains(&volume.name) {
            return false;
        }
    }
    if !filter.drivers.is_empty() && !filter.drivers.contains(&volume.driver) {
        return false;
    }
    if !filter.names.is_empty() && !filter.names.iter().any(|n| name_matches(n, &volume.name)) {
        return false;
    }
    labels_match(volume.labels.as_ref(), &filter.labels)
}

/// Exact, or a regular expression found anywhere (moby's `filters.Match`).
fn name_matches(pattern: &str, name: &str) -> bool {
    pattern == name || regex::Regex::new(pattern).is_ok_and(|re| re.is_match(name))
}

/// moby's `<op> <name>: <err>` prefix; an empty name leaves no space (`get: no such volume`).
fn op(op: &str, name: &str) -> String {
    if name.is_empty() {
        op.to_string()
    } else {
        format!("{op} {name}")
    }
}

fn no_such_volume(name: &str) -> Error {
    Error::NotFound(format!("{}: no such volume", op("get", name)))
}

fn non_empty(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then(|| map.clone())
}

/// `label=k` requires the key; `label=k=v` the key with that value; all must hold.
fn labels_match(labels: Option<&BTreeMap<String, String>>, wanted: &[String]) -> bool {
    wanted.iter().all(|w| label_matches(labels, w))
}

fn labels_match_any(labels: Option<&BTreeMap<String, String>>, wanted: &[String]) -> bool {
    wanted.iter().any(|w| label_matches(labels, w))
}

fn label_matches(labels: Option<&BTreeMap<String, String>>, wanted: &str) -> bool {
    let Some(labels) = labels else {
        return false;
    };
    match wanted.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(wanted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_filters_need_every_key_and_value() {
        let l = labels(&[("team", "a"), ("tier", "")]);
        assert!(labels_match(Some(&l), &["team".into()]));
        assert!(labels_match(Some(&l), &["team=a".into(), "tier".into()]));
        assert!(!labels_match(Some(&l), &["team=b".into()]));
        assert!(!labels_match(None, &["team".into()]));
        assert!(labels_match_any(Some(&l), &["nope".into(), "tier=".into()]));
    }

    #[test]
    fn names_match_exactly_or_by_regexp() {
        assert!(name_matches("ftest", "reftest1"));
        assert!(name_matches("^a$", "a"));
        assert!(!name_matches("^a$", "ab"));
        assert!(name_matches("[", "["));
    }
}
