//! Progress of long operations (pull, push, upgrade) as Docker's JSON-message stream.
//! Operations report through a [`Progress`] sink; the API turns the receiving end into a
//! streaming HTTP body. When the client goes away the sink reports it, so the operation stops
//! and undoes its work (cancellation).

use serde::Serialize;

use crate::error::Error;

/// One message of the stream (`jsonmessage.JSONMessage`), field order as Go writes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JsonMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(rename = "progressDetail", skip_serializing_if = "Option::is_none")]
    pub progress_detail: Option<ProgressDetail>,
    /// The pre-rendered bar 20.10 sent along with progress updates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "errorDetail", skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<ErrorDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProgressDetail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorDetail {
    pub message: String,
}

/// The client stopped reading: the operation must stop and clean up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

/// Why a streamed operation stopped.
#[derive(Debug)]
pub enum StreamError {
    /// Sent to the client as the stream's last message.
    Failed(Error),
    /// The client went away; the work was undone and nobody is told.
    Cancelled,
}

impl From<Cancelled> for StreamError {
    fn from(_: Cancelled) -> Self {
        StreamError::Cancelled
    }
}

impl<E: Into<Error>> From<E> for StreamError {
    fn from(e: E) -> Self {
        StreamError::Failed(e.into())
    }
}

/// Runs `operation` on this thread's runtime, reporting to a new stream whose receiving end
/// is returned (the API turns it into the response body). A failure becomes the stream's last
/// message; a client that went away just ends it.
pub fn spawn<F, Fut>(operation: F) -> ProgressReceiver
where
    F: FnOnce(Progress) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<(), StreamError>> + 'static,
{
    let (progress, receiver) = Progress::channel();
    tokio::task::spawn_local(async move {
        match operation(progress.clone()).await {
            Ok(()) => {}
            Err(StreamError::Failed(e)) => {
                log::info!("plugin transfer failed: {}", e.message());
                let _ = progress.error(e.message()).await;
            }
            Err(StreamError::Cancelled) => log::info!("plugin transfer cancelled by the client"),
        }
    });
    receiver
}

/// Where an operation reports. Cheap to clone; usable from async tasks and blocking threads.
#[derive(Clone)]
pub struct Progress {
    sender: tokio::sync::mpsc::Sender<bytes::Bytes>,
}

pub type ProgressReceiver = tokio::sync::mpsc::Receiver<bytes::Bytes>;

impl Progress {
    pub fn channel() -> (Progress, ProgressReceiver) {
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        (Progress { sender }, receiver)
    }

    fn encode(message: &JsonMessage) -> bytes::Bytes {
        // As Go encodes it: the bar's `>` travels as `\u003e`.
        let mut line = crate::gojson::escape_html(serde_json::to_vec(message).unwrap_or_default());
        line.extend_from_slice(b"\r\n");
        line.into()
    }

    pub async fn send(&self, message: JsonMessage) -> Result<(), Cancelled> {
        self.sender
            .send(Self::encode(&message))
            .await
            .map_err(|_| Cancelled)
    }

    /// From a blocking thread.
    pub fn send_blocking(&self, message: JsonMessage) -> Result<(), Cancelled> {
        self.sender
            .blocking_send(Self::encode(&message))
            .map_err(|_| Cancelled)
    }

    /// For frequent updates (transfer progress): dropped when the client is slow to read.
    pub fn try_send(&self, message: JsonMessage) {
        let _ = self.sender.try_send(Self::encode(&message));
    }

    /// Resolves when the client has gone away.
    pub async fn closed(&self) {
        self.sender.closed().await
    }

    pub fn is_cancelled(&self) -> bool {
        self.sender.is_closed()
    }

    /// `{"status": ...}` with an optional `id`.
    pub async fn status(
        &self,
        id: Option<&str>,
        status: impl Into<String>,
    ) -> Result<(), Cancelled> {
        self.send(JsonMessage {
            status: Some(status.into()),
            id: id.map(str::to_string),
            ..Default::default()
        })
        .await
    }

    /// A state change of one layer: `{"status": ..., "progressDetail": {}, "id": ...}`.
    pub async fn layer(&self, id: &str, status: impl Into<String>) -> Result<(), Cancelled> {
        self.send(self.state(id, status)).await
    }

    /// The message of [`layer`](Self::layer), for [`try_send`](Self::try_send).
    pub fn state(&self, id: &str, status: impl Into<String>) -> JsonMessage {
        JsonMessage {
            status: Some(status.into()),
            progress_detail: Some(ProgressDetail::default()),
            id: Some(id.to_string()),
            ..Default::default()
        }
    }

