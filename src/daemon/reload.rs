//! SIGHUP: the one place the daemon reloads its configuration. The file (and flags) are read
//! again; what may change while running is applied: the log level here, then each reload hook
//! in the order they were added (a subsystem with reloadable settings adds one, e.g. the
//! authorization chain). Settings that need a restart are named in a warning. The service
//! manager is told `RELOADING=1` before and `READY=1` after.

use std::future::Future;
use std::pin::Pin;

use crate::config::{DaemonConfig, DaemonFlags};
use crate::systemd::{notify, DaemonState};

/// Applies a reloaded configuration; returns a line for the log on success.
pub type ReloadHook =
    Box<dyn Fn(DaemonConfig) -> Pin<Box<dyn Future<Output = Result<String, String>>>>>;

pub struct Reloader {
    flags: DaemonFlags,
    current: DaemonConfig,
    hooks: Vec<(&'static str, ReloadHook)>,
}

impl Reloader {
    pub fn new(flags: DaemonFlags, current: DaemonConfig) -> Reloader {
        Reloader {
            flags,
            current,
            hooks: Vec::new(),
        }
    }

    /// Adds a hook run on every reload; `what` names it in the log.
    pub fn hook(&mut self, what: &'static str, hook: ReloadHook) {
        self.hooks.push((what, hook));
    }

    /// Starts watching for SIGHUP (whose default action would end the daemon): call it on the
    /// runtime before the API answers, so that an early reload never stops berth.
    pub fn watch(self) -> std::io::Result<Watching> {
        use actix_rt::signal::unix::{signal, SignalKind};
        Ok(Watching {
            reloader: self,
            hangups: signal(SignalKind::hangup())?,
        })
    }
}

/// A [`Reloader`] whose signal is being watched.
pub struct Watching {
    reloader: Reloader,
    hangups: actix_rt::signal::unix::Signal,
}

impl Watching {
    /// [`Reloader::hook`], for subsystems made once the signal is watched.
    pub fn hook(&mut self, what: &'static str, hook: ReloadHook) {
        self.reloader.hook(what, hook);
    }

    /// Reloads on every SIGHUP until the runtime stops.
    pub async fn run(self) {
        let Watching {
            mut reloader,
            mut hangups,
        } = self;
        while hangups.recv().await.is_some() {
            notify(DaemonState::Reloading, "Reloading configuration");
            let outcome = reloader.reload().await;
            notify(DaemonState::Ready, &outcome);
        }
    }
}

impl Reloader {
    /// One reload; returns the status line for the service manager.
    async fn reload(&mut self) -> String {
        log::info!(
            "Got signal to reload configuration, reloading from: {}",
            self.flags.config_file().display()
        );
        let config = match self.flags.resolve() {
            Ok(config) => config,
            Err(e) => {
                log::error!("reloading configuration: {e:#}; keeping the running one");
                return format!("Reload failed: {e:#}");
            }
        };
        if config.log_level != self.current.log_level {
            // Said before it applies: a quieter level would swallow the line.
            log::info!(
                "Reloaded configuration: log-level {}",
                config.log_level.as_str().to_ascii_lowercase()
            );
            log::set_max_level(config.log_level);
        }
        let restart_only = restart_only_changes(&self.current, &config);
        if !restart_only.is_empty() {
            log::warn!(
                "configuration changes that take effect only when berth restarts: {}",
                restart_only.join(", ")
            );
        }
        let mut failed = Vec::new();
        for (what, hook) in &self.hooks {
            match hook(config.clone()).await {
                Ok(line) => log::info!("Reloaded configuration: {line}"),
                Err(e) => {
                    log::error!("reloading {what}: {e}");
                    failed.push(*what);
                }
            }
        }
        self.current = config;
        if failed.is_empty() {
            "Configuration reloaded".to_string()
        } else {
            format!("Reload failed for: {}", failed.join(", "))
        }
    }
}

/// Names of settings that differ and are read only at start-up.
fn restart_only_changes(old: &DaemonConfig, new: &DaemonConfig) -> Vec<&'static str> {
    [
        ("hosts", old.hosts != new.hosts),
        ("data-root", old.data_root != new.data_root),
        ("exec-root", old.exec_root != new.exec_root),
        (
            "plugin-start-timeout",
            old.plugin_start_timeout != new.plugin_start_timeout,
        ),
        (
            "plugin-call-timeout",
            old.plugin_call_timeout != new.plugin_call_timeout,
        ),
        (
            "legacy-plugin-dirs",
            old.legacy_plugin_dirs != new.legacy_plugin_dirs,
        ),
        (
            "insecure-registries",
            old.insecure_registries != new.insecure_registries,
        ),
        (
            "registry-mirrors",
            old.registry_mirrors != new.registry_mirrors,
        ),
        ("metrics-addr", old.metrics_addr != new.metrics_addr),
    ]
    .into_iter()
    .filter_map(|(name, differs)| differs.then_some(name))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_at_start_up_are_named_when_they_change() {
        let old = DaemonFlags::default().resolve().unwrap();
        let mut new = old.clone();
        assert!(restart_only_changes(&old, &new).is_empty());
        new.log_level = log::LevelFilter::Debug;
        assert!(restart_only_changes(&old, &new).is_empty());
        new.registry_mirrors = vec!["https://m".into()];
        new.metrics_addr = Some(crate::config::MetricsAddr::Unix("/m.sock".into()));
        assert_eq!(
            restart_only_changes(&old, &new),
            vec!["registry-mirrors", "metrics-addr"]
        );
    }
}
