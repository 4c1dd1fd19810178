//! The LogDriver mode of the test plugin: each `StartLogging` FIFO is read by a thread that
//! decodes the framed `LogEntry` messages and keeps them in memory per container; `ReadLogs`
//! answers them (Since, Until, Tail, Follow) in the same framing.

use std::sync::Condvar;

use berth::drivers::log::{encode_frame, FrameDecoder, LogEntry};

use super::*;

/// Entries by container, and which containers are being logged.
#[derive(Default)]
pub(super) struct Logs {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    entries: HashMap<String, Vec<LogEntry>>,
    /// FIFO path → container ID, while logging.
    streams: HashMap<String, String>,
}

impl Logs {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How long a followed `ReadLogs` waits for news before it ends.
const FOLLOW_LIMIT: Duration = Duration::from_secs(60);

/// Nanoseconds since the epoch of an RFC 3339 time; `None` for Go's zero time.
fn nanos(text: &str) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    if t.timestamp() <= -62_135_596_800 {
        return None;
    }
    t.timestamp_nanos_opt()
}

impl Driver {
    /// `LogDriver.<method>`.
    pub(super) fn log_driver_call(&self, method: &str, args: &Value) -> Reply {
        match method {
            "LogDriver.Capabilities" if self.broken("log-caps-404") => Reply::not_found(),
            "LogDriver.Capabilities" if self.broken("log-caps-bad") => {
                Reply::ok(json!({"Cap": "ReadLogs", "Err": ""}))
            }
            "LogDriver.Capabilities" if self.broken("log-field-case") => {
                Reply::ok(json!({"cap": {"readLogs": true}, "err": ""}))
            }
            "LogDriver.Capabilities" => Reply::ok(json!({"Cap": {"ReadLogs": true}, "Err": ""})),
            "LogDriver.StartLogging" => self.start_logging(args),
            "LogDriver.StopLogging" => self.stop_logging(args),
            "LogDriver.ReadLogs" => self.read_logs(args),
            _ => Reply::not_found(),
        }
    }

    fn start_logging(&self, args: &Value) -> Reply {
        use std::os::unix::fs::FileTypeExt;
        if self.broken("log-start-fails") {
            return Reply::err("start refused (TEST_BROKEN=log-start-fails)");
        }
        let file = str_field(args, "File");
        let container = field(args, "Info")
            .map(|i| str_field(i, "ContainerID"))
            .unwrap_or_default();
        if file.is_empty() || container.is_empty() {
            return Reply::err("File and Info.ContainerID are required");
        }
        let is_fifo = fs::metadata(&file).is_ok_and(|m| m.file_type().is_fifo());
        if !is_fifo && !self.broken("log-bad-file-ok") {
            return Reply::err(format!("{file} is not a FIFO"));
        }
        self.logs
            .lock()
            .streams
            .insert(file.clone(), container.clone());
        if !is_fifo || self.broken("log-no-read") {
            return Reply::ok(json!({"Err": ""}));
        }
        // The daemon holds the FIFO open read-write, so this open does not block.
        let fifo = match fs::File::open(&file) {
            Ok(f) => f,
            Err(e) => return Reply::err(format!("open {file}: {e}")),
        };
        let die_on_eof = self.broken("log-die-on-eof");
        let logs = Arc::clone(&self.logs);
        thread::spawn(move || read_fifo(fifo, &container, &logs, die_on_eof));
        Reply::ok(json!({"Err": ""}))
    }

    fn stop_logging(&self, args: &Value) -> Reply {
        if self.broken("log-stop-fails") {
            return Reply::err("stop refused (TEST_BROKEN=log-stop-fails)");
        }
        let file = str_field(args, "File");
        self.logs.lock().streams.remove(&file);
        self.logs.changed.notify_all();
        Reply::ok(json!({"Err": ""}))
    }

