//! Unpacking a pull's layers while they download. One blocking worker applies the layers, in
//! manifest order, to the pull's staging rootfs with [`unpack_layer`]. A stored layer is read
//! from its blob; a layer being downloaded is read from its ingest file while the download is
//! still writing it: the download reports through a [`Feed`] how far the file is written and
//! how it ended, and the worker waits for more bytes when it catches up. gunzip, untar and the
//! writes of the rootfs thus run on the worker's core while the download receives, hashes and
//! writes the blob on its own.
//!
//! **Unverified bytes.** A layer's digest is known only when its download ends, so the worker
//! unpacks bytes nobody has verified yet. It does so only into the private staging rootfs of
//! this one pull, with all the checks of [`unpack_layer`], and a layer's unpacking ends
//! successfully only if its reader saw what it needed; the caller must still accept a
//! downloaded layer only once its download returned verified, and must discard the staging
//! rootfs (after [`LayerPipeline::finish`] returned, so nothing writes there any more) when any
//! download or any layer failed. A failed download ([`Feed::end`] with `false`) makes the
//! worker's next read fail at once, whatever is left in the file.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};

use tokio::sync::oneshot;

use super::extract::{unpack_layer, ExtractError, UnpackLimit};

/// The outcome of unpacking one layer. The sender is dropped without an answer when an earlier
/// layer failed (the worker stops at the first failure) or the worker died.
pub type Unpacked = oneshot::Receiver<Result<(), ExtractError>>;

/// The worker and the layers handed to it; see the module documentation.
pub struct LayerPipeline {
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<tokio::task::JoinHandle<()>>,
    aborted: Arc<AtomicBool>,
    feeds: Vec<Arc<Feed>>,
}

struct Job {
    source: Source,
    done: oneshot::Sender<Result<(), ExtractError>>,
}

enum Source {
    /// A complete blob (already in the store).
    Stored(PathBuf),
    /// An ingest file being downloaded.
    Growing(PathBuf, Arc<Feed>),
}

impl LayerPipeline {
    /// Starts the worker (on Tokio's blocking pool) for layers unpacked below `rootfs`, which
    /// exists, each within `limit`.
    pub fn start(rootfs: &Path, limit: UnpackLimit) -> LayerPipeline {
        let (jobs, queue) = mpsc::channel::<Job>();
        let aborted = Arc::new(AtomicBool::new(false));
        let (root, stop) = (rootfs.to_path_buf(), aborted.clone());
        let worker = tokio::task::spawn_blocking(move || work(queue, &root, &stop, limit));
        LayerPipeline {
            jobs: Some(jobs),
            worker: Some(worker),
            aborted,
            feeds: Vec::new(),
        }
    }

    /// Queues a stored blob.
    pub fn unpack_stored(&mut self, blob: PathBuf) -> Unpacked {
        self.queue(Source::Stored(blob))
    }

    /// Queues the ingest file `path` a download is about to write; the download reports its
    /// progress and end through the returned feed.
    pub fn unpack_growing(&mut self, path: PathBuf) -> (Arc<Feed>, Unpacked) {
        let feed = Arc::new(Feed::default());
        self.feeds.push(feed.clone());
        let unpacked = self.queue(Source::Growing(path, feed.clone()));
        (feed, unpacked)
    }

    fn queue(&mut self, source: Source) -> Unpacked {
        let (done, unpacked) = oneshot::channel();
        if let Some(jobs) = &self.jobs {
            // A worker that stopped (after a failure) drops the job, and with it `done`.
            let _ = jobs.send(Job { source, done });
        }
        unpacked
    }

    /// No more layers: waits until the worker has ended, so nothing writes below the rootfs
    /// any more. With `abort` the worker stops at its next read (every feed not yet ended is
    /// failed) instead of finishing the queued layers.
    pub async fn finish(mut self, abort: bool) {
        if abort {
            self.abort();
        }
        self.jobs = None;
        if let Some(worker) = self.worker.take() {
            if let Err(e) = worker.await {
                log::warn!("layer unpacking worker failed: {e}");
            }
        }
    }

    fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        for feed in &self.feeds {
            feed.end(false);
        }
    }
}

impl Drop for LayerPipeline {
    /// Dropped without [`finish`](Self::finish): the worker is told to stop, but nobody waits.
    fn drop(&mut self) {
        if self.worker.is_some() {
            self.abort();
        }
    }
}

fn work(queue: mpsc::Receiver<Job>, rootfs: &Path, aborted: &AtomicBool, limit: UnpackLimit) {
    for job in queue {
        let result = if aborted.load(Ordering::SeqCst) {
            Err(ExtractError::Io("cancelled".into()))
        } else {
            match job.source {
                Source::Stored(path) => File::open(&path)
                    .map_err(|e| ExtractError::Io(format!("open {}: {e}", path.display())))
                    .and_then(|file| unpack_layer(Abortable { file, aborted }, rootfs, limit)),
                Source::Growing(path, feed) => unpack_layer(
                    GrowingFile {
                        path,
                        feed,
                        file: None,
                        pos: 0,
                        aborted,
                    },
                    rootfs,
                    limit,
                ),
            }
        };
        let failed = result.is_err();
        let _ = job.done.send(result);
        if failed {
            return;
        }
    }
}

