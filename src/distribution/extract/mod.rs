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
//! * character and block devices are skipped with a warning (neither created nor re-packed);
//! * GNU long names and PAX headers over 1 MiB are refused before the tar reader reads them into
//!   memory (`guard`).
//!
//! Modes (setuid/setgid/sticky included), uid/gid (only when running as root, like GNU tar),
//! mtimes (directories at the end), symlinks, hardlinks, FIFOs and `SCHILY.xattr.*` PAX records
//! (best effort on disk, like dockerd) are preserved. The `rootfs/` entry itself sets the mode and
//! mtime of the target directory, not its owner.
//!
//! The extractor keeps a map of what it has created below the target, so parent checks cost no
//! system calls; when the target was not empty at the start it falls back to `lstat`. The layer is
//! gzip-compressed on worker threads (`ParallelGzip`) while the calling thread extracts.
//!
//! **Bounded.** What an archive unpacks to is bounded ([`UnpackLimit`]): the tar stream (headers
//! and data, after decompression) may not grow beyond `max(floor, 10 × the compressed bytes read
//! so far)`; past it the extraction stops with [`ExtractError::TooLarge`] and the caller removes
//! what was written. dockerd sets no such bound.
//!
//! Files: `guard` (the metadata bound on the raw stream), `unpack` (the two tar walks and the unpacker that writes entries to disk), `paths` (the
//! pure path rules above), `writer` (the re-packed layer of a create context), `gzip` (its
//! parallel compressor). This file holds the public entry points, the error type and the entry
//! metadata both the unpacker and the layer writer use.

mod guard;
mod gzip;
mod paths;
#[cfg(test)]
mod tests;
mod unpack;
mod writer;

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Cursor, Read, Write};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use flate2::bufread::MultiGzDecoder;
use nix::sys::time::TimeSpec;

use crate::error::Error;
use unpack::{create_context_from_tar, layer_from_tar};

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

/// Why an extraction stopped; the texts are dockerd's where it has one.
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
    /// The archive unpacks to more than its [`UnpackLimit`] allows.
    #[error(
        "refusing an archive that unpacks to more than {}: the limit after {} of it was read \
         ({} times that, at least the daemon's max-unpacked-size of {})",
        crate::progress::human_size(*allowed),
        crate::progress::human_size(*compressed),
        UnpackLimit::RATIO,
        crate::progress::human_size(*floor)
    )]
    TooLarge {
        allowed: u64,
        compressed: u64,
        floor: u64,
    },
}

/// How much an archive may unpack to: `max(floor, RATIO × compressed bytes read so far)`.
/// Real layers compress 2–5×; a 1 GiB floor leaves room for any plugin filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimit {
    /// `None`: no limit.
    floor: Option<u64>,
}

impl UnpackLimit {
    /// How many times its compressed size an archive may unpack to.
    pub const RATIO: u64 = 10;
    /// The default floor (`--max-unpacked-size`): 1 GiB.
    pub const DEFAULT_FLOOR: u64 = 1 << 30;

    /// A limit with `floor` bytes at least; 0 means no limit.
    pub fn new(floor: u64) -> UnpackLimit {
        UnpackLimit {
            floor: (floor > 0).then_some(floor),
        }
    }

    pub fn unlimited() -> UnpackLimit {
        UnpackLimit { floor: None }
    }

    /// Wraps `compressed` (the archive as read): returns the reader to decompress from, and the
    /// meter whose bound goes around the decompressed stream.
    fn meter<R: Read>(self, compressed: R) -> (Counted<R>, Meter) {
        let read = Rc::new(Cell::new(0));
        let meter = Meter {
            limit: self,
            compressed: read.clone(),
            exceeded: Rc::new(Cell::new(None)),
        };
        (
            Counted {
                inner: compressed,
                read,
            },
            meter,
        )
    }
}

