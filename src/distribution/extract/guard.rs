//! A bound on tar metadata entries, checked on the decompressed stream before the tar reader
//! sees it: the tar crate reads a GNU long name or link (`L`, `K`) and a PAX header (`x`, `g`)
//! into memory whole, so a 500 KB gzip announcing a 512 MiB long name cost 1.7 GB of memory.
//! The guard follows the archive's block structure the way the tar crate does (512-byte
//! headers, data rounded up to blocks, a PAX `size` overriding the next entry's, GNU sparse
//! extension blocks) and fails the read when a metadata entry is larger than
//! [`METADATA_LIMIT`]. Anything it cannot follow (an unreadable size, the end of the archive) it
//! stops checking and leaves to the tar reader, which rejects malformed headers itself.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use super::paths::unsafe_entry;
use super::ExtractError;

/// The largest GNU long name/link or PAX header accepted: far above `PATH_MAX` and any real set
/// of PAX records (xattrs included).
pub(super) const METADATA_LIMIT: u64 = 1 << 20;

const BLOCK: usize = 512;

enum State {
    /// Collecting a header block.
    Header {
        block: Box<[u8; BLOCK]>,
        filled: usize,
    },
    /// Passing `left` bytes of an entry's data (padding included); a PAX header's records are
    /// kept to find a `size` for the next entry.
    Data { left: u64, pax: Option<Vec<u8>> },
    /// GNU sparse extension blocks follow (one block, then more while it says so).
    SparseExtension {
        block: Box<[u8; BLOCK]>,
        filled: usize,
        then: u64,
    },
    /// No longer followed (end of archive, or a header it cannot read).
    Off,
}

pub(super) struct MetadataGuard<R> {
    inner: R,
    state: State,
    /// A PAX `size` record for the next entry.
    next_size: Option<u64>,
    /// Where the reason of a failed read is left (the tar reader replaces the error with its
    /// own).
    failure: Rc<Cell<Option<ExtractError>>>,
}

impl<R: Read> MetadataGuard<R> {
    pub(super) fn new(inner: R, failure: Rc<Cell<Option<ExtractError>>>) -> Self {
        MetadataGuard {
            inner,
            state: State::header(),
            next_size: None,
            failure,
        }
    }

    fn follow(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return Ok(()),
                State::Header { block, filled } | State::SparseExtension { block, filled, .. } => {
                    let n = (BLOCK - *filled).min(bytes.len());
                    block[*filled..*filled + n].copy_from_slice(&bytes[..n]);
                    *filled += n;
                    bytes = &bytes[n..];
                    if *filled == BLOCK {
                        self.state = self.after_block()?;
                    }
                }
                State::Data { left, pax } => {
                    let n = (*left).min(bytes.len() as u64) as usize;
                    if let Some(records) = pax {
                        records.extend_from_slice(&bytes[..n]);
                    }
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        if let Some(records) = pax.take() {
                            self.next_size = pax_size(&records);
                        }
                        self.state = State::header();
                    }
                }
            }
        }
        Ok(())
    }

    /// The state after a whole header or sparse extension block.
    fn after_block(&mut self) -> io::Result<State> {
        let state = std::mem::replace(&mut self.state, State::Off);
        let block = match state {
            State::SparseExtension { block, then, .. } => {
                return Ok(match block[504] {
                    0 => data(then, None),
                    _ => State::SparseExtension {
                        block,
                        filled: 0,
                        then,
                    },
                });
            }
            State::Header { block, .. } => block,
            _ => return Ok(State::Off),
        };
        if block.iter().all(|&b| b == 0) {
            return Ok(State::Off);
        }
        let Some(size) = header_size(&block[124..136]) else {
            return Ok(State::Off);
        };
        let kind = block[156];
        if matches!(kind, b'L' | b'K' | b'x' | b'g') {
            if size > METADATA_LIMIT {
                let name = block[..100].split(|&b| b == 0).next().unwrap_or_default();
                self.failure.set(Some(unsafe_entry(
                    name,
                    format_args!(
                        "a long name or PAX header of {size} bytes (at most {METADATA_LIMIT})"
                    ),
                )));
                return Err(io::Error::other("tar metadata entry too large"));
            }
            let pax = (kind == b'x').then(Vec::new);
            return Ok(data(size, pax));
        }
        let size = self.next_size.take().unwrap_or(size);
        if kind == b'S' && block[482] != 0 {
            return Ok(State::SparseExtension {
                block: Box::new([0; BLOCK]),
                filled: 0,
                then: size,
            });
        }
        Ok(data(size, None))
    }
}

impl State {
    fn header() -> State {
        State::Header {
            block: Box::new([0; BLOCK]),
            filled: 0,
        }
    }
}

