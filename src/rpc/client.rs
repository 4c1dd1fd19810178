//! The daemon side of the plugin RPC protocol (moby `pkg/plugins/client.go`,
//! `pkg/plugins/transport/http.go`): every call is `POST /<Interface>.<Method>` over HTTP/1.1 with
//! `Accept: application/vnd.docker.plugins.v1.2+json` and, like moby, **no** `Content-Type`
//! header; the body is compact JSON plus `\n` (Go's `json.Encoder`), or empty when the caller has
//! no argument (`Value::Null`, e.g. `Plugin.Activate`).
//!
//! * 200 → the body is decoded as `T` (an empty or non-JSON body is [`RpcError::Decode`]).
//! * Any other status → [`RpcError::Status`], whose message is the body's `Err` field when it is a
//!   non-empty string (keys matched case-insensitively, as Go's `encoding/json` does), else the
//!   raw body, trimmed; it renders as moby's `statusError`: `<method>: <message>`.
//! * A connection that cannot be made → [`RpcError::Transport`] with Go's wording
//!   (`dial unix /run/docker/plugins/x.sock: connect: no such file or directory`).
//!   With [`Retry::Backoff`] such failures — and only those: nothing was sent, so retrying cannot
//!   repeat a side effect — are retried with exponential backoff starting at 50 ms (moby starts at
//!   1 s; users wait on it) until the retry budget or the call's deadline is spent. Each retry is
//!   logged at info as moby words it: `Unable to connect to plugin: <addr><path>: <err>, retrying
//!   in <d>`.
//! * **One deadline per call**, decided here and nowhere else: the client's `timeout` (for a
//!   managed plugin its `enable --timeout`, else the daemon's `--plugin-call-timeout`; for a
//!   legacy plugin the daemon's), cut short by the deadline of the operation the call belongs to
//!   when the caller runs it [`within`] one (a `volume create` is one operation: its `Get` and
//!   `Create` share one deadline; a `volume ls` gives every driver the list deadline). It bounds
//!   the whole call, retries and reading the answer included → [`RpcError::Timeout`].
//! * Connections are kept alive between calls, as Go's transport keeps them. A request that
//!   fails while it is being written (the plugin closed that connection: it exited or
//!   restarted) reached nothing and is sent once more on a new connection, as Go re-sends a
//!   request of which nothing was written; that attempt's outcome is the call's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::goerr::{errno_text, go_duration, Cause};
use crate::metrics::CallOutcome;

/// The `Accept` header of every plugin call (moby `transport.VersionMimetype`).
pub const PLUGIN_MIME_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// The `Host` of calls over unix sockets, as current moby sends it.
pub const UNIX_HOST: &str = "plugin.moby.localhost";

/// First pause between connection attempts; doubled after each failed attempt.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Longest pause between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// Idle keep-alive connections kept per plugin (Go's `MaxIdleConnsPerHost` is 2; volume lists
/// from several clients at once each need one).
const IDLE_CONNECTIONS: usize = 8;

/// How long an idle connection to a plugin is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer a plugin call accepts unless its method says otherwise: far above any
/// real answer of a single object (a volume, an endpoint, an authorization decision).
pub const DEFAULT_REPLY_LIMIT: usize = 4 << 20;

/// How much of an error answer (non-200) is read: enough for any message worth showing.
const ERROR_BODY_LIMIT: usize = 64 << 10;

/// How much of a message from a plugin berth passes on (to a client, into a warning).
const MESSAGE_LIMIT: usize = 4096;

/// Dial timeout of one connection attempt (go-connections `sockets.defaultTimeout`).
const DIAL_TIMEOUT: Duration = Duration::from_secs(32);

/// The deadline of an operation made of several plugin calls.
#[derive(Debug, Clone, Copy)]
struct OperationDeadline {
    at: Instant,
    /// What the deadline was set from, for the error text.
    budget: Duration,
}

tokio::task_local! {
    static OPERATION: OperationDeadline;
}

/// Runs `operation` with a deadline `budget` from now that every plugin call inside it honours
/// (on top of each client's own). Nested operations keep the earlier deadline.
pub async fn within<F: std::future::Future>(budget: Duration, operation: F) -> F::Output {
    let mine = OperationDeadline {
        at: Instant::now() + budget,
        budget,
    };
    let deadline = match OPERATION.try_with(|outer| *outer) {
        Ok(outer) if outer.at <= mine.at => outer,
        _ => mine,
    };
    OPERATION.scope(deadline, operation).await
}

