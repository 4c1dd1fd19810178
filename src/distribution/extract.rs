//! Safe unpacking of plugin filesystems: the `plugin create` context tar and registry layers.
//! Nothing in a tar may write outside the target directory.
//!
//! Rules enforced for every entry (see the unit tests for each hostile shape):
//! * names are cleaned lexically (`clean_entry_path`): a leading `/` is dropped (absolute names
//!   are taken relative to the root), `.` and empty components vanish, and a `..` that would climb
//!   above the root makes the whole tar unsafe;
//! * symlinks whose relative target, joined to the link's directory, climbs above the root are
//!   refused (`symlink_target_stays_inside`); absolute targets are fine (they are resolved inside
//!   the plugin's root at run time);
//! * hardlinks must point at a non-directory this very extraction already wrote (in a create
//!   context: below `rootfs/`);
//! * nothing is ever written through a symlink: every parent directory of an entry must be a real
//!   directory (a symlinked parent is refused), existing files and links at the entry's own path are
//!   unlinked (never followed), files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`;
//! * character and block devices are skipped with a warning (neither created nor re-packed).
//!
//! Modes (setuid/setgid/sticky included), uid/gid (only when running as root, like GNU tar),
//! mtimes (directories at the end), symlinks, hardlinks, FIFOs and `SCHILY.xattr.*` PAX records
//! (best effort on disk, like dockerd) are preserved. The `rootfs/` entry itself sets the mode and
//! mtime of the target directory, not its owner.
//!
//! The extractor keeps a map of what it has created below the target, so parent checks cost no
//! system calls; when the target was not empty at the start it falls back to `lstat`. The layer is
//! gzip-compressed on worker threads (`ParallelGzip`) while the calling thread extracts.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, BufWriter, Cursor, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use flate2::bufread::MultiGzDecoder;
use nix::libc;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// What a create context held besides the rootfs written to disk.
#[derive(Debug)]
pub struct CreateContext {
    /// Raw bytes of the last `config.json` entry.
    pub config_json: Vec<u8>,
    /// `sha256:<hex>` of the gzip layer written to `layer_out`.
    pub layer_digest: String,
    /// Byte size of the gzip layer.
    pub layer_size: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtractError {
    /// moby: `no rootfs found: EOF`
    #[error("no rootfs found: EOF")]
    NoRootfs,
    /// moby: `config not found`
    #[error("config not found")]
    NoConfig,
    /// An entry that would escape the target or is otherwise unsafe.
    #[error("{0}")]
    Unsafe(String),
    /// Corrupt or truncated input: `failed to read from tar: <err>`.
    #[error("failed to read from tar: {0}")]
    Read(String),
    /// Local I/O failure while writing.
    #[error("{0}")]
    Io(String),
}

/// Read buffer in front of the request body.
const INPUT_BUF: usize = 256 * 1024;
/// Buffer between the gzip writer and `layer_out`.
const LAYER_BUF: usize = 256 * 1024;
/// File data is written to disk in chunks of (at least) this size.
const FILE_BUF: usize = 256 * 1024;

/// Read a create context (plain tar, or gzip-compressed tar detected by magic bytes): entries
/// under `rootfs/` are written safely below `rootfs_dir` (which exists and is empty) and also
/// re-packed, with the `rootfs/` prefix stripped, into a gzip tar written to `layer_out`.
///
/// Errors come in stream order, like dockerd: an unsafe or corrupt entry fails at once; at the end
/// a missing rootfs (`NoRootfs`) is reported before a missing `config.json` (`NoConfig`).
pub fn unpack_create_context<R: Read, W: Write>(
    input: R,
    rootfs_dir: &Path,
    layer_out: W,
) -> Result<CreateContext, ExtractError> {
    let (gzip, src) = sniff(input)?;
    if gzip {
        create_context_from_tar(MultiGzDecoder::new(src), rootfs_dir, layer_out)
    } else {
        create_context_from_tar(src, rootfs_dir, layer_out)
    }
}

/// Apply one registry layer (plain or gzip tar, detected by magic bytes) below `dir` with the same
/// safety rules as [`unpack_create_context`]. AUFS-style whiteouts are honoured: `.wh.<name>`
/// removes `<name>`, `.wh..wh..opq` empties its directory of everything this call did not write,
/// other `.wh..wh.*` entries are skipped.
pub fn unpack_layer<R: Read>(input: R, dir: &Path) -> Result<(), ExtractError> {
    let (gzip, src) = sniff(input)?;
    if gzip {
        layer_from_tar(MultiGzDecoder::new(src), dir)
    } else {
        layer_from_tar(src, dir)
    }
}

type Sniffed<R> = io::Chain<Cursor<Vec<u8>>, BufReader<R>>;

/// Peeks at the first two bytes for the gzip magic; returns a reader yielding the whole input.
fn sniff<R: Read>(input: R) -> Result<(bool, Sniffed<R>), ExtractError> {
    let mut r = BufReader::with_capacity(INPUT_BUF, input);
    let mut head = Vec::with_capacity(2);
    while head.len() < 2 {
        let buf = match r.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        if buf.is_empty() {
            break;
        }
        let n = buf.len().min(2 - head.len());
        head.extend_from_slice(&buf[..n]);
        r.consume(n);
    }
    let gzip = head == [0x1f, 0x8b];
    Ok((gzip, Cursor::new(head).chain(r)))
}

fn create_context_from_tar<R: Read, W: Write>(
    src: R,
    rootfs_dir: &Path,
    layer_out: W,
) -> Result<CreateContext, ExtractError> {
    let mut unpacker = Unpacker::new(rootfs_dir)?;
    let mut layer = LayerWriter::new(layer_out);
    let mut config: Option<Vec<u8>> = None;
    let mut has_rootfs = false;

    let mut archive = tar::Archive::new(src);
    for entry in archive.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        let name = entry.path_bytes().into_owned();
        let clean = clean_entry_path(&name).ok_or_else(|| unsafe_entry(&name, CLIMB))?;
        if clean == b"config.json" {
            config = Some(read_small_entry(&mut entry)?);
            continue;
        }
        let Some(rel) = strip_rootfs(&clean) else {
            continue; // everything outside rootfs/ is ignored
        };
        has_rootfs = true;
        let link = if entry.header().entry_type() == EntryType::Link {
            let target = entry.link_name_bytes().unwrap_or_default().into_owned();
            let clean_target = clean_entry_path(&target).ok_or_else(|| {
                unsafe_entry(
                    &name,
                    format_args!("hardlink target {} {CLIMB}", q(&target)),
                )
            })?;
            match strip_rootfs(&clean_target) {
                Some(t) => Some(t.to_vec()),
                None => {
                    return Err(unsafe_entry(
                        &name,
                        format_args!("hardlink target {} is outside rootfs/", q(&target)),
                    ))
                }
            }
        } else {
            None
        };
        unpacker.put(&mut entry, &name, rel, link.as_deref(), Some(&mut layer))?;
    }

    if !has_rootfs {
        return Err(ExtractError::NoRootfs);
    }
    let config_json = config.ok_or(ExtractError::NoConfig)?;
    unpacker.finish()?;
    let (layer_digest, layer_size) = layer
        .finish()
        .map_err(|e| ExtractError::Io(format!("failed to write rootfs layer: {e}")))?;
    Ok(CreateContext {
        config_json,
        layer_digest,
        layer_size,
    })
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";

fn layer_from_tar<R: Read>(src: R, dir: &Path) -> Result<(), ExtractError> {
    let mut unpacker = Unpacker::new(dir)?;
    let mut archive = tar::Archive::new(src);
    for entry in archive.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        let name = entry.path_bytes().into_owned();
        let rel = clean_entry_path(&name).ok_or_else(|| unsafe_entry(&name, CLIMB))?;
        let (parent, base) = split_last(&rel);
        if base == WHITEOUT_OPAQUE {
            unpacker.opaque(&name, parent)?;
            continue;
        }
        if base.starts_with(WHITEOUT_META_PREFIX) {
            continue;
        }
        if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
            if matches!(hidden, b"" | b"." | b"..") {
                return Err(unsafe_entry(&name, "invalid whiteout name"));
            }
            let mut victim = parent.to_vec();
            if !victim.is_empty() {
                victim.push(b'/');
            }
            victim.extend_from_slice(hidden);
            unpacker.whiteout(&name, &victim)?;
            continue;
        }
        let link = if entry.header().entry_type() == EntryType::Link {
            let target = entry.link_name_bytes().unwrap_or_default().into_owned();
            Some(clean_entry_path(&target).ok_or_else(|| {
                unsafe_entry(
                    &name,
                    format_args!("hardlink target {} {CLIMB}", q(&target)),
                )
            })?)
        } else {
            None
        };
        unpacker.put::<_, io::Sink>(&mut entry, &name, &rel, link.as_deref(), None)?;
    }
    unpacker.finish()
}

// ---------------------------------------------------------------------------------------------
// Pure path rules.

const CLIMB: &str = "climbs above the root (\"..\" breakout)";

/// Lexically cleans a tar entry name (or hardlink target): a leading `/` is dropped (absolute
/// names are relative to the root), empty and `.` components vanish, `..` removes the previous
/// component. Returns the components joined by `/` (empty for the root itself), or `None` when a
/// `..` would climb above the root.
fn clean_entry_path(name: &[u8]) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(name.len());
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.is_empty() {
                    return None;
                }
                let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(comp);
            }
        }
    }
    Some(out)
}

