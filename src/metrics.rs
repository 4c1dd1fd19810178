//! Prometheus metrics: one process-wide registry, off unless the daemon turns it on
//! (`--metrics-addr`). While off, every recording function returns at once, so an
//! uninstrumented daemon pays one atomic load per recording site.
//!
//! Each figure is recorded in one place: the API dispatcher (requests by route and status, with
//! latency), the RPC client's call path (plugin calls by plugin, method and outcome, with
//! latency), the supervisor (restarts), the plugin manager (enabled plugins, install bytes) and
//! the volume service (volumes by driver). Gauges whose truth lives in a store are read at scrape
//! time ([`gauge_source`]) rather than kept in step by hand.
//!
//! Served in the Prometheus text format (0.0.4) by `GET /metrics` on the metrics sockets (see
//! `daemon::side`).

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric name starts with this.
const PREFIX: &str = "berth";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    /// The route pattern (`/volumes/{name}`), `unmatched` for paths no route serves.
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    plugin: String,
    method: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginMethodLabels {
    plugin: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginIdLabels {
    plugin_id: String,
}

/// How a plugin call ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// A 200 answer.
    Ok,
    /// The plugin answered with an error status.
    Error,
    /// No connection could be made.
    Unreachable,
    /// The call's deadline passed.
    Timeout,
}

impl CallOutcome {
    fn label(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Error => "error",
            CallOutcome::Unreachable => "unreachable",
            CallOutcome::Timeout => "timeout",
        }
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s: an API request on a warm daemon to a plugin install.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

type LatencyFamily<L> = Family<L, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Mutex<Registry>,
    api_requests: Family<RequestLabels, Counter>,
    api_latency: LatencyFamily<RouteLabels>,
    plugin_calls: Family<CallLabels, Counter>,
    plugin_call_latency: LatencyFamily<PluginMethodLabels>,
    plugin_restarts: Family<PluginIdLabels, Counter>,
    install_bytes: Counter,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Registers each metric under its name (prefixed `berth_`) with its help text.
macro_rules! register {
    ($registry:ident, $($metric:expr => $name:literal, $help:literal;)*) => {
        $( $registry.register($name, $help, $metric.clone()); )*
    };
}

/// Turns metrics on for the rest of the process (idempotent).
pub fn enable() {
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix(PREFIX);
        let mut metrics = Metrics {
            api_requests: Family::default(),
            api_latency: Family::new_with_constructor(latency_histogram),
            plugin_calls: Family::default(),
            plugin_call_latency: Family::new_with_constructor(latency_histogram),
            plugin_restarts: Family::default(),
            install_bytes: Counter::default(),
            registry: Mutex::new(Registry::default()),
        };
        register!(registry,
            metrics.api_requests => "api_requests",
                "Docker API requests answered, by method, route and status";
            metrics.api_latency => "api_request_duration_seconds",
                "Time to answer a Docker API request, by method and route";
            metrics.plugin_calls => "plugin_calls",
                "Calls to plugins, by plugin, method and outcome (ok, error, unreachable, timeout)";
            metrics.plugin_call_latency => "plugin_call_duration_seconds",
                "Time of a call to a plugin, retries included, by plugin and method";
            metrics.plugin_restarts => "plugin_restarts",
                "Restarts of crashed plugin processes by the supervisor, by plugin ID";
            metrics.install_bytes => "plugin_install_bytes",
                "Layer bytes downloaded and verified by plugin install and upgrade";
        );
        metrics.registry = Mutex::new(registry);
        metrics
    });
}

/// Whether metrics are on.
pub fn enabled() -> bool {
    METRICS.get().is_some()
}

/// Every metric in the Prometheus text format (empty while metrics are off).
pub fn encode() -> String {
    let mut text = String::new();
    if let Some(metrics) = METRICS.get() {
        let registry = metrics.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    }
    text
}

/// One answered API request. `route` is the route pattern, `None` for unrouted paths.
pub fn api_request(method: &'static str, route: Option<&'static str>, status: u16, took: Duration) {
    let Some(metrics) = METRICS.get() else { return };
    let route = route.unwrap_or("unmatched");
    metrics
        .api_requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status,
        })
        .inc();
    metrics
        .api_latency
        .get_or_create(&RouteLabels { method, route })
        .observe(took.as_secs_f64());
}

/// One finished call to a plugin.
pub fn plugin_call(plugin: &str, method: &str, outcome: CallOutcome, took: Duration) {
    let Some(metrics) = METRICS.get() else { return };
    metrics
        .plugin_calls
        .get_or_create(&CallLabels {
            plugin: plugin.to_string(),
            method: method.to_string(),
            outcome: outcome.label(),
        })
        .inc();
    metrics
        .plugin_call_latency
        .get_or_create(&PluginMethodLabels {
            plugin: plugin.to_string(),
            method: method.to_string(),
        })
        .observe(took.as_secs_f64());
}