/// Where a plugin answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Unix(PathBuf),
    /// `http://host:port` or `https://…` (from a `.spec`/`.json` file). `tcp://` is accepted as
    /// `http://`. As in moby, only scheme, host and port are used: calls go to `/<method>`.
    Tcp {
        url: String,
        tls: Option<TlsConfig>,
    },
}

impl Transport {
    /// The address as moby writes it: `unix:///path` or the URL.
    pub fn address(&self) -> String {
        match self {
            Transport::Unix(p) => format!("unix://{}", p.display()),
            Transport::Tcp { url, .. } => url.clone(),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.address())
    }
}

/// TLS settings of a `.json` legacy plugin spec (`TLSConfig`).
///
/// Used only for `https://` addresses. `insecure_skip_verify` disables certificate and host name
/// checks; otherwise the server is verified against the system roots plus `ca_file` (as
/// go-connections' `tlsconfig.Client` does). `cert_file` + `key_file` are the client identity
/// (PEM; PKCS#8, PKCS#1 or SEC1 keys).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// How a call behaves when the plugin cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// One attempt.
    Never,
    /// moby's policy for plugins that exist but are not answering yet: retry connection
    /// failures with exponential backoff until `total` has passed.
    Backoff { total: Duration },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// Could not connect / send (text as Go's net errors read where practical).
    #[error("{0}")]
    Transport(String),
    /// The per-call deadline passed.
    #[error("{method}: deadline of {timeout:?} exceeded")]
    Timeout { method: String, timeout: Duration },
    /// Non-200 answer: moby renders `<method>: <Err or body>`.
    #[error("{method}: {message}")]
    Status {
        method: String,
        code: u16,
        message: String,
    },
    /// A 200 answer that is not the expected JSON.
    #[error("{0}")]
    Decode(String),
    /// The answer is larger than berth accepts for the method.
    #[error("{method}: the answer of the plugin at {plugin} is larger than the {} limit for this call", crate::progress::human_size(*limit as u64))]
    TooLarge {
        method: String,
        plugin: String,
        limit: usize,
    },
}

impl RpcError {
    /// The plugin could not be reached or did not answer in time (as opposed to an answer that
    /// reports an error). moby's volume service words these differently ("error while checking
    /// if volume … exists in driver …").
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RpcError::Transport(_) | RpcError::Timeout { .. })
    }

    /// HTTP status of a non-200 answer.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            RpcError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A cheap-to-clone handle on one plugin address (connections are pooled and shared).
#[derive(Debug, Clone)]
pub struct PluginClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    transport: Transport,
    /// Keep connections alive between calls, one pool per thread: a connection is driven by
    /// the runtime of the thread that opened it, and sharing one between the API's worker
    /// threads cost cross-thread wake-ups on every call.
    pooled: thread_local::ThreadLocal<reqwest::Client>,
    /// Always connects anew: the second attempt after a pooled connection turned out closed
    /// (other pooled connections may be just as stale).
    fresh: reqwest::Client,
    https: bool,
    /// `scheme://host[:port]` the method path is appended to.
    base: String,
    /// `<base>/<method>` parsed once per method: parsing (host name rules included) showed in
    /// profiles of authorization chains, which call the same two methods on every request.
    urls: Mutex<HashMap<String, reqwest::Url>>,
    /// What the retry log names: the socket path or `host:port`.
    log_addr: String,
    timeout: Option<Duration>,
    /// The last call ended because no connection could be made.
    unreachable: AtomicBool,
    /// The socket to connect to; keeps the directory of a long socket path open (see
    /// `fsutil::SocketPath`).
    socket: Option<crate::fsutil::SocketPath>,
    /// The plugin's name in metrics (its address until [`PluginClient::named`]).
    name: String,
}

impl Inner {
    /// This thread's pooled client (the fresh one if it cannot be built).
    fn pooled(&self) -> &reqwest::Client {
        self.pooled
            .get_or_try(|| build_client(&self.transport, self.socket.as_ref(), self.https, true))
            .unwrap_or(&self.fresh)
    }
}