    fn read_logs(&self, args: &Value) -> Reply {
        let container = field(args, "Info")
            .map(|i| str_field(i, "ContainerID"))
            .unwrap_or_default();
        let config = field(args, "Config").cloned().unwrap_or(Value::Null);
        let since =
            nanos(&str_field(&config, "Since")).filter(|_| !self.broken("log-since-ignored"));
        let until =
            nanos(&str_field(&config, "Until")).filter(|_| !self.broken("log-until-ignored"));
        let tail = field(&config, "Tail").and_then(Value::as_i64).unwrap_or(-1);
        let follow = field(&config, "Follow")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            && !self.broken("log-follow-closes");
        if self.broken("log-bad-frames") {
            return Reply::streamed(|w| {
                let _ = w.write_all(&[0, 0, 0, 5, 0xff, 0xff, 0xff]);
            });
        }
        let (mut past, seen) = {
            let state = self.logs.lock();
            let all = state.entries.get(&container).cloned().unwrap_or_default();
            let len = all.len();
            let kept: Vec<LogEntry> = all
                .into_iter()
                .filter(|e| since.is_none_or(|s| e.time_nano >= s))
                .filter(|e| until.is_none_or(|u| e.time_nano <= u))
                .collect();
            (kept, len)
        };
        if tail >= 0 && !self.broken("log-tail-ignored") {
            let skip = past.len().saturating_sub(tail as usize);
            past.drain(..skip);
        }
        if self.broken("log-drop-first") && !past.is_empty() {
            past.remove(0);
        }
        let logs = Arc::clone(&self.logs);
        Reply::streamed(move |w| {
            for e in &past {
                if w.write_all(&encode_frame(e)).is_err() {
                    return;
                }
            }
            let _ = w.flush();
            if follow {
                follow_entries(w, &logs, &container, seen, until);
            }
        })
    }
}

/// Reads frames from a FIFO until its writers are gone.
fn read_fifo(mut fifo: fs::File, container: &str, logs: &Logs, die_on_eof: bool) {
    let mut decoder = FrameDecoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match fifo.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => match decoder.push(&buf[..n]) {
                Ok(entries) => {
                    logs.lock()
                        .entries
                        .entry(container.to_string())
                        .or_default()
                        .extend(entries);
                    logs.changed.notify_all();
                }
                Err(e) => {
                    eprintln!("berth-test-plugin: log stream of {container}: {e}");
                    break;
                }
            },
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("berth-test-plugin: reading log FIFO of {container}: {e}");
                break;
            }
        }
    }
    if die_on_eof {
        eprintln!(
            "berth-test-plugin: exiting at the end of a log FIFO (TEST_BROKEN=log-die-on-eof)"
        );
        std::process::exit(5);
    }
}

/// Writes entries of `container` added after the first `seen` until logging stops, the reader
/// goes away, or nothing comes for [`FOLLOW_LIMIT`].
fn follow_entries(
    w: &mut dyn Write,
    logs: &Logs,
    container: &str,
    mut seen: usize,
    until: Option<i64>,
) {
    let mut quiet = Duration::ZERO;
    let mut state = logs.lock();
    loop {
        let fresh: Vec<LogEntry> = state
            .entries
            .get(container)
            .map(|all| all.get(seen..).unwrap_or_default().to_vec())
            .unwrap_or_default();
        seen += fresh.len();
        let logging = state.streams.values().any(|c| c == container);
        drop(state);
        for e in fresh
            .iter()
            .filter(|e| until.is_none_or(|u| e.time_nano <= u))
        {
            if w.write_all(&encode_frame(e)).is_err() {
                return;
            }
        }
        if !fresh.is_empty() {
            quiet = Duration::ZERO;
            if w.flush().is_err() {
                return;
            }
        }
        if !logging || quiet >= FOLLOW_LIMIT {
            return;
        }
        state = logs.lock();
        let (guard, _) = logs
            .changed
            .wait_timeout(state, Duration::from_millis(200))
            .unwrap_or_else(|e| e.into_inner());
        state = guard;
        quiet += Duration::from_millis(200);
    }
}
