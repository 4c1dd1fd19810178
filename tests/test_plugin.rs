//! The test plugin (`src/bin/berth-test-plugin/`) run directly on the host, as a legacy plugin
//! would be, spoken to with raw HTTP/1.1 over its unix socket; and `scripts/make-test-plugins.sh`.
//!
//! Every wait is bounded; every process started here is killed (by its own pid) when its guard
//! drops.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::http::{read_framed_response, read_head, Response};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_berth-test-plugin");
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Support: captured output lines, the plugin process, raw HTTP

#[derive(Default)]
struct Lines {
    lines: Mutex<(Vec<String>, bool)>,
    cv: Condvar,
}

impl Lines {
    fn capture(r: impl Read + Send + 'static) -> Arc<Lines> {
        let lines = Arc::new(Lines::default());
        let l = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                l.lines.lock().unwrap().0.push(line);
                l.cv.notify_all();
            }
            l.lines.lock().unwrap().1 = true;
            l.cv.notify_all();
        });
        lines
    }

    /// The first line matching `pred`, waiting up to `timeout`.
    fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut g = self.lines.lock().unwrap();
        loop {
            if let Some(l) = g.0.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if g.1 || now >= deadline {
                return None;
            }
            g = self.cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().0.clone()
    }
}

struct Plugin {
    dir: tempfile::TempDir,
    socket: PathBuf,
    root: PathBuf,
    child: Child,
    started: Instant,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
}

