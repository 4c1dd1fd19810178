//! LogDriver: a FIFO per log stream that berth writes framed protobuf `LogEntry` messages into
//! (held open read-write, as dockerd holds it), `ReadLogs` round trips when the plugin declares
//! the capability, `StopLogging`, and a plugin that survives its FIFO closing.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::prelude::*;
use crate::drivers::log::{
    encode_frame, open_fifo, Info, LogDriverClient, LogEntry, LogError, ReadConfig, FIFO_DIR,
};

const FIELDS: &str = "Cap ReadLogs Err";

/// Entries written in the main stream: a few pipe buffers' worth.
const ENTRIES: usize = 2000;

/// How long the plugin has to drain the FIFO, to open it, and to make entries readable.
const PATIENCE: Duration = Duration::from_secs(5);

/// A FIFO as the plugin sees it and as it is on the host.
struct Fifo {
    plugin_path: String,
    host_path: PathBuf,
    file: Option<std::fs::File>,
}

impl Fifo {
    fn make(ctx: &Context<'_>, id: &str) -> std::io::Result<Fifo> {
        let (plugin_path, host_path) = if ctx.managed() {
            let inside = format!("{FIFO_DIR}/{id}");
            let host = PathBuf::from(ctx.plugin.paths.host_path(&inside));
            (inside, host)
        } else {
            // A legacy plugin sees host paths; keep the FIFO under the run's scratch directory.
            let host = ctx
                .options
                .scratch
                .join("berth-conformance-logging")
                .join(id);
            (host.display().to_string(), host)
        };
        let file = open_fifo(&host_path)?;
        Ok(Fifo {
            plugin_path,
            host_path,
            file: Some(file),
        })
    }

    /// Writes `entries`, waiting while the pipe is full; the number written before `deadline`.
    fn write(&mut self, entries: &[LogEntry], deadline: Instant) -> usize {
        let Some(file) = self.file.as_mut() else {
            return 0;
        };
        let mut written = 0;
        for entry in entries {
            let frame = encode_frame(entry);
            loop {
                // Frames are below PIPE_BUF, so each write is whole or refused.
                match file.write(&frame) {
                    Ok(_) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() >= deadline {
                            return written;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => return written,
                }
            }
            written += 1;
        }
        written
    }

    fn close(&mut self) {
        self.file = None;
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        self.file = None;
        let _ = std::fs::remove_file(&self.host_path);
    }
}

/// Whether a process other than this one holds `path` open.
fn opened_elsewhere(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    for proc_dir in procs.flatten() {
        let pid = proc_dir.file_name();
        let pid = pid.to_string_lossy();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(m) = std::fs::metadata(fd.path()) {
                if m.ino() == meta.ino() && m.dev() == meta.dev() {
                    return true;
                }
            }
        }
    }
    false
}

fn info(container_id: &str) -> Info {
    Info {
        container_id: container_id.to_string(),
        container_name: "/berth-conformance".into(),
        container_entrypoint: "/bin/true".into(),
        container_image_id: format!("sha256:{}", crate::fsutil::random_hex(32)),
        container_image_name: "berth-conformance:latest".into(),
        container_created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        daemon_name: "berth".into(),
        ..Info::default()
    }
}

fn entries(base_nanos: i64, count: usize, tag: &str) -> Vec<LogEntry> {
    (0..count)
        .map(|i| LogEntry {
            source: if i % 2 == 0 { "stdout" } else { "stderr" }.into(),
            time_nano: base_nanos + i as i64 * 1000,
            line: format!("berth conformance {tag} line {i}").into_bytes(),
            ..LogEntry::default()
        })
        .collect()
}

