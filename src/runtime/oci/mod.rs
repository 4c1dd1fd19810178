//! The OCI-runtime executor: runs a plugin with runc or crun from an OCI bundle written from
//! the same [`PluginSpec`] the built-in executor follows.
//!
//! [`OciExecutor::start`]:
//! 1. makes the host side ready ([`super::host::prepare`]: socket directory, the propagated
//!    mount made `rshared`) and creates moby's init layer in the rootfs;
//! 2. writes the bundle `<exec-root>/runtime-<name>/bundles/<id>/config.json`
//!    ([`bundle::runtime_spec`]);
//! 3. spawns `berth runtime-shim` ([`shim`]) from the supervisor thread, with PDEATHSIG armed
//!    and stdout/stderr piped. The shim is a child subreaper: it runs `<runtime> create`
//!    (which hands the shim's stdio to the plugin) and `<runtime> start`, so the plugin's init
//!    is reparented to the shim, which waits for it, deletes the container and exits as the
//!    plugin did: berth's supervisor sees one child process per plugin, as with the built-in
//!    executor;
//! 4. waits (bounded) on the report pipe for the shim's `S` + end-of-file, or `E<message>`.
//!
//! Container state lives under `<exec-root>/runtime-<name>/plugins.moby` (the `--root` of the
//! runtime; `runtime-runc/plugins.moby` is the directory the seed's `runc --root ... list`
//! reads), with cgroup `/<parent>/<id>` (`/berth/<id>`) in every hierarchy.

pub mod bundle;
pub mod shim;

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::libc;
use serde::{Deserialize, Serialize};

use super::executor::{Executor, PluginProcess};
use super::helper::{Helper, HelperProcess, SELF_EXE};
use super::host::{self, check_id};
use super::spec::PluginSpec;
use super::syscall::LinuxSyscall;

/// The OCI runtimes berth drives (their command lines differ only in how the log is named).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OciRuntime {
    Runc,
    Crun,
}

impl OciRuntime {
    pub fn name(self) -> &'static str {
        match self {
            OciRuntime::Runc => "runc",
            OciRuntime::Crun => "crun",
        }
    }

    /// `--log` for the runtime's own JSON log (runc takes a path, crun a `file:` target).
    fn log_args(self, path: &Path) -> Vec<String> {
        let log = match self {
            OciRuntime::Runc => format!("--log={}", path.display()),
            OciRuntime::Crun => format!("--log=file:{}", path.display()),
        };
        vec![log, "--log-format=json".into()]
    }
}

/// What the shim is told (written next to the bundle's config.json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimRequest {
    pub runtime: OciRuntime,
    /// The runtime binary, resolved on `PATH` by berth.
    pub binary: PathBuf,
    /// `--root` of the runtime.
    pub state_root: PathBuf,
    pub bundle: PathBuf,
    pub id: String,
    /// cgroup2 mounts the runtime must not see (see [`hidden_cgroup2_mounts`]).
    #[serde(default)]
    pub hide_cgroup2: Vec<PathBuf>,
    /// The spec's device rules, written again over the runtime's (see `shim.rs`).
    #[serde(default)]
    pub device_rules: Vec<crate::runtime::spec::DeviceRule>,
}

