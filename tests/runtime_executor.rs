//! The Linux executor against the real kernel: a tiny rootfs (sh, cat, ls, mount, mkdir,
//! mknod, sleep and their libraries, copied from the host) run through `LinuxExecutor` with
//! specs from `build_spec`. Needs root (CI runs as root); skipped otherwise.
//!
//! The init program is the built `berth` binary (`berth plugin-init`), or `BERTH_INIT_PROGRAM`.
//! Every wait is bounded; only processes these tests start are signalled.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth::mounts::read_mountinfo;
use berth::plugin::config::{decode_config, PluginSettings};
use berth::plugin::spec::build_spec;
use berth::plugin::store::Plugin;
use berth::runtime::executor::{Executor, PluginProcess};
use berth::runtime::linux::LinuxExecutor;
use berth::runtime::oci::{OciExecutor, OciRuntime};
use berth::runtime::spec::{PluginPaths, PluginSpec, DEFAULT_CAPABILITIES};
use nix::sys::signal::Signal;

const TIMEOUT: Duration = Duration::from_secs(20);
const CGROUP_PARENT: &str = "berth-test";

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("not root: Linux executor integration test skipped");
    false
}

fn init_program() -> PathBuf {
    std::env::var_os("BERTH_INIT_PROGRAM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_berth")))
}

fn linux_executor() -> LinuxExecutor {
    LinuxExecutor::new()
        .with_init_program(init_program())
        .with_cgroup_parent(CGROUP_PARENT)
}

/// The executor under test: the built-in one, or runc / crun when
/// `BERTH_TEST_PLUGIN_RUNTIME` names one (their state under a per-process temp directory).
fn executor() -> Box<dyn Executor> {
    let runtime = std::env::var("BERTH_TEST_PLUGIN_RUNTIME").unwrap_or_default();
    let oci = match runtime.as_str() {
        "runc" => OciRuntime::Runc,
        "crun" => OciRuntime::Crun,
        _ => return Box::new(linux_executor()),
    };
    let exec_root = PathBuf::from(format!("/tmp/brxoci{:x}", std::process::id()));
    Box::new(
        OciExecutor::new(oci, &exec_root)
            .with_shim_program(init_program())
            .with_cgroup_parent(CGROUP_PARENT),
    )
}

/// The built-in executor's setup errors are its own words; an OCI runtime words them its way.
fn builtin() -> bool {
    executor().name() == "builtin"
}

/// A plugin layout under a short /tmp directory: `<dir>/plugins/<id>/{rootfs,propagated-mount}`
/// and `<dir>/run/plugins/<id>` for the socket directory.
struct Sandbox {
    dir: tempfile::TempDir,
    id: String,
    paths: PluginPaths,
}

const TOOLS: [&str; 7] = ["sh", "cat", "ls", "mount", "mkdir", "mknod", "sleep"];

fn copy_with_libraries(rootfs: &Path, binary: &Path, name: &str) {
    let real = fs::canonicalize(binary).unwrap();
    let dest = rootfs.join("bin").join(name);
    fs::copy(&real, &dest).unwrap();
    let out = Command::new("ldd").arg(&real).output().unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let target = rootfs.join(path.trim_start_matches('/'));
        if target.exists() {
            continue;
        }
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(fs::canonicalize(path).unwrap(), &target).unwrap();
    }
}

impl Sandbox {
    fn new(tag: &str) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("brx")
            .tempdir_in("/tmp")
            .unwrap();
        let id = format!("{tag}{:x}", std::process::id());
        let plugin_dir = dir.path().join("plugins").join(&id);
        let paths = PluginPaths {
            rootfs: plugin_dir.join("rootfs"),
            propagated_mount: plugin_dir.join("propagated-mount"),
            socket_dir: dir.path().join("run/plugins").join(&id),
        };
        let rootfs = &paths.rootfs;
        for d in ["bin", "mnt", "tmp", "etc"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        for tool in TOOLS {
            let host = Path::new("/usr/bin").join(tool);
            let host = if host.exists() {
                host
            } else {
                Path::new("/bin").join(tool)
            };
            copy_with_libraries(rootfs, &host, tool);
        }
        fs::create_dir_all(&paths.socket_dir).unwrap();
        fs::set_permissions(&paths.socket_dir, fs::Permissions::from_mode(0o700)).unwrap();
        Sandbox { dir, id, paths }
    }

