//! Plugin output: every line a plugin writes goes to the daemon log with `plugin=<id>` (as
//! dockerd does) and into a per-plugin store: a bounded ring in memory and a size-capped file
//! under the data root, served by `GET /plugins/{name}/logs`.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Lines kept in memory per plugin.
pub const RING_LINES: usize = 1000;
/// The log file is rotated (one previous generation kept) past this size.
pub const FILE_LIMIT: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: chrono::DateTime<chrono::Utc>,
    /// `stdout`, `stderr`, or `daemon` for berth's own notes about the plugin.
    pub stream: &'static str,
    pub text: String,
}

impl LogLine {
    pub fn render(&self) -> String {
        format!(
            "{} {} {}",
            self.time
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            self.stream,
            self.text
        )
    }
}

struct PluginLog {
    ring: VecDeque<LogLine>,
    file: Option<File>,
    written: u64,
    path: PathBuf,
}

/// Where plugin output goes besides the daemon log and the store (`--plugin-log-driver`).
/// Called on the output reader's thread: it must not block.
pub trait LogSink: Send + Sync {
    fn line(&self, plugin_id: &str, line: &LogLine);
}

/// Shared by the output readers and the API.
#[derive(Clone, Default)]
pub struct LogStore {
    inner: Arc<Mutex<HashMap<String, PluginLog>>>,
    sink: Arc<std::sync::OnceLock<Arc<dyn LogSink>>>,
    /// Output readers still running, per plugin.
    readers: Arc<Mutex<HashMap<String, usize>>>,
}

impl LogStore {
    /// Starts (or continues) the log of plugin `id`, written to `path`.
    pub fn open(&self, id: &str, path: PathBuf) {
        let mut logs = self.lock();
        if logs.contains_key(id) {
            return;
        }
        let written = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let ring = read_tail(&path, RING_LINES);
        logs.insert(
            id.to_string(),
            PluginLog {
                ring,
                file: None,
                written,
                path,
            },
        );
    }

    /// Sends every line appended from now on to `sink` too (set once, at start-up).
    pub fn set_sink(&self, sink: Arc<dyn LogSink>) {
        let _ = self.sink.set(sink);
    }

    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PluginLog>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn append(&self, id: &str, stream: &'static str, text: String) {
        let line = LogLine {
            time: chrono::Utc::now(),
            stream,
            text,
        };
        if let Some(sink) = self.sink.get() {
            sink.line(id, &line);
        }
        let mut logs = self.lock();
        let Some(log) = logs.get_mut(id) else {
            return;
        };
        let rendered = line.render();
        if log.ring.len() == RING_LINES {
            log.ring.pop_front();
        }
        log.ring.push_back(line);
        if let Err(e) = log.write(&rendered) {
            log::debug!("plugin log file {}: {e}", log.path.display());
        }
    }

    /// The last `tail` lines (all kept lines when `None`), rendered.
    pub fn tail(&self, id: &str, tail: Option<usize>) -> Vec<String> {
        let logs = self.lock();
        let Some(log) = logs.get(id) else {
            return Vec::new();
        };
        let skip = tail.map(|n| log.ring.len().saturating_sub(n)).unwrap_or(0);
        log.ring.iter().skip(skip).map(LogLine::render).collect()
    }

    /// The last `n` lines written at or after `since` (one start attempt's output).
    pub fn tail_since(
        &self,
        id: &str,
        since: chrono::DateTime<chrono::Utc>,
        n: usize,
    ) -> Vec<String> {
        let logs = self.lock();
        let Some(log) = logs.get(id) else {
            return Vec::new();
        };
        let recent: Vec<&LogLine> = log.ring.iter().filter(|l| l.time >= since).collect();
        let skip = recent.len().saturating_sub(n);
        recent.into_iter().skip(skip).map(LogLine::render).collect()
    }

