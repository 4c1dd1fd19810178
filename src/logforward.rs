//! `--plugin-log-driver NAME`: every managed plugin's output lines also go to a LogDriver
//! plugin, the way dockerd sends a container's output to its log driver. Each plugin whose
//! output is shipped is one log stream (one FIFO, one `StartLogging` with the plugin's ID as
//! `ContainerID`), opened on its first line and kept for the daemon's life; a log plugin that
//! restarted gets its streams started again.
//!
//! Lines reach the forwarder through a bounded queue from the output readers (which must not
//! block); while the log plugin cannot be reached they wait in it, and past its bound they are
//! dropped and counted. The log plugin's own output is never sent to itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use crate::drivers::log::{encode_frame, open_fifo, Info, LogDriverClient, LogEntry, FIFO_DIR};
use crate::plugin::getter::{Capability, Mode, PluginGetter};
use crate::rpc::handle::{PluginHandle, PluginKind};
use crate::runtime::logs::{LogLine, LogSink};

/// Lines waiting for the log plugin.
const QUEUE: usize = 4096;

/// How long the forwarder waits before asking for an unreachable log plugin again.
const RETRY: Duration = Duration::from_secs(1);

/// The [`LogSink`] the output readers feed.
pub struct LogForwarder {
    queue: SyncSender<(String, LogLine)>,
    dropped: Arc<AtomicU64>,
}

impl LogSink for LogForwarder {
    fn line(&self, plugin_id: &str, line: &LogLine) {
        match self.queue.try_send((plugin_id.to_string(), line.clone())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl LogForwarder {
    /// Starts the forwarding thread. `legacy_fifos`: where FIFOs for a legacy log plugin are
    /// made (it sees host paths).
    pub fn start(
        getter: Arc<PluginGetter>,
        driver: String,
        legacy_fifos: PathBuf,
    ) -> Arc<LogForwarder> {
        let (queue, lines) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("plugin-log-driver".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        log::error!("--plugin-log-driver {driver}: {e}");
                        return;
                    }
                };
                let mut shipper = Shipper {
                    getter,
                    driver,
                    legacy_fifos,
                    plugin: None,
                    streams: HashMap::new(),
                    dropped: counted,
                    reported: 0,
                };
                runtime.block_on(shipper.run(lines));
            });
        if let Err(e) = spawned {
            log::error!("cannot start the plugin log forwarder: {e}");
        }
        Arc::new(LogForwarder { queue, dropped })
    }
}

/// One plugin's log stream.
struct Stream {
    fifo: std::fs::File,
    host_path: PathBuf,
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.host_path);
    }
}

struct Shipper {
    getter: Arc<PluginGetter>,
    driver: String,
    legacy_fifos: PathBuf,
    /// The log plugin as last got.
    plugin: Option<PluginHandle>,
    /// Streams by plugin ID, for the current activation of the log plugin.
    streams: HashMap<String, Stream>,
    dropped: Arc<AtomicU64>,
    reported: u64,
}

impl Shipper {
    async fn run(&mut self, lines: Receiver<(String, LogLine)>) {
        let mut pending: Option<(String, LogLine)> = None;
        loop {
            let next = match pending.take() {
                Some(p) => p,
                // Nothing else runs on this thread's runtime: waiting here blocks no one.
                None => match lines.recv() {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            if !self.ready().await {
                pending = Some(next);
                tokio::time::sleep(RETRY).await;
                continue;
            }
            self.ship(&next.0, &next.1).await;
            self.report_drops();
        }
    }

    /// Whether the log plugin can be written to (got anew when it restarted).
    async fn ready(&mut self) -> bool {
        match self
            .getter
            .get(&self.driver, Capability::LogDriver, Mode::Lookup)
            .await
        {
            Ok(plugin) => {
                if !self
                    .plugin
                    .as_ref()
                    .is_some_and(|p| p.same_activation(&plugin))
                {
                    self.streams.clear();
                    self.plugin = Some(plugin);
                }
                true
            }
            Err(e) => {
                if self.plugin.take().is_some() || self.streams.is_empty() {
                    log::warn!(
                        "--plugin-log-driver {}: {e}; plugin output waits",
                        self.driver
                    );
                }
                self.streams.clear();
                false
            }
        }
    }

    async fn ship(&mut self, plugin_id: &str, line: &LogLine) {
        let Some(driver) = self.plugin.clone() else {
            return;
        };
        if driver.managed_id() == Some(plugin_id) {
            return;
        }
        if !self.streams.contains_key(plugin_id) {
            match self.open_stream(&driver, plugin_id).await {
                Ok(stream) => {
                    self.streams.insert(plugin_id.to_string(), stream);
                }
                Err(e) => {
                    log::warn!(
                        "--plugin-log-driver {}: cannot start logging plugin {plugin_id}: {e}",
                        self.driver
                    );
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        let entry = LogEntry {
            source: line.stream.to_string(),
            time_nano: line.time.timestamp_nanos_opt().unwrap_or_default(),
            line: line.text.as_bytes().to_vec(),
            ..LogEntry::default()
        };
        let frame = encode_frame(&entry);
        let Some(stream) = self.streams.get_mut(plugin_id) else {
            return;
        };
        use std::io::Write;
        // Non-blocking: a full pipe (a log plugin that stopped reading) drops the line.
        if stream.fifo.write(&frame).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn open_stream(&self, driver: &PluginHandle, plugin_id: &str) -> Result<Stream, String> {
        let (inside, host_path) = match &driver.kind {
            PluginKind::Managed { .. } => {
                let inside = format!("{FIFO_DIR}/{plugin_id}");
                let host = PathBuf::from(driver.paths.host_path(&inside));
                (inside, host)
            }
            PluginKind::Legacy => {
                let host = self.legacy_fifos.join(plugin_id);
                (host.display().to_string(), host)
            }
        };
        let fifo =
            open_fifo(&host_path).map_err(|e| format!("FIFO {}: {e}", host_path.display()))?;
        let stream = Stream { fifo, host_path };
        let info = Info {
            container_id: plugin_id.to_string(),
            container_name: format!("/berth-plugin-{}", &plugin_id[..plugin_id.len().min(12)]),
            container_created: chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            daemon_name: "berth".into(),
            ..Info::default()
        };
        LogDriverClient::for_plugin(driver)
            .start_logging(&inside, &info)
            .await
            .map_err(|e| e.to_string())?;
        Ok(stream)
    }

    fn report_drops(&mut self) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped >= self.reported + 100 {
            log::warn!(
                "--plugin-log-driver {}: {dropped} plugin output lines dropped so far",
                self.driver
            );
            self.reported = dropped;
        }
    }
}