    fn plugin(&self, config: &str) -> Plugin {
        let config = decode_config(config.as_bytes()).unwrap();
        let settings = PluginSettings::init_from(&config);
        Plugin {
            config,
            enabled: false,
            id: self.id.clone(),
            name: "test:latest".into(),
            plugin_reference: "test:latest".into(),
            settings,
        }
    }

    fn spec(&self, config: &str) -> PluginSpec {
        build_spec(&self.plugin(config), &self.paths).unwrap()
    }

    /// Mount points on the host below the sandbox.
    fn host_mounts(&self) -> Vec<PathBuf> {
        let base = fs::canonicalize(self.dir.path()).unwrap();
        read_mountinfo()
            .unwrap()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&base))
            .collect()
    }

    fn cgroup(&self) -> Option<PathBuf> {
        // the built-in executor's, and the runtimes' cgroupsPath /<parent>/<id>, alike
        linux_executor().devices_cgroup(&self.id)
    }

    fn assert_released(&self) {
        assert_eq!(
            self.host_mounts(),
            Vec::<PathBuf>::new(),
            "mounts left on the host"
        );
        if let Some(cg) = self.cgroup() {
            assert!(!cg.exists(), "cgroup {} left behind", cg.display());
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // never leave a test's mounts or cgroups behind, even when it failed
        let _ = executor().cleanup(&self.id, None);
    }
}

fn config(entrypoint: &[&str], extra: &str) -> String {
    let entrypoint = serde_json::to_string(entrypoint).unwrap();
    let mut c = format!(r#"{{"Entrypoint":{entrypoint},"Interface":{{"Socket":"p.sock"}}"#);
    if !extra.is_empty() {
        c.push(',');
        c.push_str(extra);
    }
    c.push('}');
    c
}

/// Reads stdout and stderr to the end on threads; the receiver yields (stdout, stderr).
fn collect_output(process: &mut Box<dyn PluginProcess>) -> mpsc::Receiver<(String, String)> {
    let (mut out, mut err) = process.take_output().expect("output");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let errors = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let _ = tx.send((s, errors.join().unwrap_or_default()));
    });
    rx
}

