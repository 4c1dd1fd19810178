//! `berth plugin exec`: a command run inside a running plugin, whatever executor started it.
//!
//! The daemon only says what to join ([`ExecTarget`]: the plugin's first process, its
//! capabilities, environment and working directory); the joining happens in the calling
//! `berth plugin exec` process, as `runc exec` and `nsenter` do, so the command is that
//! process's grandchild: its stdio is the caller's (or a pty), its signals and exit status
//! need no relay through the daemon, and the daemon never forks. [`run`]:
//! 1. opens a pidfd on the target and checks the process start time the daemon reported
//!    (a recycled PID is refused);
//! 2. with `-t`, opens a pty master in the plugin's own devpts (`/proc/<pid>/root/dev/pts/ptmx`)
//!    and its peer slave;
//! 3. forks; the child joins the target's cgroups (so its device rules apply), then its
//!    namespaces with one `setns(pidfd, ...)` (mount, PID, IPC, UTS, network; user and cgroup
//!    where they differ from ours; the mount namespace brings the plugin's root), and forks
//!    again: only a child of a process that joined a PID namespace is in it. The grandchild
//!    takes the pty as controlling terminal, enters the working directory, looks the command
//!    up on the plugin's `PATH`, limits its capabilities to the plugin's (bounding, effective,
//!    permitted, inheritable; nothing ambient) and execs. The middle process forwards signals
//!    to it and exits as it did;
//! 4. the caller forwards signals to the middle process, relays the terminal (raw mode,
//!    window size on SIGWINCH) and exits with the command's status.
//!
//! A command that cannot be started is reported over a close-on-exec pipe in Docker's words
//! and exits 127 (not found) or 126.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::libc;
use serde::{Deserialize, Serialize};

use super::helper::{exit_as, wait_child};
use super::host::cgroup_dirs;
use super::init::process::{apply_capabilities, find_executable};
use super::init::shim::forward_signals_to;
use super::syscall::{LinuxSyscall, Syscall};

/// What `berth plugin exec` joins, as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecTarget {
    /// Host PID of the plugin's first process.
    pub pid: u32,
    /// Its start time (field 22 of `/proc/<pid>/stat`, clock ticks after boot).
    pub start_time: u64,
    /// Bounding, effective and permitted sets of the plugin (`CAP_*`).
    pub capabilities: Vec<String>,
    pub inheritable_capabilities: Vec<String>,
    /// The plugin's environment (`PATH` first).
    pub env: Vec<String>,
    /// The plugin's working directory.
    pub cwd: String,
}

/// What to run in the target.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub command: Vec<String>,
    /// `K=V` added to (or replacing in) the plugin's environment.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub tty: bool,
}

/// Why nothing ran.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The process the daemon named is gone (or its PID was recycled).
    #[error("plugin process {0} is not running")]
    Gone(u32),
    /// The command could not be started; Docker's wording and exit code.
    #[error("OCI runtime exec failed: exec failed: unable to start container process: {message}: unknown")]
    Start { message: String, code: i32 },
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl ExecError {
    /// The exit status `berth plugin exec` ends with for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExecError::Start { code, .. } => *code,
            _ => 126,
        }
    }
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks after boot.
pub fn process_start_time(pid: u32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // the command name (field 2) may hold spaces and parentheses: count after the last ')'
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("malformed stat"))?;
    after
        .split_whitespace()
        .nth(19)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("malformed stat"))
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The `cgroup.procs` files of the target's cgroups, one per hierarchy mounted on the host.
fn cgroup_procs_files(pid: u32) -> io::Result<Vec<PathBuf>> {
    Ok(cgroup_dirs(pid)?
        .into_iter()
        // v1 has no "no internal processes" rule; on v2 only a leaf can be joined, and a
        // plugin left in the host's own cgroup there needs no joining
        .filter(|(controllers, dir)| !controllers.is_empty() || dir.join("cgroup.procs").exists())
        .map(|(_, dir)| dir.join("cgroup.procs"))
        .collect())
}

/// Namespaces of `pid` that differ from this process's, as `CLONE_*` flags; mount, PID, IPC,
/// UTS and network are always joined (joining one's own is a no-op), user and cgroup only
/// when they differ (the kernel refuses to re-enter one's own user namespace).
fn namespace_flags(pid: u32) -> libc::c_int {
    let differs = |ns: &str| {
        let theirs = fs::metadata(format!("/proc/{pid}/ns/{ns}"));
        let ours = fs::metadata(format!("/proc/self/ns/{ns}"));
        use std::os::unix::fs::MetadataExt;
        match (theirs, ours) {
            (Ok(a), Ok(b)) => a.ino() != b.ino(),
            _ => false,
        }
    };
    let mut flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWNET;
    if differs("user") {
        flags |= libc::CLONE_NEWUSER;
    }
    if differs("cgroup") {
        flags |= libc::CLONE_NEWCGROUP;
    }
    flags
}

