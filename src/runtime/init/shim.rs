//! The process side of `plugin-init`: the report pipe back to berth and, for a plugin with
//! its own PID namespace, the shim that forks the plugin as that namespace's PID 1, forwards
//! signals to it and exits as it did.

use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::libc;

use super::{prepare, InitRequest};
use crate::goerr::io_error_text;
use crate::runtime::syscall::{LinuxSyscall, Syscall};

/// The write end of the report pipe.
pub(crate) struct Report(pub(crate) Option<RawFd>);

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
pub(crate) fn cloexec_from_3() {
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

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(signal: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, signal) };
    }
}

const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// From now on SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to this process go
/// to `child` instead.
pub(crate) fn forward_signals_to(child: libc::pid_t) {
    CHILD.store(child, Ordering::SeqCst);
    for s in FORWARDED {
        // SAFETY: forward_signal only calls kill.
        unsafe { libc::signal(s, forward_signal as *const () as libc::sighandler_t) };
    }
}

fn signal_mask(how: libc::c_int) {
    // SAFETY: sigset manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(how, &set, std::ptr::null_mut());
    }
}

fn set_pdeathsig() {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
}

/// `berth plugin-init <request.json> <report-fd>`.
pub fn run(args: &[OsString]) -> ! {
    let usage = || -> ! {
        eprintln!("usage: berth plugin-init REQUEST-FILE REPORT-FD (internal to the daemon)");
        std::process::exit(2)
    };
    let [request_path, fd] = args else { usage() };
    let Some(fd) = fd.to_str().and_then(|s| s.parse::<RawFd>().ok()) else {
        usage()
    };
    cloexec_from_3();
    let mut report = Report(Some(fd));
    report.write(b"S");

    let request: InitRequest = match std::fs::read(request_path)
        .map_err(|e| io_error_text(&e))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => report.fail(&format!(
            "reading {}: {e}",
            Path::new(request_path).display()
        )),
    };

    if !request.spec.namespaces.pid {
        setup_and_exec(&request, &report);
    }

    // A private PID namespace: berth unshared it before exec, so our first child is its PID 1.
    signal_mask(libc::SIG_BLOCK);
    // The shim holds the write end of this pipe for as long as it lives: the child (whose
    // parent is outside its PID namespace, so getppid() says 0) sees it hang up if the shim
    // died before PDEATHSIG was armed.
    let (lifeline_r, lifeline_w) =
        match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from) {
            Ok(fds) => fds,
            Err(e) => report.fail(&format!("pipe: {}", io_error_text(&e))),
        };
    // SAFETY: this process is single-threaded (plugin-init runs before anything else in main).
    match unsafe { libc::fork() } {
        -1 => report.fail(&format!(
            "fork: {}",
            io_error_text(&io::Error::last_os_error())
        )),
        0 => {
            set_pdeathsig();
            drop(lifeline_w);
            let mut pfd = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&lifeline_r),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, no wait.
            if unsafe { libc::poll(&mut pfd, 1, 0) } != 0 {
                std::process::exit(1);
            }
            drop(lifeline_r);
            signal_mask(libc::SIG_UNBLOCK);
            setup_and_exec(&request, &report)
        }
        child => {
            drop(lifeline_r);
            // kept open (never exec'd) until the shim exits
            std::mem::forget(lifeline_w);
            forward_signals_to(child);
            signal_mask(libc::SIG_UNBLOCK);
            report.close();
            shim_wait(child)
        }
    }
}

/// Waits for the plugin and exits as it did (a signal death is re-raised on the shim).
fn shim_wait(child: libc::pid_t) -> ! {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid status pointer.
        let rc = unsafe { libc::waitpid(child, &mut status, 0) };
        if rc == child {
            break;
        }
        if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            std::process::exit(1);
        }
    }
    exit_as(status)
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
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    std::process::exit(128 + signal)
}

fn setup_and_exec(request: &InitRequest, report: &Report) -> ! {
    let sys = LinuxSyscall;
    let execution = match prepare(&sys, request) {
        Ok(e) => e,
        Err(e) => report.fail(&e.to_string()),
    };
    if let Err(e) = sys.reset_signals() {
        report.fail(&format!("resetting signals: {}", io_error_text(&e)));
    }
    let error = sys.execve(&execution.path, &execution.args, &execution.env);
    report.fail(&format!(
        "exec {}: {}",
        execution.path.display(),
        io_error_text(&error)
    ))
}