/// For a cleaned context path, the rootfs-relative part if it lies in `rootfs/` (`""` for the
/// `rootfs` directory itself).
fn strip_rootfs(clean: &[u8]) -> Option<&[u8]> {
    if clean == b"rootfs" {
        Some(b"")
    } else {
        clean.strip_prefix(b"rootfs/")
    }
}

/// Whether a symlink at `link` (cleaned, root-relative) with target `target` stays inside the
/// root when the target is joined lexically to the link's directory. Absolute targets always do:
/// they are resolved inside the plugin's root at run time.
fn symlink_target_stays_inside(link: &[u8], target: &[u8]) -> bool {
    if target.first() == Some(&b'/') {
        return true;
    }
    let mut depth = link.split(|&b| b == b'/').filter(|c| !c.is_empty()).count();
    depth = depth.saturating_sub(1); // the link's parent directory
    for comp in target.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    true
}

/// `("a/b", "c")` for `"a/b/c"`, `("", "c")` for `"c"`.
fn split_last(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

fn q(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

fn unsafe_entry(name: &[u8], why: impl std::fmt::Display) -> ExtractError {
    ExtractError::Unsafe(format!("refusing unsafe tar entry {}: {why}", q(name)))
}

fn bytes_path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// Maps an error reading the input to `ExtractError::Read`, using Go's `unexpected EOF` for a
/// truncated stream and `archive/tar: invalid tar header` for garbage.
fn read_error(e: io::Error) -> ExtractError {
    let mut texts = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cur {
        texts.push(err.to_string());
        cur = err.source();
    }
    let has = |needle: &str| texts.iter().any(|t| t.contains(needle));
    if e.kind() == io::ErrorKind::UnexpectedEof
        || has("failed to read entire block")
        || has("unexpected EOF")
        || has("unexpected end of file")
    {
        ExtractError::Read("unexpected EOF".into())
    } else if has("checksum mismatch") || has("when getting cksum") {
        ExtractError::Read("archive/tar: invalid tar header".into())
    } else {
        ExtractError::Read(texts.join(": "))
    }
}

fn io_error(what: impl std::fmt::Display, path: &Path, e: impl std::fmt::Display) -> ExtractError {
    ExtractError::Io(format!("{what} {}: {e}", path.display()))
}

fn unexpected_eof() -> ExtractError {
    ExtractError::Read("unexpected EOF".into())
}

/// Reads a (small) entry completely, failing on a short read.
fn read_small_entry<R: Read>(entry: &mut tar::Entry<R>) -> Result<Vec<u8>, ExtractError> {
    let want = entry.size();
    let mut data = Vec::with_capacity(want.min(1 << 20) as usize);
    entry.read_to_end(&mut data).map_err(read_error)?;
    if (data.len() as u64) < want {
        return Err(unexpected_eof());
    }
    Ok(data)
}

// ---------------------------------------------------------------------------------------------
// Entry metadata.

struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    uname: Vec<u8>,
    gname: Vec<u8>,
    /// `SCHILY.xattr.<name>` PAX records: (name, value).
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    fn read<R: Read>(entry: &mut tar::Entry<R>) -> Result<Meta, ExtractError> {
        let h = entry.header();
        let mut meta = Meta {
            mode: h.mode().map_err(read_error)? & 0o7777,
            uid: h.uid().map_err(read_error)?,
            gid: h.gid().map_err(read_error)?,
            mtime: h.mtime().map_err(read_error)?,
            uname: h.username_bytes().unwrap_or_default().to_vec(),
            gname: h.groupname_bytes().unwrap_or_default().to_vec(),
            xattrs: Vec::new(),
        };
        if let Some(pax) = entry.pax_extensions().map_err(read_error)? {
            for ext in pax {
                let ext = ext.map_err(read_error)?;
                let (key, value) = (ext.key_bytes(), ext.value_bytes());
                let int = || {
                    let digits = value.split(|&b| b == b'.').next().unwrap_or_default();
                    std::str::from_utf8(digits).ok()?.parse::<u64>().ok()
                };
                match key {
                    b"uid" => meta.uid = int().unwrap_or(meta.uid),
                    b"gid" => meta.gid = int().unwrap_or(meta.gid),
                    b"mtime" => meta.mtime = int().unwrap_or(meta.mtime),
                    b"uname" => meta.uname = value.to_vec(),
                    b"gname" => meta.gname = value.to_vec(),
                    _ => {
                        if let Some(attr) = key.strip_prefix(b"SCHILY.xattr.") {
                            meta.xattrs.push((attr.to_vec(), value.to_vec()));
                        }
                    }
                }
            }
        }
        Ok(meta)
    }

    fn ids(&self, path: &Path) -> Result<(u32, u32), ExtractError> {
        let uid = u32::try_from(self.uid);
        let gid = u32::try_from(self.gid);
        match (uid, gid) {
            (Ok(u), Ok(g)) => Ok((u, g)),
            _ => Err(io_error(
                "uid/gid out of range for",
                path,
                format_args!("{}:{}", self.uid, self.gid),
            )),
        }
    }

    fn time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.mtime.min(i64::MAX as u64 / 2))
    }

    fn timespec(&self) -> TimeSpec {
        TimeSpec::new(self.mtime.min(i64::MAX as u64 / 2) as i64, 0)
    }
}

// ---------------------------------------------------------------------------------------------
// The re-packed gzip layer.

/// Counts and hashes every byte written to the wrapped writer.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Uncompressed bytes per independently compressed gzip segment.
const GZ_BLOCK: usize = 1024 * 1024;
/// Upper bound on compression threads per layer.
const GZ_MAX_WORKERS: usize = 4;

/// A gzip writer compressing on worker threads, pigz style: the stream is cut into fixed
/// [`GZ_BLOCK`]-byte blocks, each deflated independently into a raw segment ending in a sync
/// flush (the last one in a final block), and the segments are written in order, on the calling
/// thread, as one ordinary gzip member. The output depends only on the input bytes and the level,
/// never on thread timing, so digests are reproducible. Small streams (one block) are compressed
/// inline without any thread.
struct ParallelGzip<W: Write> {
    out: W,
    level: flate2::Compression,
    block: Vec<u8>,
    /// Emptied block buffers handed back by the workers.
    free: Vec<Vec<u8>>,
    workers: Vec<GzWorker>,
    max_workers: usize,
    submitted: u64,
    written: u64,
    crc: flate2::Crc,
    header_written: bool,
}

struct GzWorker {
    jobs: mpsc::Sender<GzJob>,
    done: mpsc::Receiver<io::Result<GzSegment>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

struct GzJob {
    data: Vec<u8>,
    last: bool,
}

struct GzSegment {
    deflate: Vec<u8>,
    crc: flate2::Crc,
    /// The job's input buffer, cleared, for reuse.
    spare: Vec<u8>,
}

fn gz_segment(c: &mut flate2::Compress, mut data: Vec<u8>, last: bool) -> io::Result<GzSegment> {
    let gz_err = |what: String| io::Error::other(format!("gzip: {what}"));
    let mut crc = flate2::Crc::new();
    crc.update(&data);
    c.reset();
    // Room for the worst case (stored blocks) so a single call consumes all input and completes
    // the flush: miniz may return early from a sync flush that ran out of output space, leaving
    // part of the block behind, and nothing tells the caller.
    let mut deflate = Vec::with_capacity(data.len() + data.len() / 8 + 4096);
    if last {
        loop {
            let consumed = c.total_in() as usize;
            let status = c
                .compress_vec(
                    &data[consumed..],
                    &mut deflate,
                    flate2::FlushCompress::Finish,
                )
                .map_err(|e| gz_err(e.to_string()))?;
            if status == flate2::Status::StreamEnd {
                break;
            }
            deflate.reserve(64 * 1024);
        }
    } else {
        c.compress_vec(&data, &mut deflate, flate2::FlushCompress::Sync)
            .map_err(|e| gz_err(e.to_string()))?;
        // A completed sync flush consumed everything and ends in an empty stored block.
        let complete = c.total_in() as usize == data.len()
            && deflate.len() < deflate.capacity()
            && deflate.ends_with(&[0, 0, 0xff, 0xff]);
        if !complete {
            return Err(gz_err("incomplete sync flush".into()));
        }
    }
    data.clear();
    Ok(GzSegment {
        deflate,
        crc,
        spare: data,
    })
}

impl<W: Write> ParallelGzip<W> {
    fn new(out: W, level: flate2::Compression) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        ParallelGzip {
            out,
            level,
            block: Vec::with_capacity(GZ_BLOCK),
            free: Vec::new(),
            workers: Vec::new(),
            max_workers: cpus.clamp(1, GZ_MAX_WORKERS),
            submitted: 0,
            written: 0,
            crc: flate2::Crc::new(),
            header_written: false,
        }
    }

    fn spawn_worker(&mut self) -> io::Result<()> {
        let (jobs, job_rx) = mpsc::channel::<GzJob>();
        let (done_tx, done) = mpsc::channel();
        let level = self.level;
        let handle = std::thread::Builder::new()
            .name("berth-gzip".into())
            .spawn(move || {
                let mut c = flate2::Compress::new(level, false);
                while let Ok(job) = job_rx.recv() {
                    if done_tx
                        .send(gz_segment(&mut c, job.data, job.last))
                        .is_err()
                    {
                        break;
                    }
                }
            })?;
        self.workers.push(GzWorker {
            jobs,
            done,
            handle: Some(handle),
        });
        Ok(())
    }

