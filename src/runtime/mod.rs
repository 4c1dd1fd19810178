//! Running managed plugins: what to run ([`spec`], built by the plugin model), the executor
//! seam ([`executor`]) and its implementations: the built-in Linux namespaces executor
//! ([`linux`]) with its `plugin-init` process ([`init`], one function per setup step), whose
//! kernel calls go through [`syscall::Syscall`] so the setup sequence is unit-testable without
//! root, and the OCI executor ([`oci`]: a bundle for runc or crun, driven by `runtime-shim`).
//! Both prepare and release the host side the same way ([`host`]), start their helper process
//! (`plugin-init`, `runtime-shim`) the same way ([`helper`]), are supervised the same way
//! ([`supervisor`], [`logs`]), and can be entered by `berth plugin exec` ([`exec`]).

pub mod exec;
pub mod executor;
pub mod helper;
pub mod host;
pub mod init;
pub mod linux;
pub mod logs;
pub mod oci;
pub mod spec;
pub mod supervisor;
pub mod syscall;

use std::path::Path;
use std::sync::Arc;

/// What runs plugins: `--plugin-runtime` / daemon.json `plugin-runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PluginRuntime {
    /// The built-in namespaces executor ([`linux`]).
    #[default]
    Builtin,
    /// An OCI runtime driving a bundle ([`oci`]).
    Oci(oci::OciRuntime),
}

/// An unknown `--plugin-runtime` name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plugin runtime {0:?}: expected builtin, runc or crun")]
pub struct UnknownRuntime(pub String);

impl std::str::FromStr for PluginRuntime {
    type Err = UnknownRuntime;

    fn from_str(name: &str) -> Result<PluginRuntime, UnknownRuntime> {
        match name {
            "builtin" => Ok(PluginRuntime::Builtin),
            "runc" => Ok(PluginRuntime::Oci(oci::OciRuntime::Runc)),
            "crun" => Ok(PluginRuntime::Oci(oci::OciRuntime::Crun)),
            other => Err(UnknownRuntime(other.to_string())),
        }
    }
}

impl PluginRuntime {
    pub fn name(self) -> &'static str {
        match self {
            PluginRuntime::Builtin => "builtin",
            PluginRuntime::Oci(runtime) => runtime.name(),
        }
    }
}

/// The executor `berth daemon` runs plugins with.
pub fn executor_for(runtime: PluginRuntime, exec_root: &Path) -> Arc<dyn executor::Executor> {
    match runtime {
        PluginRuntime::Builtin => Arc::new(linux::LinuxExecutor::new()),
        PluginRuntime::Oci(oci) => Arc::new(oci::OciExecutor::new(oci, exec_root)),
    }
}

/// Entry point of `berth runtime-shim`, the process between berth and an OCI runtime's
/// container (see [`oci::shim`]). Call it before any thread exists.
pub fn runtime_shim(args: &[std::ffi::OsString]) -> ! {
    oci::shim::main(args)
}

/// Entry point of `berth plugin-init`: the fresh process that sets up a plugin's namespaces
/// (see [`linux`]). Call it before any thread exists.
pub fn plugin_init(args: &[std::ffi::OsString]) -> ! {
    linux::init_main(args)
}
