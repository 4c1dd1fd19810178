//! The system endpoints and the HTTP conventions every Docker client depends on, over raw HTTP
//! against a running berth.

mod common;
use common::Daemon;

#[test]
fn ping_answers_unversioned_with_the_headers_clients_negotiate_from() {
    let d = Daemon::start();
    let r = d.get("/_ping");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "OK");
    // The newest version served, as moby advertises; clients negotiate down from it.
    assert_eq!(r.header("Api-Version"), Some("1.50"));
    assert_eq!(r.header("Ostype"), Some("linux"));
    assert_eq!(r.header("Docker-Experimental"), Some("false"));
    assert_eq!(
        r.header("Cache-Control"),
        Some("no-cache, no-store, must-revalidate")
    );
    assert_eq!(r.header("Pragma"), Some("no-cache"));
    let head = d.request("HEAD", "/_ping", &[], &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("0"));
    assert_eq!(d.get("/v1.24/_ping").status, 200);
}

#[test]
fn versions_outside_the_served_range_are_refused() {
    let d = Daemon::start();
    let too_new = d.get("/v1.51/plugins");
    assert_eq!(too_new.status, 400);
    assert_eq!(
        too_new.message(),
        "client version 1.51 is too new. Maximum supported API version is 1.50"
    );
    assert_eq!(too_new.header("Content-Type"), Some("application/json"));
    assert_eq!(too_new.header("Docker-Experimental"), None);

    let too_old = d.get("/v1.23/plugins");
    assert_eq!(too_old.status, 400);
    assert_eq!(
        too_old.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        too_old.text(),
        "client version 1.23 is too old. Minimum supported API version is 1.24, please upgrade your client to a newer version\n"
    );
    assert_eq!(d.get("/v1.50/plugins").status, 200);
    assert_eq!(d.get("/v1.24/plugins").status, 200);
}

#[test]
fn unknown_routes_and_methods_get_page_not_found() {
    let d = Daemon::start();
    for (method, path) in [
        ("GET", "/nosuch"),
        ("PUT", "/v1.41/plugins"),
        ("POST", "/_ping"),
        ("GET", "/vx/plugins"),
    ] {
        let r = d.request(method, path, &[], &[]);
        assert_eq!(r.status, 404, "{method} {path}");
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.text(), "{\"message\":\"page not found\"}\n");
        assert_eq!(
            r.header("Api-Version"),
            None,
            "moby adds no version headers to unrouted requests"
        );
    }
    let options = d.request("OPTIONS", "/v1.41/anything", &[], &[]);
    assert_eq!(options.status, 200);
}

#[test]
fn version_names_berth_and_its_api_range() {
    let d = Daemon::start();
    // The same whatever version asks.
    for path in ["/v1.41/version", "/version"] {
        let v = d.get(path).json();
        assert_eq!(v["Platform"]["Name"], "berth");
        assert_eq!(v["ApiVersion"], "1.50");
        assert_eq!(v["MinAPIVersion"], "1.24");
        assert_eq!(v["Components"][0]["Name"], "Engine");
        assert_eq!(v["Components"][0]["Details"]["ApiVersion"], "1.50");
    }
    let v = d.get("/v1.41/version").json();
    assert_eq!(v["Os"], "linux");
}

#[test]
fn unversioned_requests_get_the_advertised_versions_behaviour() {
    let d = Daemon::start();
    // Current moby's lower-case filter error; 20.10's `Invalid filter` for 1.41.
    for (prefix, word) in [("", "invalid"), ("/v1.41", "Invalid")] {
        let r = d.get(&format!(
            "{prefix}/volumes?filters=%7B%22foo%22%3A%7B%22x%22%3Atrue%7D%7D"
        ));
        assert_eq!(r.status, 400);
        assert_eq!(r.message(), format!("{word} filter 'foo'"));
    }
}

#[test]
fn info_reports_an_inactive_swarm_and_the_plugin_sections() {
    let d = Daemon::start();
    let info = d.get("/info").json();
    assert_eq!(info["Swarm"]["LocalNodeState"], "inactive");
    assert_eq!(info["OSType"], "linux");
    assert!(info["Plugins"]["Volume"].is_array());
    assert!(info["Plugins"]["Network"].is_array());
    assert!(info["Plugins"]["Log"].is_array());
    assert_eq!(info["DockerRootDir"], d.data_root.display().to_string());
}

#[test]
fn a_live_socket_is_not_taken_over_and_a_stale_one_is_replaced() {
    let mut d = Daemon::start();
    // A second daemon on the same socket must refuse to start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["daemon", "--host"])
        .arg(format!("unix://{}", d.socket.display()))
        .arg("--data-root")
        .arg(d.dir.path().join("other-data"))
        .arg("--config-file")
        .arg(d.dir.path().join("none.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listening"));
    assert_eq!(d.get("/_ping").status, 200);

    // After a crash the socket file stays behind; the next start replaces it.
    d.kill9();
    assert!(d.socket.exists());
    d.spawn();
    assert_eq!(d.get("/_ping").status, 200);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
}