fn wait_bounded(process: &mut Box<dyn PluginProcess>) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = process.try_wait().unwrap() {
            return process.wait().map(|_| status).unwrap();
        }
        if Instant::now() > deadline {
            let _ = process.signal(Signal::SIGKILL);
            let status = process.wait().unwrap();
            panic!("plugin did not exit in time (killed: {status})");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run_to_end(spec: &PluginSpec) -> (ExitStatus, String, String) {
    let mut process = executor().start(spec).expect("start");
    let output = collect_output(&mut process);
    let status = wait_bounded(&mut process);
    let (out, err) = output.recv_timeout(TIMEOUT).expect("output in time");
    (status, out, err)
}

fn poll_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn cap_mask(names: &[&str]) -> u64 {
    names
        .iter()
        .map(|n| n.parse::<caps::Capability>().unwrap().bitmask())
        .fold(0, |a, b| a | b)
}

fn status_field(out: &str, key: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("{key} missing in {out}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

const STATUS_CAPS: &str =
    "while read k v; do case $k in Cap*) echo \"$k $v\";; esac; done < /proc/self/status";

#[test]
fn privilege_free_plugin_gets_exactly_the_defaults() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new("free");
    fs::write(sb.paths.socket_dir.join("from-host"), b"x").unwrap();
    // a masked file the host has: bound to /dev/null inside
    let masked = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/interrupts",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .unwrap();
    let script = format!(
        "echo pid=$$; {STATUS_CAPS}; echo host=$(cat /proc/sys/kernel/hostname); \
         echo sockets=$(ls /run/docker/plugins); : > /run/docker/plugins/from-plugin; \
         mount -t tmpfs none /mnt 2>/dev/null && echo mount=ok || echo mount=denied; \
         mknod /dev/fuse2 c 10 229 && echo mknod=ok; \
         (exec 3<>/dev/fuse2) 2>/dev/null && echo fuse=open || echo fuse=denied; \
         (exec 3<>/dev/null) && echo null=open; \
         echo dev=$(ls /dev); echo lo=$(cat /sys/class/net/lo/operstate); \
         [ -c {masked} ] && echo masked=yes; echo cwd=$(pwd)"
    );
    let mut spec = sb.spec(&config(&["sh", "-c", &script], ""));
    spec.hostname = "berth-plug".into();

    let started = Instant::now();
    let mut process = executor().start(&spec).expect("start");
    let start_time = started.elapsed();
    eprintln!("start() until the entrypoint exec'd: {start_time:?}");
    let output = collect_output(&mut process);
    let status = wait_bounded(&mut process);
    let (out, err) = output.recv_timeout(TIMEOUT).unwrap();
    assert!(status.success(), "{status}: {out}\n{err}");

    assert!(out.contains("pid=1\n"), "{out}");
    let defaults = cap_mask(&DEFAULT_CAPABILITIES);
    for key in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(status_field(&out, key), defaults, "{key}\n{out}");
    }
    assert_eq!(status_field(&out, "CapInh"), 0);
    assert_eq!(status_field(&out, "CapAmb"), 0);
    assert!(out.contains("host=berth-plug\n"), "{out}");
    assert!(out.contains("sockets=from-host\n"), "{out}");
    assert!(sb.paths.socket_dir.join("from-plugin").exists());
    assert!(out.contains("mount=denied\n"), "{out}");
    // MKNOD is a default capability and `c *:* m` allows the node, but not opening it
    assert!(out.contains("mknod=ok\n"), "{out}\n{err}");
    assert!(out.contains("fuse=denied\n"), "{out}");
    assert!(out.contains("null=open\n"), "{out}");
    let dev: BTreeSet<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("dev="))
        .unwrap()
        .split(' ')
        .collect();
    for node in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue", "fd",
        "stdin", "stdout", "stderr",
    ] {
        assert!(dev.contains(node), "/dev lacks {node}: {dev:?}");
    }
    assert!(!dev.contains("fuse"), "{dev:?}");
    assert!(
        out.contains("lo=unknown\n") || out.contains("lo=up\n"),
        "{out}"
    );
    assert!(out.contains("masked=yes\n"), "{masked} not masked: {out}");
    assert!(out.contains("cwd=/\n"));
    // the rootfs got moby's init layer
    assert!(sb.paths.rootfs.join(".dockerenv").is_file());
    assert!(fs::symlink_metadata(sb.paths.rootfs.join("etc/mtab"))
        .unwrap()
        .file_type()
        .is_symlink());

    sb.assert_released();
}

