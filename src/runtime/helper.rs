//! berth's own helper processes: `plugin-init` (the built-in executor) and `runtime-shim` (the
//! OCI executor). Both are berth re-executed (or the program tests name) as
//! `<program> <subcommand> <request file> <report fd>`, in a new session, with a parent-death
//! signal so a `kill -9` of berth takes the plugin down; berth then waits, bounded, on the
//! report pipe (close-on-exec in the helper) until the plugin runs or the helper said why not.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::de::DeserializeOwned;

use super::executor::PluginProcess;
use crate::goerr::io_error_text;

/// Where the helper program is by default: this very binary, even if it was replaced on disk.
pub const SELF_EXE: &str = "/proc/self/exe";

/// How to start one helper and word its failures.
pub(crate) struct Helper<'a> {
    /// The program re-executed (`SELF_EXE`, or the built `berth` in tests).
    pub program: &'a Path,
    /// Its hidden subcommand: `plugin-init`, `runtime-shim`.
    pub subcommand: &'static str,
    /// What the helper gets when the thread that spawned it dies.
    pub death_signal: libc::c_int,
    /// How long the helper has to report.
    pub timeout: Duration,
    /// The message's start when it did not report in time (" within <timeout>" follows).
    pub timed_out: String,
    /// Whether a helper that never ran adds its stderr to the message (the OCI executor adds
    /// the runtime's output to every failure itself).
    pub stderr_if_not_run: bool,
}

impl Helper<'_> {
    /// Spawns the helper and waits for its report. Between fork and exec the child only makes
    /// the report fd inheritable, arms the parent-death signal, starts a new session and runs
    /// `then` (async-signal-safe calls only). On a failure the helper is killed and reaped and
    /// the error's message is `finish(message, helper)`.
    pub fn start(
        &self,
        request_file: &Path,
        mut then: impl FnMut() -> io::Result<()> + Send + Sync + 'static,
        finish: impl FnOnce(String, &mut Child) -> String,
    ) -> io::Result<Child> {
        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        let write_fd = write_end.as_raw_fd();
        let death_signal = self.death_signal;
        let mut command = Command::new(self.program);
        if self.program == Path::new(SELF_EXE) {
            command.arg0("berth");
        }
        command
            .arg(self.subcommand)
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
                        death_signal as libc::c_ulong,
                        0,
                        0,
                        0,
                    ) < 0
                    || libc::setsid() < 0
                {
                    return Err(io::Error::last_os_error());
                }
                then()
            });
        }
        let spawned = command.spawn();
        drop(write_end);
        let mut child = spawned.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "starting {} {}: {}",
                    self.program.display(),
                    self.subcommand,
                    io_error_text(&e)
                ),
            )
        })?;
        let message = match read_report(&read_end, self.timeout) {
            Ok(Outcome::Exec) => return Ok(child),
            Ok(Outcome::Failed(message)) => message,
            Ok(Outcome::TimedOut) => format!("{} within {:?}", self.timed_out, self.timeout),
            Ok(Outcome::NotStarted) => self.not_started(&mut child),
            Err(e) => format!("reading the {} report: {e}", self.subcommand),
        };
        let _ = child.kill();
        let _ = child.wait();
        Err(io::Error::other(finish(message, &mut child)))
    }

    fn not_started(&self, child: &mut Child) -> String {
        let status = wait_bounded(child, Duration::from_secs(5))
            .map(|s| s.to_string())
            .unwrap_or_else(|| "still running".into());
        let message = format!(
            "{} {} did not run ({status})",
            self.program.display(),
            self.subcommand
        );
        if !self.stderr_if_not_run {
            return message;
        }
        let mut output = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut output);
        }
        format!("{message}: {}", output.trim())
    }
}

/// A started plugin as both executors hand it out: the helper berth spawned (the shim, or the
/// plugin itself), its exit status once reaped, and what is undone, once, when it is gone.
pub(crate) struct HelperProcess {
    child: Child,
    plugin_pid: u32,
    /// The plugin's own process, where berth signals it rather than the helper: a pidfd still
    /// refers to it after it exited (the shim reaps it), so a signal then fails instead of
    /// reaching a recycled PID.
    signal_target: Option<OwnedFd>,
    status: Option<ExitStatus>,
    on_exit: Option<Box<dyn FnOnce() + Send>>,
}

