//! Shared test support: a real berth daemon on a temporary socket and data root, the plugin and
//! volume API calls the tests make of it, processes on the host (legacy plugins, rclone, a
//! frozen plugin), plugin create contexts, and mount look-ups. HTTP by hand is in `http.rs`;
//! loopback registries are in `registry.rs` (included by the registry tests only).
#![allow(dead_code)]

pub mod archives;
pub mod authz;
pub mod http;
pub mod probes;
pub use http::*;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    /// Extra `berth daemon` flags for the next spawn.
    pub extra_args: Vec<String>,
    /// Environment variables set for the next spawn (e.g. a `PATH` without runc).
    pub extra_env: Vec<(String, String)>,
    /// The network namespace (`/run/netns/NAME`) the daemon runs in (`ip netns exec`), so
    /// what it does to links and routes stays there; `None`: the test's own.
    pub netns: Option<String>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Daemon {
        Daemon::start_with_env(extra_args, &[])
    }

    pub fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut daemon = Daemon::unstarted(extra_args, env);
        daemon.spawn();
        daemon
    }

    /// A daemon in the network namespace `netns` (see [`Daemon::netns`]).
    pub fn start_in_netns(netns: &str, extra_args: &[&str]) -> Daemon {
        let mut daemon = Daemon::unstarted(extra_args, &[]);
        daemon.netns = Some(netns.to_string());
        daemon.spawn();
        daemon
    }

    fn unstarted(extra_args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let dir = short_tempdir("bt");
        Daemon {
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            socket: dir.path().join("berth.sock"),
            data_root: dir.path().join("data"),
            exec_root: dir.path().join("exec"),
            netns: None,
            dir,
            child: None,
        }
    }

    /// The command line of `berth daemon` on this daemon's socket and roots (in its network
    /// namespace).
    pub fn command(&self) -> Command {
        let berth = env!("CARGO_BIN_EXE_berth");
        let mut command = match &self.netns {
            // `ip netns exec` execs berth: the child's PID is berth's.
            Some(netns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns, berth]);
                c
            }
            None => Command::new(berth),
        };
        command
            .arg("daemon")
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .arg("--data-root")
            .arg(&self.data_root)
            .arg("--exec-root")
            .arg(&self.exec_root)
            .arg("--config-file")
            .arg(self.dir.path().join("no-daemon.json"));
        command
    }

    /// Starts (or restarts) the process on the same socket and roots.
    pub fn spawn(&mut self) {
        let child = self
            .command()
            .arg("--log-level")
            .arg("debug")
            .args(plugin_runtime_args(&self.extra_args))
            .args(&self.extra_args)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("berth.log")).unwrap())
            .spawn()
            .expect("start berth");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = self.try_request("GET", "/_ping", &[], &[]) {
                if r.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("berth did not answer /_ping; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berth.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    /// SIGKILL and wait: a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], &[])
    }

    pub fn post_json(&self, path: &str, body: &str) -> Response {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }

    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        raw_request(&self.socket, method, path, headers, body)
    }

    pub fn create_plugin(&self, name: &str, tar: &[u8]) -> Response {
        self.request(
            "POST",
            &format!("/v1.41/plugins/create?name={name}"),
            &[("Content-Type", "application/x-tar")],
            tar,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Plugins over the API (`/v1.41`, as the docker CLI of the compat tests speaks).

impl Daemon {
    /// `GET /plugins/<name>/json`: the plugin, or `None` when there is none (404).
    pub fn plugin(&self, name: &str) -> Option<serde_json::Value> {
        let r = self.get(&format!("/v1.41/plugins/{name}/json"));
        match r.status {
            200 => Some(r.json()),
            404 => None,
            s => panic!("inspect {name}: {s} {}", r.text()),
        }
    }

    pub fn plugin_id(&self, name: &str) -> String {
        let plugin = self
            .plugin(name)
            .unwrap_or_else(|| panic!("no plugin {name}"));
        plugin["Id"].as_str().unwrap().to_string()
    }

    /// Names of `GET /plugins` with `filters` (JSON; none when empty), sorted.
    pub fn plugin_names(&self, filters: &str) -> Vec<String> {
        let path = match filters {
            "" => "/v1.41/plugins".to_string(),
            _ => format!("/v1.41/plugins?filters={}", url_escape(filters)),
        };
        let r = self.get(&path);
        r.expect(200, &path);
        let mut names: Vec<String> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["Name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    /// Creates plugin `name` from `context` (asserted 204).
    pub fn create_plugin_ok(&self, name: &str, context: &[u8]) {
        self.create_plugin(name, context).expect(204, name);
    }

    /// `POST /plugins/<name>/enable?timeout=30`.
    pub fn enable_plugin(&self, name: &str) -> Response {
        self.post(&format!("/v1.41/plugins/{name}/enable?timeout=30"))
    }

    pub fn disable_plugin(&self, name: &str) -> Response {
        self.post(&format!("/v1.41/plugins/{name}/disable"))
    }

    /// `POST /plugins/<name>/set` with `args` (`KEY=value`, `mount.source=...`).
    pub fn set_plugin(&self, name: &str, args: &[&str]) -> Response {
        let body = serde_json::to_string(args).unwrap();
        self.post_json(&format!("/v1.41/plugins/{name}/set"), &body)
    }

    /// `DELETE /plugins/<name>`, with `?force=1` when `force`.
    pub fn remove_plugin(&self, name: &str, force: bool) -> Response {
        let query = if force { "?force=1" } else { "" };
        self.delete(&format!("/v1.41/plugins/{name}{query}"))
    }

    /// Creates the project's test volume driver as plugin `name` (`extra_config` spliced into
    /// its config, then `settings` set); returns its ID.
    pub fn create_test_plugin(&self, name: &str, extra_config: &str, settings: &[&str]) -> String {
        let context = test_plugin_context(&test_plugin_config(extra_config));
        self.create_set_plugin(name, &context, settings)
    }

    /// [`Daemon::create_test_plugin`] with host `tools` (`sh`, `cat`, ...) in its rootfs, and
    /// the seed's `/var/log/plugin.log`.
    pub fn create_tooled_test_plugin(
        &self,
        name: &str,
        tools: &[&str],
        extra_config: &str,
        settings: &[&str],
    ) -> String {
        let context = test_plugin_context_with(
            &test_plugin_config(extra_config),
            tools,
            &[("var/log/plugin.log", b"plugin log line\n")],
        );
        self.create_set_plugin(name, &context, settings)
    }

    /// Creates plugin `name` from `context`, sets `settings`; returns its ID.
    fn create_set_plugin(&self, name: &str, context: &[u8], settings: &[&str]) -> String {
        self.create_plugin_ok(name, context);
        if !settings.is_empty() {
            self.set_plugin(name, settings).expect(204, name);
        }
        self.plugin_id(name)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A tar header as the docker CLI writes them (owner root, fixed time).
pub fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

/// Builds a plugin create context: `config.json` plus `rootfs/` with the given files.
pub fn plugin_context(config: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Regular, config.len() as u64, 0o644);
    builder
        .append_data(&mut h, "config.json", config.as_bytes())
        .unwrap();
    let mut dir = header(tar::EntryType::Directory, 0, 0o755);
    builder.append_data(&mut dir, "rootfs/", &[][..]).unwrap();
    for (path, data) in files {
        let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o755);
        builder
            .append_data(&mut h, format!("rootfs/{path}"), *data)
            .unwrap();
    }
    builder.into_inner().unwrap()
}

pub const VOLUME_PLUGIN_CONFIG: &str = r#"{
  "Description": "sample volume plugin",
  "Documentation": "https://example.invalid/doc",
  "Entrypoint": ["/bin/plugin", "--serve"],
  "Env": [{"Name": "DEBUG", "Description": "debug level", "Settable": ["value"], "Value": "0"},
          {"Name": "LOCKED", "Settable": null, "Value": "1"}],
  "Interface": {"Socket": "sample.sock", "Types": ["docker.volumedriver/1.0"]},
  "Linux": {"Capabilities": ["CAP_SYS_ADMIN"], "Devices": [{"Name": "fuse", "Path": "/dev/fuse", "Settable": ["path"]}]},
  "Mounts": [{"Name": "state", "Source": "/var/lib/sample", "Destination": "/state", "Type": "bind", "Options": ["rbind"], "Settable": ["source"]}],
  "Network": {"Type": "host"},
  "PropagatedMount": "/mnt/volumes",
  "Args": {"Name": "args", "Settable": ["value"], "Value": ["--a"]}
}"#;

/// Host files a dynamically linked binary needs (itself excluded), from `ldd`.
pub fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            }?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A create context whose rootfs holds the project's test plugin (and its libraries) at
/// `/bin/berth-test-plugin`, with `config` as config.json.
pub fn test_plugin_context(config: &str) -> Vec<u8> {
    test_plugin_context_with(config, &[], &[])
}

/// [`test_plugin_context`] plus host programs (`sh`, `cat`, ...) copied to `/bin` with their
/// libraries, and extra files (`var/log/plugin.log`).
pub fn test_plugin_context_with(config: &str, tools: &[&str], extra: &[(&str, &[u8])]) -> Vec<u8> {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_berth-test-plugin"));
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Regular, config.len() as u64, 0o644);
    builder
        .append_data(&mut h, "config.json", config.as_bytes())
        .unwrap();
    for dir in [
        "rootfs/",
        "rootfs/bin/",
        "rootfs/data/",
        "rootfs/tmp/",
        "rootfs/etc/",
    ] {
        let mut d = header(tar::EntryType::Directory, 0, 0o755);
        builder.append_data(&mut d, dir, &[][..]).unwrap();
    }
    let mut programs = vec![(binary.clone(), PathBuf::from("bin/berth-test-plugin"))];
    for tool in tools {
        let host = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} not found on the host"));
        let host = std::fs::canonicalize(host).unwrap();
        programs.push((host, PathBuf::from("bin").join(tool)));
    }
    let mut files = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (host, inside) in programs {
        for lib in shared_libraries(&host) {
            let lib_inside = lib.strip_prefix("/").unwrap().to_path_buf();
            if seen.insert(lib_inside.clone()) {
                files.push((lib, lib_inside));
            }
        }
        files.push((host, inside));
    }
    let mut dirs_done = std::collections::HashSet::new();
    // the parent directories of a file at `inside` (below rootfs/), once each
    let mut parents = |builder: &mut tar::Builder<Vec<u8>>, inside: &Path| {
        let mut parent = PathBuf::from("rootfs");
        for component in inside.parent().into_iter().flat_map(|p| p.components()) {
            parent.push(component);
            let name = format!("{}/", parent.display());
            if dirs_done.insert(name.clone())
                && !["rootfs/bin/", "rootfs/etc/"].contains(&name.as_str())
            {
                let mut d = header(tar::EntryType::Directory, 0, 0o755);
                builder.append_data(&mut d, &name, &[][..]).unwrap();
            }
        }
    };
    for (host, inside) in files {
        parents(&mut builder, &inside);
        let data = std::fs::read(&host).unwrap();
        let mut f = header(tar::EntryType::Regular, data.len() as u64, 0o755);
        builder
            .append_data(&mut f, format!("rootfs/{}", inside.display()), &data[..])
            .unwrap();
    }
    for (path, data) in extra {
        parents(&mut builder, Path::new(path));
        let mut f = header(tar::EntryType::Regular, data.len() as u64, 0o644);
        builder
            .append_data(&mut f, format!("rootfs/{path}"), *data)
            .unwrap();
    }
    builder.into_inner().unwrap()
}

