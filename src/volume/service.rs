//! The volume service: `/volumes` semantics over the metadata store and [`VolumeDriver`]s: the
//! built-in `local` driver and plugins (managed and legacy) found through the plugin getter.
//! Each operation on a driver runs under one deadline, so one hung driver cannot stall
//! requests about others.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;

use super::local::LocalDriver;
use super::store::{CreateOutcome, VolumeRecord, VolumeStore};
use super::types::{
    format_time, UsageData, Volume, VolumeListResponse, VolumePruneReport, ANONYMOUS_LABEL,
    ZERO_TIME,
};
use crate::drivers::volume::{Created, DriverVolume, VolumeDriver, VolumeDriverClient};
use crate::drivers::AdapterCache;
use crate::error::{Error, Result};
use crate::events::{Audience, Event, EventBus};
use crate::plugin::getter::{Capability, Enumerated, Mode, PluginGetter};
use crate::rpc::client::within;

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

pub struct VolumeService {
    store: Arc<VolumeStore>,
    local: Arc<LocalDriver>,
    plugins: Arc<PluginGetter>,
    /// VolumeDriver adapters of plugins, kept per plugin activation.
    adapters: AdapterCache<VolumeDriverClient>,
    /// Plugin volumes berth did not create but found by asking the plugins (inspect), by name
    /// → driver: moby's in-memory name cache. Their names are taken for other drivers while
    /// the plugin still has them, and a create with their driver adopts them as they are.
    seen: Mutex<HashMap<String, String>>,
    /// Mount references by volume: the caller IDs of `POST /volumes/{name}/mount`.
    mounts: Mutex<HashMap<String, BTreeSet<String>>>,
    /// One operation per volume name at a time.
    name_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    prune_running: AtomicBool,
    /// Where create, destroy, prune, mount and unmount are reported (`docker events`).
    events: Arc<EventBus>,
    /// One `system df` size walk at a time, whatever the number of clients asking.
    size_walks: Arc<tokio::sync::Semaphore>,
}

impl VolumeService {
    pub fn open(
        data_root: &Path,
        plugins: Arc<PluginGetter>,
        events: Arc<EventBus>,
    ) -> Result<VolumeService> {
        let root = data_root.join("volumes");
        let store = Arc::new(
            VolumeStore::open(&root.join("metadata.db"))
                .map_err(|e| Error::System(e.to_string()))?,
        );
        let counted = store.clone();
        crate::metrics::gauge_source(
            "volumes",
            "Volumes berth records, by driver",
            Some("driver"),
            move || {
                let mut by_driver: BTreeMap<String, i64> = BTreeMap::new();
                for record in counted.snapshot() {
                    *by_driver.entry(record.driver.clone()).or_default() += 1;
                }
                by_driver.into_iter().collect()
            },
        );
        let local = LocalDriver::new(&root);
        if let Err(e) = local.restore() {
            log::warn!("restoring local volumes: {e}");
        }
        let service = VolumeService {
            store,
            local: Arc::new(local),
            plugins,
            adapters: AdapterCache::default(),
            seen: Mutex::new(HashMap::new()),
            mounts: Mutex::new(HashMap::new()),
            name_locks: Mutex::new(HashMap::new()),
            prune_running: AtomicBool::new(false),
            events,
            size_walks: Arc::new(tokio::sync::Semaphore::new(1)),
        };
        Ok(service)
    }

