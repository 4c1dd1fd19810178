//! Hostile archives for the tar corpus and the registry tests: entries written raw (names, link
//! names, types and sizes as an attacker picks them) and gzip bombs made of repeated members, so
//! that a 10 MB bomb is built in a fraction of a second.
#![allow(dead_code)]

use std::io::Write;

/// A tar built entry by entry, with raw names.
pub struct RawTar {
    b: tar::Builder<Vec<u8>>,
}

/// One entry's header: owner root, a fixed time, `name` and `link` copied raw (up to 100 bytes;
/// longer names need [`RawTar::long_name`]).
pub fn raw_header(
    kind: tar::EntryType,
    name: &[u8],
    link: &[u8],
    mode: u32,
    size: u64,
) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    let old = h.as_old_mut();
    old.name[..name.len()].copy_from_slice(name);
    old.linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h.set_cksum();
    h
}

impl RawTar {
    pub fn new() -> RawTar {
        RawTar {
            b: tar::Builder::new(Vec::new()),
        }
    }

    /// `config.json` (a minimal valid plugin config) and the `rootfs/` directory.
    pub fn plugin() -> RawTar {
        let config = br#"{"Entrypoint":["/bin/none"],"Interface":{"Socket":"none.sock","Types":["docker.volumedriver/1.0"]}}"#;
        RawTar::new()
            .entry(tar::EntryType::Regular, "config.json", "", 0o644, config)
            .entry(tar::EntryType::Directory, "rootfs/", "", 0o755, b"")
    }

    pub fn entry(
        mut self,
        kind: tar::EntryType,
        name: &str,
        link: &str,
        mode: u32,
        data: &[u8],
    ) -> RawTar {
        let h = raw_header(
            kind,
            name.as_bytes(),
            link.as_bytes(),
            mode,
            data.len() as u64,
        );
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn file(self, name: &str, mode: u32, data: &[u8]) -> RawTar {
        self.entry(tar::EntryType::Regular, name, "", mode, data)
    }

    pub fn symlink(self, name: &str, target: &str) -> RawTar {
        self.entry(tar::EntryType::Symlink, name, target, 0o777, b"")
    }

    pub fn hardlink(self, name: &str, target: &str) -> RawTar {
        self.entry(tar::EntryType::Link, name, target, 0o644, b"")
    }

    /// A GNU long-name entry (`././@LongLink`, type `L`) naming the next entry `name`.
    pub fn long_name(mut self, name: &[u8]) -> RawTar {
        let mut data = name.to_vec();
        data.push(0);
        let h = raw_header(
            tar::EntryType::GNULongName,
            b"././@LongLink",
            b"",
            0o644,
            data.len() as u64,
        );
        self.b.append(&h, &data[..]).unwrap();
        self
    }

    /// A GNU sparse entry (type `S`) whose file is `real_size` (< 8 GiB) bytes long: a hole,
    /// then its one stored byte at the end.
    pub fn sparse(mut self, name: &str, real_size: u64) -> RawTar {
        let mut h = raw_header(tar::EntryType::GNUSparse, name.as_bytes(), b"", 0o644, 1);
        let gnu = h.as_gnu_mut().unwrap();
        let octal = |field: &mut [u8], n: u64| {
            let text = format!("{n:0width$o}", width = field.len() - 1);
            field[..text.len()].copy_from_slice(text.as_bytes());
        };
        octal(&mut gnu.realsize, real_size);
        octal(&mut gnu.sparse[0].offset, real_size - 1);
        octal(&mut gnu.sparse[0].numbytes, 1);
        h.set_cksum();
        self.b.append(&h, &b"x"[..]).unwrap();
        self
    }

    /// The archive without its end-of-archive blocks (a bomb's zeros supply them).
    pub fn unfinished(self) -> Vec<u8> {
        // `into_inner` appends the two zero blocks that end an archive: cut them off.
        let mut bytes = self.b.into_inner().unwrap();
        bytes.truncate(bytes.len() - 1024);
        bytes
    }

    pub fn bytes(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

impl Default for RawTar {
    fn default() -> Self {
        RawTar::new()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// Bytes of zeros per repeated gzip member of a bomb.
const BOMB_MEMBER: usize = 1 << 20;

/// A gzip bomb: `prefix` (a tar whose last entry is a regular file `<name>` announcing the
/// rest) followed by zeros, about `compressed_size` bytes of gzip in all, expanding to roughly
/// 1000 times that. The zeros are the file's data and then the end of the archive.
pub fn gzip_bomb(prefix: RawTar, name: &str, compressed_size: usize) -> (Vec<u8>, u64) {
    let zeros = gzip(&vec![0u8; BOMB_MEMBER]);
    let members = compressed_size / zeros.len();
    let expands_to = (members * BOMB_MEMBER) as u64;
    // The file's data is the zeros but the two end blocks.
    let head = prefix
        .entry(tar::EntryType::Regular, name, "", 0o644, b"")
        .unfinished();
    let mut head = head;
    // Rewrite the last header's size (it was appended with no data).
    let at = head.len() - 512;
    let mut h = tar::Header::from_byte_slice(&head[at..]).clone();
    h.set_size(expands_to - 1024);
    h.set_cksum();
    head[at..].copy_from_slice(h.as_bytes());
    let mut bomb = gzip(&head);
    for _ in 0..members {
        bomb.extend_from_slice(&zeros);
    }
    (bomb, expands_to + head.len() as u64)
}
