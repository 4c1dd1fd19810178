//! Request bodies: bounded reads and JSON decoding with the error texts Docker clients see,
//! the idle timeout every body is read under, and uploads (tar contexts) spooled to disk before
//! any blocking work starts, so no blocking-pool thread ever waits on a client.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::error::PayloadError;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::Call;
use crate::error::{Error, Result};
use crate::gojson::decode::{self, GoDecode, GoSlice};
use crate::gojson::{self, Mode};

/// JSON bodies are small (privilege lists, set arguments); anything larger is refused rather
/// than buffered.
const JSON_BODY_LIMIT: usize = 4 << 20;

/// How request bodies may arrive: the longest silence inside a body, and how many uploads may
/// be in progress at once (each holds a spool file and, once received, a blocking thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    pub idle_timeout: Duration,
    pub max_concurrent_uploads: usize,
}

/// The uploads in progress, bounded by [`BodyLimits::max_concurrent_uploads`].
pub struct Uploads {
    limits: BodyLimits,
    slots: Arc<tokio::sync::Semaphore>,
}

/// One admitted upload; its slot is free again when this is dropped.
pub struct UploadSlot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl Uploads {
    pub fn new(limits: BodyLimits) -> Uploads {
        Uploads {
            limits,
            slots: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_uploads)),
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        self.limits.idle_timeout
    }

    /// A slot for one more upload, or 503 at once when all are taken: a client retries later
    /// rather than queueing behind uploads that may never finish.
    pub fn admit(&self) -> Result<UploadSlot> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(UploadSlot)
            .map_err(|_| {
                Error::Unavailable(format!(
                    "too many uploads in progress (limit {}); try again later",
                    self.limits.max_concurrent_uploads
                ))
            })
    }
}

/// `payload` with an idle timeout: a body that sends nothing for `idle` fails with
/// [`Error::RequestTimeout`] (see [`read_error`]) instead of holding its request forever.
pub fn with_idle_timeout(req: &HttpRequest, payload: web::Payload, idle: Duration) -> web::Payload {
    let watched = IdleTimeout {
        inner: payload,
        idle,
        timer: Box::pin(tokio::time::sleep(idle)),
        expired: false,
    };
    let mut payload: actix_web::dev::Payload = actix_web::dev::Payload::Stream {
        payload: Box::pin(watched),
    };
    match web::Payload::from_request(req, &mut payload).into_inner() {
        Ok(payload) => payload,
        Err(e) => unreachable!("taking a payload cannot fail: {e}"),
    }
}

struct IdleTimeout {
    inner: web::Payload,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    expired: bool,
}

/// The marker [`read_error`] recognises an idle timeout by.
#[derive(Debug)]
struct BodyIdle(Duration);

impl std::fmt::Display for BodyIdle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no request body data received for {}s",
            self.0.as_secs_f64()
        )
    }
}

impl std::error::Error for BodyIdle {}

impl Stream for IdleTimeout {
    type Item = std::result::Result<bytes::Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = self.inner.poll_next_unpin(cx) {
            let deadline = tokio::time::Instant::now() + self.idle;
            self.timer.as_mut().reset(deadline);
            return Poll::Ready(item);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.expired = true;
            let idle = std::io::Error::new(std::io::ErrorKind::TimedOut, BodyIdle(self.idle));
            return Poll::Ready(Some(Err(PayloadError::Io(idle))));
        }
        Poll::Pending
    }
}

/// A failed body read as the client's error: 408 for a body that went quiet, 400 otherwise
/// (the client sent less than it announced, or broke its framing).
pub fn read_error(e: PayloadError) -> Error {
    if let PayloadError::Io(io) = &e {
        if let Some(idle) = io.get_ref().and_then(|i| i.downcast_ref::<BodyIdle>()) {
            return Error::RequestTimeout(idle.to_string());
        }
    }
    Error::InvalidParameter(format!("error reading request body: {e}"))
}

/// Receives a whole upload into `spool` (an anonymous file) and returns it rewound. Nothing
/// blocking waits on the client meanwhile; a client that stalls or goes away fails the read
/// and the spool vanishes with its handle.
pub async fn spool(
    mut payload: web::Payload,
    spool: std::fs::File,
) -> Result<std::io::BufReader<std::fs::File>> {
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(spool));
    while let Some(chunk) = payload.next().await {
        file.write_all(&chunk.map_err(read_error)?).await?;
    }
    file.flush().await?;
    let mut file = file.into_inner();
    file.rewind().await?;
    Ok(std::io::BufReader::new(file.into_std().await))
}

pub async fn read_bounded(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(read_error)?;
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