/// The supervisor restarted a crashed plugin.
pub fn plugin_restart(plugin_id: &str) {
    let Some(metrics) = METRICS.get() else { return };
    metrics
        .plugin_restarts
        .get_or_create(&PluginIdLabels {
            plugin_id: plugin_id.to_string(),
        })
        .inc();
}

/// Verified layer bytes an install or upgrade downloaded.
pub fn install_bytes(bytes: u64) {
    let Some(metrics) = METRICS.get() else { return };
    metrics.install_bytes.inc_by(bytes);
}

/// A gauge family read at scrape time: `read` returns `(label value, value)` pairs.
type GaugeReader = Box<dyn Fn() -> Vec<(String, i64)> + Send + Sync>;

struct GaugeSource {
    name: &'static str,
    help: &'static str,
    /// The one label's name; `None` for an unlabelled gauge (`read` returns one pair).
    label: Option<&'static str>,
    read: GaugeReader,
}

impl std::fmt::Debug for GaugeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaugeSource")
            .field("name", &self.name)
            .finish()
    }
}

impl Collector for GaugeSource {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let values = (self.read)();
        let mut family = encoder.encode_descriptor(
            self.name,
            self.help,
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (label_value, value) in values {
            let gauge = ConstGauge::new(value);
            match self.label {
                Some(label) => {
                    let labels = [(label, label_value.as_str())];
                    gauge.encode(family.encode_family(&labels)?)?
                }
                None => {
                    let no_labels: &[(&str, &str)] = &[];
                    gauge.encode(family.encode_family(&no_labels)?)?
                }
            }
        }
        Ok(())
    }
}

/// Registers a gauge read at every scrape (a no-op while metrics are off). `label`: the name of
/// the one label `read`'s pairs carry, or `None` for a single unlabelled value.
pub fn gauge_source(
    name: &'static str,
    help: &'static str,
    label: Option<&'static str>,
    read: impl Fn() -> Vec<(String, i64)> + Send + Sync + 'static,
) {
    let Some(metrics) = METRICS.get() else { return };
    metrics
        .registry
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .register_collector(Box::new(GaugeSource {
            name,
            help,
            label,
            read: Box::new(read),
        }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `series` (a full series name with labels) in `text`.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn recordings_show_up_in_the_text_format() {
        enable();
        api_request("GET", Some("/volumes"), 200, Duration::from_millis(2));
        api_request("GET", Some("/volumes"), 200, Duration::from_millis(3));
        api_request("GET", None, 404, Duration::from_micros(10));
        plugin_call(
            "test/a:latest",
            "VolumeDriver.List",
            CallOutcome::Ok,
            Duration::from_millis(1),
        );
        plugin_call(
            "test/a:latest",
            "VolumeDriver.List",
            CallOutcome::Timeout,
            Duration::from_secs(1),
        );
        plugin_restart("abc");
        install_bytes(1000);
        gauge_source("volumes", "Volumes by driver", Some("driver"), || {
            vec![("local".into(), 2), ("test/a:latest".into(), 1)]
        });
        gauge_source("plugins_enabled", "Enabled plugins", None, || {
            vec![(String::new(), 3)]
        });
        let text = encode();
        let at = |series: &str| value(&text, series).unwrap_or_else(|| panic!("{series}\n{text}"));
        assert_eq!(
            at(r#"berth_api_requests_total{method="GET",route="/volumes",status="200"}"#),
            2.0
        );
        assert_eq!(
            at(r#"berth_api_requests_total{method="GET",route="unmatched",status="404"}"#),
            1.0
        );
        assert_eq!(
            at(r#"berth_api_request_duration_seconds_count{method="GET",route="/volumes"}"#),
            2.0
        );
        assert_eq!(
            at(
                r#"berth_plugin_calls_total{plugin="test/a:latest",method="VolumeDriver.List",outcome="timeout"}"#
            ),
            1.0
        );
        assert_eq!(at(r#"berth_plugin_restarts_total{plugin_id="abc"}"#), 1.0);
        assert_eq!(at("berth_plugin_install_bytes_total"), 1000.0);
        assert_eq!(at(r#"berth_volumes{driver="local"}"#), 2.0);
        assert_eq!(at("berth_plugins_enabled"), 3.0);
        assert!(text.contains("# TYPE berth_volumes gauge"), "{text}");
    }
}
