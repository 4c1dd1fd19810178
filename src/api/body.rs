//! Request bodies: bounded reads and JSON decoding with the error texts Docker clients see.

use actix_web::web;
use futures_util::StreamExt;

use super::Call;
use crate::error::{Error, Result};
use crate::gojson::{self, Mode};

/// JSON bodies are small (privilege lists, set arguments); anything larger is refused rather
/// than buffered.
const JSON_BODY_LIMIT: usize = 4 << 20;

pub async fn read_bounded(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| Error::InvalidParameter(format!("error reading request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(Error::InvalidParameter(format!(
                "request body is larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads a JSON array of strings (the body of `plugin set`), with moby's checks for the
/// requested API version. `null` or an empty body (where allowed) give an empty list.
pub async fn read_string_list(call: &Call, payload: web::Payload) -> Result<Vec<String>> {
    let body = read_bounded(payload, JSON_BODY_LIMIT).await?;
    if call.compat.legacy() {
        // 20.10 decodes with a json.Decoder and no Content-Type check; trailing bytes are
        // never read.
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(Error::InvalidParameter(
                "got EOF while reading request body".into(),
            ));
        }
        let end = gojson::check_syntax(&body, Mode::Decoder).map_err(Error::InvalidParameter)?;
        return string_list(&body[..end]).map_err(Error::InvalidParameter);
    }
    check_json_content_type(call, body.is_empty())?;
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let end = gojson::check_syntax(&body, Mode::Decoder)
        .map_err(|e| Error::InvalidParameter(format!("invalid JSON: {e}")))?;
    if !body[end..].iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::InvalidParameter(
            "unexpected content after JSON".into(),
        ));
    }
    string_list(&body[..end]).map_err(|e| Error::InvalidParameter(format!("invalid JSON: {e}")))
}

/// moby `httputils.CheckForJSON`: a body must be declared `application/json` (parameters
/// allowed); an empty body without a Content-Type is fine.
fn check_json_content_type(call: &Call, empty: bool) -> Result<()> {
    let content_type = call.header("content-type").unwrap_or("");
    if content_type.is_empty() && empty {
        return Ok(());
    }
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    if !content_type.is_empty() && media_type.is_empty() {
        return Err(Error::InvalidParameter(format!(
            "malformed Content-Type header ({content_type}): mime: no media type"
        )));
    }
    Err(Error::InvalidParameter(format!(
        "unsupported Content-Type header ({content_type}): must be 'application/json'"
    )))
}

/// Decodes syntactically valid JSON into `[]string` with Go's type-mismatch texts.
fn string_list(json: &[u8]) -> std::result::Result<Vec<String>, String> {
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    match value {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(s) => Ok(s),
                // Go leaves the zero value for a null element.
                serde_json::Value::Null => Ok(String::new()),
                other => Err(gojson::unmarshal_type_error(
                    gojson::kind_name(&other),
                    "string",
                )),
            })
            .collect(),
        other => Err(gojson::unmarshal_type_error(
            gojson::kind_name(&other),
            "[]string",
        )),
    }
}

/// A blocking `Read` over chunks sent from the async side, so a request body can be streamed
/// into synchronous unpackers running on a blocking thread.
pub struct ChannelReader {
    receiver: tokio::sync::mpsc::Receiver<std::result::Result<bytes::Bytes, String>>,
    current: bytes::Bytes,
}

pub type ChunkSender = tokio::sync::mpsc::Sender<std::result::Result<bytes::Bytes, String>>;

impl ChannelReader {
    pub fn pair(depth: usize) -> (ChunkSender, ChannelReader) {
        let (sender, receiver) = tokio::sync::mpsc::channel(depth);
        (
            sender,
            ChannelReader {
                receiver,
                current: bytes::Bytes::new(),
            },
        )
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, e));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}
