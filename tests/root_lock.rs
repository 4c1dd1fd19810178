//! One daemon per data root and exec root: a second berth started on the roots of a running one
//! refuses to start, naming the first (its PID and socket), before it touches anything — the
//! first daemon's plugin keeps running, the same process.

mod common;
use common::authz::refused_start;
use common::*;

use std::ffi::OsString;

const PLUGIN: &str = "test/driver:latest";

fn second_daemon_args(
    d: &Daemon,
    data_root: &std::path::Path,
    exec_root: &std::path::Path,
) -> Vec<OsString> {
    let socket = d.dir.path().join("second.sock");
    vec![
        "--host".into(),
        format!("unix://{}", socket.display()).into(),
        "--data-root".into(),
        data_root.into(),
        "--exec-root".into(),
        exec_root.into(),
        "--config-file".into(),
        d.dir.path().join("no-daemon.json").into(),
    ]
}

#[test]
fn a_second_daemon_on_the_same_roots_refuses_and_harms_nothing() {
    let d = Daemon::start_with(&["--plugin-start-timeout", "10"]);
    let id = d.create_test_plugin(PLUGIN, "", &[]);
    d.enable_plugin(PLUGIN).expect(200, "enable");
    let before = plugin_processes(&id);
    assert_eq!(before.len(), 1, "{before:?}");

    let first = format!(
        "(PID {}, listening on unix://{})",
        d.pid(),
        d.socket.display()
    );
    // The same data root (its exec root elsewhere), then the same exec root.
    let elsewhere = d.dir.path().join("other");
    for (data_root, exec_root, locked) in [
        (d.data_root.clone(), elsewhere.join("exec"), &d.data_root),
        (elsewhere.join("data"), d.exec_root.clone(), &d.exec_root),
    ] {
        let stderr = refused_start(&second_daemon_args(&d, &data_root, &exec_root));
        let want = format!(
            "{} is in use by another berth daemon {first}",
            locked.display()
        );
        assert!(stderr.contains(&want), "{want:?} not in {stderr}");
    }

    // Nothing of the first daemon was touched (the second one has exited): its plugin is the
    // same process, still serving.
    assert_eq!(
        plugin_processes(&id),
        before,
        "the plugin process is the same"
    );
    assert!(d.plugin(PLUGIN).unwrap()["Enabled"] == true);
    let socket = d
        .exec_root
        .join("plugins")
        .join(&id)
        .join("testdriver.sock");
    let activated = raw_request(&socket, "POST", "/Plugin.Activate", &[], b"{}").unwrap();
    assert_eq!(activated.status, 200);
    assert_eq!(d.get("/_ping").status, 200);
    assert!(!d.dir.path().join("second.sock").exists());
}

#[test]
fn the_roots_are_free_again_once_the_daemon_stopped() {
    let mut d = Daemon::start();
    d.stop();
    d.spawn();
    assert_eq!(d.get("/_ping").status, 200);
    let lock = std::fs::read_to_string(d.data_root.join("berth.lock")).unwrap();
    assert_eq!(
        lock,
        format!("pid={}\nsocket={}\n", d.pid(), d.socket.display())
    );
}
