//! berth under systemd's protocols, driven by a test harness: the API socket passed by
//! `systemd-socket-activate` (`LISTEN_FDS`, `LISTEN_FDNAMES`; `-H fd://` and `-H fd://NAME`),
//! notifications read from a `NOTIFY_SOCKET` the test owns (READY once the API answers,
//! RELOADING/READY on SIGHUP, STOPPING on SIGTERM), and a legacy plugin started by socket
//! activation on berth's first call. (The shipped unit files are run by a real systemd user
//! manager in `scripts/test-package.sh`.)

mod common;
use common::*;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `--data-root`, `--exec-root` and `--config-file` (absent until a test writes it) in `dir`.
fn roots(dir: &std::path::Path) -> Vec<String> {
    [
        "data-root:data",
        "exec-root:exec",
        "config-file:daemon.json",
    ]
    .iter()
    .flat_map(|pair| {
        let (flag, name) = pair.split_once(':').unwrap();
        [format!("--{flag}"), dir.join(name).display().to_string()]
    })
    .collect()
}

/// berth started by `systemd-socket-activate` on first connection to `dir/api.sock`.
struct Activated {
    dir: tempfile::TempDir,
    child: Child,
    notify: UnixDatagram,
}

impl Activated {
    /// `fdname`: the socket's name; `host`: berth's `-H`.
    fn start(fdname: &str, host: &str) -> Activated {
        Activated::start_in(short_tempdir("bts"), fdname, host, &[])
    }

