//! `/volumes` over raw HTTP against a running berth: the `local` driver (create, list filters,
//! inspect, remove, prune, update), berth's mount extension (`POST /volumes/{name}/mount`), a
//! managed volume plugin (the project's test driver, enabled for real), legacy plugins on the
//! host (the test driver through a `.sock` and a `.spec` file, `rclone serve docker`, and the
//! Python `wolphin-driver` from PyPI). Runs as root (CI does).

mod common;
use common::*;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PLUGIN: &str = "test/driver:latest";
const ANONYMOUS: &str = "com.docker.volume.anonymous";

fn volumes_root(d: &Daemon) -> PathBuf {
    std::fs::canonicalize(d.data_root.join("volumes")).unwrap()
}

fn data_dir(d: &Daemon, name: &str) -> PathBuf {
    volumes_root(d).join(name).join("_data")
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---------------------------------------------------------------------------------------------
// The local driver

#[test]
fn local_create_answers_dockers_shape_and_is_idempotent() {
    let d = Daemon::start();
    let r = d.create_volume(
        "/v1.44",
        r#"{"Name":"v1","Driver":"local","Labels":{"a":"b"}}"#,
    );
    let v = created(&r);
    let created_at = v["CreatedAt"].as_str().unwrap().to_string();
    assert!(is_rfc3339_seconds(&created_at), "{created_at}");
    let mountpoint = data_dir(&d, "v1");
    // Field order and nulls are visible to clients: compare the bytes.
    let expected = format!(
        "{{\"CreatedAt\":\"{created_at}\",\"Driver\":\"local\",\"Labels\":{{\"a\":\"b\"}},\"Mountpoint\":\"{}\",\"Name\":\"v1\",\"Options\":null,\"Scope\":\"local\"}}\n",
        mountpoint.display()
    );
    assert_eq!(r.text(), expected);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(mountpoint.is_dir());

    // No labels, no options: both null. No driver: local.
    let r = d.create_volume("/v1.44", r#"{"Name":"v2"}"#);
    let v2 = created(&r);
    assert_eq!(v2["Labels"], Value::Null);
    assert_eq!(v2["Options"], Value::Null);
    assert_eq!(v2["Driver"], "local");
    assert!(r.text().contains(r#""Labels":null,"#), "{}", r.text());

    // Options are echoed as given.
    let v3 = created(&d.create_volume(
        "",
        r#"{"Name":"v3","DriverOpts":{"type":"tmpfs","device":"tmpfs","o":"size=1m"}}"#,
    ));
    assert_eq!(
        v3["Options"],
        json!({"device": "tmpfs", "o": "size=1m", "type": "tmpfs"})
    );

    // Same name again (a second later, other labels, no driver): the first record, 201.
    std::thread::sleep(Duration::from_millis(1100));
    let again = created(&d.create_volume("/v1.44", r#"{"Name":"v1","Labels":{"c":"d"}}"#));
    assert_eq!(
        again, v,
        "labels and creation time of the first create are kept"
    );
    let again = created(&d.create_volume(
        "/v1.41",
        r#"{"Name":"v1","Driver":"local","DriverOpts":{"type":"tmpfs","device":"tmpfs"}}"#,
    ));
    assert_eq!(again, v);
    let inspected = d.get("/v1.44/volumes/v1");
    assert_eq!(inspected.status, 200);
    assert_eq!(inspected.json(), v);
    assert_eq!(d.volume_names(""), vec!["v1", "v2", "v3"]);
}

#[test]
fn anonymous_volumes_get_a_random_name_and_the_label_from_api_1_42() {
    let d = Daemon::start();
    let current = created(&d.create_volume("/v1.44", "{}"));
    let name = current["Name"].as_str().unwrap();
    assert!(is_hex64(name), "{name}");
    assert_eq!(current["Labels"], json!({ ANONYMOUS: "" }));
    assert!(data_dir(&d, name).is_dir());

    // User labels are kept next to the anonymous one; an empty body is an empty request.
    let labelled = created(&d.create_volume("/v1.44", r#"{"Labels":{"x":"y"}}"#));
    assert_eq!(labelled["Labels"], json!({ ANONYMOUS: "", "x": "y" }));
    let r = d.request("POST", "/v1.44/volumes/create", &[], &[]);
    let empty_body = created(&r);
    assert!(is_hex64(empty_body["Name"].as_str().unwrap()));

    let old = created(&d.create_volume("/v1.41", r#"{"Name":""}"#));
    let old_name = old["Name"].as_str().unwrap();
    assert!(is_hex64(old_name), "{old_name}");
    assert_eq!(old["Labels"], Value::Null, "API 1.41 does not label");
    assert_ne!(old_name, name);

    let anonymous = d.volume_names(&format!(r#"{{"label":{{"{ANONYMOUS}":true}}}}"#));
    assert_eq!(anonymous.len(), 3);
    assert!(!anonymous.contains(&old_name.to_string()));
}

#[test]
fn create_rejects_bad_names_and_options_with_dockers_texts() {
    let d = Daemon::start();
    let cases = [
        (
            r#"{"Name":"x"}"#,
            "create x: volume name is too short, names should be at least two alphanumeric characters",
        ),
        (
            r#"{"Name":"a/b"}"#,
            "create a/b: \"a/b\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path",
        ),
        (
            r#"{"Name":"_ab"}"#,
            "create _ab: \"_ab\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path",
        ),
        (
            r#"{"Name":"x1","DriverOpts":{"foo":"bar"}}"#,
            "create x1: invalid option: \"foo\"",
        ),
        (
            r#"{"Name":"x2","DriverOpts":{"type":"tmpfs"}}"#,
            "create x2: missing required option: \"device\"",
        ),
        (
            r#"{"Name":"x3","DriverOpts":{"o":"size=1m","device":"tmpfs"}}"#,
            "create x3: missing required option: \"type\"",
        ),
    ];
    for (body, message) in cases {
        for prefix in ["/v1.41", "/v1.44"] {
            let r = d.create_volume(prefix, body);
            assert_eq!(
                (r.status, r.message()),
                (400, message.to_string()),
                "{body}"
            );
        }
    }
    // Nothing was recorded or left on disk.
    assert_eq!(d.volume_names(""), Vec::<String>::new());
    let left: Vec<_> = std::fs::read_dir(volumes_root(&d))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "metadata.db")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn list_filters_dangling_driver_label_and_name() {
    let d = Daemon::start();
    created(&d.create_volume("/v1.44", r#"{"Name":"alpha","Labels":{"team":"x"}}"#));
    created(&d.create_volume(
        "/v1.44",
        r#"{"Name":"beta","Labels":{"team":"y","tier":""}}"#,
    ));
    created(&d.create_volume("/v1.44", r#"{"Name":"gamma-beta"}"#));

    let all = d.volume_list("");
    assert_eq!(all["Warnings"], Value::Null);
    assert_eq!(all["Volumes"].as_array().unwrap().len(), 3);
    let all_names = vec!["alpha", "beta", "gamma-beta"];
    assert_eq!(d.volume_names(""), all_names);

    // Nothing mounted: everything dangles.
    assert_eq!(d.volume_names(r#"{"dangling":{"true":true}}"#), all_names);
    assert_eq!(d.volume_names(r#"{"dangling":{"1":true}}"#), all_names);
    assert!(d.volume_names(r#"{"dangling":{"false":true}}"#).is_empty());
    let mounted = d.post("/v1.44/volumes/beta/mount?id=c1");
    assert_eq!(mounted.status, 200, "{}", mounted.text());
    assert_eq!(
        d.volume_names(r#"{"dangling":{"false":true}}"#),
        vec!["beta"]
    );
    assert_eq!(
        d.volume_names(r#"{"dangling":{"true":true}}"#),
        vec!["alpha", "gamma-beta"]
    );

    assert_eq!(d.volume_names(r#"{"driver":{"local":true}}"#), all_names);
    assert!(d.volume_names(r#"{"driver":{"loc":true}}"#).is_empty());
    assert_eq!(
        d.volume_names(r#"{"label":{"team":true}}"#),
        vec!["alpha", "beta"]
    );
    assert_eq!(
        d.volume_names(r#"{"label":{"team=x":true}}"#),
        vec!["alpha"]
    );
    assert!(d.volume_names(r#"{"label":{"team=z":true}}"#).is_empty());
    assert_eq!(
        d.volume_names(r#"{"label":{"team":true,"tier":true}}"#),
        vec!["beta"],
        "label filters are ANDed"
    );
    assert_eq!(
        d.volume_names(r#"{"label":["team=y"]}"#),
        vec!["beta"],
        "legacy form"
    );
    assert_eq!(d.volume_names(r#"{"name":{"^a":true}}"#), vec!["alpha"]);
    assert_eq!(
        d.volume_names(r#"{"name":{"beta":true}}"#),
        vec!["beta", "gamma-beta"],
        "substring / unanchored regexp"
    );
    assert_eq!(
        d.volume_names(r#"{"name":{"^(alpha|beta)$":true}}"#),
        vec!["alpha", "beta"]
    );
    assert_eq!(
        d.volume_names(r#"{"name":{"alpha":true},"label":{"team":true}}"#),
        vec!["alpha"]
    );
    assert_eq!(
        d.volume_list(r#"{"name":{"nomatch":true}}"#)["Volumes"],
        json!([]),
        "an empty list is [] not null"
    );

    let bad = |version: &str, filters: &str| {
        let r = d.get(&format!(
            "/{version}/volumes?filters={}",
            url_escape(filters)
        ));
        (r.status, r.message())
    };
    assert_eq!(
        bad("v1.44", r#"{"foo":{"x":true}}"#),
        (400, "invalid filter 'foo'".to_string())
    );
    assert_eq!(
        bad("v1.41", r#"{"foo":{"x":true}}"#),
        (400, "Invalid filter 'foo'".to_string())
    );
    assert_eq!(
        bad("v1.44", r#"{"dangling":{"potato":true}}"#),
        (400, "invalid filter 'dangling=[potato]'".to_string())
    );
    assert_eq!(
        bad("v1.44", "nojson"),
        (
            400,
            "error reading volume filters: invalid filter".to_string()
        )
    );
}

#[test]
fn inspect_and_remove() {
    let d = Daemon::start();
    let v = created(&d.create_volume("/v1.44", r#"{"Name":"gone"}"#));
    let inspected = d.get("/v1.44/volumes/gone");
    assert_eq!(inspected.status, 200);
    assert_eq!(inspected.json(), v);
    assert!(
        !inspected.text().contains("Status"),
        "local volumes have no Status: {}",
        inspected.text()
    );
    // A volume may be called "create": GET inspects it.
    let r = d.get("/v1.44/volumes/create");
    r.assert_error(404, "get create: no such volume");

    let r = d.delete("/v1.44/volumes/gone");
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    assert!(!volumes_root(&d).join("gone").exists());
    let r = d.get("/v1.44/volumes/gone");
    r.assert_error(404, "get gone: no such volume");
    let r = d.delete("/v1.44/volumes/gone");
    r.assert_error(404, "get gone: no such volume");
    for force in ["1", "true"] {
        let r = d.delete(&format!("/v1.44/volumes/gone?force={force}"));
        assert_eq!(r.status, 204, "force on a missing volume: {}", r.text());
    }
    let r = d.delete("/v1.41/volumes/nosuch?force=0");
    assert_eq!(r.status, 404, "force=0 is false");
    assert!(d.volume_names("").is_empty());

    // A removed name can be created again.
    created(&d.create_volume("/v1.44", r#"{"Name":"gone"}"#));
    assert!(data_dir(&d, "gone").is_dir());
}

fn write_bytes(d: &Daemon, volume: &str, n: usize) {
    std::fs::write(data_dir(d, volume).join("payload"), vec![b'x'; n]).unwrap();
}

/// `POST /<version>/volumes/prune` with `filters` (JSON; none when empty).
fn prune_request(d: &Daemon, version: &str, filters: &str) -> Response {
    let path = if filters.is_empty() {
        format!("/{version}/volumes/prune")
    } else {
        format!("/{version}/volumes/prune?filters={}", url_escape(filters))
    };
    d.post(&path)
}

/// The prune report (asserted 200).
fn prune(d: &Daemon, version: &str, filters: &str) -> Value {
    let r = prune_request(d, version, filters);
    r.expect(200, "prune");
    r.json()
}

#[test]
fn prune_follows_the_api_version_labels_and_options() {
    let d = Daemon::start();
    created(&d.create_volume("/v1.44", r#"{"Name":"named"}"#));
    let anon = created(&d.create_volume("/v1.44", "{}"))["Name"]
        .as_str()
        .unwrap()
        .to_string();
    created(&d.create_volume(
        "/v1.44",
        r#"{"Name":"withopts","DriverOpts":{"type":"tmpfs","device":"tmpfs"}}"#,
    ));
    created(&d.create_volume("/v1.44", r#"{"Name":"kept","Labels":{"keep":"1"}}"#));
    created(&d.create_volume("/v1.44", r#"{"Name":"busy"}"#));
    assert_eq!(d.post("/v1.44/volumes/busy/mount?id=user").status, 200);
    write_bytes(&d, "named", 1000);
    write_bytes(&d, &anon, 123);
    std::fs::create_dir(data_dir(&d, &anon).join("sub")).unwrap();
    std::fs::write(data_dir(&d, &anon).join("sub/more"), vec![b'y'; 77]).unwrap();

    // Current API: only anonymous volumes.
    let report = prune(&d, "v1.44", "");
    assert_eq!(report["VolumesDeleted"], json!([anon.clone()]));
    assert_eq!(report["SpaceReclaimed"], 200);
    assert!(!volumes_root(&d).join(&anon).exists());

    // all=true with label!: named ones too, but not the kept, mounted or optioned ones.
    let report = prune(
        &d,
        "v1.44",
        r#"{"all":{"true":true},"label!":{"keep":true}}"#,
    );
    assert_eq!(report["VolumesDeleted"], json!(["named"]));
    assert_eq!(report["SpaceReclaimed"], 1000);

    // API 1.41 prunes every unused local volume without options; label filters apply.
    let report = prune(&d, "v1.41", r#"{"label":{"keep=2":true}}"#);
    assert_eq!(report, json!({"VolumesDeleted": [], "SpaceReclaimed": 0}));
    let report = prune(&d, "v1.41", r#"{"label":{"keep=1":true}}"#);
    assert_eq!(report["VolumesDeleted"], json!(["kept"]));
    let report = prune(&d, "v1.41", "");
    assert_eq!(report, json!({"VolumesDeleted": [], "SpaceReclaimed": 0}));
    assert_eq!(d.volume_names(""), vec!["busy", "withopts"]);

    // Unmounted, it goes too; volumes with options never do.
    assert_eq!(d.post("/v1.44/volumes/busy/unmount?id=user").status, 204);
    let report = prune(&d, "v1.44", r#"{"all":{"1":true}}"#);
    assert_eq!(report["VolumesDeleted"], json!(["busy"]));
    assert_eq!(d.volume_names(""), vec!["withopts"]);

    let r = prune_request(&d, "v1.44", r#"{"all":{"true":true,"false":true}}"#);
    r.assert_error(
        400,
        "invalid filter 'all=[false true]': only one value is expected",
    );
    let r = prune_request(&d, "v1.44", r#"{"dangling":{"true":true}}"#);
    r.assert_error(400, "invalid filter 'dangling'");
}

#[test]
fn volume_update_is_for_swarm_cluster_volumes_only() {
    let d = Daemon::start();
    created(&d.create_volume("/v1.44", r#"{"Name":"x1"}"#));
    let r = d.request("PUT", "/v1.44/volumes/x1?version=1", &[], &[]);
    r.assert_error(
        503,
        "volume update only valid for cluster volumes, but swarm is unavailable",
    );
    let r = d.request("PUT", "/v1.41/volumes/x1?version=1", &[], &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.message().ends_with(" requires minimum API version 1.42"),
        "{}",
        r.message()
    );
    assert!(r.message().starts_with("PUT /volumes/"), "{}", r.message());
}

/// moby's `WithMinimumAPIVersion` names the route pattern, not the request path:
/// `route.Method() + " " + route.Path()` = `PUT /volumes/{name:.*}`.
#[test]
fn volume_update_min_version_error_names_the_route_as_moby_does() {
    let d = Daemon::start();
    let r = d.request("PUT", "/v1.41/volumes/x1?version=1", &[], &[]);
    r.assert_error(
        400,
        "PUT /volumes/{name:.*} requires minimum API version 1.42",
    );
}

/// moby `putVolumesUpdate` checks `cluster.IsManager()` before it parses `version`.
#[test]
fn volume_update_without_swarm_is_503_whatever_the_version_parameter() {
    let d = Daemon::start();
    for path in ["/v1.44/volumes/x1", "/v1.44/volumes/x1?version=abc"] {
        let r = d.request("PUT", path, &[], &[]);
        assert_eq!(
            (r.status, r.message()),
            (
                503,
                "volume update only valid for cluster volumes, but swarm is unavailable"
                    .to_string()
            ),
            "{path}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The mount extension

#[test]
fn mount_extension_counts_users_per_id() {
    let d = Daemon::start();
    created(&d.create_volume("/v1.44", r#"{"Name":"used"}"#));
    let r = d.post("/v1.44/volumes/used/mount?id=a");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"Mountpoint": data_dir(&d, "used").display().to_string()})
    );
    assert_eq!(r.header("Content-Type"), Some("application/json"));

    let r = d.delete("/v1.44/volumes/used");
    r.assert_error(409, "remove used: volume is in use - [a]");
    let r = d.delete("/v1.44/volumes/used?force=1");
    assert_eq!(r.status, 409, "force does not override use: {}", r.text());
    assert_eq!(prune(&d, "v1.41", "")["VolumesDeleted"], json!([]));
    assert_eq!(
        d.volume_names(r#"{"dangling":{"false":true}}"#),
        vec!["used"]
    );

    // A second user, and the same user again (counted once).
    assert_eq!(d.post("/v1.44/volumes/used/mount?id=b").status, 200);
    assert_eq!(d.post("/v1.44/volumes/used/mount?id=a").status, 200);
    let r = d.delete("/v1.44/volumes/used");
    r.assert_error(409, "remove used: volume is in use - [a, b]");

    let r = d.post("/v1.44/volumes/used/unmount?id=zzz");
    r.assert_error(409, "unmount used: not mounted by zzz");
    let r = d.post("/v1.44/volumes/used/unmount?id=a");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(d.post("/v1.44/volumes/used/unmount?id=a").status, 409);
    assert_eq!(
        d.delete("/v1.44/volumes/used").status,
        409,
        "b still uses it"
    );
    assert_eq!(d.post("/v1.44/volumes/used/unmount?id=b").status, 204);
    assert_eq!(
        d.volume_names(r#"{"dangling":{"true":true}}"#),
        vec!["used"]
    );
    assert_eq!(d.delete("/v1.44/volumes/used").status, 204);

    let r = d.post("/v1.44/volumes/used/mount?id=a");
    r.assert_error(404, "get used: no such volume");
    created(&d.create_volume("/v1.44", r#"{"Name":"other"}"#));
    let r = d.post("/v1.44/volumes/other/mount");
    assert_eq!(r.status, 400, "the caller id is required: {}", r.text());
}

#[test]
fn a_tmpfs_volume_is_mounted_on_first_use_and_unmounted_after_the_last() {
    let d = Daemon::start();
    created(&d.create_volume(
        "/v1.44",
        r#"{"Name":"tv","DriverOpts":{"type":"tmpfs","device":"tmpfs","o":"size=1m"}}"#,
    ));
    let data = data_dir(&d, "tv");
    assert!(data.is_dir());
    assert_eq!(mount_fstype(&data), None, "not mounted before use");

    let r = d.post("/v1.44/volumes/tv/mount?id=a");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["Mountpoint"], data.display().to_string());
    assert_eq!(mount_fstype(&data).as_deref(), Some("tmpfs"));
    std::fs::write(data.join("on-tmpfs"), b"hello").unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some(data.to_str().unwrap()))
        .unwrap();
    assert!(line.contains("size=1024k"), "{line}");

    let r = d.post("/v1.44/volumes/tv/mount?id=b");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        mount_count(&data),
        1,
        "the second user does not mount again"
    );
    assert_eq!(d.post("/v1.44/volumes/tv/unmount?id=a").status, 204);
    assert_eq!(
        mount_fstype(&data).as_deref(),
        Some("tmpfs"),
        "b still uses it"
    );
    assert!(data.join("on-tmpfs").exists());
    let r = d.delete("/v1.44/volumes/tv");
    r.assert_error(409, "remove tv: volume is in use - [b]");

    assert_eq!(d.post("/v1.44/volumes/tv/unmount?id=b").status, 204);
    assert_eq!(mount_fstype(&data), None, "unmounted after the last user");
    assert!(
        !data.join("on-tmpfs").exists(),
        "the file lived on the tmpfs"
    );

    // Again: mount, and remove after unmount.
    assert_eq!(d.post("/v1.44/volumes/tv/mount?id=c").status, 200);
    assert_eq!(mount_fstype(&data).as_deref(), Some("tmpfs"));
    assert_eq!(d.post("/v1.44/volumes/tv/unmount?id=c").status, 204);
    assert_eq!(d.delete("/v1.44/volumes/tv").status, 204);
    assert!(mounts_under(&volumes_root(&d)).is_empty());
    assert!(!volumes_root(&d).join("tv").exists());
}

// ---------------------------------------------------------------------------------------------
// A managed volume plugin

/// A daemon (with an empty legacy plugin directory) and the enabled test driver plugin.
fn managed_daemon() -> (Daemon, String) {
    // A legacy plugin directory that does not exist: nothing on the host is discovered.
    let d = Daemon::start_with(&[
        "--plugin-start-timeout",
        "10",
        "--legacy-plugin-dir",
        "/nonexistent/berth-test-legacy-plugins",
    ]);
    let id = d.create_test_plugin(PLUGIN, "", &[]);
    let r = d.post(&format!("/v1.41/plugins/{PLUGIN}/enable?timeout=30"));
    assert_eq!(r.status, 200, "{}", r.text());
    (d, id)
}

fn propagated(d: &Daemon, id: &str) -> PathBuf {
    d.data_root
        .join("plugins")
        .join(id)
        .join("propagated-mount")
}

fn disable(d: &Daemon) -> Response {
    d.post(&format!("/v1.41/plugins/{PLUGIN}/disable"))
}

#[test]
fn managed_plugin_volumes_and_the_plugin_in_use() {
    let (d, id) = managed_daemon();
    let host = propagated(&d, &id);

    let v = created(&d.create_volume(
        "/v1.44",
        &format!(r#"{{"Name":"pv1","Driver":"{PLUGIN}","Labels":{{"l":"1"}}}}"#),
    ));
    assert_eq!(v["Driver"], PLUGIN);
    assert_eq!(v["Name"], "pv1");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["Labels"], json!({"l": "1"}));
    // dockerd's create answer carries no mountpoint for plugin volumes (no Path call).
    assert_eq!(v["Mountpoint"], "");
    assert!(
        host.join("pv1").is_dir(),
        "the plugin made it under its propagated mount"
    );

    let list = d.volume_list("");
    let listed = find_volume(&list, "pv1").expect("listed");
    assert_eq!(listed["Driver"], PLUGIN);
    assert_eq!(listed["Mountpoint"], host.join("pv1").display().to_string());
    assert_eq!(listed["Labels"], json!({"l": "1"}));
    assert_eq!(list["Warnings"], Value::Null);
    assert_eq!(
        d.volume_names(&format!(r#"{{"driver":{{"{PLUGIN}":true}}}}"#)),
        vec!["pv1"]
    );
    assert!(
        d.volume_names(r#"{"driver":{"test/driver":true}}"#)
            .is_empty(),
        "the driver filter is exact"
    );

    let inspected = d.inspect_volume("pv1");
    assert_eq!(
        inspected["Mountpoint"], "/data/pv1",
        "inspect shows the plugin's own path"
    );
    assert_eq!(inspected["Status"], json!({"Mounts": 0}));
    assert!(is_rfc3339_seconds(inspected["CreatedAt"].as_str().unwrap()));
    assert_eq!(inspected["Driver"], PLUGIN);

    // The plugin is in use while it has volumes.
    let r = disable(&d);
    r.assert_error(409, &format!("plugin {PLUGIN} is in use"));
    let r = d.delete(&format!("/v1.41/plugins/{PLUGIN}"));
    r.assert_error(409, &format!("plugin {PLUGIN} is in use"));

    // Mount through the extension: a host path that exists.
    let r = d.post("/v1.44/volumes/pv1/mount?id=m1");
    assert_eq!(r.status, 200, "{}", r.text());
    let mountpoint = PathBuf::from(r.json()["Mountpoint"].as_str().unwrap());
    assert_eq!(mountpoint, host.join("pv1"));
    assert!(mountpoint.is_dir());
    std::fs::write(mountpoint.join("from-host"), b"1").unwrap();
    assert_eq!(d.get("/v1.44/volumes/pv1").json()["Status"]["Mounts"], 1);
    let r = d.delete("/v1.44/volumes/pv1");
    r.assert_error(409, "remove pv1: volume is in use - [m1]");
    assert_eq!(d.post("/v1.44/volumes/pv1/unmount?id=m1").status, 204);
    assert_eq!(d.get("/v1.44/volumes/pv1").json()["Status"]["Mounts"], 0);

    let r = d.delete("/v1.44/volumes/pv1");
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(!host.join("pv1").exists());
    assert!(d.volume_names("").is_empty());
    let r = disable(&d);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn plugin_references_survive_a_daemon_restart() {
    let (mut d, id) = managed_daemon();
    created(&d.create_volume(
        "/v1.44",
        &format!(r#"{{"Name":"kept","Driver":"{PLUGIN}"}}"#),
    ));
    d.stop();
    d.spawn();
    // dockerd forgets these references (moby issue 29544); berth recounts them from the store.
    let r = disable(&d);
    r.assert_error(409, &format!("plugin {PLUGIN} is in use"));
    let listed = d.volume_list("");
    assert_eq!(
        find_volume(&listed, "kept").expect("listed after restart")["Mountpoint"],
        propagated(&d, &id).join("kept").display().to_string()
    );
    assert_eq!(d.get("/v1.44/volumes/kept").status, 200);

    // Also after a crash.
    d.kill9();
    d.spawn();
    assert_eq!(disable(&d).status, 409);
    assert_eq!(d.delete("/v1.44/volumes/kept").status, 204);
    let r = disable(&d);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_disabled_plugin_driver_refuses_create_and_hides_its_volumes() {
    let (d, _id) = managed_daemon();
    created(&d.create_volume(
        "/v1.44",
        &format!(r#"{{"Name":"before","Driver":"{PLUGIN}"}}"#),
    ));
    let r = d.post(&format!("/v1.41/plugins/{PLUGIN}/disable?force=1"));
    assert_eq!(r.status, 200, "{}", r.text());

    let started = Instant::now();
    let r = d.create_volume(
        "/v1.44",
        &format!(r#"{{"Name":"after","Driver":"{PLUGIN}"}}"#),
    );
    r.assert_error(409, &format!(
                "create after: error looking up volume plugin {PLUGIN}: plugin {PLUGIN} found but disabled"
            ));
    assert!(started.elapsed() < Duration::from_secs(2));

    // As with dockerd, the volumes of a disabled driver are not listed (it is not asked).
    let list = d.volume_list("");
    assert!(find_volume(&list, "before").is_none(), "{list}");
    assert!(find_volume(&list, "after").is_none());
    assert!(d.volume_names("").is_empty());
    let r = d.get("/v1.44/volumes/before");
    r.assert_error(409, &format!(
                "get before: error while checking if volume \"before\" exists in driver \"{PLUGIN}\": error looking up volume plugin {PLUGIN}: plugin {PLUGIN} found but disabled"
            ));

    // Enabled again, everything works as before.
    let r = d.post(&format!("/v1.41/plugins/{PLUGIN}/enable?timeout=30"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.get("/v1.44/volumes/before").status, 200);
    assert_eq!(d.delete("/v1.44/volumes/before").status, 204);
}

/// moby records a managed plugin's volumes under the plugin's full name (the adapter's
/// `p.Name()`), whatever reference the client used: `-d test/driver` gives Driver
/// `test/driver:latest` in create, inspect and list.
#[test]
fn a_managed_driver_given_without_tag_is_recorded_under_the_plugin_name() {
    let (d, id) = managed_daemon();
    let v = created(&d.create_volume("/v1.44", r#"{"Name":"short","Driver":"test/driver"}"#));
    assert_eq!(v["Driver"], PLUGIN);
    assert_eq!(d.get("/v1.44/volumes/short").json()["Driver"], PLUGIN);
    let list = d.volume_list("");
    let listed = find_volume(&list, "short").expect("listed");
    assert_eq!(listed["Driver"], PLUGIN);
    assert_eq!(
        listed["Mountpoint"],
        propagated(&d, &id).join("short").display().to_string()
    );
    // Same volume, full name: the existing record, not a conflict.
    let again = d.create_volume(
        "/v1.44",
        &format!(r#"{{"Name":"short","Driver":"{PLUGIN}"}}"#),
    );
    assert_eq!(again.status, 201, "{}", again.text());
    // A plugin ID prefix resolves to the plugin too (moby's store.Get), and records its name.
    let v = created(&d.create_volume(
        "/v1.44",
        &format!(r#"{{"Name":"byid","Driver":"{}"}}"#, &id[..12]),
    ));
    assert_eq!(v["Driver"], PLUGIN);
    assert_eq!(
        d.volume_names(&format!(r#"{{"driver":{{"{PLUGIN}":true}}}}"#)),
        vec!["byid", "short"]
    );
}

// ---------------------------------------------------------------------------------------------
// Legacy plugins on the host

/// create / list / inspect / mount / rm of a volume of legacy driver `driver` whose volumes
/// live in `root`.
fn legacy_round_trip(d: &Daemon, driver: &str, root: &Path) {
    let v = created(&d.create_volume(
        "/v1.44",
        &format!(r#"{{"Name":"lv1","Driver":"{driver}","DriverOpts":{{"k":"v"}}}}"#),
    ));
    assert_eq!(v["Driver"], driver);
    assert_eq!(
        v["Mountpoint"], "",
        "no VolumeDriver.Path on create, as with dockerd"
    );
    assert_eq!(v["Options"], json!({"k": "v"}));
    assert_eq!(v["Scope"], "local");
    assert!(root.join("lv1").is_dir());

    // A volume the plugin has but berth never created is listed too.
    std::fs::create_dir(root.join("outside")).unwrap();
    let list = d.volume_list("");
    assert_eq!(list["Warnings"], Value::Null);
    let listed = find_volume(&list, "lv1").expect("lv1 listed");
    assert_eq!(listed["Driver"], driver);
    assert_eq!(listed["Mountpoint"], root.join("lv1").display().to_string());
    assert_eq!(listed["Options"], json!({"k": "v"}));
    let outside = find_volume(&list, "outside").expect("the plugin's own volume is listed");
    assert_eq!(outside["Driver"], driver);
    assert_eq!(outside["CreatedAt"], "0001-01-01T00:00:00Z");

    let inspected = d.inspect_volume("lv1");
    assert_eq!(
        inspected["Mountpoint"],
        root.join("lv1").display().to_string()
    );
    assert_eq!(
        inspected["Status"],
        json!({"Mounts": 0, "Opts": {"k": "v"}})
    );

    let r = d.post("/v1.44/volumes/lv1/mount?id=x");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["Mountpoint"],
        root.join("lv1").display().to_string()
    );
    assert_eq!(d.get("/v1.44/volumes/lv1").json()["Status"]["Mounts"], 1);
    assert_eq!(d.post("/v1.44/volumes/lv1/unmount?id=x").status, 204);

    let r = d.delete("/v1.44/volumes/lv1");
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(!root.join("lv1").exists(), "the plugin removed it");
    assert_eq!(d.volume_names(""), vec!["outside"]);
    let r = d.get("/v1.44/volumes/lv1");
    assert_eq!(r.status, 404);
}

#[test]
fn legacy_test_plugin_through_a_socket_in_the_plugin_directory() {
    let legacy = LegacyPlugins::new();
    let root = legacy.path("root");
    let _plugin = host_test_plugin(&legacy.plugins().join("tp.sock"), &root, &[]);
    let d = legacy.daemon(&[]);
    legacy_round_trip(&d, "tp", &root);

    // The plugin's errors come back with moby's prefixes, and nothing is recorded.
    let r = d.create_volume(
        "/v1.44",
        r#"{"Name":"bad","Driver":"tp","DriverOpts":{"error":"no space on the moon"}}"#,
    );
    r.assert_error(500, "create bad: VolumeDriver.Create: no space on the moon");
    assert_eq!(d.get("/v1.44/volumes/bad").status, 404);
    assert!(!d.volume_names("").contains(&"bad".to_string()));

    // A name owned by one driver cannot be taken by another.
    created(&d.create_volume("/v1.44", r#"{"Name":"mine","Driver":"tp"}"#));
    let r = d.create_volume("/v1.44", r#"{"Name":"mine","Driver":"local"}"#);
    r.assert_error(
        409,
        "create mine: driver 'tp' already has volume 'mine': volume name must be unique",
    );

    // Prune never touches plugin volumes.
    let r = prune(&d, "v1.44", r#"{"all":{"true":true}}"#);
    assert_eq!(r["VolumesDeleted"], json!([]));

    // The plugin lost it behind berth's back: as with dockerd, the volume reads as missing
    // (rm and inspect say `no such volume`) but its record keeps the name until `rm -f`.
    std::fs::remove_dir(root.join("mine")).unwrap();
    let r = d.delete("/v1.44/volumes/mine");
    r.assert_error(404, "get mine: no such volume");
    assert!(!d.volume_names("").contains(&"mine".to_string()));
    let r = d.get("/v1.44/volumes/mine");
    r.assert_error(404, "get mine: no such volume");
    let r = d.delete("/v1.44/volumes/mine?force=1");
    assert_eq!(r.status, 204, "{}", r.text());
    let r = d.create_volume("/v1.44", r#"{"Name":"mine","Driver":"local"}"#);
    assert_eq!(
        r.status,
        201,
        "a driver that lost the volume gives up the name: {}",
        r.text()
    );
    assert_eq!(d.delete("/v1.44/volumes/mine").status, 204);
    created(&d.create_volume("/v1.44", r#"{"Name":"mine","Driver":"tp"}"#));
    std::fs::remove_dir(root.join("mine")).unwrap();
    // Forced: the missing volume is simply forgotten (dockerd prints the name, exit 0).
    let r = d.delete("/v1.44/volumes/mine?force=1");
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(!d.volume_names("").contains(&"mine".to_string()));
    assert_eq!(d.get("/v1.44/volumes/mine").status, 404);
    created(&d.create_volume("/v1.44", r#"{"Name":"mine","Driver":"local"}"#));
}

#[test]
fn legacy_test_plugin_through_a_spec_file() {
    let legacy = LegacyPlugins::new();
    let root = legacy.path("root");
    let socket = legacy.path("elsewhere/speccy.sock");
    let _plugin = host_test_plugin(&socket, &root, &[]);
    std::fs::write(
        legacy.plugins().join("speccy.spec"),
        format!("unix://{}\n", socket.display()),
    )
    .unwrap();
    let d = legacy.daemon(&[]);
    legacy_round_trip(&d, "speccy", &root);
}

#[test]
fn an_unknown_driver_fails_at_once() {
    let legacy = LegacyPlugins::new();
    let d = legacy.daemon(&[]);
    for version in ["v1.41", "v1.44"] {
        let started = Instant::now();
        let r = d.create_volume(&format!("/{version}"), r#"{"Name":"v","Driver":"nosuch"}"#);
        let took = started.elapsed();
        r.assert_error(
            404,
            "create v: error looking up volume plugin nosuch: plugin \"nosuch\" not found",
        );
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
    assert!(d.volume_names("").is_empty());
}

#[test]
fn rclone_serve_docker_as_a_legacy_plugin() {
    let legacy = LegacyPlugins::new();
    let base = legacy.path("mnt");
    let remote = legacy.path("remote");
    std::fs::create_dir_all(&remote).unwrap();
    let _rclone = rclone_serve_docker(&legacy.plugins().join("rclone.sock"), legacy.dir.path());
    let d = legacy.daemon(&[]);

    let remote_path = remote.display().to_string();
    let v1 = created(&d.create_volume(
        "/v1.44",
        &format!(
            r#"{{"Name":"rc1","Driver":"rclone","DriverOpts":{{"type":"local","path":"{remote_path}"}}}}"#
        ),
    ));
    assert_eq!(v1["Driver"], "rclone");
    assert_eq!(
        v1["Mountpoint"], "",
        "no VolumeDriver.Path on create, as with dockerd"
    );
    assert_eq!(v1["Options"], json!({"path": remote_path, "type": "local"}));
    let v2 = created(&d.create_volume(
        "/v1.41",
        &format!(
            r#"{{"Name":"rc2","Driver":"rclone","DriverOpts":{{"remote":":local:{remote_path}"}},"Labels":{{"via":"remote"}}}}"#
        ),
    ));
    assert_eq!(v2["Labels"], json!({"via": "remote"}));

    let list = d.volume_list(r#"{"driver":{"rclone":true}}"#);
    assert_eq!(list["Warnings"], Value::Null);
    assert_eq!(
        d.volume_names(r#"{"driver":{"rclone":true}}"#),
        vec!["rc1", "rc2"]
    );
    assert_eq!(
        find_volume(&list, "rc2").unwrap()["Mountpoint"],
        base.join("rc2").display().to_string()
    );
    assert_eq!(
        find_volume(&list, "rc2").unwrap()["Labels"],
        json!({"via": "remote"})
    );

    let inspected = d.inspect_volume("rc1");
    assert_eq!(
        inspected["Mountpoint"],
        base.join("rc1").display().to_string()
    );
    assert_eq!(inspected["Status"], json!({"Mounts": []}));
    assert!(is_rfc3339_seconds(inspected["CreatedAt"].as_str().unwrap()));

    let r = d.create_volume(
        "/v1.44",
        r#"{"Name":"rc3","Driver":"rclone","DriverOpts":{"bogus":"1"}}"#,
    );
    r.assert_error(
        500,
        "create rc3: VolumeDriver.Create: unsupported backend option \"bogus\"",
    );
    let r = d.create_volume("/v1.44", r#"{"Name":"rc4","Driver":"rclone"}"#);
    r.assert_error(
        500,
        "create rc4: VolumeDriver.Create: volume must have either remote or backend type",
    );

    for name in ["rc1", "rc2"] {
        let r = d.delete(&format!("/v1.44/volumes/{name}"));
        assert_eq!(r.status, 204, "{name}: {}", r.text());
    }
    assert!(d.volume_names("").is_empty());
    let r = d.get("/v1.44/volumes/rc1");
    assert_eq!(r.status, 404);
}

/// A venv with `wolphin-driver` 0.0.4 (PyPI: "Docker custom base directory volume driver",
/// Flask under gunicorn): reused when present, else made with pip. `None` (and the test
/// says why) when that is impossible here.
fn wolphin_venv() -> Option<PathBuf> {
    let venv = PathBuf::from("/tmp/berth-test-wolphin-venv");
    let ready = |v: &Path| {
        v.join("bin/gunicorn").exists()
            && Command::new(v.join("bin/python3"))
                .args(["-c", "import wolphin_driver.server"])
                .env("BASE_DIR", "/tmp")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    };
    if ready(&venv) {
        return Some(venv);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("timeout")
            .arg("300")
            .arg(venv.join("bin/pip"))
            .args(["install", "-q", "wolphin-driver==0.0.4"])
            .status()
            .is_ok_and(|s| s.success());
    if made && ready(&venv) {
        Some(venv)
    } else {
        None
    }
}

#[test]
fn wolphin_driver_python_plugin_as_a_legacy_plugin() {
    let Some(venv) = wolphin_venv() else {
        eprintln!("SKIPPED: could not install wolphin-driver 0.0.4 from PyPI into a venv");
        return;
    };
    let legacy = LegacyPlugins::new();
    let base = legacy.path("base");
    std::fs::create_dir_all(&base).unwrap();
    let socket = legacy.plugins().join("wolphin.sock");
    // wolphin-driver's own entry point binds /run/docker/plugins/<name>.sock; run its WSGI app
    // under gunicorn on our socket instead (what the entry point execs, with another --bind).
    let mut cmd = Command::new(venv.join("bin/gunicorn"));
    cmd.arg(format!("--bind=unix:{}", socket.display()))
        .args(["--workers=1", "wolphin_driver.wsgi:app"])
        .env("BASE_DIR", &base)
        .current_dir(legacy.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _wolphin = HostProcess::spawn("gunicorn wolphin_driver", &mut cmd);
    wait_for_socket(&socket);
    let d = legacy.daemon(&[]);

    let v = created(&d.create_volume(
        "/v1.44",
        r#"{"Name":"wv1","Driver":"wolphin","Labels":{"py":"yes"}}"#,
    ));
    assert_eq!(v["Driver"], "wolphin");
    assert_eq!(v["Scope"], "global", "wolphin-driver reports global scope");
    // Its VolumeDriver.Path handler crashes (500, an HTML page): no mountpoint, as in moby.
    assert_eq!(v["Mountpoint"], "");
    assert!(base.join("wv1").is_dir());

    let list = d.volume_list("");
    assert_eq!(list["Warnings"], Value::Null);
    let listed = find_volume(&list, "wv1").expect("listed");
    assert_eq!(listed["Driver"], "wolphin");
    assert_eq!(
        listed["Mountpoint"],
        base.join("wv1").display().to_string(),
        "its List says MountPoint (any case is fine for Go's decoder)"
    );
    assert_eq!(listed["Scope"], "global");
    assert_eq!(listed["Labels"], json!({"py": "yes"}));

    let inspected = d.inspect_volume("wv1");
    assert_eq!(
        inspected["Mountpoint"],
        base.join("wv1").display().to_string()
    );
    assert_eq!(inspected["Status"], json!({"kitty": "cat", "meow": "mix"}));

    let r = d.post("/v1.44/volumes/wv1/mount?id=c1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["Mountpoint"],
        base.join("wv1").display().to_string()
    );
    assert!(
        base.join("__wv1").join("c1").exists(),
        "wolphin tracks the mount"
    );
    assert_eq!(d.post("/v1.44/volumes/wv1/unmount?id=c1").status, 204);
    assert!(!base.join("__wv1").join("c1").exists());

    let r = d.delete("/v1.44/volumes/wv1");
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(!base.join("wv1").exists());
    let kept: Vec<String> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        kept.iter().any(|n| n.starts_with("_wv1_")),
        "SAFE_DELETION renames: {kept:?}"
    );
    assert!(d.volume_names("").is_empty());
}

/// The adapter of an activated legacy plugin is kept: its capabilities are asked once, not on
/// every list or create.
#[test]
fn legacy_plugin_capabilities_are_asked_once() {
    let legacy = LegacyPlugins::new();
    let calls = legacy.path("calls.log");
    let _plugin = host_test_plugin(
        &legacy.plugins().join("capy.sock"),
        &legacy.path("root"),
        &[("TEST_CALL_LOG", calls.to_str().unwrap())],
    );
    let d = legacy.daemon(&[]);
    for i in 0..3 {
        created(&d.create_volume("/v1.44", &format!(r#"{{"Name":"c{i}","Driver":"capy"}}"#)));
        assert!(d.volume_names("").contains(&format!("c{i}")));
    }
    let log = std::fs::read_to_string(&calls).unwrap();
    let asked = |method: &str| log.lines().filter(|l| l.starts_with(method)).count();
    assert_eq!(asked("VolumeDriver.Create "), 3, "{log}");
    assert!(asked("VolumeDriver.List ") >= 3, "{log}");
    assert_eq!(asked("VolumeDriver.Capabilities "), 1, "{log}");
}

#[test]
fn labels_and_options_are_kept_as_the_client_sent_them_across_a_restart() {
    let mut d = Daemon::start();
    // CLI 20.10 sends empty maps, CLI 28.x leaves them out, docker-py sends `null`.
    for (name, maps) in [
        ("sent-empty", r#","Labels":{},"DriverOpts":{}"#),
        ("left-out", ""),
        ("sent-null", r#","Labels":null,"DriverOpts":null"#),
    ] {
        created(&d.create_volume("/v1.41", &format!(r#"{{"Name":"{name}"{maps}}}"#)));
    }
    let shown = |d: &Daemon| {
        ["sent-empty", "left-out", "sent-null"].map(|name| {
            let v = d.get(&format!("/v1.41/volumes/{name}")).json();
            (v["Labels"].clone(), v["Options"].clone())
        })
    };
    let expected = [
        (json!({}), json!({})),
        (Value::Null, Value::Null),
        (Value::Null, Value::Null),
    ];
    assert_eq!(shown(&d), expected);
    d.kill9();
    d.spawn();
    assert_eq!(shown(&d), expected);
    let listed = d.volume_list("");
    assert_eq!(
        find_volume(&listed, "sent-empty").unwrap()["Labels"],
        json!({})
    );
    assert_eq!(
        find_volume(&listed, "left-out").unwrap()["Labels"],
        Value::Null
    );
}