fn rfc3339_nanos(nanos: i64) -> String {
    chrono::DateTime::from_timestamp(nanos / 1_000_000_000, (nanos % 1_000_000_000) as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

pub async fn run(ctx: &Context<'_>, rec: &mut Recorder<'_>) {
    let read_logs = capabilities(ctx, rec).await;
    let client = LogDriverClient::for_plugin(&crate::rpc::handle::PluginHandle {
        client: ctx.probe.client(),
        ..ctx.plugin.clone()
    });
    let container = crate::fsutil::random_hex(32);
    let mut fifo = match Fifo::make(ctx, &container) {
        Ok(f) => f,
        Err(e) => {
            rec.block(format!("cannot make the FIFO: {e}"));
            return;
        }
    };
    let info = info(&container);
    let start = ctx
        .probe
        .call(
            "LogDriver.StartLogging",
            &json!({"File": fifo.plugin_path, "Info": info}),
        )
        .await;
    match start {
        Ok(r) if r.succeeded() => rec.pass("log.start.answers", r.summary()),
        Ok(r) => {
            rec.check("log.start.answers", false, "success", r.summary());
            rec.block(format!("StartLogging failed: {}", r.summary()));
            return;
        }
        Err(e) => {
            rec.check(
                "log.start.answers",
                false,
                "an answer",
                call_failed("LogDriver.StartLogging", &e),
            );
            rec.block(call_failed("LogDriver.StartLogging", &e));
            return;
        }
    }
    if ctx.host_visible {
        let path = fifo.host_path.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let until = Instant::now() + PATIENCE;
            loop {
                if opened_elsewhere(&path) {
                    return true;
                }
                if Instant::now() >= until {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .await
        .unwrap_or(false);
        rec.check(
            "log.start.opens-fifo",
            opened,
            "the FIFO open in the plugin",
            if opened {
                "opened".to_string()
            } else {
                format!(
                    "no process opened {} within {PATIENCE:?}",
                    fifo.host_path.display()
                )
            },
        );
    }

    let base = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let written_entries = entries(base, ENTRIES, "main");
    let to_write = written_entries.clone();
    let (fifo_back, written) = tokio::task::spawn_blocking(move || {
        let n = fifo.write(&to_write, Instant::now() + PATIENCE);
        (fifo, n)
    })
    .await
    .expect("the FIFO writer does not panic");
    fifo = fifo_back;
    rec.check(
        "log.start.consumes",
        written == ENTRIES,
        format!("{ENTRIES} entries written within {PATIENCE:?}"),
        format!("{written} written"),
    );

    if read_logs && written == ENTRIES {
        readlogs(ctx, rec, &client, &info, &written_entries).await;
        follow(ctx, rec, &client, &info, &mut fifo).await;
    } else {
        let why = if read_logs {
            "the entries could not all be written"
        } else {
            "the plugin does not declare ReadLogs"
        };
        for id in [
            "log.readlogs.round-trip",
            "log.readlogs.framing",
            "log.readlogs.tail",
            "log.readlogs.since",
            "log.readlogs.until",
            "log.readlogs.follow",
        ] {
            rec.skip(id, why);
        }
    }

    match ctx
        .probe
        .call("LogDriver.StopLogging", &json!({"File": fifo.plugin_path}))
        .await
    {
        Ok(r) => {
            rec.check("log.stop.answers", r.succeeded(), "success", r.summary());
        }
        Err(e) => {
            rec.check(
                "log.stop.answers",
                false,
                "an answer",
                call_failed("LogDriver.StopLogging", &e),
            );
        }
    }
    drop(fifo);

    bad_file(ctx, rec).await;
    survives_close(ctx, rec).await;
}

/// `Capabilities`; whether `ReadLogs` is declared.
async fn capabilities(ctx: &Context<'_>, rec: &mut Recorder<'_>) -> bool {
    let r = match ctx.probe.call("LogDriver.Capabilities", &Value::Null).await {
        Ok(r) => r,
        Err(e) => {
            rec.check(
                "log.capabilities.answers",
                false,
                "an answer",
                call_failed("LogDriver.Capabilities", &e),
            );
            return false;
        }
    };
    if !rec.expect(
        "log.capabilities.answers",
        r.succeeded(),
        Outcome::Warn,
        "200 with a JSON object",
        r.summary(),
    ) {
        rec.skip("log.capabilities.shape", "Capabilities failed");
        rec.skip("log.field-case", "Capabilities failed");
        return false;
    }
    let cap = r.field("Cap");
    let read = cap.and_then(|c| field(c, "ReadLogs"));
    rec.check(
        "log.capabilities.shape",
        matches!(cap, None | Some(Value::Null))
            || (cap.is_some_and(Value::is_object) && matches!(read, None | Some(Value::Bool(_)))),
        "{\"Cap\":{\"ReadLogs\":true|false}}",
        r.summary(),
    );
    rec.spelling("log.field-case", r.misspelled_keys(FIELDS), r.summary());
    read.and_then(Value::as_bool).unwrap_or(false)
}

/// Every entry of a (non-follow) `ReadLogs`, or why it could not be read.
async fn read_all(
    client: &LogDriverClient,
    info: &Info,
    config: &ReadConfig,
) -> Result<Vec<LogEntry>, LogError> {
    let mut reader = client.read_logs(info, config).await?;
    let mut out = Vec::new();
    while let Some(e) = reader.next().await? {
        out.push(e);
    }
    Ok(out)
}

fn lines(entries: &[LogEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.line).into_owned())
        .collect()
}

async fn readlogs(
    ctx: &Context<'_>,
    rec: &mut Recorder<'_>,
    client: &LogDriverClient,
    info: &Info,
    written: &[LogEntry],
) {
    let _ = ctx;
    // The plugin may still be storing what it read: ask until everything is there.
    let until = Instant::now() + PATIENCE;
    let all = loop {
        let read = read_all(client, info, &ReadConfig::default()).await;
        match &read {
            Ok(entries) if entries.len() < written.len() && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => break read,
        }
    };
    let entries = match all {
        Ok(entries) => {
            rec.pass("log.readlogs.framing", format!("{} frames", entries.len()));
            entries
        }
        Err(e) => {
            let framing = matches!(e, LogError::Frame(_));
            rec.check(
                "log.readlogs.framing",
                !framing,
                "length-prefixed LogEntry frames",
                e.to_string(),
            );
            rec.check(
                "log.readlogs.round-trip",
                false,
                "the entries written",
                e.to_string(),
            );
            rec.block(format!("ReadLogs failed: {e}"));
            return;
        }
    };
    let same = entries.len() == written.len()
        && entries
            .iter()
            .zip(written)
            .all(|(a, b)| a.line == b.line && a.source == b.source && a.time_nano == b.time_nano);
    rec.check(
        "log.readlogs.round-trip",
        same,
        format!(
            "the {} entries written, with source and time",
            written.len()
        ),
        describe_difference(&entries, written),
    );

    let tail = 10;
    let config = ReadConfig {
        tail,
        ..ReadConfig::default()
    };
    let want: Vec<String> = lines(&written[written.len() - tail as usize..]);
    match read_all(client, info, &config).await {
        Ok(got) => {
            rec.check(
                "log.readlogs.tail",
                lines(&got) == want,
                format!("the last {tail} entries"),
                format!("{} entries, first {:?}", got.len(), lines(&got).first()),
            );
        }
        Err(e) => {
            rec.check(
                "log.readlogs.tail",
                false,
                "the last entries",
                e.to_string(),
            );
        }
    }

    let cut = written.len() * 3 / 4;
    let since = ReadConfig {
        since: rfc3339_nanos(written[cut].time_nano),
        ..ReadConfig::default()
    };
    let bounded = Bounded {
        id: "log.readlogs.since",
        expected: format!("{} entries from {}", written.len() - cut, since.since),
        beyond: "before Since",
        failed: "entries from Since",
    };
    let first = written[cut].time_nano;
    check_bounded(client, info, rec, &since, |e| e.time_nano < first, bounded).await;

    let cut = written.len() / 4;
    let until_config = ReadConfig {
        until: rfc3339_nanos(written[cut].time_nano),
        ..ReadConfig::default()
    };
    let bounded = Bounded {
        id: "log.readlogs.until",
        expected: format!("{} entries up to {}", cut + 1, until_config.until),
        beyond: "after Until",
        failed: "entries up to Until",
    };
    let last = written[cut].time_nano;
    check_bounded(
        client,
        info,
        rec,
        &until_config,
        |e| e.time_nano > last,
        bounded,
    )
    .await;
}

/// What a read bounded by Since or Until is checked against.
struct Bounded {
    id: &'static str,
    expected: String,
    /// Names the entries outside the bound in the report.
    beyond: &'static str,
    /// What was expected when the read failed.
    failed: &'static str,
}

/// Reads with `config` and checks some entries come back and none is `outside` its bound.
async fn check_bounded(
    client: &LogDriverClient,
    info: &Info,
    rec: &mut Recorder<'_>,
    config: &ReadConfig,
    outside: impl Fn(&LogEntry) -> bool,
    bounded: Bounded,
) {
    match read_all(client, info, config).await {
        Ok(got) => {
            let stray = got.iter().filter(|e| outside(e)).count();
            rec.check(
                bounded.id,
                stray == 0 && !got.is_empty(),
                bounded.expected,
                format!("{} entries, {stray} {}", got.len(), bounded.beyond),
            );
        }
        Err(e) => {
            rec.check(bounded.id, false, bounded.failed, e.to_string());
        }
    }
}

fn describe_difference(got: &[LogEntry], want: &[LogEntry]) -> String {
    if got.len() != want.len() {
        return format!("{} entries", got.len());
    }
    match got.iter().zip(want).position(|(a, b)| a != b) {
        None => format!("{} entries, all equal", got.len()),
        Some(i) => format!(
            "entry {i} differs: {:?} {} {:?}",
            got[i].source,
            got[i].time_nano,
            String::from_utf8_lossy(&got[i].line)
        ),
    }
}

async fn follow(
    ctx: &Context<'_>,
    rec: &mut Recorder<'_>,
    client: &LogDriverClient,
    info: &Info,
    fifo: &mut Fifo,
) {
    let _ = ctx;
    let config = ReadConfig {
        follow: true,
        tail: 0,
        ..ReadConfig::default()
    };
    let mut reader = match client.read_logs(info, &config).await {
        Ok(r) => r,
        Err(e) => {
            rec.check("log.readlogs.follow", false, "a stream", e.to_string());
            return;
        }
    };
    let late = entries(
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        1,
        "followed",
    );
    let wanted = late[0].line.clone();
    fifo.write(&late, Instant::now() + PATIENCE);
    let seen = tokio::time::timeout(PATIENCE, async {
        loop {
            match reader.next().await {
                Ok(Some(e)) if e.line == wanted => return Ok(()),
                Ok(Some(_)) => continue,
                Ok(None) => return Err("the stream ended".to_string()),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    rec.check(
        "log.readlogs.follow",
        matches!(seen, Ok(Ok(()))),
        "the entry written after ReadLogs started",
        match seen {
            Ok(Ok(())) => "received".to_string(),
            Ok(Err(e)) => e,
            Err(_) => format!("nothing within {PATIENCE:?}"),
        },
    );
}

async fn bad_file(ctx: &Context<'_>, rec: &mut Recorder<'_>) {
    let path = ctx.options.scratch.join(format!(
        "berth-conformance-no-fifo-{}",
        crate::fsutil::random_hex(6)
    ));
    let container = crate::fsutil::random_hex(32);
    let body = json!({"File": path.display().to_string(), "Info": info(&container)});
    match ctx.probe.call("LogDriver.StartLogging", &body).await {
        Ok(r) => {
            rec.expect(
                "log.start.bad-file",
                r.is_error(),
                Outcome::Warn,
                "an error",
                r.summary(),
            );
            if !r.is_error() {
                let _ = ctx
                    .probe
                    .call(
                        "LogDriver.StopLogging",
                        &json!({"File": path.display().to_string()}),
                    )
                    .await;
            }
        }
        Err(e) => {
            rec.check(
                "log.start.bad-file",
                false,
                "an answer",
                call_failed("LogDriver.StartLogging", &e),
            );
        }
    }
}

/// A stream whose writer goes away without `StopLogging`.
async fn survives_close(ctx: &Context<'_>, rec: &mut Recorder<'_>) {
    let container = crate::fsutil::random_hex(32);
    let Ok(mut fifo) = Fifo::make(ctx, &container) else {
        rec.skip("log.fifo-close.survives", "cannot make a FIFO");
        return;
    };
    let body = json!({"File": fifo.plugin_path, "Info": info(&container)});
    let started = ctx.probe.call("LogDriver.StartLogging", &body).await;
    if !matches!(&started, Ok(r) if r.succeeded()) {
        // It worked at the start of the scenario: the first stream's end broke the plugin.
        rec.check(
            "log.fifo-close.survives",
            false,
            "StartLogging succeeds after an earlier stream ended",
            match started {
                Ok(r) => r.summary(),
                Err(e) => call_failed("LogDriver.StartLogging", &e),
            },
        );
        return;
    }
    fifo.write(
        &entries(
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            3,
            "closing",
        ),
        Instant::now() + PATIENCE,
    );
    fifo.close();
    let _ = std::fs::remove_file(&fifo.host_path);
    // Give the plugin's reader time to see the end of the stream.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = ctx.probe.call("LogDriver.Capabilities", &Value::Null).await;
    let answered = matches!(&after, Ok(r) if r.status == 200);
    let again = Fifo::make(ctx, &crate::fsutil::random_hex(32));
    let restarted: Result<Reply, String> = match &again {
        Ok(f) => ctx
            .probe
            .call(
                "LogDriver.StartLogging",
                &json!({"File": f.plugin_path, "Info": info(&container)}),
            )
            .await
            .map_err(|e| call_failed("LogDriver.StartLogging", &e)),
        Err(e) => Err(e.to_string()),
    };
    let ok = answered && matches!(&restarted, Ok(r) if r.succeeded());
    rec.check(
        "log.fifo-close.survives",
        ok,
        "Capabilities answers and a new StartLogging succeeds",
        match (&after, &restarted) {
            (Err(e), _) => call_failed("LogDriver.Capabilities", e),
            (_, Err(e)) => e.clone(),
            (_, Ok(r)) => format!("new StartLogging: {}", r.summary()),
        },
    );
    if let Ok(f) = &again {
        let _ = ctx
            .probe
            .call("LogDriver.StopLogging", &json!({"File": f.plugin_path}))
            .await;
    }
    let _ = ctx
        .probe
        .call("LogDriver.StopLogging", &json!({"File": fifo.plugin_path}))
        .await;
}