    /// Hands the current block to a worker (or compresses it inline when it is the only one).
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let fresh = self
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(GZ_BLOCK));
        let data = std::mem::replace(&mut self.block, fresh);
        if last && self.workers.is_empty() {
            let mut c = flate2::Compress::new(self.level, false);
            let seg = gz_segment(&mut c, data, true)?;
            self.submitted += 1;
            return self.emit(seg);
        }
        let n = self.max_workers as u64;
        while self.submitted - self.written >= 2 * n {
            self.collect(true)?;
        }
        let k = (self.submitted % n) as usize;
        if k == self.workers.len() {
            self.spawn_worker()?;
        }
        self.workers[k]
            .jobs
            .send(GzJob { data, last })
            .map_err(|_| io::Error::other("gzip worker thread died"))?;
        self.submitted += 1;
        while self.written < self.submitted && self.collect(false)? {}
        Ok(())
    }

    /// Writes the next segment in order if it is ready (or waits for it when `wait`).
    fn collect(&mut self, wait: bool) -> io::Result<bool> {
        let k = (self.written % self.max_workers as u64) as usize;
        let done = &self.workers[k].done;
        let res = if wait {
            done.recv()
                .map_err(|_| io::Error::other("gzip worker thread died"))?
        } else {
            match done.try_recv() {
                Ok(res) => res,
                Err(mpsc::TryRecvError::Empty) => return Ok(false),
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(io::Error::other("gzip worker thread died"))
                }
            }
        };
        self.emit(res?)?;
        Ok(true)
    }

    fn emit(&mut self, seg: GzSegment) -> io::Result<()> {
        if !self.header_written {
            // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=4 (fastest) OS=255 (unknown)
            self.out
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255])?;
            self.header_written = true;
        }
        self.out.write_all(&seg.deflate)?;
        self.crc.combine(&seg.crc);
        self.written += 1;
        if self.free.len() < 2 * self.max_workers {
            self.free.push(seg.spare);
        }
        Ok(())
    }

    /// Ends the gzip member and returns the inner writer.
    fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while self.written < self.submitted {
            self.collect(true)?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.out.write_all(&trailer)?;
        for worker in std::mem::take(&mut self.workers) {
            drop(worker.jobs);
            if let Some(handle) = worker.handle {
                let _ = handle.join();
            }
        }
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            let take = (GZ_BLOCK - self.block.len()).min(buf.len());
            self.block.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.block.len() == GZ_BLOCK {
                self.submit(false)?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // segments are only complete at block boundaries
    }
}

struct LayerWriter<W: Write> {
    tar: tar::Builder<ParallelGzip<BufWriter<HashingWriter<W>>>>,
}

impl<W: Write> LayerWriter<W> {
    fn new(out: W) -> Self {
        let hashing = HashingWriter {
            inner: out,
            hasher: Sha256::new(),
            written: 0,
        };
        let gz = ParallelGzip::new(
            BufWriter::with_capacity(LAYER_BUF, hashing),
            flate2::Compression::fast(),
        );
        LayerWriter {
            tar: tar::Builder::new(gz),
        }
    }

    /// Appends one entry; `name` must be cleaned (relative, no `..`), with a trailing `/` for
    /// directories.
    fn append(
        &mut self,
        meta: &Meta,
        kind: EntryType,
        name: &[u8],
        link: Option<&[u8]>,
        size: u64,
        data: impl Read,
    ) -> io::Result<()> {
        if !meta.xattrs.is_empty() {
            let mut records = Vec::new();
            for (key, value) in &meta.xattrs {
                let mut kv = b"SCHILY.xattr.".to_vec();
                kv.extend_from_slice(key);
                kv.push(b'=');
                kv.extend_from_slice(value);
                kv.push(b'\n');
                records.extend_from_slice(&pax_record(&kv));
            }
            self.extension(b'x', b"././@PaxHeader", &records)?;
        }
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mtime(meta.mtime);
        h.set_size(size);
        {
            let gnu = h.as_gnu_mut().expect("gnu header");
            copy_field(&mut gnu.uname, &meta.uname);
            copy_field(&mut gnu.gname, &meta.gname);
        }
        if name.len() > 100 {
            let mut long = name.to_vec();
            long.push(0);
            self.extension(b'L', b"././@LongLink", &long)?;
        }
        copy_field(&mut h.as_old_mut().name, name);
        if let Some(link) = link {
            if link.len() > 100 {
                let mut long = link.to_vec();
                long.push(0);
                self.extension(b'K', b"././@LongLink", &long)?;
            }
            copy_field(&mut h.as_old_mut().linkname, link);
        }
        h.set_cksum();
        self.tar.append(&h, data)
    }

    fn extension(&mut self, kind: u8, name: &[u8], data: &[u8]) -> io::Result<()> {
        let mut h = Header::new_gnu();
        copy_field(&mut h.as_old_mut().name, name);
        h.set_entry_type(EntryType::new(kind));
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.tar.append(&h, data)
    }

    /// Finishes the archive and the gzip stream; returns (`sha256:<hex>`, size).
    fn finish(self) -> io::Result<(String, u64)> {
        let gz = self.tar.into_inner()?;
        let buffered = gz.finish()?;
        let mut hashing = buffered.into_inner().map_err(|e| e.into_error())?;
        hashing.flush()?;
        let digest = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
        Ok((digest, hashing.written))
    }
}

/// Copies `src` into a fixed NUL-padded header field (truncating).
fn copy_field(dst: &mut [u8], src: &[u8]) {
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
    dst[n..].fill(0);
}

/// One PAX record `"<len> <key>=<value>\n"` for `kv` = `"<key>=<value>\n"`; `<len>` counts itself.
fn pax_record(kv: &[u8]) -> Vec<u8> {
    let mut len = kv.len() + 2;
    loop {
        let total = kv.len() + 1 + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    let mut out = format!("{len} ").into_bytes();
    out.extend_from_slice(kv);
    out
}

// ---------------------------------------------------------------------------------------------
// Writing entries to disk.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    Symlink,
    Other,
}

struct Unpacker<'a> {
    root: &'a Path,
    /// Everything this extraction created below `root` (plus real directories found there), keyed
    /// by cleaned relative path. Invariant: all ancestors of a key are keys of kind `Dir`.
    known: HashMap<PathBuf, Kind>,
    /// `root` was empty at the start, so `known` is the complete truth about it.
    trust_known: bool,
    /// Only root may chown; otherwise files keep our ids (like GNU tar for non-root users).
    chown: bool,
    /// Directory mtimes, applied at the end (creating children changes them).
    dir_times: Vec<(PathBuf, TimeSpec)>,
    buf: Vec<u8>,
}

/// Reads an entry's data while writing it to a file (buffered); notes which side failed and
/// turns a short entry into `UnexpectedEof`.
struct Tee<'t, R> {
    src: R,
    remaining: u64,
    file: &'t mut File,
    buf: &'t mut Vec<u8>,
    failure: Option<ExtractError>,
}

impl<R: Read> Tee<'_, R> {
    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            if let Err(e) = self.file.write_all(self.buf) {
                self.failure = Some(ExtractError::Io(format!("failed to write file data: {e}")));
                return Err(e);
            }
            self.buf.clear();
        }
        Ok(())
    }
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || out.is_empty() {
            return Ok(0);
        }
        let want = out
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = match self.src.read(&mut out[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let err = io::Error::new(e.kind(), e.to_string());
                self.failure = Some(read_error(e));
                return Err(err);
            }
        };
        if n == 0 {
            self.failure = Some(unexpected_eof());
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.remaining -= n as u64;
        self.buf.extend_from_slice(&out[..n]);
        if self.buf.len() >= FILE_BUF {
            self.flush_buf()?;
        }
        Ok(n)
    }
}

impl<'a> Unpacker<'a> {
    fn new(root: &'a Path) -> Result<Self, ExtractError> {
        let mut listing = fs::read_dir(root).map_err(|e| io_error("failed to read", root, e))?;
        let trust_known = listing.next().is_none();
        Ok(Unpacker {
            root,
            known: HashMap::new(),
            trust_known,
            chown: nix::unistd::geteuid().is_root(),
            dir_times: Vec::new(),
            buf: Vec::with_capacity(FILE_BUF + 64 * 1024),
        })
    }

    /// What is at `rel` (non-empty, cleaned), never following a symlink there.
    fn kind_at(&self, rel: &Path) -> Result<Option<Kind>, ExtractError> {
        if let Some(kind) = self.known.get(rel) {
            return Ok(Some(*kind));
        }
        if self.trust_known {
            return Ok(None);
        }
        let full = self.root.join(rel);
        match fs::symlink_metadata(&full) {
            Ok(md) if md.file_type().is_symlink() => Ok(Some(Kind::Symlink)),
            Ok(md) if md.is_dir() => Ok(Some(Kind::Dir)),
            Ok(_) => Ok(Some(Kind::Other)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("failed to lstat", &full, e)),
        }
    }

