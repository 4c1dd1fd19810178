//! Debugging plugins the way the seed shows: `berth plugin ps`, `berth plugin exec` (plain
//! and with a TTY driven through `script`), and what an exec'd command may do. Runs under the
//! executor `BERTH_TEST_PLUGIN_RUNTIME` names, like the runtime bar. Needs root (CI has it).

mod common;
use common::*;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const PLUGIN: &str = "test/driver:latest";
const TOOLS: [&str; 7] = ["sh", "cat", "ls", "id", "true", "sleep", "readlink"];

fn berth_plugin(d: &Daemon, args: &[&str]) -> Output {
    berth_plugin_with_env(d, args, &[])
}

/// `berth plugin ARGS` with `env` set in the client's environment.
fn berth_plugin_with_env(d: &Daemon, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("plugin")
        .arg("-H")
        .arg(format!("unix://{}", d.socket.display()))
        .args(args)
        .env_remove("DOCKER_HOST")
        .env_remove("BERTH_UNSET_HERE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run berth plugin")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Creates the test driver with a shell and a few tools in its rootfs (and the seed's
/// `/var/log/plugin.log`), applies `settings`; returns its ID.
fn create_debuggable_plugin(d: &Daemon, extra_config: &str, settings: &[&str]) -> String {
    d.create_tooled_test_plugin(PLUGIN, &TOOLS, extra_config, settings)
}

fn enable(d: &Daemon) {
    let r = d.post(&format!("/v1.41/plugins/{PLUGIN}/enable?timeout=30"));
    assert_eq!(r.status, 200, "{}", r.text());
}

fn status_hex(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("{key} missing in {status}"))
}

#[test]
fn exec_joins_the_plugin_with_no_more_than_its_privileges() {
    let d = Daemon::start_with(&["--plugin-start-timeout", "5"]);

    // not running yet: Docker's wording for a disabled plugin
    let id = create_debuggable_plugin(&d, "", &[]);
    let out = berth_plugin(&d, &["exec", "test/driver", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        format!("Error response from daemon: plugin {PLUGIN} found but disabled")
    );
    let out = berth_plugin(&d, &["exec", "no/such", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
    let out = berth_plugin(&d, &["ps"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).lines().count(), 1, "only the header");

    enable(&d);
    let ps = berth_plugin(&d, &["ps", "--no-trunc"]);
    let ps = text(&ps.stdout);
    let row = ps.lines().nth(1).unwrap_or_else(|| panic!("{ps}"));
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(fields[0], id, "{ps}");
    assert_eq!(fields[1], PLUGIN);
    assert_eq!(fields[3], "running");
    assert!(is_rfc3339_seconds(fields[4]), "{ps}");
    let pid: u32 = fields[2].parse().unwrap();
    let quiet = berth_plugin(&d, &["ps", "-q"]);
    assert_eq!(text(&quiet.stdout), format!("{}\n", &id[..12]));

    // the command sees the plugin's namespaces and root ...
    let out = berth_plugin(
        &d,
        &[
            "exec",
            "test/driver",
            "sh",
            "-c",
            "for n in mnt pid net ipc uts; do echo $n=$(readlink /proc/self/ns/$n); done; \
             echo pid=$$; ls /bin/berth-test-plugin; cat /proc/self/status",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for ns in ["mnt", "pid", "net", "ipc", "uts"] {
        let plugin_ns = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert!(
            stdout.contains(&format!("{ns}={}\n", plugin_ns.display())),
            "{ns}: {stdout}"
        );
    }
    assert!(stdout.contains("/bin/berth-test-plugin\n"), "{stdout}");
    // ... and no more than its capabilities: exactly the plugin's own sets
    let plugin_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for key in ["CapEff:", "CapBnd:", "CapPrm:"] {
        assert_eq!(
            status_hex(&stdout, key),
            status_hex(&plugin_status, key),
            "{key}"
        );
    }
    assert_eq!(status_hex(&stdout, "CapAmb:"), "0000000000000000");
    // ... in its cgroups (device rules included)
    let out = berth_plugin(&d, &["exec", "test/driver", "cat", "/proc/self/cgroup"]);
    let theirs = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let devices = |s: &str| {
        s.lines()
            .find(|l| l.contains(":devices:"))
            .map(str::to_string)
    };
    assert_eq!(devices(&text(&out.stdout)), devices(&theirs));
    assert!(
        plugin_processes(&id).len() == 1,
        "the exec'd command has exited"
    );

    // exit status, environment, working directory
    let out = berth_plugin(&d, &["exec", "test/driver", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    let out = berth_plugin(
        &d,
        &[
            "exec",
            "-e",
            "GREETING=hi",
            "-w",
            "/tmp",
            "test/driver",
            "sh",
            "-c",
            "echo $GREETING $(pwd) $PATH",
        ],
    );
    assert_eq!(
        text(&out.stdout),
        "hi /tmp /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    );
    // a bare -e NAME carries the client's value; one the client has not set is dropped
    let out = berth_plugin_with_env(
        &d,
        &[
            "exec",
            "-e",
            "BERTH_FROM_CLIENT",
            "-e",
            "BERTH_UNSET_HERE",
            "test/driver",
            "sh",
            "-c",
            "echo $BERTH_FROM_CLIENT ${BERTH_UNSET_HERE-unset}",
        ],
        &[("BERTH_FROM_CLIENT", "carried")],
    );
    assert_eq!(text(&out.stdout), "carried unset\n");

    // a missing command: 127 and Docker's message
    let out = berth_plugin(&d, &["exec", "test/driver", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        text(&out.stderr).trim(),
        "OCI runtime exec failed: exec failed: unable to start container process: \
         exec: \"no-such-command\": executable file not found in $PATH: unknown"
    );

    // the seed's log file, read through exec
    let out = berth_plugin(&d, &["exec", "test/driver", "cat", "/var/log/plugin.log"]);
    assert_eq!(text(&out.stdout), "plugin log line\n");

    // disabled again: refused, and nothing of the plugin is left
    let r = d.post(&format!("/v1.41/plugins/{PLUGIN}/disable"));
    assert_eq!(r.status, 200);
    let out = berth_plugin(&d, &["exec", "test/driver", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(eventually(Duration::from_secs(5), || plugin_processes(&id).is_empty()));
}

/// Without `-H`, a unix `DOCKER_HOST` names the daemon; a tcp one is ignored (berth serves
/// only unix sockets) and the default socket is tried.
#[test]
fn the_daemon_is_found_through_docker_host() {
    let d = Daemon::start();
    let ps = |docker_host: &str| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["plugin", "ps"])
            .env("DOCKER_HOST", docker_host)
            .output()
            .unwrap()
    };
    let out = ps(&format!("unix://{}", d.socket.display()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ID "));
    if std::path::Path::new("/run/berth/berth.sock").exists() {
        return; // a berth daemon on the default socket would answer
    }
    let out = ps("tcp://127.0.0.1:1");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unix:///run/berth/berth.sock"),
        "{}",
        text(&out.stderr)
    );
}

/// `berth plugin exec -t ... sh` driven through a pty by `script`: the shell has a terminal
/// from the plugin's devpts, runs a command, and its exit status comes back.
#[test]
fn an_interactive_shell_through_a_pty() {
    let d = Daemon::start_with(&["--plugin-start-timeout", "5"]);
    create_debuggable_plugin(&d, "", &[]);
    enable(&d);
    let berth = env!("CARGO_BIN_EXE_berth");
    let command = format!(
        "{berth} plugin -H unix://{} exec -it test/driver sh",
        d.socket.display()
    );
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        stdin
            .write_all(b"readlink /proc/self/fd/0; echo sum=$((20+22)); echo term=$TERM; exit 3\n")
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the interactive shell did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("/dev/pts/0"), "{stdout}");
    assert!(stdout.contains("sum=42"), "{stdout}");
    assert!(stdout.contains("term=xterm"), "{stdout}");
}
