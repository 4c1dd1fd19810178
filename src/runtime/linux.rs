//! The built-in executor: runs a plugin's rootfs in Linux namespaces with nix + caps.
//!
//! berth is multi-threaded, so no mount or namespace work happens in a forked copy of it.
//! [`LinuxExecutor::start`]:
//! 1. makes the host side ready: the socket directory; the propagated-mount directory bound
//!    onto itself and made `rshared` on the host (as moby does), so mounts the plugin makes
//!    under its `PropagatedMount` show up at `<data-root>/plugins/<id>/propagated-mount`;
//! 2. writes an [`init::InitRequest`] (spec + host choices) to `<exec-root>/plugins/.<id>.init.json`;
//! 3. spawns `berth plugin-init <request> <report-fd>` (re-executing `/proc/self/exe`) with stdin
//!    null and stdout/stderr piped; between fork and exec the child only arms
//!    `PR_SET_PDEATHSIG(SIGKILL)` (the plugin dies with the thread that spawned it, so a
//!    `kill -9` of berth takes plugins down), starts a new session and `unshare`s the namespaces
//!    the spec asks for (mount, UTS, IPC, network, PID);
//! 4. waits (bounded) on the report pipe until the entrypoint was exec'd, or returns the
//!    setup error `plugin-init` reported, after undoing everything.
//!
//! The rest happens in [`init`] (`plugin-init`), a fresh single-threaded process.
//! [`PluginProcess::wait`] and [`Executor::cleanup`] release (through [`super::host`]) the devices cgroup (killing
//! whatever is left in it) and every host mount under the plugin's propagated mount.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::executor::{Executor, PluginProcess};
use super::host::{self, check_id, remove_cgroup, Release};
use super::init::{self, InitRequest};
use super::spec::PluginSpec;
use crate::mounts::read_mountinfo;

/// Entry point of the hidden `berth plugin-init` subcommand. `main` must call it first thing,
/// before any thread exists, with the arguments that follow `plugin-init`:
///
/// ```ignore
/// let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
/// if args.get(1).is_some_and(|a| a == "plugin-init") {
///     berth::runtime::linux::init_main(&args[2..]);
/// }
/// ```
pub fn init_main(args: &[OsString]) -> ! {
    init::run(args)
}

/// Where the init program is by default: this very binary, even if it was replaced on disk.
pub const SELF_EXE: &str = "/proc/self/exe";

/// The built-in namespaces executor.
#[derive(Debug, Clone)]
pub struct LinuxExecutor {
    init_program: PathBuf,
    /// Mount point of the v1 `devices` hierarchy, if the host has one.
    devices_hierarchy: Option<PathBuf>,
    /// Directory under the devices hierarchy that holds one cgroup per plugin.
    cgroup_parent: String,
    cgroup2_only: bool,
    setup_timeout: Duration,
}

impl Default for LinuxExecutor {
    fn default() -> Self {
        LinuxExecutor::new()
    }
}

impl LinuxExecutor {
    /// Looks at the host's cgroup mounts once: a v1 `devices` hierarchy is used for device
    /// rules (`<hierarchy>/berth/<id>`); without one device rules are not enforced and every
    /// plugin start logs a warning.
    pub fn new() -> LinuxExecutor {
        let mounts = read_mountinfo().unwrap_or_default();
        let devices_hierarchy = host::devices_hierarchy();
        let cgroup2_only = mounts
            .iter()
            .rev()
            .find(|m| m.mount_point == Path::new("/sys/fs/cgroup"))
            .is_some_and(|m| m.fstype == "cgroup2");
        if devices_hierarchy.is_none() {
            log::warn!(
                "no cgroup v1 devices hierarchy: plugin device rules will not be enforced{}",
                if cgroup2_only {
                    " (cgroup v2 device control needs BPF programs, not implemented)"
                } else {
                    ""
                }
            );
        }
        LinuxExecutor {
            init_program: PathBuf::from(SELF_EXE),
            devices_hierarchy,
            cgroup_parent: "berth".into(),
            cgroup2_only,
            setup_timeout: Duration::from_secs(60),
        }
    }

    /// The program run as `<program> plugin-init ...` (tests point it at the built `berth`).
    pub fn with_init_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.init_program = program.into();
        self
    }

    /// The directory under the devices hierarchy holding the plugins' cgroups (`berth`).
    pub fn with_cgroup_parent(mut self, name: impl Into<String>) -> Self {
        self.cgroup_parent = name.into();
        self
    }

    /// How long `start` waits for `plugin-init` to exec the entrypoint.
    pub fn with_setup_timeout(mut self, timeout: Duration) -> Self {
        self.setup_timeout = timeout;
        self
    }

    /// `<devices hierarchy>/<parent>/<id>`, when device rules can be enforced.
    pub fn devices_cgroup(&self, id: &str) -> Option<PathBuf> {
        self.devices_hierarchy
            .as_ref()
            .map(|h| h.join(&self.cgroup_parent).join(id))
    }
}

