//! `GET /events` and `GET /system/df` against a running berth: what a slow or departed client
//! costs the daemon (nothing it cannot bound), and events and sizes as clients read them.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{eventually, Daemon};

/// Opens `GET <path>` and returns the connection without reading anything.
fn open_stream(socket: &Path, path: &str) -> UnixStream {
    let mut stream = UnixStream::connect(socket).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: berth\r\n\r\n").unwrap();
    stream
}

/// Reads a stream until it ends, `timeout` passes without data, or `enough` events came, and
/// counts the events in it.
fn read_events(mut stream: UnixStream, enough: usize, timeout: Duration) -> (usize, Vec<u8>) {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let needle = br#"{"Type":"#;
    let count = |raw: &[u8]| raw.windows(needle.len()).filter(|w| w == needle).count();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    while count(&raw) < enough {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    (count(&raw), raw)
}

fn count_events(stream: UnixStream, timeout: Duration) -> (usize, Vec<u8>) {
    read_events(stream, usize::MAX, timeout)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

fn listeners(d: &Daemon) -> u64 {
    d.get("/v1.41/info").json()["NEventsListener"]
        .as_u64()
        .unwrap()
}

/// Median duration of `n` idempotent creates of one volume (each publishes an event for API
/// 1.41 streams and writes nothing to disk).
fn create_latency(d: &Daemon, n: usize) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = d.post_json("/v1.41/volumes/create", r#"{"Name":"busy"}"#);
            assert_eq!(r.status, 201, "{}", r.text());
            t.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

#[test]
fn a_stalled_events_reader_neither_slows_requests_nor_grows_memory() {
    let d = Daemon::start();
    // Far more events than a stalled client's buffers (socket, server, subscriber) hold.
    const EVENTS: usize = 6000;
    const BASELINE: usize = 300;

    // A client that reads everything, there all along.
    let reader = open_stream(&d.socket, "/v1.41/events");
    assert!(eventually(Duration::from_secs(10), || listeners(&d) == 1));
    let reading =
        thread::spawn(move || read_events(reader, BASELINE + EVENTS, Duration::from_secs(60)));
    let baseline = create_latency(&d, BASELINE);
    let rss_before = rss_kib(d.pid());

    // A client that never reads.
    let stalled = open_stream(&d.socket, "/v1.41/events");
    assert!(eventually(Duration::from_secs(10), || listeners(&d) == 2));
    let during = create_latency(&d, EVENTS);
    let rss_after = rss_kib(d.pid());
    println!(
        "median create: {baseline:?} before, {during:?} with a stalled reader; \
         RSS {rss_before} KiB before, {rss_after} KiB after {EVENTS} events"
    );

    // The stalled subscriber was dropped, with a message; the other one still listens.
    assert!(
        eventually(Duration::from_secs(10), || listeners(&d) == 1),
        "listeners: {}",
        listeners(&d)
    );
    assert!(d
        .log()
        .contains("events: dropping a subscriber that fell 1024 events behind"));
    // Publishing never waited for the stalled reader: creates cost what they cost without it
    // (dockerd gives each subscriber up to 100 ms per event).
    assert!(
        during <= (baseline * 3).max(baseline + Duration::from_millis(20)),
        "median create took {during:?} with a stalled reader, {baseline:?} before"
    );
    // Memory stays bounded: the queued events of one subscriber, not all of them.
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );

    // The stalled client finds its stream cut short (no final empty chunk), after what the
    // daemon had queued for it.
    let (stalled_count, raw) = count_events(stalled, Duration::from_secs(30));
    assert!((1024..EVENTS).contains(&stalled_count), "{stalled_count}");
    assert!(!raw.ends_with(b"0\r\n\r\n"), "the stream ended normally");

    // The client that reads got every event.
    assert_eq!(reading.join().unwrap().0, BASELINE + EVENTS);
}

#[test]
fn recorded_events_come_back_for_since_and_until_and_survive_nothing() {
    let mut d = Daemon::start();
    let before = chrono::Utc::now();
    for name in ["e1", "e2"] {
        d.post_json("/v1.41/volumes/create", &format!(r#"{{"Name":"{name}"}}"#));
    }
    assert_eq!(d.delete("/v1.41/volumes/e1").status, 204);
    let since = format!(
        "{}.{:09}",
        before.timestamp(),
        before.timestamp_subsec_nanos()
    );
    let until = chrono::Utc::now();
    let until = format!(
        "{}.{:09}",
        until.timestamp(),
        until.timestamp_subsec_nanos()
    );
    let past = |d: &Daemon| {
        let r = d.get(&format!("/v1.41/events?since={since}&until={until}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        r.text()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{} {}",
                    v["Action"].as_str().unwrap(),
                    v["Actor"]["ID"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(past(&d), ["create e1", "create e2", "destroy e1"]);
    // In memory only, as with dockerd.
    d.stop();
    d.spawn();
    assert!(past(&d).is_empty());
}

#[test]
fn a_live_stream_ends_at_until_and_a_departed_client_unsubscribes() {
    let d = Daemon::start();
    let until = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let stream = open_stream(
        &d.socket,
        &format!("/v1.41/events?until={}", until.timestamp() + 1),
    );
    assert!(eventually(Duration::from_secs(10), || listeners(&d) == 1));
    d.post_json("/v1.41/volumes/create", r#"{"Name":"live"}"#);
    let started = Instant::now();
    let (count, raw) = count_events(stream, Duration::from_secs(30));
    assert_eq!(count, 1, "{}", String::from_utf8_lossy(&raw));
    assert!(raw.ends_with(b"0\r\n\r\n"), "ended normally at until");
    assert!(started.elapsed() < Duration::from_secs(10));

    // A client that goes away while nothing happens is noticed without an event to write.
    let gone = open_stream(&d.socket, "/v1.41/events");
    assert!(eventually(Duration::from_secs(10), || listeners(&d) == 1));
    drop(gone);
    assert!(eventually(Duration::from_secs(10), || listeners(&d) == 0));
}

#[test]
fn system_df_measures_off_the_workers_and_stops_when_the_client_goes() {
    let d = Daemon::start();
    assert_eq!(
        d.post_json("/v1.41/volumes/create", r#"{"Name":"big"}"#)
            .status,
        201
    );
    // Enough files that measuring takes a while.
    let data = d.data_root.join("volumes/big/_data");
    for dir in 0..100 {
        let sub = data.join(format!("d{dir}"));
        std::fs::create_dir(&sub).unwrap();
        for file in 0..400 {
            std::fs::write(sub.join(format!("f{file}")), b"x").unwrap();
        }
    }
    let df = d.get("/v1.41/system/df").json();
    assert_eq!(df["Volumes"][0]["UsageData"]["Size"], 40_000);
    assert_eq!(df["Volumes"][0]["UsageData"]["RefCount"], 0);

    // While a walk runs, other requests are answered.
    let socket = d.socket.clone();
    let measuring =
        thread::spawn(move || common::raw_request(&socket, "GET", "/v1.41/system/df", &[], &[]));
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(d.get("/v1.41/volumes").status, 200);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    assert_eq!(measuring.join().unwrap().unwrap().status, 200);

    // A client that leaves while the walk runs stops it. The walk may win the race against
    // noticing the client has gone; then the next attempt decides.
    let count = |what: &str| d.log().matches(what).count();
    for _ in 0..5 {
        let (started, finished) = (count(MEASURING), count(MEASURED));
        let client = open_stream(&d.socket, "/v1.41/system/df");
        assert!(eventually(Duration::from_secs(30), || count(MEASURING) > started));
        drop(client);
        assert!(eventually(Duration::from_secs(30), || {
            count(STOPPED) > 0 || count(MEASURED) > finished
        }));
        if count(STOPPED) > 0 {
            return;
        }
    }
    panic!(
        "every walk ended before the client was seen gone:\n{}",
        d.log()
    );
}

const MEASURING: &str = "system df: measuring";
const MEASURED: &str = "system df: measured";
const STOPPED: &str = "system df: stopped measuring, the client went away";