impl ShimRequest {
    /// `<binary> --root <state> --log=... <args...>`
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg(format!("--root={}", self.state_root.display()))
            .args(self.runtime.log_args(&self.bundle.join("runtime.log")));
        command.args(args);
        if !self.hide_cgroup2.is_empty() {
            let hidden: Vec<std::ffi::CString> = self
                .hide_cgroup2
                .iter()
                .filter_map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok())
                .collect();
            let cgroup_root = c"/sys/fs/cgroup";
            // SAFETY: only syscalls between fork and exec, on strings prepared before.
            unsafe {
                command.pre_exec(move || {
                    if libc::unshare(libc::CLONE_NEWNS) < 0
                        || libc::mount(
                            std::ptr::null(),
                            cgroup_root.as_ptr(),
                            std::ptr::null(),
                            libc::MS_REC | libc::MS_PRIVATE,
                            std::ptr::null(),
                        ) < 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    for path in &hidden {
                        if libc::umount2(path.as_ptr(), libc::MNT_DETACH) < 0 {
                            return Err(io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        command
    }

    pub fn pid_file(&self) -> PathBuf {
        self.bundle.join("init.pid")
    }
}

#[derive(Debug, Clone)]
pub struct OciExecutor {
    runtime: OciRuntime,
    /// `<exec-root>/runtime-<name>`
    runtime_dir: PathBuf,
    shim_program: PathBuf,
    cgroup_parent: String,
    setup_timeout: Duration,
    hide_cgroup2: Vec<PathBuf>,
}

/// crun 1.8 refuses a hybrid host (v1 hierarchies under `/sys/fs/cgroup` plus a cgroup2 mount
/// there that offers controllers: "cgroups in hybrid mode not supported"). Run in a private
/// mount namespace without those cgroup2 mounts, it sees a v1 host and manages the plugin's
/// v1 cgroups (devices rules included) as runc does.
pub fn hidden_cgroup2_mounts(runtime: OciRuntime) -> Vec<PathBuf> {
    if runtime != OciRuntime::Crun {
        return Vec::new();
    }
    let mounts = crate::mounts::read_mountinfo().unwrap_or_default();
    if !mounts.iter().any(|m| m.fstype == "cgroup") {
        return Vec::new();
    }
    mounts
        .into_iter()
        .filter(|m| m.fstype == "cgroup2" && m.mount_point.starts_with("/sys/fs/cgroup/"))
        .filter(|m| {
            fs::read_to_string(m.mount_point.join("cgroup.controllers"))
                .is_ok_and(|c| !c.trim().is_empty())
        })
        .map(|m| m.mount_point)
        .collect()
}

impl OciExecutor {
    pub fn new(runtime: OciRuntime, exec_root: &Path) -> OciExecutor {
        OciExecutor {
            runtime,
            runtime_dir: exec_root.join(format!("runtime-{}", runtime.name())),
            shim_program: PathBuf::from(SELF_EXE),
            cgroup_parent: "berth".into(),
            setup_timeout: Duration::from_secs(60),
            hide_cgroup2: hidden_cgroup2_mounts(runtime),
        }
    }

    /// The program run as `<program> runtime-shim ...` (tests point it at the built `berth`).
    pub fn with_shim_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.shim_program = program.into();
        self
    }

    /// The cgroup directory holding the plugins' cgroups (`berth`).
    pub fn with_cgroup_parent(mut self, name: impl Into<String>) -> Self {
        self.cgroup_parent = name.into();
        self
    }

    /// `--root` of the runtime: `<exec-root>/runtime-<name>/plugins.moby`.
    pub fn state_root(&self) -> PathBuf {
        self.runtime_dir.join("plugins.moby")
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.runtime_dir.join("bundles").join(id)
    }

    fn request(&self, id: &str) -> io::Result<ShimRequest> {
        Ok(ShimRequest {
            runtime: self.runtime,
            binary: find_on_path(self.runtime.name())?,
            state_root: self.state_root(),
            bundle: self.bundle(id),
            id: id.to_string(),
            hide_cgroup2: self.hide_cgroup2.clone(),
            device_rules: Vec::new(),
        })
    }

    /// `kill -9` and `delete --force` of a container the runtime still knows, then the bundle.
    fn remove_container(&self, id: &str) -> io::Result<()> {
        if self.state_root().join(id).exists() {
            let request = self.request(id)?;
            run_quietly(request.command(&["kill", id, "KILL"]));
            let output = request
                .command(&["delete", "--force", id])
                .stdin(Stdio::null())
                .output()?;
            if !output.status.success() && self.state_root().join(id).exists() {
                return Err(io::Error::other(format!(
                    "{} delete {id}: {}",
                    self.runtime.name(),
                    runtime_error(&request, &output.stderr)
                )));
            }
        }
        match fs::remove_dir_all(self.bundle(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn write_bundle(&self, spec: &PluginSpec, request: &ShimRequest) -> io::Result<PathBuf> {
        let cgroups_path = format!("/{}/{}", self.cgroup_parent, spec.id);
        let config = bundle::runtime_spec(spec, &cgroups_path).map_err(io::Error::other)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&request.bundle)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&request.state_root)?;
        let bytes = serde_json::to_vec_pretty(&config).map_err(io::Error::other)?;
        crate::fsutil::write_atomic(&request.bundle.join("config.json"), &bytes, 0o600)?;
        let request_file = request.bundle.join("shim.json");
        let bytes = serde_json::to_vec(request).map_err(io::Error::other)?;
        crate::fsutil::write_atomic(&request_file, &bytes, 0o600)?;
        Ok(request_file)
    }

    /// Spawns the shim and waits until the plugin runs or its setup failed.
    fn spawn_shim(&self, request_file: &Path) -> io::Result<Child> {
        let parent = std::process::id() as libc::pid_t;
        let helper = Helper {
            program: &self.shim_program,
            subcommand: "runtime-shim",
            // SIGTERM on the death of the spawning thread: the shim then kills the plugin
            // (berth signals plugins directly, never the shim), see shim.rs.
            death_signal: libc::SIGTERM,
            timeout: self.setup_timeout,
            timed_out: format!("{} did not start the plugin", self.runtime.name()),
            stderr_if_not_run: false,
        };
        let same_parent = move || {
            // SAFETY: getppid is async-signal-safe.
            if unsafe { libc::getppid() } != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        };
        helper.start(request_file, same_parent, with_runtime_output)
    }
}

/// `message` with the last lines the runtime wrote to the shim's stderr, where they add
/// something: a runtime that fails before it writes its `--log` file (a wrapper script, a
/// bad flag) says why only there.
fn with_runtime_output(message: String, shim: &mut Child) -> String {
    let Some(stderr) = shim.stderr.as_mut() else {
        return message;
    };
    // The shim is gone and the container deleted, but a stray holder of the pipe must not
    // make this read block: take what is there.
    let fd = stderr.as_raw_fd();
    // SAFETY: fcntl on a pipe fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let mut bytes = Vec::new();
    let _ = io::Read::read_to_end(stderr, &mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        // the shim's own report of the failure repeats `message`
        .filter(|l| !l.is_empty() && !message.contains(l) && !l.contains(message.as_str()))
        .collect();
    if lines.is_empty() {
        return message;
    }
    let last = &lines[lines.len().saturating_sub(3)..];
    format!("{message}; last output: {}", last.join(" | "))
}

/// Go's `exec.LookPath` for a bare name: the first executable `name` on `PATH`.
pub fn find_on_path(name: &str) -> io::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok()
            && candidate.is_file()
        {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("plugin runtime {name:?}: executable file not found in $PATH"),
    ))
}

/// Runs a runtime command whose failure only matters as a log line.
fn run_quietly(mut command: Command) {
    match command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if !status.success() => log::debug!("{command:?}: {status}"),
        Err(e) => log::debug!("{command:?}: {e}"),
        Ok(_) => {}
    }
}

/// The runtime's last error: the `msg` of the last `error` entry of its JSON log, else its
/// stderr.
pub fn runtime_error(request: &ShimRequest, stderr: &[u8]) -> String {
    let log = fs::read_to_string(request.bundle.join("runtime.log")).unwrap_or_default();
    let from_log = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error" || v["level"] == "fatal")
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .next_back();
    from_log.unwrap_or_else(|| String::from_utf8_lossy(stderr).trim().to_string())
}

impl Executor for OciExecutor {
    fn name(&self) -> &'static str {
        self.runtime.name()
    }

    fn start(&self, spec: &PluginSpec) -> io::Result<Box<dyn PluginProcess>> {
        check_id(&spec.id)?;
        if spec.args.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "plugin has no entrypoint: Config.Entrypoint and Settings.Args are empty",
            ));
        }
        let mut request = self.request(&spec.id)?;
        request.device_rules = spec.device_rules.clone();
        // A container left by an earlier instance (berth killed) must not survive.
        self.remove_container(&spec.id)?;
        let release = host::prepare(spec, None)?;
        let undo = |e: io::Error| -> io::Error {
            if let Err(cleanup) = self.remove_container(&spec.id) {
                log::warn!("{cleanup}");
            }
            if let Err(cleanup) = release.run() {
                log::warn!("{cleanup}");
            }
            e
        };
        super::init::create_init_layer(&LinuxSyscall, spec)
            .and_then(|()| super::init::create_mount_targets(&LinuxSyscall, spec))
            .map_err(|e| undo(io::Error::new(e.error.kind(), e.to_string())))?;
        let request_file = self.write_bundle(spec, &request).map_err(|e| {
            undo(io::Error::new(
                e.kind(),
                format!("writing the bundle {}: {e}", request.bundle.display()),
            ))
        })?;
        let child = self.spawn_shim(&request_file).map_err(undo)?;
        let plugin_pid = fs::read_to_string(request.pid_file())
            .ok()
            .and_then(|s| s.trim().parse::<libc::pid_t>().ok());
        let pidfd = plugin_pid.and_then(|pid| pidfd_open(pid).ok());
        let (executor, id) = (self.clone(), spec.id.clone());
        // berth signals the plugin's init through its pidfd, never the shim (see shim.rs)
        let plugin_pid = plugin_pid.unwrap_or(0) as u32;
        Ok(Box::new(HelperProcess::new(
            child,
            plugin_pid,
            pidfd,
            move || {
                if let Err(e) = executor.remove_container(&id) {
                    log::warn!("{e}");
                }
                if let Err(e) = release.run() {
                    log::warn!("{e}");
                }
            },
        )))
    }

    fn cleanup(&self, id: &str, spec: Option<&PluginSpec>) -> io::Result<()> {
        check_id(id)?;
        self.remove_container(id)?;
        host::release_leftovers(id, spec)
    }
}

fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}
