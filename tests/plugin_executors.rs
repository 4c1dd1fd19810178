//! The executors side by side: the same plugin sees the same world under the built-in
//! executor, runc and crun; the seed's runc debugging commands work as written with berth's
//! exec root; bad runtime choices fail clearly and leave nothing behind. Needs root, runc and
//! crun (Debian's packages; CI installs them).

mod common;
use common::*;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

const PLUGIN: &str = "test/driver:latest";

fn create(d: &Daemon, extra_config: &str, settings: &[&str]) -> String {
    d.create_tooled_test_plugin(PLUGIN, &["sh", "cat"], extra_config, settings)
}

fn enable(d: &Daemon) -> Response {
    d.post(&format!("/v1.41/plugins/{PLUGIN}/enable?timeout=30"))
}

fn plugin_pid(d: &Daemon) -> u32 {
    let ps = d.get("/v1.41/plugins/ps").json();
    ps[0]["Pid"].as_u64().expect("a running plugin") as u32
}

/// What a plugin sees, with host-specific paths replaced by placeholders.
fn view(d: &Daemon, id: &str) -> BTreeMap<&'static str, String> {
    let pid = plugin_pid(d);
    let logs = || d.get(&format!("/v1.41/plugins/{PLUGIN}/logs")).text();
    assert!(eventually(Duration::from_secs(5), || logs()
        .contains("open /dev/fuse:")));
    let logs = logs();
    let line = |prefix: &str| {
        logs.lines()
            .find_map(|l| {
                l.split_once(prefix)
                    .map(|(_, rest)| format!("{prefix}{rest}"))
            })
            .unwrap_or_default()
    };
    let caps = line("caps: ");
    let caps: Vec<&str> = caps
        .split_whitespace()
        .filter(|w| {
            w.starts_with("CapEff=") || w.starts_with("CapBnd=") || w.starts_with("hostname=")
        })
        .collect();
    let namespaces: Vec<String> = ["mnt", "pid", "net", "ipc", "uts", "user", "cgroup"]
        .iter()
        .map(|ns| {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
            let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
            format!("{ns}:{}", if theirs == ours { "host" } else { "own" })
        })
        .collect();
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let mut mounts: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let (_, after) = l.split_once(" - ")?;
            let fstype = after.split_whitespace().next()?;
            let point = fields[4];
            // the propagation tags name peer groups, which differ per run
            let shared = fields[6..]
                .iter()
                .take_while(|f| **f != "-")
                .any(|f| f.starts_with("shared:"));
            Some(format!(
                "{point} {fstype} {}{}",
                fields[5],
                if shared { " shared" } else { "" }
            ))
        })
        .collect();
    mounts.sort();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let devices_cgroup = cgroups
        .lines()
        .find(|l| l.contains(":devices:"))
        .unwrap_or_default()
        .replace(id, "<id>");
    let devices_list = cgroups
        .lines()
        .find_map(|l| l.split_once(":devices:").map(|(_, p)| p.to_string()))
        .map(|p| {
            let mut rules: Vec<String> =
                std::fs::read_to_string(format!("/sys/fs/cgroup/devices{p}/devices.list"))
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_string)
                    .collect();
            rules.sort();
            rules.join(", ")
        })
        .unwrap_or_default();
    BTreeMap::from([
        ("caps", caps.join(" ")),
        ("open /dev/fuse", line("open /dev/fuse: ")),
        ("mknod fuse", line("mknod /tmp/fuse: ")),
        ("namespaces", namespaces.join(" ")),
        ("mountinfo", mounts.join("\n")),
        ("devices cgroup", devices_cgroup),
        ("devices.list", devices_list),
    ])
}

