//! The unpacker: the walks over a create context and a registry layer, and the writing of each
//! entry below the target directory without ever following a symlink.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::libc;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tar::EntryType;

use super::paths::{
    bytes_path, clean_entry_path, q, split_last, strip_rootfs, symlink_target_stays_inside,
    unsafe_entry, CLIMB,
};
use super::writer::LayerWriter;
use super::{io_error, read_error, unexpected_eof, CreateContext, ExtractError, Meta};

/// File data is written to disk in chunks of (at least) this size.
const FILE_BUF: usize = 256 * 1024;

pub(super) fn create_context_from_tar<R: Read, W: Write>(
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

pub(super) fn layer_from_tar<R: Read>(src: R, dir: &Path) -> Result<(), ExtractError> {
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