impl Default for UnpackLimit {
    fn default() -> Self {
        UnpackLimit::new(UnpackLimit::DEFAULT_FLOOR)
    }
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// The bound on one extraction: knows how much of the archive was read, and whether the bound
/// or the metadata guard stopped it (the tar reader turns the read error into its own; this
/// keeps the reason).
#[derive(Clone)]
struct Meter {
    limit: UnpackLimit,
    compressed: Rc<Cell<u64>>,
    exceeded: Rc<Cell<Option<ExtractError>>>,
}

impl Meter {
    /// The decompressed stream within the bound, its metadata entries checked
    /// ([`guard::MetadataGuard`]).
    fn bound<R: Read>(&self, unpacked: R) -> Bounded<guard::MetadataGuard<R>> {
        Bounded {
            inner: guard::MetadataGuard::new(unpacked, self.exceeded.clone()),
            produced: 0,
            meter: self.clone(),
        }
    }

    /// The extraction's outcome, with the bound's (or guard's) reason in place of the read
    /// error it caused.
    fn outcome<T>(&self, result: Result<T, ExtractError>) -> Result<T, ExtractError> {
        match (result, self.exceeded.take()) {
            (Err(_), Some(too_large)) => Err(too_large),
            (result, _) => result,
        }
    }
}

/// The decompressed stream, failing once it passes the bound.
struct Bounded<R> {
    inner: R,
    produced: u64,
    meter: Meter,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.produced += n as u64;
        if let Some(floor) = self.meter.limit.floor {
            let compressed = self.meter.compressed.get();
            let allowed = floor.max(compressed.saturating_mul(UnpackLimit::RATIO));
            if self.produced > allowed {
                self.meter.exceeded.set(Some(ExtractError::TooLarge {
                    allowed,
                    compressed,
                    floor,
                }));
                return Err(io::Error::other("unpack limit exceeded"));
            }
        }
        Ok(n)
    }
}

/// The one place an extraction failure becomes a status code. dockerd 20.10 answers all of them
/// with 500 (a create context's missing rootfs or config included), and the compat scenarios pin
/// that.
impl From<ExtractError> for Error {
    fn from(e: ExtractError) -> Self {
        match e {
            ExtractError::NoRootfs
            | ExtractError::NoConfig
            | ExtractError::Unsafe(_)
            | ExtractError::Read(_)
            | ExtractError::Io(_) => Error::System(e.to_string()),
            // What the client sent (or pulled) is refused, as an invalid parameter would be.
            ExtractError::TooLarge { .. } => Error::InvalidParameter(e.to_string()),
        }
    }
}

/// Read buffer in front of the request body.
const INPUT_BUF: usize = 256 * 1024;

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
    limit: UnpackLimit,
) -> Result<CreateContext, ExtractError> {
    let (input, meter) = limit.meter(input);
    let (gzip, src) = sniff(input)?;
    let result = if gzip {
        create_context_from_tar(meter.bound(MultiGzDecoder::new(src)), rootfs_dir, layer_out)
    } else {
        create_context_from_tar(meter.bound(src), rootfs_dir, layer_out)
    };
    meter.outcome(result)
}

/// Apply one registry layer (plain or gzip tar, detected by magic bytes) below `dir` with the same
/// safety rules and bound as [`unpack_create_context`]. AUFS-style whiteouts are honoured: `.wh.<name>`
/// removes `<name>`, `.wh..wh..opq` empties its directory of everything this call did not write,
/// other `.wh..wh.*` entries are skipped.
pub fn unpack_layer<R: Read>(input: R, dir: &Path, limit: UnpackLimit) -> Result<(), ExtractError> {
    let (input, meter) = limit.meter(input);
    let (gzip, src) = sniff(input)?;
    let result = if gzip {
        layer_from_tar(meter.bound(MultiGzDecoder::new(src)), dir)
    } else {
        layer_from_tar(meter.bound(src), dir)
    };
    meter.outcome(result)
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