    /// Makes sure every parent of `rel` is a real directory (creating missing ones, 0755),
    /// refusing to go through a symlink.
    fn ensure_parents(&mut self, name: &[u8], rel: &[u8]) -> Result<(), ExtractError> {
        for (i, _) in rel.iter().enumerate().filter(|(_, &b)| b == b'/') {
            let anc = bytes_path(&rel[..i]);
            match self.kind_at(anc)? {
                Some(Kind::Dir) => {
                    if !self.known.contains_key(anc) {
                        self.known.insert(anc.to_path_buf(), Kind::Dir);
                    }
                }
                Some(Kind::Symlink) => {
                    return Err(unsafe_entry(
                        name,
                        format_args!(
                            "parent {} is a symbolic link; refusing to write through it",
                            q(&rel[..i])
                        ),
                    ))
                }
                Some(Kind::Other) => {
                    return Err(io_error(
                        "cannot create",
                        &self.root.join(bytes_path(rel)),
                        format_args!("parent {} is not a directory", q(&rel[..i])),
                    ))
                }
                None => {
                    let full = self.root.join(anc);
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&full)
                        .map_err(|e| io_error("failed to create directory", &full, e))?;
                    // Not subject to the umask: implicit parents are always 0755.
                    fs::set_permissions(&full, Permissions::from_mode(0o755))
                        .map_err(|e| io_error("failed to chmod", &full, e))?;
                    self.known.insert(anc.to_path_buf(), Kind::Dir);
                }
            }
        }
        Ok(())
    }

    /// Clears the way for a new entry at `rel`: an existing file or symlink is unlinked (never
    /// followed), an existing directory removed unless the new entry is a directory too.
    /// Returns whether a directory was kept.
    fn clear_slot(&mut self, rel: &[u8], new_is_dir: bool) -> Result<bool, ExtractError> {
        let rel_path = bytes_path(rel);
        let full = self.root.join(rel_path);
        match self.kind_at(rel_path)? {
            None => Ok(false),
            Some(Kind::Dir) if new_is_dir => Ok(true),
            Some(Kind::Dir) => {
                fs::remove_dir_all(&full).map_err(|e| io_error("failed to remove", &full, e))?;
                self.known.retain(|k, _| !k.starts_with(rel_path));
                Ok(false)
            }
            Some(_) => {
                fs::remove_file(&full).map_err(|e| io_error("failed to remove", &full, e))?;
                self.known.remove(rel_path);
                Ok(false)
            }
        }
    }

    /// Writes one entry at `rel` (cleaned, root-relative; empty = the root itself) and, when a
    /// layer is given, re-packs it there. `hardlink` is the cleaned root-relative link target.
    fn put<R: Read, W: Write>(
        &mut self,
        entry: &mut tar::Entry<R>,
        name: &[u8],
        rel: &[u8],
        hardlink: Option<&[u8]>,
        mut layer: Option<&mut LayerWriter<W>>,
    ) -> Result<(), ExtractError> {
        let mut kind = entry.header().entry_type();
        // Old (pre-POSIX) tars mark directories with a trailing slash only.
        if kind == EntryType::Regular && name.last() == Some(&b'/') {
            kind = EntryType::Directory;
        }
        let layer_err =
            |e: io::Error| ExtractError::Io(format!("failed to write rootfs layer: {e}"));

        match kind {
            EntryType::XGlobalHeader => return Ok(()),
            EntryType::Char | EntryType::Block => {
                log::warn!(
                    "skipping device node {} in plugin filesystem (devices are not extracted)",
                    q(name)
                );
                return Ok(());
            }
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Fifo => {}
            other => {
                return Err(unsafe_entry(
                    name,
                    format_args!("unsupported tar entry type {:?}", other.as_byte() as char),
                ))
            }
        }

        let meta = Meta::read(entry)?;

        if rel.is_empty() {
            if kind != EntryType::Directory {
                return Err(unsafe_entry(
                    name,
                    "the root of the filesystem must be a directory",
                ));
            }
            // The target directory itself is the caller's: no O_NOFOLLOW here.
            let dir = File::open(self.root)
                .map_err(|e| io_error("failed to open directory", self.root, e))?;
            dir.set_permissions(Permissions::from_mode(meta.mode))
                .map_err(|e| io_error("failed to chmod", self.root, e))?;
            self.dir_times.push((PathBuf::new(), meta.timespec()));
            if let Some(layer) = layer.as_deref_mut() {
                layer
                    .append(&meta, EntryType::Directory, b"./", None, 0, io::empty())
                    .map_err(layer_err)?;
            }
            return Ok(());
        }

        // Pure checks first, so a refused entry leaves nothing behind.
        let link_target: Option<Vec<u8>> = match kind {
            EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                if !symlink_target_stays_inside(rel, &target) {
                    return Err(unsafe_entry(
                        name,
                        format_args!("symlink target {} escapes the root", q(&target)),
                    ));
                }
                Some(target)
            }
            EntryType::Link => {
                let target = hardlink.unwrap_or_default();
                if target == rel {
                    return Err(unsafe_entry(name, "hardlink to itself"));
                }
                match self.known.get(bytes_path(target)) {
                    Some(Kind::Other) | Some(Kind::Symlink) if !target.is_empty() => {}
                    Some(Kind::Dir) => {
                        return Err(unsafe_entry(
                            name,
                            format_args!("hardlink target {} is a directory", q(target)),
                        ))
                    }
                    _ => {
                        return Err(unsafe_entry(
                            name,
                            format_args!("hardlink target {} has not been extracted", q(target)),
                        ))
                    }
                }
                Some(target.to_vec())
            }
            _ => None,
        };

        self.ensure_parents(name, rel)?;
        let is_dir = kind == EntryType::Directory;
        let kept_dir = self.clear_slot(rel, is_dir)?;
        let rel_path = bytes_path(rel);
        let full = self.root.join(rel_path);

        match kind {
            EntryType::Directory => {
                if !kept_dir {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&full)
                        .map_err(|e| io_error("failed to create directory", &full, e))?;
                }
                self.known.insert(rel_path.to_path_buf(), Kind::Dir);
                let dir = open_dir(&full)?;
                self.chown_fd(&dir, &meta, &full)?;
                dir.set_permissions(Permissions::from_mode(meta.mode))
                    .map_err(|e| io_error("failed to chmod", &full, e))?;
                set_xattrs(&full, &meta)?;
                self.dir_times
                    .push((rel_path.to_path_buf(), meta.timespec()));
                if let Some(layer) = layer.as_deref_mut() {
                    let mut dir_name = rel.to_vec();
                    dir_name.push(b'/');
                    layer
                        .append(&meta, EntryType::Directory, &dir_name, None, 0, io::empty())
                        .map_err(layer_err)?;
                }
            }
            EntryType::Regular | EntryType::Continuous => {
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&full)
                    .map_err(|e| io_error("failed to create", &full, e))?;
                self.known.insert(rel_path.to_path_buf(), Kind::Other);
                let size = entry.size();
                self.buf.clear();
                let mut tee = Tee {
                    src: &mut *entry,
                    remaining: size,
                    file: &mut file,
                    buf: &mut self.buf,
                    failure: None,
                };
                let copied = match layer.as_deref_mut() {
                    Some(layer) => layer
                        .append(&meta, EntryType::Regular, rel, None, size, &mut tee)
                        .map(|_| ()),
                    None => io::copy(&mut tee, &mut io::sink()).map(|_| ()),
                };
                match copied {
                    Ok(()) if tee.remaining > 0 => return Err(unexpected_eof()),
                    Ok(()) => {}
                    Err(e) => return Err(tee.failure.take().unwrap_or_else(|| layer_err(e))),
                }
                if let Err(e) = tee.flush_buf() {
                    return Err(tee
                        .failure
                        .take()
                        .unwrap_or_else(|| io_error("failed to write", &full, e)));
                }
                self.chown_fd(&file, &meta, &full)?;
                file.set_permissions(Permissions::from_mode(meta.mode))
                    .map_err(|e| io_error("failed to chmod", &full, e))?;
                set_xattrs(&full, &meta)?;
                file.set_times(
                    FileTimes::new()
                        .set_accessed(meta.time())
                        .set_modified(meta.time()),
                )
                .map_err(|e| io_error("failed to set times on", &full, e))?;
            }
            EntryType::Symlink => {
                let target = link_target.unwrap_or_default();
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &full)
                    .map_err(|e| io_error("failed to create symlink", &full, e))?;
                self.known.insert(rel_path.to_path_buf(), Kind::Symlink);
                self.chown_path(&full, &meta)?;
                set_xattrs(&full, &meta)?;
                set_times_nofollow(&full, &meta)?;
                if let Some(layer) = layer.as_deref_mut() {
                    layer
                        .append(
                            &meta,
                            EntryType::Symlink,
                            rel,
                            Some(&target),
                            0,
                            io::empty(),
                        )
                        .map_err(layer_err)?;
                }
            }
            EntryType::Link => {
                let target = link_target.unwrap_or_default();
                let source = self.root.join(bytes_path(&target));
                // linkat(2) without AT_SYMLINK_FOLLOW: a symlink target is linked itself.
                fs::hard_link(&source, &full)
                    .map_err(|e| io_error("failed to create hardlink", &full, e))?;
                self.known.insert(rel_path.to_path_buf(), Kind::Other);
                if let Some(layer) = layer.as_deref_mut() {
                    layer
                        .append(&meta, EntryType::Link, rel, Some(&target), 0, io::empty())
                        .map_err(layer_err)?;
                }
            }
            EntryType::Fifo => {
                nix::unistd::mkfifo(&full, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| io_error("failed to create fifo", &full, e))?;
                self.known.insert(rel_path.to_path_buf(), Kind::Other);
                self.chown_path(&full, &meta)?;
                // The path was just created by us below verified real directories.
                fs::set_permissions(&full, Permissions::from_mode(meta.mode))
                    .map_err(|e| io_error("failed to chmod", &full, e))?;
                set_xattrs(&full, &meta)?;
                set_times_nofollow(&full, &meta)?;
                if let Some(layer) = layer {
                    layer
                        .append(&meta, EntryType::Fifo, rel, None, 0, io::empty())
                        .map_err(layer_err)?;
                }
            }
            _ => unreachable!("entry types filtered above"),
        }
        Ok(())
    }

    fn chown_fd(&self, f: &File, meta: &Meta, path: &Path) -> Result<(), ExtractError> {
        if !self.chown {
            return Ok(());
        }
        let (uid, gid) = meta.ids(path)?;
        std::os::unix::fs::fchown(f, Some(uid), Some(gid))
            .map_err(|e| io_error("failed to chown", path, e))
    }

    fn chown_path(&self, path: &Path, meta: &Meta) -> Result<(), ExtractError> {
        if !self.chown {
            return Ok(());
        }
        let (uid, gid) = meta.ids(path)?;
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(|e| io_error("failed to chown", path, e))
    }

    /// `.wh.<name>`: removes `victim` (never following a symlink).
    fn whiteout(&mut self, name: &[u8], victim: &[u8]) -> Result<(), ExtractError> {
        if victim.is_empty() {
            return Err(unsafe_entry(name, "whiteout of the root"));
        }
        self.ensure_parents(name, victim)?;
        self.clear_slot(victim, false)?;
        Ok(())
    }

    /// `.wh..wh..opq` in `dir`: removes what this extraction did not write there.
    fn opaque(&mut self, name: &[u8], dir: &[u8]) -> Result<(), ExtractError> {
        let mut probe = dir.to_vec();
        if !probe.is_empty() {
            probe.push(b'/');
        }
        probe.extend_from_slice(b"x");
        self.ensure_parents(name, &probe)?;
        if self.trust_known {
            return Ok(()); // everything below was written by us
        }
        let full = self.root.join(bytes_path(dir));
        let listing = fs::read_dir(&full).map_err(|e| io_error("failed to read", &full, e))?;
        for child in listing {
            let child = child.map_err(|e| io_error("failed to read", &full, e))?;
            let rel = bytes_path(dir).join(child.file_name());
            if self.known.contains_key(&rel) {
                continue;
            }
            let ft = child
                .file_type()
                .map_err(|e| io_error("failed to lstat", &child.path(), e))?;
            let res = if ft.is_dir() {
                fs::remove_dir_all(child.path())
            } else {
                fs::remove_file(child.path())
            };
            res.map_err(|e| io_error("failed to remove", &child.path(), e))?;
        }
        Ok(())
    }

    /// Applies the deferred directory mtimes (only to paths still known to be our directories).
    fn finish(self) -> Result<(), ExtractError> {
        for (rel, ts) in &self.dir_times {
            if !rel.as_os_str().is_empty() && self.known.get(rel) != Some(&Kind::Dir) {
                continue;
            }
            let full = self.root.join(rel);
            utimensat(None, &full, ts, ts, UtimensatFlags::NoFollowSymlink)
                .map_err(|e| io_error("failed to set times on", &full, e))?;
        }
        Ok(())
    }
}

