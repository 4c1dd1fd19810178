//! Hostile plugins: the test plugin answering with every hostile shape (`TEST_HOSTILE`, see
//! src/bin/berth-test-plugin/hostile.rs) — 1 GiB replies with and without `Content-Length`, a
//! chunked body without end, a drip of bytes, headers that never end, bytes that are not HTTP,
//! JSON that is not, JSON of the wrong types, a body cut short, no answer at all, and error
//! answers too long to pass on. For each, as a legacy VolumeDriver behind a daemon with a 2 s
//! plugin call deadline, volume create, inspect, ls (raw HTTP and the docker CLI) and mount
//! (raw HTTP) must answer within 3× the deadline with a clear error, record nothing, keep the
//! daemon's peak RSS bounded and `/_ping` answering throughout. The same for an authorization
//! plugin, for the shapes that matter to a chain (huge, never, garbage, wrong types).
//!
//! Every test prints one `FIGURE` line (worst and p99 `/_ping` latency, peak RSS) for the
//! README's reliability table.

mod common;
use common::authz::*;
use common::probes::*;
use common::*;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The daemon's `--plugin-call-timeout`.
const DEADLINE: Duration = Duration::from_secs(2);

/// What any answer may take: generous, so that a loaded machine cannot fail a test.
const ANSWER_BOUND: Duration = Duration::from_secs(6);

/// The daemon's peak RSS may not pass this (the replies are 1 GiB).
const RSS_BOUND_MIB: u64 = 128;

/// How long `/_ping` may take at worst while a plugin attacks (its goal is 50 ms; this bound
/// only catches a stalled daemon).
const PING_BOUND: Duration = Duration::from_secs(1);

/// The name of the hostile legacy plugin (its socket is `evil.sock`).
const PLUGIN: &str = "evil";

/// A hostile legacy volume plugin whose mode is read from a file on every call, and a daemon
/// that finds it.
struct Attack {
    legacy: LegacyPlugins,
    _plugin: HostProcess,
    mode_file: PathBuf,
    d: Daemon,
}

impl Attack {
    fn start() -> Attack {
        let legacy = LegacyPlugins::new();
        let mode_file = legacy.path("hostile-mode");
        std::fs::write(&mode_file, "").unwrap();
        let mode = mode_file.display().to_string();
        let plugin = host_test_plugin(
            &legacy.plugins().join(format!("{PLUGIN}.sock")),
            &legacy.path("evil-root"),
            &[("TEST_HOSTILE_FILE", mode.as_str())],
        );
        let secs = DEADLINE.as_secs().to_string();
        let d = legacy.daemon(&["--plugin-call-timeout", &secs]);
        Attack {
            legacy,
            _plugin: plugin,
            mode_file,
            d,
        }
    }

    /// `<mode>@<Method>`, or "" for a well-behaved plugin.
    fn hostile(&self, text: &str) {
        std::fs::write(&self.mode_file, text).unwrap();
    }

    /// The docker CLI against the daemon: (exit success, stdout, stderr, time taken).
    fn docker(&self, args: &[&str]) -> (bool, String, String, Duration) {
        let started = Instant::now();
        let out = Command::new(docker_cli())
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.d.socket.display()))
            .env("DOCKER_CONFIG", self.legacy.path("cli"))
            .stdin(Stdio::null())
            .output()
            .expect("run the docker CLI");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            started.elapsed(),
        )
    }

    fn volume_recorded(&self, name: &str) -> bool {
        self.d.volume_names("").iter().any(|n| n == name)
    }
}

/// The docker CLI the compat harness uses: `DOCKER_CLI`, default `/usr/local/bin/docker`.
fn docker_cli() -> PathBuf {
    std::env::var_os("DOCKER_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/docker"))
}

/// Runs `call`, asserting it answered within [`ANSWER_BOUND`].
#[track_caller]
fn timed<T>(what: &str, call: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = call();
    let took = started.elapsed();
    assert!(took < ANSWER_BOUND, "{what} took {took:?}");
    out
}

/// A message berth passes on from a plugin: shortened, one line of sense.
#[track_caller]
fn assert_clear(what: &str, message: &str) {
    assert!(
        message.len() <= 4096 + 512,
        "{what}: {} bytes passed on",
        message.len()
    );
    assert!(!message.is_empty(), "{what}: no message");
}

/// How each mode shows in an error: texts the message must contain (the plugin's socket is
/// named wherever berth could not read a whole answer).
fn expected_error(mode: &str) -> &'static [&'static str] {
    match mode {
        "huge" | "chunked" => &["limit for this call", "plugins/evil.sock"],
        "drip" | "slow-headers" | "never" => &["deadline of 2s exceeded"],
        "garbage" => &["no valid answer from the plugin at ", "plugins/evil.sock"],
        "close-mid-body" => &["reading the answer of the plugin at ", "plugins/evil.sock"],
        "not-json" => &["error reading plugin resp: expected value"],
        "wrong-types" => &["error reading plugin resp: Err is not a string: 7"],
        "long-error" => &["EEEE"],
        "huge-error" => &["(an error answer too large to show)"],
        _ => panic!("unknown mode {mode}"),
    }
}

