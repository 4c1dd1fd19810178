//! Authorization plugins around the API: the chain's order and messages, what plugins are
//! shown (compared field by field with what dockerd 20.10 sends, see compat-tests/authz), the
//! CVE-2024-41110 class of bodies and paths that must never slip past them, large and streamed
//! responses, managed plugins with reload and disable, start-up refusals and peer credentials.
//! Every plugin is the project's test plugin in its AuthZ mode.

mod common;
use common::authz::*;
use common::*;

use std::os::unix::process::CommandExt as _;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap()
}

/// berth with the legacy plugins of `dir` and the chain `names` (flags, in order).
fn daemon_with_chain(dir: &tempfile::TempDir, names: &[&str], extra: &[&str]) -> Daemon {
    let plugins = plugin_dir(dir.path());
    let mut args = vec!["--legacy-plugin-dir", plugins.as_str()];
    for name in names {
        args.extend(["--authorization-plugin", name]);
    }
    args.extend_from_slice(extra);
    Daemon::start_with(&args)
}

fn volume_exists(d: &Daemon, name: &str) -> bool {
    d.volume_names("").iter().any(|n| n == name)
}

#[test]
fn the_chain_asks_every_plugin_in_order_and_the_first_deny_stops_it() {
    let dir = tempdir("bza");
    let policy = authz_plugin(
        dir.path(),
        "policy",
        "req deny POST /volumes/create body=secret msg=no secrets here; \
         res deny GET /volumes/hidden msg=not for your eyes",
        &[],
    );
    let audit = authz_plugin(dir.path(), "audit", "", &[]);
    // A name given twice is asked once.
    let d = daemon_with_chain(&dir, &["policy", "audit", "policy"], &[]);
    policy.forget();
    audit.forget();

    let r = d.request(
        "POST",
        "/v1.41/volumes/create",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer secret-token"),
            ("X-Registry-Auth", "e30="),
            ("X-Registry-Config", "e30="),
            ("X-Custom", "kept"),
        ],
        br#"{"Name":"allowed-vol"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    for plugin in [&policy, &audit] {
        let calls = plugin.calls_for("/v1.41/volumes/create");
        assert_eq!(
            calls.iter().map(|c| c.method.as_str()).collect::<Vec<_>>(),
            ["AuthZPlugin.AuthZReq", "AuthZPlugin.AuthZRes"],
            "{}: {calls:?}",
            plugin.name
        );
        let (req, res) = (&calls[0], &calls[1]);
        assert_eq!(req.text("RequestMethod"), "POST");
        assert_eq!(
            req.body("RequestBody"),
            Some((22, r#"{"Name":"allowed-vol"}"#.to_string()))
        );
        let headers = req.map("RequestHeaders");
        assert_eq!(
            headers.keys().collect::<Vec<_>>(),
            ["Connection", "Content-Length", "Content-Type", "X-Custom"],
            "credentials and Host are never shown"
        );
        assert!(!req.fields.contains_key("User"), "no user on a unix socket");
        assert_eq!(res.text("ResponseStatusCode"), "201");
        assert_eq!(res.body("RequestBody"), req.body("RequestBody"));
        let (_, body) = res.body("ResponseBody").expect("a JSON response is shown");
        assert!(body.contains(r#""Name":"allowed-vol""#), "{body}");
        let shown = res.map("ResponseHeaders");
        assert_eq!(shown["Api-Version"], "1.50");
        assert_eq!(shown["Content-Type"], "application/json");
        assert_eq!(shown["Docker-Experimental"], "false");
        assert_eq!(shown["Ostype"], "linux");
    }

    let r = d.create_volume("/v1.41", r#"{"Name":"secret-vol"}"#);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        r.message(),
        "authorization denied by plugin policy: no secrets here"
    );
    assert_eq!(
        r.header("Api-Version"),
        None,
        "a refusal carries no common headers"
    );
    assert_eq!(
        policy
            .calls()
            .iter()
            .filter(|c| c
                .body("RequestBody")
                .is_some_and(|(_, b)| b.contains("secret-vol")))
            .count(),
        1
    );
    assert!(
        !audit.calls().iter().any(|c| c
            .body("RequestBody")
            .is_some_and(|(_, b)| b.contains("secret-vol"))),
        "the first deny stops the chain"
    );
    assert!(!volume_exists(&d, "secret-vol"));

    // The response phase: a refusal replaces the answer.
    assert_eq!(
        d.create_volume("/v1.41", r#"{"Name":"hidden"}"#).status,
        201
    );
    let r = d.get("/v1.41/volumes/hidden");
    assert_eq!(r.status, 403);
    assert_eq!(
        r.message(),
        "authorization denied by plugin policy: not for your eyes"
    );
    assert_eq!(r.header("Api-Version"), None);
    assert!(audit
        .calls_for("/v1.41/volumes/hidden")
        .iter()
        .all(|c| c.is_request()));

    // A handler's error wins over the response phase; it keeps the common headers only when the
    // plugins allowed the response.
    let r = d.get("/v1.41/volumes/hidden-nosuch");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("Api-Version"),
        None,
        "refused in the response phase"
    );
    let r = d.get("/v1.41/volumes/nosuch");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("Api-Version"), Some("1.50"));
    let res = audit.calls_for("/v1.41/volumes/nosuch").pop().unwrap();
    assert!(!res.is_request());
    assert!(!res.fields.contains_key("ResponseStatusCode"));
    assert!(!res.fields.contains_key("ResponseBody"));

    // `/_ping` answers with an implicit status and a sniffed type in 20.10: neither is shown.
    assert_eq!(d.get("/_ping").status, 200);
    let res = audit.calls_for("/_ping").pop().unwrap();
    assert!(!res.fields.contains_key("ResponseStatusCode"), "{res:?}");
    assert!(!res.map("ResponseHeaders").contains_key("Content-Type"));

    // Unknown routes and redirects reach neither a handler nor the plugins (moby's mux).
    assert_eq!(d.get("/v1.41/nosuch").status, 404);
    assert_eq!(d.get("/v1.41//volumes").status, 301);
    assert!(audit.calls_for("/v1.41/nosuch").is_empty());
    assert!(audit.calls_for("/v1.41//volumes").is_empty());

    let info = d.get("/v1.41/info").json();
    assert_eq!(
        info["Plugins"]["Authorization"],
        serde_json::json!(["policy", "audit"])
    );
}

/// `POST /v1.41/volumes/create` framed by hand: `head` holds the header lines after the request
/// line, `body` follows the blank line.
fn raw_create(head: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST /v1.41/volumes/create HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n{head}\r\n"
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(7) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[test]
fn a_body_is_seen_by_the_plugins_whatever_its_framing_or_the_request_is_refused() {
    let (_dir, policy, d) = guarded_daemon(
        "bzb",
        "req deny * /volumes/create body=secret msg=no secrets",
        &[],
    );
    // A JSON create framed by hand: `head` holds the framing header.
    let send = |head: &str, body: &[u8], half_close: bool| {
        let head = format!("Content-Type: application/json\r\n{head}\r\n");
        exchange(&d.socket, &raw_create(&head, body), half_close, WAIT)
    };
    let chunked_head = "Transfer-Encoding: chunked";

    // Chunked: shown whole, and the handler reads the same bytes.
    let r = send(
        chunked_head,
        &chunked(br#"{"Name":"secret-chunked"}"#),
        false,
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = send(chunked_head, &chunked(br#"{"Name":"chunked-ok"}"#), false);
    assert_eq!(r.status, 201, "{}", r.text());
    let seen = policy
        .calls()
        .into_iter()
        .filter(|c| c.is_request())
        .map(|c| c.body("RequestBody").map(|b| b.1))
        .collect::<Vec<_>>();
    assert!(
        seen.contains(&Some(r#"{"Name":"chunked-ok"}"#.to_string())),
        "{seen:?}"
    );

    // A Content-Length shorter than the body: the plugins and the handler read the same
    // prefix; the rest is a (bad) next request, never a body.
    let r = send("Content-Length: 9", br#"{"Name":"secret-short"}"#, false);
    assert_eq!(r.status, 400, "{}", r.text());
    // Zero: no body at all.
    let r = send("Content-Length: 0", br#"{"Name":"secret-zero"}"#, false);
    assert_eq!(r.status, 400, "{}", r.text());
    // (What follows the first answer is actix refusing the stray bytes as a request.)
    assert_starts_with(
        &r.text(),
        "{\"message\":\"got EOF while reading request body\"}\n",
    );
    // Longer than what is sent: the body never completes, nothing runs.
    let r = send("Content-Length: 500", br#"{"Name":"secret-long"}"#, true);
    assert!(
        r.status == 400 || r.status == 500,
        "{} {}",
        r.status,
        r.text()
    );
    for name in [
        "secret-chunked",
        "secret-short",
        "secret-zero",
        "secret-long",
    ] {
        assert!(!volume_exists(&d, name), "{name}");
    }
    assert!(volume_exists(&d, "chunked-ok"));

    // A body the plugins are not shown (not declared JSON) is refused before they are asked.
    policy.forget();
    for content_type in [
        "",
        "Content-Type: text/plain\r\n",
        "Content-Type: application/jsonx\r\n",
    ] {
        let body = br#"{"Name":"secret-undeclared"}"#;
        let head = format!("{content_type}Content-Length: {}\r\n", body.len());
        let r = exchange(&d.socket, &raw_create(&head, body), false, WAIT);
        assert_eq!(r.status, 400, "{content_type:?}: {}", r.text());
        assert_starts_with(
            &r.message(),
            "request body not shown to authorization plugins",
        );
    }
    let r = d.request(
        "POST",
        "/v1.41/plugins/x/set",
        &[("Content-Type", "text/plain")],
        br#"["DEBUG=1"]"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(policy.calls().is_empty(), "{:?}", policy.calls());
    assert!(!volume_exists(&d, "secret-undeclared"));

    // 4 MiB is shown; one byte more is refused with moby's message, chunked or not.
    let limit = 4 * 1024 * 1024;
    let padded = |name: &str, total: usize| {
        let head = format!(r#"{{"Name":"{name}","Labels":{{"pad":""#);
        let mut body = head.into_bytes();
        body.resize(total - 3, b'x');
        body.extend_from_slice(br#""}}"#);
        body
    };
    let body = padded("at-the-limit", limit);
    let r = d.post_json("/v1.41/volumes/create", std::str::from_utf8(&body).unwrap());
    assert_eq!(r.status, 201, "{}", r.message());
    let body = padded("over-the-limit", limit + 1);
    let r = d.post_json("/v1.41/volumes/create", std::str::from_utf8(&body).unwrap());
    assert_eq!(r.status, 500);
    assert_eq!(
        r.message(),
        "request body too large for authorization plugin: size exceeds 4194304 bytes"
    );
    let r = send(chunked_head, &chunked(&body), false);
    assert_eq!(r.status, 500);
    assert!(!volume_exists(&d, "over-the-limit"));

    // Refused without being read whole: 64 MiB announced, the first 4 MiB + 1 sent, the
    // answer comes while the rest is still to come.
    let mut raw = raw_create(
        &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            64 * 1024 * 1024
        ),
        &[],
    );
    raw.extend(std::iter::repeat_n(b' ', limit + 1));
    let r = exchange(&d.socket, &raw, false, WAIT);
    assert_eq!(r.status, 500, "{}", r.text());
}

#[test]
fn no_path_variant_reaches_a_handler_under_a_uri_the_plugins_did_not_see() {
    let (_dir, policy, d) = guarded_daemon("bzp", "req deny * /volumes/guarded msg=guarded", &[]);
    // It exists: a variant reaching the handler would find it.
    assert_eq!(
        d.create_volume("/v1.41", r#"{"Name":"guarded"}"#).status,
        201
    );
    for (path, expected) in [
        ("/v1.41/volumes/guarded", 403),
        ("/volumes/guarded", 403),
        ("/v1.24/volumes/guarded", 403),
        ("/v1.41/volumes/guarded/", 403),
        ("/v1.41//volumes/guarded", 301),
        ("/v1.41/volumes/./guarded", 301),
        ("/v1.41/x/../volumes/guarded", 301),
        ("/v1.41/volumes%2Fguarded", 400),
        ("/v1.41/volumes/%67uarded", 400),
        ("/v1.41/volumes/guarde%64", 400),
        ("/v1.41%2Fvolumes/guarded", 400),
        ("http://berth/v1.41/volumes/guarded", 400),
        ("/V1.41/volumes/guarded", 404),
    ] {
        policy.forget();
        let r = d.get(path);
        assert_eq!(r.status, expected, "{path}: {}", r.text());
        let calls = policy.calls();
        match expected {
            // Denied by the rule it matched: the plugin saw exactly what was sent.
            403 => assert_eq!(calls.iter().map(|c| c.uri()).collect::<Vec<_>>(), [path]),
            // Reached no handler and no plugin.
            _ => assert!(calls.is_empty(), "{path}: {calls:?}"),
        }
        if expected == 400 {
            assert!(
                r.message()
                    .contains("refused while authorization plugins are enabled"),
                "{}",
                r.message()
            );
        }
    }
}

#[test]
fn large_and_streamed_responses_are_authorized_as_dockerd_does() {
    let (_dir, policy, d) = guarded_daemon(
        "bzr",
        "res deny GET /volumes?deny msg=too much; res deny POST /push msg=no pushing",
        &[],
    );
    let label = "x".repeat(70 * 1024);
    let body = format!(r#"{{"Name":"big","Labels":{{"pad":"{label}"}}}}"#);
    assert_eq!(d.post_json("/v1.41/volumes/create", &body).status, 201);

    // Over 64 KiB: sent before the plugins are asked, so they see no status, headers or body,
    // and a refusal becomes the body of a 200 whose headers are already out.
    let r = d.get("/v1.41/volumes?allow");
    assert_eq!(r.status, 200);
    assert!(r.json()["Volumes"][0]["Labels"]["pad"] == label.as_str());
    let res = policy.calls_for("/v1.41/volumes?allow").pop().unwrap();
    assert!(!res.is_request());
    for field in ["ResponseStatusCode", "ResponseHeaders", "ResponseBody"] {
        assert!(!res.fields.contains_key(field), "{field}: {res:?}");
    }
    let r = d.get("/v1.41/volumes?deny");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(r.header("Api-Version"), Some("1.50"));
    assert_eq!(
        r.text(),
        "{\"message\":\"authorization denied by plugin guard: too much\"}\n"
    );

    // A streamed answer (push progress) goes out as it comes; a refusal is appended to it. The
    // push fails (nothing listens on port 9), in the stream.
    let context = plugin_context(
        r#"{"Description":"x","Entrypoint":["/x"],"Interface":{"Socket":"x.sock","Types":["docker.volumedriver/1.0"]}}"#,
        &[("x", b"x")],
    );
    let name = "127.0.0.1:9/authz/streamed:latest";
    assert_eq!(d.create_plugin(name, &context).status, 204);
    let push = format!("/v1.41/plugins/{name}/push");
    let r = d.post(&push);
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(
        text.starts_with("{\"status\":\"The push refers to repository"),
        "{text}"
    );
    assert!(
        text.ends_with("{\"message\":\"authorization denied by plugin guard: no pushing\"}\n"),
        "{text:?}"
    );
    let res = policy.calls_for(&push).pop().unwrap();
    assert!(!res.is_request() && !res.fields.contains_key("ResponseStatusCode"));
}

#[test]
fn berth_refuses_to_start_with_an_authorization_plugin_it_cannot_use() {
    let dir = tempdir("bzs");
    let _volume_plugin = host_test_plugin(
        &dir.path().join("plugins/vol.sock"),
        &dir.path().join("vol-root"),
        &[],
    );
    let plugins = plugin_dir(dir.path());
    for (name, message) in [
        ("nosuch", "failed to validate authorization plugin: plugin \"nosuch\" not found"),
        (
            "vol",
            "failed to validate authorization plugin: Plugin does not implement the requested driver: plugin=\"vol\", requested implementation=\"authz\"",
        ),
    ] {
        let root = dir.path();
        let stderr = refused_start(&[
            "--host".into(),
            format!("unix://{}/b.sock", root.display()).into(),
            "--data-root".into(),
            root.join("data").into(),
            "--exec-root".into(),
            root.join("x").into(),
            "--config-file".into(),
            root.join("none.json").into(),
            "--legacy-plugin-dir".into(),
            plugins.clone().into(),
            "--authorization-plugin".into(),
            name.into(),
        ]);
        assert!(stderr.contains(&format!("berth: {message}")), "{stderr}");
        assert!(!dir.path().join("b.sock").exists(), "never listened");
    }
}

#[test]
fn peer_credentials_are_shown_only_when_asked_for() {
    let (_dir, audit, d) = guarded_daemon("bzc", "", &["--authz-peer-credentials"]);
    audit.forget();
    assert_eq!(d.get("/v1.41/volumes").status, 200);
    let req = audit.calls_for("/v1.41/volumes").remove(0);
    assert_eq!(req.text("User"), "root");
    assert_eq!(req.text("UserAuthNMethod"), "peercred");

    // Another user on the same socket is told apart.
    use std::os::unix::fs::PermissionsExt as _;
    let open = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(d.socket.parent().unwrap(), 0o711);
    open(&d.socket, 0o666);
    let script = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); \
         s.sendall(b'GET /v1.41/volumes?nobody HTTP/1.1\\r\\nHost: b\\r\\nConnection: close\\r\\n\\r\\n'); \
         print(s.recv(100).split(b' ')[1].decode())",
        d.socket.display().to_string()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let req = audit.calls_for("/v1.41/volumes?nobody").remove(0);
    let nobody = nix::unistd::User::from_uid(65534.into())
        .unwrap()
        .map(|u| u.name)
        .unwrap_or_else(|| "65534".into());
    assert_eq!(req.text("User"), nobody);
}

const MANAGED_AUTHZ_CONFIG: &str = r#"{
  "Description": "berth test authorization plugin",
  "Entrypoint": ["/bin/berth-test-plugin"],
  "Interface": {"Socket": "authz.sock", "Types": ["docker.authz/1.0"]},
  "Env": [
    {"Name": "TEST_SOCKET", "Value": "authz.sock"},
    {"Name": "TEST_AUTHZ_LOG", "Value": "/tmp/authz.log"},
    {"Name": "TEST_AUTHZ_RULES", "Settable": ["value"],
     "Value": "req deny * /volumes/managed-secret msg=managed says no"}
  ]
}"#;

fn hangup(d: &Daemon) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
}

fn write_config(d: &Daemon, json: &str) {
    std::fs::write(d.dir.path().join("no-daemon.json"), json).unwrap();
}

fn guarded_status(d: &Daemon) -> u16 {
    d.get("/v1.41/volumes/managed-secret").status
}

#[test]
fn a_managed_plugin_joins_on_reload_and_leaves_the_chain_when_disabled() {
    let mut d = Daemon::start();
    let r = d.create_plugin("test/authz", &test_plugin_context(MANAGED_AUTHZ_CONFIG));
    assert_eq!(r.status, 204, "{}", r.text());
    let r = d.post("/v1.41/plugins/test/authz/enable?timeout=30");
    assert_eq!(r.status, 200, "{}", r.text());
    let id = d.get("/v1.41/plugins/test/authz/json").json()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let log = d
        .data_root
        .join(format!("plugins/{id}/rootfs/tmp/authz.log"));
    assert_eq!(guarded_status(&d), 404);

    // daemon.json + SIGHUP: the chain is the file's.
    write_config(&d, r#"{"authorization-plugins": ["test/authz"]}"#);
    hangup(&d);
    assert!(eventually(WAIT, || guarded_status(&d) == 403));
    let r = d.get("/v1.41/volumes/managed-secret");
    assert_eq!(
        r.message(),
        "authorization denied by plugin test/authz:latest: managed says no"
    );
    let calls = read_log(&log);
    assert!(
        calls
            .iter()
            .any(|c| c.is_request() && c.uri() == "/v1.41/volumes/managed-secret"),
        "{calls:?}"
    );
    // `/info` reports the chain berth started with, as dockerd does.
    assert_eq!(
        d.get("/v1.41/info").json()["Plugins"]["Authorization"],
        serde_json::Value::Null
    );

    // A reload naming what cannot be used leaves the chain as it was.
    write_config(&d, r#"{"authorization-plugins": ["test/authz", "nosuch"]}"#);
    hangup(&d);
    assert!(eventually(WAIT, || d.log().contains(
        "failed to validate authorization plugin: plugin \\\"nosuch\\\" not found"
    )));
    assert_eq!(guarded_status(&d), 403);

    // Disabled, it leaves at once; enabled again, it stays out until a reload.
    write_config(&d, r#"{"authorization-plugins": ["test/authz"]}"#);
    assert_eq!(d.post("/v1.41/plugins/test/authz/disable").status, 200);
    assert_eq!(guarded_status(&d), 404);
    assert_eq!(
        d.post("/v1.41/plugins/test/authz/enable?timeout=30").status,
        200
    );
    assert_eq!(guarded_status(&d), 404);
    hangup(&d);
    assert!(eventually(WAIT, || guarded_status(&d) == 403));

    // Without the key, the chain is the flags' (none here).
    write_config(&d, "{}");
    hangup(&d);
    assert!(eventually(WAIT, || guarded_status(&d) == 404));

    // A disabled plugin in the chain keeps berth from starting.
    assert_eq!(d.post("/v1.41/plugins/test/authz/disable").status, 200);
    d.stop();
    let stderr = refused_start(&[
        "--host".into(),
        format!("unix://{}", d.socket.display()).into(),
        "--data-root".into(),
        d.data_root.clone().into(),
        "--exec-root".into(),
        d.exec_root.clone().into(),
        "--config-file".into(),
        d.dir.path().join("no-daemon.json").into(),
        "--authorization-plugin".into(),
        "test/authz".into(),
    ]);
    assert!(
        stderr.contains(
            "berth: failed to validate authorization plugin: plugin test/authz found but disabled"
        ),
        "{stderr}"
    );
}
