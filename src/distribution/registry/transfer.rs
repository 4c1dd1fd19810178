//! Blob transfer: downloads streamed, counted and hashed into memory or a file (written in
//! vectored batches, removed on any failure), and monolithic uploads from a file with progress
//! and a stall deadline.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION,
};
use reqwest::{Method, Response, StatusCode, Url};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use super::error::{io_error, transport_error};
use super::session::ChunkError;
use super::{
    check_digest, check_pushed_digest, verify_digest, Descriptor, RegistryError, Result, Session,
};
use crate::distribution::blobstore::{BlobStore, StagedBlob};

/// Chunk size of uploads read from disk.
const UPLOAD_CHUNK: usize = 256 * 1024;
/// How often an upload's progress is reported and its stall deadline checked.
const UPLOAD_TICK: Duration = Duration::from_millis(100);

/// Network chunks gathered to at least this many bytes before they are written to a blob file.
const WRITE_BATCH: usize = 256 * 1024;
/// Writeback of a downloaded blob file is started every this many bytes.
const WRITEBACK_STEP: u64 = 8 << 20;

impl Session {
    /// Downloads a blob into memory: refused before any request when `desc.size > max`,
    /// verified for size and digest. For plugin configs.
    pub async fn fetch_blob_bytes(&self, desc: &Descriptor, max: u64) -> Result<Vec<u8>> {
        check_digest(&desc.digest)?;
        if desc.size > max {
            return Err(RegistryError::TooLarge {
                what: format!("blob {} ({} bytes)", desc.digest, desc.size),
                limit: max,
            });
        }
        let deadline = Instant::now() + self.shared.options.request_timeout;
        let (mut resp, url) = self.get_blob(desc).await?;
        let mut out = Vec::with_capacity(desc.size as usize);
        let mut hasher = Sha256::new();
        self.stream_blob(&mut resp, &url, desc, Some(deadline), |chunk, _| {
            hasher.update(chunk);
            out.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        verify_digest(&desc.digest, hasher)?;
        Ok(out)
    }

    /// Streams a blob into a new file at `path` (created or truncated), verifying every byte
    /// against `desc` (size and sha256). `progress` gets the number of bytes written to the file
    /// so far after each write, so a reader may follow the file as it grows (the last call, with
    /// `desc.size`, comes before the digest is checked: only an `Ok` return says the bytes are
    /// the blob). On any failure — and if this future is dropped — the file is removed.
    ///
    /// Network chunks are gathered and written with one vectored write per `WRITE_BATCH`
    /// bytes; every `WRITEBACK_STEP` bytes the kernel is asked to start writing the file back
    /// (`sync_file_range`, not waited for), so that the fsync of [`BlobStore::commit`] finds
    /// little left to do. The file itself is not fsynced here.
    pub async fn fetch_blob_to_file(
        &self,
        desc: &Descriptor,
        path: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<()> {
        check_digest(&desc.digest)?;
        let mut partial = PartialFile::create(path)?;
        let (mut resp, url) = self.get_blob(desc).await?;
        let mut hasher = Sha256::new();
        let mut batch = WriteBatch::new(partial.file());
        self.stream_blob(&mut resp, &url, desc, None, |chunk, _| {
            hasher.update(chunk);
            if batch.push(chunk) {
                let written = batch.write().map_err(|e| io_error("writing", path, &e))?;
                progress(written);
            }
            Ok(())
        })
        .await?;
        if batch.pending() {
            let written = batch.write().map_err(|e| io_error("writing", path, &e))?;
            progress(written);
        }
        verify_digest(&desc.digest, hasher)?;
        partial.finish()
    }

    /// [`fetch_blob_to_file`](Self::fetch_blob_to_file) into the store's ingest area: the result
    /// is ready for [`BlobStore::commit`] (or `discard`).
    pub async fn fetch_blob_to_store(
        &self,
        store: &BlobStore,
        desc: &Descriptor,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<StagedBlob> {
        let path = store.ingest_path();
        self.fetch_blob_to_file(desc, &path, progress).await?;
        Ok(StagedBlob {
            path,
            digest: desc.digest.clone(),
            size: desc.size,
        })
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`: true on 200, false on 404.
    pub async fn blob_exists(&self, desc: &Descriptor) -> Result<bool> {
        check_digest(&desc.digest)?;
        let url = self.url(&format!("/blobs/{}", desc.digest));
        let resp = self
            .send(Method::HEAD, &url, HeaderMap::new(), None)
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.error_from(resp, "HEAD", &url, &desc.digest).await),
        }
    }

    /// Uploads the file at `path` as the blob `desc` (its size must match): `POST` an upload,
    /// then one streamed `PUT <Location>&digest=<digest>`. A `Location` may be relative or
    /// absolute; credentials are sent only when it is on the registry's own origin. `progress`
    /// gets the bytes handed to the connection so far, about every 100 ms.
    pub async fn push_blob_from_file(
        &self,
        desc: &Descriptor,
        path: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<()> {
        let file = open_upload(desc, path)?;
        let (put_url, same_origin) = self.start_upload(desc).await?;

        let sent = Arc::new(AtomicU64::new(0));
        let local_error = Arc::new(Mutex::new(None::<RegistryError>));
        let body = upload_stream(
            file,
            desc.clone(),
            path.to_path_buf(),
            Arc::clone(&sent),
            Arc::clone(&local_error),
        );
        let (client, authorization) = self.client_and_auth();
        let mut request = client
            .put(put_url.as_str())
            .headers(self.meta.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, desc.size)
            .body(reqwest::Body::wrap_stream(body));
        if same_origin {
            if let Some(a) = authorization {
                request = request.header(AUTHORIZATION, a);
            }
        }
        let put_text = put_url.to_string();
        let options = &self.shared.options;
        let mut send = Box::pin(request.send());
        let mut reported = 0u64;
        let mut last_move = Instant::now();
        let outcome = loop {
            match tokio::time::timeout(UPLOAD_TICK, &mut send).await {
                Ok(r) => break r,
                Err(_) => {
                    let now = Instant::now();
                    let n = sent.load(Ordering::Relaxed);
                    if n != reported {
                        reported = n;
                        last_move = now;
                        progress(n);
                    } else {
                        // Waiting for bytes to move, or (all sent) for the registry's verdict.
                        let limit = if n < desc.size {
                            options.stall_timeout
                        } else {
                            options.request_timeout
                        };
                        if now.duration_since(last_move) >= limit {
                            return Err(RegistryError::Stalled {
                                method: "Put".into(),
                                url: put_text,
                                after: limit,
                            });
                        }
                    }
                }
            }
        };
        if let Some(e) = local_error.lock().unwrap().take() {
            return Err(e);
        }
        let resp = outcome.map_err(|e| transport_error("PUT", &put_text, &e))?;
        if !resp.status().is_success() {
            return Err(self.error_from(resp, "PUT", &put_text, &desc.digest).await);
        }
        check_pushed_digest(resp.headers(), &desc.digest)?;
        if reported != desc.size {
            progress(desc.size);
        }
        Ok(())
    }

    /// `POST /v2/<repo>/blobs/uploads/`: the URL to `PUT` the blob to (the answer's `Location`
    /// with the digest added), and whether it is on the registry's own origin.
    async fn start_upload(&self, desc: &Descriptor) -> Result<(Url, bool)> {
        let start_url = self.url("/blobs/uploads/");
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let resp = self
            .send(Method::POST, &start_url, headers, Some(Bytes::new()))
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .error_from(resp, "POST", &start_url, &self.reference.name())
                .await);
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                RegistryError::Protocol(format!(
                    "registry answered the upload request for {} without a Location",
                    desc.digest
                ))
            })?;
        drop(resp);
        let base = Url::parse(&start_url).map_err(|e| RegistryError::Protocol(e.to_string()))?;
        let mut put_url = base.join(&location).map_err(|e| {
            RegistryError::Protocol(format!("invalid upload Location {location:?}: {e}"))
        })?;
        if !matches!(put_url.scheme(), "http" | "https") {
            return Err(RegistryError::Protocol(format!(
                "invalid upload Location {location:?}"
            )));
        }
        put_url
            .query_pairs_mut()
            .append_pair("digest", &desc.digest);
        let same_origin = put_url.origin() == base.origin();
        Ok((put_url, same_origin))
    }

    async fn get_blob(&self, desc: &Descriptor) -> Result<(Response, String)> {
        let url = self.url(&format!("/blobs/{}", desc.digest));
        let resp = self.send(Method::GET, &url, HeaderMap::new(), None).await?;
        if !resp.status().is_success() {
            return Err(self.error_from(resp, "GET", &url, &desc.digest).await);
        }
        Ok((resp, url))
    }

    /// Feeds a blob body to `sink(chunk, bytes so far)`, never more than `desc.size` bytes: a
    /// chunk that would pass it fails with `TooLong` before it is handed on.
    async fn stream_blob(
        &self,
        resp: &mut Response,
        url: &str,
        desc: &Descriptor,
        deadline: Option<Instant>,
        mut sink: impl FnMut(&Bytes, u64) -> Result<()>,
    ) -> Result<()> {
        let mut received = 0u64;
        loop {
            let chunk = match self.next_chunk(resp, "Get", url, deadline).await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(ChunkError::Timeout(e)) => return Err(e),
                Err(ChunkError::Body) => {
                    return Err(RegistryError::Truncated {
                        digest: desc.digest.clone(),
                        expected: desc.size,
                        received,
                    })
                }
            };
            if chunk.len() as u64 > desc.size - received {
                return Err(RegistryError::TooLong {
                    digest: desc.digest.clone(),
                    expected: desc.size,
                });
            }
            received += chunk.len() as u64;
            sink(&chunk, received)?;
        }
        if received < desc.size {
            return Err(RegistryError::Truncated {
                digest: desc.digest.clone(),
                expected: desc.size,
                received,
            });
        }
        Ok(())
    }
}

/// Chunks of a download waiting to be written to its file in one vectored write.
struct WriteBatch<'f> {
    file: &'f mut File,
    chunks: Vec<Bytes>,
    len: usize,
    /// Bytes in the file.
    written: u64,
    /// Bytes whose writeback has been started.
    flushed: u64,
}

impl<'f> WriteBatch<'f> {
    fn new(file: &'f mut File) -> Self {
        WriteBatch {
            file,
            chunks: Vec::new(),
            len: 0,
            written: 0,
            flushed: 0,
        }
    }

    /// Adds a chunk (without copying it); true once the batch is worth a write.
    fn push(&mut self, chunk: &Bytes) -> bool {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push(chunk.clone());
        }
        self.len >= WRITE_BATCH
    }

    fn pending(&self) -> bool {
        self.len > 0
    }

    /// Writes the batch; returns the file's length.
    fn write(&mut self) -> std::io::Result<u64> {
        use bytes::Buf as _;
        let mut chunks = &mut self.chunks[..];
        while !chunks.is_empty() {
            let slices: Vec<std::io::IoSlice<'_>> =
                chunks.iter().map(|c| std::io::IoSlice::new(c)).collect();
            let mut n = match self.file.write_vectored(&slices) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            while n > 0 {
                let first = chunks[0].len();
                if n >= first {
                    n -= first;
                    chunks = &mut chunks[1..];
                } else {
                    chunks[0].advance(n);
                    n = 0;
                }
            }
        }
        self.written += self.len as u64;
        self.chunks.clear();
        self.len = 0;
        if self.written - self.flushed >= WRITEBACK_STEP {
            crate::fsutil::start_writeback(self.file, self.flushed, self.written - self.flushed);
            self.flushed = self.written;
        }
        Ok(self.written)
    }
}

/// A file being downloaded: removed on drop unless [`finish`](Self::finish)ed.
struct PartialFile {
    path: PathBuf,
    file: Option<File>,
}

impl PartialFile {
    fn create(path: &Path) -> Result<PartialFile> {
        let file = File::create(path).map_err(|e| io_error("creating", path, &e))?;
        Ok(PartialFile {
            path: path.to_path_buf(),
            file: Some(file),
        })
    }

    fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until finished")
    }

    fn finish(mut self) -> Result<()> {
        let mut file = self.file.take().expect("open until finished");
        if let Err(e) = file.flush() {
            let _ = std::fs::remove_file(&self.path);
            return Err(io_error("writing", &self.path, &e));
        }
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The file to upload as `desc`, checked to hold `desc.size` bytes.
fn open_upload(desc: &Descriptor, path: &Path) -> Result<File> {
    check_digest(&desc.digest)?;
    let file = File::open(path).map_err(|e| io_error("opening", path, &e))?;
    let len = file
        .metadata()
        .map_err(|e| io_error("reading", path, &e))?
        .len();
    if len != desc.size {
        return Err(RegistryError::Io(format!(
            "blob {} at {}: {len} bytes on disk, {} in its descriptor",
            desc.digest,
            path.display(),
            desc.size
        )));
    }
    Ok(file)
}

/// The upload body: `desc.size` bytes of `file` in chunks, hashed; a short file or a digest
/// that is not `desc.digest` ends the stream with an error (recorded in `local_error`).
fn upload_stream(
    file: File,
    desc: Descriptor,
    path: PathBuf,
    sent: Arc<AtomicU64>,
    local_error: Arc<Mutex<Option<RegistryError>>>,
) -> impl futures_util::Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + 'static {
    struct Upload {
        file: File,
        hasher: Sha256,
        remaining: u64,
        done: bool,
    }
    let start = Upload {
        file,
        hasher: Sha256::new(),
        remaining: desc.size,
        done: false,
    };
    futures_util::stream::unfold(start, move |mut up| {
        let (desc, path, sent, local_error) = (
            desc.clone(),
            path.clone(),
            Arc::clone(&sent),
            Arc::clone(&local_error),
        );
        async move {
            if up.done {
                return None;
            }
            let fail = |e: RegistryError, up: Upload| {
                let text = e.to_string();
                *local_error.lock().unwrap() = Some(e);
                Some((
                    Err(std::io::Error::other(text)),
                    Upload { done: true, ..up },
                ))
            };
            let digest_error = |hasher: &Sha256| verify_digest(&desc.digest, hasher.clone()).err();
            if up.remaining == 0 {
                // Only for an empty blob: otherwise the last chunk ended the stream.
                up.done = true;
                return match digest_error(&up.hasher) {
                    Some(e) => fail(e, up),
                    None => None,
                };
            }
            let want = (up.remaining as usize).min(UPLOAD_CHUNK);
            let mut buf = vec![0u8; want];
            let n = loop {
                match up.file.read(&mut buf) {
                    Ok(0) => {
                        return fail(
                            RegistryError::Io(format!(
                                "blob {} at {}: file ended before {} bytes",
                                desc.digest,
                                path.display(),
                                desc.size
                            )),
                            up,
                        )
                    }
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return fail(io_error("reading", &path, &e), up),
                }
            };
            buf.truncate(n);
            up.hasher.update(&buf);
            up.remaining -= n as u64;
            if up.remaining == 0 {
                // Checked before the last bytes go out, so a file that changed since its digest
                // was computed never completes an upload.
                if let Some(e) = digest_error(&up.hasher) {
                    return fail(e, up);
                }
                up.done = true;
            }
            sent.fetch_add(n as u64, Ordering::Relaxed);
            Some((Ok(Bytes::from(buf)), up))
        }
    })
}
