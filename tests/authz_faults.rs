//! Authorization plugins that fail: killed, frozen (SIGSTOP), slow, answering garbage or
//! errors. Every request they should decide is refused, none reaches its handler, and berth
//! answers promptly throughout (each plugin call has berth's 1 s deadline here).

mod common;
use common::authz::*;
use common::*;

use std::time::{Duration, Instant};

const DEADLINE: &str = "1";

fn setup(prefix: &str, rules: &str) -> (tempfile::TempDir, AuthzPlugin, Daemon) {
    guarded_daemon(prefix, rules, &["--plugin-call-timeout", DEADLINE])
}

/// Creates volume `name`; returns the answer and how long it took.
fn timed_create(d: &Daemon, name: &str) -> (Response, Duration) {
    let started = Instant::now();
    let r = d.create_volume("/v1.41", &format!(r#"{{"Name":"{name}"}}"#));
    (r, started.elapsed())
}

fn exists(d: &Daemon, name: &str) -> bool {
    std::fs::metadata(d.data_root.join("volumes").join(name)).is_ok()
}

/// Waits until the kernel reports `pid` stopped (`State: T`), never by a fixed sleep.
fn wait_stopped(pid: i32) {
    let stopped = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('T'))
    };
    assert!(
        eventually(Duration::from_secs(10), stopped),
        "{pid} not stopped"
    );
}

#[test]
fn a_killed_plugin_refuses_every_request_at_once() {
    let (dir, mut plugin, d) = setup("bzk", "");
    assert_eq!(timed_create(&d, "before").0.status, 201);

    plugin.process.kill();
    for name in ["after-kill-1", "after-kill-2"] {
        let (r, took) = timed_create(&d, name);
        assert_eq!(r.status, 500, "{}", r.text());
        assert!(
            r.message()
                .starts_with("plugin guard failed with error: dial unix ")
                && r.message().ends_with("connect: connection refused"),
            "{}",
            r.message()
        );
        assert!(took < Duration::from_millis(500), "took {took:?}");
        assert!(!exists(&d, name));
    }
    assert_eq!(d.get("/_ping").status, 500, "everything passes the chain");

    // Back on its socket, it is asked again.
    let _again = authz_plugin(dir.path(), "guard", "", &[]);
    assert_eq!(timed_create(&d, "back").0.status, 201);
}

#[test]
fn a_frozen_plugin_refuses_requests_at_the_deadline_without_stalling_berth() {
    let (_dir, plugin, d) = setup("bzf", "");
    assert_eq!(timed_create(&d, "before").0.status, 201);
    plugin.process.freeze();
    wait_stopped(plugin.process.pid());

    let answers: Vec<(Response, Duration)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|i| {
                let d = &d;
                s.spawn(move || timed_create(d, &format!("frozen-{i}")))
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for (r, took) in &answers {
        assert_eq!(r.status, 500, "{}", r.text());
        assert_eq!(
            r.message(),
            "plugin guard failed with error: AuthZPlugin.AuthZReq: deadline of 1s exceeded"
        );
        assert!(
            *took >= Duration::from_millis(900) && *took < Duration::from_secs(3),
            "took {took:?}"
        );
    }
    for i in 0..4 {
        assert!(!exists(&d, &format!("frozen-{i}")));
    }

    plugin.process.thaw();
    assert!(eventually(Duration::from_secs(10), || timed_create(
        &d, "thawed"
    )
    .0
    .status
        == 201));
}

#[test]
fn a_slow_plugin_is_waited_for_up_to_the_deadline() {
    let (_dir, _plugin, d) = setup(
        "bzw",
        "req slow=300 * /volumes/create body=slow; req slow=1500 * /volumes/create body=late",
    );
    let (r, took) = timed_create(&d, "slow");
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(took >= Duration::from_millis(300), "took {took:?}");
    let (r, took) = timed_create(&d, "late");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.message().ends_with("deadline of 1s exceeded"),
        "{}",
        r.message()
    );
    assert!(took < Duration::from_millis(1400), "took {took:?}");
    assert!(!exists(&d, "late"));
    // Meanwhile berth answers others.
    assert_eq!(d.get("/v1.41/volumes").status, 200);
}

#[test]
fn garbage_and_error_answers_fail_closed_in_both_phases() {
    let (_dir, _plugin, d) = setup(
        "bzg",
        "req garbage * /volumes/create body=garbage; req error * /volumes/create body=broken msg=boom; \
         res garbage GET /volumes/answer-junk; res error GET /volumes/answer-fails msg=late boom",
    );
    let (r, _) = timed_create(&d, "garbage");
    assert_eq!(r.status, 500);
    assert_starts_with(
        &r.message(),
        "plugin guard failed with error: AuthZPlugin.AuthZReq: error reading plugin resp",
    );
    let (r, _) = timed_create(&d, "broken");
    assert_eq!(r.status, 500);
    assert_eq!(
        r.message(),
        "plugin guard failed with error: AuthZPlugin.AuthZReq: boom"
    );
    assert!(!exists(&d, "garbage") && !exists(&d, "broken"));

    for (name, message) in [
        (
            "answer-junk",
            "AuthZPlugin.AuthZRes: error reading plugin resp",
        ),
        ("answer-fails", "AuthZPlugin.AuthZRes: late boom"),
    ] {
        assert_eq!(timed_create(&d, name).0.status, 201);
        let r = d.get(&format!("/v1.41/volumes/{name}"));
        assert_eq!(r.status, 500);
        assert_starts_with(
            &r.message(),
            &format!("plugin guard failed with error: {message}"),
        );
        assert!(!r.text().contains("Mountpoint"), "the answer never leaves");
    }
}