    /// As [`Activated::start`], in `dir`, with more `berth daemon` arguments.
    fn start_in(dir: tempfile::TempDir, fdname: &str, host: &str, extra: &[&str]) -> Activated {
        let notify = UnixDatagram::bind(dir.path().join("notify.sock")).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let child = Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(dir.path().join("api.sock"))
            .arg(format!("--fdname={fdname}"))
            .arg("-E")
            .arg(format!(
                "NOTIFY_SOCKET={}",
                dir.path().join("notify.sock").display()
            ))
            .arg(env!("CARGO_BIN_EXE_berth"))
            .args(["daemon", "-H", host])
            .args(roots(dir.path()))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("berth.log")).unwrap())
            .spawn()
            .expect("systemd-socket-activate (package systemd)");
        let socket = dir.path().join("api.sock");
        assert!(
            eventually(Duration::from_secs(10), || socket.exists()),
            "the activator did not create {}",
            socket.display()
        );
        Activated { dir, child, notify }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berth.log")).unwrap_or_default()
    }

    /// The next notification datagram.
    fn next_notification(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self
            .notify
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification: {e}\n{}", self.log()));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_passed_socket_starts_berth_which_says_ready_reloads_and_stops() {
    let mut a = Activated::start("berth-api", "fd://berth-api");
    // Nothing runs until the first connection; that request is answered by the berth it starts.
    let started = Instant::now();
    let r = raw_request(&a.socket(), "GET", "/_ping", &[], &[]).unwrap();
    assert_eq!(r.status, 200, "{}", a.log());
    eprintln!(
        "first /_ping answered {:?} after connecting",
        started.elapsed()
    );
    let ready = a.next_notification();
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(
        a.log().contains("API listen on fd://berth-api"),
        "{}",
        a.log()
    );

    std::fs::write(a.dir.path().join("daemon.json"), r#"{"log-level":"warn"}"#).unwrap();
    a.signal(nix::sys::signal::Signal::SIGHUP);
    let reloading = a.next_notification();
    assert!(reloading.contains("RELOADING=1"), "{reloading}");
    let reloaded = a.next_notification();
    assert!(reloaded.contains("READY=1"), "{reloaded}");
    assert!(
        reloaded.contains("STATUS=Configuration reloaded"),
        "{reloaded}"
    );
    assert!(
        a.log().contains("Reloaded configuration: log-level warn"),
        "{}",
        a.log()
    );

    a.signal(nix::sys::signal::Signal::SIGTERM);
    let stopping = a.next_notification();
    assert!(stopping.contains("STOPPING=1"), "{stopping}");
    let status = a.child.wait().unwrap();
    assert!(status.success(), "{status}\n{}", a.log());
    // The socket is the activator's: berth leaves it where it was.
    assert!(a.socket().exists());
}

/// Readiness is known without berth sending its API a request of its own: an authorization
/// plugin that refuses `/_ping` neither delays READY nor sees any request but the client's.
#[test]
fn ready_comes_without_a_request_of_berths_own() {
    let dir = short_tempdir("bts");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let seen = dir.path().join("authz.log");
    let _policy = host_test_plugin(
        &plugins.join("policy.sock"),
        &dir.path().join("volumes"),
        &[
            ("TEST_IMPLEMENTS", "authz"),
            ("TEST_AUTHZ_RULES", "req deny GET /_ping msg=no pings"),
            ("TEST_AUTHZ_LOG", seen.to_str().unwrap()),
        ],
    );
    let plugin_dir = plugins.display().to_string();
    let a = Activated::start_in(
        dir,
        "berth-api",
        "fd://berth-api",
        &[
            "--legacy-plugin-dir",
            &plugin_dir,
            "--authorization-plugin",
            "policy",
        ],
    );
    let r = raw_request(&a.socket(), "GET", "/_ping", &[], &[]).unwrap();
    assert_eq!(r.status, 403, "{}", a.log());
    let ready = a.next_notification();
    assert!(ready.contains("READY=1"), "{ready}");
    let seen = std::fs::read_to_string(seen).unwrap();
    assert_eq!(seen.matches("RequestUri").count(), 1, "{seen}");
}

#[test]
fn fd_without_a_name_takes_every_passed_socket_and_a_wrong_name_is_an_error() {
    let a = Activated::start("whatever", "fd://");
    let r = raw_request(&a.socket(), "GET", "/_ping", &[], &[]).unwrap();
    assert_eq!(r.status, 200, "{}", a.log());

    let mut b = Activated::start("berth-api", "fd://other");
    // berth starts, finds no socket called `other`, and exits naming what it was given.
    let _ = raw_request(&b.socket(), "GET", "/_ping", &[], &[]);
    let status = b.child.wait().unwrap();
    assert!(!status.success());
    let log = b.log();
    assert!(
        log.contains(r#"--host fd://other: no socket named "other" was passed by systemd (passed: berth-api)"#),
        "{log}"
    );
}

#[test]
fn started_by_hand_fd_hosts_fail_clearly() {
    let dir = short_tempdir("bts");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["daemon", "-H", "fd://"])
        .args(roots(dir.path()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_mentions(
        &err,
        "--host fd://: no sockets were passed by systemd (LISTEN_FDS) for fd://",
    );
}

#[test]
fn flag_errors_name_the_flag_and_file_errors_the_file() {
    let dir = short_tempdir("bts");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["daemon", "--log-level", "verbose"]);
    assert_eq!(code, Some(2));
    assert_mentions(&err, "'--log-level <LEVEL>'");
    assert!(!err.contains("daemon.json"), "{err}");

    let file = dir.path().join("daemon.json");
    std::fs::write(&file, r#"{"log-level":"verbose"}"#).unwrap();
    let (code, err) = run(&["daemon", "--config-file", file.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    let wanted = format!(
        "unable to configure the berth daemon with file {}: log-level: unable to parse logging level: verbose",
        file.display()
    );
    assert_mentions(&err, &wanted);

    let (code, out) = run(&["daemon", "--help"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, _) = run(&["version"]);
    assert_eq!(code, Some(0));

    // Both sides named as dockerd names them, values as written.
    std::fs::write(&file, r#"{"hosts":["unix:///tmp/bts-a.sock"]}"#).unwrap();
    let (code, err) = run(&[
        "daemon",
        "--config-file",
        file.to_str().unwrap(),
        "-H",
        "unix:///tmp/bts-b.sock",
    ]);
    assert_eq!(code, Some(1));
    assert_mentions(&err, "specified both as a flag and in the configuration file: hosts: (from flag: [unix:///tmp/bts-b.sock], from file: [unix:///tmp/bts-a.sock])");
}

/// A legacy plugin whose socket is held by a socket activator: berth's first call starts it.
#[test]
fn a_socket_activated_legacy_plugin_is_started_by_the_first_call() {
    let dir = short_tempdir("bts");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let socket = plugins.join("sa.sock");
    let calls = dir.path().join("calls.log");
    let mut activator = Command::new("systemd-socket-activate");
    activator
        .arg("-l")
        .arg(&socket)
        .arg("-E")
        .arg(format!(
            "TEST_ROOT={}",
            dir.path().join("volumes").display()
        ))
        .arg("-E")
        .arg(format!("TEST_CALL_LOG={}", calls.display()))
        .arg(env!("CARGO_BIN_EXE_berth-test-plugin"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _plugin = HostProcess::spawn("socket-activated test plugin", &mut activator);
    assert!(eventually(Duration::from_secs(10), || socket.exists()));
    assert!(!calls.exists(), "the plugin ran before anyone called it");

    let d = Daemon::start_with(&["--legacy-plugin-dir", plugins.to_str().unwrap()]);
    let r = d.post_json("/volumes/create", r#"{"Name":"sav","Driver":"sa"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["Driver"], "sa");
    let log = std::fs::read_to_string(&calls).unwrap();
    assert!(log.starts_with("Plugin.Activate"), "{log}");
    assert!(log.contains("VolumeDriver.Create"), "{log}");
    assert!(dir.path().join("volumes/sav").is_dir());
    assert_eq!(d.delete("/volumes/sav").status, 204);
}

/// Fails showing the whole text, so that a changed message is seen as it now reads.
fn assert_mentions(text: &str, wanted: &str) {
    assert!(text.contains(wanted), "{text}");
}