/// The init request file lives next to the plugin's socket directory (hidden, transient).
fn request_path(spec: &PluginSpec) -> PathBuf {
    let dir = spec
        .paths
        .socket_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    dir.join(format!(".{}.init.json", spec.id))
}

fn clone_flags(spec: &PluginSpec) -> libc::c_int {
    let ns = &spec.namespaces;
    let mut flags = libc::CLONE_NEWNS;
    if ns.uts {
        flags |= libc::CLONE_NEWUTS;
    }
    if ns.ipc {
        flags |= libc::CLONE_NEWIPC;
    }
    if ns.network {
        flags |= libc::CLONE_NEWNET;
    }
    if ns.pid {
        flags |= libc::CLONE_NEWPID;
    }
    flags
}

/// What `plugin-init` said on the report pipe.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `S`, then end-of-file: the entrypoint was exec'd.
    Exec,
    /// `S` then `E<message>`.
    Failed(String),
    /// End-of-file without `S`: the init program never ran as plugin-init.
    NotStarted,
    TimedOut,
}

/// A libc return value: the count when it succeeded, `None` when the call was only
/// interrupted (try again), the OS error otherwise.
fn uninterrupted(rc: isize) -> io::Result<Option<usize>> {
    if rc >= 0 {
        return Ok(Some(rc as usize));
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::Interrupted {
        Ok(None)
    } else {
        Err(e)
    }
}

pub(crate) fn read_report(fd: &OwnedFd, timeout: Duration) -> io::Result<Outcome> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Outcome::TimedOut);
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        let Some(ready) = uninterrupted(ready as isize)? else {
            continue;
        };
        if ready == 0 {
            continue;
        }
        let mut chunk = [0u8; 4096];
        // SAFETY: reading into a local buffer from an fd we own.
        let n = unsafe { libc::read(fd.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
        let Some(n) = uninterrupted(n)? else {
            continue;
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(match buf.split_first() {
        None => Outcome::NotStarted,
        Some((b'S', [])) => Outcome::Exec,
        Some((b'S', [b'E', message @ ..])) => {
            Outcome::Failed(String::from_utf8_lossy(message).into_owned())
        }
        Some(_) => Outcome::Failed(format!(
            "unexpected report from plugin-init: {:?}",
            String::from_utf8_lossy(&buf)
        )),
    })
}

impl Executor for LinuxExecutor {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn start(&self, spec: &PluginSpec) -> io::Result<Box<dyn PluginProcess>> {
        check_id(&spec.id)?;
        if spec.args.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "plugin has no entrypoint: Config.Entrypoint and Settings.Args are empty",
            ));
        }
        if !spec.namespaces.mount {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the Linux executor needs a private mount namespace",
            ));
        }
        let cgroup = self.devices_cgroup(&spec.id);
        // A cgroup left by an earlier instance (berth killed): its processes must not survive.
        if let Some(dir) = &cgroup {
            remove_cgroup(dir)?;
        }
        let release = host::prepare(spec, cgroup.clone())?;

        let request = InitRequest {
            spec: spec.clone(),
            devices_cgroup: cgroup,
            cgroup2_only: self.cgroup2_only,
        };
        let request_file = request_path(spec);
        let written = serde_json::to_vec(&request)
            .map_err(io::Error::other)
            .and_then(|bytes| {
                let _ = fs::remove_file(&request_file);
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&request_file)?;
                io::Write::write_all(&mut f, &bytes)
            });
        if let Err(e) = written {
            let _ = release.run();
            return Err(io::Error::new(
                e.kind(),
                format!("writing {}: {e}", request_file.display()),
            ));
        }

        let result = self.spawn(spec, &request_file);
        let _ = fs::remove_file(&request_file);
        match result {
            Ok(child) => Ok(Box::new(LinuxProcess {
                plugin_pid: plugin_pid(&child, spec),
                child,
                status: None,
                release: Some(release),
            })),
            Err(e) => {
                if let Err(cleanup) = release.run() {
                    log::warn!("{cleanup}");
                }
                Err(e)
            }
        }
    }

    fn cleanup(&self, id: &str, spec: Option<&PluginSpec>) -> io::Result<()> {
        check_id(id)?;
        if let Some(dir) = self.devices_cgroup(id) {
            remove_cgroup(&dir)?;
        }
        host::release_leftovers(id, spec)?;
        if let Some(spec) = spec {
            let _ = fs::remove_file(request_path(spec));
        }
        Ok(())
    }
}

