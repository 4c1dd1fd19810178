//! Running managed plugins: what to run ([`spec`], built by the plugin model), the executor
//! seam ([`executor`]) and the built-in Linux namespaces executor ([`linux`]) with its
//! `plugin-init` process ([`init`], one function per setup step), whose kernel calls go
//! through [`syscall::Syscall`] so the setup sequence is unit-testable without root.

pub mod executor;
pub mod init;
pub mod linux;
pub mod logs;
pub mod spec;
pub mod supervisor;
pub mod syscall;

use std::path::Path;
use std::sync::Arc;

/// The executor `berth daemon` runs plugins with.
pub fn default_executor(_exec_root: &Path) -> Arc<dyn executor::Executor> {
    Arc::new(linux::LinuxExecutor::new())
}

/// Entry point of `berth plugin-init`: the fresh process that sets up a plugin's namespaces
/// (see [`linux`]). Call it before any thread exists.
pub fn plugin_init(args: &[std::ffi::OsString]) -> ! {
    linux::init_main(args)
}
