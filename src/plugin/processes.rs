//! Running plugins as a debugger sees them: `berth plugin ps` (what runs, since when, under
//! which runtime) and the process `berth plugin exec` joins.

use serde::{Deserialize, Serialize};

use super::manager::Manager;
use super::spec::build_spec;
use crate::error::{Error, Result};
use crate::runtime::exec::{process_start_time, ExecTarget};
use crate::runtime::supervisor::RunState;

/// One row of `GET /plugins/ps` (a berth extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunningPlugin {
    pub id: String,
    pub name: String,
    /// Host PID of the plugin's first process; 0 while it is restarting.
    pub pid: u32,
    /// `running` or `restarting`.
    pub status: String,
    pub restarts: u32,
    /// When the current process started (RFC 3339); empty while restarting.
    pub since: String,
    /// The executor: `builtin`, `runc` or `crun`.
    pub runtime: String,
}

/// `GET /plugins/{name}/process` (a berth extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginExecTarget {
    pub id: String,
    pub name: String,
    pub runtime: String,
    #[serde(flatten)]
    pub target: ExecTarget,
}

impl Manager {
    /// Enabled plugins with a process, in store order.
    pub fn running(&self) -> Vec<RunningPlugin> {
        let runtime = self.runtime.executor.name().to_string();
        self.list(super::manager::EnabledFilter::EnabledOnly, |_| true)
            .into_iter()
            .filter_map(|plugin| {
                let row = |pid, status: &str, restarts, since: String| RunningPlugin {
                    id: plugin.id.clone(),
                    name: plugin.name.clone(),
                    pid,
                    status: status.into(),
                    restarts,
                    since,
                    runtime: runtime.clone(),
                };
                match self.runtime.supervisor.state(&plugin.id)? {
                    RunState::Running {
                        plugin_pid,
                        restarts,
                        since,
                        ..
                    } => Some(row(
                        plugin_pid,
                        "running",
                        restarts,
                        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    )),
                    RunState::Restarting { restarts, .. } => {
                        Some(row(0, "restarting", restarts, String::new()))
                    }
                    RunState::Exited { .. } => None,
                }
            })
            .collect()
    }

    /// What `berth plugin exec` joins in plugin `name`: its first process, with the
    /// capabilities, environment and working directory of its run spec. A plugin that is not
    /// running is refused in Docker's words for a disabled plugin.
    pub fn exec_target(&self, name: &str) -> Result<PluginExecTarget> {
        let plugin = self.get(name)?;
        let not_running = || Error::Conflict(format!("plugin {} found but disabled", plugin.name));
        if !plugin.enabled {
            return Err(not_running());
        }
        let Some(RunState::Running { plugin_pid, .. }) = self.runtime.supervisor.state(&plugin.id)
        else {
            return Err(not_running());
        };
        let start_time = process_start_time(plugin_pid).map_err(|_| not_running())?;
        let spec = build_spec(&plugin, &self.paths(&plugin.id))?;
        Ok(PluginExecTarget {
            id: plugin.id.clone(),
            name: plugin.name.clone(),
            runtime: self.runtime.executor.name().to_string(),
            target: ExecTarget {
                pid: plugin_pid,
                start_time,
                capabilities: spec.capabilities,
                inheritable_capabilities: spec.inheritable_capabilities,
                env: spec.env,
                cwd: spec.cwd,
            },
        })
    }
}
