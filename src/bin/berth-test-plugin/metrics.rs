//! The MetricsCollector mode of the test plugin: `MetricsCollector.StartMetrics` starts scraping
//! `GET /metrics` on the daemon's metrics socket (`TEST_METRICS_SOCKET`, default
//! `/run/docker/metrics.sock`, where the daemon binds it in) every `TEST_SCRAPE_INTERVAL_MS`
//! (default 100); each scrape replaces `<TEST_ROOT>/metrics.txt` (status line, blank line, body).
//! `MetricsCollector.StopMetrics` stops it and writes `<TEST_ROOT>/metrics-stopped`.

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

/// Whether a scraper thread runs.
static SCRAPING: AtomicBool = AtomicBool::new(false);

impl Driver {
    /// `MetricsCollector.<method>`; bodies are empty both ways.
    pub(super) fn metrics_call(&self, method: &str) -> Reply {
        match method {
            "MetricsCollector.StartMetrics" => {
                if !SCRAPING.swap(true, Ordering::SeqCst) {
                    let socket = self.cfg.metrics_socket.clone();
                    let out = self.cfg.root.clone();
                    let every = self.cfg.scrape_interval;
                    let _ = fs::remove_file(out.join("metrics-stopped"));
                    thread::spawn(move || scrape_until_stopped(&socket, &out, every));
                }
                Reply::ok(json!({}))
            }
            "MetricsCollector.StopMetrics" => {
                SCRAPING.store(false, Ordering::SeqCst);
                let _ = fs::write(self.cfg.root.join("metrics-stopped"), b"stopped\n");
                Reply::ok(json!({}))
            }
            _ => Reply::not_found(),
        }
    }
}

fn scrape_until_stopped(socket: &Path, out: &Path, every: Duration) {
    while SCRAPING.load(Ordering::SeqCst) {
        let text = match scrape(socket) {
            Ok(text) => text,
            Err(e) => format!("scrape failed: {}\n\n", errno_text(&e)),
        };
        let tmp = out.join(".metrics.txt.tmp");
        if fs::write(&tmp, text).is_ok() {
            let _ = fs::rename(&tmp, out.join("metrics.txt"));
        }
        thread::sleep(every);
    }
}

/// `GET /metrics` over the unix socket: the status line, a blank line, the body.
fn scrape(socket: &Path) -> io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default();
    Ok(format!("{status}\n\n{body}"))
}