/// The plugin's environment with `overrides` applied (same key replaced, new keys appended).
pub fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let key = |e: &str| {
        e.split_once('=')
            .map(|(k, _)| k.to_string())
            .unwrap_or_else(|| e.to_string())
    };
    let mut env: Vec<String> = base.to_vec();
    for o in overrides {
        let k = key(o);
        match env.iter_mut().find(|e| key(e) == k) {
            Some(existing) => *existing = o.clone(),
            None => env.push(o.clone()),
        }
    }
    env
}

/// The write end of the pipe a failed start is reported on (`<exit code> <message>`); it
/// closes on a successful exec.
struct Failure(OwnedFd);

impl Failure {
    fn report(&self, message: String, code: i32) -> ! {
        if let Ok(fd) = self.0.try_clone() {
            let _ = fs::File::from(fd).write_all(format!("{code} {message}").as_bytes());
        }
        std::process::exit(code)
    }
}

struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

/// A pty pair from the plugin's own devpts instance, so the slave exists inside it.
fn open_pty(pid: u32) -> io::Result<Pty> {
    let path = CString::new(format!("/proc/{pid}/root/dev/pts/ptmx")).map_err(io::Error::other)?;
    // SAFETY: open with a valid path.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("opening the plugin's /dev/pts/ptmx: {e}"),
        ));
    }
    // SAFETY: we own the fd just opened.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to an int; TIOCGPTPEER returns a new fd.
    let slave = unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok(Pty { master, slave })
}

fn copy_window_size(from: RawFd, to: RawFd) {
    // SAFETY: winsize is plain data; the ioctls read/write it.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut size) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &size);
        }
    }
}

/// Runs `options.command` in `target`; returns the exit code `berth plugin exec` ends with.
/// The calling process must be single-threaded (the forks below set up namespaces).
pub fn run(target: &ExecTarget, options: &ExecOptions) -> Result<i32, ExecError> {
    let pidfd = pidfd_open(target.pid).map_err(|_| ExecError::Gone(target.pid))?;
    if process_start_time(target.pid).ok() != Some(target.start_time) {
        return Err(ExecError::Gone(target.pid));
    }
    let cgroups = cgroup_procs_files(target.pid)?;
    let flags = namespace_flags(target.pid);
    let pty = if options.tty {
        Some(open_pty(target.pid)?)
    } else {
        None
    };
    let mut env = merge_env(&target.env, &options.env);
    if options.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let cwd = options
        .workdir
        .clone()
        .unwrap_or_else(|| target.cwd.clone());
    let (error_r, error_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;

    // SAFETY: the caller is single-threaded, so the child may do anything.
    let middle = unsafe { libc::fork() };
    if middle < 0 {
        return Err(io::Error::last_os_error().into());
    }
    if middle == 0 {
        drop(error_r);
        let failure = Failure(error_w);
        let report = |message: String, code: i32| failure.report(message, code);
        for file in &cgroups {
            if let Err(e) = fs::write(file, "0") {
                report(format!("joining cgroup {}: {e}", file.display()), 126);
            }
        }
        // SAFETY: setns with a pidfd we own.
        if unsafe { libc::setns(pidfd.as_raw_fd(), flags) } < 0 {
            let e = io::Error::last_os_error();
            report(format!("joining the plugin's namespaces: {e}"), 126);
        }
        drop(pidfd);
        // SAFETY: single-threaded child.
        let command = unsafe { libc::fork() };
        if command < 0 {
            report(format!("fork: {}", io::Error::last_os_error()), 126);
        }
        if command == 0 {
            start_command(options, &env, &cwd, target, pty.as_ref(), &failure);
        }
        drop(pty);
        drop(failure);
        forward_signals_to(command);
        match wait_child(command) {
            Ok(status) => exit_as(status),
            Err(_) => std::process::exit(126),
        }
    }
    drop(error_w);
    // our copy of the slave goes: the master reads EIO once the command's copies are gone
    let master = pty.map(|p| p.master);
    forward_signals_to(middle);
    let mut failure = String::new();
    let _ = fs::File::from(error_r).read_to_string(&mut failure);
    if let (Some(master), true) = (&master, failure.is_empty()) {
        relay_terminal(master.as_raw_fd());
    }
    let status = wait_child(middle)?;
    if let Some((code, message)) = failure.split_once(' ') {
        return Err(ExecError::Start {
            message: message.to_string(),
            code: code.parse().unwrap_or(126),
        });
    }
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    })
}