/// Keep-alive (`pooled`), as moby's Go transport does: a fresh connection costs the plugin an
/// accept (and many plugins a thread or goroutine) on every call. A plugin that went away
/// closes its end; the pool drops such connections once it notices, and a request written into
/// one before that is sent again on a new connection (`wrote_into_closed_connection`). A
/// restarted managed plugin gets a new client, and pools, anyway: clients are kept per run.
fn build_client(
    transport: &Transport,
    socket: Option<&crate::fsutil::SocketPath>,
    https: bool,
    pooled: bool,
) -> Result<reqwest::Client, RpcError> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(DIAL_TIMEOUT)
        .pool_max_idle_per_host(if pooled { IDLE_CONNECTIONS } else { 0 })
        .pool_idle_timeout(IDLE_TIMEOUT);
    if let Some(socket) = socket {
        builder = builder.unix_socket(socket.path());
    }
    if https {
        let tls = match transport {
            Transport::Tcp { tls, .. } => tls.as_ref(),
            Transport::Unix(_) => None,
        };
        builder = configure_tls(builder, tls)?;
    } else {
        // No TLS, so no trust store: loading the system's roots costs ~50 ms of CPU per
        // client, paid again for every plugin run and every legacy activation.
        builder = builder.tls_certs_only(Vec::new());
    }
    builder
        .build()
        .map_err(|e| RpcError::Transport(format!("plugin client: {}", chain(&e))))
}

impl PluginClient {
    /// `timeout`: deadline of each call (None: no deadline).
    ///
    /// Fails only for an unusable address or TLS material (unreadable CA/cert/key files), with
    /// go-connections' wording (`Could not read CA certificate "<path>": …`).
    pub fn new(transport: Transport, timeout: Option<Duration>) -> Result<PluginClient, RpcError> {
        crate::tls::install_provider();
        let (socket, base, log_addr, scheme) = match &transport {
            Transport::Unix(path) => {
                let reachable = crate::fsutil::SocketPath::new(path).map_err(|e| {
                    RpcError::Transport(format!("dial unix {}: {e}", path.display()))
                })?;
                let base = format!("http://{UNIX_HOST}");
                (Some(reachable), base, path.display().to_string(), "http")
            }
            Transport::Tcp { url, .. } => {
                let (scheme, hostport) = split_url(url)?;
                (None, format!("{scheme}://{hostport}"), hostport, scheme)
            }
        };
        let https = scheme == "https";
        // Building it checks the TLS material.
        let fresh = build_client(&transport, socket.as_ref(), https, false)?;
        let name = transport.address();
        Ok(PluginClient {
            inner: Arc::new(Inner {
                transport,
                pooled: thread_local::ThreadLocal::new(),
                fresh,
                https,
                base,
                urls: Mutex::new(HashMap::new()),
                log_addr,
                timeout,
                unreachable: AtomicBool::new(false),
                socket,
                name,
            }),
        })
    }

