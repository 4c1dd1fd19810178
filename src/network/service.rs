//! The network service behind `/networks`: libnetwork's semantics over the [`NetworkStore`],
//! NetworkDriver plugins and address managers (the built-in `default` IPAM and IpamDriver
//! plugins), all reached through the plugin getter, with network namespaces as the consumers
//! that join networks.
//!
//! Every operation that calls plugins runs under one deadline and follows libnetwork's call
//! order; a failure undoes what was done (a failed `CreateNetwork` releases the pools it was
//! given, a failed `Join` leaves no endpoint), and each operation records its progress so that a
//! start-up after a crash finishes or undoes it ([`NetworkService::recover`]). A network holds a
//! reference on its driver and IPAM plugins from create to remove.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::bridge::{self, BridgeDriver};
use super::ipam::{AddressPool, DefaultIpam, DEFAULT_IPAM};
use super::netns::{self, Attachment, Route, NETNS_DIR};
use super::store::{Change, EndpointRecord, NetworkRecord, NetworkStore, Phase, PoolRecord};
use super::types::{
    ConfigReference, ConnectRequest, EndpointResource, Ipam as IpamView, IpamConfig,
    NetworkCreateRequest, NetworkCreateResponse, NetworkResource, NetworksPruneReport,
};
use crate::cidr::Prefix;
use crate::config::DefaultBridge;
use crate::drivers::ipam::{
    Ipam, IpamDriverClient, Pool, PoolRequest, GATEWAY_ADDRESS, REQUEST_ADDRESS_TYPE,
};
use crate::drivers::network::{EndpointInterface, IpamData, NetworkDriver, NetworkDriverClient};
use crate::drivers::AdapterCache;
use crate::error::{Error, Result};
use crate::plugin::getter::{Capability, Mode, PluginGetter};
use crate::rpc::client::within;

mod default_bridge;
mod endpoints;

/// Names no user network may take (moby `runconfig.IsPreDefinedNetwork`).
const PREDEFINED_NAMES: &[&str] = &["bridge", "host", "none", "default"];
/// The CLI's (and moby's) driver when none is given: the built-in bridge driver.
pub const DEFAULT_DRIVER: &str = bridge::DRIVER;

const NOT_A_MANAGER: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";

// libnetwork's option keys of `CreateNetwork`.
const OPTION_GENERIC: &str = "com.docker.network.generic";
const OPTION_ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
const OPTION_INTERNAL: &str = "com.docker.network.internal";

/// How the service is set up.
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// The built-in IPAM's default pools (`--default-address-pool`).
    pub default_address_pools: Vec<AddressPool>,
    /// Where named namespaces live (`/run/netns`).
    pub netns_dir: PathBuf,
    /// The predefined `bridge` network (`--bridge` / `--bip`); none by default.
    pub default_bridge: Option<DefaultBridge>,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        NetworkOptions {
            default_address_pools: super::ipam::default_address_pools(),
            netns_dir: PathBuf::from(NETNS_DIR),
            default_bridge: None,
        }
    }
}

/// What `GET /networks` keeps (validated by the API layer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub drivers: Vec<String>,
    /// Matched as moby's `filters.Match` (exact or a regexp found anywhere).
    pub names: Vec<String>,
    pub ids: Vec<String>,
    pub labels: Vec<String>,
    pub scopes: Vec<String>,
    /// `custom` / `builtin`.
    pub types: Vec<String>,
    pub dangling: Option<bool>,
}

/// What `POST /networks/prune` removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneFilter {
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    pub labels: Vec<String>,
    pub not_labels: Vec<String>,
}

pub struct NetworkService {
    store: NetworkStore,
    default_ipam: Arc<DefaultIpam>,
    plugins: Arc<PluginGetter>,
    drivers: AdapterCache<NetworkDriverClient>,
    bridge: Arc<BridgeDriver>,
    ipams: AdapterCache<IpamDriverClient>,
    netns_dir: PathBuf,
    default_bridge: Option<DefaultBridge>,
    /// One operation per network name (create) and per network (connect, disconnect, remove).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    prune_running: AtomicBool,
}

/// An address manager and whether it is the built-in one.
type IpamRef = Arc<dyn Ipam>;

impl NetworkService {
    pub fn open(
        data_root: &Path,
        plugins: Arc<PluginGetter>,
        options: NetworkOptions,
    ) -> Result<NetworkService> {
        let service = NetworkService {
            store: NetworkStore::open_in(data_root)?,
            default_ipam: Arc::new(DefaultIpam::new(options.default_address_pools)),
            plugins,
            drivers: AdapterCache::default(),
            bridge: Arc::new(BridgeDriver::new()),
            ipams: AdapterCache::default(),
            netns_dir: options.netns_dir,
            default_bridge: options.default_bridge,
            locks: Mutex::new(HashMap::new()),
            prune_running: AtomicBool::new(false),
        };
        service.ensure_predefined()?;
        service.restore_allocations();
        service.restore_builtin_networks();
        Ok(service)
    }

    /// The plugins networks hold references on (drivers and IPAM drivers), each name once per
    /// network: with the volumes' (`VolumeService::plugin_references`), what the daemon hands
    /// [`PluginGetter::set_references`] at start-up.
    pub fn plugin_references(&self) -> Vec<String> {
        self.store
            .networks()
            .iter()
            .flat_map(|n| plugin_users(n))
            .collect()
    }

