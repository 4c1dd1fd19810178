//! Enabling and disabling plugins: the manager side of the runtime. A plugin is enabled once
//! its process runs and its socket accepts a connection; from then on the supervisor restarts
//! it if it dies, until it is disabled.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::manager::Manager;
use super::spec::{build_spec, SpecError};
use super::store::Plugin;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::fsutil;
use crate::goerr::io_error_text;
use crate::runtime::spec::{MountSpec, PluginPaths, PluginSpec};
use crate::runtime::supervisor::RunState;

/// Where MetricsCollector plugins find the daemon's metrics socket.
pub const PLUGIN_METRICS_SOCKET: &str = "/run/docker/metrics.sock";

/// Where a running managed plugin answers, for the plugin getter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    pub(super) socket: PathBuf,
    pub(super) paths: PluginPaths,
    /// `enable --timeout` (None: the daemon's default applies).
    pub(super) rpc_timeout: Option<Duration>,
    /// Changes each time the plugin is started: clients made for an earlier run are stale.
    pub(super) run: u64,
}

/// Where a managed plugin answers, as `GET /plugins/{name}/endpoint` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublicEndpoint {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    /// The host path of its socket.
    pub socket: PathBuf,
    pub rootfs: PathBuf,
    /// `PropagatedMount` as the plugin sees it (empty: none).
    pub propagated_mount: String,
    /// Where that is on the host.
    pub host_propagated_mount: PathBuf,
    /// `Interface.Types`.
    pub types: Vec<String>,
}

/// How `start_plugin` treats a plugin that is not ready in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    /// `docker plugin enable`: not ready means failed; everything is undone.
    Required,
    /// Daemon start: the plugin was enabled before; keep supervising it even if it is slow.
    BestEffort,
}

impl Manager {
    pub fn paths(&self, id: &str) -> PluginPaths {
        let dir = self.plugins_root.join(id);
        PluginPaths {
            rootfs: dir.join("rootfs"),
            propagated_mount: dir.join("propagated-mount"),
            socket_dir: self.exec_plugins.join(id),
        }
    }

    /// The socket a plugin listens on, as seen from the host.
    pub fn socket_path(&self, plugin: &Plugin) -> PathBuf {
        self.paths(&plugin.id)
            .socket_dir
            .join(&plugin.config.interface.socket)
    }