fn open_dir(path: &Path) -> Result<File, ExtractError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_error("failed to open directory", path, e))
}

fn set_times_nofollow(path: &Path, meta: &Meta) -> Result<(), ExtractError> {
    let ts = meta.timespec();
    utimensat(None, path, &ts, &ts, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| io_error("failed to set times on", path, e))
}

/// Best effort like dockerd: unsupported or forbidden attributes are logged and skipped.
fn set_xattrs(path: &Path, meta: &Meta) -> Result<(), ExtractError> {
    if meta.xattrs.is_empty() {
        return Ok(());
    }
    let cpath =
        CString::new(path.as_os_str().as_bytes()).map_err(|e| io_error("bad path", path, e))?;
    for (key, value) in &meta.xattrs {
        let Ok(ckey) = CString::new(key.as_slice()) else {
            log::warn!("skipping xattr with NUL in its name on {}", path.display());
            continue;
        };
        // SAFETY: valid NUL-terminated strings and a live buffer of the given length.
        let rc = unsafe {
            libc::lsetxattr(
                cpath.as_ptr(),
                ckey.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENOTSUP) | Some(libc::EPERM) => log::warn!(
                    "ignoring xattr {} on {}: {err}",
                    String::from_utf8_lossy(key),
                    path.display()
                ),
                _ => return Err(io_error("failed to set xattr on", path, err)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    const MTIME: u64 = 1_600_000_000;

    /// Builds tars in memory, writing names and link names raw so hostile shapes are possible.
    struct T {
        b: tar::Builder<Vec<u8>>,
    }

    fn header(kind: EntryType, name: &[u8], mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        copy_field(&mut h.as_old_mut().name, name);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(nix::unistd::geteuid().as_raw() as u64);
        h.set_gid(nix::unistd::getegid().as_raw() as u64);
        h.set_mtime(MTIME);
        h.set_size(size);
        h
    }

    impl T {
        fn new() -> Self {
            T {
                b: tar::Builder::new(Vec::new()),
            }
        }
        fn raw(mut self, mut h: Header, data: &[u8]) -> Self {
            h.set_cksum();
            self.b.append(&h, data).unwrap();
            self
        }
        fn config(self, name: &str, json: &str) -> Self {
            let h = header(
                EntryType::Regular,
                name.as_bytes(),
                0o644,
                json.len() as u64,
            );
            self.raw(h, json.as_bytes())
        }
        fn dir(self, name: &str, mode: u32) -> Self {
            self.raw(header(EntryType::Directory, name.as_bytes(), mode, 0), b"")
        }
        fn file(self, name: &str, mode: u32, data: &[u8]) -> Self {
            let h = header(EntryType::Regular, name.as_bytes(), mode, data.len() as u64);
            self.raw(h, data)
        }
        fn link(self, kind: EntryType, name: &str, target: &str) -> Self {
            let mut h = header(kind, name.as_bytes(), 0o777, 0);
            copy_field(&mut h.as_old_mut().linkname, target.as_bytes());
            self.raw(h, b"")
        }
        fn symlink(self, name: &str, target: &str) -> Self {
            self.link(EntryType::Symlink, name, target)
        }
        fn hardlink(self, name: &str, target: &str) -> Self {
            self.link(EntryType::Link, name, target)
        }
        fn special(self, kind: EntryType, name: &str) -> Self {
            self.raw(header(kind, name.as_bytes(), 0o644, 0), b"")
        }
        fn bytes(self) -> Vec<u8> {
            self.b.into_inner().unwrap()
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    /// A scratch area: `root/` is the (empty) rootfs target, `outside/` must stay untouched.
    struct Scratch {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn scratch() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("passwd"), b"secret").unwrap();
        Scratch {
            _tmp: tmp,
            root,
            outside,
        }
    }

    impl Scratch {
        fn assert_outside_untouched(&self) {
            let names: Vec<_> = fs::read_dir(&self.outside)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, vec![OsStr::new("passwd").to_owned()]);
            assert_eq!(fs::read(self.outside.join("passwd")).unwrap(), b"secret");
            let parent: Vec<_> = fs::read_dir(self.root.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(
                parent.len(),
                2,
                "unexpected files next to the rootfs: {parent:?}"
            );
        }
    }

    fn run(s: &Scratch, tar: &[u8]) -> (Result<CreateContext, ExtractError>, Vec<u8>) {
        let mut layer = Vec::new();
        let res = unpack_create_context(tar, &s.root, &mut layer);
        (res, layer)
    }

    fn expect_unsafe(tar: Vec<u8>, needle: &str) -> Scratch {
        let s = scratch();
        let (res, _) = run(&s, &tar);
        match res {
            Err(ExtractError::Unsafe(msg)) => {
                assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}")
            }
            other => panic!("expected Unsafe, got {other:?}"),
        }
        s.assert_outside_untouched();
        s
    }

    /// (name, type, mode, link name, data) of every entry of a gzip layer.
    type LayerEntry = (String, EntryType, u32, Option<String>, Vec<u8>);

    fn layer_entries(layer: &[u8]) -> Vec<LayerEntry> {
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(layer));
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8(l.into_owned()).unwrap());
                let kind = e.header().entry_type();
                let mode = e.header().mode().unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, kind, mode, link, data)
            })
            .collect()
    }

    // ---- pure path rules -------------------------------------------------------------------

    #[test]
    fn clean_entry_path_rules() {
        let c = |s: &str| clean_entry_path(s.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(c("config.json").as_deref(), Some("config.json"));
        assert_eq!(c("./config.json").as_deref(), Some("config.json"));
        assert_eq!(c("/config.json").as_deref(), Some("config.json"));
        assert_eq!(c("rootfs/").as_deref(), Some("rootfs"));
        assert_eq!(c("./rootfs/./bin//sh").as_deref(), Some("rootfs/bin/sh"));
        assert_eq!(c("/rootfs/etc/../bin").as_deref(), Some("rootfs/bin"));
        assert_eq!(c("rootfs/../config.json").as_deref(), Some("config.json"));
        assert_eq!(c("a/b/../../c").as_deref(), Some("c"));
        assert_eq!(c("").as_deref(), Some(""));
        assert_eq!(c(".").as_deref(), Some(""));
        assert_eq!(c("./").as_deref(), Some(""));
        assert_eq!(c("/").as_deref(), Some(""));
        assert_eq!(c("..."), Some("...".into()));
        assert_eq!(c(".."), None);
        assert_eq!(c("../x"), None);
        assert_eq!(c("rootfs/../../etc/passwd"), None);
        assert_eq!(c("/../etc/passwd"), None);
        assert_eq!(c("a/../.."), None);
    }

    #[test]
    fn strip_rootfs_rules() {
        assert_eq!(strip_rootfs(b"rootfs"), Some(&b""[..]));
        assert_eq!(strip_rootfs(b"rootfs/bin/sh"), Some(&b"bin/sh"[..]));
        assert_eq!(strip_rootfs(b"rootfsx/a"), None);
        assert_eq!(strip_rootfs(b"config.json"), None);
        assert_eq!(strip_rootfs(b"x/rootfs/a"), None);
    }

    #[test]
    fn symlink_target_rules() {
        let ok = |l: &str, t: &str| symlink_target_stays_inside(l.as_bytes(), t.as_bytes());
        assert!(ok("bin/sh", "busybox"));
        assert!(ok("bin/sh", "../usr/bin/busybox"));
        assert!(ok("a/b/c", "../../x"));
        assert!(ok("etc", "/etc/hosts"));
        assert!(ok("link", "/"));
        assert!(
            ok("link", "/../../.."),
            "absolute targets resolve inside the root at run time"
        );
        assert!(ok("x", "."));
        assert!(ok("a/x", "b/../.."));
        assert!(!ok("x", ".."));
        assert!(!ok("link", "../etc/passwd"));
        assert!(!ok("a/b/c", "../../../x"));
        assert!(!ok("a/l", "b/../../../x"));
        assert!(!ok("a/l", "../../a"));
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record(b"a=b\n"), b"6 a=b\n".to_vec());
        let kv = vec![b'k'; 95];
        let rec = pax_record(&kv);
        let (len, _) = rec.split_at(rec.iter().position(|&b| b == b' ').unwrap());
        assert_eq!(
            std::str::from_utf8(len).unwrap().parse::<usize>().unwrap(),
            rec.len()
        );
    }

    // ---- happy paths -----------------------------------------------------------------------

    fn happy_tar() -> Vec<u8> {
        T::new()
            .config("config.json", r#"{"description":"x"}"#)
            .dir("rootfs/", 0o750)
            .dir("rootfs/bin/", 0o755)
            .file("rootfs/bin/busybox", 0o755, b"#!busybox")
            .file("rootfs/bin/suid", 0o4755, b"suid")
            .hardlink("rootfs/bin/hard", "rootfs/bin/busybox")
            .symlink("rootfs/bin/sh", "busybox")
            .symlink("rootfs/hosts", "/etc/hosts")
            .dir("rootfs/etc/", 0o700)
            .file("rootfs/etc/conf", 0o600, b"k=v")
            .special(EntryType::Fifo, "rootfs/run/fifo")
            .dir("rootfs/empty/", 0o1777)
            .bytes()
    }

    fn check_happy_tree(root: &Path) {
        let md = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
        assert_eq!(fs::metadata(root).unwrap().mode() & 0o7777, 0o750);
        assert_eq!(md("bin").mode() & 0o7777, 0o755);
        assert!(md("bin").is_dir());
        assert_eq!(fs::read(root.join("bin/busybox")).unwrap(), b"#!busybox");
        assert_eq!(md("bin/busybox").mode() & 0o7777, 0o755);
        assert_eq!(md("bin/suid").mode() & 0o7777, 0o4755, "setuid bit kept");
        assert_eq!(md("bin/hard").ino(), md("bin/busybox").ino());
        assert!(md("bin/sh").file_type().is_symlink());
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read_link(root.join("hosts")).unwrap(),
            Path::new("/etc/hosts")
        );
        assert_eq!(md("etc").mode() & 0o7777, 0o700);
        assert_eq!(md("etc/conf").mode() & 0o7777, 0o600);
        assert!(md("run/fifo").file_type().is_fifo());
        assert_eq!(
            md("run").mode() & 0o7777,
            0o755,
            "implicit parents are 0755"
        );
        assert_eq!(md("empty").mode() & 0o7777, 0o1777);
        for p in [
            "bin",
            "bin/busybox",
            "bin/sh",
            "etc",
            "etc/conf",
            "run/fifo",
            "empty",
        ] {
            assert_eq!(md(p).mtime() as u64, MTIME, "mtime of {p}");
        }
        assert_eq!(fs::metadata(root).unwrap().mtime() as u64, MTIME);
        let uid = nix::unistd::geteuid().as_raw();
        assert_eq!(md("bin/busybox").uid(), uid);
        assert_eq!(md("bin/sh").uid(), uid);
    }

    #[test]
    fn happy_path_plain_tar() {
        let s = scratch();
        let (res, layer) = run(&s, &happy_tar());
        let ctx = res.unwrap();
        assert_eq!(ctx.config_json, br#"{"description":"x"}"#);
        assert_eq!(ctx.layer_size, layer.len() as u64);
        assert_eq!(
            ctx.layer_digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&layer)))
        );
        check_happy_tree(&s.root);
        s.assert_outside_untouched();

        let entries = layer_entries(&layer);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "./",
                "bin/",
                "bin/busybox",
                "bin/suid",
                "bin/hard",
                "bin/sh",
                "hosts",
                "etc/",
                "etc/conf",
                "run/fifo",
                "empty/"
            ]
        );
        let get = |n: &str| entries.iter().find(|e| e.0 == n).unwrap();
        assert_eq!(get("./").2, 0o750);
        assert_eq!(get("bin/busybox").4, b"#!busybox");
        assert_eq!(get("bin/suid").2, 0o4755);
        assert_eq!(get("bin/hard").1, EntryType::Link);
        assert_eq!(get("bin/hard").3.as_deref(), Some("bin/busybox"));
        assert_eq!(get("bin/sh").3.as_deref(), Some("busybox"));
        assert_eq!(get("hosts").3.as_deref(), Some("/etc/hosts"));
        assert_eq!(get("run/fifo").1, EntryType::Fifo);
        assert_eq!(get("empty/").2, 0o1777);
    }

    #[test]
    fn happy_path_gzip_tar() {
        let s = scratch();
        let (res, layer) = run(&s, &gzip(&happy_tar()));
        let ctx = res.unwrap();
        assert_eq!(ctx.config_json, br#"{"description":"x"}"#);
        assert_eq!(ctx.layer_size, layer.len() as u64);
        check_happy_tree(&s.root);
    }

    #[test]
    fn layer_is_deterministic_and_reapplies() {
        let s1 = scratch();
        let s2 = scratch();
        let (r1, l1) = run(&s1, &happy_tar());
        let (r2, l2) = run(&s2, &gzip(&happy_tar()));
        assert_eq!(r1.unwrap().layer_digest, r2.unwrap().layer_digest);
        assert_eq!(l1, l2);
        // The re-packed layer is itself a valid, safe layer giving the same tree.
        let s3 = scratch();
        unpack_layer(&l1[..], &s3.root).unwrap();
        check_happy_tree(&s3.root);
    }

    #[test]
    fn ownership_is_preserved_when_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let mut h = header(EntryType::Regular, b"rootfs/owned", 0o4750, 1);
        h.set_uid(1234);
        h.set_gid(4321);
        let mut l = header(EntryType::Symlink, b"rootfs/l", 0o777, 0);
        copy_field(&mut l.as_old_mut().linkname, b"owned");
        l.set_uid(77);
        l.set_gid(88);
        let tar = T::new()
            .config("config.json", "{}")
            .raw(h, b"x")
            .raw(l, b"")
            .bytes();
        let s = scratch();
        let (res, layer) = run(&s, &tar);
        res.unwrap();
        let md = fs::symlink_metadata(s.root.join("owned")).unwrap();
        assert_eq!((md.uid(), md.gid()), (1234, 4321));
        assert_eq!(md.mode() & 0o7777, 0o4750, "chown must not clear setuid");
        let md = fs::symlink_metadata(s.root.join("l")).unwrap();
        assert_eq!((md.uid(), md.gid()), (77, 88));
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&layer[..]));
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(
            (e.header().uid().unwrap(), e.header().gid().unwrap()),
            (1234, 4321)
        );
    }

    #[test]
    fn long_names_and_xattrs_are_repacked() {
        let long_dir = format!("rootfs/{}/", "d".repeat(90));
        let long_file = format!("{long_dir}{}", "f".repeat(60));
        let long_target = format!("/{}", "t".repeat(150));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(EntryType::Directory, b"", 0o755, 0);
        b.append_data(&mut h, &long_dir, &b""[..]).unwrap();
        let mut h = header(EntryType::Regular, b"", 0o644, 2);
        b.append_data(&mut h, &long_file, &b"hi"[..]).unwrap();
        let mut h = header(EntryType::Symlink, b"", 0o777, 0);
        b.append_link(&mut h, "rootfs/long-link", &long_target)
            .unwrap();
        // A PAX header carrying an xattr for the next entry.
        let rec = pax_record(b"SCHILY.xattr.user.berth=yes\n");
        let mut x = header(
            EntryType::XHeader,
            b"././@PaxHeader",
            0o644,
            rec.len() as u64,
        );
        x.set_cksum();
        b.append(&x, &rec[..]).unwrap();
        let mut h = header(EntryType::Regular, b"rootfs/attr", 0o644, 1);
        h.set_cksum();
        b.append(&h, &b"a"[..]).unwrap();
        let mut h = header(EntryType::Regular, b"config.json", 0o644, 2);
        h.set_cksum();
        b.append(&h, &b"{}"[..]).unwrap();
        let tar = b.into_inner().unwrap();

        let s = scratch();
        let (res, layer) = run(&s, &tar);
        res.unwrap();
        let rel_file = long_file.strip_prefix("rootfs/").unwrap();
        assert_eq!(fs::read(s.root.join(rel_file)).unwrap(), b"hi");
        assert_eq!(
            fs::read_link(s.root.join("long-link")).unwrap(),
            Path::new(&long_target)
        );
        let entries = layer_entries(&layer);
        assert_eq!(entries[0].0, long_dir.strip_prefix("rootfs/").unwrap());
        assert_eq!(entries[1].0, rel_file);
        assert_eq!(entries[2].3.as_deref(), Some(long_target.as_str()));

        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&layer[..]));
        let mut e = ar.entries().unwrap().nth(3).unwrap().unwrap();
        assert_eq!(&*e.path_bytes(), b"attr");
        let exts: Vec<(Vec<u8>, Vec<u8>)> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| {
                let x = x.unwrap();
                (x.key_bytes().to_vec(), x.value_bytes().to_vec())
            })
            .collect();
        assert_eq!(
            exts,
            vec![(b"SCHILY.xattr.user.berth".to_vec(), b"yes".to_vec())]
        );
    }

    #[test]
    fn config_path_variants_last_wins() {
        for name in ["config.json", "./config.json", "/config.json"] {
            let s = scratch();
            let tar = T::new()
                .dir("rootfs/", 0o755)
                .config(name, "{\"a\":1}")
                .bytes();
            assert_eq!(run(&s, &tar).0.unwrap().config_json, b"{\"a\":1}", "{name}");
        }
        let s = scratch();
        let tar = T::new()
            .config("config.json", "first")
            .dir("./rootfs/", 0o755)
            .config("/config.json", "second")
            .config("./config.json", "third")
            .config("rootfs/config.json", "inside rootfs, not a config")
            .config("sub/config.json", "ignored")
            .bytes();
        assert_eq!(run(&s, &tar).0.unwrap().config_json, b"third");
        assert_eq!(
            fs::read(s.root.join("config.json")).unwrap(),
            b"inside rootfs, not a config"
        );
    }

    #[test]
    fn missing_config() {
        let s = scratch();
        let tar = T::new()
            .file("rootfs/a", 0o644, b"a")
            .file("other", 0o644, b"x")
            .bytes();
        assert_eq!(run(&s, &tar).0.unwrap_err(), ExtractError::NoConfig);
    }

    #[test]
    fn missing_rootfs_reported_before_missing_config() {
        let s = scratch();
        let tar = T::new()
            .config("config.json", "{}")
            .file("rootfsx/a", 0o644, b"a")
            .bytes();
        assert_eq!(run(&s, &tar).0.unwrap_err(), ExtractError::NoRootfs);
        let tar = T::new().file("readme", 0o644, b"a").bytes();
        assert_eq!(run(&s, &tar).0.unwrap_err(), ExtractError::NoRootfs);
        assert_eq!(run(&s, &[][..]).0.unwrap_err(), ExtractError::NoRootfs);
        assert_eq!(ExtractError::NoRootfs.to_string(), "no rootfs found: EOF");
    }

    #[test]
    fn empty_rootfs_dir_counts_as_rootfs() {
        let s = scratch();
        let tar = T::new()
            .config("config.json", "{}")
            .dir("rootfs", 0o755)
            .bytes();
        let (res, layer) = run(&s, &tar);
        res.unwrap();
        let names: Vec<String> = layer_entries(&layer).into_iter().map(|e| e.0).collect();
        assert_eq!(names, ["./"]);
    }

    #[test]
    fn rootfs_entry_must_be_a_directory() {
        expect_unsafe(
            T::new()
                .symlink("rootfs", "/")
                .config("config.json", "{}")
                .bytes(),
            "must be a directory",
        );
    }

    // ---- hostile tars ----------------------------------------------------------------------

    #[test]
    fn dotdot_climb_is_refused() {
        expect_unsafe(
            T::new()
                .config("config.json", "{}")
                .file("rootfs/../../outside/passwd", 0o644, b"pwned")
                .bytes(),
            "rootfs/../../outside/passwd",
        );
        expect_unsafe(
            T::new()
                .dir("rootfs/", 0o755)
                .file("rootfs/a/../../../x", 0o644, b"pwned")
                .bytes(),
            "climbs above the root",
        );
        expect_unsafe(T::new().file("../config.json", 0o644, b"{}").bytes(), "..");
    }

    #[test]
    fn dotdot_within_the_root_is_fine() {
        let s = scratch();
        let tar = T::new()
            .config("config.json", "{}")
            .file("rootfs/a/../b", 0o644, b"b")
            .file("rootfs/../ignored", 0o644, b"x")
            .bytes();
        run(&s, &tar).0.unwrap();
        assert_eq!(fs::read(s.root.join("b")).unwrap(), b"b");
        assert!(
            !s.root.join("a").exists(),
            "names are cleaned lexically first"
        );
        s.assert_outside_untouched();
    }

    #[test]
    fn absolute_paths_are_neutralised() {
        let s = scratch();
        let outside = s.outside.join("passwd");
        let tar = T::new()
            .config("/config.json", "{}")
            .file("/rootfs/etc/passwd", 0o644, b"inside")
            .file(outside.to_str().unwrap(), 0o644, b"pwned")
            .file("//rootfs//abs", 0o644, b"abs")
            .bytes();
        let (res, layer) = run(&s, &tar);
        res.unwrap();
        assert_eq!(fs::read(s.root.join("etc/passwd")).unwrap(), b"inside");
        assert_eq!(fs::read(s.root.join("abs")).unwrap(), b"abs");
        s.assert_outside_untouched();
        let names: Vec<String> = layer_entries(&layer).into_iter().map(|e| e.0).collect();
        assert_eq!(names, ["etc/passwd", "abs"]);
    }

    #[test]
    fn relative_symlink_escape_is_refused() {
        expect_unsafe(
            T::new()
                .config("config.json", "{}")
                .symlink("rootfs/evil", "../outside")
                .bytes(),
            "escapes the root",
        );
        expect_unsafe(
            T::new()
                .symlink("rootfs/a/b/evil", "../../../../etc/passwd")
                .bytes(),
            "\"../../../../etc/passwd\"",
        );
    }

    #[test]
    fn symlink_parent_is_never_written_through() {
        let s = scratch();
        let outside = s.outside.to_str().unwrap().to_string();
        let tar = T::new()
            .config("config.json", "{}")
            .symlink("rootfs/link", &outside)
            .file("rootfs/link/passwd", 0o644, b"pwned")
            .bytes();
        let (res, _) = run(&s, &tar);
        match res {
            Err(ExtractError::Unsafe(msg)) => {
                assert!(
                    msg.contains("rootfs/link/passwd") && msg.contains("symbolic link"),
                    "{msg}"
                )
            }
            other => panic!("expected Unsafe, got {other:?}"),
        }
        s.assert_outside_untouched();

        // Deeper: a directory under the symlink must not be created either.
        let s2 = scratch();
        let tar = T::new()
            .symlink("rootfs/link", s2.outside.to_str().unwrap())
            .dir("rootfs/link/sub/", 0o755)
            .bytes();
        assert!(matches!(run(&s2, &tar).0, Err(ExtractError::Unsafe(_))));
        s2.assert_outside_untouched();
    }

    #[test]
    fn entries_replace_symlinks_not_their_targets() {
        let s = scratch();
        let target = s.outside.join("passwd");
        let tar = T::new()
            .config("config.json", "{}")
            .symlink("rootfs/f", target.to_str().unwrap())
            .file("rootfs/f", 0o644, b"replaced")
            .symlink("rootfs/d", s.outside.to_str().unwrap())
            .dir("rootfs/d", 0o755)
            .file("rootfs/d/x", 0o644, b"x")
            .symlink("rootfs/p", s.outside.to_str().unwrap())
            .special(EntryType::Fifo, "rootfs/p")
            .bytes();
        run(&s, &tar).0.unwrap();
        let md = fs::symlink_metadata(s.root.join("f")).unwrap();
        assert!(md.is_file());
        assert_eq!(fs::read(s.root.join("f")).unwrap(), b"replaced");
        assert!(fs::symlink_metadata(s.root.join("d")).unwrap().is_dir());
        assert_eq!(fs::read(s.root.join("d/x")).unwrap(), b"x");
        assert!(fs::symlink_metadata(s.root.join("p"))
            .unwrap()
            .file_type()
            .is_fifo());
        s.assert_outside_untouched();
    }

    #[test]
    fn directory_replaced_by_symlink_then_written_through_is_refused() {
        let s = scratch();
        let tar = T::new()
            .dir("rootfs/d/", 0o755)
            .dir("rootfs/d/sub/", 0o755)
            .symlink("rootfs/d", s.outside.to_str().unwrap())
            .file("rootfs/d/sub/x", 0o644, b"pwned")
            .bytes();
        assert!(matches!(run(&s, &tar).0, Err(ExtractError::Unsafe(_))));
        s.assert_outside_untouched();
    }

    #[test]
    fn directory_times_not_applied_through_replaced_paths() {
        // rootfs/d/sub's deferred mtime must not be applied via the symlink that replaced d.
        let s = scratch();
        fs::create_dir(s.outside.join("sub")).unwrap();
        let before = fs::metadata(s.outside.join("sub")).unwrap().mtime();
        let tar = T::new()
            .config("config.json", "{}")
            .dir("rootfs/d/", 0o755)
            .dir("rootfs/d/sub/", 0o755)
            .symlink("rootfs/d", s.outside.to_str().unwrap())
            .bytes();
        run(&s, &tar).0.unwrap();
        assert_eq!(fs::metadata(s.outside.join("sub")).unwrap().mtime(), before);
        assert_ne!(before as u64, MTIME);
    }

    #[test]
    fn hardlink_outside_rootfs_is_refused() {
        expect_unsafe(
            T::new()
                .config("config.json", "{}")
                .hardlink("rootfs/h", "config.json")
                .bytes(),
            "outside rootfs/",
        );
        expect_unsafe(
            T::new()
                .dir("rootfs/", 0o755)
                .hardlink("rootfs/h", "rootfs/../../outside/passwd")
                .bytes(),
            "climbs above the root",
        );
        expect_unsafe(
            T::new()
                .dir("rootfs/", 0o755)
                .hardlink("rootfs/h", "../outside/passwd")
                .bytes(),
            "climbs above the root",
        );
    }

    #[test]
    fn hardlink_to_etc_passwd_is_refused() {
        expect_unsafe(
            T::new()
                .dir("rootfs/", 0o755)
                .hardlink("rootfs/h", "/etc/passwd")
                .bytes(),
            "\"/etc/passwd\" is outside rootfs/",
        );
        // Even when spelled inside rootfs/, it was never extracted.
        expect_unsafe(
            T::new()
                .dir("rootfs/", 0o755)
                .hardlink("rootfs/h", "/rootfs/etc/passwd")
                .bytes(),
            "has not been extracted",
        );
    }

    #[test]
    fn hardlink_to_not_yet_extracted_or_through_symlink_is_refused() {
        expect_unsafe(
            T::new()
                .hardlink("rootfs/h", "rootfs/later")
                .file("rootfs/later", 0o644, b"x")
                .bytes(),
            "has not been extracted",
        );
        let s = scratch();
        let tar = T::new()
            .symlink("rootfs/l", s.outside.to_str().unwrap())
            .hardlink("rootfs/h", "rootfs/l/passwd")
            .bytes();
        assert!(matches!(run(&s, &tar).0, Err(ExtractError::Unsafe(_))));
        assert!(!s.root.join("h").exists());
        s.assert_outside_untouched();
        expect_unsafe(
            T::new()
                .dir("rootfs/d/", 0o755)
                .hardlink("rootfs/h", "rootfs/d")
                .bytes(),
            "is a directory",
        );
        expect_unsafe(
            T::new()
                .dir("rootfs/", 0o755)
                .hardlink("rootfs/h", "rootfs")
                .bytes(),
            "",
        );
    }

    #[test]
    fn hardlink_to_symlink_links_the_symlink_itself() {
        let s = scratch();
        let tar = T::new()
            .config("config.json", "{}")
            .symlink("rootfs/l", s.outside.join("passwd").to_str().unwrap())
            .hardlink("rootfs/h", "rootfs/l")
            .bytes();
        run(&s, &tar).0.unwrap();
        assert!(fs::symlink_metadata(s.root.join("h"))
            .unwrap()
            .file_type()
            .is_symlink());
        s.assert_outside_untouched();
    }

    #[test]
    fn device_nodes_are_skipped() {
        let s = scratch();
        let tar = T::new()
            .config("config.json", "{}")
            .dir("rootfs/dev/", 0o755)
            .special(EntryType::Char, "rootfs/dev/null")
            .special(EntryType::Block, "rootfs/dev/sda")
            .file("rootfs/dev/ok", 0o644, b"ok")
            .bytes();
        let (res, layer) = run(&s, &tar);
        res.unwrap();
        assert!(fs::symlink_metadata(s.root.join("dev/null")).is_err());
        assert!(fs::symlink_metadata(s.root.join("dev/sda")).is_err());
        let names: Vec<String> = layer_entries(&layer).into_iter().map(|e| e.0).collect();
        assert_eq!(names, ["dev/", "dev/ok"]);
        // A rootfs holding only a device still counts as a rootfs (dockerd counts every entry).
        let s = scratch();
        let tar = T::new()
            .config("config.json", "{}")
            .special(EntryType::Char, "rootfs/c")
            .bytes();
        run(&s, &tar).0.unwrap();
    }

    // ---- parallel gzip ---------------------------------------------------------------------

    fn pgzip(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut gz = ParallelGzip::new(Vec::new(), flate2::Compression::fast());
        gz.max_workers = 3;
        for piece in data.chunks(chunk.max(1)) {
            gz.write_all(piece).unwrap();
        }
        gz.finish().unwrap()
    }

    #[test]
    fn parallel_gzip_incompressible_data() {
        let mut x: u64 = 88172645463325252;
        let data: Vec<u8> = (0..4 * GZ_BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let gz = pgzip(&data, 8192);
        let mut back = Vec::new();
        let r = flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut back);
        assert!(r.is_ok(), "{r:?} after {}", back.len());
    }

    #[test]
    fn parallel_gzip_is_one_valid_deterministic_member() {
        // Mildly compressible pseudo-random bytes.
        let mut x: u32 = 12345;
        let data: Vec<u8> = (0..3 * GZ_BLOCK + 777)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 3 == 0 {
                    b'a'
                } else {
                    (x >> 24) as u8
                }
            })
            .collect();
        for len in [0, 1, 1000, GZ_BLOCK, GZ_BLOCK + 1, data.len()] {
            let gz = pgzip(&data[..len], 8192);
            assert_eq!(&gz[..2], &[0x1f, 0x8b]);
            // Single-member decoder: must see exactly our bytes and nothing after.
            let mut dec = flate2::read::GzDecoder::new(&gz[..]);
            let mut back = Vec::new();
            dec.read_to_end(&mut back).unwrap();
            assert!(back == data[..len], "round trip of {len} bytes");
            let mut rest = Vec::new();
            dec.into_inner().read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty(), "trailing bytes after the member for {len}");
            // Same bytes whatever the write pattern.
            assert_eq!(gz, pgzip(&data[..len], 4093), "determinism for {len}");
        }
    }

    // ---- corrupt input ---------------------------------------------------------------------

    #[test]
    fn truncated_tar_is_a_read_error() {
        let big = vec![7u8; 10_000];
        let tar = T::new()
            .config("config.json", "{}")
            .file("rootfs/big", 0o644, &big)
            .file("rootfs/after", 0o644, b"x")
            .bytes();
        let eof = ExtractError::Read("unexpected EOF".into());
        // Cut inside the data of rootfs/big, inside the next header, and in a config.json body.
        for cut in [1024 + 512 + 4000, 1024 + 512 + 10_240 + 100, 512 + 1] {
            let s = scratch();
            assert_eq!(run(&s, &tar[..cut]).0.unwrap_err(), eof, "cut at {cut}");
        }
        let s = scratch();
        let gz = gzip(&tar);
        assert_eq!(run(&s, &gz[..gz.len() / 2]).0.unwrap_err(), eof);
        assert_eq!(eof.to_string(), "failed to read from tar: unexpected EOF");
    }

    #[test]
    fn garbage_is_a_read_error() {
        let s = scratch();
        let junk = vec![b'x'; 2048];
        assert_eq!(
            run(&s, &junk).0.unwrap_err(),
            ExtractError::Read("archive/tar: invalid tar header".into())
        );
    }

    // ---- registry layers -------------------------------------------------------------------

    #[test]
    fn unpack_layer_applies_whiteouts_and_safety() {
        let s = scratch();
        let tar = T::new()
            .dir("./", 0o755)
            .file("a", 0o644, b"a")
            .file("b", 0o644, b"b")
            .file(".wh.a", 0o644, b"")
            .dir("d/", 0o755)
            .file("d/x", 0o644, b"x")
            .file("d/.wh..wh..opq", 0o644, b"")
            .bytes();
        unpack_layer(&tar[..], &s.root).unwrap();
        assert!(!s.root.join("a").exists());
        assert_eq!(fs::read(s.root.join("b")).unwrap(), b"b");
        assert_eq!(fs::read(s.root.join("d/x")).unwrap(), b"x");
        assert!(!s.root.join(".wh.a").exists());

        for bad in [".wh.", "d/.wh..", "d/.wh..."] {
            let s = scratch();
            let tar = T::new().dir("d/", 0o755).file(bad, 0o644, b"").bytes();
            assert!(
                matches!(
                    unpack_layer(&tar[..], &s.root),
                    Err(ExtractError::Unsafe(_))
                ),
                "{bad}"
            );
            assert!(s.root.join("d").is_dir());
        }

        let s = scratch();
        let tar = T::new()
            .symlink("l", s.outside.to_str().unwrap())
            .file("l/passwd", 0o644, b"p")
            .bytes();
        assert!(matches!(
            unpack_layer(&tar[..], &s.root),
            Err(ExtractError::Unsafe(_))
        ));
        s.assert_outside_untouched();
        let tar = T::new().file("../x", 0o644, b"p").bytes();
        assert!(matches!(
            unpack_layer(&tar[..], &s.root),
            Err(ExtractError::Unsafe(_))
        ));
    }

    #[test]
    fn unpack_layer_into_non_empty_dir_checks_the_disk() {
        let s = scratch();
        std::os::unix::fs::symlink(&s.outside, s.root.join("pre")).unwrap();
        fs::write(s.root.join("old"), b"old").unwrap();
        let tar = T::new().file("pre/passwd", 0o644, b"pwned").bytes();
        assert!(matches!(
            unpack_layer(&tar[..], &s.root),
            Err(ExtractError::Unsafe(_))
        ));
        s.assert_outside_untouched();
        // A pre-existing file cannot be hardlinked (it was not extracted by us) ...
        let tar = T::new().hardlink("h", "old").bytes();
        assert!(matches!(
            unpack_layer(&tar[..], &s.root),
            Err(ExtractError::Unsafe(_))
        ));
        // ... but can be replaced, and replacing the pre-existing symlink leaves its target alone.
        let tar = T::new()
            .file("old", 0o644, b"new")
            .file("pre", 0o644, b"file")
            .bytes();
        unpack_layer(&tar[..], &s.root).unwrap();
        assert_eq!(fs::read(s.root.join("old")).unwrap(), b"new");
        assert_eq!(fs::read(s.root.join("pre")).unwrap(), b"file");
        s.assert_outside_untouched();
    }
}