    /// Names the plugin this client calls (for metrics). Call it on a new client.
    pub fn named(mut self, name: &str) -> PluginClient {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.name = name.to_string(),
            None => log::debug!("client of {name} is shared already; not renamed"),
        }
        self
    }

    /// Whether `other` is this client or a clone of it (the same activation of a plugin).
    pub fn same_plugin(&self, other: &PluginClient) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Where this client calls.
    pub fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// The client-wide deadline of each call.
    pub fn timeout(&self) -> Option<Duration> {
        self.inner.timeout
    }

    /// True when the most recent call could not connect (or timed out) at all; cleared by any
    /// answer. Discovery uses it to re-activate a cached legacy plugin that went away.
    pub fn is_unreachable(&self) -> bool {
        self.inner.unreachable.load(Ordering::Relaxed)
    }

    /// POST `/<method>` with `body` as JSON and
    /// `Accept: application/vnd.docker.plugins.v1.2+json`; decodes a 200 answer as `T`.
    /// A body that serializes to `null` (`Value::Null`, `()`, `None`) is sent empty (moby's "no
    /// argument"). Any `Serialize` body works; a struct keeps its field order on the wire, as
    /// moby's Go structs do (a `Value` object's key order depends on serde_json features).
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        body: &(impl serde::Serialize + ?Sized),
        retry: Retry,
    ) -> Result<T, RpcError> {
        self.call_bounded(method, body, retry, DEFAULT_REPLY_LIMIT)
            .await
    }

    /// [`call`](Self::call) for a method whose answers may be larger than
    /// [`DEFAULT_REPLY_LIMIT`] (lists): answers above `reply_limit` bytes are refused.
    pub async fn call_bounded<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        body: &(impl serde::Serialize + ?Sized),
        retry: Retry,
        reply_limit: usize,
    ) -> Result<T, RpcError> {
        let bytes = self.call_raw(method, body, retry, reply_limit).await?;
        decode(method, &bytes)
    }

    /// The call's one deadline: the client's own, or the enclosing operation's when that is
    /// earlier (see the module doc). `None`: no deadline at all.
    fn deadline(&self, start: Instant) -> Option<(Instant, Duration)> {
        let own = self.inner.timeout.map(|t| (start + t, t));
        match (own, OPERATION.try_with(|o| *o).ok()) {
            (Some(own), Some(op)) if op.at < own.0 => Some((op.at, op.budget)),
            (None, Some(op)) => Some((op.at, op.budget)),
            (own, _) => own,
        }
    }

    /// The 200 answer's body, undecoded (for methods whose answer is not JSON), at most
    /// `reply_limit` bytes.
    pub async fn call_raw(
        &self,
        method: &str,
        body: &(impl serde::Serialize + ?Sized),
        retry: Retry,
        reply_limit: usize,
    ) -> Result<bytes::Bytes, RpcError> {
        let method = method.trim_start_matches('/');
        let started = Instant::now();
        let result = match request_payload(method, body) {
            Ok(payload) => {
                self.call_with_retries(method, payload, retry, reply_limit)
                    .await
            }
            Err(e) => Err(e),
        };
        if crate::metrics::enabled() {
            let outcome = match &result {
                Ok(_) => CallOutcome::Ok,
                Err(RpcError::Timeout { .. }) => CallOutcome::Timeout,
                Err(RpcError::Transport(_)) => CallOutcome::Unreachable,
                Err(RpcError::Status { .. } | RpcError::Decode(_) | RpcError::TooLarge { .. }) => {
                    CallOutcome::Error
                }
            };
            crate::metrics::plugin_call(&self.inner.name, method, outcome, started.elapsed());
        }
        result
    }

    /// One call, retries included: the call's deadline, connection attempts, the answer to the
    /// encoded `payload`.
    async fn call_with_retries(
        &self,
        method: &str,
        payload: Vec<u8>,
        retry: Retry,
        reply_limit: usize,
    ) -> Result<bytes::Bytes, RpcError> {
        let start = Instant::now();
        let (deadline, timeout) = match self.deadline(start) {
            Some((at, budget)) => (Some(at), Some(budget)),
            None => (None, None),
        };
        let retry_until = match retry {
            Retry::Never => start,
            Retry::Backoff { total } => start + total,
        };
        let url = self.url(method)?;
        let mut pause = FIRST_BACKOFF;
        loop {
            let attempt = async {
                match self
                    .attempt(url.clone(), method, payload.clone(), false, reply_limit)
                    .await
                {
                    Attempt::Stale => {
                        self.attempt(url.clone(), method, payload.clone(), true, reply_limit)
                            .await
                    }
                    outcome => outcome,
                }
            };
            let outcome = match deadline {
                Some(d) => match tokio::time::timeout_at(d, attempt).await {
                    Ok(o) => o,
                    Err(_) => {
                        self.inner.unreachable.store(true, Ordering::Relaxed);
                        return Err(RpcError::Timeout {
                            method: method.to_string(),
                            timeout: timeout.unwrap_or_default(),
                        });
                    }
                },
                None => attempt.await,
            };
            match outcome {
                Attempt::Stale => {
                    // Only a second attempt on a new connection gets here.
                    self.inner.unreachable.store(true, Ordering::Relaxed);
                    return Err(RpcError::Transport(format!(
                        "{method}: the plugin closed the connection"
                    )));
                }
                Attempt::Answered(result) => {
                    self.inner.unreachable.store(false, Ordering::Relaxed);
                    return result;
                }
                Attempt::Failed { text, retryable } => {
                    let now = Instant::now();
                    let limit = match deadline {
                        Some(d) => retry_until.min(d),
                        None => retry_until,
                    };
                    if !retryable || now >= limit {
                        self.inner.unreachable.store(true, Ordering::Relaxed);
                        return Err(RpcError::Transport(text));
                    }
                    // The last pause is shortened so that one attempt lands at the limit.
                    let sleep = pause.min(limit - now);
                    log::info!(
                        "Unable to connect to plugin: {}/{}: {}, retrying in {}",
                        self.inner.log_addr,
                        method,
                        text,
                        go_duration(sleep)
                    );
                    tokio::time::sleep(sleep).await;
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        // No time left for another attempt: report why, not the deadline.
                        self.inner.unreachable.store(true, Ordering::Relaxed);
                        return Err(RpcError::Transport(text));
                    }
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// The URL of `method`.
    fn url(&self, method: &str) -> Result<reqwest::Url, RpcError> {
        let mut urls = self.inner.urls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(url) = urls.get(method) {
            return Ok(url.clone());
        }
        let url = reqwest::Url::parse(&format!("{}/{}", self.inner.base, method))
            .map_err(|e| RpcError::Transport(format!("{method}: {e}")))?;
        urls.insert(method.to_string(), url.clone());
        Ok(url)
    }

    async fn attempt(
        &self,
        url: reqwest::Url,
        method: &str,
        payload: Vec<u8>,
        fresh: bool,
        reply_limit: usize,
    ) -> Attempt {
        let resp = match self.send(url, method, payload, &[], fresh).await {
            Ok(r) => r,
            Err(failed) => return failed,
        };
        let status = resp.status().as_u16();
        if status == 200 {
            return Attempt::Answered(self.read_bounded(resp, method, reply_limit).await);
        }
        // An error answer is read only as far as its message is shown.
        let message = match self.read_bounded(resp, method, ERROR_BODY_LIMIT).await {
            Ok(b) => status_message(&b),
            Err(RpcError::TooLarge { .. }) => "(an error answer too large to show)".to_string(),
            Err(e) => e.to_string(),
        };
        Attempt::Answered(Err(RpcError::Status {
            method: method.to_string(),
            code: status,
            message,
        }))
    }

    /// Sends one request: `Accept` as moby sends it unless `headers` name it (an empty value
    /// leaves a header out), then `headers`.
    async fn send(
        &self,
        url: reqwest::Url,
        method: &str,
        payload: Vec<u8>,
        headers: &[(&str, &str)],
        fresh: bool,
    ) -> Result<reqwest::Response, Attempt> {
        let http = if fresh {
            &self.inner.fresh
        } else {
            self.inner.pooled()
        };
        let mut request = http.post(url);
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("accept"))
        {
            request = request.header(reqwest::header::ACCEPT, PLUGIN_MIME_TYPE);
        }
        for (name, value) in headers.iter().filter(|(_, v)| !v.is_empty()) {
            request = request.header(*name, *value);
        }
        if payload.is_empty() {
            // Go writes `Content-Length: 0` on a POST without body; hyper would send none.
            request = request.header(reqwest::header::CONTENT_LENGTH, "0");
        }
        match request.body(payload).send().await {
            Ok(r) => Ok(r),
            Err(e) if !fresh && self.wrote_into_closed_connection(&e) => Err(Attempt::Stale),
            Err(e) => {
                let (text, retryable) = self.describe(&e, method);
                Err(Attempt::Failed { text, retryable })
            }
        }
    }

    /// One request shaped by the caller (raw `body`, extra `headers`, see [`Self::send`]),
    /// answered with whatever status, content type and body (at most `reply_limit` bytes) came
    /// back: for callers that judge answers themselves (`berth conformance`). One attempt, no
    /// retry, within the call's one deadline.
    pub async fn exchange(
        &self,
        method: &str,
        body: &[u8],
        headers: &[(&str, &str)],
        reply_limit: usize,
    ) -> Result<RawReply, RpcError> {
        let deadline = self.deadline(Instant::now());
        let (method, response) = self.open(method, body, headers, deadline).await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let read = self.read_bounded(response, &method, reply_limit);
        let body = match deadline {
            Some((at, timeout)) => {
                tokio::time::timeout_at(at, read)
                    .await
                    .map_err(|_| RpcError::Timeout {
                        method: method.clone(),
                        timeout,
                    })??
            }
            None => read.await?,
        };
        Ok(RawReply {
            status,
            content_type,
            body,
        })
    }

    /// `method` with a JSON `body` (as [`call`](Self::call) sends it), whose 200 answer is read
    /// as it streams (`LogDriver.ReadLogs`). The call's deadline bounds the wait for the answer's
    /// head only: a followed stream stays open as long as the plugin keeps it.
    pub async fn stream(
        &self,
        method: &str,
        body: &(impl serde::Serialize + ?Sized),
    ) -> Result<ReplyStream, RpcError> {
        let payload = request_payload(method, body)?;
        let deadline = self.deadline(Instant::now());
        let (method, response) = self.open(method, &payload, &[], deadline).await?;
        let code = response.status().as_u16();
        if code != 200 {
            let message = match self.read_bounded(response, &method, ERROR_BODY_LIMIT).await {
                Ok(b) => status_message(&b),
                Err(e) => e.to_string(),
            };
            return Err(RpcError::Status {
                method,
                code,
                message,
            });
        }
        Ok(ReplyStream { method, response })
    }

    /// Sends one request within `deadline` (a kept-alive connection the plugin had closed is
    /// replaced once) and returns the answer's head.
    async fn open(
        &self,
        method: &str,
        body: &[u8],
        headers: &[(&str, &str)],
        deadline: Option<(Instant, Duration)>,
    ) -> Result<(String, reqwest::Response), RpcError> {
        let method = method.trim_start_matches('/').to_string();
        // Not through the cache of `url`: callers of raw calls may name any method.
        let url = reqwest::Url::parse(&format!("{}/{}", self.inner.base, method))
            .map_err(|e| RpcError::Transport(format!("{method}: {e}")))?;
        let attempt = async {
            match self
                .send(url.clone(), &method, body.to_vec(), headers, false)
                .await
            {
                Err(Attempt::Stale) => {
                    self.send(url.clone(), &method, body.to_vec(), headers, true)
                        .await
                }
                outcome => outcome,
            }
        };
        let outcome = match deadline {
            Some((at, timeout)) => match tokio::time::timeout_at(at, attempt).await {
                Ok(o) => o,
                Err(_) => return Err(RpcError::Timeout { method, timeout }),
            },
            None => attempt.await,
        };
        match outcome {
            Ok(response) => {
                self.inner.unreachable.store(false, Ordering::Relaxed);
                Ok((method, response))
            }
            Err(Attempt::Failed { text, .. }) => {
                self.inner.unreachable.store(true, Ordering::Relaxed);
                Err(RpcError::Transport(text))
            }
            Err(_) => Err(RpcError::Transport(format!(
                "{method}: the plugin closed the connection"
            ))),
        }
    }

    /// The answer's body, refused as soon as it is known to exceed `limit` bytes (by its
    /// `Content-Length`, or while it streams in), so a hostile or broken plugin costs at most
    /// `limit` bytes of memory. The connection of a refused answer is not reused.
    async fn read_bounded(
        &self,
        mut resp: reqwest::Response,
        method: &str,
        limit: usize,
    ) -> Result<bytes::Bytes, RpcError> {
        let too_large = || RpcError::TooLarge {
            method: method.to_string(),
            plugin: self.inner.log_addr.clone(),
            limit,
        };
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body = bytes::BytesMut::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body.freeze()),
                Err(e) => {
                    return Err(RpcError::Transport(format!(
                        "{method}: reading the answer of the plugin at {}: {}",
                        self.inner.log_addr,
                        chain(&e)
                    )))
                }
            }
        }
    }

    /// The request could not be written because the plugin had closed the connection, so it
    /// never saw the request: EPIPE, or on a unix socket a reset (the peer closed with our
    /// request unread; over TCP a reset may come after the server read it). Only kept-alive
    /// connections fail this way: a new one fails to connect instead.
    fn wrote_into_closed_connection(&self, e: &reqwest::Error) -> bool {
        if e.is_connect() || e.is_timeout() {
            return false;
        }
        let unix = matches!(self.inner.transport, Transport::Unix(_));
        let cause = Cause::of(e);
        cause.broken_pipe || (unix && cause.reset)
    }

    /// Go-like text for a failed request, and whether it failed before anything was sent
    /// (connect errors other than TLS handshakes), which alone makes it safe to retry.
    fn describe(&self, e: &reqwest::Error, method: &str) -> (String, bool) {
        let cause = Cause::of(e);
        let os_error = cause.os_error_or_timeout();
        let tls_error = cause.tls;
        let (net, addr) = match &self.inner.transport {
            Transport::Unix(p) => ("unix", p.display().to_string()),
            Transport::Tcp { .. } => ("tcp", self.inner.log_addr.clone()),
        };
        if let Some(t) = tls_error {
            return (format!("tls: {t} (connecting to {addr})"), false);
        }
        if e.is_connect() || e.is_timeout() {
            if let Some(code) = os_error {
                let text = if code == nix::errno::Errno::ETIMEDOUT as i32 && e.is_timeout() {
                    "i/o timeout".to_string()
                } else {
                    errno_text(code)
                };
                return (format!("dial {net} {addr}: connect: {text}"), true);
            }
            if e.is_timeout() {
                return (format!("dial {net} {addr}: i/o timeout"), true);
            }
            return (format!("dial {net} {addr}: {}", chain(e)), false);
        }
        // Connected, but what came back is not an HTTP answer (or nothing came back).
        (
            format!(
                "{method}: no valid answer from the plugin at {addr}: {}",
                chain(e)
            ),
            false,
        )
    }
}

