//! Networks and endpoints in an embedded transactional database: one redb file,
//! `<data-root>/network/metadata.db`, with a `networks` and an `endpoints` table (ID → JSON).
//!
//! A record holds everything berth got from an address manager or a driver for it (pools,
//! gateway, auxiliary and endpoint addresses, the interface moved into a namespace), so the
//! built-in IPAM and the plugin reference counts are rebuilt from the records at start-up and
//! nothing allocated can outlive its record. Operations that call plugins record their
//! progress ([`Phase`]): a record is written in its transient phase before the calls and in
//! its steady phase after them, so a start-up after `kill -9` knows what to finish or undo.
//!
//! Every [`NetworkStore::apply`] is one write transaction committed durably (a change that was
//! acknowledged survives `kill -9`); the decoded records are also kept in memory, updated in
//! commit order, so lists need no transaction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::netns::NamespaceId;
use super::types::IpamConfig;
use crate::error::{Error, Result};

const NETWORKS: TableDefinition<&str, &str> = TableDefinition::new("networks");
const ENDPOINTS: TableDefinition<&str, &str> = TableDefinition::new("endpoints");

/// redb's page cache (see [`NetworkStore::open_in`]).
const CACHE_BYTES: usize = 1 << 20;

/// Where a record's operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Plugins are being asked to make it (a network's pools are recorded; an endpoint's
    /// address is).
    Creating,
    /// Made: a network ready for use, an endpoint joined.
    Ready,
    /// Being taken apart.
    Removing,
}

/// A pool a network holds, with what was allocated in it for the network itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    pub address_space: String,
    pub pool_id: String,
    /// CIDR.
    pub pool: String,
    /// CIDR (address with the pool's length), when one was allocated.
    pub gateway: Option<String>,
    /// Auxiliary addresses by name (CIDR), as the driver is told them.
    #[serde(default)]
    pub aux_addresses: BTreeMap<String, String>,
    /// The auxiliary addresses that were reserved in the pool (released with it).
    #[serde(default)]
    pub reserved: Vec<String>,
    pub v6: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub scope: String,
    /// RFC 3339 with nanoseconds, as inspect shows it.
    pub created: String,
    pub enable_ipv6: bool,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub config_only: bool,
    /// The configuration network this one took its IPAM settings from.
    pub config_from: String,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub ipam_driver: String,
    pub ipam_options: Option<BTreeMap<String, String>>,
    /// IPAM configuration as the client gave it (IPv4 and IPv6 entries).
    pub ipam_config: Vec<IpamConfig>,
    /// Pools and their allocations, IPv4 first.
    pub pools: Vec<PoolRecord>,
    /// `host` and `none`.
    pub predefined: bool,
    pub phase: Phase,
}

