//! Request bodies: bounded reads and JSON decoding with the error texts Docker clients see.

use actix_web::error::PayloadError;
use actix_web::web;
use futures_util::StreamExt;

use super::Call;
use crate::error::{Error, Result};
use crate::gojson::decode::{self, GoDecode, GoSlice};
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

/// How a 1.41 (dockerd 20.10) endpoint treated the Content-Type of its JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyContentType {
    /// Not looked at (`plugin set`).
    Ignored,
    /// Must be `application/json` unless the body is empty (`volume create`).
    Required,
}

/// Reads a JSON body with moby's rules for the requested API version and returns the bytes of
/// the first JSON value, syntax-checked; `None` for an empty body where that is allowed.
async fn read_json_bytes(
    call: &Call,
    payload: web::Payload,
    legacy: LegacyContentType,
) -> Result<Option<Vec<u8>>> {
    let mut body = read_bounded(payload, JSON_BODY_LIMIT).await?;
    if call.compat.legacy() {
        // 20.10 decodes with a json.Decoder; bytes after the first value are never read.
        if legacy == LegacyContentType::Required {
            let content_type = call.header("content-type").unwrap_or("");
            let media_type = content_type.split(';').next().unwrap_or("").trim();
            let exempt = body.is_empty() && content_type.is_empty();
            if !exempt && !media_type.eq_ignore_ascii_case("application/json") {
                return Err(Error::InvalidParameter(format!(
                    "Content-Type specified ({content_type}) must be 'application/json'"
                )));
            }
        }
        if body.iter().all(|b| gojson::is_space(*b)) {
            return Err(Error::InvalidParameter(
                "got EOF while reading request body".into(),
            ));
        }
        body.truncate(gojson::check_syntax(&body, Mode::Decoder)?);
        return Ok(Some(body));
    }
    check_json_content_type(call, body.is_empty())?;
    if body.is_empty() {
        return Ok(None);
    }
    let end = gojson::check_syntax(&body, Mode::Decoder)
        .map_err(|e| Error::InvalidParameter(format!("invalid JSON: {e}")))?;
    if !body[end..].iter().all(|b| gojson::is_space(*b)) {
        return Err(Error::InvalidParameter(
            "unexpected content after JSON".into(),
        ));
    }
    body.truncate(end);
    Ok(Some(body))
}

/// Reads a JSON body (see [`read_json_bytes`]) as a `serde_json::Value`; `None` for an empty
/// body where that is allowed. Type checks are the caller's (they need the Go type names).
pub async fn read_json(
    call: &Call,
    payload: web::Payload,
    legacy: LegacyContentType,
) -> Result<Option<serde_json::Value>> {
    let Some(json) = read_json_bytes(call, payload, legacy).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&json)
        .map(Some)
        .map_err(|e| Error::InvalidParameter(e.to_string()))
}

/// Reads a JSON body (see [`read_json_bytes`]) into a Go-shaped value as Go's decoder fills the
/// Go type it stands for, with Go's type-error texts (see [`type_error`]); `None` for an empty
/// body where that is allowed.
pub async fn read_go_json<T: GoDecode>(
    call: &Call,
    payload: web::Payload,
    legacy: LegacyContentType,
) -> Result<Option<T>> {
    let Some(json) = read_json_bytes(call, payload, legacy).await? else {
        return Ok(None);
    };
    decode::decode_valid(&json)
        .map(Some)
        .map_err(|e| type_error(call, e.to_string()))
}

/// The message prefix for type errors in a JSON body (`invalid JSON: ` from API 1.42).
pub fn type_error(call: &Call, message: String) -> Error {
    if call.compat.legacy() {
        Error::InvalidParameter(message)
    } else {
        Error::InvalidParameter(format!("invalid JSON: {message}"))
    }
}

/// Reads a JSON array of strings (the body of `plugin set`) as Go's `[]string`. `null` or an
/// empty body (where allowed) give an empty list.
pub async fn read_string_list(call: &Call, payload: web::Payload) -> Result<Vec<String>> {
    let list = read_go_json::<GoSlice<String>>(call, payload, LegacyContentType::Ignored).await?;
    Ok(list.and_then(GoSlice::into_option).unwrap_or_default())
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

/// A blocking `Read` over chunks sent from the async side, so a request body can be streamed
/// into synchronous unpackers running on a blocking thread.
pub struct ChannelReader {
    receiver: tokio::sync::mpsc::Receiver<std::result::Result<bytes::Bytes, PayloadError>>,
    current: bytes::Bytes,
}

pub type ChunkSender = tokio::sync::mpsc::Sender<std::result::Result<bytes::Bytes, PayloadError>>;

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
