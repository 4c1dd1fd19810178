//! Hostile and careless API clients: stalled uploads, uploads beyond the bound, slow headers,
//! idle connections, pipelining, oversized and malformed requests, path tricks. Each answers
//! with a clear status, `/_ping` stays fast meanwhile and the daemon's memory stays bounded.
//! Figures (worst `/_ping`, peak RSS) are printed for the README's reliability table.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Probes `/_ping` over fresh connections until stopped; the worst latency seen and how many
/// probes failed.
struct PingProbe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Duration, usize, usize)>,
}

impl PingProbe {
    fn start(socket: &Path) -> PingProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let socket = socket.to_path_buf();
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut worst, mut probes, mut failed) = (Duration::ZERO, 0, 0);
            while !stopped.load(Ordering::SeqCst) {
                let started = Instant::now();
                match raw_request(&socket, "GET", "/_ping", &[], &[]) {
                    Ok(r) if r.status == 200 => {}
                    _ => failed += 1,
                }
                worst = worst.max(started.elapsed());
                probes += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (worst, probes, failed)
        });
        PingProbe { stop, thread }
    }

    /// Stops probing; asserts none failed and none took longer than `bound`.
    #[track_caller]
    fn finish(self, scenario: &str, bound: Duration) -> Duration {
        self.stop.store(true, Ordering::SeqCst);
        let (worst, probes, failed) = self.thread.join().unwrap();
        eprintln!("{scenario}: {probes} /_ping probes, worst {worst:?}, {failed} failed");
        assert_eq!(
            failed, 0,
            "{scenario}: /_ping failed {failed} of {probes} times"
        );
        assert!(worst < bound, "{scenario}: /_ping took {worst:?}");
        worst
    }
}

/// The daemon's peak resident memory so far (`VmHWM`), in MiB.
fn peak_rss_mib(d: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

/// Generous for a debug build on a loaded 2-core machine; the README's figures are measured on
/// a release build.
const RSS_BOUND_MIB: u64 = 160;
const PING_BOUND: Duration = Duration::from_secs(5);

fn small_context() -> Vec<u8> {
    plugin_context(
        r#"{"description":"upload","interface":{"types":["docker.volumedriver/1.0"],"socket":"p.sock"},"entrypoint":["/bin/plugin"]}"#,
        &[("bin/plugin", &[b'#'; 4096])],
    )
}

/// Opens an upload of `context` to `/plugins/create?name=<name>` and sends its first 10 bytes.
fn stall_upload(socket: &Path, name: &str, context: &[u8]) -> UnixStream {
    let path = format!("/v1.41/plugins/create?name={name}");
    let headers = [("Content-Type", "application/x-tar")];
    send_request(socket, ("POST", &path, &headers, context), 10).expect("open an upload")
}

/// Nothing below `dir` but directories (staging and spool files are all gone).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn stalled_uploads_do_not_hold_up_other_clients_and_leave_nothing() {
    const STALLED: usize = 520;
    const IDLE: Duration = Duration::from_secs(10);
    let d = Daemon::start_with(&["--body-idle-timeout", "10"]);
    let context = small_context();
    let probe = PingProbe::start(&d.socket);
    let opened = Instant::now();
    let mut stalled: Vec<UnixStream> = (0..STALLED)
        .map(|i| stall_upload(&d.socket, &format!("stalled{i}"), &context))
        .collect();
    // Half the clients go away mid-upload: their work is cancelled.
    let gone: Vec<UnixStream> = stalled.split_off(STALLED / 2);
    drop(gone);

    // Another client is served while the others stall.
    d.create_plugin("other", &context)
        .expect(204, "create beside stalled uploads");
    d.remove_plugin("other", false)
        .expect(200, "rm beside stalled uploads");
    let served_within = opened.elapsed();
    eprintln!("520 stalled uploads: the other client was served {served_within:?} after the first stalled");
    assert!(
        served_within < IDLE,
        "the other client was served after {served_within:?}, not while the uploads stalled"
    );

    // The stalled ones are dropped at the idle timeout with a 408.
    let answers: Vec<u16> = stalled
        .into_iter()
        .map(|s| read_response(s).map(|r| r.status).unwrap_or(0))
        .collect();
    assert!(
        answers.iter().all(|s| *s == 408),
        "stalled uploads were answered {:?}",
        answers
            .iter()
            .fold(std::collections::BTreeMap::new(), |mut m, s| {
                *m.entry(*s).or_insert(0) += 1;
                m
            })
    );
    let worst = probe.finish("520 stalled uploads", PING_BOUND);
    let rss = peak_rss_mib(&d);
    eprintln!("520 stalled uploads: peak RSS {rss} MiB, worst /_ping {worst:?}");
    assert!(rss < RSS_BOUND_MIB, "peak RSS {rss} MiB");

    assert_eq!(
        d.plugin_names(""),
        Vec::<String>::new(),
        "nothing was created"
    );
    let plugins = d.data_root.join("plugins");
    assert_eq!(files_under(&plugins.join("tmp")), Vec::<PathBuf>::new());
    assert_eq!(
        files_under(&plugins.join("storage").join("ingest")),
        Vec::<PathBuf>::new()
    );
}

