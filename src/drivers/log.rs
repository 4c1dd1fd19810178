//! The LogDriver protocol (moby `daemon/logger/plugin.go`, `proxy.go`, `adapter.go`,
//! `internal/logdriver/entry.proto`).
//!
//! A log plugin is handed a FIFO per log stream: the daemon creates it (mode 0700, held open
//! read-write so a plugin that closes it or dies never makes the writer fail), passes its path as
//! the plugin sees it to `StartLogging`, and writes framed `LogEntry` messages into it:
//! `[4-byte big-endian length][protobuf LogEntry]`. `ReadLogs` answers a stream of the same
//! frames. [`LogDriverClient`] sends moby's request shapes and turns in-band `Err` into errors.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rpc::client::{shorten, PluginClient, ReplyStream, Retry, RpcError};
use crate::rpc::handle::PluginHandle;

/// The `Implements` / capability name of log plugins.
pub const LOG_DRIVER: &str = "LogDriver";

/// Where log FIFOs live, as the plugin sees the path (moby's `/run/docker/logging`).
pub const FIFO_DIR: &str = "/run/docker/logging";

/// The largest frame berth reads back (moby's decoder refuses messages above 1 MiB too).
pub const MAX_FRAME: usize = 1 << 20;

/// One log line (`LogEntry` of moby's `entry.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogEntry {
    /// `stdout` or `stderr`.
    #[prost(string, tag = "1")]
    pub source: String,
    #[prost(int64, tag = "2")]
    pub time_nano: i64,
    /// The line without its trailing newline.
    #[prost(bytes = "vec", tag = "3")]
    pub line: Vec<u8>,
    #[prost(bool, tag = "4")]
    pub partial: bool,
    #[prost(message, optional, tag = "5")]
    pub partial_log_metadata: Option<PartialLogEntryMetadata>,
    #[prost(message, repeated, tag = "6")]
    pub attrs: Vec<LogAttr>,
}

/// `PartialLogEntryMetadata`: how a long line was cut.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PartialLogEntryMetadata {
    #[prost(bool, tag = "1")]
    pub last: bool,
    #[prost(string, tag = "2")]
    pub id: String,
    #[prost(int32, tag = "3")]
    pub ordinal: i32,
}

/// `LogAttr`: a key/value the daemon does not set itself.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogAttr {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `entry` as one frame: its length (4 bytes, big-endian) and its protobuf encoding.
pub fn encode_frame(entry: &LogEntry) -> Vec<u8> {
    use prost::Message;
    let len = entry.encoded_len();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    entry
        .encode(&mut out)
        .expect("a Vec grows as the encoder needs");
    out
}

/// Why a stream of frames could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame announces {0} bytes, more than the {MAX_FRAME} a log entry may have")]
    TooLarge(usize),
    #[error("a frame is not a LogEntry: {0}")]
    NotAnEntry(String),
    #[error("the stream ends inside a frame ({0} bytes left over)")]
    Truncated(usize),
}

/// Reads frames out of bytes that arrive in pieces.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    pending: Vec<u8>,
}

impl FrameDecoder {
    /// The entries completed by `bytes`.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<LogEntry>, FrameError> {
        use prost::Message;
        self.pending.extend_from_slice(bytes);
        let mut entries = Vec::new();
        let mut at = 0;
        while self.pending.len() - at >= 4 {
            let len =
                u32::from_be_bytes(self.pending[at..at + 4].try_into().expect("4 bytes")) as usize;
            if len > MAX_FRAME {
                return Err(FrameError::TooLarge(len));
            }
            if self.pending.len() - at - 4 < len {
                break;
            }
            let frame = &self.pending[at + 4..at + 4 + len];
            entries
                .push(LogEntry::decode(frame).map_err(|e| FrameError::NotAnEntry(e.to_string()))?);
            at += 4 + len;
        }
        self.pending.drain(..at);
        Ok(entries)
    }

    /// Checks the stream ended at a frame boundary.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.pending.len() {
            0 => Ok(()),
            n => Err(FrameError::Truncated(n)),
        }
    }
}

/// `Info` of `StartLogging` and `ReadLogs` (moby's `logger.Info`, Go field names).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Info {
    pub config: std::collections::BTreeMap<String, String>,
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    pub container_name: String,
    pub container_entrypoint: String,
    pub container_args: Vec<String>,
    #[serde(rename = "ContainerImageID")]
    pub container_image_id: String,
    pub container_image_name: String,
    /// RFC 3339.
    pub container_created: String,
    pub container_env: Vec<String>,
    pub container_labels: std::collections::BTreeMap<String, String>,
    pub log_path: String,
    pub daemon_name: String,
}

/// `Config` of `ReadLogs` (moby's `logger.ReadConfig`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ReadConfig {
    /// RFC 3339; Go's zero time (`0001-01-01T00:00:00Z`) means "from the start".
    pub since: String,
    /// RFC 3339; the zero time means "no end".
    pub until: String,
    /// Entries from the end; -1 for all.
    pub tail: i64,
    pub follow: bool,
}

/// Go's zero `time.Time` as JSON writes it.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig {
            since: ZERO_TIME.into(),
            until: ZERO_TIME.into(),
            tail: -1,
            follow: false,
        }
    }
}

#[derive(Serialize)]
struct StartRequest<'a> {
    #[serde(rename = "File")]
    file: &'a str,
    #[serde(rename = "Info")]
    info: &'a Info,
}

#[derive(Serialize)]
struct StopRequest<'a> {
    #[serde(rename = "File")]
    file: &'a str,
}

#[derive(Serialize)]
struct ReadRequest<'a> {
    #[serde(rename = "Info")]
    info: &'a Info,
    #[serde(rename = "Config")]
    config: &'a ReadConfig,
}

