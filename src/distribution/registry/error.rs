//! The registry client's typed error and Docker's wording of registry failures: JSON error
//! bodies as docker's `errcode` renders them, transport failures as Go's `url.Error`.

use std::path::Path;
use std::time::Duration;

use reqwest::{Response, StatusCode, Url};
use serde::Deserialize;
use tokio::time::Instant;

use super::Session;
use crate::error::Error;
use crate::goerr::{errno_text, go_duration, Cause};

/// Error bodies are read up to this size; the rest is dropped.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// Why a registry operation failed. `Display` reads as dockerd (or the containerd code it uses
/// for plugins) words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The manifest (tag or digest), the repository or a blob does not exist (HTTP 404).
    /// `reference` is the fully qualified reference, or the blob digest. `message` is the
    /// registry's own error text when it sent one (e.g. `manifest unknown`).
    #[error("{reference}: not found")]
    NotFound {
        reference: String,
        message: Option<String>,
    },
    /// HTTP 401 (or a failed token request): the registry's error text, e.g.
    /// `unauthorized: authentication required`.
    #[error("{0}")]
    Unauthorized(String),
    /// HTTP 403: e.g. `denied: requested access to the resource is denied`.
    #[error("{0}")]
    Denied(String),
    /// Content whose sha256 is not the digest it was asked for (containerd's wording).
    #[error("unexpected commit digest {actual}, expected {expected}: failed precondition")]
    DigestMismatch { expected: String, actual: String },
    /// The registry sent more bytes than the descriptor declares; reading stopped there.
    #[error("failed to fetch {digest}: more than the {expected} bytes its descriptor declares")]
    TooLong { digest: String, expected: u64 },
    /// The blob ended (or the connection broke) before the descriptor's size was reached.
    #[error("failed to fetch {digest}: unexpected EOF after {received} of {expected} bytes")]
    Truncated {
        digest: String,
        expected: u64,
        received: u64,
    },
    /// A manifest or bounded blob larger than the configured limit.
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    /// The manifest is valid but its config is not a plugin config: `class` is `image` for image
    /// configs, `unknown` otherwise (moby's `invalidManifestClassError`). The CLI appends
    /// `- Use "docker image pull"` when it sees `(image) when fetching`.
    #[error("Encountered remote {media_type:?}({class}) when fetching")]
    WrongMediaType { media_type: String, class: String },
    /// A manifest media type this client cannot use (schema 1, an index inside an index, …).
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedManifest(String),
    /// A manifest list / index without an entry for this platform.
    #[error("no matching manifest for {0} in the manifest list entries")]
    NoMatchingPlatform(String),
    /// Any other HTTP error: the registry's error text, or
    /// `unexpected status from <METHOD> request to <url>: <status>`.
    #[error("{message}")]
    Registry { status: u16, message: String },
    /// No answer: `<Method> "<url>": <cause>` (Go's `url.Error` shape, e.g. `Get
    /// "http://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused`).
    #[error("{method} {url:?}: {message}")]
    Transport {
        method: String,
        url: String,
        message: String,
    },
    /// A transfer that moved no byte for the stall timeout.
    #[error("{method} {url:?}: no data transferred for {}", go_duration(*.after))]
    Stalled {
        method: String,
        url: String,
        after: Duration,
    },
    /// The registry broke the protocol (bad JSON, missing `Location`, invalid digest, …).
    #[error("{0}")]
    Protocol(String),
    /// A local file could not be read or written.
    #[error("{0}")]
    Io(String),
}

/// What kind of failure a [`RegistryError`] is, in the daemon's error classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryErrorClass {
    /// The manifest, repository or blob does not exist.
    NotFound,
    /// Credentials refused or access denied (401, 403, a failed token request).
    Unauthorized,
    /// What the reference names cannot be used here: not a plugin, no entry for this platform,
    /// an unsupported manifest, more than the configured limit.
    Invalid,
    /// The registry could not be reached, stopped sending, broke off, or said it is busy.
    Unavailable,
    /// Everything else: content that is not what its digest says, protocol violations, local
    /// I/O.
    System,
}