impl HelperProcess {
    pub fn new(
        child: Child,
        plugin_pid: u32,
        signal_target: Option<OwnedFd>,
        on_exit: impl FnOnce() + Send + 'static,
    ) -> HelperProcess {
        HelperProcess {
            child,
            plugin_pid,
            signal_target,
            status: None,
            on_exit: Some(Box::new(on_exit)),
        }
    }

    fn exited(&mut self, status: ExitStatus) -> ExitStatus {
        self.status = Some(status);
        if let Some(on_exit) = self.on_exit.take() {
            on_exit();
        }
        status
    }
}

impl PluginProcess for HelperProcess {
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
        let Some(pidfd) = &self.signal_target else {
            return nix::sys::signal::kill(Pid::from_raw(self.child.id() as i32), signal)
                .map_err(io::Error::from);
        };
        // SAFETY: pidfd_send_signal with a pidfd we own and no siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
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

/// What the helper said on the report pipe.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
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

fn read_report(fd: &OwnedFd, timeout: Duration) -> io::Result<Outcome> {
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

fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}

// The helper's side.

/// The helper's start, `berth <subcommand> <request file> <report fd>`: a usage error exits 2;
/// then every inherited fd above stderr is made close-on-exec, `S` goes on the report pipe and
/// the request is read (a failure to read it reported).
pub(crate) fn begin<T: DeserializeOwned>(subcommand: &str, args: &[OsString]) -> (Report, T) {
    let usage = || -> ! {
        eprintln!("usage: berth {subcommand} REQUEST-FILE REPORT-FD (internal to the daemon)");
        std::process::exit(2)
    };
    let [request_path, fd] = args else { usage() };
    let Some(fd) = fd.to_str().and_then(|s| s.parse::<RawFd>().ok()) else {
        usage()
    };
    cloexec_from_3();
    let report = Report(Some(fd));
    report.write(b"S");
    let request = match std::fs::read(request_path)
        .map_err(|e| io_error_text(&e))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => report.fail(&format!(
            "reading {}: {e}",
            Path::new(request_path).display()
        )),
    };
    (report, request)
}

/// The write end of the report pipe.
pub(crate) struct Report(Option<RawFd>);

impl Report {
    pub(crate) fn write(&self, bytes: &[u8]) {
        if let Some(fd) = self.0 {
            let mut rest = bytes;
            while !rest.is_empty() {
                // SAFETY: writing a valid buffer to an fd we own.
                let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
                if n < 0 {
                    if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return;
                }
                rest = &rest[n as usize..];
            }
        }
    }

    pub(crate) fn fail(&self, message: &str) -> ! {
        eprintln!("berth plugin-init: {message}");
        let mut bytes = b"E".to_vec();
        bytes.extend_from_slice(message.as_bytes());
        self.write(&bytes);
        std::process::exit(1)
    }

    pub(crate) fn close(&mut self) {
        if let Some(fd) = self.0.take() {
            // SAFETY: closing an fd we own, once.
            unsafe { libc::close(fd) };
        }
    }
}

/// Marks every fd above stderr close-on-exec, so nothing berth leaked reaches the plugin.
fn cloexec_from_3() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes fd flags.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if rc < 0 {
        for fd in 3..4096 {
            // SAFETY: F_SETFD on a possibly closed fd just fails.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// The signals a helper passes on to the plugin.
pub(crate) const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The set of `signals`.
pub(crate) fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Waits for our child `pid` to exit (through interruptions): its wait status.
pub(crate) fn wait_child(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child with a valid status pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(status);
        }
        let e = io::Error::last_os_error();
        if rc < 0 && e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Exits the way a child with wait `status` did: its exit code, or its signal re-raised.
pub(crate) fn exit_as(status: libc::c_int) -> ! {
    if libc::WIFEXITED(status) {
        std::process::exit(libc::WEXITSTATUS(status));
    }
    let signal = libc::WTERMSIG(status);
    // SAFETY: restoring the default disposition and raising it on ourselves.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::sigprocmask(libc::SIG_SETMASK, &signal_set(&[]), std::ptr::null_mut());
        libc::raise(signal);
    }
    std::process::exit(128 + signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_protocol() {
        use std::io::Write;
        let outcome = |bytes: &[u8]| {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
            let mut w = std::fs::File::from(w);
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