#[test]
fn granted_plugin_mounts_into_its_propagated_mount() {
    if !is_root() {
        return;
    }
    if !Path::new("/dev/fuse").exists() {
        eprintln!("no /dev/fuse: skipped");
        return;
    }
    let sb = Sandbox::new("gran");
    // The trap comes first: once the file shows, a SIGTERM finds it set.
    let script = format!(
        "trap 'echo term; exit 0' TERM; {STATUS_CAPS}; (exec 3<>/dev/fuse) && echo fuse=open; \
         mkdir -p /mnt/volumes/v && mount -t tmpfs none /mnt/volumes/v && echo hi > /mnt/volumes/v/file \
         && echo mounted; echo ready; sleep 60 & wait"
    );
    let spec = sb.spec(&config(
        &["sh", "-c", &script],
        r#""Linux":{"Capabilities":["CAP_SYS_ADMIN"],"Devices":[{"Name":"fuse","Path":"/dev/fuse"}]},
           "PropagatedMount":"/mnt/volumes""#,
    ));
    let mut process = executor().start(&spec).expect("start");
    let output = collect_output(&mut process);
    let file = sb.paths.propagated_mount.join("v/file");
    let deadline = Instant::now() + TIMEOUT;
    while !file.exists() {
        if Instant::now() > deadline || process.try_wait().unwrap().is_some() {
            let _ = process.signal(Signal::SIGKILL);
            let _ = process.wait();
            let (out, err) = output.recv_timeout(TIMEOUT).unwrap();
            panic!("the plugin's mount did not show on the host\n{out}\n{err}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(fs::read_to_string(&file).unwrap(), "hi\n");
    let host_pm = fs::canonicalize(&sb.paths.propagated_mount).unwrap();
    assert!(sb.host_mounts().contains(&host_pm.join("v")));

    // graceful stop: the shim forwards SIGTERM to the plugin (PID 1, which traps it)
    process.signal(Signal::SIGTERM).unwrap();
    let status = wait_bounded(&mut process);
    let (out, err) = output.recv_timeout(TIMEOUT).unwrap();
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert!(out.contains("term\n"), "{out}");
    assert!(out.contains("fuse=open\n"), "{out}\n{err}");
    assert!(out.contains("mounted\n"), "{out}\n{err}");
    let want = cap_mask(&DEFAULT_CAPABILITIES) | cap_mask(&["CAP_SYS_ADMIN"]);
    assert_eq!(status_field(&out, "CapBnd"), want);
    assert_eq!(status_field(&out, "CapEff"), want);
    assert_eq!(status_field(&out, "CapInh"), cap_mask(&["CAP_SYS_ADMIN"]));
    sb.assert_released();
    assert!(!file.exists());
}

#[test]
fn missing_entrypoint_fails_clearly_and_leaves_nothing() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new("miss");
    let spec = sb.spec(&config(
        &["/bin/no-such-plugin"],
        r#""PropagatedMount":"/data""#,
    ));
    let started = Instant::now();
    let err = executor().start(&spec).err().expect("start must fail");
    assert!(started.elapsed() < TIMEOUT);
    assert_start_error(
        &err.to_string(),
        "exec: \"/bin/no-such-plugin\": stat /bin/no-such-plugin: no such file or directory",
        "/bin/no-such-plugin",
    );
    sb.assert_released();

    for (args, extra, message, subject) in [
        (
            "no-such-plugin",
            "",
            "exec: \"no-such-plugin\": executable file not found in $PATH",
            "no-such-plugin",
        ),
        // a mount whose source is missing names the mount
        (
            "sh",
            r#""Mounts":[{"Source":"/nonexistent/berth","Destination":"/x","Type":"bind","Options":["rbind"]}]"#,
            "mount source /nonexistent/berth for /x: no such file or directory",
            "/nonexistent/berth",
        ),
    ] {
        let spec = sb.spec(&config(&[args], extra));
        let err = executor().start(&spec).err().expect("start must fail");
        assert_start_error(&err.to_string(), message, subject);
        sb.assert_released();
    }
}

/// The built-in executor's exact words; an OCI runtime's error must at least name `subject`.
fn assert_start_error(message: &str, builtin_words: &str, subject: &str) {
    if builtin() {
        assert_eq!(message, builtin_words);
    } else {
        assert!(message.contains(subject), "{message}");
    }
}

fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // a zombie is dead for our purposes
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn cleanup_after_the_shim_is_killed() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new("kill");
    let Some(cgroup) = sb.cgroup() else {
        eprintln!("no v1 devices cgroup: skipped");
        return;
    };
    let spec = sb.spec(&config(
        &[
            "sh",
            "-c",
            "mkdir -p /data/v && mount -t tmpfs none /data/v; sleep 1000 & sleep 1000",
        ],
        r#""Linux":{"Capabilities":["CAP_SYS_ADMIN"]},"PropagatedMount":"/data""#,
    ));
    let mut process = executor().start(&spec).expect("start");
    let _output = collect_output(&mut process);
    let procs = cgroup.join("cgroup.procs");
    let mut pids = Vec::new();
    poll_until("three plugin processes", || {
        pids = fs::read_to_string(&procs)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse::<i32>().ok())
            .collect();
        pids.len() >= 3
    });
    poll_until("the propagated mount on the host", || {
        sb.host_mounts()
            .iter()
            .any(|m| m.ends_with("propagated-mount/v"))
    });
    // berth's view of a crash: the shim dies, nobody calls wait()
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(process.pid() as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    executor().cleanup(&sb.id, None).unwrap();
    for pid in &pids {
        poll_until("plugin processes to die", || !alive(*pid));
    }
    sb.assert_released();
    // cleanup is idempotent, with or without a spec
    executor().cleanup(&sb.id, None).unwrap();
    executor().cleanup(&sb.id, Some(&spec)).unwrap();
    let _ = process.wait();
}

#[test]
fn host_network_and_host_pid() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new("host");
    let script = "echo pid=$$; echo net=$(ls /sys/class/net); cat /etc/hosts; \
                  (echo x >> /etc/hosts) 2>/dev/null && echo hosts=rw || echo hosts=ro; \
                  echo host=$(cat /proc/sys/kernel/hostname)";
    let spec = sb.spec(&config(
        &["sh", "-c", script],
        r#""Network":{"Type":"host"},"PidHost":true,"IpcHost":true"#,
    ));
    assert!(!spec.namespaces.pid && !spec.namespaces.network && !spec.namespaces.ipc);
    let (status, out, err) = run_to_end(&spec);
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert!(!out.contains("pid=1\n"), "{out}");
    let host_net: BTreeSet<String> = fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let net_line = out.lines().find_map(|l| l.strip_prefix("net=")).unwrap();
    let seen: BTreeSet<String> = net_line.split(' ').map(String::from).collect();
    assert_eq!(seen, host_net);
    assert!(out.contains(&fs::read_to_string("/etc/hosts").unwrap()));
    assert!(out.contains("hosts=ro\n"), "{out}");
    // moby sets no hostname: the plugin sees the host's
    let hostname = nix::unistd::gethostname().unwrap();
    assert!(
        out.contains(&format!("host={}\n", hostname.to_string_lossy())),
        "{out}"
    );
    sb.assert_released();
}