/// A request body as moby sends it: compact JSON and a newline (Go's `json.Encoder`), or nothing
/// for a body that serializes to `null` (moby's "no argument").
fn request_payload(
    method: &str,
    body: &(impl serde::Serialize + ?Sized),
) -> Result<Vec<u8>, RpcError> {
    let mut payload = serde_json::to_vec(body)
        .map_err(|e| RpcError::Decode(format!("{method}: encoding request: {e}")))?;
    if payload == b"null" {
        payload.clear();
    } else {
        payload.push(b'\n');
    }
    Ok(payload)
}

/// A plugin's answer as it came ([`PluginClient::exchange`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: bytes::Bytes,
}

/// A 200 answer read as it streams ([`PluginClient::stream`]).
#[derive(Debug)]
pub struct ReplyStream {
    method: String,
    response: reqwest::Response,
}

impl ReplyStream {
    /// The next piece of the answer; `None` once the plugin ended it.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, RpcError> {
        self.response.chunk().await.map_err(|e| {
            RpcError::Transport(format!("{}: reading answer: {}", self.method, chain(&e)))
        })
    }
}

enum Attempt {
    /// The plugin answered (or the answer could not be read after the request went out).
    Answered(Result<bytes::Bytes, RpcError>),
    /// The connection was closed by the plugin before the request was written.
    Stale,
    /// No answer; `retryable` when the request never reached the plugin.
    Failed { text: String, retryable: bool },
}