/// Differences between the built-in executor and an OCI runtime that are known and
/// documented (README, "Plugin runtimes"): how `/sys/fs/cgroup` is built; whether mounts
/// other than the two shared with the host (the propagated mount and the socket directory)
/// are peers of each other (the built-in executor makes `/` rshared after `pivot_root`; runc
/// and crun keep the root private); which `/dev/null` masks a file (crun binds the host's) and
/// the flags of read-only `/proc` paths besides `ro` (crun drops nosuid/nodev/noexec there).
/// What the plugin can reach and what reaches the host are the same.
fn without_known_differences(mountinfo: &str) -> String {
    let masked_files = [
        "/proc/interrupts ",
        "/proc/keys ",
        "/proc/timer_list ",
        "/proc/kcore ",
        "/proc/latency_stats ",
        "/proc/timer_stats ",
        "/proc/sched_debug ",
    ];
    let readonly = [
        "/proc/bus ",
        "/proc/fs ",
        "/proc/irq ",
        "/proc/sys ",
        "/proc/sysrq-trigger ",
    ];
    mountinfo
        .lines()
        .filter(|l| !l.starts_with("/sys/fs/cgroup"))
        .map(|l| {
            let point = l.split(' ').next().unwrap_or_default();
            if masked_files.iter().any(|m| l.starts_with(m)) {
                return format!("{point} masked");
            }
            if readonly.iter().any(|r| l.starts_with(r)) && l.contains(" ro,") {
                return format!("{point} read-only");
            }
            let shared_with_host = l.starts_with("/data ") || l.starts_with("/run/docker/plugins ");
            if shared_with_host {
                l.to_string()
            } else {
                l.trim_end_matches(" shared").to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_same_plugin_sees_the_same_under_every_executor() {
    let mut views = Vec::new();
    for runtime in ["builtin", "runc", "crun"] {
        let d = Daemon::start_with(&["--plugin-runtime", runtime]);
        let id = create(
            &d,
            r#""Linux": {"Capabilities": ["CAP_SYS_ADMIN"], "Devices": [{"Name": "fuse", "Path": "/dev/fuse"}]},"#,
            &[
                "TEST_REPORT=1",
                "TEST_OPEN_DEVICE=/dev/fuse",
                "TEST_MKNOD_FUSE=/tmp/fuse",
                "TEST_TRY_MOUNT=/data",
            ],
        );
        let r = enable(&d);
        assert_eq!(r.status, 200, "{runtime}: {}", r.text());
        let mut v = view(&d, &id);
        // the tmpfs the plugin mounted on its propagated mount shows on the host
        let propagated = d
            .data_root
            .join("plugins")
            .join(&id)
            .join("propagated-mount");
        assert!(
            eventually(Duration::from_secs(5), || mount_fstype(&propagated)
                .as_deref()
                == Some("tmpfs")),
            "{runtime}: the plugin's mount did not reach {}",
            propagated.display()
        );
        assert_eq!(
            d.post(&format!("/v1.41/plugins/{PLUGIN}/disable")).status,
            200
        );
        assert!(
            mounts_under(d.dir.path()).is_empty(),
            "{runtime}: {:?}",
            mounts_under(d.dir.path())
        );
        let mountinfo = v["mountinfo"].clone();
        v.insert("mountinfo", without_known_differences(&mountinfo));
        views.push((runtime, v, mountinfo));
    }
    let (_, builtin, builtin_mounts) = &views[0];
    for shared in [
        "/data ext4 rw,relatime shared",
        "/run/docker/plugins ext4 rw,relatime shared",
    ] {
        assert!(builtin["mountinfo"].lines().any(|l| l.ends_with(" shared") && l.starts_with(shared.split(' ').next().unwrap())), "{shared}: {builtin_mounts}");
    }
    assert!(
        builtin["caps"].contains("CapEff=00000000a82425fb"),
        "{builtin:?}"
    );
    assert_eq!(builtin["open /dev/fuse"], "open /dev/fuse: ok");
    assert!(
        builtin["namespaces"].contains("mnt:own") && builtin["namespaces"].contains("user:host")
    );
    for (runtime, v, mounts) in &views[1..] {
        for (key, value) in v {
            assert_eq!(
                value, &builtin[key],
                "{key} differs under {runtime}\nbuiltin mounts:\n{builtin_mounts}\n{runtime} mounts:\n{mounts}"
            );
        }
    }
}

fn runc(args: &[&str]) -> std::process::Output {
    Command::new("runc")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runc (Debian's package)")
}

/// The seed's "Using runc to obtain logfiles and shell into the plugin", word for word with
/// berth's exec root in place of /run/docker.
#[test]
fn the_seeds_runc_commands_work_with_berths_exec_root() {
    let d = Daemon::start_with(&["--plugin-runtime", "runc"]);
    let id = create(&d, "", &[]);
    assert_eq!(enable(&d).status, 200);
    let root = d.exec_root.join("runtime-runc/plugins.moby");
    let root = root.to_str().unwrap();

    let list = runc(&["--root", root, "list"]);
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{listing}");
    assert!(listing.starts_with("ID "), "{listing}");
    let row = listing
        .lines()
        .find(|l| l.starts_with(&id))
        .expect(&listing);
    assert!(row.contains(" running "), "{row}");
    assert!(
        row.contains(
            &d.exec_root
                .join("runtime-runc/bundles")
                .join(&id)
                .display()
                .to_string()
        ),
        "{row}"
    );

    let cat = runc(&["--root", root, "exec", &id, "cat", "/var/log/plugin.log"]);
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "plugin log line\n");

    let shell = format!("runc --root {root} exec -t {id} sh");
    let mut script = Command::new("script")
        .args(["-qfec", &shell, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = script.stdin.as_mut().unwrap();
        stdin.write_all(b"echo inside=$((6*7)); exit 0\n").unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while script.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "runc exec -t did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = script.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("inside=42"));

    // disabled: runc no longer lists it, and the bundle is gone
    assert_eq!(
        d.post(&format!("/v1.41/plugins/{PLUGIN}/disable")).status,
        200
    );
    let listing = String::from_utf8_lossy(&runc(&["--root", root, "list"]).stdout).into_owned();
    assert!(!listing.contains(&id), "{listing}");
    assert!(!d.exec_root.join("runtime-runc/bundles").join(&id).exists());
}

#[test]
fn an_unknown_runtime_name_stops_the_daemon_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["daemon", "--plugin-runtime", "runsc", "--config-file"])
        .arg(dir.path().join("none.json"))
        .arg("--host")
        .arg(format!("unix://{}/b.sock", dir.path().display()))
        .output()
        .unwrap();
    // Refused by the flag parser (a usage error, as every bad flag value), naming the flag.
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'--plugin-runtime <NAME>'")
            && stderr.contains("unknown plugin runtime \"runsc\": expected builtin, runc or crun"),
        "{stderr}"
    );
}

/// A runtime that is missing or fails: enable names it, the plugin stays disabled and
/// nothing is left (no process, mount, bundle or container state).
#[test]
fn a_missing_or_failing_runtime_fails_enable_and_leaves_nothing() {
    let bin = tempfile::tempdir().unwrap();
    let path = bin.path().display().to_string();
    let d = Daemon::start_with_env(&["--plugin-runtime", "runc"], &[("PATH", &path)]);
    let id = create(&d, "", &[]);
    let r = enable(&d);
    assert_eq!(
        (r.status, r.message()),
        (
            500,
            format!(
                "starting plugin {PLUGIN}: plugin runtime \"runc\": executable file not found in $PATH"
            )
        )
    );
    let assert_nothing_left = |d: &Daemon| {
        assert_eq!(
            d.get(&format!("/v1.41/plugins/{PLUGIN}/json")).json()["Enabled"],
            false
        );
        assert!(plugin_processes(&id).is_empty());
        assert!(
            mounts_under(d.dir.path()).is_empty(),
            "{:?}",
            mounts_under(d.dir.path())
        );
        let bundles = d.exec_root.join("runtime-runc/bundles");
        assert!(!bundles.join(&id).exists(), "bundle left behind");
        let state = d.exec_root.join("runtime-runc/plugins.moby").join(&id);
        assert!(!state.exists(), "container state left behind");
    };
    assert_nothing_left(&d);

    // a runtime that fails: its words come back
    let fake = bin.path().join("runc");
    std::fs::write(
        &fake,
        "#!/bin/sh\nfor a; do case $a in --log=*) log=${a#--log=};; esac; done\n\
         echo '{\"level\":\"error\",\"msg\":\"simulated failure\"}' >> \"$log\"\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = enable(&d);
    assert_eq!(r.status, 500);
    assert_eq!(
        r.message(),
        format!("starting plugin {PLUGIN}: runc create: simulated failure")
    );
    assert_nothing_left(&d);

    // one that fails before it writes its log: what it printed comes back
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'flag provided but not defined: -x' >&2\nexit 1\n",
    )
    .unwrap();
    let r = enable(&d);
    assert_eq!(r.status, 500);
    assert_eq!(
        r.message(),
        format!(
            "starting plugin {PLUGIN}: runc create: exit status: 1; \
             last output: flag provided but not defined: -x"
        )
    );
    assert_nothing_left(&d);
}