    /// Forwards every line of `output` to the daemon log and the store until EOF. Runs on its
    /// own thread per stream.
    pub fn forward(&self, id: String, stream: &'static str, output: impl Read + Send + 'static) {
        let store = self.clone();
        let name = id.clone();
        self.count_reader(&id, 1);
        let spawned = std::thread::Builder::new()
            .name(format!("plugin-{stream}"))
            .spawn(move || {
                let mut reader = BufReader::new(output);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
                            log::info!(target: "plugin", plugin = id.as_str(), stream = stream; "{text}");
                            store.append(&id, stream, text);
                        }
                    }
                }
                store.count_reader(&id, -1);
            });
        if let Err(e) = spawned {
            self.count_reader(&name, -1);
            log::error!("cannot start the output reader of plugin {name}: {e}");
        }
    }

    fn count_reader(&self, id: &str, delta: isize) {
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        let count = readers.entry(id.to_string()).or_default();
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            readers.remove(id);
        }
    }

    /// Waits (at most `timeout`) until every output reader of a plugin that exited has read
    /// to the end, so its last words are in the store.
    pub fn wait_drained(&self, id: &str, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if !self
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(id)
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

impl PluginLog {
    fn write(&mut self, rendered: &str) -> std::io::Result<()> {
        if self.written + rendered.len() as u64 + 1 > FILE_LIMIT {
            self.file = None;
            let _ = fs::rename(&self.path, self.path.with_extension("log.1"));
            self.written = 0;
        }
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let file = self.file.as_mut().expect("opened above");
        file.write_all(rendered.as_bytes())?;
        file.write_all(b"\n")?;
        self.written += rendered.len() as u64 + 1;
        Ok(())
    }
}

/// Reloads the ring from the file so logs survive a daemon restart.
fn read_tail(path: &PathBuf, keep: usize) -> VecDeque<LogLine> {
    let mut ring = VecDeque::new();
    let Ok(file) = File::open(path) else {
        return ring;
    };
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        let mut parts = line.splitn(3, ' ');
        let (Some(time), Some(stream), text) =
            (parts.next(), parts.next(), parts.next().unwrap_or(""))
        else {
            continue;
        };
        let Ok(time) = chrono::DateTime::parse_from_rfc3339(time) else {
            continue;
        };
        let stream = match stream {
            "stdout" => "stdout",
            "stderr" => "stderr",
            _ => "daemon",
        };
        if ring.len() == keep {
            ring.pop_front();
        }
        ring.push_back(LogLine {
            time: time.with_timezone(&chrono::Utc),
            stream,
            text: text.to_string(),
        });
    }
    ring
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with plugin `p` logging to `<temp dir>/<file>`.
    fn store_logging_to(file: &str) -> (tempfile::TempDir, PathBuf, LogStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file);
        let store = LogStore::default();
        store.open("p", path.clone());
        (dir, path, store)
    }

    #[test]
    fn ring_is_bounded_and_file_survives_reopen() {
        let (_dir, path, store) = store_logging_to("p/plugin.log");
        for i in 0..(RING_LINES + 5) {
            store.append("p", "stderr", format!("line {i}"));
        }
        let all = store.tail("p", None);
        assert_eq!(all.len(), RING_LINES);
        assert!(all[0].ends_with("stderr line 5"));
        assert_eq!(store.tail("p", Some(2)).len(), 2);
        assert!(store.tail("p", Some(1))[0].ends_with(&format!("line {}", RING_LINES + 4)));

        let reopened = LogStore::default();
        reopened.open("p", path);
        assert_eq!(reopened.tail("p", None), all);
    }

    #[test]
    fn file_rotates_past_its_limit() {
        let (_dir, path, store) = store_logging_to("plugin.log");
        let long = "x".repeat(10_000);
        for _ in 0..120 {
            store.append("p", "stdout", long.clone());
        }
        assert!(fs::metadata(&path).unwrap().len() <= FILE_LIMIT);
        assert!(path.with_extension("log.1").exists());
    }

    #[test]
    fn unknown_plugins_have_no_lines() {
        assert!(LogStore::default().tail("nope", None).is_empty());
    }
}