/// Decodes a 200 body; moby's `json.Decoder` reads the first JSON value, so trailing whitespace
/// is fine and an empty body is `EOF`.
fn decode<T: serde::de::DeserializeOwned>(method: &str, body: &[u8]) -> Result<T, RpcError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RpcError::Decode(format!(
            "{method}: error reading plugin resp: EOF (empty answer; plugins must send at least {{}})"
        )));
    }
    serde_json::from_slice(body).map_err(|e| {
        RpcError::Decode(format!(
            "{method}: error reading plugin resp: {e} (answer: {})",
            snippet(body)
        ))
    })
}

/// The message of a non-200 answer: a non-empty string `Err` field (any key case), else the raw
/// body trimmed.
pub(crate) fn status_message(body: &[u8]) -> String {
    shorten(&full_status_message(body))
}

/// A message from a plugin as berth passes it on: at most [`MESSAGE_LIMIT`] bytes, cut at a
/// character boundary, saying how long it was.
pub fn shorten(message: &str) -> String {
    if message.len() <= MESSAGE_LIMIT {
        return message.to_string();
    }
    let mut end = MESSAGE_LIMIT;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… (message of {} bytes shortened)",
        &message[..end],
        message.len()
    )
}

fn full_status_message(body: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) {
        let err = map
            .get("Err")
            .or_else(|| {
                map.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("Err"))
                    .map(|(_, v)| v)
            })
            .and_then(serde_json::Value::as_str);
        if let Some(e) = err.filter(|e| !e.is_empty()) {
            return e.to_string();
        }
    }
    String::from_utf8_lossy(body).trim().to_string()
}