/// `size` bytes of data, rounded up to whole blocks.
fn data(size: u64, pax: Option<Vec<u8>>) -> State {
    let left = size.div_ceil(BLOCK as u64) * BLOCK as u64;
    match left {
        0 => State::header(),
        _ => State::Data { left, pax },
    }
}

/// A header's size field: octal digits, or GNU's base-256 (high bit of the first byte set).
fn header_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(n);
    }
    let digits = std::str::from_utf8(field).ok()?;
    let digits = digits.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

/// The `size` record of PAX extended header records (`<len> <key>=<value>\n`...).
fn pax_size(mut records: &[u8]) -> Option<u64> {
    let mut size = None;
    while let Some(space) = records.iter().position(|&b| b == b' ') {
        let len: usize = std::str::from_utf8(&records[..space]).ok()?.parse().ok()?;
        let record = records.get(space + 1..len)?;
        if let Some(value) = record.strip_prefix(b"size=") {
            let value = std::str::from_utf8(value).ok()?.trim_end_matches('\n');
            size = value.parse().ok();
        }
        records = &records[len..];
    }
    size
}

impl<R: Read> Read for MetadataGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.follow(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: tar::EntryType, name: &str, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_path(name).unwrap();
        h.set_size(size);
        h.set_cksum();
        h
    }

    /// Reads `archive` through a guard; the failure it reported, if any.
    fn guarded(archive: &[u8]) -> Option<ExtractError> {
        let failure = Rc::new(Cell::new(None));
        let mut guard = MetadataGuard::new(archive, failure.clone());
        let _ = io::copy(&mut guard, &mut io::sink());
        failure.take()
    }

    /// An archive of one GNU long name of `len` bytes.
    fn long_name(len: u64) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let name = vec![b'n'; len as usize];
        let h = header(tar::EntryType::GNULongName, "././@LongLink", len);
        b.append(&h, &name[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn a_long_name_beyond_the_limit_fails_the_read() {
        let Some(ExtractError::Unsafe(msg)) = guarded(&long_name(METADATA_LIMIT + 1)) else {
            panic!("not refused");
        };
        assert_eq!(
            msg,
            "refusing unsafe tar entry \"@LongLink\": a long name or PAX header of 1048577 \
             bytes (at most 1048576)"
        );
        assert!(
            guarded(&long_name(METADATA_LIMIT)).is_none(),
            "at the limit"
        );
    }

    #[test]
    fn entries_are_followed_through_pax_sizes_and_sparse_extensions() {
        // Data that would read as a too-large long name header if the guard lost its place.
        let decoy = header(tar::EntryType::GNULongName, "decoy", METADATA_LIMIT * 4);
        let mut data = decoy.as_bytes().to_vec();
        data.resize(1000, b'd');
        let mut b = tar::Builder::new(Vec::new());
        let records = format!("{} size=1000\n", "size=1000\n".len() + 3);
        b.append(
            &header(tar::EntryType::XHeader, "pax", records.len() as u64),
            records.as_bytes(),
        )
        .unwrap();
        // The ustar size says 0; the PAX record's 1000 rules.
        let mut archive = b.into_inner().unwrap();
        archive.truncate(archive.len() - 1024);
        archive.extend_from_slice(header(tar::EntryType::Regular, "file", 0).as_bytes());
        archive.extend_from_slice(&data);
        archive.resize(archive.len() + 24, 0);
        // A sparse entry with one extension block (whose own flag ends the chain), then the
        // decoy as its data.
        let mut sparse = header(tar::EntryType::GNUSparse, "sparse", 512);
        sparse.as_gnu_mut().unwrap().isextended[0] = 1;
        sparse.set_cksum();
        archive.extend_from_slice(sparse.as_bytes());
        archive.extend_from_slice(&[0; BLOCK]);
        archive.extend_from_slice(decoy.as_bytes());
        archive.extend_from_slice(&[0; 1024]);
        assert!(guarded(&archive).is_none(), "the guard lost its place");
        // Without the PAX record, the decoy is where a header is expected.
        let mut plain = header(tar::EntryType::Regular, "file", 0)
            .as_bytes()
            .to_vec();
        plain.extend_from_slice(decoy.as_bytes());
        assert!(guarded(&plain).is_some());
    }

    #[test]
    fn sizes_read_as_the_tar_crate_reads_them() {
        assert_eq!(header_size(b"00000001750\0"), Some(1000));
        assert_eq!(header_size(b"\0\0\0\0\0\0\0\0\0\0\0\0"), Some(0));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 2;
        big[10] = 1;
        assert_eq!(header_size(&big), Some(258));
        assert_eq!(header_size(b"zzzzzzzzzzz\0"), None);
        assert_eq!(pax_size(b"11 size=42\n20 path=a/long/name\n"), Some(42));
        assert_eq!(pax_size(b"16 path=x/y/zzz\n"), None);
    }
}
