//! `POST /plugins/create`, `GET /plugins`, inspect, set and remove over raw HTTP against a
//! running berth, including crash safety of the store.

mod common;
use common::{plugin_context, url_escape, Daemon, VOLUME_PLUGIN_CONFIG};
use std::path::Path;

fn plugin_dirs(data_root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_root.join("plugins"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "storage" && n != "tmp")
        .collect();
    names.sort();
    names
}

fn blob_count(data_root: &Path) -> usize {
    std::fs::read_dir(data_root.join("plugins/storage/blobs/sha256"))
        .unwrap()
        .count()
}

fn leftovers(data_root: &Path) -> usize {
    std::fs::read_dir(data_root.join("plugins/tmp"))
        .unwrap()
        .count()
        + std::fs::read_dir(data_root.join("plugins/storage/ingest"))
            .unwrap()
            .count()
}

#[test]
fn create_then_inspect_list_set_and_remove() {
    let d = Daemon::start();
    let context = plugin_context(VOLUME_PLUGIN_CONFIG, &[("bin/plugin", b"#!/bin/sh\n")]);
    let r = d.create_plugin("myorg/sample:1.0", &context);
    assert_eq!(r.status, 204, "{}", r.text());

    let plugin = d.get("/v1.41/plugins/myorg/sample:1.0/json").json();
    let id = plugin["Id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);
    assert_eq!(plugin["Name"], "myorg/sample:1.0");
    assert_eq!(plugin["PluginReference"], "myorg/sample:1.0");
    assert_eq!(plugin["Enabled"], false);
    assert_eq!(
        plugin["Config"]["Entrypoint"],
        serde_json::json!(["/bin/plugin", "--serve"])
    );
    assert_eq!(plugin["Config"]["rootfs"]["type"], "layers");
    assert_eq!(
        plugin["Settings"]["Env"],
        serde_json::json!(["DEBUG=0", "LOCKED=1"])
    );
    assert_eq!(plugin["Settings"]["Args"], serde_json::json!(["--a"]));
    // Field order is user-visible: the CLI prints the server's bytes re-indented.
    let raw = d.get("/v1.41/plugins/myorg/sample:1.0/json").text();
    assert!(raw.starts_with("{\"Config\":{\"Args\":"), "{raw}");
    let middle = format!(
        "}},\"Enabled\":false,\"Id\":\"{id}\",\"Name\":\"myorg/sample:1.0\",\"PluginReference\":\"myorg/sample:1.0\",\"Settings\":{{\"Args\":"
    );
    assert!(raw.contains(&middle), "{raw}");
    assert!(d
        .data_root
        .join("plugins")
        .join(&id)
        .join("rootfs/bin/plugin")
        .is_file());

    // Lookup by full ID, unique prefix, and untagged name of a :latest plugin.
    assert_eq!(
        d.get(&format!("/v1.41/plugins/{id}/json")).json()["Id"],
        id.as_str()
    );
    assert_eq!(
        d.get(&format!("/v1.41/plugins/{}/json", &id[..5])).json()["Id"],
        id.as_str()
    );

    let list = d.get("/v1.41/plugins").json();
    assert_eq!(list.as_array().unwrap().len(), 1);

    let set = d.post_json(
        "/v1.41/plugins/myorg/sample:1.0/set",
        r#"["DEBUG=1", "state.source=/srv", "args=--verbose --x"]"#,
    );
    assert_eq!(set.status, 204, "{}", set.text());
    let plugin = d.get("/v1.41/plugins/myorg/sample:1.0/json").json();
    assert_eq!(
        plugin["Settings"]["Env"],
        serde_json::json!(["DEBUG=1", "LOCKED=1"])
    );
    assert_eq!(plugin["Settings"]["Mounts"][0]["Source"], "/srv");
    assert_eq!(plugin["Config"]["Mounts"][0]["Source"], "/srv");
    assert_eq!(
        plugin["Settings"]["Args"],
        serde_json::json!(["--verbose", "--x"])
    );

    let refused = d.post_json(
        "/v1.41/plugins/myorg/sample:1.0/set",
        r#"["DEBUG=2", "LOCKED=2"]"#,
    );
    assert_eq!(refused.status, 500);
    assert_eq!(refused.message(), "\"LOCKED\" is not settable");
    let plugin = d.get("/v1.41/plugins/myorg/sample:1.0/json").json();
    assert_eq!(
        plugin["Settings"]["Env"],
        serde_json::json!(["DEBUG=1", "LOCKED=1"]),
        "a failed set changes nothing"
    );

    let blobs_before = blob_count(&d.data_root);
    assert_eq!(blobs_before, 3, "layer, config and manifest");
    let rm = d.request("DELETE", "/v1.41/plugins/myorg/sample:1.0", &[], &[]);
    assert_eq!(rm.status, 200);
    assert!(rm.body.is_empty());
    assert_eq!(d.get("/v1.41/plugins/myorg/sample:1.0/json").status, 404);
    assert!(plugin_dirs(&d.data_root).is_empty());
    assert_eq!(
        blob_count(&d.data_root),
        0,
        "unreferenced blobs are collected"
    );
}

#[test]
fn create_errors_carry_dockers_messages_and_leave_nothing_behind() {
    let d = Daemon::start();
    let ok = plugin_context(r#"{"description":"foo plugin"}"#, &[]);
    assert_eq!(d.create_plugin("dup", &ok).status, 204);
    let plugin = d.get("/v1.41/plugins/dup/json").json();
    assert_eq!(
        plugin["Config"]["Description"], "foo plugin",
        "keys match case-insensitively"
    );
    let blobs = blob_count(&d.data_root);

    let dup = d.create_plugin("dup", &ok);
    dup.assert_error(409, "plugin dup:latest already exists");

    let no_name = d.request("POST", "/v1.41/plugins/create", &[], &ok);
    assert_eq!(no_name.status, 500);
    assert_eq!(
        no_name.message(),
        "failed to parse reference : invalid reference format"
    );

    let upper = d.create_plugin("Foo/bar", &ok);
    assert_eq!(upper.status, 500);
    assert!(upper
        .message()
        .starts_with("failed to parse reference Foo/bar: invalid reference format"));

    let mut no_config = tar::Builder::new(Vec::new());
    let mut dir = common::header(tar::EntryType::Directory, 0, 0o755);
    no_config.append_data(&mut dir, "rootfs/", &[][..]).unwrap();
    let r = d.create_plugin("noconfig", &no_config.into_inner().unwrap());
    r.assert_error(500, "config not found");

    let bad_json = plugin_context("{bad", &[]);
    let r = d.create_plugin("badjson", &bad_json);
    assert_eq!(r.status, 500);
    assert_eq!(
        r.message(),
        "failed to parse config: invalid character 'b' looking for beginning of object key string"
    );

    let truncated = &ok[..700];
    let r = d.create_plugin("truncated", truncated);
    assert_eq!(r.status, 500, "{}", r.text());

    assert_eq!(d.get("/v1.41/plugins").json().as_array().unwrap().len(), 1);
    assert_eq!(plugin_dirs(&d.data_root).len(), 1);
    assert_eq!(blob_count(&d.data_root), blobs);
    assert_eq!(leftovers(&d.data_root), 0);
}

#[test]
fn gzip_compressed_contexts_are_accepted() {
    use std::io::Write;
    let d = Daemon::start();
    let context = plugin_context(r#"{"Description":"zipped"}"#, &[("f", b"x")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&context).unwrap();
    let r = d.create_plugin("zipped", &gz.finish().unwrap());
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        d.get("/v1.41/plugins/zipped/json").json()["Config"]["Description"],
        "zipped"
    );
}

#[test]
fn list_filters_by_enabled_and_capability() {
    let d = Daemon::start();
    let volume = plugin_context(
        r#"{"Interface":{"Types":["docker.volumedriver/1.0"]}}"#,
        &[],
    );
    let network = plugin_context(
        r#"{"Interface":{"Types":["docker.networkdriver/1.0"]}}"#,
        &[],
    );
    assert_eq!(d.create_plugin("vol", &volume).status, 204);
    assert_eq!(d.create_plugin("net", &network).status, 204);
    assert_eq!(
        d.plugin_names(r#"{"capability":{"volume":true}}"#),
        ["vol:latest"]
    );
    assert_eq!(
        d.plugin_names(r#"{"enabled":["false"]}"#),
        ["net:latest", "vol:latest"]
    );
    assert!(d.plugin_names(r#"{"enabled":{"true":true}}"#).is_empty());

    for (version, filters, status, message) in [
        (
            "v1.41",
            r#"{"enable":{"true":true}}"#,
            400,
            "Invalid filter 'enable'",
        ),
        (
            "v1.44",
            r#"{"enable":{"true":true}}"#,
            400,
            "invalid filter 'enable'",
        ),
        (
            "v1.41",
            r#"{"enabled":{"potato":true}}"#,
            400,
            "Invalid filter 'enabled=[potato]'",
        ),
        (
            "v1.41",
            "nope",
            500,
            "invalid character 'o' in literal null (expecting 'u')",
        ),
    ] {
        let path = format!("/{version}/plugins?filters={}", url_escape(filters));
        d.get(&path).assert_error(status, message);
    }
}

#[test]
fn lookups_report_missing_and_ambiguous_names() {
    let d = Daemon::start();
    let r = d.get("/v1.41/plugins/nosuch/json");
    r.assert_error(404, "plugin \"nosuch\" not found");
    let r = d.request("DELETE", "/v1.41/plugins/nosuch", &[], &[]);
    r.assert_error(404, "plugin \"nosuch\" not found");
    let r = d.get("/v1.41/plugins/Upper/json");
    assert_eq!(r.status, 404);

    // With 17 plugins two IDs must share a first hex digit: that prefix is ambiguous.
    let ctx = plugin_context("{}", &[]);
    for i in 0..17 {
        assert_eq!(d.create_plugin(&format!("p{i}"), &ctx).status, 204);
    }
    let ids: Vec<String> = d
        .get("/v1.41/plugins")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Id"].as_str().unwrap().to_string())
        .collect();
    let shared = ids
        .iter()
        .map(|id| &id[..1])
        .find(|p| ids.iter().filter(|id| id.starts_with(*p)).count() > 1)
        .unwrap();
    let r = d.get(&format!("/v1.41/plugins/{shared}/json"));
    r.assert_error(400, &format!("multiple plugins found for \"{shared}\""));
}

#[test]
fn set_body_rules_follow_the_api_version() {
    let d = Daemon::start();
    assert_eq!(
        d.create_plugin("s", &plugin_context(VOLUME_PLUGIN_CONFIG, &[]))
            .status,
        204
    );
    let legacy = d.request(
        "POST",
        "/v1.41/plugins/s/set",
        &[("Content-Type", "text/plain")],
        b"[\"DEBUG=3\"]",
    );
    assert_eq!(legacy.status, 204);
    let r = d.post_json("/v1.41/plugins/s/set", "[1]");
    r.assert_error(
        400,
        "json: cannot unmarshal number into Go value of type string",
    );
    let current = d.request(
        "POST",
        "/v1.44/plugins/s/set",
        &[("Content-Type", "text/plain")],
        b"[]",
    );
    current.assert_error(
        400,
        "unsupported Content-Type header (text/plain): must be 'application/json'",
    );
    let r = d.post_json("/v1.44/plugins/s/set", "{invalid json");
    r.assert_error(
        400,
        "invalid JSON: invalid character 'i' looking for beginning of object key string",
    );
    let r = d.post_json("/v1.44/plugins/s/set", "[] trailing");
    r.assert_error(400, "unexpected content after JSON");
}

#[test]
fn plugins_survive_a_restart() {
    let mut d = Daemon::start();
    assert_eq!(
        d.create_plugin("keep/me:2", &plugin_context(VOLUME_PLUGIN_CONFIG, &[]))
            .status,
        204
    );
    assert_eq!(
        d.post_json("/v1.41/plugins/keep/me:2/set", r#"["DEBUG=7"]"#)
            .status,
        204
    );
    let before = d.get("/v1.41/plugins/keep/me:2/json").json();
    d.stop();
    d.spawn();
    assert_eq!(d.get("/v1.41/plugins/keep/me:2/json").json(), before);
}

#[test]
fn kill_during_concurrent_creates_keeps_every_acknowledged_plugin_and_nothing_partial() {
    let mut d = Daemon::start();
    let socket = d.socket.clone();
    // A context big enough that creates are still running when the daemon dies.
    let payload = vec![7u8; 4 << 20];
    let context = std::sync::Arc::new(plugin_context(
        r#"{"Description":"crash"}"#,
        &[("blob", &payload)],
    ));
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (socket, context, acknowledged) =
                (socket.clone(), context.clone(), acknowledged.clone());
            std::thread::spawn(move || {
                for i in 0..50 {
                    let name = format!("crash{w}x{i}");
                    let path = format!("/v1.41/plugins/create?name={name}");
                    match common::raw_request(&socket, "POST", &path, &[], &context) {
                        Ok(r) if r.status == 204 => {
                            acknowledged.lock().unwrap().push(format!("{name}:latest"))
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    // Kill once a create has been acknowledged: the other workers are in the middle of theirs.
    assert!(
        common::eventually(std::time::Duration::from_secs(60), || !acknowledged
            .lock()
            .unwrap()
            .is_empty()),
        "no create acknowledged within 60 s"
    );
    d.kill9();
    for w in workers {
        w.join().unwrap();
    }
    d.spawn();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        !acknowledged.is_empty(),
        "some creates finished before the kill"
    );
    let listed: Vec<serde_json::Value> = d.get("/v1.41/plugins").json().as_array().unwrap().clone();
    let names: Vec<&str> = listed.iter().map(|p| p["Name"].as_str().unwrap()).collect();
    for name in &acknowledged {
        assert!(names.contains(&name.as_str()), "acknowledged {name} lost");
    }
    // Every listed plugin is whole: its rootfs is there and its blobs exist.
    for p in &listed {
        let id = p["Id"].as_str().unwrap();
        let dir = d.data_root.join("plugins").join(id);
        assert_eq!(
            std::fs::read(dir.join("rootfs/blob")).unwrap().len(),
            payload.len()
        );
        let diff = p["Config"]["rootfs"]["diff_ids"][0].as_str().unwrap();
        let blob = d
            .data_root
            .join("plugins/storage/blobs/sha256")
            .join(diff.trim_start_matches("sha256:"));
        assert!(blob.is_file(), "layer blob of {id}");
    }
    assert_eq!(
        plugin_dirs(&d.data_root).len(),
        listed.len(),
        "no partial plugin directories"
    );
    assert_eq!(leftovers(&d.data_root), 0);
    // All plugins share one layer, config and manifest each differ only by nothing: content
    // addressing stores them once.
    assert!(blob_count(&d.data_root) <= 3);
}
