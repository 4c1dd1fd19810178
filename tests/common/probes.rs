//! What the reliability tests measure of a daemon under attack: `/_ping` answered throughout
//! (a thread probing it), and the daemon's peak resident memory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::raw_request;

/// How often the prober asks.
const PING_EVERY: Duration = Duration::from_millis(25);

/// What the prober saw.
#[derive(Debug, Clone, Default)]
pub struct PingReport {
    pub probes: usize,
    /// Probes that failed or answered anything but 200 `OK`.
    pub failures: Vec<String>,
    pub worst: Duration,
    /// The 99th percentile latency.
    pub p99: Duration,
}

/// A thread asking `GET /_ping` every 25 ms until stopped.
pub struct Pinger {
    stop: Arc<AtomicBool>,
    worker: Option<std::thread::JoinHandle<PingReport>>,
}

impl Pinger {
    pub fn start(socket: &Path) -> Pinger {
        let stop = Arc::new(AtomicBool::new(false));
        let (socket, done) = (PathBuf::from(socket), stop.clone());
        let worker = std::thread::spawn(move || {
            let mut latencies = Vec::new();
            let mut failures = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let started = Instant::now();
                match raw_request(&socket, "GET", "/_ping", &[], &[]) {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => failures.push(format!("{} {}", r.status, r.text())),
                    Err(e) => failures.push(e.to_string()),
                }
                latencies.push(started.elapsed());
                std::thread::sleep(PING_EVERY);
            }
            latencies.sort();
            let p99 = latencies
                .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default();
            PingReport {
                probes: latencies.len(),
                failures,
                worst: latencies.last().copied().unwrap_or_default(),
                p99,
            }
        });
        Pinger {
            stop,
            worker: Some(worker),
        }
    }

    pub fn finish(mut self) -> PingReport {
        self.stop.store(true, Ordering::Relaxed);
        self.worker.take().unwrap().join().expect("pinger")
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A `/proc/<pid>/status` field in kB (`VmHWM`: peak resident set, `VmRSS`: now).
pub fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The peak resident memory of `pid` so far, in MiB.
pub fn peak_rss_mib(pid: u32) -> u64 {
    status_kb(pid, "VmHWM") / 1024
}