/// PDEATHSIG: a plugin does not outlive the thread that started it (berth's supervisor thread;
/// a `kill -9` of berth ends every thread at once).
#[test]
fn plugins_die_with_the_thread_that_started_them() {
    use std::os::unix::process::ExitStatusExt;
    if !is_root() {
        return;
    }
    for (tag, extra) in [("pdns", ""), ("pdho", r#""PidHost":true"#)] {
        let sb = Sandbox::new(tag);
        let spec = sb.spec(&config(&["sleep", "1000"], extra));
        let mut process = std::thread::spawn(move || executor().start(&spec).expect("start"))
            .join()
            .unwrap();
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = process.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = process.signal(Signal::SIGKILL);
                panic!("{tag}: the plugin outlived its thread");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.signal(), Some(libc_sigkill()), "{tag}: {status}");
        process.wait().unwrap();
        sb.assert_released();
    }
}

fn libc_sigkill() -> i32 {
    Signal::SIGKILL as i32
}

/// A rootfs with hostile symlinks: mount targets and init-layer files are resolved inside the
/// rootfs (as if it were `/`), never on the host.
#[test]
fn hostile_symlinks_stay_inside_the_rootfs() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new("syml");
    let rootfs = &sb.paths.rootfs;
    let outside = sb.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    // absolute link to a host directory, and a relative one climbing far above the rootfs
    fs::remove_dir(rootfs.join("etc")).unwrap();
    std::os::unix::fs::symlink(&outside, rootfs.join("etc")).unwrap();
    let escape = format!("brx-escape-{}", std::process::id());
    std::os::unix::fs::symlink(
        format!("../../../../../../../../../../tmp/{escape}"),
        rootfs.join("run"),
    )
    .unwrap();
    let spec = sb.spec(&config(
        &["sh", "-c", "cat /etc/hosts >/dev/null && echo hosts=ok; ls /run/docker/plugins"],
        r#""Network":{"Type":"host"},"Mounts":[{"Source":"/etc/hostname","Destination":"/etc/x/y","Type":"bind","Options":["rbind","ro"]}]"#,
    ));
    fs::write(sb.paths.socket_dir.join("marker"), b"").unwrap();
    let (status, out, err) = run_to_end(&spec);
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert!(out.contains("hosts=ok\nmarker\n"), "{out}\n{err}");
    // nothing was created or mounted outside the rootfs
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!Path::new("/tmp").join(&escape).exists());
    let inside_outside = rootfs.join(outside.strip_prefix("/").unwrap());
    assert!(inside_outside.join("hosts").is_file());
    assert!(inside_outside.join("x/y").is_file());
    assert!(rootfs
        .join("tmp")
        .join(&escape)
        .join("docker/plugins")
        .is_dir());
    sb.assert_released();
}