/// config.json of the test volume driver; `extra` is spliced into the top-level object
/// (e.g. `"Linux": {...},`).
pub fn test_plugin_config(extra: &str) -> String {
    format!(
        r#"{{{extra}
  "Description": "berth test volume driver",
  "Entrypoint": ["/bin/berth-test-plugin"],
  "Interface": {{"Socket": "testdriver.sock", "Types": ["docker.volumedriver/1.0"]}},
  "PropagatedMount": "/data",
  "Env": [
    {{"Name": "TEST_START_DELAY_MS", "Settable": ["value"], "Value": null}},
    {{"Name": "TEST_CRASH_AFTER_MS", "Settable": ["value"], "Value": null}},
    {{"Name": "TEST_NEVER_LISTEN", "Settable": ["value"], "Value": null}},
    {{"Name": "TEST_STDERR_LINES", "Settable": ["value"], "Value": null}},
    {{"Name": "TEST_REPORT", "Settable": ["value"], "Value": null}},
    {{"Name": "TEST_TRY_MOUNT", "Settable": ["value"], "Value": null}},
    {{"Name": "TEST_OPEN_DEVICE", "Settable": ["value"], "Value": null}},
    {{"Name": "TEST_MKNOD_FUSE", "Settable": ["value"], "Value": null}},
    {{"Name": "TEST_IGNORE_SIGTERM", "Settable": ["value"], "Value": null}}
  ]
}}"#
    )
}