fn snippet(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]).into_owned();
    let text = text.trim_end();
    if body.len() > MAX {
        format!("{text:?}…")
    } else {
        format!("{text:?}")
    }
}

/// The error and its causes joined as Go chains wrapped errors (`a: b: c`), skipping reqwest's
/// own "error sending request for url (…)" line and repeated texts.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        let text = c.to_string();
        let skip = text.starts_with("error sending request")
            || text.starts_with("client error (")
            || parts.iter().any(|p| p == &text);
        if !skip && !text.is_empty() {
            parts.push(text);
        }
        cur = c.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// `(scheme, host:port)` of a plugin URL; `tcp` is plain `http` (moby's `httpScheme`).
fn split_url(url: &str) -> Result<(&'static str, String), RpcError> {
    let bad = |why: &str| RpcError::Transport(format!("invalid plugin address {url:?}: {why}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("Unknown protocol"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "https" => "https",
        "http" | "tcp" => "http",
        other => return Err(bad(&format!("unsupported scheme {other:?}"))),
    };
    let hostport = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if hostport.is_empty() {
        return Err(bad("no host"));
    }
    Ok((scheme, hostport.to_string()))
}

fn configure_tls(
    mut builder: reqwest::ClientBuilder,
    tls: Option<&TlsConfig>,
) -> Result<reqwest::ClientBuilder, RpcError> {
    let Some(tls) = tls else {
        return Ok(builder);
    };
    if let Some(ca) = &tls.ca_file {
        let pem = read(ca, "Could not read CA certificate")?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
            RpcError::Transport(format!(
                "failed to append certificates from PEM file: {:?}",
                ca.display().to_string()
            ))
        })?;
        if certs.is_empty() {
            return Err(RpcError::Transport(format!(
                "failed to append certificates from PEM file: {:?}",
                ca.display().to_string()
            )));
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let mut pem = read(cert, "Could not load X509 key pair")?;
            pem.push(b'\n');
            pem.extend(read(key, "Could not load X509 key pair")?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                RpcError::Transport(format!("Could not load X509 key pair: {}", chain(&e)))
            })?;
            builder = builder.identity(id);
        }
        (None, None) => {}
        _ => {
            return Err(RpcError::Transport(
                "Could not load X509 key pair: both CertFile and KeyFile are needed".into(),
            ))
        }
    }
    if tls.insecure_skip_verify {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    Ok(builder)
}