/// An upload kept alive by one byte every 200 ms until `stop`; returns its connection. One that
/// is refused (its slot was taken meanwhile by another upload) is opened again.
fn trickle_upload(
    socket: &Path,
    name: &str,
    context: &[u8],
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<UnixStream> {
    let (socket, name, context) = (socket.to_path_buf(), name.to_string(), context.to_vec());
    std::thread::spawn(move || loop {
        let mut stream = stall_upload(&socket, &name, &context);
        let mut refused = false;
        for byte in &context[10..] {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if stream.write_all(&[*byte]).is_err() {
                refused = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if !refused {
            return stream;
        }
    })
}

#[test]
fn uploads_beyond_the_bound_are_refused_with_503_until_a_slot_frees() {
    let d = Daemon::start_with(&["--max-concurrent-uploads", "2", "--body-idle-timeout", "2"]);
    let context = small_context();
    let stop = Arc::new(AtomicBool::new(false));
    let held: Vec<_> = (0..2)
        .map(|i| trickle_upload(&d.socket, &format!("held{i}"), &context, stop.clone()))
        .collect();
    // Not a tar: an upload admitted fails fast with 400 and frees its slot again, so the
    // answer turns 503 once both held uploads have their slots.
    let garbage = b"not a tar";
    assert!(
        eventually(Duration::from_secs(60), || d
            .create_plugin("extra", garbage)
            .status
            == 503),
        "a third upload was never refused"
    );
    d.create_plugin("extra", garbage).assert_error(
        503,
        "too many uploads in progress (limit 2); try again later",
    );
    assert_eq!(d.get("/_ping").status, 200);
    // Once they stall, the held uploads are dropped at the idle timeout.
    stop.store(true, Ordering::SeqCst);
    for thread in held {
        let r = read_response(thread.join().unwrap()).unwrap();
        r.assert_error(408, "no request body data received for 2s");
    }
    d.create_plugin("extra", &context)
        .expect(204, "an upload once the slots are free");
    assert_eq!(d.plugin_names(""), vec!["extra:latest".to_string()]);
}

/// Writes `bytes` on a new connection and returns the connection.
fn send_raw(socket: &Path, bytes: &[u8]) -> UnixStream {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    stream
}

/// Every response on `stream` until it closes, in order.
fn responses(stream: UnixStream) -> Vec<u16> {
    let mut raw = Vec::new();
    let _ = std::io::Read::read_to_end(&mut { stream }, &mut raw);
    let text = String::from_utf8_lossy(&raw);
    text.match_indices("HTTP/1.1 ")
        .map(|(i, _)| text[i + 9..i + 12].parse().unwrap_or(0))
        .collect()
}

#[test]
fn slow_headers_idle_connections_and_pipelining_leave_ping_fast() {
    const IDLE_CONNECTIONS: usize = 1000;
    let d = Daemon::start();
    let probe = PingProbe::start(&d.socket);
    let idle: Vec<UnixStream> = (0..IDLE_CONNECTIONS)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    // A head that never ends is answered 408 by the request timeout and closed.
    let slow = send_raw(&d.socket, b"GET /_ping HTTP/1.1\r\nHost: berth\r\nX-Slow: ");
    let started = Instant::now();
    assert_eq!(responses(slow), vec![408]);
    eprintln!("slow headers answered after {:?}", started.elapsed());
    // Pipelined requests are answered in order on one connection.
    let pipelined = send_raw(
        &d.socket,
        b"GET /_ping HTTP/1.1\r\nHost: b\r\n\r\nGET /v1.41/plugins HTTP/1.1\r\nHost: b\r\n\r\nGET /nope HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(responses(pipelined), vec![200, 200, 404]);
    let worst = probe.finish(
        "1000 idle connections, slow headers, pipelining",
        PING_BOUND,
    );
    drop(idle);
    let rss = peak_rss_mib(&d);
    eprintln!("idle connections: peak RSS {rss} MiB, worst /_ping {worst:?}");
    assert!(rss < RSS_BOUND_MIB, "peak RSS {rss} MiB");
}

#[test]
fn oversized_and_malformed_requests_get_clear_statuses() {
    let d = Daemon::start();
    let probe = PingProbe::start(&d.socket);
    // A head far beyond any client's (Go's limit is 1 MiB): refused, connection closed.
    let huge = format!(
        "GET /_ping HTTP/1.1\r\nHost: b\r\nX-Big: {}\r\n\r\n",
        "a".repeat(2 << 20)
    );
    let mut stream = UnixStream::connect(&d.socket).unwrap();
    let _ = stream.write_all(huge.as_bytes());
    assert_eq!(responses(stream), vec![431]);

    // A 1 MiB label is a label (as dockerd takes it); a body over the JSON limit is refused.
    let label = "l".repeat(1 << 20);
    d.post_json(
        "/v1.44/volumes/create",
        &format!(r#"{{"Name":"big","Labels":{{"x":"{label}"}}}}"#),
    )
    .expect(201, "a volume with a 1 MiB label");
    let over = "l".repeat(5 << 20);
    d.post_json(
        "/v1.44/volumes/create",
        &format!(r#"{{"Name":"bigger","Labels":{{"x":"{over}"}}}}"#),
    )
    .assert_error(400, "request body is larger than 4194304 bytes");

    // Invalid UTF-8: Go's decoder reads it as U+FFFD (dockerd 20.10 answers the same).
    let headers = [("Content-Type", "application/json")];
    let r = d.request(
        "POST",
        "/v1.41/volumes/create",
        &headers,
        b"{\"Name\":\"utf\",\"Labels\":{\"k\":\"a\xff\"}}",
    );
    r.expect(201, "a label with invalid UTF-8");
    assert_eq!(r.json()["Labels"]["k"], "a\u{fffd}");
    d.request(
        "POST",
        "/v1.41/volumes/create",
        &headers,
        b"{\"Name\":\"bad\xff\"}",
    )
    .expect(400, "a name with invalid UTF-8");
    d.get("/v1.41/plugins/%ff%fe/json")
        .expect(404, "a plugin name with invalid UTF-8");

    // Path tricks are cleaned and redirected, as Go's ServeMux does, or not found.
    for (path, location) in [
        ("/v1.41/../plugins", "/plugins"),
        ("/v1.41/%2e%2e/plugins", "/plugins"),
        ("//_ping", "/_ping"),
        ("/v1.41//plugins", "/v1.41/plugins"),
    ] {
        let r = d.get(path);
        r.expect(301, path);
        assert_eq!(r.header("location"), Some(location), "{path}");
    }
    d.get("/_ping%00").expect(404, "a NUL in the path");
    let nul = send_raw(
        &d.socket,
        b"GET /_ping\0 HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(responses(nul), vec![400]);
    // Raw bytes above 0x7f in the request line: refused (dockerd looks the name up: 404).
    let raw_utf8 = send_raw(
        &d.socket,
        b"GET /v1.41/plugins/\xff\xfe/json HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(responses(raw_utf8), vec![400]);
    let worst = probe.finish("oversized and malformed requests", PING_BOUND);
    let rss = peak_rss_mib(&d);
    eprintln!("oversized and malformed requests: peak RSS {rss} MiB, worst /_ping {worst:?}");
    assert!(rss < RSS_BOUND_MIB, "peak RSS {rss} MiB");
}