impl LinuxExecutor {
    /// Spawns plugin-init and waits until it exec'd the entrypoint or failed.
    fn spawn(&self, spec: &PluginSpec, request_file: &Path) -> io::Result<Child> {
        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        let write_fd = write_end.as_raw_fd();
        let flags = clone_flags(spec);
        let mut command = Command::new(&self.init_program);
        if self.init_program == Path::new(SELF_EXE) {
            command.arg0("berth");
        }
        command
            .arg("plugin-init")
            .arg(request_file)
            .arg(write_fd.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(write_fd, libc::F_SETFD, 0) < 0
                    || libc::prctl(
                        libc::PR_SET_PDEATHSIG,
                        libc::SIGKILL as libc::c_ulong,
                        0,
                        0,
                        0,
                    ) < 0
                    || libc::setsid() < 0
                    || libc::unshare(flags) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = command.spawn();
        drop(write_end);
        let mut child = spawned.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "starting {} plugin-init: {}",
                    self.init_program.display(),
                    crate::goerr::io_error_text(&e)
                ),
            )
        })?;
        let outcome = read_report(&read_end, self.setup_timeout);
        let message = match outcome {
            Ok(Outcome::Exec) => return Ok(child),
            Ok(Outcome::Failed(message)) => message,
            Ok(Outcome::TimedOut) => format!(
                "plugin-init did not finish the setup within {:?}",
                self.setup_timeout
            ),
            Ok(Outcome::NotStarted) => {
                let status = wait_bounded(&mut child, Duration::from_secs(5));
                let mut output = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = stderr.read_to_string(&mut output);
                }
                format!(
                    "{} plugin-init did not run ({}): {}",
                    self.init_program.display(),
                    status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "still running".into()),
                    output.trim()
                )
            }
            Err(e) => format!("reading the plugin-init report: {e}"),
        };
        let _ = child.kill();
        let _ = child.wait();
        Err(io::Error::other(message))
    }
}

/// The plugin's first process: with a private PID namespace the shim's one child (forked
/// before the entrypoint was exec'd), else the process berth spawned.
fn plugin_pid(child: &Child, spec: &PluginSpec) -> u32 {
    let shim = child.id();
    if !spec.namespaces.pid {
        return shim;
    }
    fs::read_to_string(format!("/proc/{shim}/task/{shim}/children"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(shim)
}

pub(crate) fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}

/// A started plugin: the process berth spawned (the PID-namespace shim, or the plugin itself
/// when it shares the host's PID namespace).
struct LinuxProcess {
    child: Child,
    plugin_pid: u32,
    status: Option<ExitStatus>,
    release: Option<Release>,
}

impl LinuxProcess {
    fn exited(&mut self, status: ExitStatus) -> ExitStatus {
        self.status = Some(status);
        if let Some(release) = self.release.take() {
            if let Err(e) = release.run() {
                log::warn!("{e}");
            }
        }
        status
    }
}

impl PluginProcess for LinuxProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn plugin_pid(&self) -> u32 {
        self.plugin_pid
    }

    fn take_output(&mut self) -> Option<(ChildStdout, ChildStderr)> {
        match (self.child.stdout.take(), self.child.stderr.take()) {
            (Some(out), Some(err)) => Some((out, err)),
            _ => None,
        }
    }

    fn signal(&self, signal: Signal) -> io::Result<()> {
        if self.status.is_some() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        nix::sys::signal::kill(Pid::from_raw(self.child.id() as i32), signal)
            .map_err(io::Error::from)
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        Ok(self.child.try_wait()?.map(|s| self.exited(s)))
    }

    fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self.child.wait()?;
        Ok(self.exited(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_protocol() {
        use std::io::Write;
        let outcome = |bytes: &[u8]| {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
            let mut w = fs::File::from(w);
            w.write_all(bytes).unwrap();
            drop(w);
            read_report(&r, Duration::from_secs(1)).unwrap()
        };
        assert_eq!(outcome(b"S"), Outcome::Exec);
        assert_eq!(outcome(b""), Outcome::NotStarted);
        assert_eq!(outcome(b"SEboom"), Outcome::Failed("boom".into()));
        let (r, _w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        assert_eq!(
            read_report(&r, Duration::from_millis(20)).unwrap(),
            Outcome::TimedOut
        );
    }
}
