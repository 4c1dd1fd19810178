//! Volume metadata in an embedded transactional database.
//!
//! One redb file, `<data-root>/volumes/metadata.db` (where dockerd keeps its bolt database),
//! with one table: volume name → [`VolumeRecord`] as JSON. The store answers what the volume
//! service has to know across restarts: which driver owns a name, the labels and options of
//! the first create, when it was created.
//!
//! # Guarantees
//! - **Durable**: every method that changes the table commits with
//!   [`redb::Durability::Immediate`] before it returns, so a write that was acknowledged
//!   survives `kill -9` and power loss, and the file always opens to the last acknowledged
//!   state (redb's commit is checksummed; a torn commit is rolled back on open).
//! - **Atomic check-and-set**: [`VolumeStore::create_if_absent`] and [`VolumeStore::remove_if`]
//!   look and write in one write transaction; redb runs one write transaction at a time, so
//!   concurrent callers of the same name agree on who created it.
//! - **Shareable**: `VolumeStore` is `Send + Sync`; call it from any thread. Each write costs
//!   one `fsync`, so callers should not hold locks of their own across a write that other
//!   requests need.
//! - **Cheap to list**: every decoded record is also kept in memory, updated after each commit
//!   while the writer still holds the write lock, so [`VolumeStore::snapshot`] answers without
//!   a transaction or JSON decoding (`GET /volumes` asks for all of them on every call).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// name → JSON of [`VolumeRecord`].
const VOLUMES: TableDefinition<&str, &str> = TableDefinition::new("volumes");

/// Where the store lives below a data root.
pub fn db_path(data_root: &Path) -> PathBuf {
    data_root.join("volumes").join("metadata.db")
}

/// What berth remembers about one volume. The driver keeps the data; this is the daemon's
/// record of who owns the name and what the client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    /// Driver name as the client gave it (`local`, or a managed plugin's `name:tag`).
    pub driver: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Driver options (`DriverOpts`) of the create that made the volume.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Whether the create carried `Labels` / `DriverOpts` at all: dockerd shows an empty map
    /// the client sent as `{}` and one it left out as `null` (CLI 20.10 sends empty maps, 28.x
    /// leaves them out). Records written before this was kept read as not sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub labels_sent: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub options_sent: bool,
    /// Kept with nanoseconds; the API shows it as RFC 3339 seconds.
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// `local` or `global` (the driver's capability at create time).
    pub scope: String,
}

impl VolumeRecord {
    /// A record created now, scope `local`, no labels or options.
    pub fn new(name: impl Into<String>, driver: impl Into<String>) -> VolumeRecord {
        VolumeRecord {
            name: name.into(),
            driver: driver.into(),
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            labels_sent: false,
            options_sent: false,
            created_at: Utc::now(),
            scope: "local".to_string(),
        }
    }
}

/// Outcome of [`VolumeStore::create_if_absent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The record was stored (and is returned); this caller made the volume.
    Created(VolumeRecord),
    /// A record of that name was there already (whatever its driver); it is returned as
    /// stored and nothing was written.
    Existing(VolumeRecord),
}

/// A failure of the metadata database. All of them are daemon-side (HTTP 500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The file could not be created or opened (permissions, locked by another process,
    /// not a redb file).
    Open { path: PathBuf, message: String },
    /// A transaction failed (I/O error, disk full).
    Db(String),
    /// A stored value is not a record (written by something else, or an incompatible
    /// version). Names the volume so an operator can remove it.
    Decode { name: String, message: String },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open { path, message } => write!(
                f,
                "error opening volume metadata database {}: {message}",
                path.display()
            ),
            StoreError::Db(message) => write!(f, "volume metadata database: {message}"),
            StoreError::Decode { name, message } => {
                write!(f, "error decoding volume metadata of {name}: {message}")
            }
        }
    }
}

impl std::error::Error for StoreError {}

impl From<StoreError> for crate::error::Error {
    fn from(e: StoreError) -> Self {
        crate::error::Error::System(e.to_string())
    }
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(e.into().to_string())
}

/// The volume metadata store. See the module documentation for its guarantees.
pub struct VolumeStore {
    db: Database,
    path: PathBuf,
    /// The decoded records as last committed.
    cache: RwLock<BTreeMap<String, Arc<VolumeRecord>>>,
    /// Held from a write transaction's start until the cache shows its commit, so the cache
    /// changes in commit order.
    writer: Mutex<()>,
}

impl fmt::Debug for VolumeStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VolumeStore")
            .field("path", &self.path)
            .finish()
    }
}

