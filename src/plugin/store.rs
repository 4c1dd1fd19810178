//! The persistent plugin store: records under `<data-root>/plugins/<id>/config.json`, name and
//! ID resolution as moby's store does it. The store is owned by the manager behind one lock.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{PluginConfig, PluginSettings};
use crate::distribution::reference::Reference;
use crate::error::{Error, Result};
use crate::fsutil;

/// The Plugin object of the Engine API; field order is the wire order the CLI prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plugin {
    #[serde(rename = "Config")]
    pub config: PluginConfig,
    #[serde(rename = "Enabled")]
    pub enabled: bool,
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "PluginReference")]
    pub plugin_reference: String,
    #[serde(rename = "Settings")]
    pub settings: PluginSettings,
}

/// What is kept on disk per plugin, in the layout moby uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    #[serde(rename = "plugin")]
    pub plugin: Plugin,
    /// Digest of the config blob.
    #[serde(rename = "Config")]
    pub config_digest: String,
    /// Layer blob digests, in order.
    #[serde(rename = "Blobsums")]
    pub blobsums: Vec<String>,
    #[serde(rename = "Manifest")]
    pub manifest_digest: String,
}

impl PluginRecord {
    pub fn blobs(&self) -> impl Iterator<Item = &String> {
        [&self.config_digest, &self.manifest_digest]
            .into_iter()
            .chain(self.blobsums.iter())
            .filter(|d| !d.is_empty())
    }
}

const RECORD_FILE: &str = "config.json";
const REMOVING_SUFFIX: &str = "-removing";

pub struct Store {
    root: PathBuf,
    plugins: BTreeMap<String, PluginRecord>,
}

pub fn is_plugin_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A random 64-hex ID whose 12-char short form is not all digits (moby's rule: short IDs must
/// never read as numbers).
pub fn new_plugin_id() -> String {
    loop {
        let id = fsutil::random_hex(32);
        if !id[..12].bytes().all(|b| b.is_ascii_digit()) {
            return id;
        }
    }
}

impl Store {
    /// Loads every complete record below `root` and sweeps what a crash may have left: plugin
    /// directories without a record, `<id>-removing` directories, staging directories.
    pub fn load(root: &Path) -> Result<Store> {
        fsutil::create_dir_mode(root, 0o700)?;
        let mut plugins = BTreeMap::new();
        for entry in fs::read_dir(root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.ends_with(REMOVING_SUFFIX)
                && is_plugin_id(&name[..name.len() - REMOVING_SUFFIX.len()])
            {
                log::info!("finishing interrupted removal of {}", path.display());
                fsutil::remove_all(&path)?;
                continue;
            }
            if !is_plugin_id(&name) {
                continue;
            }
            let record_path = path.join(RECORD_FILE);
            match fs::read(&record_path) {
                Ok(bytes) => match serde_json::from_slice::<PluginRecord>(&bytes) {
                    Ok(record) if record.plugin.id == name => {
                        plugins.insert(name, record);
                    }
                    Ok(_) => log::error!(
                        "{}: record names another plugin ID; skipped",
                        record_path.display()
                    ),
                    Err(e) => log::error!(
                        "{}: unreadable plugin record: {e}; skipped",
                        record_path.display()
                    ),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    log::info!("removing incomplete plugin directory {}", path.display());
                    fsutil::remove_all(&path)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Store {
            root: root.to_path_buf(),
            plugins,
        })
    }

    pub fn plugin_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    pub fn records(&self) -> impl Iterator<Item = &PluginRecord> {
        self.plugins.values()
    }

    pub fn name_taken(&self, name: &str) -> bool {
        self.plugins.values().any(|r| r.plugin.name == name)
    }

    /// moby `resolvePluginID`: full ID, then the name normalised with `:latest`, then a unique
    /// ID prefix. Errors quote `input` exactly as given.
    pub fn resolve(&self, input: &str) -> Result<&PluginRecord> {
        let not_found = || Error::NotFound(format!("plugin \"{input}\" not found"));
        if is_plugin_id(input) {
            return self.plugins.get(input).ok_or_else(not_found);
        }
        let reference = Reference::parse_normalized(input).map_err(|_| not_found())?;
        if reference.digest.is_some() {
            log::warn!("plugin lookup by digest is not supported: {input}");
            return Err(not_found());
        }
        let name = reference.with_default_tag().familiar_string();
        if let Some(record) = self.plugins.values().find(|r| r.plugin.name == name) {
            return Ok(record);
        }
        let mut matches = self
            .plugins
            .range(input.to_string()..)
            .take_while(|(id, _)| id.starts_with(input));
        match (matches.next(), matches.next()) {
            (Some((_, record)), None) => Ok(record),
            (Some(_), Some(_)) => Err(Error::InvalidParameter(format!(
                "multiple plugins found for \"{input}\""
            ))),
            _ => Err(not_found()),
        }
    }

    /// Writes the record durably and makes it current. The directory must exist.
    pub fn save(&mut self, record: PluginRecord) -> Result<()> {
        let bytes = serde_json::to_vec(&record).map_err(|e| Error::System(e.to_string()))?;
        let path = self.plugin_dir(&record.plugin.id).join(RECORD_FILE);
        fsutil::write_atomic(&path, &bytes, 0o600)?;
        self.plugins.insert(record.plugin.id.clone(), record);
        Ok(())
    }

    /// Forgets a plugin: its directory is renamed aside (the commit point) and returned for the
    /// caller to delete outside the lock.
    pub fn remove(&mut self, id: &str) -> Result<PathBuf> {
        let dir = self.plugin_dir(id);
        let aside = self.root.join(format!("{id}{REMOVING_SUFFIX}"));
        fs::rename(&dir, &aside)?;
        fsutil::sync_dir(&self.root)?;
        self.plugins.remove(id);
        Ok(aside)
    }

    /// Every blob some plugin still references.
    pub fn referenced_blobs(&self) -> HashSet<String> {
        self.plugins
            .values()
            .flat_map(|r| r.blobs().cloned())
            .collect()
    }
}