impl RegistryError {
    pub fn class(&self) -> RegistryErrorClass {
        use RegistryErrorClass as Class;
        match self {
            RegistryError::NotFound { .. } => Class::NotFound,
            RegistryError::Unauthorized(_) | RegistryError::Denied(_) => Class::Unauthorized,
            RegistryError::WrongMediaType { .. }
            | RegistryError::UnsupportedManifest(_)
            | RegistryError::NoMatchingPlatform(_)
            | RegistryError::TooLarge { .. } => Class::Invalid,
            RegistryError::Transport { .. }
            | RegistryError::Stalled { .. }
            | RegistryError::Truncated { .. } => Class::Unavailable,
            // 401, 403 and an operation's 404 have their own variants.
            RegistryError::Registry { status, .. } => match *status {
                400 => Class::Invalid,
                429 | 502 | 503 | 504 => Class::Unavailable,
                _ => Class::System,
            },
            RegistryError::DigestMismatch { .. }
            | RegistryError::TooLong { .. }
            | RegistryError::Protocol(_)
            | RegistryError::Io(_) => Class::System,
        }
    }

    /// Manifest, repository or blob unknown to the registry.
    pub fn is_not_found(&self) -> bool {
        self.class() == RegistryErrorClass::NotFound
    }

    /// Refused credentials or access (401/403).
    pub fn is_unauthorized(&self) -> bool {
        self.class() == RegistryErrorClass::Unauthorized
    }

    /// No registry answered: the endpoint could not be reached or stopped sending. Narrower than
    /// [`RegistryErrorClass::Unavailable`]: a session falls over to its next endpoint only then.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            RegistryError::Transport { .. } | RegistryError::Stalled { .. }
        )
    }
}

/// The one place a registry failure becomes a status code. dockerd 20.10 hands registry failures
/// to its API untyped (its plugin code wraps containerd's resolver and fetcher errors), so every
/// class answers 500, and the compat scenarios pin that; the class is there for the day a status
/// should follow it.
impl From<RegistryError> for Error {
    fn from(e: RegistryError) -> Self {
        match e.class() {
            RegistryErrorClass::NotFound
            | RegistryErrorClass::Unauthorized
            | RegistryErrorClass::Invalid
            | RegistryErrorClass::Unavailable
            | RegistryErrorClass::System => Error::System(e.to_string()),
        }
    }
}

impl Session {
    /// The typed error of a non-success answer (its body read up to 64 KiB).
    pub(super) async fn error_from(
        &self,
        mut resp: Response,
        method: &str,
        url: &str,
        what: &str,
    ) -> RegistryError {
        let status = resp.status();
        let deadline = Instant::now() + self.shared.options.request_timeout;
        let body = match method {
            "HEAD" => Vec::new(),
            _ => {
                let mut out = Vec::new();
                while let Ok(Some(c)) = self.next_chunk(&mut resp, "Get", url, Some(deadline)).await
                {
                    out.extend_from_slice(&c);
                    if out.len() as u64 >= MAX_ERROR_BODY {
                        break;
                    }
                }
                out
            }
        };
        status_error(status, method, url, Some(what), render_error_body(&body))
    }
}

/// The typed error of a failed answer whose body rendered as `rendered`. A 404 is
/// [`RegistryError::NotFound`] of `what` only when there is a `what` (a token server's 404 is
/// just an unexpected status).
pub(super) fn status_error(
    status: StatusCode,
    method: &str,
    url: &str,
    what: Option<&str>,
    rendered: Option<String>,
) -> RegistryError {
    match (status, what) {
        (StatusCode::UNAUTHORIZED, _) => RegistryError::Unauthorized(
            rendered.unwrap_or_else(|| "unauthorized: authentication required".into()),
        ),
        (StatusCode::FORBIDDEN, _) => RegistryError::Denied(
            rendered.unwrap_or_else(|| "denied: requested access to the resource is denied".into()),
        ),
        (StatusCode::NOT_FOUND, Some(what)) => RegistryError::NotFound {
            reference: what.to_string(),
            message: rendered,
        },
        _ => RegistryError::Registry {
            status: status.as_u16(),
            message: rendered.unwrap_or_else(|| {
                format!(
                    "unexpected status from {method} request to {url}: {}",
                    status_text(status)
                )
            }),
        },
    }
}

