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
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use nix::libc;

use super::executor::{Executor, PluginProcess};
use super::helper::{Helper, HelperProcess, SELF_EXE};
use super::host::{self, check_id, remove_cgroup};
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
            Ok(child) => {
                let plugin_pid = plugin_pid(&child, spec);
                Ok(Box::new(HelperProcess::new(
                    child,
                    plugin_pid,
                    None,
                    move || {
                        if let Err(e) = release.run() {
                            log::warn!("{e}");
                        }
                    },
                )))
            }
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
        let flags = clone_flags(spec);
        let helper = Helper {
            program: &self.init_program,
            subcommand: "plugin-init",
            death_signal: libc::SIGKILL,
            timeout: self.setup_timeout,
            timed_out: "plugin-init did not finish the setup".into(),
            stderr_if_not_run: true,
        };
        let unshare = move || {
            // SAFETY: unshare is async-signal-safe.
            if unsafe { libc::unshare(flags) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        helper.start(request_file, unshare, |message, _| message)
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