    /// The plugins volumes hold references on, each name once per volume: with the networks'
    /// (`NetworkService::plugin_references`), what the daemon hands
    /// [`PluginGetter::set_references`] at start-up (volume records outlive the daemon).
    pub fn plugin_references(&self) -> Vec<String> {
        self.records()
            .iter()
            .filter(|r| r.driver != LOCAL)
            .map(|r| r.driver.clone())
            .collect()
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

    /// The driver `name`: the built-in `local` one, or a plugin through the getter (with
    /// [`Mode::Acquire`] the caller owes a [`release`](Self::release) unless it records a
    /// volume for it).
    async fn driver(&self, name: &str, mode: Mode) -> Result<Arc<dyn VolumeDriver>> {
        if name == LOCAL {
            return Ok(self.local.clone());
        }
        let plugin = self
            .plugins
            .get(name, Capability::VolumeDriver, mode)
            .await
            .map_err(|e| {
                Error::from(e).context(format!("error looking up volume plugin {name}"))
            })?;
        Ok(self
            .adapters
            .adapter(&plugin, VolumeDriverClient::for_plugin))
    }

    /// Gives back the reference a volume of driver `name` held on its plugin.
    fn release(&self, name: &str) {
        if name != LOCAL {
            self.plugins.release(name);
        }
    }

    /// Runs one user-visible operation on `driver` under one deadline: the plugin's own
    /// (`enable --timeout`), else the daemon's call timeout.
    async fn operation<T>(
        &self,
        driver: &dyn VolumeDriver,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let budget = driver.call_timeout().unwrap_or(self.plugins.call_timeout());
        within(budget, work).await
    }

    /// moby's `lookupVolume`: the driver's `Get`. A driver that cannot be reached, or whose
    /// answer was too large to read, is an error; any other error (such as "no such volume")
    /// means it does not have the volume.
    async fn lookup(&self, driver: &dyn VolumeDriver, name: &str) -> Result<Option<DriverVolume>> {
        match driver.get(name).await {
            Ok(found) => Ok(found),
            Err(e) if e.is_unreachable() || e.is_too_large() => Err(Error::System(e.to_string())),
            Err(_) => Ok(None),
        }
    }

    /// `POST /volumes/create`.
    pub async fn create(
        &self,
        name: &str,
        driver_name: &str,
        driver_opts: Option<BTreeMap<String, String>>,
        mut labels: Option<BTreeMap<String, String>>,
        label_anonymous: bool,
    ) -> Result<Volume> {
        let anonymous = name.is_empty();
        let name = if anonymous {
            crate::fsutil::random_hex(32)
        } else {
            name.to_string()
        };
        if anonymous && label_anonymous {
            labels
                .get_or_insert_with(BTreeMap::new)
                .insert(ANONYMOUS_LABEL.to_string(), String::new());
        }
        let _guard = self.lock_name(&name).await;
        let wrap = |e: Error| e.context(format!("create {name}"));
        let mut driver_name = if driver_name.is_empty() {
            None
        } else {
            Some(driver_name.to_string())
        };
        if let Some((existing, recorded)) = self.record_or_seen(&name)? {
            // No driver given: whatever driver has the name answers (moby skips the check).
            // Else the driver's canonical name decides (`plugin`, `plugin:latest` and an ID
            // prefix are one driver), and a driver that cannot be found fails first, as in
            // moby's conflict check.
            let same = match &driver_name {
                None => true,
                Some(given) => {
                    self.driver(given, Mode::Lookup).await.map_err(wrap)?.name() == existing.driver
                }
            };
            if same {
                if recorded {
                    self.created(&existing.name, &existing.driver, false);
                    return Ok(self.view(&existing));
                }
                // Seen in a plugin: adopted below through that driver (its Get finds it).
                driver_name = Some(existing.driver.clone());
            } else {
                self.check_conflict(&existing, &name).await.map_err(wrap)?;
            }
        }
        let driver_name = driver_name.unwrap_or_else(|| LOCAL.to_string());
        let (volume, new) = self
            .create_with(&name, &driver_name, driver_opts, labels)
            .await
            .map_err(wrap)?;
        self.created(&volume.name, &volume.driver, new);
        Ok(volume)
    }

    /// dockerd 20.10 reports every successful create; current daemons only those that made
    /// the volume.
    fn created(&self, name: &str, driver: &str, new: bool) {
        let event = Event::volume(name, "create", [("driver", driver)]);
        let audience = if new {
            Audience::All
        } else {
            Audience::BeforeApi142
        };
        self.events.publish(event.for_audience(audience));
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

    /// Creates `name` with a driver (or adopts it from a plugin that has it) and records it;
    /// `true` when this call recorded it. The volume holds a reference on its plugin from
    /// here on.
    async fn create_with(
        &self,
        name: &str,
        driver_name: &str,
        driver_opts: Option<BTreeMap<String, String>>,
        labels: Option<BTreeMap<String, String>>,
    ) -> Result<(Volume, bool)> {
        let driver = self.driver(driver_name, Mode::Acquire).await?;
        let created = self.record_new(&*driver, name, driver_opts, labels).await;
        if !matches!(created, Ok((_, true))) {
            self.release(driver.name());
        }
        self.unsee(name);
        created
    }

    /// The driver's part of a create, then the record; `true` when this call recorded it.
    async fn record_new(
        &self,
        driver: &dyn VolumeDriver,
        name: &str,
        mut driver_opts: Option<BTreeMap<String, String>>,
        mut labels: Option<BTreeMap<String, String>>,
    ) -> Result<(Volume, bool)> {
        driver.validate(name, driver_opts.as_ref().unwrap_or(&BTreeMap::new()))?;
        let (created, scope) = self
            .operation(driver, async {
                let created = driver.create(name, driver_opts.as_ref()).await?;
                Ok::<_, Error>((created, driver.scope().await))
            })
            .await?;
        if created == Created::Existing {
            // moby records no labels or options for a volume the plugin already had.
            labels = None;
            driver_opts = None;
        }
        let record = VolumeRecord {
            name: name.to_string(),
            driver: driver.name().to_string(),
            labels_sent: labels.is_some(),
            options_sent: driver_opts.is_some(),
            labels: labels.unwrap_or_default(),
            options: driver_opts.unwrap_or_default(),
            created_at: chrono::Utc::now(),
            scope,
        };
        match self
            .store
            .create_if_absent(record)
            .map_err(|e| Error::System(e.to_string()))?
        {
            CreateOutcome::Created(record) => Ok((self.view(&record), true)),
            CreateOutcome::Existing(record) => Ok((self.view(&record), false)),
        }
    }

    /// Whether the record's driver still has the volume; an error when the driver cannot be
    /// asked (it then keeps its claim: better refuse than shadow).
    async fn driver_still_has(&self, record: &VolumeRecord) -> Result<bool> {
        let driver = self
            .driver(&record.driver, Mode::Lookup)
            .await
            .map_err(|e| {
                e.context(format!(
                    "error while checking if volume \"{}\" exists in driver \"{}\"",
                    record.name, record.driver
                ))
            })?;
        let found = self
            .operation(&*driver, self.lookup(&*driver, &record.name))
            .await?;
        Ok(found.is_some())
    }

    /// Drops a record (or sighting) and its plugin reference.
    fn forget(&self, record: &VolumeRecord) -> Result<()> {
        self.unsee(&record.name);
        if self
            .store
            .remove(&record.name)
            .map_err(|e| Error::System(e.to_string()))?
        {
            self.release(&record.driver);
        }
        Ok(())
    }

    /// The driver of a recorded volume, for an operation on it (`op` names it in errors).
    async fn driver_of(&self, record: &VolumeRecord, op: &str) -> Result<Arc<dyn VolumeDriver>> {
        self.driver(&record.driver, Mode::Lookup)
            .await
            .map_err(|e| {
                e.context(format!(
                    "{op} {}: error while checking if volume \"{}\" exists in driver \"{}\"",
                    record.name, record.name, record.driver
                ))
            })
    }

    /// `GET /volumes/{name}`.
    pub async fn inspect(&self, name: &str) -> Result<Volume> {
        let Some(record) = self.record(name)? else {
            // Not created through berth: a plugin may still have it (moby asks them all).
            return self.inspect_unrecorded(name).await;
        };
        let found = self.reported(&record).await?;
        let mut volume = self.view(&record);
        volume.mountpoint = found.mountpoint;
        volume.status = found.status;
        if let Some(created) = found.created_at {
            volume.created_at = created;
        }
        Ok(volume)
    }

    /// A recorded volume as its driver reports it now, with the host path of its data, and the
    /// driver's name (what the gateway shows other engines).
    pub async fn driver_view(&self, name: &str) -> Result<(String, DriverVolume)> {
        let Some(record) = self.record(name)? else {
            return Err(no_such_volume(name));
        };
        let found = self.reported(&record).await?;
        Ok((record.driver, found))
    }

    /// What the driver of a recorded volume reports about it now.
    async fn reported(&self, record: &VolumeRecord) -> Result<DriverVolume> {
        let name = &record.name;
        let driver = self.driver_of(record, "get").await?;
        self.operation(&*driver, self.lookup(&*driver, name))
            .await
            .map_err(|e| e.context(format!("get {name}")))?
            .ok_or_else(|| no_such_volume(name))
    }

    /// Every volume the driver `driver_name` has, as it reports them, with host paths.
    pub async fn driver_list(&self, driver_name: &str) -> Result<Vec<DriverVolume>> {
        let driver = self.driver(driver_name, Mode::Lookup).await?;
        self.operation(&*driver, driver.list())
            .await
            .map_err(|e| Error::from(e).context(format!("list {driver_name}")))
    }

    /// Asks every plugin driver's `Get` for a volume berth has no record of, within the list
    /// deadline.
    async fn inspect_unrecorded(&self, name: &str) -> Result<Volume> {
        let drivers = self.plugin_drivers().await.0;
        let answers = within(
            self.plugins.call_timeout(),
            join_all(drivers.iter().map(|driver| async move {
                let found = driver.get(name).await.ok().flatten();
                (driver, found)
            })),
        )
        .await;
        for (driver, found) in answers {
            if let Some(v) = found {
                self.see(name, driver.name());
                return Ok(Volume {
                    created_at: v.created_at.unwrap_or_else(|| ZERO_TIME.to_string()),
                    driver: driver.name().to_string(),
                    labels: None,
                    mountpoint: v.mountpoint,
                    name: v.name,
                    options: None,
                    scope: self.operation(&**driver, driver.scope()).await,
                    status: v.status,
                    usage_data: None,
                });
            }
        }
        Err(no_such_volume(name))
    }

    /// Every plugin volume driver to ask for a list or a volume, and warnings
    /// (`list <driver>: …`) for those that cannot be asked, by name.
    async fn plugin_drivers(&self) -> (Vec<Arc<dyn VolumeDriver>>, Vec<(String, String)>) {
        let Enumerated { plugins, failed } = self.plugins.all(Capability::VolumeDriver).await;
        let drivers = plugins
            .iter()
            .map(|p| {
                self.adapters.adapter(p, VolumeDriverClient::for_plugin) as Arc<dyn VolumeDriver>
            })
            .collect();
        (drivers, failed)
    }

    /// `GET /volumes`: every driver is asked in parallel, all within the list deadline; a
    /// driver that fails or does not answer in time becomes a warning and its recorded volumes
    /// are listed from the store.
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

        let (drivers, failed) = self.plugin_drivers().await;
        let answers = within(
            self.plugins.call_timeout(),
            join_all(drivers.iter().map(|driver| async move {
                let listed = driver.list().await;
                let scope = match listed {
                    Ok(_) => driver.scope().await,
                    Err(_) => LOCAL.to_string(),
                };
                (driver.name(), listed, scope)
            })),
        )
        .await;

        let mut warnings: Vec<String> = Vec::new();
        // Drivers that were asked (or could not be): their recorded volumes are listed even
        // when they do not answer. Volumes of disabled or missing drivers are not, as with
        // dockerd.
        let mut asked: BTreeSet<&str> = drivers.iter().map(|d| d.name()).collect();
        for (name, error) in &failed {
            warnings.push(format!("list {name}: {error}"));
            asked.insert(name);
        }
        let mut answered: BTreeSet<&str> = BTreeSet::new();
        for (driver, listed, scope) in answers {
            match listed {
                Ok(found) => {
                    answered.insert(driver);
                    volumes.reserve(found.len());
                    for v in found {
                        if let Some(volume) = self.plugin_volume_view(&records, driver, &scope, v) {
                            volumes.push(volume);
                        }
                    }
                }
                Err(e) => warnings.push(format!("list {driver}: {e}")),
            }
        }
        // Recorded volumes of drivers that were asked but did not answer (failed, frozen).
        for record in snapshot.iter() {
            let driver = record.driver.as_str();
            if driver != LOCAL && asked.contains(driver) && !answered.contains(driver) {
                volumes.push(self.view(record));
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
            labels: record.and_then(|r| shown(&r.labels, r.labels_sent)),
            mountpoint: found.host_mountpoint,
            name: found.name,
            options: record.and_then(|r| shown(&r.options, r.options_sent)),
            scope: scope.to_string(),
            status: None,
            usage_data: None,
        })
    }

    /// The API view of a record. Plugin volumes show no mountpoint until inspected or
    /// mounted (moby calls no `VolumeDriver.Path` for create or list of recorded volumes:
    /// `TestExternalVolumeDriverPathCalls`); the built-in driver's are fixed paths. Nor do
    /// they have a date of their own: dockerd shows the one their driver gives (inspect,
    /// list), else Go's zero time, also in the answer to a create.
    fn view(&self, record: &VolumeRecord) -> Volume {
        let (mountpoint, created_at) = match record.driver.as_str() {
            LOCAL => (
                self.local
                    .known_mountpoint(&record.name)
                    .unwrap_or_default(),
                format_time(&record.created_at),
            ),
            _ => (String::new(), ZERO_TIME.to_string()),
        };
        Volume {
            created_at,
            driver: record.driver.clone(),
            labels: shown(&record.labels, record.labels_sent),
            mountpoint,
            name: record.name.clone(),
            options: shown(&record.options, record.options_sent),
            scope: record.scope.clone(),
            status: None,
            usage_data: None,
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
        let driver = self.driver_of(&record, "get").await?;
        let removed = self
            .operation(&*driver, async {
                // A driver that forgot the volume: nothing to remove there.
                match self.lookup(&*driver, name).await {
                    Ok(None) if force => Ok(()),
                    Ok(None) => Err(no_such_volume(name)),
                    _ => driver
                        .remove(name)
                        .await
                        .map_err(|e| Error::System(format!("remove {name}: {e}"))),
                }
            })
            .await;
        match removed {
            Ok(()) => {
                self.forget(&record)?;
                self.destroyed(&record, Audience::All);
                Ok(())
            }
            Err(e @ Error::NotFound(_)) => Err(e),
            Err(e) => {
                if force {
                    self.forget(&record)?;
                }
                Err(e)
            }
        }
    }

    fn destroyed(&self, record: &VolumeRecord, audience: Audience) {
        let event = Event::volume(&record.name, "destroy", [("driver", &*record.driver)]);
        self.events.publish(event.for_audience(audience));
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
        let report = result?;
        let reclaimed = report.space_reclaimed.to_string();
        self.events
            .publish(Event::volume("", "prune", [("reclaimed", reclaimed)]));
        Ok(report)
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
            let driver = self.driver_of(&record, "prune").await?;
            let size = driver.usage(&record.name).unwrap_or(0);
            match driver.remove(&record.name).await {
                Ok(()) => {
                    self.forget(&record)?;
                    // 20.10 reported only the prune itself.
                    self.destroyed(&record, Audience::FromApi142);
                    report.volumes_deleted.push(record.name.clone());
                    report.space_reclaimed += size;
                }
                Err(e) => log::warn!("prune: removing volume {}: {e}", record.name),
            }
        }
        Ok(report)
    }

    /// `GET /system/df`: the local volumes created without options (what dockerd measures),
    /// by name, with their size and the number of users that have them mounted. Sizes are
    /// measured on a blocking thread, one walk at a time; raising `stop` (the client went
    /// away) or dropping the future stops the walk at its next file.
    pub async fn disk_usage(&self, stop: Arc<AtomicBool>) -> Result<Vec<Volume>> {
        let mut volumes: Vec<Volume> = self
            .records()
            .iter()
            .filter(|r| r.driver == LOCAL && r.options.is_empty())
            .map(|r| Volume {
                mountpoint: self.local.mountpoint(&r.name).display().to_string(),
                ..self.view(r)
            })
            .collect();
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<String> = volumes.iter().map(|v| v.name.clone()).collect();
        let permit = self
            .size_walks
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::System(e.to_string()))?;
        let cancel = CancelOnDrop(stop);
        let cancelled = cancel.flag();
        let local = self.local.clone();
        let sizes = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let started = std::time::Instant::now();
            log::debug!("system df: measuring {} volumes", names.len());
            let stop = || cancelled.load(Ordering::Relaxed);
            let sizes = names
                .iter()
                .map(|name| match local.size(name, &stop) {
                    Ok(size) => size as i64,
                    Err(e) => {
                        if !stop() {
                            log::warn!("could not determine size of volume {name}: {e}");
                        }
                        -1
                    }
                })
                .collect::<Vec<i64>>();
            if stop() {
                log::info!("system df: stopped measuring, the client went away");
            } else {
                log::debug!(
                    "system df: measured {} volumes in {:?}",
                    names.len(),
                    started.elapsed()
                );
            }
            sizes
        })
        .await
        .map_err(|e| Error::System(format!("measuring volumes: {e}")))?;
        let mounts = self.mounts.lock().unwrap_or_else(|p| p.into_inner());
        for (volume, size) in volumes.iter_mut().zip(sizes) {
            let ref_count = mounts.get(&volume.name).map_or(0, |ids| ids.len()) as i64;
            volume.usage_data = Some(UsageData { ref_count, size });
        }
        Ok(volumes)
    }

    /// berth extension `POST /volumes/{name}/mount`: mounts for caller `id` and returns the
    /// host path. References are counted per ID, as dockerd counts containers.
    pub async fn mount(&self, name: &str, id: &str) -> Result<String> {
        let _guard = self.lock_name(name).await;
        let Some(record) = self.record(name)? else {
            return Err(no_such_volume(name));
        };
        let driver = self.driver(&record.driver, Mode::Lookup).await?;
        let path = self
            .operation(&*driver, driver.mount(name, id))
            .await
            .map_err(|e| Error::from(e).context(format!("mount {name}")))?;
        self.mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .insert(id.to_string());
        // What dockerd reports when a container mounts a volume; the caller stands for the
        // container, and there is no destination inside one.
        self.events.publish(Event::volume(
            name,
            "mount",
            [
                ("container", id),
                ("destination", ""),
                ("driver", &record.driver),
                ("propagation", ""),
                ("read/write", "true"),
            ],
        ));
        Ok(path)
    }

    /// berth extension `POST /volumes/{name}/unmount`.
    pub async fn unmount(&self, name: &str, id: &str) -> Result<()> {
        let _guard = self.lock_name(name).await;
        let Some(record) = self.record(name)? else {
            return Err(no_such_volume(name));
        };
        {
            let mut mounts = self.mounts.lock().unwrap_or_else(|p| p.into_inner());
            if !mounts.entry(name.to_string()).or_default().remove(id) {
                return Err(Error::Conflict(format!(
                    "unmount {name}: not mounted by {id}"
                )));
            }
        }
        let driver = self.driver(&record.driver, Mode::Lookup).await?;
        self.operation(&*driver, driver.unmount(name, id))
            .await
            .map_err(|e| Error::from(e).context(format!("unmount {name}")))?;
        self.events.publish(Event::volume(
            name,
            "unmount",
            [("container", id), ("driver", &record.driver)],
        ));
        Ok(())
    }
}

/// Raises its flag when dropped: a blocking worker watching the flag stops.
struct CancelOnDrop(Arc<AtomicBool>);

impl CancelOnDrop {
    fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
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

/// A record's labels or options as the API shows them: `null` unless the client sent some
/// (even an empty map).
fn shown(map: &BTreeMap<String, String>, sent: bool) -> Option<BTreeMap<String, String>> {
    (sent || !map.is_empty()).then(|| map.clone())
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
    use crate::volume::string_map as labels;

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