impl VolumeStore {
    /// Opens (creating it and its parent directories if needed) the database file at `path`,
    /// normally [`db_path`]`(data_root)`. A file left by a crash is recovered to its last
    /// durable commit. Fails if another process has it open.
    pub fn open(path: &Path) -> Result<VolumeStore, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: path.to_path_buf(),
            message,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.is_dir() {
                // 0701 like dockerd's volumes directory: others may traverse to `_data`
                // (containers of remapped users) but not list the volume names.
                crate::fsutil::create_dir_mode(parent, 0o701)
                    .map_err(|e| open_err(e.to_string()))?;
            }
        }
        let db = Database::create(path).map_err(|e| open_err(redb::Error::from(e).to_string()))?;
        let store = VolumeStore {
            db,
            path: path.to_path_buf(),
            cache: RwLock::new(BTreeMap::new()),
            writer: Mutex::new(()),
        };
        // Make sure the table exists so that readers never see "table does not exist".
        store.write(|_| Ok(((), true)))?;
        let loaded = store
            .read_all()?
            .into_iter()
            .map(|r| (r.name.clone(), Arc::new(r)))
            .collect();
        *store.cache.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(store)
    }

    /// [`VolumeStore::open`] at `<data_root>/volumes/metadata.db`.
    pub fn open_in(data_root: &Path) -> Result<VolumeStore, StoreError> {
        VolumeStore::open(&db_path(data_root))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record of `name`, if any (from memory; see [`VolumeStore::read`]).
    pub fn get(&self, name: &str) -> Result<Option<VolumeRecord>, StoreError> {
        Ok(self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|r| (**r).clone()))
    }

    /// The record of `name` as the database has it: a value that does not decode is an error
    /// here, while [`VolumeStore::get`] and [`VolumeStore::list`] skip it.
    pub fn read(&self, name: &str) -> Result<Option<VolumeRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(VOLUMES).map_err(db_err)?;
        let value = table.get(name).map_err(db_err)?;
        value.map(|v| decode(name, v.value())).transpose()
    }

    /// Every record, sorted by name. A value that does not decode is skipped and logged (one
    /// bad record must not hide the others); [`VolumeStore::get`] reports it as an error.
    pub fn list(&self) -> Result<Vec<VolumeRecord>, StoreError> {
        Ok(self.snapshot().iter().map(|r| (**r).clone()).collect())
    }

    /// [`VolumeStore::list`] without copying the records: the committed state when called.
    pub fn snapshot(&self) -> Vec<Arc<VolumeRecord>> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Every decodable record, read from the database.
    fn read_all(&self) -> Result<Vec<VolumeRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(VOLUMES).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            match decode(k.value(), v.value()) {
                Ok(record) => out.push(record),
                Err(e) => log::warn!("{e}"),
            }
        }
        Ok(out)
    }

    /// The records whose driver is exactly `driver`.
    pub fn list_by_driver(&self, driver: &str) -> Result<Vec<VolumeRecord>, StoreError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|r| r.driver == driver)
            .collect())
    }

    /// How many volumes each driver has (drivers without volumes are absent). Used at
    /// start-up to restore the reference counts that keep plugins in use.
    pub fn count_by_driver(&self) -> Result<BTreeMap<String, usize>, StoreError> {
        let mut counts = BTreeMap::new();
        for record in self.list()? {
            *counts.entry(record.driver).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Number of records.
    pub fn len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(VOLUMES).map_err(db_err)?;
        table.len().map_err(db_err)
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Stores `record` unless its name is taken, deciding in one durable write transaction:
    /// of any number of concurrent calls for one name exactly one gets [`CreateOutcome::Created`],
    /// the others get the winner's record.
    pub fn create_if_absent(&self, record: VolumeRecord) -> Result<CreateOutcome, StoreError> {
        let json = encode(&record)?;
        let _writing = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let existing = self.write(|table| {
            if let Some(existing) = table.get(record.name.as_str()).map_err(db_err)? {
                return Ok((Some(decode(&record.name, existing.value())?), false));
            }
            table
                .insert(record.name.as_str(), json.as_str())
                .map_err(db_err)?;
            Ok((None, true))
        })?;
        Ok(match existing {
            Some(existing) => CreateOutcome::Existing(existing),
            None => {
                self.cached(|c| {
                    c.insert(record.name.clone(), Arc::new(record.clone()));
                });
                CreateOutcome::Created(record)
            }
        })
    }

    /// Stores `record`, replacing any record of that name; returns the one replaced.
    pub fn put(&self, record: &VolumeRecord) -> Result<Option<VolumeRecord>, StoreError> {
        let json = encode(record)?;
        let _writing = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.write(|table| {
            let old = table
                .insert(record.name.as_str(), json.as_str())
                .map_err(db_err)?;
            // An undecodable old value is simply overwritten.
            Ok((old.and_then(|v| decode(&record.name, v.value()).ok()), true))
        })?;
        self.cached(|c| {
            c.insert(record.name.clone(), Arc::new(record.clone()));
        });
        Ok(old)
    }

    /// Forgets `name`; false if there was no record.
    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let _writing = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let removed = self.write(|table| {
            let removed = table.remove(name).map_err(db_err)?.is_some();
            Ok((removed, removed))
        })?;
        self.cached(|c| {
            c.remove(name);
        });
        Ok(removed)
    }

    /// Forgets `name` if its record satisfies `pred`, deciding in one write transaction (so
    /// no create or remove of that name can come in between). Returns the removed record;
    /// `None` if there was none or `pred` said no.
    pub fn remove_if(
        &self,
        name: &str,
        pred: impl FnOnce(&VolumeRecord) -> bool,
    ) -> Result<Option<VolumeRecord>, StoreError> {
        let _writing = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let removed = self.write(|table| {
            let record = match table.get(name).map_err(db_err)? {
                None => return Ok((None, false)),
                Some(v) => decode(name, v.value())?,
            };
            if !pred(&record) {
                return Ok((None, false));
            }
            table.remove(name).map_err(db_err)?;
            Ok((Some(record), true))
        })?;
        if removed.is_some() {
            self.cached(|c| {
                c.remove(name);
            });
        }
        Ok(removed)
    }

    /// Forgets every record that satisfies `pred`, in one write transaction; returns them
    /// sorted by name. Undecodable values are left alone.
    pub fn remove_where(
        &self,
        mut pred: impl FnMut(&VolumeRecord) -> bool,
    ) -> Result<Vec<VolumeRecord>, StoreError> {
        let _writing = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let doomed = self.write(|table| {
            let mut doomed = Vec::new();
            for entry in table.iter().map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                if let Ok(record) = decode(k.value(), v.value()) {
                    if pred(&record) {
                        doomed.push(record);
                    }
                }
            }
            for record in &doomed {
                table.remove(record.name.as_str()).map_err(db_err)?;
            }
            let changed = !doomed.is_empty();
            Ok((doomed, changed))
        })?;
        self.cached(|c| {
            for record in &doomed {
                c.remove(&record.name);
            }
        });
        Ok(doomed)
    }

    /// Applies a committed change to the in-memory records (callers hold `writer`).
    fn cached(&self, change: impl FnOnce(&mut BTreeMap<String, Arc<VolumeRecord>>)) {
        change(&mut self.cache.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// Runs `f` on the table in one write transaction. `f` answers its result and whether
    /// it changed anything: a change is committed durably before this returns; no change,
    /// or an error, aborts (no fsync spent, nothing written). Callers that change records
    /// hold `writer` around this and the cache update that follows.
    fn write<T>(
        &self,
        f: impl FnOnce(
            &mut redb::Table<'_, &'static str, &'static str>,
        ) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        // The default, spelled out: commit() returns only once the data is on disk.
        txn.set_durability(Durability::Immediate);
        let out = {
            let mut table = txn.open_table(VOLUMES).map_err(db_err)?;
            f(&mut table)
        };
        match out {
            Ok((v, true)) => {
                txn.commit().map_err(db_err)?;
                Ok(v)
            }
            Ok((v, false)) => {
                txn.abort().map_err(db_err)?;
                Ok(v)
            }
            Err(e) => {
                let _ = txn.abort();
                Err(e)
            }
        }
    }
}

fn encode(record: &VolumeRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Db(e.to_string()))
}