/// What a log plugin says it can do (`LogDriver.Capabilities`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub read_logs: bool,
}

/// What went wrong in a LogDriver call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("{0}")]
    Rpc(#[from] RpcError),
    /// A 200 answer with `Err` set.
    #[error("{method}: {message}")]
    Plugin { method: String, message: String },
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// A LogDriver plugin.
#[derive(Debug, Clone)]
pub struct LogDriverClient {
    name: String,
    client: PluginClient,
}

impl LogDriverClient {
    pub fn for_plugin(plugin: &PluginHandle) -> LogDriverClient {
        LogDriverClient {
            name: plugin.name.clone(),
            client: plugin.client.clone(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `LogDriver.Capabilities` (empty body). A failing call means no capabilities, as in moby.
    pub async fn capabilities(&self) -> Capabilities {
        match self.call("LogDriver.Capabilities", &()).await {
            Ok(answer) => Capabilities {
                read_logs: crate::drivers::field(&answer, "Cap")
                    .and_then(|c| crate::drivers::field(c, "ReadLogs"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
            Err(e) => {
                log::debug!("log driver {} has no capabilities: {e}", self.name);
                Capabilities::default()
            }
        }
    }

    /// `LogDriver.StartLogging {"File","Info"}`: `file` is the FIFO's path as the plugin sees
    /// it.
    pub async fn start_logging(&self, file: &str, info: &Info) -> Result<(), LogError> {
        self.call("LogDriver.StartLogging", &StartRequest { file, info })
            .await
            .map(|_| ())
    }

    /// `LogDriver.StopLogging {"File"}`.
    pub async fn stop_logging(&self, file: &str) -> Result<(), LogError> {
        self.call("LogDriver.StopLogging", &StopRequest { file })
            .await
            .map(|_| ())
    }

    /// `LogDriver.ReadLogs {"Info","Config"}`: the answer's frames as they arrive.
    pub async fn read_logs(&self, info: &Info, config: &ReadConfig) -> Result<LogReader, LogError> {
        let stream = self
            .client
            .stream("LogDriver.ReadLogs", &ReadRequest { info, config })
            .await?;
        Ok(LogReader {
            stream,
            decoder: FrameDecoder::default(),
            ready: std::collections::VecDeque::new(),
        })
    }

    async fn call(
        &self,
        method: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<Value, LogError> {
        let answer: Value = self.client.call(method, body, Retry::Never).await?;
        let err = crate::drivers::field(&answer, "Err")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !err.is_empty() {
            return Err(LogError::Plugin {
                method: method.to_string(),
                message: shorten(err),
            });
        }
        Ok(answer)
    }
}

/// The entries of a `ReadLogs` answer.
#[derive(Debug)]
pub struct LogReader {
    stream: ReplyStream,
    decoder: FrameDecoder,
    ready: std::collections::VecDeque<LogEntry>,
}

impl LogReader {
    /// The next entry; `None` when the plugin ended the stream at a frame boundary.
    pub async fn next(&mut self) -> Result<Option<LogEntry>, LogError> {
        loop {
            if let Some(entry) = self.ready.pop_front() {
                return Ok(Some(entry));
            }
            match self.stream.chunk().await? {
                Some(bytes) => self.ready.extend(self.decoder.push(&bytes)?),
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }
}

/// Creates the FIFO `path` (mode 0700, as moby) and opens it read-write and non-blocking, as
/// moby holds it: writes never fail with EPIPE when the plugin closes its end, and a full pipe
/// answers `EAGAIN` instead of blocking the writer.
pub fn open_fifo(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: &str) -> LogEntry {
        LogEntry {
            source: "stdout".into(),
            time_nano: 1_700_000_000_123_456_789,
            line: line.as_bytes().to_vec(),
            ..LogEntry::default()
        }
    }

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut bytes = encode_frame(&entry("one"));
        bytes.extend(encode_frame(&entry("two")));
        let mut decoder = FrameDecoder::default();
        let mut seen = Vec::new();
        for b in &bytes {
            seen.extend(decoder.push(std::slice::from_ref(b)).unwrap());
        }
        decoder.finish().unwrap();
        assert_eq!(seen, vec![entry("one"), entry("two")]);
    }

    #[test]
    fn frame_layout_is_length_then_protobuf() {
        let frame = encode_frame(&entry("hi"));
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        // Field 1 (source), wire type 2: tag byte 0x0a, then "stdout".
        assert_eq!(&frame[4..6], &[0x0a, 6]);
        assert_eq!(&frame[6..12], b"stdout");
    }

    #[test]
    fn bad_streams_are_named() {
        let mut decoder = FrameDecoder::default();
        assert_eq!(
            decoder.push(&[0xff, 0, 0, 0]),
            Err(FrameError::TooLarge(0xff00_0000))
        );
        let mut decoder = FrameDecoder::default();
        decoder.push(&[0, 0, 0, 9, 1]).unwrap();
        assert_eq!(decoder.finish(), Err(FrameError::Truncated(5)));
        let mut decoder = FrameDecoder::default();
        assert!(matches!(
            decoder.push(&[0, 0, 0, 1, 0xff]),
            Err(FrameError::NotAnEntry(_))
        ));
    }

    #[test]
    fn requests_carry_go_field_names() {
        let info = Info {
            container_id: "abc".into(),
            ..Info::default()
        };
        let body = serde_json::to_value(ReadRequest {
            info: &info,
            config: &ReadConfig::default(),
        })
        .unwrap();
        assert_eq!(body["Info"]["ContainerID"], "abc");
        assert_eq!(body["Config"]["Since"], ZERO_TIME);
        assert_eq!(body["Config"]["Tail"], -1);
        assert!(body["Info"].get("ContainerImageID").is_some());
    }
}