/// What `GET /volumes/<name>` answers when the driver's `Get` answers with `mode`: an answer
/// that was read and says no volume (an error, or not a volume) is "no such volume", as in
/// dockerd; an answer berth could not read whole is an error.
fn inspect_status(mode: &str) -> u16 {
    match mode {
        "not-json" | "wrong-types" | "long-error" | "huge-error" => 404,
        _ => 500,
    }
}

/// What an attack cost the daemon; printed as a `FIGURE` line for the README.
struct Figures {
    ping: PingReport,
    peak_rss_mib: u64,
}

impl Figures {
    fn take(kind: &str, mode: &str, calls: usize, pinger: Pinger, pid: u32) -> Figures {
        let ping = pinger.finish();
        let peak_rss_mib = peak_rss_mib(pid);
        println!(
            "FIGURE {kind} mode={mode} calls={calls} pings={} failures={} worst_ping_ms={} \
             p99_ping_ms={} peak_rss_mib={peak_rss_mib} rss_after_mib={}",
            ping.probes,
            ping.failures.len(),
            ping.worst.as_millis(),
            ping.p99.as_millis(),
            status_kb(pid, "VmRSS") / 1024,
        );
        Figures { ping, peak_rss_mib }
    }

    #[track_caller]
    fn assert_bounded(&self) {
        let ping = &self.ping;
        assert!(
            ping.failures.is_empty(),
            "/_ping failed: {:?}",
            ping.failures
        );
        assert!(ping.worst < PING_BOUND, "/_ping took {:?}", ping.worst);
        let peak = self.peak_rss_mib;
        assert!(peak < RSS_BOUND_MIB, "peak RSS {peak} MiB");
    }
}

