//! `enable` / `disable` with real plugin processes in namespaces: readiness, failure clean-up,
//! supervision, logs, restarts of the daemon. Runs as root (CI does).

mod common;
use common::*;
use std::time::Duration;

const PLUGIN: &str = "test/driver:latest";

fn daemon() -> Daemon {
    Daemon::start_with(&["--plugin-start-timeout", "3"])
}

fn enable(d: &Daemon) -> Response {
    d.enable_plugin(PLUGIN)
}

fn disable(d: &Daemon) -> Response {
    d.disable_plugin(PLUGIN)
}

fn enabled(d: &Daemon) -> bool {
    d.plugin(PLUGIN).unwrap()["Enabled"] == true
}

fn socket(d: &Daemon, id: &str) -> std::path::PathBuf {
    d.exec_root.join("plugins").join(id).join("testdriver.sock")
}

fn activate(d: &Daemon, id: &str) -> std::io::Result<Response> {
    raw_request(&socket(d, id), "POST", "/Plugin.Activate", &[], b"{}")
}

fn logs(d: &Daemon) -> String {
    d.get(&format!("/v1.41/plugins/{PLUGIN}/logs")).text()
}

#[test]
fn enable_answers_on_the_socket_and_disable_releases_everything() {
    let d = daemon();
    let id = d.create_test_plugin(PLUGIN, "", &[]);
    let r = enable(&d);
    assert_eq!(r.status, 200, "{}", r.text());
    let activated = activate(&d, &id).expect("socket accepts connections once enable returns");
    assert_eq!(activated.json()["Implements"][0], "VolumeDriver");
    assert!(enabled(&d));
    assert_eq!(
        plugin_processes(&id).len(),
        1,
        "one plugin process in the plugin's cgroup"
    );

    let again = enable(&d);
    again.assert_error(
        409,
        &format!("plugin already enabled: plugin {PLUGIN} is enabled"),
    );
    let rm = d.remove_plugin(PLUGIN, false);
    rm.assert_error(409, &format!("plugin {PLUGIN} is enabled"));

    let r = disable(&d);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(eventually(Duration::from_secs(5), || plugin_processes(&id).is_empty()));
    assert_nothing_mounted_under(d.dir.path());
    assert!(!socket(&d, &id).exists());
    let again = disable(&d);
    again.assert_error(
        409,
        &format!("plugin is already disabled: plugin {PLUGIN} found but disabled"),
    );

    // Cycles work and `rm -f` of an enabled plugin disables it first.
    for _ in 0..3 {
        assert_eq!(enable(&d).status, 200);
        assert!(activate(&d, &id).is_ok());
        assert_eq!(disable(&d).status, 200);
    }
    assert_eq!(enable(&d).status, 200);
    let rm = d.remove_plugin(PLUGIN, true);
    assert_eq!(rm.status, 200, "{}", rm.text());
    assert!(eventually(Duration::from_secs(5), || plugin_processes(&id).is_empty()));
    assert_nothing_mounted_under(d.dir.path());
    assert!(!d.exec_root.join("plugins").join(&id).exists());
}

#[test]
fn enable_timeout_parameter_is_mandatory() {
    let d = daemon();
    d.create_test_plugin(PLUGIN, "", &[]);
    let r = d.request("POST", &format!("/v1.41/plugins/{PLUGIN}/enable"), &[], &[]);
    r.assert_error(500, "strconv.Atoi: parsing \"\": invalid syntax");
    let r = d.request(
        "POST",
        &format!("/v1.44/plugins/{PLUGIN}/enable?timeout=x"),
        &[],
        &[],
    );
    r.assert_error(400, "strconv.Atoi: parsing \"x\": invalid syntax");
}

#[test]
fn a_plugin_that_never_listens_fails_enable_and_leaves_nothing() {
    let d = daemon();
    let id = d.create_test_plugin(PLUGIN, "", &["TEST_NEVER_LISTEN=1"]);
    let started = std::time::Instant::now();
    let r = enable(&d);
    assert_eq!(r.status, 500);
    let expected = format!(
        "dial unix {}: connect: no such file or directory",
        socket(&d, &id).display()
    );
    assert_eq!(r.message(), expected);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!enabled(&d));
    assert!(eventually(Duration::from_secs(5), || plugin_processes(&id).is_empty()));
    assert_nothing_mounted_under(d.dir.path());
}

#[test]
fn a_plugin_that_exits_at_start_fails_enable_at_once_with_its_output() {
    let d = daemon();
    d.create_test_plugin(
        PLUGIN,
        "",
        &[
            "TEST_NEVER_LISTEN=1",
            "TEST_CRASH_AFTER_MS=0",
            "TEST_STDERR_LINES=1",
        ],
    );
    let started = std::time::Instant::now();
    let r = enable(&d);
    assert_eq!(r.status, 500);
    assert!(
        r.message().contains("plugin exited (exit status 3)"),
        "{}",
        r.message()
    );
    assert!(
        r.message().contains("crashing with status 3"),
        "the plugin's last words: {}",
        r.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no waiting for the deadline"
    );
}

#[test]
fn output_is_logged_with_the_plugin_id_and_served_per_plugin() {
    let d = daemon();
    let id = d.create_test_plugin(PLUGIN, "", &["TEST_STDERR_LINES=3", "TEST_REPORT=1"]);
    assert_eq!(enable(&d).status, 200);
    assert!(eventually(Duration::from_secs(5), || logs(&d)
        .contains("test-plugin stderr line 3")));
    let text = logs(&d);
    assert!(
        text.lines()
            .any(|l| l.contains(" stderr test-plugin stderr line 1")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.contains(" stdout caps:")), "{text}");
    let tail = d
        .get(&format!("/v1.41/plugins/{PLUGIN}/logs?tail=1"))
        .text();
    assert_eq!(tail.lines().count(), 1);
    assert!(eventually(Duration::from_secs(5), || d
        .log()
        .lines()
        .any(|l| l.contains("test-plugin stderr line 2")
            && l.ends_with(&format!("plugin={id} stream=stderr")))));
}

