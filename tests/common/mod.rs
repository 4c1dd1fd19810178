//! Shared test support: a real berth daemon on a temporary socket and data root, and a raw
//! HTTP/1.1 client over its unix socket.
#![allow(dead_code)]

pub mod authz;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    /// Extra `berth daemon` flags for the next spawn.
    pub extra_args: Vec<String>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    child: Option<Child>,
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// The `message` of a Docker error body.
    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("bt")
            .tempdir_in("/tmp")
            .unwrap();
        let mut daemon = Daemon {
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            socket: dir.path().join("berth.sock"),
            data_root: dir.path().join("data"),
            exec_root: dir.path().join("exec"),
            dir,
            child: None,
        };
        daemon.spawn();
        daemon
    }

    /// Starts (or restarts) the process on the same socket and roots.
    pub fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("daemon")
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .arg("--data-root")
            .arg(&self.data_root)
            .arg("--exec-root")
            .arg(&self.exec_root)
            .arg("--config-file")
            .arg(self.dir.path().join("no-daemon.json"))
            .arg("--log-level")
            .arg("debug")
            .args(&self.extra_args)
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

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn raw_request(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
    out
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
    let mut files = vec![(binary.clone(), PathBuf::from("bin/berth-test-plugin"))];
    for lib in shared_libraries(&binary) {
        let inside = lib.strip_prefix("/").unwrap().to_path_buf();
        files.push((lib, inside));
    }
    let mut dirs_done = std::collections::HashSet::new();
    for (host, inside) in files {
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
        let data = std::fs::read(&host).unwrap();
        let mut f = header(tar::EntryType::Regular, data.len() as u64, 0o755);
        builder
            .append_data(&mut f, format!("rootfs/{}", inside.display()), &data[..])
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

/// Percent-encodes everything but unreserved characters (for query values).
pub fn url_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

    /// SIGSTOP: the process keeps its socket but answers nothing.
    pub fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
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
/// `TEST_*` knobs; returns once the socket accepts connections.
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
    wait_for_socket(socket);
    p
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