    /// `host` and `none`, made once so their IDs stay.
    fn ensure_predefined(&self) -> Result<()> {
        let mut changes = Vec::new();
        for (name, driver) in [("host", "host"), ("none", "null")] {
            if !self
                .store
                .networks()
                .iter()
                .any(|n| n.predefined && n.name == name)
            {
                changes.push(Change::PutNetwork(NetworkRecord {
                    predefined: true,
                    ..NetworkRecord::new(name, driver)
                }));
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        self.store.apply(changes)
    }

    /// The built-in IPAM's pools and addresses, from the records that hold them.
    fn restore_allocations(&self) {
        let mut builtin = std::collections::BTreeSet::new();
        for network in self.store.networks() {
            if network.ipam_driver != DEFAULT_IPAM {
                continue;
            }
            for pool in &network.pools {
                builtin.insert(pool.pool_id.clone());
                self.default_ipam.restore_pool(&pool.pool_id);
                for address in pool.gateway.iter().chain(&pool.reserved) {
                    if let Some(p) = Prefix::parse(address) {
                        self.default_ipam.restore_address(&pool.pool_id, p.addr);
                    }
                }
            }
        }
        for endpoint in self.store.endpoints() {
            for (address, pool_id) in endpoint.ipv4.iter().chain(&endpoint.ipv6) {
                if builtin.contains(pool_id) {
                    if let Some(p) = Prefix::parse(address) {
                        self.default_ipam.restore_address(pool_id, p.addr);
                    }
                }
            }
        }
    }

    /// The built-in drivers know their networks again from the records.
    fn restore_builtin_networks(&self) {
        for network in self.store.networks() {
            if network.driver == bridge::DRIVER && !network.config_only {
                let (v4, v6) = ipam_data(&network.pools);
                self.bridge
                    .restore(&network.id, &create_options(&network), &v4, &v6);
            }
        }
    }

    async fn lock(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// The driver plugin `name` (with [`Mode::Acquire`] the caller owes a release).
    async fn driver(&self, name: &str, mode: Mode) -> Result<Arc<dyn NetworkDriver>> {
        if name == bridge::DRIVER {
            return Ok(self.bridge.clone());
        }
        let plugin = self
            .plugins
            .get(name, Capability::NetworkDriver, mode)
            .await?;
        Ok(self
            .drivers
            .adapter(&plugin, NetworkDriverClient::for_plugin))
    }

    async fn ipam(&self, name: &str, mode: Mode) -> Result<IpamRef> {
        if name.is_empty() || name == DEFAULT_IPAM {
            return Ok(self.default_ipam.clone());
        }
        let plugin = self.plugins.get(name, Capability::IpamDriver, mode).await?;
        let fresh = Arc::new(AtomicBool::new(false));
        let made = fresh.clone();
        let adapter = self.ipams.adapter(&plugin, |p| {
            made.store(true, Ordering::Relaxed);
            IpamDriverClient::for_plugin(p)
        });
        if fresh.load(Ordering::Relaxed) {
            // libnetwork asks a new IPAM driver for its capabilities and address spaces when
            // it registers it.
            adapter.capabilities().await;
            if let Err(e) = adapter.default_address_spaces().await {
                log::warn!("IPAM driver {name}: GetDefaultAddressSpaces: {e}");
            }
        }
        Ok(adapter)
    }

    fn release_plugins(&self, record: &NetworkRecord) {
        for name in plugin_users(record) {
            self.plugins.release(&name);
        }
    }

    /// The deadline of one operation on a network's plugins.
    fn budget(&self) -> std::time::Duration {
        self.plugins.call_timeout()
    }

    // -----------------------------------------------------------------------------------------
    // Lookup

    fn ready_networks(&self) -> Vec<Arc<NetworkRecord>> {
        let mut networks: Vec<_> = self
            .store
            .networks()
            .into_iter()
            .filter(|n| n.phase == Phase::Ready)
            .collect();
        networks.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        networks
    }

    /// moby's `FindNetwork`: full ID, then exact name, then unique ID prefix. `by_name` words
    /// the ambiguity as the endpoint that asks does.
    fn find(&self, term: &str, ambiguity: Ambiguity) -> Result<Arc<NetworkRecord>> {
        let networks = self.ready_networks();
        if let Some(n) = networks.iter().find(|n| n.id == term) {
            return Ok(n.clone());
        }
        let by_name: Vec<_> = networks.iter().filter(|n| n.name == term).collect();
        let by_prefix: Vec<_> = networks
            .iter()
            .filter(|n| !term.is_empty() && n.id.starts_with(term))
            .collect();
        match (by_name.len(), by_prefix.len()) {
            (1, _) => Ok(by_name[0].clone()),
            (n, _) if n > 1 => Err(Error::InvalidParameter(ambiguity.render(term, n, "name"))),
            (_, 1) => Ok(by_prefix[0].clone()),
            (_, n) if n > 1 => Err(Error::InvalidParameter(ambiguity.render(
                term,
                n,
                "ID prefix",
            ))),
            _ => Err(Error::NotFound(format!("network {term} not found"))),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Views

    fn view(&self, record: &NetworkRecord, endpoints: bool) -> NetworkResource {
        let mut containers = BTreeMap::new();
        if endpoints {
            for e in self.store.endpoints_of(&record.id) {
                if e.phase != Phase::Ready {
                    continue;
                }
                containers.insert(
                    e.consumer_id.clone(),
                    EndpointResource {
                        name: e.name.clone(),
                        endpoint_id: e.id.clone(),
                        mac_address: e.mac_address.clone(),
                        ipv4_address: e.ipv4.as_ref().map(|a| a.0.clone()).unwrap_or_default(),
                        ipv6_address: e.ipv6.as_ref().map(|a| a.0.clone()).unwrap_or_default(),
                    },
                );
            }
        }
        NetworkResource {
            name: record.name.clone(),
            id: record.id.clone(),
            created: record.created.clone(),
            scope: record.scope.clone(),
            driver: record.driver.clone(),
            enable_ipv6: record.enable_ipv6,
            ipam: IpamView {
                driver: record.ipam_driver.clone(),
                options: record.ipam_options.clone(),
                config: ipam_view(record),
            },
            internal: record.internal,
            attachable: record.attachable,
            ingress: record.ingress,
            config_from: ConfigReference {
                network: record.config_from.clone(),
            },
            config_only: record.config_only,
            containers,
            options: record.options.clone(),
            labels: record.labels.clone(),
        }
    }

    /// `GET /networks`. `Containers` stays empty, as the list of API ≥ 1.28 shows it.
    pub fn list(&self, filter: &ListFilter) -> Vec<NetworkResource> {
        let used: std::collections::BTreeSet<String> = self
            .store
            .endpoints()
            .iter()
            .map(|e| e.network_id.clone())
            .collect();
        self.ready_networks()
            .iter()
            .filter(|n| keep(n, filter, used.contains(&n.id)))
            .map(|n| self.view(n, false))
            .collect()
    }

    /// `GET /networks/{id}`.
    pub fn inspect(&self, term: &str) -> Result<NetworkResource> {
        let record = self.find(term, Ambiguity::Inspect)?;
        Ok(self.view(&record, true))
    }

    // -----------------------------------------------------------------------------------------
    // Create

    /// `POST /networks/create`.
    pub async fn create(&self, request: NetworkCreateRequest) -> Result<NetworkCreateResponse> {
        let name = request.name.clone();
        if PREDEFINED_NAMES.contains(&name.as_str()) {
            return Err(Error::Forbidden(format!(
                "operation is not permitted on predefined {name} network "
            )));
        }
        let _guard = self.lock(format!("name:{name}")).await;
        let mut warning = String::new();
        if let Some(existing) = self.ready_networks().iter().find(|n| n.name == name) {
            if request.check_duplicate {
                return Err(Error::Conflict(format!(
                    "network with name {name} already exists"
                )));
            }
            warning = format!(
                "Network with name {} (id : {}) already exists",
                existing.name, existing.id
            );
        }
        let driver = if request.driver.is_empty() {
            DEFAULT_DRIVER.to_string()
        } else {
            request.driver.clone()
        };
        if driver == "overlay" {
            return Err(Error::System(NOT_A_MANAGER.into()));
        }
        let ipam = request.ipam.clone().unwrap_or(IpamView {
            driver: String::new(),
            options: None,
            config: Vec::new(),
        });
        for config in &ipam.config {
            if Prefix::parse(&config.subnet).is_none() {
                return Err(Error::System(format!(
                    "Invalid subnet {} : invalid CIDR address: {}",
                    config.subnet, config.subnet
                )));
            }
        }
        if name.trim().is_empty() {
            return Err(Error::System(format!("invalid name: {name}")));
        }
        let mut record = NetworkRecord {
            scope: request.scope.clone(),
            enable_ipv6: request.enable_ipv6,
            internal: request.internal,
            attachable: request.attachable,
            ingress: request.ingress,
            config_only: request.config_only,
            config_from: request.config_from.clone().unwrap_or_default(),
            options: request.options.clone(),
            labels: request.labels.clone(),
            ipam_driver: if ipam.driver.is_empty() {
                DEFAULT_IPAM.to_string()
            } else {
                ipam.driver.clone()
            },
            ipam_options: ipam.options.clone(),
            ipam_config: ipam.config.clone(),
            ..NetworkRecord::new(&name, &driver)
        };
        if record.config_only {
            return self.create_config_only(record, warning);
        }
        if !record.config_from.is_empty() {
            self.apply_config_from(&mut record, &request)?;
        }
        let id = record.id.clone();
        self.create_with_plugins(record).await?;
        Ok(NetworkCreateResponse { id, warning })
    }

    /// A configuration network: recorded only, no driver, no allocation (libnetwork resets its
    /// driver to `null` and its scope to `local`).
    fn create_config_only(
        &self,
        mut record: NetworkRecord,
        warning: String,
    ) -> Result<NetworkCreateResponse> {
        let scoped = !record.scope.is_empty() && record.scope != "local";
        if record.ingress || record.internal || record.attachable || scoped {
            return Err(Error::Forbidden("configuration network can only contain network specific fields. Network operator fields like [ ingress | internal | attachable | scope ] are not supported.".into()));
        }
        record.driver = "null".into();
        record.scope = "local".into();
        let id = record.id.clone();
        self.store.apply(vec![Change::PutNetwork(record)])?;
        Ok(NetworkCreateResponse { id, warning })
    }

    /// libnetwork's `validateConfiguration` + `applyConfigurationTo` for `ConfigFrom`.
    fn apply_config_from(
        &self,
        record: &mut NetworkRecord,
        request: &NetworkCreateRequest,
    ) -> Result<()> {
        let ipam = request.ipam.as_ref();
        let ipam_driver = ipam.map(|i| i.driver.as_str()).unwrap_or("");
        if (!ipam_driver.is_empty() && ipam_driver != DEFAULT_IPAM)
            || request.enable_ipv6
            || !request.labels.is_empty()
            || ipam
                .and_then(|i| i.options.as_ref())
                .is_some_and(|o| !o.is_empty())
            || ipam.is_some_and(|i| !i.config.is_empty())
        {
            return Err(Error::Forbidden("user specified configurations are not supported if the network depends on a configuration network".into()));
        }
        if !request.options.is_empty() {
            return Err(Error::Forbidden(
                "network driver options are not supported if the network depends on a configuration network".into(),
            ));
        }
        let from = self
            .ready_networks()
            .into_iter()
            .find(|n| n.config_only && n.name == record.config_from)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "configuration network \"{}\" does not exist",
                    record.config_from
                ))
            })?;
        record.enable_ipv6 = from.enable_ipv6;
        record.labels = from.labels.clone();
        record.ipam_driver = from.ipam_driver.clone();
        record.ipam_options = from.ipam_options.clone();
        record.ipam_config = from.ipam_config.clone();
        record.options = from.options.clone();
        Ok(())
    }

    /// The driver and IPAM part of a create: references, pools, `CreateNetwork`, the record.
    async fn create_with_plugins(&self, mut record: NetworkRecord) -> Result<()> {
        if record.driver == "host" || record.driver == "null" {
            return Err(Error::Forbidden(format!(
                "only one instance of \"{}\" network is allowed",
                record.driver
            )));
        }
        let driver = self.driver(&record.driver, Mode::Acquire).await?;
        let budget = driver.call_timeout().unwrap_or(self.budget());
        // One deadline for the whole create, an IPAM driver's registration calls included.
        within(budget, async {
            let ipam = match self.ipam(&record.ipam_driver, Mode::Acquire).await {
                Ok(ipam) => ipam,
                Err(e) => {
                    if !driver.builtin() {
                        self.plugins.release(&record.driver);
                    }
                    return Err(e);
                }
            };
            let outcome = self.make_network(driver.as_ref(), &ipam, &mut record).await;
            if outcome.is_err() {
                self.release_plugins(&record);
            }
            outcome
        })
        .await
    }

    async fn make_network(
        &self,
        driver: &dyn NetworkDriver,
        ipam: &IpamRef,
        record: &mut NetworkRecord,
    ) -> Result<()> {
        let caps = driver.capabilities().await?;
        if record.ingress && caps.scope != "global" {
            return Err(Error::Forbidden(
                "Ingress network can only be global scope network".into(),
            ));
        }
        // dockerd 20.10 refuses drivers of global scope unless it is a swarm manager
        // (`Cannot create a multi-host network from a worker node`); berth has no swarm and
        // no cluster store, so it keeps such a network on this daemon, with the driver's
        // scope shown. Multi-host drivers (ovn-docker-overlay-driver) work this way.
        if record.scope == "swarm" {
            return Err(Error::Forbidden(
                "cannot create a swarm scoped network when swarm is not active".into(),
            ));
        }
        if !record.scope.is_empty() && record.scope != caps.scope {
            return Err(Error::System(NOT_A_MANAGER.into()));
        }
        record.scope = caps.scope.clone();
        let (space, _) = ipam.default_address_spaces().await?;
        let allocated = self.allocate_pools(ipam, record, &space).await;
        if let Err(e) = allocated {
            self.release_pools(ipam, &record.pools).await;
            return Err(e);
        }
        record.phase = Phase::Creating;
        self.store.apply(vec![Change::PutNetwork(record.clone())])?;
        let (v4, v6) = ipam_data(&record.pools);
        let created = driver
            .create_network(&record.id, &create_options(record), &v4, &v6)
            .await;
        if let Err(e) = created {
            self.release_pools(ipam, &record.pools).await;
            self.store
                .apply(vec![Change::DeleteNetwork(record.id.clone())])?;
            return Err(e);
        }
        record.phase = Phase::Ready;
        self.store.apply(vec![Change::PutNetwork(record.clone())])
    }

    /// libnetwork's `ipamAllocate`: IPv4 always (one pool of the defaults when nothing was
    /// asked for), IPv6 when enabled. Each pool is recorded in `record.pools` as soon as it is
    /// held, so a failure can give back exactly what was taken.
    async fn allocate_pools(
        &self,
        ipam: &IpamRef,
        record: &mut NetworkRecord,
        space: &str,
    ) -> Result<()> {
        for v6 in [false, true] {
            if v6 && !record.enable_ipv6 {
                break;
            }
            let mut configs: Vec<IpamConfig> = record
                .ipam_config
                .iter()
                .filter(|c| Prefix::parse(&c.subnet).is_some_and(|p| p.is_v6() == v6))
                .cloned()
                .collect();
            if configs.is_empty() {
                configs.push(IpamConfig::default());
            }
            for config in configs {
                if !config.gateway.is_empty() && config.gateway.parse::<IpAddr>().is_err() {
                    return Err(Error::System(format!(
                        "invalid gateway address {} in Ipam configuration",
                        config.gateway
                    )));
                }
                let request = PoolRequest {
                    address_space: space.to_string(),
                    pool: config.subnet.clone(),
                    sub_pool: config.ip_range.clone(),
                    options: record.ipam_options.clone(),
                    v6,
                };
                // libnetwork checks the host's routes only for a pool it chose, of a local
                // network; IPv6 pools never meet the IPv4 routes it looks at.
                let pool = if config.subnet.is_empty() && !v6 && record.scope != "global" {
                    let routes = netns::host_routes_v4().await.unwrap_or_else(|e| {
                        log::warn!("listing the host's routes: {e}");
                        Vec::new()
                    });
                    pool_clear_of_routes(ipam.as_ref(), &request, &routes).await?
                } else {
                    ipam.request_pool(&request).await?
                };
                record.pools.push(PoolRecord {
                    address_space: space.to_string(),
                    pool_id: pool.id.clone(),
                    pool: pool.pool.to_string(),
                    gateway: None,
                    aux_addresses: BTreeMap::new(),
                    reserved: Vec::new(),
                    v6,
                });
                let held = record.pools.last_mut().expect("just pushed");
                let mut gateway = pool
                    .data
                    .get(GATEWAY_ADDRESS)
                    .and_then(|g| Prefix::parse(g));
                if !config.gateway.is_empty() || gateway.is_none() {
                    let wanted = config.gateway.parse::<IpAddr>().ok();
                    let options =
                        BTreeMap::from([(REQUEST_ADDRESS_TYPE.into(), GATEWAY_ADDRESS.into())]);
                    let given = ipam
                        .request_address(&pool.id, wanted, &options)
                        .await
                        .map_err(|e| {
                            Error::System(format!(
                                "failed to allocate gateway ({}): {}",
                                config.gateway,
                                e.message()
                            ))
                        })?;
                    held.gateway = Some(given.to_string());
                    gateway = Some(given);
                } else {
                    held.gateway = gateway.map(|g| g.to_string());
                }
                let _ = gateway;
                for (key, value) in &config.aux_addresses {
                    let ip: IpAddr = value.parse().map_err(|_| {
                        Error::System(format!(
                            "non parsable secondary ip address ({key}:{value}) passed for network {}",
                            record.name
                        ))
                    })?;
                    if !pool.pool.contains(&ip) {
                        return Err(Error::Forbidden(format!(
                            "auxiliary address: ({key}:{value}) must belong to the master pool: {}",
                            pool.pool
                        )));
                    }
                    let held = record.pools.last_mut().expect("just pushed");
                    match ipam
                        .request_address(&pool.id, Some(ip), &BTreeMap::new())
                        .await
                    {
                        Ok(_) => held.reserved.push(pool.pool.with_addr(ip).to_string()),
                        Err(e) if e.message() == "Requested address is out of range" => {}
                        Err(e) => {
                            return Err(Error::System(format!(
                                "failed to allocate secondary ip address ({key}:{value}): {}",
                                e.message()
                            )))
                        }
                    }
                    held.aux_addresses
                        .insert(key.clone(), pool.pool.with_addr(ip).to_string());
                }
            }
        }
        Ok(())
    }

    /// Gives back a network's addresses and pools (libnetwork's `ipamRelease`); errors are
    /// logged: the network goes either way.
    async fn release_pools(&self, ipam: &IpamRef, pools: &[PoolRecord]) {
        for pool in pools {
            for address in pool.gateway.iter().chain(&pool.reserved) {
                if let Some(p) = Prefix::parse(address) {
                    if let Err(e) = ipam.release_address(&pool.pool_id, p.addr).await {
                        log::warn!("releasing address {address} of pool {}: {e}", pool.pool_id);
                    }
                }
            }
            if let Err(e) = ipam.release_pool(&pool.pool_id).await {
                log::warn!("releasing pool {}: {e}", pool.pool_id);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Remove and prune

    /// `DELETE /networks/{id}`.
    pub async fn remove(&self, term: &str) -> Result<()> {
        let record = self.find(term, Ambiguity::Remove)?;
        if record.predefined {
            return Err(Error::Forbidden(format!(
                "{} is a pre-defined network and cannot be removed",
                record.name
            )));
        }
        let _guard = self.lock(format!("net:{}", record.id)).await;
        let Some(record) = self.store.network(&record.id) else {
            return Err(Error::NotFound(format!("network {term} not found")));
        };
        self.remove_locked(&record)
            .await
            .map_err(|e| e.context("error while removing network"))
    }

    async fn remove_locked(&self, record: &NetworkRecord) -> Result<()> {
        if record.config_only {
            if self
                .ready_networks()
                .iter()
                .any(|n| n.config_from == record.name)
            {
                return Err(Error::Forbidden(format!(
                    "configuration network \"{}\" is in use",
                    record.name
                )));
            }
            return self
                .store
                .apply(vec![Change::DeleteNetwork(record.id.clone())]);
        }
        if !self.store.endpoints_of(&record.id).is_empty() {
            return Err(Error::Forbidden(format!(
                "network {} id {} has active endpoints",
                record.name, record.id
            )));
        }
        let driver = self
            .driver(&record.driver, Mode::Lookup)
            .await
            .map_err(|e| e.context("failed deleting network"))?;
        let mut removing = record.clone();
        removing.phase = Phase::Removing;
        self.store.apply(vec![Change::PutNetwork(removing)])?;
        self.take_apart(driver.as_ref(), record).await
    }

    /// `DeleteNetwork` (errors logged, as libnetwork does), the IPAM release, the record and
    /// the references.
    async fn take_apart(&self, driver: &dyn NetworkDriver, record: &NetworkRecord) -> Result<()> {
        let budget = driver.call_timeout().unwrap_or(self.budget());
        // dockerd 20.10 gives the addresses and pools back before it asks the driver.
        within(budget, async {
            match self.ipam(&record.ipam_driver, Mode::Lookup).await {
                Ok(ipam) => self.release_pools(&ipam, &record.pools).await,
                Err(e) => log::warn!("releasing the pools of network {}: {e}", record.name),
            }
            if let Err(e) = driver.delete_network(&record.id).await {
                log::warn!("driver error deleting network {} : {e}", record.name);
            }
        })
        .await;
        self.store
            .apply(vec![Change::DeleteNetwork(record.id.clone())])?;
        self.release_plugins(record);
        Ok(())
    }

    /// `POST /networks/prune`: unused user networks; their names.
    pub async fn prune(&self, filter: &PruneFilter) -> Result<NetworksPruneReport> {
        if self.prune_running.swap(true, Ordering::SeqCst) {
            return Err(Error::Conflict(
                "a prune operation is already running".into(),
            ));
        }
        let mut deleted = Vec::new();
        for record in self.ready_networks() {
            if record.predefined || record.config_only {
                continue;
            }
            if let Some(until) = filter.until {
                let created = chrono::DateTime::parse_from_rfc3339(&record.created)
                    .map(|t| t.with_timezone(&chrono::Utc));
                if created.is_ok_and(|c| c > until) {
                    continue;
                }
            }
            if !labels_match(&record.labels, &filter.labels)
                || filter
                    .not_labels
                    .iter()
                    .any(|l| label_matches(&record.labels, l))
            {
                continue;
            }
            if !self.store.endpoints_of(&record.id).is_empty() {
                continue;
            }
            match self.remove(&record.id).await {
                Ok(()) => deleted.push(record.name.clone()),
                Err(e) => log::warn!("could not remove local network {}: {e}", record.name),
            }
        }
        self.prune_running.store(false, Ordering::SeqCst);
        Ok(NetworksPruneReport {
            networks_deleted: (!deleted.is_empty()).then_some(deleted),
        })
    }

    // -----------------------------------------------------------------------------------------
    // Start-up

    /// Finishes or undoes what a crash interrupted, and lets go of endpoints whose namespace
    /// is gone: networks still being created are undone, networks being removed are removed,
    /// endpoints being connected or disconnected (and endpoints of vanished namespaces) are
    /// disconnected. Plugins that cannot be reached are logged about; the records go anyway.
    pub async fn recover(&self) {
        for endpoint in self.store.endpoints() {
            let gone = match self.namespace(&endpoint.name) {
                Some((_, id)) => endpoint.namespace != Some(id),
                None => true,
            };
            if endpoint.phase == Phase::Ready && !gone {
                continue;
            }
            let Some(record) = self.store.network(&endpoint.network_id) else {
                let _ = self
                    .store
                    .apply(vec![Change::DeleteEndpoint(endpoint.id.clone())]);
                continue;
            };
            log::info!(
                "disconnecting {} from network {} (left behind)",
                endpoint.name,
                record.name
            );
            if let Err(e) = self.leave(&record, &endpoint).await {
                log::warn!("disconnecting {}: {e}", endpoint.name);
            }
        }
        for record in self.store.networks() {
            if record.phase == Phase::Ready {
                continue;
            }
            log::info!(
                "finishing the removal of network {} ({})",
                record.name,
                record.id
            );
            match self.driver(&record.driver, Mode::Lookup).await {
                Ok(driver) => {
                    if let Err(e) = self.take_apart(driver.as_ref(), &record).await {
                        log::warn!("removing network {}: {e}", record.name);
                    }
                }
                Err(e) => {
                    log::warn!("removing network {} without its driver: {e}", record.name);
                    if let Ok(ipam) = self.ipam(&record.ipam_driver, Mode::Lookup).await {
                        self.release_pools(&ipam, &record.pools).await;
                    }
                    let _ = self
                        .store
                        .apply(vec![Change::DeleteNetwork(record.id.clone())]);
                    self.release_plugins(&record);
                }
            }
        }
        let networks = self.store.networks();
        let ready = networks
            .iter()
            .filter(|n| n.phase == Phase::Ready)
            .map(|n| n.id.clone())
            .collect();
        let live: Vec<(String, String)> = self
            .store
            .endpoints()
            .iter()
            .map(|e| (e.id.clone(), e.network_id.clone()))
            .collect();
        self.bridge.reconcile(&ready, &live).await;
    }
}

/// libnetwork's `requestPoolHelper`: the first pool the IPAM gives that overlaps none of
/// `routes`. The pools passed over are held until one is found (so the IPAM does not give
/// them again), then given back. An IPAM that answers a pool it already gave has no other:
/// that one is taken (libnetwork would ask forever).
async fn pool_clear_of_routes(
    ipam: &dyn Ipam,
    request: &PoolRequest,
    routes: &[Prefix],
) -> Result<Pool> {
    let mut passed_over: Vec<String> = Vec::new();
    let found = loop {
        match ipam.request_pool(request).await {
            Ok(pool) if passed_over.contains(&pool.id) => {
                passed_over.retain(|id| *id != pool.id);
                break Ok(pool);
            }
            Ok(pool) if routes.iter().any(|r| r.overlaps(&pool.pool)) => {
                log::debug!("pool {} overlaps a route of the host", pool.pool);
                passed_over.push(pool.id)
            }
            other => break other,
        }
    };
    for id in passed_over {
        if let Err(e) = ipam.release_pool(&id).await {
            log::warn!("releasing overlapping pool {id}: {e}");
        }
    }
    found
}

/// How an ambiguous name is worded (each 20.10 endpoint words it its own way).
#[derive(Debug, Clone, Copy)]
enum Ambiguity {
    Inspect,
    Remove,
    Other,
}

impl Ambiguity {
    fn render(self, term: &str, count: usize, on: &str) -> String {
        match self {
            Ambiguity::Inspect => {
                format!("{count} matches found based on {on}: network {term} is ambiguous")
            }
            Ambiguity::Remove => {
                format!("network {term} is ambiguous ({count} matches found based on {on})")
            }
            Ambiguity::Other if on == "name" => {
                format!("network {term} is ambiguous ({count} matches found on name)")
            }
            Ambiguity::Other => {
                format!("network {term} is ambiguous ({count} matches found based on ID prefix)")
            }
        }
    }
}

/// The plugins a network holds references on: its driver and its IPAM driver (not the
/// built-in `bridge` driver and `default` IPAM; none for configuration or predefined
/// networks).
fn plugin_users(record: &NetworkRecord) -> Vec<String> {
    if record.predefined || record.config_only {
        return Vec::new();
    }
    let mut names = Vec::new();
    if record.driver != bridge::DRIVER {
        names.push(record.driver.clone());
    }
    if record.ipam_driver != DEFAULT_IPAM {
        names.push(record.ipam_driver.clone());
    }
    names
}

/// The key a namespace's endpoints show under in `Containers`: derived from its path, so it
/// is the same for every network it joins.
fn consumer_id(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(path.display().to_string().as_bytes()))
}

/// libnetwork's `CreateNetwork` options.
fn create_options(record: &NetworkRecord) -> Map<String, Value> {
    let mut options = Map::new();
    options.insert(OPTION_ENABLE_IPV6.into(), Value::Bool(record.enable_ipv6));
    let generic: Map<String, Value> = record
        .options
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    options.insert(OPTION_GENERIC.into(), Value::Object(generic));
    if record.internal {
        options.insert(OPTION_INTERNAL.into(), Value::Bool(true));
    }
    options
}

/// `IPv4Data` and `IPv6Data` of `CreateNetwork`.
fn ipam_data(pools: &[PoolRecord]) -> (Vec<IpamData>, Vec<IpamData>) {
    let data = |p: &PoolRecord| IpamData {
        address_space: p.address_space.clone(),
        aux_addresses: (!p.aux_addresses.is_empty()).then(|| p.aux_addresses.clone()),
        gateway: p.gateway.clone(),
        pool: p.pool.clone(),
    };
    (
        pools.iter().filter(|p| !p.v6).map(data).collect(),
        pools.iter().filter(|p| p.v6).map(data).collect(),
    )
}

/// Inspect's `IPAM.Config` (moby `buildIpamResources`): the configuration the client gave
/// (entries with a subnet), else what was allocated; IPv4 first.
fn ipam_view(record: &NetworkRecord) -> Vec<IpamConfig> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        let given: Vec<IpamConfig> = record
            .ipam_config
            .iter()
            .filter(|c| Prefix::parse(&c.subnet).is_some_and(|p| p.is_v6() == v6))
            .cloned()
            .collect();
        if !given.is_empty() {
            out.extend(given);
            continue;
        }
        for pool in record.pools.iter().filter(|p| p.v6 == v6) {
            out.push(IpamConfig {
                subnet: pool.pool.clone(),
                gateway: pool
                    .gateway
                    .as_deref()
                    .and_then(Prefix::parse)
                    .map(|g| g.addr.to_string())
                    .unwrap_or_default(),
                ..IpamConfig::default()
            });
        }
    }
    out
}

/// What to do with the interface a `Join` gave.
fn attachment(
    endpoint: &EndpointRecord,
    info: &crate::drivers::network::JoinInfo,
    gateway_endpoint: bool,
) -> Result<Attachment> {
    let bad =
        |what: &str, value: &str| Error::System(format!("unable to parse {what} \"{value}\""));
    let mut routes = Vec::new();
    if gateway_endpoint && !info.disable_gateway_service {
        for gateway in [&info.gateway, &info.gateway_ipv6] {
            if gateway.is_empty() {
                continue;
            }
            let via: IpAddr = gateway.parse().map_err(|_| bad("Gateway", gateway))?;
            routes.push(Route {
                destination: None,
                via: Some(via),
            });
        }
    }
    for route in &info.static_routes {
        let destination = Prefix::parse(&route.destination)
            .ok_or_else(|| bad("Destination", &route.destination))?;
        let via = if route.route_type == 1 {
            None
        } else {
            Some(
                route
                    .next_hop
                    .parse()
                    .map_err(|_| bad("NextHop", &route.next_hop))?,
            )
        };
        routes.push(Route {
            destination: Some(destination),
            via,
        });
    }
    let mac = match endpoint.mac_address.as_str() {
        "" => None,
        text => Some(parse_mac(text).ok_or_else(|| bad("MacAddress", text))?),
    };
    Ok(Attachment {
        src_name: info.src_name.clone(),
        dst_prefix: info.dst_prefix.clone(),
        mac,
        addresses: endpoint
            .ipv4
            .iter()
            .chain(&endpoint.ipv6)
            .filter_map(|(a, _)| Prefix::parse(a))
            .collect(),
        routes,
    })
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}

/// moby's network list filters (`daemon/network/filter.go`).
fn keep(n: &NetworkRecord, filter: &ListFilter, used: bool) -> bool {
    let builtin = n.predefined;
    let matches = |values: &[String], source: &str| {
        values.is_empty()
            || values
                .iter()
                .any(|v| v == source || regex::Regex::new(v).is_ok_and(|re| re.is_match(source)))
    };
    (filter.drivers.is_empty() || filter.drivers.contains(&n.driver))
        && matches(&filter.names, &n.name)
        && matches(&filter.ids, &n.id)
        && labels_match(&n.labels, &filter.labels)
        && (filter.scopes.is_empty() || filter.scopes.contains(&n.scope))
        && filter.dangling.is_none_or(|dangling| {
            if dangling {
                !builtin && !used
            } else {
                builtin || used
            }
        })
        && (filter.types.is_empty() || filter.types.iter().any(|t| (t == "builtin") == builtin))
}

fn labels_match(labels: &BTreeMap<String, String>, wanted: &[String]) -> bool {
    wanted.iter().all(|w| label_matches(labels, w))
}

fn label_matches(labels: &BTreeMap<String, String>, wanted: &str) -> bool {
    match wanted.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(wanted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn default_pools_that_host_routes_overlap_are_passed_over() {
        let ipam = DefaultIpam::new(super::super::ipam::default_address_pools());
        let request = PoolRequest {
            address_space: "LocalDefault".into(),
            ..PoolRequest::default()
        };
        let routes: Vec<Prefix> = ["172.17.0.0/16", "172.18.5.0/24", "10.0.0.0/8"]
            .iter()
            .map(|r| Prefix::parse(r).unwrap())
            .collect();
        let pool = pool_clear_of_routes(&ipam, &request, &routes)
            .await
            .unwrap();
        assert_eq!(pool.pool.to_string(), "172.19.0.0/16");
        // The pools passed over were given back: asked for by name, they are free.
        let named = PoolRequest {
            pool: "172.17.0.0/16".into(),
            ..request.clone()
        };
        ipam.request_pool(&named).await.unwrap();
        // No routes: the next default pool.
        let next = pool_clear_of_routes(&ipam, &request, &[]).await.unwrap();
        assert_eq!(next.pool.to_string(), "172.20.0.0/16");
        // Every default pool overlapped: the IPAM's own error, nothing held.
        let everything = [
            Prefix::parse("0.0.0.0/1").unwrap(),
            Prefix::parse("128.0.0.0/1").unwrap(),
        ];
        let err = pool_clear_of_routes(&ipam, &request, &everything)
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with("could not find an available"),
            "{err}"
        );
        assert!(pool_clear_of_routes(&ipam, &request, &[]).await.is_ok());
    }

    fn record(name: &str) -> NetworkRecord {
        NetworkRecord {
            options: BTreeMap::from([("mtu".into(), "1400".into())]),
            labels: BTreeMap::from([("team".into(), "a".into())]),
            pools: vec![PoolRecord {
                address_space: "LocalDefault".into(),
                pool_id: "LocalDefault/172.18.0.0/16".into(),
                pool: "172.18.0.0/16".into(),
                gateway: Some("172.18.0.1/16".into()),
                aux_addresses: BTreeMap::new(),
                reserved: Vec::new(),
                v6: false,
            }],
            ..NetworkRecord::new(name, "test/net:latest")
        }
    }

    #[test]
    fn inspect_shows_allocations_unless_the_client_configured_pools() {
        let mut r = record("n");
        assert_eq!(
            serde_json::to_string(&ipam_view(&r)).unwrap(),
            r#"[{"Subnet":"172.18.0.0/16","Gateway":"172.18.0.1"}]"#
        );
        r.ipam_config = vec![IpamConfig {
            subnet: "fd00::/64".into(),
            ..IpamConfig::default()
        }];
        assert_eq!(
            serde_json::to_string(&ipam_view(&r)).unwrap(),
            r#"[{"Subnet":"172.18.0.0/16","Gateway":"172.18.0.1"},{"Subnet":"fd00::/64"}]"#
        );
    }

    #[test]
    fn create_options_are_libnetworks() {
        let mut r = record("n");
        r.internal = true;
        assert_eq!(
            Value::Object(create_options(&r)).to_string(),
            r#"{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{"mtu":"1400"},"com.docker.network.internal":true}"#
        );
    }

    #[test]
    fn list_filters() {
        let r = record("net1");
        let f = |filter: ListFilter| keep(&r, &filter, false);
        assert!(f(ListFilter::default()));
        assert!(f(ListFilter {
            names: vec!["et".into()],
            labels: vec!["team=a".into()],
            ..ListFilter::default()
        }));
        assert!(!f(ListFilter {
            labels: vec!["team=b".into()],
            ..ListFilter::default()
        }));
        assert!(f(ListFilter {
            types: vec!["custom".into()],
            dangling: Some(true),
            ..ListFilter::default()
        }));
        assert!(!f(ListFilter {
            types: vec!["builtin".into()],
            ..ListFilter::default()
        }));
        assert!(!f(ListFilter {
            drivers: vec!["test/net".into()],
            ..ListFilter::default()
        }));
    }

    #[test]
    fn join_answers_become_routes() {
        let endpoint = EndpointRecord {
            id: "e".into(),
            network_id: "n".into(),
            name: "demo".into(),
            consumer_id: "c".into(),
            sandbox_key: "/run/netns/demo".into(),
            namespace: None,
            mac_address: "02:42:0a:14:00:82".into(),
            ipv4: Some(("10.20.0.130/24".into(), "p".into())),
            ipv6: None,
            aliases: Vec::new(),
            src_name: String::new(),
            interface: None,
            gateway_endpoint: false,
            gateways: Vec::new(),
            phase: Phase::Creating,
        };
        let info = crate::drivers::network::JoinInfo {
            src_name: "veth1".into(),
            dst_prefix: "eth".into(),
            gateway: "10.20.0.1".into(),
            static_routes: vec![
                crate::drivers::network::StaticRoute {
                    destination: "10.99.0.0/16".into(),
                    route_type: 0,
                    next_hop: "10.20.0.254".into(),
                },
                crate::drivers::network::StaticRoute {
                    destination: "10.98.0.0/16".into(),
                    route_type: 1,
                    next_hop: String::new(),
                },
            ],
            ..Default::default()
        };
        let plan = attachment(&endpoint, &info, true).unwrap();
        assert_eq!(plan.mac, Some([2, 0x42, 10, 20, 0, 0x82]));
        assert_eq!(plan.routes.len(), 3);
        assert_eq!(plan.routes[0].destination, None);
        assert_eq!(plan.routes[2].via, None);
        let not_gateway = attachment(&endpoint, &info, false).unwrap();
        assert_eq!(not_gateway.routes.len(), 2);
        assert_eq!(consumer_id(Path::new("/run/netns/demo")).len(), 64);
    }
}
