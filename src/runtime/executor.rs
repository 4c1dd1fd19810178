//! The executor seam: the manager starts and stops plugin processes only through this trait,
//! implemented by the built-in executor ([`super::linux`]) and the OCI one ([`super::oci`]).

use std::io;
use std::process::{ChildStderr, ChildStdout, ExitStatus};

use super::spec::PluginSpec;

/// A started plugin. Dropping it does not stop the process.
pub trait PluginProcess: Send {
    /// Host PID of the process the executor supervises (what receives signals).
    fn pid(&self) -> u32;
    /// Host PID of the plugin's own first process (PID 1 of its PID namespace, or the
    /// entrypoint): the namespaces, root and cgroups `berth plugin exec` joins.
    fn plugin_pid(&self) -> u32;
    /// The plugin's stdout and stderr, for log forwarding; `None` after the first call.
    fn take_output(&mut self) -> Option<(ChildStdout, ChildStderr)>;
    /// Sends a signal (SIGTERM to stop gracefully, SIGKILL to force).
    fn signal(&self, signal: nix::sys::signal::Signal) -> io::Result<()>;
    /// Non-blocking exit check.
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>>;
    /// Blocks until the process is gone, then releases whatever the executor set up for it
    /// (cgroups, host-side mounts it made).
    fn wait(&mut self) -> io::Result<ExitStatus>;
}

pub trait Executor: Send + Sync {
    /// `builtin`, `runc`, `crun`: what `--plugin-runtime` named.
    fn name(&self) -> &'static str;

    /// Starts the plugin described by `spec`. Returns once the process runs (not when it is
    /// ready: readiness is the plugin socket accepting connections, the manager's concern).
    /// On error nothing stays running or mounted.
    fn start(&self, spec: &PluginSpec) -> io::Result<Box<dyn PluginProcess>>;

    /// Releases what a previous daemon run may have left for plugin `id` (after `kill -9` of
    /// berth): processes, cgroups, host-side mounts. Idempotent.
    fn cleanup(&self, id: &str, spec: Option<&PluginSpec>) -> io::Result<()>;
}
