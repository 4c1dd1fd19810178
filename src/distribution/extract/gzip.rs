//! Parallel gzip compression of a create context's layer.

use std::io::{self, Write};
use std::sync::mpsc;

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
pub(super) struct ParallelGzip<W: Write> {
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
    pub(super) fn new(out: W, level: flate2::Compression) -> Self {
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
    pub(super) fn finish(mut self) -> io::Result<W> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

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
}