fn decode(name: &str, json: &str) -> Result<VolumeRecord, StoreError> {
    let record: VolumeRecord = serde_json::from_str(json).map_err(|e| StoreError::Decode {
        name: name.to_string(),
        message: e.to_string(),
    })?;
    if record.name != name {
        return Err(StoreError::Decode {
            name: name.to_string(),
            message: format!("record is named {:?}", record.name),
        });
    }
    Ok(record)
}

/// `DateTime<Utc>` as an RFC 3339 string with nanoseconds (chrono's serde feature is off).
mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, driver: &str) -> VolumeRecord {
        VolumeRecord::new(name, driver)
    }

    #[test]
    fn empty_maps_the_client_sent_are_remembered_and_old_records_read_as_not_sent() {
        let mut r = record("foo", "local");
        r.labels_sent = true;
        let json = encode(&r).unwrap();
        assert!(json.contains("\"labels_sent\":true") && !json.contains("options_sent"));
        assert_eq!(decode("foo", &json).unwrap(), r);
        let old = r#"{"name":"foo","driver":"local","labels":{},"options":{},"created_at":"2026-01-02T03:04:05.000000006Z","scope":"local"}"#;
        let old = decode("foo", old).unwrap();
        assert!(!old.labels_sent && !old.options_sent);
    }

    #[test]
    fn record_round_trips_through_json_with_nanoseconds() {
        let mut r = record("foo", "local");
        r.labels.insert("a".into(), "b".into());
        r.options.insert("type".into(), "tmpfs".into());
        let json = encode(&r).unwrap();
        assert_eq!(decode("foo", &json).unwrap(), r);
        assert!(json.contains(r#""created_at":""#), "{json}");
    }

    #[test]
    fn decode_rejects_a_record_stored_under_another_name() {
        let json = encode(&record("foo", "local")).unwrap();
        let err = decode("bar", &json).unwrap_err();
        assert!(err.to_string().contains("volume metadata of bar"), "{err}");
    }

    #[test]
    fn store_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<VolumeStore>();
        assert_send_sync::<super::super::local::LocalDriver>();
    }

    #[test]
    fn store_error_is_a_500() {
        let e: crate::error::Error = StoreError::Db("disk full".into()).into();
        assert_eq!(e.status(), 500);
        assert_eq!(e.message(), "volume metadata database: disk full");
    }
}