fn cancelled() -> io::Error {
    io::Error::other("cancelled")
}

/// A stored blob, read until the pipeline is aborted.
struct Abortable<'a> {
    file: File,
    aborted: &'a AtomicBool,
}

impl Read for Abortable<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.aborted.load(Ordering::Relaxed) {
            return Err(cancelled());
        }
        self.file.read(buf)
    }
}

/// How far a download has written its file, and how it ended.
#[derive(Default)]
pub struct Feed {
    state: Mutex<FeedState>,
    changed: Condvar,
}

#[derive(Default)]
struct FeedState {
    written: u64,
    /// `Some(true)`: complete and verified; `Some(false)`: failed (or aborted).
    end: Option<bool>,
}

impl Feed {
    /// The file holds `written` bytes.
    pub fn advance(&self, written: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.written = state.written.max(written);
        self.changed.notify_all();
    }

    /// The download ended: verified (`true`) or failed (`false`). The first end counts.
    pub fn end(&self, verified: bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.end.get_or_insert(verified);
        self.changed.notify_all();
    }

    /// Blocks until bytes past `pos` are in the file (their count), the download ended
    /// verified with none left (`0`), or it failed.
    fn wait_past(&self, pos: u64) -> io::Result<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match state.end {
                Some(false) => return Err(io::Error::other("the download failed")),
                _ if state.written > pos => return Ok(state.written - pos),
                Some(true) => return Ok(0),
                None => {
                    state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }
}

/// An ingest file read as its download writes it.
struct GrowingFile<'a> {
    path: PathBuf,
    feed: Arc<Feed>,
    /// Opened at the first byte (the download creates the file).
    file: Option<File>,
    pos: u64,
    aborted: &'a AtomicBool,
}

impl Read for GrowingFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.aborted.load(Ordering::Relaxed) {
            return Err(cancelled());
        }
        let available = self.feed.wait_past(self.pos)?;
        if available == 0 {
            return Ok(0);
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(File::open(&self.path)?),
        };
        let want = buf
            .len()
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        let n = file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the download's file is shorter than reported",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_path(name).unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            tar.append(&h, *data).unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar.into_inner().unwrap()).unwrap();
        gz.finish().unwrap()
    }

    /// Writes `bytes` to `path` in small steps, reporting each to `feed`.
    fn feed_slowly(path: &Path, bytes: &[u8], feed: &Feed) {
        let mut file = File::create(path).unwrap();
        let mut written = 0;
        for chunk in bytes.chunks(4096) {
            file.write_all(chunk).unwrap();
            written += chunk.len() as u64;
            feed.advance(written);
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    #[tokio::test]
    async fn growing_and_stored_layers_unpack_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        let stored = dir.path().join("stored");
        std::fs::write(&stored, layer(&[("a", b"stored"), ("b", b"stored")])).unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let growing = layer(&[("b", b"downloaded"), ("big", &big)]);

        let mut pipeline = LayerPipeline::start(&rootfs, UnpackLimit::default());
        let first = pipeline.unpack_stored(stored);
        let path = dir.path().join("ingest");
        let (feed, second) = pipeline.unpack_growing(path.clone());
        let writer = std::thread::spawn(move || {
            feed_slowly(&path, &growing, &feed);
            feed.end(true);
        });
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        writer.join().unwrap();
        pipeline.finish(false).await;
        assert_eq!(std::fs::read(rootfs.join("a")).unwrap(), b"stored");
        assert_eq!(std::fs::read(rootfs.join("b")).unwrap(), b"downloaded");
        assert_eq!(std::fs::read(rootfs.join("big")).unwrap(), big);
    }

    #[tokio::test]
    async fn a_failed_download_stops_the_worker_mid_layer() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 13 % 241) as u8).collect();
        let bytes = layer(&[("first", b"x"), ("big", &big)]);
        let mut pipeline = LayerPipeline::start(&rootfs, UnpackLimit::default());
        let path = dir.path().join("ingest");
        let (feed, unpacked) = pipeline.unpack_growing(path.clone());
        let later = pipeline.unpack_stored(dir.path().join("never-read"));
        // Half the layer arrives, then the download fails: the worker must not wait for more.
        feed_slowly(&path, &bytes[..bytes.len() / 2], &feed);
        feed.end(false);
        let err = unpacked.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("the download failed"), "{err}");
        assert!(later.await.is_err(), "no layer is unpacked after a failure");
        pipeline.finish(false).await;
    }

    #[tokio::test]
    async fn finish_with_abort_stops_a_waiting_worker() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        let mut pipeline = LayerPipeline::start(&rootfs, UnpackLimit::default());
        let (_feed, unpacked) = pipeline.unpack_growing(dir.path().join("ingest"));
        // Nothing was written: the worker waits on the feed until the abort.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        pipeline.finish(true).await;
        assert!(unpacked.await.unwrap().is_err());
    }
}
