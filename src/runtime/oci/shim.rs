//! `berth runtime-shim <shim.json> <report-fd>`: the process between berth and an OCI
//! runtime's container, as containerd's shim is for dockerd, reduced to what plugins need.
//!
//! It makes itself a child subreaper, runs `<runtime> create` (whose stdio, the shim's pipes
//! to berth, become the plugin's) and `<runtime> start`; the plugin's init, orphaned when
//! `create` exits, is reparented to the shim. Then it waits: signals berth sends are forwarded
//! to the plugin, and when the plugin exits the shim deletes the container and exits the way
//! the plugin did. Its PDEATHSIG is SIGTERM, and berth signals the plugin itself (through a
//! pidfd), never the shim: a SIGTERM to the shim means the thread that started it is gone
//! (berth died), and the plugin is killed, as the built-in executor's plugins die with the
//! thread that spawned them.
//!
//! Report protocol as `plugin-init`'s: `S` first, then `E<message>` or end-of-file (started).

use std::ffi::OsString;
use std::process::Stdio;

use nix::libc;

use super::{runtime_error, ShimRequest};
use crate::goerr::io_error_text;
use crate::runtime::helper::{begin, exit_as, signal_set, FORWARDED};

/// What the shim waits for: its children's exits and the signals it forwards to the plugin.
fn handled_set() -> libc::sigset_t {
    let mut signals = vec![libc::SIGCHLD];
    signals.extend(FORWARDED);
    signal_set(&signals)
}

/// Runs a runtime subcommand to its end, its output captured; the runtime's error otherwise.
fn run(request: &ShimRequest, args: &[&str]) -> Result<(), String> {
    let output = request
        .command(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {}", request.binary.display(), io_error_text(&e)))?;
    if output.status.success() {
        return Ok(());
    }
    Err(runtime_error(request, &output.stderr))
}

fn delete(request: &ShimRequest) {
    let _ = run(request, &["delete", "--force", &request.id]);
}

pub fn main(args: &[OsString]) -> ! {
    // SAFETY: getppid cannot fail.
    let berth = unsafe { libc::getppid() };
    let (mut report, request): (_, ShimRequest) = begin("runtime-shim", args);
    let name = request.runtime.name();
    let set = handled_set();
    // SAFETY: prctl and sigprocmask with valid arguments; the runtime's children get an empty
    // mask from std's spawn.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }

    // `create` hands its stdio to the plugin: stdin null, stdout and stderr the shim's pipes.
    let pid_file = request.pid_file().display().to_string();
    let bundle = request.bundle.display().to_string();
    let created = request
        .command(&[
            "create",
            "--bundle",
            &bundle,
            "--pid-file",
            &pid_file,
            &request.id,
        ])
        .stdin(Stdio::null())
        .status();
    match created {
        Ok(status) if status.success() => {}
        Ok(status) => {
            let mut message = runtime_error(&request, b"");
            if message.is_empty() {
                message = status.to_string();
            }
            delete(&request);
            report.fail(&format!("{name} create: {message}"))
        }
        Err(e) => report.fail(&format!(
            "{name} create: {}: {}",
            request.binary.display(),
            io_error_text(&e)
        )),
    }
    let plugin: libc::pid_t = match std::fs::read_to_string(request.pid_file())
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        Some(pid) => pid,
        None => {
            delete(&request);
            report.fail(&format!("{name} create: no PID in {pid_file}"))
        }
    };
    if let Err(e) = exactly_the_spec_device_rules(plugin, &request.device_rules) {
        delete(&request);
        report.fail(&format!("{name} create: {e}"));
    }
    if let Err(message) = run(&request, &["start", &request.id]) {
        delete(&request);
        report.fail(&format!("{name} start: {message}"));
    }
    report.close();
    wait_for(plugin, berth, &set, &request)
}

/// runc 1.1 appends rules of its own after the spec's (`c 10:200 rwm`, `/dev/net/tun`, among
/// them): before the entrypoint runs, the created container's v1 devices cgroup is reset to
/// exactly the spec's rules, in order, so a runtime never grants more than the built-in
/// executor does.
fn exactly_the_spec_device_rules(
    plugin: libc::pid_t,
    rules: &[crate::runtime::spec::DeviceRule],
) -> std::io::Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let dirs = crate::runtime::host::cgroup_dirs(plugin as u32)?;
    let Some((_, dir)) = dirs
        .iter()
        .find(|(controllers, _)| controllers.split(',').any(|c| c == "devices"))
    else {
        return Ok(());
    };
    for rule in rules {
        let file = dir.join(if rule.allow {
            "devices.allow"
        } else {
            "devices.deny"
        });
        let line = crate::runtime::init::device_rule_line(rule);
        std::fs::write(&file, &line).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("writing {line:?} to {}: {e}", file.display()),
            )
        })?;
    }
    Ok(())
}

/// Forwards signals to the plugin until it exits (reaping whatever else is reparented to the
/// shim), deletes the container and exits as the plugin did.
fn wait_for(
    plugin: libc::pid_t,
    berth: libc::pid_t,
    set: &libc::sigset_t,
    request: &ShimRequest,
) -> ! {
    let berth_gone = || {
        // SAFETY: getppid cannot fail.
        unsafe { libc::getppid() != berth }
    };
    if berth_gone() {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(plugin, libc::SIGKILL) };
    }
    loop {
        let mut status = 0;
        loop {
            // SAFETY: reaping any child without blocking.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == plugin {
                delete(request);
                exit_as(status);
            }
        }
        // SAFETY: waiting for one of the blocked signals.
        let signal = unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) };
        match signal {
            libc::SIGCHLD | -1 => {}
            libc::SIGTERM => {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(plugin, libc::SIGKILL) };
            }
            other => {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(plugin, other) };
            }
        }
    }
}