impl Plugin {
    /// Start the plugin with `TEST_SOCKET_PATH`/`TEST_ROOT` in a fresh temp dir and `envs`.
    fn spawn(envs: &[(&str, &str)], args: &[&str]) -> Plugin {
        let dir = tempfile::Builder::new()
            .prefix("berth-tp")
            .tempdir_in("/tmp")
            .unwrap();
        let socket = dir.path().join("t.sock");
        let root = dir.path().join("root");
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("TEST_SOCKET_PATH", &socket)
            .env("TEST_ROOT", &root)
            .envs(envs.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn berth-test-plugin");
        let stdout = Lines::capture(child.stdout.take().unwrap());
        let stderr = Lines::capture(child.stderr.take().unwrap());
        Plugin {
            dir,
            socket,
            root,
            child,
            started,
            stdout,
            stderr,
        }
    }

    /// Spawn and wait for `listening on <socket>`.
    fn start(envs: &[(&str, &str)]) -> Plugin {
        let p = Plugin::spawn(envs, &[]);
        p.wait_listening(WAIT);
        p
    }

    fn wait_listening(&self, timeout: Duration) -> Duration {
        let want = format!("listening on {}", self.socket.display());
        self.stderr
            .wait_for(timeout, |l| l == want)
            .unwrap_or_else(|| {
                panic!(
                    "no {want:?} within {timeout:?}; stderr: {:?}",
                    self.stderr.snapshot()
                )
            });
        self.started.elapsed()
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).unwrap();
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn call(&self, method: &str, body: &str) -> Response {
        call(&self.socket, method, body)
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn connect(socket: &Path) -> UnixStream {
    let s = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {socket:?}: {e}"));
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s
}

/// A request as moby's plugin client sends it (Go net/http): no Content-Type, Accept v1.2.
fn go_request(method: &str, body: &str, extra: &str) -> String {
    format!(
        "POST /{method} HTTP/1.1\r\nHost: plugin.moby.localhost\r\nUser-Agent: Go-http-client/1.1\r\n\
         Content-Length: {}\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\
         Accept-Encoding: gzip\r\n{extra}\r\n{body}",
        body.len()
    )
}

/// One response; the test plugin frames every body with a Content-Length.
fn read_response(r: &mut impl BufRead) -> std::io::Result<Response> {
    let response = read_framed_response(r)?;
    assert!(
        response.header("Content-Length").is_some(),
        "no Content-Length"
    );
    Ok(response)
}

/// One request on a fresh connection; the body gets Go's trailing newline unless empty.
fn call(socket: &Path, method: &str, body: &str) -> Response {
    let mut s = connect(socket);
    let body = if body.is_empty() {
        String::new()
    } else {
        format!("{body}\n")
    };
    s.write_all(go_request(method, &body, "").as_bytes())
        .unwrap();
    read_response(&mut BufReader::new(s)).unwrap_or_else(|e| panic!("{method}: {e}"))
}

fn assert_ok(r: &Response) -> Value {
    assert_eq!(r.status, 200, "body {:?}", r.text());
    assert_eq!(
        r.header("Content-Type"),
        Some("application/vnd.docker.plugins.v1.1+json")
    );
    r.json()
}

fn assert_err(r: &Response, err: &str) {
    assert_eq!(r.status, 500, "body {:?}", r.text());
    assert_eq!(r.json()["Err"], err);
}

fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

// ---------------------------------------------------------------------------------------------
// Protocol

#[test]
fn activate_and_capabilities() {
    let p = Plugin::start(&[]);
    let r = p.call("Plugin.Activate", "");
    assert_eq!(assert_ok(&r), json!({"Implements": ["VolumeDriver"]}));
    let r = p.call("VolumeDriver.Capabilities", "{}");
    assert_eq!(assert_ok(&r), json!({"Capabilities": {"Scope": "local"}}));
    // Capabilities with an empty body too (some clients send none).
    assert_eq!(p.call("VolumeDriver.Capabilities", "").status, 200);
    let r = p.call("VolumeDriver.List", "{}");
    assert_eq!(assert_ok(&r), json!({"Volumes": [], "Err": ""}));
}

#[test]
fn volume_lifecycle() {
    let p = Plugin::start(&[]);
    let mp = |n: &str| p.root.join(n).display().to_string();

    let r = p.call(
        "VolumeDriver.Create",
        r#"{"Name":"v1","Opts":{"size":"1m"}}"#,
    );
    assert_eq!(assert_ok(&r), json!({"Err": ""}));
    assert!(p.root.join("v1").is_dir());
    // Create is idempotent; Opts null (no -o) is fine.
    assert_ok(&p.call("VolumeDriver.Create", r#"{"Name":"v1","Opts":null}"#));
    assert_ok(&p.call("VolumeDriver.Create", r#"{"Name":"v2","Opts":null}"#));

    let g = assert_ok(&p.call("VolumeDriver.Get", r#"{"Name":"v1"}"#));
    assert_eq!(g["Err"], "");
    assert_eq!(g["Volume"]["Name"], "v1");
    assert_eq!(g["Volume"]["Mountpoint"], mp("v1"));
    let created = g["Volume"]["CreatedAt"].as_str().unwrap();
    assert!(is_rfc3339_utc(created), "CreatedAt {created:?}");
    assert_eq!(
        g["Volume"]["Status"],
        json!({"Mounts": 0, "Opts": {"size": "1m"}})
    );

    let l = assert_ok(&p.call("VolumeDriver.List", "{}"));
    assert_eq!(
        l,
        json!({"Volumes": [{"Name": "v1", "Mountpoint": mp("v1")},
                           {"Name": "v2", "Mountpoint": mp("v2")}], "Err": ""})
    );

    let r = assert_ok(&p.call("VolumeDriver.Path", r#"{"Name":"v1"}"#));
    assert_eq!(r, json!({"Mountpoint": mp("v1"), "Err": ""}));

    // Mounts are refcounted by ID.
    let id1 = "a".repeat(64);
    let id2 = "b".repeat(64);
    for id in [&id1, &id2] {
        let r = p.call(
            "VolumeDriver.Mount",
            &json!({"Name": "v1", "ID": id}).to_string(),
        );
        assert_eq!(assert_ok(&r), json!({"Mountpoint": mp("v1"), "Err": ""}));
    }
    let g = assert_ok(&p.call("VolumeDriver.Get", r#"{"Name":"v1"}"#));
    assert_eq!(g["Volume"]["Status"]["Mounts"], 2);
    assert_err(
        &p.call("VolumeDriver.Remove", r#"{"Name":"v1"}"#),
        "volume v1 is in use",
    );
    let unmount = |id: &str| {
        p.call(
            "VolumeDriver.Unmount",
            &json!({"Name": "v1", "ID": id}).to_string(),
        )
    };
    assert_eq!(assert_ok(&unmount(&id1)), json!({"Err": ""}));
    assert_err(
        &p.call("VolumeDriver.Remove", r#"{"Name":"v1"}"#),
        "volume v1 is in use",
    );
    assert_ok(&unmount(&id2));

    let r = p.call("VolumeDriver.Remove", r#"{"Name":"v1"}"#);
    assert_eq!(assert_ok(&r), json!({"Err": ""}));
    assert!(!p.root.join("v1").exists());
    let l = assert_ok(&p.call("VolumeDriver.List", "{}"));
    assert_eq!(l["Volumes"].as_array().unwrap().len(), 1);
}

#[test]
fn error_shapes() {
    let p = Plugin::start(&[]);
    for m in ["Get", "Path", "Remove"] {
        let r = p.call(&format!("VolumeDriver.{m}"), r#"{"Name":"nope"}"#);
        assert_err(&r, "no such volume");
        assert_eq!(
            r.header("Content-Type"),
            Some("application/vnd.docker.plugins.v1.1+json")
        );
    }
    for m in ["Mount", "Unmount"] {
        let r = p.call(
            &format!("VolumeDriver.{m}"),
            r#"{"Name":"nope","ID":"0123"}"#,
        );
        assert_err(&r, "no such volume");
    }
    // A driver-level failure chosen by the caller, as `-o error=...`.
    let r = p.call(
        "VolumeDriver.Create",
        r#"{"Name":"bad","Opts":{"error":"unknown filesystem type \"nosuchbackend\""}}"#,
    );
    assert_err(&r, "unknown filesystem type \"nosuchbackend\"");
    assert!(!p.root.join("bad").exists());
    assert_err(
        &p.call("VolumeDriver.Create", r#"{"Name":"../escape"}"#),
        "invalid volume name \"../escape\"",
    );
    assert_err(
        &p.call("VolumeDriver.Create", r#"{"Opts":null}"#),
        "volume name is required",
    );
    // Undecodable requests: 400 plain text, as go-plugins-helpers answers.
    let r = p.call("VolumeDriver.Create", "");
    assert_eq!((r.status, r.text().as_str()), (400, "EOF\n"));
    let r = p.call("VolumeDriver.Create", "{not json");
    assert_eq!(r.status, 400);
    // Unknown method: Go's ServeMux 404.
    let r = p.call("VolumeDriver.Frobnicate", "{}");
    assert_eq!((r.status, r.text().as_str()), (404, "404 page not found\n"));
    // An interface no mode of the test plugin serves.
    let r = p.call("Frobnicator.GetCapabilities", "");
    assert_eq!(r.status, 404);
}

#[test]
fn http_keep_alive_chunked_and_close() {
    let p = Plugin::start(&[]);
    let s = connect(&p.socket);
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    // Two requests on one connection, the second pipelined behind the first.
    let both = format!(
        "{}{}",
        go_request(
            "VolumeDriver.Create",
            "{\"Name\":\"k1\",\"Opts\":null}\n",
            ""
        ),
        go_request("VolumeDriver.Get", "{\"Name\":\"k1\"}\n", "")
    );
    w.write_all(both.as_bytes()).unwrap();
    assert_eq!(read_response(&mut r).unwrap().status, 200);
    let g = read_response(&mut r).unwrap();
    assert_eq!(g.json()["Volume"]["Name"], "k1");
    assert_eq!(g.header("Connection"), None);
    // A chunked body (hyper may send one), on the same connection.
    let chunked =
        "POST /VolumeDriver.Path HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                   5\r\n{\"Nam\r\n9\r\ne\":\"k1\"}\n\r\n0\r\n\r\n";
    w.write_all(chunked.as_bytes()).unwrap();
    let r2 = read_response(&mut r).unwrap();
    assert_eq!(
        r2.json()["Mountpoint"],
        p.root.join("k1").display().to_string()
    );
    // Expect: 100-continue gets an interim response.
    w.write_all(
        go_request(
            "VolumeDriver.List",
            "{}\n",
            "Expect: 100-continue\r\nConnection: close\r\n",
        )
        .as_bytes(),
    )
    .unwrap();
    let interim = read_response_allowing_no_length(&mut r);
    assert_eq!(interim, 100);
    let last = read_response(&mut r).unwrap();
    assert_eq!(last.status, 200);
    assert_eq!(last.header("Connection"), Some("close"));
    // `Connection: close` → the server closes after answering.
    let mut rest = Vec::new();
    assert_eq!(r.read_to_end(&mut rest).unwrap(), 0);
}

/// Reads an interim (bodiless) response; returns its status.
fn read_response_allowing_no_length(r: &mut impl BufRead) -> u16 {
    let (status_line, _) = read_head(r).unwrap().expect("a response");
    status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn volumes_survive_a_restart() {
    let p = Plugin::start(&[]);
    assert_ok(&p.call("VolumeDriver.Create", r#"{"Name":"keep","Opts":{"a":"b"}}"#));
    let before = assert_ok(&p.call("VolumeDriver.Get", r#"{"Name":"keep"}"#));
    let root = p.root.clone();
    let dir = p.dir.path().to_path_buf();
    let mut p = p;
    p.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(p.wait_exit(WAIT).unwrap().success());
    // Same root, new process.
    let sock = dir.join("t2.sock");
    let mut child = Command::new(BIN)
        .env_clear()
        .env("TEST_SOCKET_PATH", &sock)
        .env("TEST_ROOT", &root)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::capture(child.stderr.take().unwrap());
    let ready = lines.wait_for(WAIT, |l| l.starts_with("listening on"));
    let after = ready.map(|_| call(&sock, "VolumeDriver.Get", r#"{"Name":"keep"}"#));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(after.expect("restarted plugin listening").json(), before);
}

// ---------------------------------------------------------------------------------------------
// Knobs

#[test]
fn start_to_listening_time() {
    let p = Plugin::spawn(&[], &[]);
    let t = p.wait_listening(WAIT);
    eprintln!("berth-test-plugin: spawn to listening in {t:?}");
    assert!(t < Duration::from_secs(2), "took {t:?}");
    assert!(p.socket.exists());
    assert_ok(&p.call("Plugin.Activate", ""));
}

#[test]
fn start_delay() {
    let p = Plugin::spawn(&[("TEST_START_DELAY_MS", "600")], &[]);
    thread::sleep(Duration::from_millis(200));
    assert!(!p.socket.exists(), "socket exists before the start delay");
    let t = p.wait_listening(WAIT);
    assert!(t >= Duration::from_millis(600), "listening after {t:?}");
    assert_ok(&p.call("Plugin.Activate", ""));
}

#[test]
fn crash_after_exits_3() {
    let mut p = Plugin::start(&[("TEST_CRASH_AFTER_MS", "1000")]);
    assert_ok(&p.call("Plugin.Activate", ""));
    let st = p.wait_exit(WAIT).expect("plugin did not crash");
    assert_eq!(st.code(), Some(3));
    assert!(p.started.elapsed() >= Duration::from_millis(1000));
}

#[test]
fn never_listen() {
    let mut p = Plugin::spawn(&[("TEST_NEVER_LISTEN", "1")], &[]);
    p.stderr
        .wait_for(WAIT, |l| l.contains("not listening"))
        .expect("never-listen notice");
    thread::sleep(Duration::from_millis(300));
    assert!(!p.socket.exists());
    assert!(p.child.try_wait().unwrap().is_none(), "plugin exited");
    p.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(p.wait_exit(WAIT).expect("exit on SIGTERM").code(), Some(0));
}

#[test]
fn stderr_lines_and_report() {
    let p = Plugin::spawn(
        &[("TEST_STDERR_LINES", "3"), ("TEST_REPORT", "1")],
        &["TEST_SCOPE=global"],
    );
    p.wait_listening(WAIT);
    let err = p.stderr.snapshot();
    let numbered: Vec<&String> = err
        .iter()
        .filter(|l| l.starts_with("test-plugin"))
        .collect();
    assert_eq!(
        numbered,
        [
            "test-plugin stderr line 1",
            "test-plugin stderr line 2",
            "test-plugin stderr line 3"
        ]
    );
    let report = p
        .stdout
        .wait_for(WAIT, |l| l.starts_with("caps: "))
        .expect("report line");
    let field = |k: &str| {
        report
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("{k}= missing in {report:?}"))
    };
    for k in ["CapEff", "CapBnd"] {
        let v = field(k);
        assert!(
            v.len() == 16 && u64::from_str_radix(&v, 16).is_ok(),
            "{k}={v}"
        );
    }
    assert_eq!(field("pid"), p.child.id().to_string());
    assert_eq!(field("uid"), nix::unistd::geteuid().to_string());
    let host = nix::unistd::gethostname().unwrap();
    assert_eq!(field("hostname"), host.to_string_lossy());
    let args = p
        .stdout
        .wait_for(WAIT, |l| l.starts_with("args: "))
        .unwrap();
    assert_eq!(args, r#"args: ["TEST_SCOPE=global"]"#);
    // The argument overrode the (absent) environment knob.
    let r = p.call("VolumeDriver.Capabilities", "{}");
    assert_eq!(r.json()["Capabilities"]["Scope"], "global");
}

#[test]
fn sigterm_exits_0_and_removes_socket() {
    let mut p = Plugin::start(&[]);
    let t = Instant::now();
    p.signal(nix::sys::signal::Signal::SIGTERM);
    let st = p.wait_exit(WAIT).expect("no exit after SIGTERM");
    assert_eq!(st.code(), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    assert!(!p.socket.exists(), "socket left behind");
}

#[test]
fn ignore_sigterm_needs_sigkill() {
    use std::os::unix::process::ExitStatusExt;
    let mut p = Plugin::start(&[("TEST_IGNORE_SIGTERM", "1")]);
    p.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(p.wait_exit(Duration::from_millis(400)).is_none());
    assert_ok(&p.call("Plugin.Activate", ""));
    p.signal(nix::sys::signal::Signal::SIGKILL);
    let st = p.wait_exit(WAIT).expect("no exit after SIGKILL");
    assert_eq!(st.signal(), Some(9));
}

#[test]
fn slow_calls() {
    let p = Plugin::start(&[("TEST_SLOW_CALL_MS", "300")]);
    let t = Instant::now();
    assert_ok(&p.call("VolumeDriver.List", "{}"));
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[test]
fn hang_on_a_method() {
    let p = Plugin::start(&[("TEST_HANG_ON", "VolumeDriver.List,Path")]);
    for (method, body) in [("VolumeDriver.List", "{}\n"), ("VolumeDriver.Path", "{}\n")] {
        let mut s = connect(&p.socket);
        s.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        s.write_all(go_request(method, body, "").as_bytes())
            .unwrap();
        let mut buf = [0u8; 1];
        let e = s.read(&mut buf).expect_err("hung method answered");
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        );
    }
    // Other methods still answer while those hang.
    assert_ok(&p.call("Plugin.Activate", ""));
    assert_ok(&p.call("VolumeDriver.Capabilities", "{}"));
}

#[test]
fn activate_scope_get_null_and_call_log_knobs() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let p = Plugin::start(&[
        ("TEST_IMPLEMENTS", "VolumeDriver,NetworkDriver"),
        ("TEST_SCOPE", "global"),
        ("TEST_GET_NULL", "1"),
        ("TEST_CALL_LOG", log.to_str().unwrap()),
    ]);
    let r = p.call("Plugin.Activate", "");
    assert_eq!(
        r.json(),
        json!({"Implements": ["VolumeDriver", "NetworkDriver"]})
    );
    let r = p.call("VolumeDriver.Capabilities", "{}");
    assert_eq!(r.json(), json!({"Capabilities": {"Scope": "global"}}));
    let r = p.call("VolumeDriver.Get", r#"{"Name":"nope"}"#);
    assert_eq!(assert_ok(&r), json!({"Volume": null, "Err": ""}));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text,
        "Plugin.Activate -\nVolumeDriver.Capabilities {}\nVolumeDriver.Get {\"Name\":\"nope\"}\n"
    );
}

#[test]
fn device_and_mknod_probes() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("fuse");
    let missing = dir.path().join("missing");
    let p = Plugin::spawn(
        &[
            ("TEST_OPEN_DEVICE", missing.to_str().unwrap()),
            ("TEST_MKNOD_FUSE", node.to_str().unwrap()),
        ],
        &[],
    );
    p.wait_listening(WAIT);
    // The probe lines are read from the plugin's stdout asynchronously: wait for the last one.
    let node_open = format!("open {}: ", node.display());
    p.stdout.wait_for(WAIT, |l| l.starts_with(&node_open));
    let out = p.stdout.snapshot();
    assert!(
        out.contains(&format!(
            "open {}: ENOENT: No such file or directory",
            missing.display()
        )),
        "{out:?}"
    );
    let mknod = out
        .iter()
        .find(|l| l.starts_with(&format!("mknod {}: ", node.display())))
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(
        out.iter()
            .any(|l| l.starts_with(&format!("open {}: ", node.display()))),
        "{out:?}"
    );
    if nix::unistd::geteuid().is_root() {
        assert_eq!(mknod, &format!("mknod {}: ok", node.display()));
    } else {
        assert!(mknod.ends_with("EPERM: Operation not permitted"), "{mknod}");
    }
    drop(p);
    let p = Plugin::spawn(&[("TEST_OPEN_DEVICE", "/dev/null")], &[]);
    p.stdout
        .wait_for(WAIT, |l| l == "open /dev/null: ok")
        .expect("open /dev/null: ok");
}

/// Unmounts (lazily) on drop so a failed assertion does not leak a host mount.
struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn try_mount_probe() {
    let dir = tempfile::tempdir().unwrap();
    // Below a regular file: fails with ENOTDIR whoever runs it.
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let bad = file.join("sub");
    let p = Plugin::spawn(&[("TEST_TRY_MOUNT", bad.to_str().unwrap())], &[]);
    let want = format!("mount {}: ENOTDIR: Not a directory", bad.display());
    p.stdout
        .wait_for(WAIT, |l| l == want)
        .unwrap_or_else(|| panic!("{want:?} not in {:?}", p.stdout.snapshot()));
    drop(p);

    let target = dir.path().join("mnt");
    let _guard = Unmount(target.clone());
    let p = Plugin::spawn(&[("TEST_TRY_MOUNT", target.to_str().unwrap())], &[]);
    let line = p
        .stdout
        .wait_for(WAIT, |l| l.starts_with("mount "))
        .expect("mount line");
    if nix::unistd::geteuid().is_root() {
        // Root on the host (no namespaces here): the tmpfs is mounted, with its marker file.
        assert_eq!(line, format!("mount {}: ok", target.display()));
        assert!(target.join("mounted-by-test-plugin").exists());
    } else {
        assert!(line.ends_with("EPERM: Operation not permitted"), "{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// scripts/make-test-plugins.sh

fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

fn assert_executable(rootfs: &Path, path: &str) {
    let full = rootfs.join(path.trim_start_matches('/'));
    let meta = std::fs::metadata(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    assert!(meta.is_file(), "{} is not a file", full.display());
    assert!(
        meta.permissions().mode() & 0o111 != 0,
        "{} is not executable",
        full.display()
    );
}

#[test]
fn make_test_plugins_script() {
    use berth::plugin::config::decode_config;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let mut names = vec!["testdriver", "testdriver-privileged"];
    if have("rclone") && have("fusermount3") {
        names.extend(["rclone", "rclone-noprivs"]);
    } else {
        eprintln!(
            "SKIP rclone plugins: rclone and fusermount3 are needed \
             (apt-get install -y rclone fuse3); building only the testdriver plugins"
        );
    }
    let run = |names: &[&str]| {
        let o = Command::new("bash")
            .arg(repo.join("scripts/make-test-plugins.sh"))
            .arg(out.path())
            .args(names)
            .env("BERTH_TEST_PLUGIN_BIN", BIN)
            .env("BERTH_RCLONE_STATE_DIR", out.path().join("rclone-state"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "script failed: {stdout}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        stdout
    };
    let stdout = run(&names);
    // Idempotent: a second run rebuilds the same thing.
    std::fs::write(out.path().join("testdriver/rootfs/stale"), b"x").unwrap();
    assert_eq!(run(&names).lines().count(), stdout.lines().count());
    assert!(!out.path().join("testdriver/rootfs/stale").exists());

    for name in &names {
        assert!(
            stdout.contains(&format!("built {}", out.path().join(name).display())),
            "{stdout}"
        );
        let dir = out.path().join(name);
        let rootfs = dir.join("rootfs");
        let bytes = std::fs::read(dir.join("config.json")).unwrap();
        let c = decode_config(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let entry = c.entrypoint.clone().unwrap_or_default();
        assert!(!entry.is_empty(), "{name}: no entrypoint");
        assert_executable(&rootfs, &entry[0]);
        assert_eq!(
            c.interface.types,
            Some(vec!["docker.volumedriver/1.0".into()])
        );
        assert!(rootfs.join("run/docker/plugins").is_dir());
        assert!(rootfs.join("tmp").is_dir());
        let caps = c.linux.capabilities.clone().unwrap_or_default();
        let devices: Vec<String> = c
            .linux
            .devices
            .iter()
            .flatten()
            .filter_map(|d| d.path.clone())
            .collect();
        match *name {
            "testdriver" | "testdriver-privileged" => {
                assert_eq!(entry, ["/berth-test-plugin"]);
                assert_eq!(c.interface.socket, "testdriver.sock");
                assert_eq!(c.propagated_mount, "/data");
                assert_eq!(c.network.kind, "");
                assert_eq!(c.mounts, None);
                let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
                for knob in [
                    "TEST_ROOT",
                    "TEST_START_DELAY_MS",
                    "TEST_CRASH_AFTER_MS",
                    "TEST_NEVER_LISTEN",
                    "TEST_STDERR_LINES",
                    "TEST_REPORT",
                    "TEST_TRY_MOUNT",
                    "TEST_OPEN_DEVICE",
                    "TEST_MKNOD_FUSE",
                    "TEST_SLOW_CALL_MS",
                    "TEST_HANG_ON",
                    "TEST_IGNORE_SIGTERM",
                ] {
                    assert!(env.contains(&knob), "{name}: no env {knob}");
                }
                assert!(c
                    .env
                    .iter()
                    .flatten()
                    .all(|e| e.settable == Some(vec!["value".to_string()])));
                assert_eq!(c.args.settable, Some(vec!["value".to_string()]));
                if *name == "testdriver" {
                    assert!(caps.is_empty() && devices.is_empty());
                } else {
                    assert_eq!(caps, ["CAP_SYS_ADMIN"]);
                    assert_eq!(devices, ["/dev/fuse"]);
                }
                // The binary runs inside its rootfs (libraries copied for a dynamic build).
                if nix::unistd::geteuid().is_root() && have("chroot") {
                    let o = Command::new("chroot")
                        .arg(&rootfs)
                        .args(["/berth-test-plugin", "--help"])
                        .output()
                        .unwrap();
                    assert!(
                        o.status.success(),
                        "{name}: chroot run failed: {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                }
            }
            "rclone" | "rclone-noprivs" => {
                assert_eq!(entry, ["/usr/local/bin/rclone", "serve", "docker"]);
                assert_eq!(c.interface.socket, "rclone.sock");
                assert_eq!(c.propagated_mount, "/mnt");
                assert_eq!(c.work_dir, "/data");
                assert_executable(&rootfs, "/usr/bin/rclone");
                assert_executable(&rootfs, "/usr/bin/fusermount3");
                assert_executable(&rootfs, "/usr/bin/fusermount");
                let env: Vec<String> = c
                    .env
                    .iter()
                    .flatten()
                    .map(|e| format!("{}={}", e.name, e.value.clone().unwrap_or_default()))
                    .collect();
                assert!(env.contains(&"RCLONE_VERBOSE=0".to_string()), "{env:?}");
                assert!(env.contains(&"RCLONE_BASE_DIR=/mnt".to_string()), "{env:?}");
                if *name == "rclone" {
                    assert_eq!(caps, ["CAP_SYS_ADMIN"]);
                    assert_eq!(devices, ["/dev/fuse"]);
                    assert_eq!(c.network.kind, "host");
                    let mounts = c.mounts.clone().unwrap();
                    let state = out.path().join("rclone-state");
                    let got: Vec<(String, String, String)> = mounts
                        .iter()
                        .map(|m| {
                            (
                                m.name.clone(),
                                m.source.clone().unwrap_or_default(),
                                m.destination.clone(),
                            )
                        })
                        .collect();
                    assert_eq!(
                        got,
                        [
                            (
                                "config".to_string(),
                                state.join("config").display().to_string(),
                                "/data/config".to_string()
                            ),
                            (
                                "cache".to_string(),
                                state.join("cache").display().to_string(),
                                "/data/cache".to_string()
                            )
                        ]
                    );
                    assert!(mounts
                        .iter()
                        .all(|m| m.settable == Some(vec!["source".to_string()])));
                    assert!(state.join("config").is_dir() && state.join("cache").is_dir());
                } else {
                    assert!(caps.is_empty() && devices.is_empty());
                    assert_eq!(c.network.kind, "");
                    assert_eq!(c.mounts, None);
                    assert!(rootfs.join("data/config").is_dir());
                    assert!(rootfs.join("data/cache").is_dir());
                }
            }
            _ => unreachable!(),
        }
    }
}
