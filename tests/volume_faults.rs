//! `/volumes` when things go wrong: a legacy plugin frozen with SIGSTOP while berth lists or
//! creates, a plugin killed in the middle of a create, and berth itself killed with SIGKILL
//! in the middle of 100 concurrent creates. Every process started here is resumed and killed
//! by its guard; every wait is bounded.

mod common;
use common::*;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Timed `GET /v1.44/volumes`.
fn timed_list(d: &Daemon) -> (Value, Duration) {
    let started = Instant::now();
    let r = d.get("/v1.44/volumes");
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    (r.json(), took)
}

/// Two legacy test plugins (`frozen`, `alive`) and berth with a 1 s plugin call deadline.
/// Each plugin has a volume berth created; `alive` also has one berth never created; `local`
/// has one.
struct FrozenSetup {
    _legacy: LegacyPlugins,
    frozen: HostProcess,
    _alive: HostProcess,
    alive_root: PathBuf,
    d: Daemon,
}

fn frozen_setup() -> FrozenSetup {
    let legacy = LegacyPlugins::new();
    let alive_root = legacy.path("alive-root");
    let frozen = host_test_plugin(
        &legacy.plugins().join("frozen.sock"),
        &legacy.path("frozen-root"),
        &[],
    );
    let alive = host_test_plugin(&legacy.plugins().join("alive.sock"), &alive_root, &[]);
    let d = legacy.daemon(&["--plugin-call-timeout", "1"]);
    // Volumes through both plugins: berth has activated both before any test freezes one.
    created(&d.create_volume("/v1.44", r#"{"Name":"fv","Driver":"frozen"}"#));
    created(&d.create_volume("/v1.44", r#"{"Name":"av","Driver":"alive"}"#));
    created(&d.create_volume("/v1.44", r#"{"Name":"lv"}"#));
    std::fs::create_dir(alive_root.join("alive-only")).unwrap();
    let (list, _) = timed_list(&d);
    assert_eq!(list["Warnings"], Value::Null);
    assert_eq!(
        d.volume_names(""),
        vec!["alive-only", "av", "fv", "lv"],
        "before the freeze"
    );
    FrozenSetup {
        _legacy: legacy,
        frozen,
        _alive: alive,
        alive_root,
        d,
    }
}

/// What a list with `frozen` frozen must hold: everything, `fv` from berth's records, and a
/// warning naming the frozen driver. Returns the warning.
fn assert_list_despite_the_frozen_driver(list: &Value, alive_root: &Path) -> String {
    let names: Vec<&str> = list["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alive-only", "av", "fv", "lv"], "{list}");
    assert_eq!(find_volume(list, "fv").unwrap()["Driver"], "frozen");
    assert_eq!(
        find_volume(list, "av").unwrap()["Mountpoint"],
        alive_root.join("av").display().to_string(),
        "the live driver answered"
    );
    let w = list_warnings(list);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("list frozen: "), "{w:?}");
    w[0].clone()
}

#[test]
fn a_frozen_legacy_plugin_does_not_stall_volume_ls_or_create() {
    let setup = frozen_setup();
    let d = &setup.d;
    setup.frozen.freeze();

    let (list, took) = timed_list(d);
    eprintln!("GET /volumes with a frozen plugin took {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "the 1 s deadline bounds the list: took {took:?}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "the frozen plugin was waited for: {took:?}"
    );
    let warning = assert_list_despite_the_frozen_driver(&list, &setup.alive_root);
    eprintln!("warning: {warning}");
    assert!(
        warning.starts_with("list frozen: VolumeDriver.List: "),
        "{warning}"
    );

    // Creating on local (and on the live plugin) does not wait for the frozen one.
    let started = Instant::now();
    created(&d.create_volume("/v1.44", r#"{"Name":"lv2"}"#));
    let took = started.elapsed();
    eprintln!("local create with a frozen plugin took {took:?}");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    let started = Instant::now();
    created(&d.create_volume("/v1.44", r#"{"Name":"av2","Driver":"alive"}"#));
    assert!(started.elapsed() < Duration::from_millis(800));
    let started = Instant::now();
    assert_eq!(d.get("/v1.44/volumes/lv").status, 200);
    assert_eq!(d.delete("/v1.44/volumes/lv2").status, 204);
    assert!(started.elapsed() < Duration::from_millis(500));

    // A call to the frozen driver itself ends at the deadline.
    let started = Instant::now();
    let r = d.create_volume("/v1.44", r#"{"Name":"fv2","Driver":"frozen"}"#);
    let took = started.elapsed();
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.message().starts_with("create fv2: "), "{}", r.message());
    assert!(took < Duration::from_secs(4), "took {took:?}");

    // Thawed, it answers again.
    setup.frozen.thaw();
    assert!(
        eventually(Duration::from_secs(10), || {
            let list = d.volume_list("");
            list["Warnings"].is_null() && find_volume(&list, "fv").is_some()
        }),
        "{}",
        d.volume_list("")
    );
    assert_eq!(d.get("/v1.44/volumes/fv").status, 200);
    assert!(!d.volume_names("").contains(&"fv2".to_string()));
}

/// Every list while the plugin stays frozen must look the same; the second one comes after the
/// first has marked the plugin unreachable, when discovery tries to activate it again.
#[test]
fn every_list_while_a_plugin_is_frozen_warns_and_keeps_the_other_drivers() {
    let setup = frozen_setup();
    let d = &setup.d;
    setup.frozen.freeze();
    for round in 1..=3 {
        let (list, took) = timed_list(d);
        eprintln!("list {round} took {took:?}: {list}");
        assert!(
            took < Duration::from_secs(3),
            "round {round}: took {took:?}"
        );
        assert_list_despite_the_frozen_driver(&list, &setup.alive_root);
    }
}

#[test]
fn a_plugin_killed_during_a_create_fails_it_cleanly() {
    let legacy = LegacyPlugins::new();
    let root = legacy.path("root");
    let socket = legacy.plugins().join("hung.sock");
    let calls = legacy.path("calls.log");
    let mut plugin = host_test_plugin(
        &socket,
        &root,
        &[
            ("TEST_HANG_ON", "VolumeDriver.Create"),
            ("TEST_CALL_LOG", calls.to_str().unwrap()),
        ],
    );
    let d = legacy.daemon(&["--plugin-call-timeout", "10"]);
    let socket_path = d.socket.clone();

    let started = Instant::now();
    let creating = std::thread::spawn(move || {
        let r = raw_request(
            &socket_path,
            "POST",
            "/v1.44/volumes/create",
            &[("Content-Type", "application/json")],
            br#"{"Name":"doomed","Driver":"hung"}"#,
        )
        .expect("an answer");
        (r, Instant::now())
    });
    // The plugin logs a call before it starts on it (and never answers Create): once Create is
    // in its log, the create is under way in the plugin.
    assert!(
        eventually(Duration::from_secs(30), || {
            std::fs::read_to_string(&calls).is_ok_and(|log| log.contains("VolumeDriver.Create "))
        }),
        "the plugin never received VolumeDriver.Create: {:?}",
        std::fs::read_to_string(&calls)
    );
    assert!(!creating.is_finished(), "create waits for the plugin");
    let killed = Instant::now();
    plugin.kill();
    let (r, answered) = creating.join().unwrap();
    let after_kill = answered.duration_since(killed);
    eprintln!(
        "create answered {after_kill:?} after the kill ({:?} in all): {} {}",
        answered.duration_since(started),
        r.status,
        r.text()
    );
    assert_eq!(r.status, 500, "{}", r.text());
    let message = r.message();
    assert!(message.starts_with("create doomed: "), "{message}");
    assert!(after_kill < Duration::from_secs(11), "{after_kill:?}");
    assert!(!root.join("doomed").exists(), "the plugin never made it");

    // Nothing recorded: not listed (the dead driver's list fails: a warning), not inspectable.
    let list = d.volume_list("");
    assert!(find_volume(&list, "doomed").is_none(), "{list}");
    let w = list_warnings(&list);
    assert!(
        w.iter().all(|w| w.starts_with("list hung: ")),
        "only the dead driver warns: {w:?}"
    );
    let r = d.get("/v1.44/volumes/doomed");
    r.assert_error(404, "get doomed: no such volume");

    // The plugin comes back on the same socket: the name can be created after all.
    let _again = host_test_plugin(&socket, &root, &[]);
    let r = d.create_volume("/v1.44", r#"{"Name":"doomed","Driver":"hung"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(root.join("doomed").is_dir());
    assert_eq!(d.volume_names(""), vec!["doomed"]);
}

/// Names of volume directories (and leftovers) in `<data-root>/volumes`.
fn volume_dirs(d: &Daemon) -> BTreeSet<String> {
    std::fs::read_dir(d.data_root.join("volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "metadata.db")
        .collect()
}

#[test]
fn berth_killed_during_100_concurrent_creates_keeps_every_acknowledged_volume() {
    const N: usize = 100;
    // The last HELD creates send half their body and stall until the kill: whenever the kill
    // lands, some creates are still in the middle.
    const HELD: usize = 4;
    let mut d = Daemon::start();
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let answered = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(std::sync::Barrier::new(N + 1));
    let mut threads = Vec::new();
    for i in 0..N {
        let socket = d.socket.clone();
        let (acknowledged, failed, answered, go) = (
            acknowledged.clone(),
            failed.clone(),
            answered.clone(),
            go.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let name = format!("crash{i:03}");
            let body = format!(r#"{{"Name":"{name}","Labels":{{"i":"{i}"}}}}"#);
            let headers = [("Content-Type", "application/json")];
            let request = (
                "POST",
                "/v1.44/volumes/create",
                &headers[..],
                body.as_bytes(),
            );
            let r = if i >= N - HELD {
                let stalled = send_request(&socket, request, body.len() / 2);
                go.wait();
                stalled.and_then(read_response)
            } else {
                go.wait();
                send_request(&socket, request, body.len()).and_then(read_response)
            };
            match r {
                Ok(r) if r.status == 201 => {
                    acknowledged.lock().unwrap().insert(name);
                    answered.fetch_add(1, Ordering::SeqCst);
                }
                Ok(r) => failed
                    .lock()
                    .unwrap()
                    .push(format!("{name}: {} {}", r.status, r.text())),
                Err(e) => failed.lock().unwrap().push(format!("{name}: {e}")),
            }
        }));
    }
    go.wait();
    let started = Instant::now();
    // Kill once a quarter has been acknowledged.
    assert!(
        eventually(Duration::from_secs(60), || answered.load(Ordering::SeqCst)
            >= N / 4),
        "berth acknowledged only {} of {N} creates in 60 s",
        answered.load(Ordering::SeqCst)
    );
    d.kill9();
    let at_kill = answered.load(Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let failed = failed.lock().unwrap().clone();
    eprintln!(
        "killed after {:?} with {at_kill} acknowledged; {} acknowledged in all, {} failed",
        started.elapsed(),
        acknowledged.len(),
        failed.len()
    );
    assert!(
        !acknowledged.is_empty() && acknowledged.len() < N,
        "the kill must land in the middle: {} of {N} acknowledged",
        acknowledged.len()
    );
    for f in &failed {
        assert!(
            !f.contains(" 201 "),
            "only connection errors after the kill: {f}"
        );
    }

    let leftovers_before: Vec<String> = volume_dirs(&d)
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    eprintln!("half-made directories at the kill: {leftovers_before:?}");

    d.spawn();
    // The log file is made anew by each start: this is the restarted daemon's.
    // The one warning every test daemon logs: its --config-file names no file, on purpose.
    let log: String = d
        .log()
        .lines()
        .filter(|l| !l.contains("does not exist: flags and defaults only"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        !log.contains("level=error") && !log.contains("level=warn") && !log.contains("panicked"),
        "clean start: {log}"
    );

    let list = d.volume_list("");
    assert_eq!(list["Warnings"], Value::Null);
    let listed: BTreeSet<String> = d.volume_names("").into_iter().collect();
    for name in &acknowledged {
        assert!(listed.contains(name), "acknowledged {name} is listed");
        let r = d.get(&format!("/v1.44/volumes/{name}"));
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let i = name.trim_start_matches("crash").trim_start_matches('0');
        let i = if i.is_empty() { "0" } else { i };
        assert_eq!(r.json()["Labels"]["i"], i, "{name}");
    }
    // Whatever is listed is whole: its directory and _data exist.
    for v in list["Volumes"].as_array().unwrap() {
        let mountpoint = PathBuf::from(v["Mountpoint"].as_str().unwrap());
        assert!(mountpoint.is_dir(), "{} has no {mountpoint:?}", v["Name"]);
        assert!(v["Name"].as_str().unwrap().starts_with("crash"));
    }
    assert!(
        listed.len() <= N && listed.is_superset(&acknowledged),
        "listed {} acknowledged {}",
        listed.len(),
        acknowledged.len()
    );
    // On disk: no half-made or half-removed directories after the restart; a directory no
    // record names can only be one of the unacknowledged requests.
    let on_disk = volume_dirs(&d);
    assert!(
        on_disk.iter().all(|n| !n.starts_with('.')),
        "leftovers swept at start-up: {on_disk:?}"
    );
    for name in on_disk.difference(&listed) {
        assert!(
            name.starts_with("crash") && !acknowledged.contains(name),
            "unrecorded directory {name}"
        );
    }
    eprintln!(
        "after restart: {} listed, {} directories without a record",
        listed.len(),
        on_disk.difference(&listed).count()
    );

    // Every name works afterwards: unacknowledged ones can be created (or already exist),
    // acknowledged ones are idempotent, all can be removed.
    for i in 0..N {
        let name = format!("crash{i:03}");
        let r = d.create_volume("/v1.44", &format!(r#"{{"Name":"{name}"}}"#));
        assert_eq!(r.status, 201, "{name}: {}", r.text());
        assert!(Path::new(r.json()["Mountpoint"].as_str().unwrap()).is_dir());
    }
    assert_eq!(d.volume_names("").len(), N);
    let report = d.post("/v1.44/volumes/prune?filters=%7B%22all%22%3A%7B%22true%22%3Atrue%7D%7D");
    assert_eq!(report.status, 200);
    assert_eq!(report.json()["VolumesDeleted"].as_array().unwrap().len(), N);
    assert!(volume_dirs(&d).is_empty(), "{:?}", volume_dirs(&d));
}