// ---- registry error bodies ------------------------------------------------------------------

/// Default messages of docker's registered error codes (distribution `errcode` / `api/v2`).
fn default_error_message(code: &str) -> Option<&'static str> {
    Some(match code {
        "UNKNOWN" => "unknown error",
        "UNSUPPORTED" => "The operation is unsupported.",
        "UNAUTHORIZED" => "authentication required",
        "DENIED" => "requested access to the resource is denied",
        "UNAVAILABLE" => "service unavailable",
        "TOOMANYREQUESTS" => "too many requests",
        "DIGEST_INVALID" => "provided digest did not match uploaded content",
        "SIZE_INVALID" => "provided length did not match content length",
        "NAME_INVALID" => "invalid repository name",
        "TAG_INVALID" => "manifest tag did not match URI",
        "NAME_UNKNOWN" => "repository name not known to registry",
        "MANIFEST_UNKNOWN" => "manifest unknown",
        "MANIFEST_INVALID" => "manifest invalid",
        "MANIFEST_UNVERIFIED" => "manifest failed signature verification",
        "MANIFEST_BLOB_UNKNOWN" => "blob unknown to registry",
        "BLOB_UNKNOWN" => "blob unknown to registry",
        "BLOB_UPLOAD_UNKNOWN" => "blob upload unknown to registry",
        "BLOB_UPLOAD_INVALID" => "blob upload invalid",
        "PAGINATION_NUMBER_INVALID" => "invalid number of results requested",
        "RANGE_INVALID" => "invalid content range",
        _ => return None,
    })
}

/// Renders `{"errors":[{"code","message","detail"}]}` as docker's `errcode.Errors`: one error
/// reads `<code, lower case, _ as space>: <message>` (just the code when the message is empty or
/// the code's default and there is no detail); several read `errors:\n<e1>\n<e2>\n`.
pub(super) fn render_error_body(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        errors: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        detail: serde_json::Value,
    }
    let parsed: Body = serde_json::from_slice(body).ok()?;
    let rendered: Vec<String> = parsed
        .errors
        .iter()
        .map(|e| {
            let code = e.code.to_ascii_lowercase().replace('_', " ");
            let code = if code.is_empty() {
                "unknown".to_string()
            } else {
                code
            };
            let default = default_error_message(&e.code);
            if e.detail.is_null() && (e.message.is_empty() || Some(e.message.as_str()) == default) {
                code
            } else {
                format!("{code}: {}", e.message)
            }
        })
        .collect();
    match rendered.len() {
        0 => None,
        1 => rendered.into_iter().next(),
        _ => {
            let mut s = String::from("errors:\n");
            for r in rendered {
                s.push_str(&r);
                s.push('\n');
            }
            Some(s)
        }
    }
}

pub(super) fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(r) => format!("{} {r}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// Go's `url.Error` operation: `Get`, `Head`, `Post`, `Put`.
pub(super) fn go_method(method: &str) -> String {
    let mut chars = method.chars();
    match chars.next() {
        Some(first) => {
            first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
        }
        None => String::new(),
    }
}

pub(super) fn transport_error(method: &str, url: &str, e: &reqwest::Error) -> RegistryError {
    RegistryError::Transport {
        method: go_method(method),
        url: url.to_string(),
        message: describe(url, e),
    }
}

/// Go-like text for a failed request: `dial tcp <host:port>: connect: connection refused`,
/// `tls: …`, or the error chain.
fn describe(url: &str, e: &reqwest::Error) -> String {
    let addr = Url::parse(url)
        .ok()
        .map(|u| {
            let port = u.port_or_known_default().unwrap_or(0);
            format!("{}:{port}", u.host_str().unwrap_or(""))
        })
        .unwrap_or_default();
    let Cause {
        os_error,
        tls: tls_error,
        ..
    } = Cause::of(e);
    if let Some(t) = tls_error {
        return format!("tls: {t}");
    }
    if e.is_connect() {
        if let Some(code) = os_error {
            return format!("dial tcp {addr}: connect: {}", errno_text(code));
        }
        return format!("dial tcp {addr}: {}", error_chain(e));
    }
    error_chain(e)
}

pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    parts.join(": ")
}

