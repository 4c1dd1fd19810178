//! Content-addressed blobs (manifests, configs, layers) shared by all plugins:
//! `<root>/blobs/sha256/<hex>`, with `<root>/ingest/` for blobs being written.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::fsutil;

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// A blob written to the ingest area whose digest is known but which is not yet in the store.
#[derive(Debug)]
pub struct StagedBlob {
    pub path: PathBuf,
    pub digest: String,
    pub size: u64,
}

impl BlobStore {
    pub fn open(root: &Path) -> io::Result<BlobStore> {
        fs::create_dir_all(root.join("blobs/sha256"))?;
        fs::create_dir_all(root.join("ingest"))?;
        Ok(BlobStore {
            root: root.to_path_buf(),
        })
    }

    pub fn path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join("blobs/sha256").join(hex)
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_file()
    }

    pub fn read(&self, digest: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(digest))
    }

    /// A fresh path in the ingest area for a blob about to be written.
    pub fn ingest_path(&self) -> PathBuf {
        self.root.join("ingest").join(fsutil::random_hex(16))
    }

    /// Writes `bytes` to the ingest area and returns it staged (not fsynced: [`commit`]
    /// syncs it).
    ///
    /// [`commit`]: Self::commit
    pub fn stage_bytes(&self, bytes: &[u8]) -> io::Result<StagedBlob> {
        let path = self.ingest_path();
        let mut file = File::create(&path)?;
        file.write_all(bytes)?;
        Ok(StagedBlob {
            path,
            digest: format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
            size: bytes.len() as u64,
        })
    }

    /// Moves a staged blob into the store (fsynced). A blob already present is kept and the
    /// staged copy dropped: content addressing makes them identical.
    pub fn commit(&self, staged: &StagedBlob) -> io::Result<()> {
        let target = self.path(&staged.digest);
        if target.is_file() {
            return fs::remove_file(&staged.path);
        }
        File::open(&staged.path)?.sync_all()?;
        fs::rename(&staged.path, &target)?;
        fsutil::sync_dir(target.parent().expect("blob path has a parent"))
    }

    /// Drops a staged blob that will not be committed.
    pub fn discard(&self, staged: &StagedBlob) {
        let _ = fs::remove_file(&staged.path);
    }

    /// Removes every blob not in `keep` and everything left in the ingest area. Callers hold
    /// the plugin store lock so no commit runs concurrently.
    pub fn collect_garbage(&self, keep: &HashSet<String>) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(self.root.join("blobs/sha256"))? {
            let entry = entry?;
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            if !keep.contains(&digest) {
                fsutil::remove_all(&entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Clears leftovers of writes interrupted by a crash. Only safe before serving.
    pub fn sweep_ingest(&self) -> io::Result<()> {
        for entry in fs::read_dir(self.root.join("ingest"))? {
            fsutil::remove_all(&entry?.path())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_blobs_are_content_addressed_and_committed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let a = store.stage_bytes(b"hello").unwrap();
        assert_eq!(
            a.digest,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(!store.contains(&a.digest));
        store.commit(&a).unwrap();
        assert_eq!(store.read(&a.digest).unwrap(), b"hello");
        let again = store.stage_bytes(b"hello").unwrap();
        store.commit(&again).unwrap();
        assert!(!again.path.exists());
    }

    #[test]
    fn garbage_collection_keeps_only_referenced_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let keep = store.stage_bytes(b"keep").unwrap();
        let drop = store.stage_bytes(b"drop").unwrap();
        store.commit(&keep).unwrap();
        store.commit(&drop).unwrap();
        let removed = store
            .collect_garbage(&HashSet::from([keep.digest.clone()]))
            .unwrap();
        assert_eq!(removed, 1);
        assert!(store.contains(&keep.digest));
        assert!(!store.contains(&drop.digest));
    }
}