/// Reads a TLS file; errors read as Go's (`Could not read CA certificate "/x": open /x: no such
/// file or directory`).
fn read(path: &Path, what: &str) -> Result<Vec<u8>, RpcError> {
    std::fs::read(path).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(code) => errno_text(code),
            None => e.to_string(),
        };
        RpcError::Transport(format!(
            "{what} {:?}: open {}: {why}",
            path.display().to_string(),
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_message_prefers_err_field() {
        assert_eq!(status_message(br#"{"Err":"boom"}"#), "boom");
        assert_eq!(status_message(br#"{"err":"lower"}"#), "lower");
        assert_eq!(status_message(br#"{"Err":""}"#), r#"{"Err":""}"#);
        assert_eq!(
            status_message(b"404 page not found\n"),
            "404 page not found"
        );
        assert_eq!(status_message(br#"{"Err":3}"#), r#"{"Err":3}"#);
        assert_eq!(status_message(b""), "");
    }

    #[test]
    fn status_error_renders_like_moby() {
        let e = RpcError::Status {
            method: "VolumeDriver.Create".into(),
            code: 500,
            message: "bad opt".into(),
        };
        assert_eq!(e.to_string(), "VolumeDriver.Create: bad opt");
        assert_eq!(e.status_code(), Some(500));
        assert!(!e.is_unreachable());
        assert!(RpcError::Transport("x".into()).is_unreachable());
    }

    #[test]
    fn decode_errors_are_clear() {
        let e = decode::<serde_json::Value>("Plugin.Activate", b"").unwrap_err();
        assert!(e
            .to_string()
            .contains("Plugin.Activate: error reading plugin resp: EOF"));
        let e = decode::<serde_json::Value>("Plugin.Activate", b"hello").unwrap_err();
        assert!(matches!(e, RpcError::Decode(_)));
        assert!(e.to_string().contains("\"hello\""), "{e}");
        let v: serde_json::Value = decode("X.Y", b"{\"A\":1}\n").unwrap();
        assert_eq!(v["A"], 1);
    }

    #[test]
    fn urls_split_like_moby() {
        assert_eq!(
            split_url("tcp://127.0.0.1:8080").unwrap(),
            ("http", "127.0.0.1:8080".to_string())
        );
        assert_eq!(
            split_url("https://example.com/docker/plugin").unwrap(),
            ("https", "example.com".to_string())
        );
        assert!(split_url("127.0.0.1:80").is_err());
        assert!(split_url("ftp://x").is_err());
    }
}