/// The executor daemons under test run plugins with: `BERTH_TEST_PLUGIN_RUNTIME` (`builtin`,
/// `runc`, `crun`), so the runtime bar runs once per executor; unset means the default.
pub fn test_plugin_runtime() -> Option<String> {
    std::env::var("BERTH_TEST_PLUGIN_RUNTIME")
        .ok()
        .filter(|r| !r.is_empty())
}

/// `--plugin-runtime <test runtime>` unless the test chose one itself.
fn plugin_runtime_args(extra_args: &[String]) -> Vec<String> {
    match test_plugin_runtime() {
        Some(runtime) if !extra_args.iter().any(|a| a == "--plugin-runtime") => {
            vec!["--plugin-runtime".into(), runtime]
        }
        _ => Vec::new(),
    }
}

/// Mount points below `dir` in this mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

#[track_caller]
pub fn assert_nothing_mounted_under(dir: &Path) {
    let mounts = mounts_under(dir);
    assert!(mounts.is_empty(), "still mounted: {mounts:?}");
}

/// PIDs of the processes of plugin `id`: the executor puts them in the devices cgroup
/// `berth/<id>` (their `/proc/<pid>/root` and `exe` read as paths inside their own root, so
/// they cannot be found by path from the host).
pub fn plugin_processes(id: &str) -> Vec<u32> {
    let needle = format!(":/berth/{id}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cgroups) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            if cgroups.lines().any(|l| l.ends_with(&needle)) {
                found.push(pid);
            }
        }
    }
    found
}