#[test]
fn a_crashing_plugin_is_restarted_with_backoff_and_stays_enabled() {
    let d = daemon();
    let id = d.create_test_plugin(PLUGIN, "", &["TEST_CRASH_AFTER_MS=300"]);
    assert_eq!(enable(&d).status, 200);
    // 300 ms of life, then 100 ms, 200 ms, 400 ms of backoff between restarts.
    assert!(eventually(Duration::from_secs(10), || logs(&d)
        .matches("plugin restarted")
        .count()
        >= 3));
    let text = logs(&d);
    assert!(
        text.contains("plugin exited unexpectedly (exit status 3); restart 1 in 100ms"),
        "{text}"
    );
    assert!(text.contains("restart 2 in 200ms"), "{text}");
    assert!(text.contains("restart 3 in 400ms"), "{text}");
    assert!(enabled(&d));
    assert_eq!(disable(&d).status, 200);
    assert!(eventually(Duration::from_secs(5), || plugin_processes(&id).is_empty()));
    let settled = logs(&d);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(logs(&d), settled, "no restarts after disable");
}

#[test]
fn a_plugin_ignoring_sigterm_is_killed_after_the_grace_period() {
    let d = Daemon::start_with(&["--plugin-start-timeout", "3"]);
    let id = d.create_test_plugin(PLUGIN, "", &["TEST_IGNORE_SIGTERM=1"]);
    assert_eq!(enable(&d).status, 200);
    let started = std::time::Instant::now();
    assert_eq!(disable(&d).status, 200);
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "the grace period is honoured"
    );
    assert!(plugin_processes(&id).is_empty());
}

#[test]
fn enabled_plugins_come_back_after_a_restart_and_after_kill_9() {
    let mut d = daemon();
    let id = d.create_test_plugin(PLUGIN, "", &[]);
    assert_eq!(enable(&d).status, 200);

    d.stop();
    assert!(
        eventually(Duration::from_secs(15), || plugin_processes(&id).is_empty()),
        "a stopped daemon stops its plugins"
    );
    d.spawn();
    assert!(
        activate(&d, &id).is_ok(),
        "enabled again before the API serves"
    );
    assert!(enabled(&d));

    d.kill9();
    assert!(
        eventually(Duration::from_secs(5), || plugin_processes(&id).is_empty()),
        "no plugin process outlives a killed daemon"
    );
    d.spawn();
    assert!(activate(&d, &id).is_ok());
    assert_eq!(plugin_processes(&id).len(), 1, "exactly one plugin process");
    assert_eq!(disable(&d).status, 200);
    assert_nothing_mounted_under(d.dir.path());
}

#[test]
fn capabilities_are_exactly_the_granted_ones() {
    let d = daemon();
    d.create_test_plugin(PLUGIN, "", &["TEST_TRY_MOUNT=/tmp", "TEST_REPORT=1"]);
    assert_eq!(enable(&d).status, 200);
    assert!(eventually(Duration::from_secs(5), || logs(&d).contains("mount /tmp:")));
    let text = logs(&d);
    assert!(
        text.contains("mount /tmp: EPERM") || text.contains("Operation not permitted"),
        "{text}"
    );
    // Docker's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
    // NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP = 0xa80425fb.
    assert!(text.contains("CapEff=00000000a80425fb"), "{text}");
    assert!(text.contains("CapBnd=00000000a80425fb"), "{text}");
    let rm = d.remove_plugin(PLUGIN, true);
    assert_eq!(rm.status, 200);

    d.create_test_plugin(
        PLUGIN,
        r#""Linux": {"Capabilities": ["CAP_SYS_ADMIN"]},"#,
        &["TEST_TRY_MOUNT=/tmp", "TEST_REPORT=1"],
    );
    assert_eq!(enable(&d).status, 200);
    assert!(eventually(Duration::from_secs(5), || logs(&d).contains("mount /tmp:")));
    let text = logs(&d);
    assert!(text.contains("mount /tmp: ok"), "{text}");
    assert!(text.contains("CapEff=00000000a82425fb"), "{text}");
}

#[test]
fn devices_are_only_the_listed_ones() {
    let d = daemon();
    d.create_test_plugin(PLUGIN, "", &["TEST_MKNOD_FUSE=/tmp/fuse"]);
    assert_eq!(enable(&d).status, 200);
    assert!(eventually(Duration::from_secs(5), || logs(&d).contains("/tmp/fuse")));
    let text = logs(&d);
    assert!(
        !text.contains("open /tmp/fuse: ok"),
        "an unlisted device cannot be opened: {text}"
    );
    let rm = d.remove_plugin(PLUGIN, true);
    assert_eq!(rm.status, 200);

    d.create_test_plugin(
        PLUGIN,
        r#""Linux": {"Devices": [{"Name": "fuse", "Path": "/dev/fuse"}]},"#,
        &["TEST_OPEN_DEVICE=/dev/fuse"],
    );
    assert_eq!(enable(&d).status, 200);
    assert!(eventually(Duration::from_secs(5), || logs(&d)
        .contains("open /dev/fuse:")));
    assert!(logs(&d).contains("open /dev/fuse: ok"), "{}", logs(&d));
}
