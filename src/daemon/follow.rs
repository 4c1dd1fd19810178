//! What the daemon does when managed plugins are enabled or disabled, besides running them:
//! each enabled volume plugin gets a socket other engines (Podman) call through berth's volume
//! service, `<exec-root>/volume-plugins/<name>.sock` (`:latest` left out), kept while the
//! plugin is enabled; each enabled MetricsCollector plugin is told `StartMetrics` (and
//! `StopMetrics` when the daemon stops), as moby's plugin-type handlers do.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use super::side::{self, Handler, SideListener, SideResponse, SideServer};
use crate::drivers::metrics::MetricsCollector;
use crate::plugin::getter::{Capability, PluginGetter};
use crate::volume::gateway::VolumeGateway;
use crate::volume::service::VolumeService;

/// The longest unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The socket a volume plugin is served on for other engines.
pub fn volume_plugin_socket(exec_root: &Path, plugin_name: &str) -> PathBuf {
    let name = plugin_name.strip_suffix(":latest").unwrap_or(plugin_name);
    exec_root
        .join("volume-plugins")
        .join(format!("{name}.sock"))
}

pub struct Follower {
    getter: Arc<PluginGetter>,
    volumes: Arc<VolumeService>,
    exec_root: PathBuf,
    /// Whether MetricsCollector plugins are told to start (metrics are on).
    collect_metrics: bool,
    /// Volume plugin sockets by plugin name.
    gateways: HashMap<String, SideServer>,
    /// MetricsCollector plugins told to start, by plugin name.
    collectors: HashMap<String, MetricsCollector>,
}

impl Follower {
    pub fn new(
        getter: Arc<PluginGetter>,
        volumes: Arc<VolumeService>,
        exec_root: &Path,
        collect_metrics: bool,
    ) -> Follower {
        Follower {
            getter,
            volumes,
            exec_root: exec_root.to_path_buf(),
            collect_metrics,
            gateways: HashMap::new(),
            collectors: HashMap::new(),
        }
    }

    /// Follows plugin changes until `stop` fires, then tells collectors to stop and closes the
    /// volume plugin sockets.
    pub async fn run(mut self, stop: tokio::sync::oneshot::Receiver<()>) {
        let mut changes = self.getter.changes();
        let mut stop = std::pin::pin!(stop);
        loop {
            changes.borrow_and_update();
            self.follow().await;
            let changed = std::pin::pin!(changes.changed());
            match futures_util::future::select(changed, stop.as_mut()).await {
                futures_util::future::Either::Left((Ok(()), _)) => continue,
                _ => break,
            }
        }
        for (name, collector) in self.collectors.drain() {
            if let Err(e) = collector.stop().await {
                log::warn!("MetricsCollector.StopMetrics to {name}: {e}");
            }
        }
        self.gateways.clear();
    }

    async fn follow(&mut self) {
        let volume_plugins = self.getter.enabled(Capability::VolumeDriver);
        self.gateways
            .retain(|name, _| volume_plugins.plugins.iter().any(|p| &p.name == name));
        for plugin in &volume_plugins.plugins {
            if !self.gateways.contains_key(&plugin.name) {
                match self.open_gateway(&plugin.name) {
                    Ok(server) => {
                        self.gateways.insert(plugin.name.clone(), server);
                    }
                    Err(e) => log::warn!("volume plugin {} for other engines: {e:#}", plugin.name),
                }
            }
        }
        if !self.collect_metrics {
            return;
        }
        let collectors = self.getter.enabled(Capability::MetricsCollector);
        self.collectors
            .retain(|name, _| collectors.plugins.iter().any(|p| &p.name == name));
        for plugin in collectors.plugins {
            let known = self
                .collectors
                .get(&plugin.name)
                .is_some_and(|c| c.plugin().same_activation(&plugin));
            if known {
                continue;
            }
            let name = plugin.name.clone();
            let collector = MetricsCollector::new(plugin);
            match collector.start().await {
                Ok(()) => log::info!("MetricsCollector {name} started"),
                Err(e) => log::warn!("MetricsCollector.StartMetrics to {name}: {e}"),
            }
            self.collectors.insert(name, collector);
        }
    }

    fn open_gateway(&self, plugin_name: &str) -> anyhow::Result<SideServer> {
        let path = volume_plugin_socket(&self.exec_root, plugin_name);
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            anyhow::bail!(
                "socket path {} is longer than {MAX_SOCKET_PATH} bytes",
                path.display()
            );
        }
        let listener = SideListener::bind_unix(&path, 0o660)?;
        if let Ok(Some(group)) = nix::unistd::Group::from_name("docker") {
            nix::unistd::chown(&path, None, Some(group.gid))?;
        }
        let gateway = Rc::new(VolumeGateway::new(self.volumes.clone(), plugin_name));
        let handler: Handler = Rc::new(move |request| {
            let gateway = gateway.clone();
            Box::pin(async move {
                if request.method != hyper::Method::POST {
                    return SideResponse::text(405, "method not allowed\n");
                }
                let method = request.path.trim_start_matches('/');
                let (status, body) = gateway.call(method, &request.body).await;
                SideResponse::json(status, &body)
            })
        });
        log::info!(
            "volume plugin {plugin_name} served for other engines on {}",
            path.display()
        );
        side::serve(listener, Some(path), handler)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_plugin_sockets_are_named_after_the_plugin() {
        let root = Path::new("/run/berth");
        assert_eq!(
            volume_plugin_socket(root, "test/rclone:latest"),
            PathBuf::from("/run/berth/volume-plugins/test/rclone.sock")
        );
        assert_eq!(
            volume_plugin_socket(root, "rclone:v2"),
            PathBuf::from("/run/berth/volume-plugins/rclone:v2.sock")
        );
    }
}