/// In the grandchild, inside the plugin: terminal, directory, command, capabilities, exec.
fn start_command(
    options: &ExecOptions,
    env: &[String],
    cwd: &str,
    target: &ExecTarget,
    pty: Option<&Pty>,
    failure: &Failure,
) -> ! {
    let report = |message: String, code: i32| failure.report(message, code);
    let sys = LinuxSyscall;
    // SAFETY: plain syscalls on fds we own.
    unsafe {
        libc::setsid();
        if let Some(pty) = pty {
            let slave = pty.slave.as_raw_fd();
            libc::ioctl(slave, libc::TIOCSCTTY, 0);
            for fd in 0..3 {
                libc::dup2(slave, fd);
            }
        }
    }
    if let Err(e) = sys.chdir(Path::new(cwd)) {
        report(
            format!(
                "chdir to cwd ({cwd:?}) set in config.json failed: {}",
                crate::goerr::io_error_text(&e)
            ),
            126,
        );
    }
    let Some(arg0) = options.command.first() else {
        report("no command".into(), 126)
    };
    let path = match find_executable(&sys, arg0, env) {
        Ok(path) => path,
        Err(e) => {
            let code = if e.error.kind() == io::ErrorKind::PermissionDenied {
                126
            } else {
                127
            };
            report(e.to_string(), code)
        }
    };
    if let Err(e) = apply_capabilities(&sys, &target.capabilities, &target.inheritable_capabilities)
    {
        report(e.to_string(), 126);
    }
    if let Err(e) = sys.reset_signals() {
        report(format!("resetting signals: {e}"), 126);
    }
    let error = sys.execve(&path, &options.command, env);
    let code = if error.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    report(
        format!("exec: {:?}: {}", arg0, crate::goerr::io_error_text(&error)),
        code,
    )
}

static WINCH: AtomicBool = AtomicBool::new(false);

extern "C" fn on_winch(_: libc::c_int) {
    WINCH.store(true, Ordering::SeqCst);
}

/// Puts our terminal (if stdin is one) in raw mode and restores it when dropped.
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enter() -> RawMode {
        // SAFETY: termios is plain data; tcgetattr/tcsetattr on stdin.
        unsafe {
            if libc::isatty(0) == 0 {
                return RawMode(None);
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) < 0 {
                return RawMode(None);
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            libc::tcsetattr(0, libc::TCSANOW, &raw);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restoring the settings read before.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, saved) };
        }
    }
}

/// Copies stdin to the master and the master to stdout until the command's side of the pty
/// is closed; the window size follows ours.
fn relay_terminal(master: RawFd) {
    copy_window_size(0, master);
    // SAFETY: on_winch only stores to an atomic.
    unsafe { libc::signal(libc::SIGWINCH, on_winch as *const () as libc::sighandler_t) };
    let _raw = RawMode::enter();
    let mut stdin_open = true;
    let mut buf = [0u8; 8192];
    loop {
        if WINCH.swap(false, Ordering::SeqCst) {
            copy_window_size(0, master);
        }
        let mut fds = [
            libc::pollfd {
                fd: master,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[0].revents != 0 {
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(master, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return; // EIO: every slave fd is closed, the command is gone
            }
            if write_all(1, &buf[..n as usize]).is_err() {
                return;
            }
        }
        if stdin_open && fds[1].revents != 0 {
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                stdin_open = false;
            } else if write_all(master, &buf[..n as usize]).is_err() {
                return;
            }
        }
    }
}

fn write_all(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writing a valid buffer.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_replace_by_key() {
        let base = vec!["PATH=/bin".to_string(), "A=1".into()];
        assert_eq!(
            merge_env(&base, &["A=2".into(), "B=3".into()]),
            ["PATH=/bin", "A=2", "B=3"]
        );
    }

    #[test]
    fn start_time_of_this_process() {
        let t = process_start_time(std::process::id()).unwrap();
        assert!(t > 0);
        assert_eq!(process_start_time(std::process::id()).unwrap(), t);
    }

    #[test]
    fn start_errors_read_as_dockers() {
        let e = ExecError::Start {
            message: "exec: \"nope\": executable file not found in $PATH".into(),
            code: 127,
        };
        assert_eq!(
            e.to_string(),
            "OCI runtime exec failed: exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH: unknown"
        );
        assert_eq!(e.exit_code(), 127);
    }
}