    /// Transfer progress of one layer, with 20.10's rendered bar.
    pub fn transfer(&self, id: &str, status: &str, current: u64, total: u64) -> JsonMessage {
        JsonMessage {
            status: Some(status.to_string()),
            progress_detail: Some(ProgressDetail {
                current: Some(current),
                total: (total > 0).then_some(total),
            }),
            progress: Some(render_bar(current, total)),
            id: Some(id.to_string()),
            ..Default::default()
        }
    }

    /// The final error message of a failed operation (the CLI prints it and exits 1).
    pub async fn error(&self, message: &str) -> Result<(), Cancelled> {
        self.send(JsonMessage {
            error_detail: Some(ErrorDetail {
                message: message.to_string(),
            }),
            error: Some(message.to_string()),
            ..Default::default()
        })
        .await
    }

    pub async fn aux(&self, value: serde_json::Value) -> Result<(), Cancelled> {
        self.send(JsonMessage {
            aux: Some(value),
            ..Default::default()
        })
        .await
    }
}

/// The bar dockerd renders into `progress` (`JSONProgress.String` at its width of 200): one `=`
/// per 2 % done, a `>`, the rest blank, then `current/total` (current right-aligned in 8).
pub fn render_bar(current: u64, total: u64) -> String {
    if total == 0 {
        return format!("{:>8}", human_size(current));
    }
    let percent = ((current as f64 / total as f64 * 100.0) as usize / 2).min(50);
    format!(
        "[{}>{}] {:>8}/{}",
        "=".repeat(percent),
        " ".repeat(50 - percent),
        human_size(current),
        human_size(total)
    )
}

/// go-units `HumanSize`: decimal, 4 significant digits.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    format!("{}{}", significant(size, 4), UNITS[unit])
}

/// Go's `%.<n>g` for values below 1000: `n` significant digits, rounded once, trailing zeros
/// dropped.
fn significant(value: f64, n: usize) -> String {
    let formatted = format!("{:.*}", n.saturating_sub(integer_digits(value)), value);
    let trimmed = if formatted.contains('.') {
        formatted
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        formatted
    };
    trimmed
}

fn integer_digits(value: f64) -> usize {
    if value < 1.0 {
        1
    } else {
        (value.log10().floor() as usize) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_serialize_in_go_order_without_empty_fields() {
        let (p, _rx) = Progress::channel();
        let m = p.transfer("52d435ada6a4", "Downloading", 3233, 6466);
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.starts_with(r#"{"status":"Downloading","progressDetail":{"current":3233,"total":6466},"progress":"["#));
        assert!(text.ends_with(r#","id":"52d435ada6a4"}"#));
        let layer = JsonMessage {
            status: Some("Pulling fs layer".into()),
            progress_detail: Some(ProgressDetail::default()),
            id: Some("52d435ada6a4".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&layer).unwrap(),
            r#"{"status":"Pulling fs layer","progressDetail":{},"id":"52d435ada6a4"}"#
        );
    }

    #[test]
    fn sizes_read_like_go_units() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(525), "525B");
        assert_eq!(human_size(6466), "6.466kB");
        assert_eq!(human_size(1_200_000), "1.2MB");
        assert_eq!(human_size(54_321_000), "54.32MB");
        // Rounded once: 6.291456 is 6.291, not 6.2915 rounded again to 6.292.
        assert_eq!(human_size(6_291_456), "6.291MB");
    }

    #[test]
    fn bars_read_as_dockerds() {
        assert_eq!(
            render_bar(6_291_456, 19_453_033),
            format!("[{}>{}]  6.291MB/19.45MB", "=".repeat(16), " ".repeat(34))
        );
        assert_eq!(
            render_bar(19_453_033, 19_453_033),
            format!("[{}>]  19.45MB/19.45MB", "=".repeat(50))
        );
        assert_eq!(render_bar(525, 0), "    525B");
        let (p, _rx) = Progress::channel();
        let line = Progress::encode(&p.transfer("a", "Extracting", 1, 2));
        assert!(std::str::from_utf8(&line)
            .unwrap()
            .contains(r#""progress":"[=========================\u003e"#));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_receiver_cancels() {
        let (p, rx) = Progress::channel();
        drop(rx);
        assert!(p.is_cancelled());
        assert_eq!(p.status(None, "x").await, Err(Cancelled));
    }
}