/// [`eventually`] for async tests: the runtime goes on meanwhile.
pub async fn eventually_async(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Polls `check` every 20 ms until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

// ---------------------------------------------------------------------------------------------
// Volume tests: raw HTTP shortcuts, host processes as legacy plugins, mount table look-ups.

impl Daemon {
    pub fn delete(&self, path: &str) -> Response {
        self.request("DELETE", path, &[], &[])
    }

    pub fn post(&self, path: &str) -> Response {
        self.request("POST", path, &[], &[])
    }

    /// `POST <prefix>/volumes/create` with `body` as JSON (`prefix` like `/v1.44`, or empty).
    pub fn create_volume(&self, prefix: &str, body: &str) -> Response {
        self.post_json(&format!("{prefix}/volumes/create"), body)
    }

    /// `GET /v1.44/volumes`, with `filters` (JSON) when not empty; asserts 200.
    pub fn volume_list(&self, filters: &str) -> serde_json::Value {
        let path = if filters.is_empty() {
            "/v1.44/volumes".to_string()
        } else {
            format!("/v1.44/volumes?filters={}", url_escape(filters))
        };
        let r = self.get(&path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    /// `GET /v1.44/volumes/<name>` (asserted 200).
    pub fn inspect_volume(&self, name: &str) -> serde_json::Value {
        let r = self.get(&format!("/v1.44/volumes/{name}"));
        r.expect(200, name);
        r.json()
    }

    /// Names of `GET /v1.44/volumes` with `filters`, sorted.
    pub fn volume_names(&self, filters: &str) -> Vec<String> {
        let mut names: Vec<String> = self.volume_list(filters)["Volumes"]
            .as_array()
            .expect("Volumes is a list")
            .iter()
            .map(|v| v["Name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }
}

/// The body of a `201 Created` answer (asserted).
#[track_caller]
pub fn created(r: &Response) -> serde_json::Value {
    r.expect(201, "create").json()
}

/// The volume `name` in a `GET /volumes` answer.
pub fn find_volume<'a>(list: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    list["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["Name"] == name)
}

/// The `Warnings` of a `GET /volumes` answer.
pub fn list_warnings(list: &serde_json::Value) -> Vec<String> {
    list["Warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Driver options (`-o key=value`) from pairs.
pub fn opts(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A short temporary directory under /tmp (plugin socket paths must fit in 107 bytes).
pub fn short_tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap()
}

/// A legacy plugin directory (`plugins/` in a short temp directory, for `.sock` and `.spec`
/// files), and berth daemons that discover plugins there and nowhere else.
pub struct LegacyPlugins {
    pub dir: tempfile::TempDir,
}

impl LegacyPlugins {
    pub fn new() -> LegacyPlugins {
        let dir = short_tempdir("blg");
        std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
        LegacyPlugins { dir }
    }

    pub fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// `p` in the temp directory, beside `plugins/` (plugin roots, logs, sockets elsewhere).
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// berth with `--legacy-plugin-dir` set to `plugins/` and `extra` flags.
    pub fn daemon(&self, extra: &[&str]) -> Daemon {
        let plugins = self.plugins().display().to_string();
        let mut args = vec!["--legacy-plugin-dir", plugins.as_str()];
        args.extend_from_slice(extra);
        Daemon::start_with(&args)
    }
}

/// A process started by a test (a legacy plugin on the host): resumed if stopped, then killed
/// and reaped when dropped.
pub struct HostProcess {
    pub name: String,
    child: Option<Child>,
}

impl HostProcess {
    /// Starts `cmd` in a process group of its own, so that helpers it forks (gunicorn's
    /// workers) go with it.
    pub fn spawn(name: &str, cmd: &mut Command) -> HostProcess {
        use std::os::unix::process::CommandExt;
        let child = cmd
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        HostProcess {
            name: name.to_string(),
            child: Some(child),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig)
            .unwrap_or_else(|e| panic!("{sig} to {}: {e}", self.name));
    }

    /// SIGSTOP, and waits until every thread of the process is stopped: the process keeps
    /// its socket but answers nothing. `kill` returns before the stop is complete: until the
    /// thread the kernel picked has run, the others go on, and one blocked on a kept-alive
    /// connection can still read a request and answer it.
    pub fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
        let stopped = eventually(Duration::from_secs(15), || {
            let states = thread_states(self.pid());
            !states.is_empty() && states.iter().all(|s| *s == 'T')
        });
        assert!(
            stopped,
            "{} did not stop: thread states {:?}",
            self.name,
            thread_states(self.pid())
        );
    }

    pub fn thaw(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    /// SIGTERM (the test plugin removes its socket and exits) and reap; SIGKILL after 5 s.
    pub fn terminate(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let child = self.child.as_mut().unwrap();
        if eventually(Duration::from_secs(5), || {
            matches!(child.try_wait(), Ok(Some(_)))
        }) {
            self.child = None;
        }
        self.kill();
    }

    /// SIGCONT + SIGKILL to its process group, and reap; the socket file stays behind as
    /// after a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGCONT);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The state letter (`R`, `S`, `T`, ...) of every thread of `pid`, from
/// `/proc/<pid>/task/<tid>/stat`; empty when the process is gone.
pub fn thread_states(pid: i32) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            // The command name in parentheses may hold spaces: the state follows the last ')'.
            let (_, after) = stat.rsplit_once(')')?;
            after.trim_start().chars().next()
        })
        .collect()
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits (up to 15 s) until `socket` accepts connections.
pub fn wait_for_socket(socket: &Path) {
    assert!(
        eventually(Duration::from_secs(15), || UnixStream::connect(socket)
            .is_ok()),
        "{} did not accept connections within 15 s",
        socket.display()
    );
}

/// berth's test plugin on the host, listening on `socket`, volumes under `root`, with extra
/// `TEST_*` knobs; returns once the socket accepts connections (at once when the knobs delay
/// or prevent listening).
pub fn host_test_plugin(socket: &Path, root: &Path, knobs: &[(&str, &str)]) -> HostProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth-test-plugin"));
    cmd.env("TEST_SOCKET_PATH", socket)
        .env("TEST_ROOT", root)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in knobs {
        cmd.env(k, v);
    }
    let p = HostProcess::spawn(&format!("berth-test-plugin {}", socket.display()), &mut cmd);
    let listens_at_once = !knobs
        .iter()
        .any(|(k, _)| ["TEST_START_DELAY_MS", "TEST_NEVER_LISTEN"].contains(k));
    if listens_at_once {
        wait_for_socket(socket);
    }
    p
}

/// `rclone serve docker` on the host as a legacy plugin listening on `socket`, its state in
/// `state` (volumes mounted below `state/mnt`, cache in `state/cache`, an empty
/// `state/rclone.conf`); returns once the socket accepts connections.
pub fn rclone_serve_docker(socket: &Path, state: &Path) -> HostProcess {
    let (base, cache, config) = (
        state.join("mnt"),
        state.join("cache"),
        state.join("rclone.conf"),
    );
    for dir in [&base, &cache, &socket.parent().unwrap().to_path_buf()] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&config, "").unwrap();
    let mut cmd = Command::new("rclone");
    cmd.args(["serve", "docker", "--no-spec", "--socket-addr"])
        .arg(socket)
        .arg("--base-dir")
        .arg(&base)
        .arg("--cache-dir")
        .arg(&cache)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let rclone = HostProcess::spawn(
        "rclone serve docker (Debian package rclone; .ci/run installs it)",
        &mut cmd,
    );
    wait_for_socket(socket);
    rclone
}

/// The file-system type of the mount whose mount point is exactly `path` in this mount
/// namespace (the topmost one), if any.
pub fn mount_fstype(path: &Path) -> Option<String> {
    let want = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(4) == Some(want.as_str()))
        .filter_map(|l| {
            let (_, after) = l.split_once(" - ")?;
            after.split_whitespace().next().map(str::to_string)
        })
        .next_back()
}

/// How many mounts have exactly `path` as mount point.
pub fn mount_count(path: &Path) -> usize {
    let want = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(4) == Some(want.as_str()))
        .count()
}

/// Asserts that `text` starts with `prefix`, showing `text` otherwise.
#[track_caller]
pub fn assert_starts_with(text: &str, prefix: &str) {
    assert!(
        text.starts_with(prefix),
        "{prefix:?} does not start {text:?}"
    );
}

/// True for an RFC 3339 UTC time with seconds, as Go marshals `time.Time` in these answers
/// (`2026-11-21T05:30:09Z`).
pub fn is_rfc3339_seconds(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && b.iter()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19].contains(&i) || c.is_ascii_digit())
}
