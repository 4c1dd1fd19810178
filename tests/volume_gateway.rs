//! Managed volume plugins served to other engines: each enabled managed volume plugin gets
//! `<exec-root>/volume-plugins/<name>.sock` speaking the VolumeDriver protocol through berth's
//! volume service (records, references, host paths); the socket goes when the plugin is
//! disabled. Then Podman itself (Debian's `podman`, when installed) uses it. Runs as root.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const PLUGIN: &str = "test/gw";

fn daemon_with_enabled_plugin() -> (Daemon, String, PathBuf) {
    let d = Daemon::start_with(&["--plugin-start-timeout", "10"]);
    let id = d.create_test_plugin(PLUGIN, "", &[]);
    assert_eq!(
        d.post(&format!("/plugins/{PLUGIN}/enable?timeout=30"))
            .status,
        200
    );
    let socket = d.exec_root.join("volume-plugins/test/gw.sock");
    assert!(
        eventually(std::time::Duration::from_secs(10), || socket.exists()),
        "{} not served\n{}",
        socket.display(),
        d.log()
    );
    (d, id, socket)
}

fn call(socket: &Path, method: &str, body: &str) -> Response {
    raw_request(socket, "POST", &format!("/{method}"), &[], body.as_bytes()).unwrap()
}

#[test]
fn the_volume_driver_protocol_reaches_the_plugin_through_the_volume_service() {
    let (d, id, socket) = daemon_with_enabled_plugin();
    let r = call(&socket, "Plugin.Activate", "");
    assert_eq!(
        r.json(),
        serde_json::json!({"Implements": ["VolumeDriver"]})
    );
    let r = call(&socket, "VolumeDriver.Capabilities", "{}");
    assert_eq!(r.json()["Capabilities"]["Scope"], "local");

    let r = call(
        &socket,
        "VolumeDriver.Create",
        r#"{"Name":"gv1","Opts":{"a":"b"}}"#,
    );
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!({})),
        "{}",
        r.text()
    );
    // A berth volume like any other: recorded with the plugin's full name and its options.
    let v = d.get("/volumes/gv1").json();
    assert_eq!(v["Driver"], "test/gw:latest");
    assert_eq!(v["Options"]["a"], "b");
    // It holds a reference: the plugin is in use.
    let r = d.post(&format!("/plugins/{PLUGIN}/disable"));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.message().contains("in use"), "{}", r.message());

    // Paths are host paths (the plugin's /data is its propagated mount).
    let host = d
        .data_root
        .join("plugins")
        .join(&id)
        .join("propagated-mount/gv1");
    let r = call(&socket, "VolumeDriver.Mount", r#"{"Name":"gv1","ID":"c1"}"#);
    assert_eq!(
        r.json()["Mountpoint"],
        host.display().to_string(),
        "{}",
        r.text()
    );
    let r = call(&socket, "VolumeDriver.Path", r#"{"Name":"gv1"}"#);
    assert_eq!(r.json()["Mountpoint"], host.display().to_string());
    let r = call(&socket, "VolumeDriver.Get", r#"{"Name":"gv1"}"#);
    assert_eq!(r.json()["Volume"]["Name"], "gv1");
    assert!(is_rfc3339_seconds(
        r.json()["Volume"]["CreatedAt"].as_str().unwrap()
    ));
    let r = call(&socket, "VolumeDriver.List", "{}");
    assert_eq!(
        r.json()["Volumes"],
        serde_json::json!([{"Name": "gv1", "Mountpoint": host.display().to_string()}])
    );
    // Mounted: neither berth nor the other engine may remove it.
    let r = call(&socket, "VolumeDriver.Remove", r#"{"Name":"gv1"}"#);
    assert_eq!(r.status, 500);
    assert!(
        r.json()["Err"].as_str().unwrap().contains("in use"),
        "{}",
        r.text()
    );
    let r = call(
        &socket,
        "VolumeDriver.Unmount",
        r#"{"Name":"gv1","ID":"c1"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Only this driver's volumes are reachable through its socket.
    assert_eq!(
        d.post_json("/volumes/create", r#"{"Name":"lv"}"#).status,
        201
    );
    let r = call(&socket, "VolumeDriver.Get", r#"{"Name":"lv"}"#);
    assert_eq!(r.status, 500);
    let r = call(&socket, "VolumeDriver.Remove", r#"{"Name":"lv"}"#);
    assert_eq!(r.status, 500);
    assert_eq!(d.get("/volumes/lv").status, 200);
    let r = call(&socket, "VolumeDriver.Nosuch", "{}");
    assert_eq!(r.status, 404);

    let r = call(&socket, "VolumeDriver.Remove", r#"{"Name":"gv1"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.get("/volumes/gv1").status, 404);
    // No reference left: disable works, and the socket goes with the plugin.
    let r = d.post(&format!("/plugins/{PLUGIN}/disable"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(eventually(std::time::Duration::from_secs(5), || !socket.exists()));
    assert_eq!(
        d.post(&format!("/plugins/{PLUGIN}/enable?timeout=30"))
            .status,
        200
    );
    assert!(eventually(std::time::Duration::from_secs(5), || socket.exists()));
}

/// Podman finds the plugin through `containers.conf` and drives it: create, ls, inspect, rm.
#[test]
fn podman_uses_a_berth_managed_volume_plugin() {
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!("podman is not installed (apt-get install podman): skipped");
        return;
    }
    let (d, id, socket) = daemon_with_enabled_plugin();
    let dir = short_tempdir("btp");
    let conf = dir.path().join("containers.conf");
    std::fs::write(
        &conf,
        format!(
            "[engine.volume_plugins]\n\"test/gw\" = \"{}\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let podman = |args: &[&str]| {
        let out = Command::new("podman")
            .env("CONTAINERS_CONF", &conf)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--runroot")
            .arg(dir.path().join("run"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "podman {args:?}: {}\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log()
        );
        text
    };
    podman(&[
        "volume", "create", "--driver", "test/gw", "-o", "k=v", "pv1",
    ]);
    assert_eq!(d.get("/volumes/pv1").json()["Driver"], "test/gw:latest");
    assert!(podman(&["volume", "ls", "-q"]).lines().any(|l| l == "pv1"));
    let inspect = podman(&["volume", "inspect", "pv1"]);
    let host = d
        .data_root
        .join("plugins")
        .join(&id)
        .join("propagated-mount/pv1");
    assert!(inspect.contains(r#""Driver": "test/gw""#), "{inspect}");

    podman(&["volume", "rm", "pv1"]);
    assert_eq!(d.get("/volumes/pv1").status, 404);
    assert!(!host.exists());
}