pub(super) fn io_error(what: &str, path: &Path, e: &std::io::Error) -> RegistryError {
    let why = match e.raw_os_error() {
        Some(code) => errno_text(code),
        None => e.to_string(),
    };
    RegistryError::Io(format!("{what} {}: {why}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distribution::registry::MEDIA_TYPE_DOCKER_IMAGE_CONFIG;

    #[test]
    fn error_bodies_render_like_docker() {
        let one = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":null}]}"#;
        assert_eq!(render_error_body(one).unwrap(), "manifest unknown");
        let detail = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(
            render_error_body(detail).unwrap(),
            "manifest unknown: manifest unknown"
        );
        let two = br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied","detail":[1]},{"code":"UNAUTHORIZED","message":"authentication required","detail":[2]}]}"#;
        assert_eq!(
            render_error_body(two).unwrap(),
            "errors:\ndenied: requested access to the resource is denied\nunauthorized: authentication required\n"
        );
        let custom = br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#;
        assert_eq!(
            render_error_body(custom).unwrap(),
            "toomanyrequests: You have reached your pull rate limit."
        );
        assert_eq!(render_error_body(b"<html>"), None);
        assert_eq!(render_error_body(br#"{"errors":[]}"#), None);
    }

    #[test]
    fn error_texts() {
        let e = RegistryError::WrongMediaType {
            media_type: MEDIA_TYPE_DOCKER_IMAGE_CONFIG.into(),
            class: "image".into(),
        };
        assert_eq!(
            e.to_string(),
            r#"Encountered remote "application/vnd.docker.container.image.v1+json"(image) when fetching"#
        );
        let e = RegistryError::Transport {
            method: go_method("GET"),
            url: "http://127.0.0.1:1/v2/".into(),
            message: "dial tcp 127.0.0.1:1: connect: connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            r#"Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused"#
        );
        let e = RegistryError::NotFound {
            reference: "docker.io/foo/bar:latest".into(),
            message: Some("manifest unknown".into()),
        };
        assert_eq!(e.to_string(), "docker.io/foo/bar:latest: not found");
        assert!(e.is_not_found());
    }

    #[test]
    fn classes_are_kept_and_every_one_answers_500_like_dockerd() {
        use RegistryErrorClass as Class;
        let registry = |status| RegistryError::Registry {
            status,
            message: "x".into(),
        };
        let cases = [
            (
                RegistryError::NotFound {
                    reference: "docker.io/a/b:c".into(),
                    message: None,
                },
                Class::NotFound,
            ),
            (RegistryError::Denied("denied".into()), Class::Unauthorized),
            (RegistryError::Unauthorized("u".into()), Class::Unauthorized),
            (
                RegistryError::NoMatchingPlatform("linux/amd64".into()),
                Class::Invalid,
            ),
            (registry(400), Class::Invalid),
            (
                RegistryError::Stalled {
                    method: "Get".into(),
                    url: "http://r/".into(),
                    after: Duration::from_secs(1),
                },
                Class::Unavailable,
            ),
            (registry(503), Class::Unavailable),
            (registry(500), Class::System),
            (RegistryError::Io("disk".into()), Class::System),
        ];
        for (e, class) in cases {
            assert_eq!(e.class(), class, "{e:?}");
            let text = e.to_string();
            let daemon = Error::from(e);
            assert_eq!((daemon.status(), daemon.message()), (500, text.as_str()));
        }
    }
}
