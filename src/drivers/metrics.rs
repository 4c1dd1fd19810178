//! The MetricsCollector protocol (moby `daemon/metrics_unix.go`): `StartMetrics` once the
//! plugin is enabled, `StopMetrics` when the daemon shuts down. Both have empty bodies and the
//! answer's body is ignored; a plugin scrapes the daemon's metrics socket, bound read-only at
//! `/run/docker/metrics.sock` inside it, on its own schedule.

use crate::rpc::client::{Retry, RpcError, DEFAULT_REPLY_LIMIT};
use crate::rpc::handle::PluginHandle;

pub struct MetricsCollector {
    plugin: PluginHandle,
}

impl MetricsCollector {
    pub fn new(plugin: PluginHandle) -> MetricsCollector {
        MetricsCollector { plugin }
    }

    pub fn plugin(&self) -> &PluginHandle {
        &self.plugin
    }

    /// `POST /MetricsCollector.StartMetrics`.
    pub async fn start(&self) -> Result<(), RpcError> {
        self.call("MetricsCollector.StartMetrics").await
    }

    /// `POST /MetricsCollector.StopMetrics`.
    pub async fn stop(&self) -> Result<(), RpcError> {
        self.call("MetricsCollector.StopMetrics").await
    }

    async fn call(&self, method: &str) -> Result<(), RpcError> {
        self.plugin
            .client
            .call_raw(method, &(), Retry::Never, DEFAULT_REPLY_LIMIT)
            .await
            .map(|_| ())
    }
}
