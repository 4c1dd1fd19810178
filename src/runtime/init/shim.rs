//! The process side of `plugin-init`: the report pipe back to berth and, for a plugin with
//! its own PID namespace, the shim that forks the plugin as that namespace's PID 1, forwards
//! signals to it and exits as it did.

use std::ffi::OsString;
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::libc;

use super::{prepare, InitRequest};
use crate::goerr::io_error_text;
use crate::runtime::helper::{begin, exit_as, signal_set, wait_child, Report, FORWARDED};
use crate::runtime::syscall::{LinuxSyscall, Syscall};

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(signal: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, signal) };
    }
}

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
        libc::sigprocmask(how, &signal_set(&FORWARDED), std::ptr::null_mut());
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
    let (mut report, request): (_, InitRequest) = begin("plugin-init", args);

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
    match wait_child(child) {
        Ok(status) => exit_as(status),
        Err(_) => std::process::exit(1),
    }
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
