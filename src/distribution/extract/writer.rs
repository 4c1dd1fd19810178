//! The re-packed layer of a create context: every rootfs entry written again, with the `rootfs/`
//! prefix stripped, as a GNU tar (long names and link names as `L`/`K` records, xattrs as PAX
//! records) through the parallel gzip compressor, counted and hashed on the way out.

use std::io::{self, BufWriter, Read, Write};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::gzip::ParallelGzip;
use super::Meta;

/// Buffer between the gzip writer and `layer_out`.
const LAYER_BUF: usize = 256 * 1024;

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

pub(super) struct LayerWriter<W: Write> {
    tar: tar::Builder<ParallelGzip<BufWriter<HashingWriter<W>>>>,
}

impl<W: Write> LayerWriter<W> {
    pub(super) fn new(out: W) -> Self {
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
    pub(super) fn append(
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
    pub(super) fn finish(self) -> io::Result<(String, u64)> {
        let gz = self.tar.into_inner()?;
        let buffered = gz.finish()?;
        let mut hashing = buffered.into_inner().map_err(|e| e.into_error())?;
        hashing.flush()?;
        let digest = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
        Ok((digest, hashing.written))
    }
}

/// Copies `src` into a fixed NUL-padded header field (truncating).
pub(super) fn copy_field(dst: &mut [u8], src: &[u8]) {
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
    dst[n..].fill(0);
}

/// One PAX record `"<len> <key>=<value>\n"` for `kv` = `"<key>=<value>\n"`; `<len>` counts itself.
pub(super) fn pax_record(kv: &[u8]) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