impl NetworkRecord {
    /// A ready local network created now, with a new ID, the built-in IPAM and nothing else.
    pub fn new(name: &str, driver: &str) -> NetworkRecord {
        NetworkRecord {
            id: crate::fsutil::random_hex(32),
            name: name.into(),
            driver: driver.into(),
            scope: "local".into(),
            created: super::types::go_time(&chrono::Utc::now()),
            enable_ipv6: false,
            internal: false,
            attachable: false,
            ingress: false,
            config_only: false,
            config_from: String::new(),
            options: BTreeMap::new(),
            labels: BTreeMap::new(),
            ipam_driver: super::ipam::DEFAULT_IPAM.into(),
            ipam_options: None,
            ipam_config: Vec::new(),
            pools: Vec::new(),
            predefined: false,
            phase: Phase::Ready,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub id: String,
    pub network_id: String,
    /// The namespace's name (what `connect` was given).
    pub name: String,
    /// The key `Containers` shows it under.
    pub consumer_id: String,
    /// `/run/netns/<name>`: the `SandboxKey` the driver was told.
    pub sandbox_key: String,
    /// The namespace joined (a namespace re-created under the same name is another one).
    pub namespace: Option<NamespaceId>,
    pub mac_address: String,
    /// CIDR, with the pool it came from.
    pub ipv4: Option<(String, String)>,
    pub ipv6: Option<(String, String)>,
    pub aliases: Vec<String>,
    /// The driver's interface: its name in berth's namespace, and in the consumer's.
    pub src_name: String,
    pub interface: Option<String>,
    /// It programmed the namespace's external connectivity (and default route).
    pub gateway_endpoint: bool,
    /// The join's gateways (IPv4, IPv6): the default routes it gives the namespace while it
    /// is the gateway endpoint.
    #[serde(default)]
    pub gateways: Vec<String>,
    pub phase: Phase,
}

/// One change of [`NetworkStore::apply`].
#[derive(Debug, Clone)]
pub enum Change {
    PutNetwork(NetworkRecord),
    DeleteNetwork(String),
    PutEndpoint(EndpointRecord),
    DeleteEndpoint(String),
}

#[derive(Default)]
struct Records {
    networks: BTreeMap<String, Arc<NetworkRecord>>,
    endpoints: BTreeMap<String, Arc<EndpointRecord>>,
}

pub struct NetworkStore {
    db: Database,
    path: PathBuf,
    records: RwLock<Records>,
    /// Held from a write transaction's start until the records in memory show its commit.
    writer: Mutex<()>,
}

fn db_error(e: impl std::fmt::Display) -> Error {
    Error::System(format!("network metadata database: {e}"))
}

/// The records of one table; a record that no longer decodes is skipped (and logged) rather
/// than keeping the daemon from starting.
fn load_table<R: serde::de::DeserializeOwned>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<&'static str, &'static str>,
    kind: &str,
) -> Result<BTreeMap<String, Arc<R>>> {
    let mut records = BTreeMap::new();
    for entry in txn
        .open_table(table)
        .map_err(db_error)?
        .iter()
        .map_err(db_error)?
    {
        let (k, v) = entry.map_err(db_error)?;
        match serde_json::from_str::<R>(v.value()) {
            Ok(r) => {
                records.insert(k.value().to_string(), Arc::new(r));
            }
            Err(e) => log::warn!("skipping undecodable {kind} record {}: {e}", k.value()),
        }
    }
    Ok(records)
}

fn put(
    table: &mut redb::Table<&'static str, &'static str>,
    id: &str,
    record: &impl Serialize,
) -> Result<()> {
    let json = serde_json::to_string(record).map_err(db_error)?;
    table.insert(id, json.as_str()).map_err(db_error)?;
    Ok(())
}

impl NetworkStore {
    /// Opens (creating it and its directory) `<data_root>/network/metadata.db`.
    pub fn open_in(data_root: &Path) -> Result<NetworkStore> {
        let dir = data_root.join("network");
        std::fs::create_dir_all(&dir).map_err(|e| db_error(format!("{}: {e}", dir.display())))?;
        let path = dir.join("metadata.db");
        // Every record is decoded in memory anyway: redb's page cache only has to hold a
        // commit's pages, not its default 1 GiB worth of the file.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| db_error(format!("opening {}: {e}", path.display())))?;
        let store = NetworkStore {
            db,
            path,
            records: RwLock::new(Records::default()),
            writer: Mutex::new(()),
        };
        store.apply(Vec::new())?;
        store.load()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<()> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let records = Records {
            networks: load_table(&txn, NETWORKS, "network")?,
            endpoints: load_table(&txn, ENDPOINTS, "endpoint")?,
        };
        *self.records.write().unwrap_or_else(|p| p.into_inner()) = records;
        Ok(())
    }

    pub fn networks(&self) -> Vec<Arc<NetworkRecord>> {
        let records = self.records.read().unwrap_or_else(|p| p.into_inner());
        records.networks.values().cloned().collect()
    }

    pub fn network(&self, id: &str) -> Option<Arc<NetworkRecord>> {
        let records = self.records.read().unwrap_or_else(|p| p.into_inner());
        records.networks.get(id).cloned()
    }

    pub fn endpoints(&self) -> Vec<Arc<EndpointRecord>> {
        let records = self.records.read().unwrap_or_else(|p| p.into_inner());
        records.endpoints.values().cloned().collect()
    }

    /// The endpoints of network `id`.
    pub fn endpoints_of(&self, id: &str) -> Vec<Arc<EndpointRecord>> {
        let records = self.records.read().unwrap_or_else(|p| p.into_inner());
        records
            .endpoints
            .values()
            .filter(|e| e.network_id == id)
            .cloned()
            .collect()
    }

    /// Commits `changes` in one durable transaction, then shows them in memory.
    pub fn apply(&self, changes: Vec<Change>) -> Result<()> {
        let _writing = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut txn = self.db.begin_write().map_err(db_error)?;
        txn.set_durability(Durability::Immediate);
        {
            let mut networks = txn.open_table(NETWORKS).map_err(db_error)?;
            let mut endpoints = txn.open_table(ENDPOINTS).map_err(db_error)?;
            for change in &changes {
                match change {
                    Change::PutNetwork(r) => put(&mut networks, &r.id, r)?,
                    Change::DeleteNetwork(id) => {
                        networks.remove(id.as_str()).map_err(db_error)?;
                    }
                    Change::PutEndpoint(r) => put(&mut endpoints, &r.id, r)?,
                    Change::DeleteEndpoint(id) => {
                        endpoints.remove(id.as_str()).map_err(db_error)?;
                    }
                }
            }
        }
        txn.commit().map_err(db_error)?;
        let mut records = self.records.write().unwrap_or_else(|p| p.into_inner());
        for change in changes {
            match change {
                Change::PutNetwork(r) => {
                    records.networks.insert(r.id.clone(), Arc::new(r));
                }
                Change::DeleteNetwork(id) => {
                    records.networks.remove(&id);
                }
                Change::PutEndpoint(r) => {
                    records.endpoints.insert(r.id.clone(), Arc::new(r));
                }
                Change::DeleteEndpoint(id) => {
                    records.endpoints.remove(&id);
                }
            }
        }
        Ok(())
    }
}