/// The whole campaign for one mode; prints the figures.
fn volume_attack(mode: &str) {
    let a = Attack::start();
    created(&a.d.create_volume("/v1.44", r#"{"Name":"kept","Driver":"evil"}"#));
    let pinger = Pinger::start(&a.d.socket);
    let want = expected_error(mode);

    // Create: nothing recorded, by API and by CLI.
    a.hostile(&format!("{mode}@Create"));
    let r = timed("create", || {
        a.d.create_volume("/v1.44", r#"{"Name":"bad","Driver":"evil"}"#)
    });
    assert_eq!(r.status, 500, "create: {}", r.text());
    let message = r.message();
    println!("[{mode}] create: {message}");
    assert!(message.starts_with("create bad: "), "{message}");
    for text in want {
        assert!(message.contains(text), "{mode}: {text:?} not in {message}");
    }
    assert_clear("create", &message);
    let (ok, _, stderr, took) = a.docker(&["volume", "create", "-d", PLUGIN, "bad-cli"]);
    assert!(!ok && stderr.contains("create bad-cli: "), "{stderr}");
    assert!(took < ANSWER_BOUND, "docker volume create took {took:?}");

    // Inspect of a volume berth has.
    a.hostile(&format!("{mode}@Get"));
    let r = timed("inspect", || a.d.get("/v1.44/volumes/kept"));
    println!("[{mode}] inspect: {} {}", r.status, r.message());
    assert_eq!(r.status, inspect_status(mode), "inspect: {}", r.text());
    assert_clear("inspect", &r.message());
    let (ok, _, stderr, took) = a.docker(&["volume", "inspect", "kept"]);
    assert!(!ok && !stderr.is_empty(), "{stderr}");
    assert!(took < ANSWER_BOUND, "docker volume inspect took {took:?}");

    // List: answers, from berth's records, with a warning naming the plugin.
    a.hostile(&format!("{mode}@List"));
    let r = timed("list", || a.d.get("/v1.44/volumes"));
    assert_eq!(r.status, 200, "list: {}", r.text());
    let list = r.json();
    assert!(find_volume(&list, "kept").is_some(), "{list}");
    let warnings = list_warnings(&list);
    println!("[{mode}] list warning: {warnings:?}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("list evil: "), "{warnings:?}");
    assert_clear("list warning", &warnings[0]);
    let (ok, stdout, _, took) = a.docker(&["volume", "ls", "-q"]);
    assert!(ok && stdout.lines().any(|l| l == "kept"), "{stdout}");
    assert!(took < ANSWER_BOUND, "docker volume ls took {took:?}");

    // Mount: refused, and not counted as a mount.
    a.hostile(&format!("{mode}@Mount"));
    let r = timed("mount", || a.d.post("/v1.44/volumes/kept/mount?id=c1"));
    println!("[{mode}] mount: {} {}", r.status, r.message());
    assert_eq!(r.status, 500, "mount: {}", r.text());
    assert!(r.message().starts_with("mount kept: "), "{}", r.message());
    assert_clear("mount", &r.message());

    let figures = Figures::take("hostile-volume", mode, 7, pinger, a.d.pid());
    // Well-behaved again: nothing of the attack was recorded, the volume is not in use.
    a.hostile("");
    assert!(!a.volume_recorded("bad") && !a.volume_recorded("bad-cli"));
    assert_eq!(a.d.get("/v1.44/volumes/bad").status, 404);
    a.d.inspect_volume("kept");
    assert_eq!(a.d.delete("/v1.44/volumes/kept").status, 204, "not in use");
    figures.assert_bounded();
}

#[test]
fn huge_replies_are_refused_at_their_content_length() {
    volume_attack("huge");
}

#[test]
fn endless_chunked_replies_are_cut_at_the_limit() {
    volume_attack("chunked");
}

#[test]
fn dripping_replies_end_at_the_deadline() {
    volume_attack("drip");
}

#[test]
fn endless_headers_end_at_the_deadline() {
    volume_attack("slow-headers");
}

#[test]
fn bytes_that_are_not_http_are_an_error() {
    volume_attack("garbage");
}

#[test]
fn replies_that_are_not_json_are_an_error() {
    volume_attack("not-json");
}

#[test]
fn replies_of_the_wrong_types_are_an_error() {
    volume_attack("wrong-types");
}

#[test]
fn replies_cut_short_are_an_error() {
    volume_attack("close-mid-body");
}

#[test]
fn plugins_that_never_answer_cost_the_deadline() {
    volume_attack("never");
}

#[test]
fn long_error_texts_are_shortened() {
    volume_attack("long-error");
}

#[test]
fn huge_error_answers_are_read_only_as_far_as_shown() {
    volume_attack("huge-error");
}

/// A create through the plugin answering `Create` with `mode`: refused (500), nothing
/// recorded; returns the message.
fn refused_create(mode: &str) -> String {
    let a = Attack::start();
    a.hostile(&format!("{mode}@Create"));
    let r =
        a.d.create_volume("/v1.44", r#"{"Name":"bad","Driver":"evil"}"#);
    assert_eq!(r.status, 500, "{}", r.text());
    a.hostile("");
    assert!(!a.volume_recorded("bad"));
    r.message()
}

#[test]
fn an_error_text_is_passed_on_shortened() {
    let message = refused_create("long-error");
    assert_starts_with(&message, "create bad: VolumeDriver.Create: EEEE");
    assert!(message.len() < 4200, "{} bytes", message.len());
}

#[test]
fn an_err_of_another_type_is_an_error_not_an_acknowledgement() {
    let message = refused_create("wrong-types");
    assert_eq!(
        message,
        "create bad: VolumeDriver.Create: error reading plugin resp: Err is not a string: 7"
    );
}

// ---------------------------------------------------------------------------------------------
// Authorization plugins.

/// An authorization chain of one hostile plugin for `POST /volumes/create` of volumes named
/// `evil-*` (every other request is allowed, `/_ping` included).
fn authz_attack(mode: &str) {
    let rules = format!("req hostile={mode} POST /volumes/create body=evil-");
    let secs = DEADLINE.as_secs().to_string();
    let (_dir, _plugin, d) = guarded_daemon("bha", &rules, &["--plugin-call-timeout", &secs]);
    let pinger = Pinger::start(&d.socket);
    for i in 0..3 {
        let name = format!("evil-{i}");
        let r = timed("guarded create", || {
            d.create_volume("/v1.41", &format!(r#"{{"Name":"{name}"}}"#))
        });
        assert_eq!(r.status, 500, "{}", r.text());
        assert!(
            r.message().starts_with("plugin guard failed with error: "),
            "{}",
            r.message()
        );
        assert_clear("authz", &r.message());
        assert!(!std::fs::exists(d.data_root.join("volumes").join(&name)).unwrap());
    }
    let figures = Figures::take("hostile-authz", mode, 3, pinger, d.pid());
    assert_eq!(d.create_volume("/v1.41", r#"{"Name":"fine"}"#).status, 201);
    figures.assert_bounded();
}

#[test]
fn a_huge_authorization_answer_refuses_the_request() {
    authz_attack("huge");
}

#[test]
fn an_authorization_plugin_that_never_answers_refuses_at_the_deadline() {
    authz_attack("never");
}

#[test]
fn an_authorization_answer_that_is_not_http_refuses_the_request() {
    authz_attack("garbage");
}

#[test]
fn an_authorization_answer_of_the_wrong_types_refuses_the_request() {
    authz_attack("wrong-types");
}