    /// `docker plugin enable`. `rpc_timeout` bounds calls the daemon makes to the plugin
    /// (`?timeout=`, 0 = none).
    pub fn enable(&self, name: &str, rpc_timeout: Duration) -> Result<()> {
        let id = self.store().resolve(name)?.plugin.id.clone();
        let lock = self.operation_lock(&id);
        let _operation = lock.lock().unwrap_or_else(|p| p.into_inner());
        let plugin = self.store().resolve(&id)?.plugin.clone();
        if plugin.enabled {
            return Err(Error::Conflict(format!(
                "plugin already enabled: plugin {} is enabled",
                plugin.name
            )));
        }
        self.start_plugin(&plugin, Readiness::Required)?;
        self.runtime
            .rpc_timeouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), rpc_timeout);
        let saved = self.set_enabled(&id, true);
        match saved {
            // dockerd names the plugin as the client did.
            Ok(()) => self.events.publish(Event::plugin(&id, name, "enable")),
            Err(_) => {
                let _ = self.stop_plugin(&id);
            }
        }
        saved
    }

    /// `docker plugin disable`.
    pub fn disable(&self, name: &str, force: bool) -> Result<()> {
        let id = self.store().resolve(name)?.plugin.id.clone();
        let lock = self.operation_lock(&id);
        let _operation = lock.lock().unwrap_or_else(|p| p.into_inner());
        let plugin = self.store().resolve(&id)?.plugin.clone();
        if !plugin.enabled {
            return Err(Error::Conflict(format!(
                "plugin is already disabled: plugin {} found but disabled",
                plugin.name
            )));
        }
        if !force && self.in_use(&id) {
            return Err(Error::Conflict(format!("plugin {} is in use", plugin.name)));
        }
        self.stop_plugin(&id)?;
        self.set_enabled(&id, false)?;
        self.events.publish(Event::plugin(&id, name, "disable"));
        Ok(())
    }

    /// Every enabled plugin declaring `capability` (lower-case, as in `docker.<capability>/1.0`).
    pub(super) fn enabled_with_capability(&self, capability: &str) -> Vec<Plugin> {
        self.store()
            .records()
            .filter(|r| {
                r.plugin.enabled
                    && super::manager::plugin_capabilities(&r.plugin)
                        .iter()
                        .any(|c| c == capability)
            })
            .map(|r| r.plugin.clone())
            .collect()
    }

    pub(super) fn endpoint(&self, plugin: &Plugin) -> Endpoint {
        Endpoint {
            socket: self.socket_path(plugin),
            paths: self.paths(&plugin.id),
            rpc_timeout: self.rpc_timeout(&plugin.id),
            run: self
                .runtime
                .generations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&plugin.id)
                .copied()
                .unwrap_or(0),
        }
    }

    /// A user (a volume, a network) starts using plugin `id`.
    pub(super) fn acquire(&self, id: &str) {
        *self
            .refcounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default() += 1;
    }

    /// A user of plugin `id` is gone.
    pub(super) fn release_reference(&self, id: &str) {
        let mut refs = self.refcounts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = refs.get_mut(id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                refs.remove(id);
            }
        }
    }

    /// Reference counts recomputed at start-up from what users recorded (volume records outlive
    /// the daemon; moby keeps the counts in memory only and loses them, moby issue 29544).
    pub(super) fn set_references(&self, counts: std::collections::HashMap<String, usize>) {
        *self.refcounts.lock().unwrap_or_else(|p| p.into_inner()) = counts;
    }

    /// True when users (volumes, networks) hold a reference to the plugin.
    pub fn in_use(&self, id: &str) -> bool {
        self.refcounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|n| *n > 0)
    }

    /// RPC timeout set at enable (None = no limit).
    pub fn rpc_timeout(&self, id: &str) -> Option<Duration> {
        self.runtime
            .rpc_timeouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
            .filter(|t| !t.is_zero())
    }

    /// Sends every plugin's output lines to `sink` too (`--plugin-log-driver`).
    pub fn set_log_sink(&self, sink: std::sync::Arc<dyn crate::runtime::logs::LogSink>) {
        self.runtime.logs.set_sink(sink);
    }

    /// The plugin's recent output (`GET /plugins/{name}/logs`).
    pub fn logs(&self, name: &str, tail: Option<usize>) -> Result<Vec<String>> {
        let id = self.store().resolve(name)?.plugin.id.clone();
        Ok(self.runtime.logs.tail(&id, tail))
    }

    /// Where plugin `name` answers and keeps its files (`GET /plugins/{name}/endpoint`), for
    /// tools on this host that talk to it directly (`berth conformance --plugin`).
    pub fn public_endpoint(&self, name: &str) -> Result<PublicEndpoint> {
        let plugin = self.store().resolve(name)?.plugin.clone();
        let endpoint = self.endpoint(&plugin);
        Ok(PublicEndpoint {
            id: plugin.id.clone(),
            name: plugin.name.clone(),
            enabled: plugin.enabled,
            socket: endpoint.socket,
            rootfs: endpoint.paths.rootfs,
            propagated_mount: plugin.config.propagated_mount.clone(),
            host_propagated_mount: endpoint.paths.propagated_mount,
            types: plugin.config.interface.types.clone().unwrap_or_default(),
        })
    }

    /// Whether the supervisor is restarting a crashed plugin, for inspect-like views.
    pub fn run_state(&self, id: &str) -> Option<RunState> {
        self.runtime.supervisor.state(id)
    }

    /// Daemon start: release whatever a previous run left (processes, mounts, sockets), then
    /// start every plugin that was enabled, before the API serves.
    pub fn restore(&self) {
        let plugins: Vec<Plugin> = self.store().records().map(|r| r.plugin.clone()).collect();
        for plugin in &plugins {
            if let Err(e) = self.release(&plugin.id) {
                log::warn!("cleaning up after plugin {}: {e}", plugin.name);
            }
        }
        for plugin in plugins.iter().filter(|p| p.enabled) {
            match self.start_plugin(plugin, Readiness::BestEffort) {
                Ok(()) => log::info!("plugin {} enabled again", plugin.name),
                Err(e) => log::error!("failed to enable plugin {} again: {e}", plugin.name),
            }
        }
        self.changed();
    }

    /// Daemon stop: stop every running plugin, leaving their enabled state recorded.
    pub fn shutdown(&self) {
        let ids: Vec<String> = self
            .store()
            .records()
            .filter(|r| r.plugin.enabled)
            .map(|r| r.plugin.id.clone())
            .collect();
        let handles: Vec<_> = ids
            .into_iter()
            .map(|id| {
                let supervisor = self.runtime.supervisor.clone();
                let grace = self.runtime.options.stop_grace;
                std::thread::spawn(move || supervisor.stop(&id, grace))
            })
            .collect();
        for handle in handles {
            let _ = handle.join();
        }
    }

    fn set_enabled(&self, id: &str, enabled: bool) -> Result<()> {
        let mut store = self.store();
        let mut record = store.resolve(id)?.clone();
        record.plugin.enabled = enabled;
        store.save(record)?;
        drop(store);
        self.changed();
        Ok(())
    }

    /// Starts the process and waits for its socket. With `Readiness::Required` a failure
    /// leaves nothing running or mounted.
    fn start_plugin(&self, plugin: &Plugin, readiness: Readiness) -> Result<()> {
        let id = &plugin.id;
        let paths = self.paths(id);
        let spec = self.run_spec(plugin)?;
        fsutil::create_dir_mode(&paths.socket_dir, 0o700)?;
        let socket = self.socket_path(plugin);
        let _ = std::fs::remove_file(&socket);
        if !plugin.config.propagated_mount.is_empty() {
            fsutil::create_dir_mode(&paths.propagated_mount, 0o755)?;
        }
        let started = chrono::Utc::now();
        self.runtime
            .generations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.clone())
            .and_modify(|g| *g += 1)
            .or_insert(1);
        let pid = self.runtime.supervisor.start(id, spec).map_err(|e| {
            let _ = self.release(id);
            Error::System(format!("starting plugin {}: {e}", plugin.name))
        })?;
        log::debug!("plugin {} started as pid {pid}", plugin.name);
        if readiness == Readiness::BestEffort {
            self.runtime.supervisor.supervise(id);
        }
        match self.wait_for_socket(id, &socket, started) {
            Ok(()) => {
                self.runtime.supervisor.supervise(id);
                Ok(())
            }
            Err(e) if readiness == Readiness::BestEffort => {
                log::warn!("plugin {} is not answering yet: {e}", plugin.name);
                Ok(())
            }
            Err(e) => {
                self.runtime.supervisor.stop(id, Duration::ZERO);
                if let Err(cleanup) = self.release(id) {
                    log::warn!("cleaning up after plugin {}: {cleanup}", plugin.name);
                }
                Err(e)
            }
        }
    }

    /// Polls the socket quickly (a plugin is usually ready within milliseconds) until the
    /// configured deadline; a process that exits first fails at once.
    fn wait_for_socket(
        &self,
        id: &str,
        socket: &std::path::Path,
        started: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        let deadline = Instant::now() + self.runtime.options.start_timeout;
        let mut pause = Duration::from_millis(1);
        let reachable = fsutil::SocketPath::new(socket)
            .map_err(|e| Error::System(format!("dial unix {}: {e}", socket.display())))?;
        loop {
            let attempt = UnixStream::connect(reachable.path());
            let error = match attempt {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if let Some(RunState::Exited { status }) = self.runtime.supervisor.state(id) {
                self.runtime
                    .logs
                    .wait_drained(id, Duration::from_millis(500));
                let mut message = format!(
                    "dial unix {}: connect: {}: plugin exited ({status})",
                    socket.display(),
                    io_error_text(&error)
                );
                let output = self.runtime.logs.tail_since(id, started, 3);
                if !output.is_empty() {
                    message.push_str(&format!("; last output: {}", output.join(" | ")));
                }
                return Err(Error::System(message));
            }
            if Instant::now() >= deadline {
                return Err(Error::System(format!(
                    "dial unix {}: connect: {}",
                    socket.display(),
                    io_error_text(&error)
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// The plugin's run spec: its own (moby's `InitSpec`) plus what the daemon adds, the
    /// metrics socket for MetricsCollector plugins (moby's runtime option for that type).
    fn run_spec(&self, plugin: &Plugin) -> std::result::Result<PluginSpec, SpecError> {
        let mut spec = build_spec(plugin, &self.paths(&plugin.id))?;
        let collects_metrics = super::manager::plugin_capabilities(plugin)
            .iter()
            .any(|c| c == "metricscollector");
        if let (true, Some(socket)) = (collects_metrics, &self.runtime.options.metrics_socket) {
            spec.mounts.push(MountSpec {
                source: socket.to_string_lossy().into_owned(),
                destination: PLUGIN_METRICS_SOCKET.into(),
                kind: "bind".into(),
                options: vec!["bind".into(), "ro".into()],
            });
        }
        Ok(spec)
    }

    /// Stops the plugin's process (SIGTERM, grace, SIGKILL) and releases its mounts.
    pub(super) fn stop_plugin(&self, id: &str) -> Result<()> {
        self.runtime
            .supervisor
            .stop(id, self.runtime.options.stop_grace);
        self.release(id)
    }

    /// Executor cleanup plus the socket directory: idempotent.
    fn release(&self, id: &str) -> Result<()> {
        let plugin = self.store().resolve(id).ok().map(|r| r.plugin.clone());
        let spec = plugin.as_ref().and_then(|p| self.run_spec(p).ok());
        self.runtime.executor.cleanup(id, spec.as_ref())?;
        let socket_dir = self.paths(id).socket_dir;
        if let Err(e) = fsutil::remove_all(&socket_dir) {
            log::debug!("removing {}: {e}", socket_dir.display());
        }
        Ok(())
    }
}
