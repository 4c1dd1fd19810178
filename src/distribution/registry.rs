//! The registry client behind `docker plugin install/upgrade/push`
//! (and `GET /plugins/privileges`): Docker Registry HTTP API v2 as dockerd's plugin code uses it
//! (moby `plugin/fetch_linux.go`, `plugin/registry.go` on containerd's docker resolver).
//!
//! * **Endpoints.** `docker.io` is served by `registry-1.docker.io`; configured mirrors are tried
//!   first, for pulls only, and a mirror that fails or lacks the manifest hands over to the next
//!   endpoint. Every other registry is `https://<host[:port]>`; an *insecure* registry (listed in
//!   [`RegistryOptions::insecure_registries`] by `host[:port]` or CIDR, or resolving into
//!   `127.0.0.0/8`/`::1`, which are always insecure, as is `localhost`) is tried over HTTPS without
//!   certificate checks first and then over plain HTTP, like moby's `lookupV2Endpoints`. Falling
//!   back happens only when an endpoint cannot be reached (or answers `/v2/` with something that is
//!   not a registry), never after a registry answered an operation.
//! * **Auth.** `GET /v2/` is pinged when a session starts. A `Bearer` challenge is answered at the
//!   realm with the plugin scope `repository(plugin):<path>:pull` (`pull,push` for push sessions;
//!   the challenge's own `scope`, if any, is asked for too): `identitytoken` credentials use the
//!   OAuth2 refresh-token grant (form POST), username/password a GET with basic auth, no
//!   credentials an anonymous GET. A `Basic` challenge sends the credentials on every request. A
//!   `registrytoken` is sent as `Bearer` as is. A 401 in the middle of a session (expired token)
//!   re-authenticates once and repeats the request.
//! * **Integrity.** Manifests are read up to [`RegistryOptions::max_manifest_bytes`] (a larger
//!   `Content-Length` is refused before reading), their sha256 is always computed and checked
//!   against a requested digest, a `Docker-Content-Digest` header and the index entry they were
//!   chosen from. Every descriptor must carry a `sha256:<64 hex>` digest (they become file names in
//!   the blob store). Blobs are streamed, hashed and counted: a byte past the descriptor's size,
//!   an early end, a wrong digest or no data for [`RegistryOptions::stall_timeout`] fail the
//!   download, and a file being written is removed on every failure (and when the future is
//!   dropped).
//! * **Errors** ([`RegistryError`]) render as dockerd/containerd word them: a registry's JSON error
//!   body `{"errors":[{"code","message","detail"}]}` reads like docker's `errcode` package
//!   (`manifest unknown`, `unauthorized: authentication required`, `errors:\ndenied: …\n…`), an
//!   unknown tag as containerd's `<ref>: not found`, an image instead of a plugin as
//!   `Encountered remote "<mediatype>"(image) when fetching`.
//!
//! Only sha256 digests are supported. Uploads are monolithic (POST, then one streamed PUT).

use std::fs::File;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE,
    LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode, Url};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use crate::distribution::blobstore::{BlobStore, StagedBlob};
use crate::goerr::{errno_text, go_duration, Cause};
use crate::plugin::reference::{Reference, DEFAULT_DOMAIN};

/// Config media type of a plugin artifact.
pub const MEDIA_TYPE_PLUGIN_CONFIG: &str = "application/vnd.docker.plugin.v1+json";
/// Docker image manifest, schema 2 (what plugins are pushed as).
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 1 manifests (refused).
pub const MEDIA_TYPE_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Docker image config: a manifest with this config is an image, not a plugin.
pub const MEDIA_TYPE_DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// OCI image config.
pub const MEDIA_TYPE_OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Layer media types moby applies to a plugin's rootfs (others are skipped).
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MEDIA_TYPE_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MEDIA_TYPE_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The `Accept` values of a manifest request, one header line each (moby's fallback format, which
/// every registry version splits correctly).
const MANIFEST_ACCEPT: [&str; 4] = [
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
];

/// Docker Hub's registry host (containerd `docker.DefaultHost`).
const DOCKER_HUB_HOST: &str = "registry-1.docker.io";
/// Always insecure, whatever the options say (moby's default `InsecureRegistryCIDRs`).
const DEFAULT_INSECURE_CIDRS: [&str; 2] = ["127.0.0.0/8", "::1/128"];
/// `client_id` of refresh-token grants.
const CLIENT_ID: &str = "berth";
/// Error bodies are read up to this size; the rest is dropped.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// Token answers are read up to this size.
const MAX_TOKEN_BODY: u64 = 1024 * 1024;
/// Chunk size of uploads read from disk.
const UPLOAD_CHUNK: usize = 256 * 1024;
/// How often an upload's progress is reported and its stall deadline checked.
const UPLOAD_TICK: Duration = Duration::from_millis(100);

/// What the registry client may do.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `--insecure-registry` values: `host[:port]` (matched exactly against the reference's
    /// domain) or CIDRs (matched against the host's addresses). A scheme prefix is ignored.
    /// `127.0.0.0/8`, `::1` and `localhost` are always insecure. Insecure registries are tried
    /// over HTTPS without certificate verification, then over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// `--registry-mirror` URLs (`https://mirror.example` or `host[:port]`), used for
    /// `docker.io` pulls only, in order, before Docker Hub itself.
    pub mirrors: Vec<String>,
    /// Deadline of every request that is not a blob transfer (ping, token, manifest, config
    /// blob, HEAD, upload start): headers and body. Blob transfers wait this long for headers.
    pub request_timeout: Duration,
    /// A blob transfer that moves no byte for this long fails with [`RegistryError::Stalled`].
    pub stall_timeout: Duration,
    /// Largest manifest (or index) accepted.
    pub max_manifest_bytes: u64,
    /// Default bound for [`Session::fetch_blob_bytes`] callers fetching a plugin config.
    pub max_config_bytes: u64,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure_registries: Vec::new(),
            mirrors: Vec::new(),
            request_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            max_manifest_bytes: 4 << 20,
            max_config_bytes: 4 << 20,
        }
    }
}

/// Registry credentials from the `X-Registry-Auth` header (moby `registry.AuthConfig`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub username: String,
    pub password: String,
    /// base64 of `user:password`; used only when `username` and `password` are both empty.
    pub auth: String,
    pub email: String,
    pub server_address: String,
    /// OAuth2 refresh token (from `docker login` to a token server).
    pub identity_token: String,
    /// A bearer token sent to the registry as is.
    pub registry_token: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &set(&self.password))
            .field("auth", &set(&self.auth))
            .field("email", &self.email)
            .field("server_address", &self.server_address)
            .field("identity_token", &set(&self.identity_token))
            .field("registry_token", &set(&self.registry_token))
            .finish()
    }
}

impl AuthConfig {
    /// Decodes an `X-Registry-Auth` value: base64url (padding optional; the standard alphabet is
    /// accepted too) of a JSON object whose keys match case-insensitively, as Go's
    /// `encoding/json` does. Like moby's plugin routes, anything invalid (bad base64, not JSON,
    /// a non-string field) yields empty credentials, never an error. Only the first JSON value
    /// is read (Go's `json.Decoder`).
    pub fn from_header(value: &str) -> AuthConfig {
        let value = value.trim();
        if value.is_empty() {
            return AuthConfig::default();
        }
        let bytes = match decode_base64_lenient(value) {
            Some(b) => b,
            None => return AuthConfig::default(),
        };
        let mut stream = serde_json::Deserializer::from_slice(&bytes).into_iter::<JsonObject>();
        let object = match stream.next() {
            Some(Ok(JsonObject(entries))) => entries,
            _ => return AuthConfig::default(),
        };
        let mut out = AuthConfig::default();
        for (key, v) in object {
            let field = match key.to_ascii_lowercase().as_str() {
                "username" => &mut out.username,
                "password" => &mut out.password,
                "auth" => &mut out.auth,
                "email" => &mut out.email,
                "serveraddress" => &mut out.server_address,
                "identitytoken" => &mut out.identity_token,
                "registrytoken" => &mut out.registry_token,
                _ => continue,
            };
            match v {
                serde_json::Value::String(s) => *field = s,
                serde_json::Value::Null => {}
                _ => return AuthConfig::default(),
            }
        }
        out
    }

    /// True when no credential of any kind is set.
    pub fn is_anonymous(&self) -> bool {
        self.basic_credentials().is_none()
            && self.identity_token.is_empty()
            && self.registry_token.is_empty()
    }

    /// `username`/`password`, or the decoded `auth` field when both are empty.
    fn basic_credentials(&self) -> Option<(String, String)> {
        if !self.username.is_empty() || !self.password.is_empty() {
            return Some((self.username.clone(), self.password.clone()));
        }
        if self.auth.is_empty() {
            return None;
        }
        let decoded = decode_base64_lenient(&self.auth)?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, pass) = text.split_once(':')?;
        Some((user.to_string(), pass.trim_end_matches('\0').to_string()))
    }
}

/// A JSON object's members in document order, duplicates kept (Go assigns them in order, so the
/// last one wins); `null` reads as no members.
struct JsonObject(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = JsonObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_unit<E>(self) -> std::result::Result<JsonObject, E> {
                Ok(JsonObject(Vec::new()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<JsonObject, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    entries.push(entry);
                }
                Ok(JsonObject(entries))
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn decode_base64_lenient(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let s = s.trim();
    URL_SAFE
        .decode(s)
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .or_else(|_| STANDARD.decode(s))
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .ok()
}

/// A content descriptor (`mediaType`, `digest`, `size`), as in manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:<64 hex>` (validated for every descriptor this client returns).
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    /// A layer moby applies to a plugin rootfs (gzip or plain tar, Docker or OCI types).
    pub fn is_layer(&self) -> bool {
        matches!(
            self.media_type.as_str(),
            MEDIA_TYPE_DOCKER_LAYER_GZIP
                | MEDIA_TYPE_DOCKER_LAYER
                | MEDIA_TYPE_OCI_LAYER
                | MEDIA_TYPE_OCI_LAYER_GZIP
        )
    }

    /// The first 12 hex characters of the digest: the `id` of progress lines.
    pub fn short_id(&self) -> String {
        let hex = self
            .digest
            .split_once(':')
            .map_or(&*self.digest, |(_, h)| h);
        hex.chars().take(12).collect()
    }
}

/// A plugin manifest as fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `sha256:` of `raw` (computed, and verified where a digest was expected).
    pub digest: String,
    /// Docker schema 2 or OCI manifest media type.
    pub media_type: String,
    /// The bytes as served: store them as the manifest blob.
    pub raw: Vec<u8>,
    /// The plugin config (media type [`MEDIA_TYPE_PLUGIN_CONFIG`]).
    pub config: Descriptor,
    /// In manifest order.
    pub layers: Vec<Descriptor>,
    /// When the reference named a manifest list / index: its digest (the manifest above was
    /// chosen from it for linux/<this architecture>).
    pub index_digest: Option<String>,
}

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

impl RegistryError {
    /// Manifest, repository or blob unknown to the registry.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }

    /// Refused credentials or access (401/403).
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            RegistryError::Unauthorized(_) | RegistryError::Denied(_)
        )
    }

    /// The registry could not be reached or stopped sending.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            RegistryError::Transport { .. } | RegistryError::Stalled { .. }
        )
    }
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// A host matcher from `insecure_registries`.
#[derive(Debug, Clone)]
enum Insecure {
    Host(String),
    Net(IpAddr, u8),
}

/// One place a repository can be reached.
#[derive(Debug, Clone)]
struct Endpoint {
    /// `scheme://host[:port]`, no trailing slash.
    base: String,
    /// HTTPS without certificate verification (insecure registry).
    skip_verify: bool,
    mirror: bool,
}

#[derive(Debug)]
struct Shared {
    options: RegistryOptions,
    secure: reqwest::Client,
    insecure: reqwest::Client,
    insecure_list: Vec<Insecure>,
    /// Parsed mirrors: (`scheme://host[:port]`, `host[:port]`).
    mirrors: Vec<(String, String)>,
}

/// Builds registry sessions; cheap to clone, connections are pooled.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    shared: Arc<Shared>,
}

impl RegistryClient {
    /// Fails for a malformed insecure-registry entry or mirror URL, or when no HTTP client can
    /// be built.
    pub fn new(options: RegistryOptions) -> Result<RegistryClient> {
        crate::tls::install_provider();
        let mut insecure_list = Vec::new();
        for cidr in DEFAULT_INSECURE_CIDRS {
            let (ip, bits) = parse_cidr(cidr).expect("default CIDRs parse");
            insecure_list.push(Insecure::Net(ip, bits));
        }
        for entry in &options.insecure_registries {
            let e = strip_scheme(entry.trim()).trim_end_matches('/');
            if e.is_empty() {
                continue;
            }
            if e.contains('/') {
                let (ip, bits) = parse_cidr(e).ok_or_else(|| {
                    RegistryError::Protocol(format!("invalid insecure registry CIDR {entry:?}"))
                })?;
                insecure_list.push(Insecure::Net(ip, bits));
            } else {
                insecure_list.push(Insecure::Host(e.to_ascii_lowercase()));
            }
        }
        let mut mirrors = Vec::new();
        for m in &options.mirrors {
            let raw = m.trim().trim_end_matches('/');
            let with_scheme = if raw.contains("://") {
                raw.to_string()
            } else {
                format!("https://{raw}")
            };
            let url = Url::parse(&with_scheme)
                .map_err(|e| RegistryError::Protocol(format!("invalid mirror {m:?}: {e}")))?;
            if !matches!(url.scheme(), "http" | "https")
                || url.host_str().is_none()
                || url.path() != "/"
                || url.query().is_some()
                || url.fragment().is_some()
            {
                return Err(RegistryError::Protocol(format!(
                    "invalid mirror {m:?}: only a scheme, host and port are allowed"
                )));
            }
            let host = host_port(&url);
            mirrors.push((format!("{}://{}", url.scheme(), host), host));
        }
        let build = |skip_verify: bool| {
            let mut b = reqwest::Client::builder()
                .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(options.request_timeout);
            if skip_verify {
                b = b.tls_danger_accept_invalid_certs(true);
            }
            b.build().map_err(|e| {
                RegistryError::Protocol(format!("registry client: {}", error_chain(&e)))
            })
        };
        Ok(RegistryClient {
            shared: Arc::new(Shared {
                secure: build(false)?,
                insecure: build(true)?,
                options,
                insecure_list,
                mirrors,
            }),
        })
    }

    /// The options this client was built with.
    pub fn options(&self) -> &RegistryOptions {
        &self.shared.options
    }

    /// Opens a session on `reference`'s repository: picks the endpoint (see the module docs),
    /// pings `/v2/` and authenticates for `pull` (or `pull,push`). The tag/digest of `reference`
    /// is what [`Session::fetch_manifest`] fetches (`latest` when it has neither).
    pub async fn session(
        &self,
        reference: &Reference,
        auth: &AuthConfig,
        push: bool,
    ) -> Result<Session> {
        self.session_with_headers(reference, auth, push, &[]).await
    }

    /// [`session`](Self::session) that also forwards `X-Meta-*` request headers (moby forwards
    /// the API request's `X-Meta-*` headers to the registry); other names are ignored.
    pub async fn session_with_headers(
        &self,
        reference: &Reference,
        auth: &AuthConfig,
        push: bool,
        meta_headers: &[(String, String)],
    ) -> Result<Session> {
        let mut meta = HeaderMap::new();
        for (k, v) in meta_headers {
            if !k.to_ascii_lowercase().starts_with("x-meta-") {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                meta.append(name, value);
            }
        }
        let endpoints = self.endpoints(&reference.domain, push).await;
        let session = Session {
            shared: Arc::clone(&self.shared),
            reference: reference.clone(),
            push,
            auth: auth.clone(),
            meta,
            endpoints,
            state: Mutex::new(State::default()),
        };
        session.connect_from(0).await?;
        Ok(session)
    }

    async fn endpoints(&self, domain: &str, push: bool) -> Vec<Endpoint> {
        let mut out = Vec::new();
        if domain == DEFAULT_DOMAIN {
            if !push {
                for (base, host) in &self.shared.mirrors {
                    let insecure = self.is_insecure(host).await;
                    out.push(Endpoint {
                        base: base.clone(),
                        skip_verify: insecure,
                        mirror: true,
                    });
                }
            }
            out.push(Endpoint {
                base: format!("https://{DOCKER_HUB_HOST}"),
                skip_verify: false,
                mirror: false,
            });
            return out;
        }
        let insecure = self.is_insecure(domain).await;
        out.push(Endpoint {
            base: format!("https://{domain}"),
            skip_verify: insecure,
            mirror: false,
        });
        if insecure {
            out.push(Endpoint {
                base: format!("http://{domain}"),
                skip_verify: false,
                mirror: false,
            });
        }
        out
    }

    /// moby `isSecureIndex`, inverted: an exact `host[:port]` entry, `localhost`, or any address
    /// of the host inside an insecure CIDR.
    async fn is_insecure(&self, host_port: &str) -> bool {
        let key = host_port.to_ascii_lowercase();
        let list = &self.shared.insecure_list;
        if list
            .iter()
            .any(|e| matches!(e, Insecure::Host(h) if *h == key))
        {
            return true;
        }
        let host = split_host(&key);
        if host == "localhost" || host.ends_with(".localhost") {
            return true;
        }
        let in_nets = |ip: IpAddr| {
            list.iter()
                .any(|e| matches!(e, Insecure::Net(net, bits) if cidr_contains(*net, *bits, ip)))
        };
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return in_nets(ip);
        }
        if !list.iter().any(|e| matches!(e, Insecure::Net(..))) {
            return false;
        }
        let lookup = tokio::net::lookup_host((host.to_string(), 0u16));
        let found = match tokio::time::timeout(self.shared.options.request_timeout, lookup).await {
            Ok(Ok(addrs)) => addrs.map(|a| a.ip()).any(in_nets),
            _ => false,
        };
        found
    }
}

/// Authentication state of the endpoint in use.
#[derive(Debug, Default)]
struct State {
    /// Index into `endpoints`.
    index: usize,
    /// `Authorization` value sent with registry requests.
    authorization: Option<String>,
}

/// A repository on one registry, authenticated for pull or push.
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
    reference: Reference,
    push: bool,
    auth: AuthConfig,
    meta: HeaderMap,
    endpoints: Vec<Endpoint>,
    state: Mutex<State>,
}

/// The outcome of trying one endpoint.
enum Connect {
    Ok(Option<String>),
    /// The endpoint is unusable; the next may work.
    Unreachable(RegistryError),
    /// The registry answered with a failure.
    Failed(RegistryError),
}

impl Session {
    /// The reference this session was opened for.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// `scheme://host[:port]` of the endpoint in use.
    pub fn endpoint(&self) -> String {
        let index = self.state.lock().unwrap().index;
        self.endpoints[index].base.clone()
    }

    /// The repository path (`library/foo`, `vieux/sshfs`).
    pub fn repository(&self) -> &str {
        &self.reference.path
    }

    /// Fetches the manifest of the reference's digest (or tag, `latest` by default), resolving a
    /// manifest list / OCI index to its linux/<this architecture> entry. See [`Manifest`].
    pub async fn fetch_manifest(&self) -> Result<Manifest> {
        loop {
            let index = self.state.lock().unwrap().index;
            match self.fetch_manifest_here().await {
                Ok(m) => return Ok(m),
                Err(e) => {
                    let fallback = self.endpoints[index].mirror
                        && index + 1 < self.endpoints.len()
                        && (e.is_not_found()
                            || e.is_unauthorized()
                            || e.is_transport()
                            || matches!(e, RegistryError::Registry { .. }));
                    if !fallback {
                        return Err(e);
                    }
                    log::info!(
                        "registry mirror {} failed for {}: {e}; trying the next endpoint",
                        self.endpoints[index].base,
                        self.reference
                    );
                    self.connect_from(index + 1).await?;
                }
            }
        }
    }

    /// Downloads a blob into memory: refused before any request when `desc.size > max`,
    /// verified for size and digest. For plugin configs.
    pub async fn fetch_blob_bytes(&self, desc: &Descriptor, max: u64) -> Result<Vec<u8>> {
        check_digest(&desc.digest)?;
        if desc.size > max {
            return Err(RegistryError::TooLarge {
                what: format!("blob {} ({} bytes)", desc.digest, desc.size),
                limit: max,
            });
        }
        let deadline = Instant::now() + self.shared.options.request_timeout;
        let (mut resp, url) = self.get_blob(desc).await?;
        let mut out = Vec::with_capacity(desc.size as usize);
        let mut hasher = Sha256::new();
        self.stream_blob(&mut resp, &url, desc, Some(deadline), |chunk, _| {
            hasher.update(chunk);
            out.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        verify_digest(&desc.digest, hasher)?;
        Ok(out)
    }

    /// Streams a blob into a new file at `path` (created or truncated), verifying every byte
    /// against `desc` (size and sha256). `progress` gets the number of bytes written to the file
    /// so far after each write, so a reader may follow the file as it grows (the last call, with
    /// `desc.size`, comes before the digest is checked: only an `Ok` return says the bytes are
    /// the blob). On any failure — and if this future is dropped — the file is removed.
    ///
    /// Network chunks are gathered and written with one vectored write per [`WRITE_BATCH`]
    /// bytes; every [`WRITEBACK_STEP`] bytes the kernel is asked to start writing the file back
    /// (`sync_file_range`, not waited for), so that the fsync of [`BlobStore::commit`] finds
    /// little left to do. The file itself is not fsynced here.
    pub async fn fetch_blob_to_file(
        &self,
        desc: &Descriptor,
        path: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<()> {
        check_digest(&desc.digest)?;
        let mut partial = PartialFile::create(path)?;
        let (mut resp, url) = self.get_blob(desc).await?;
        let mut hasher = Sha256::new();
        let mut batch = WriteBatch::new(partial.file());
        self.stream_blob(&mut resp, &url, desc, None, |chunk, _| {
            hasher.update(chunk);
            if batch.push(chunk) {
                let written = batch.write().map_err(|e| io_error("writing", path, &e))?;
                progress(written);
            }
            Ok(())
        })
        .await?;
        if batch.pending() {
            let written = batch.write().map_err(|e| io_error("writing", path, &e))?;
            progress(written);
        }
        verify_digest(&desc.digest, hasher)?;
        partial.finish()
    }

    /// [`fetch_blob_to_file`](Self::fetch_blob_to_file) into the store's ingest area: the result
    /// is ready for [`BlobStore::commit`] (or `discard`).
    pub async fn fetch_blob_to_store(
        &self,
        store: &BlobStore,
        desc: &Descriptor,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<StagedBlob> {
        let path = store.ingest_path();
        self.fetch_blob_to_file(desc, &path, progress).await?;
        Ok(StagedBlob {
            path,
            digest: desc.digest.clone(),
            size: desc.size,
        })
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`: true on 200, false on 404.
    pub async fn blob_exists(&self, desc: &Descriptor) -> Result<bool> {
        check_digest(&desc.digest)?;
        let url = self.url(&format!("/blobs/{}", desc.digest));
        let resp = self
            .send(Method::HEAD, &url, HeaderMap::new(), None)
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.error_from(resp, "HEAD", &url, &desc.digest).await),
        }
    }

    /// Uploads the file at `path` as the blob `desc` (its size must match): `POST` an upload,
    /// then one streamed `PUT <Location>&digest=<digest>`. A `Location` may be relative or
    /// absolute; credentials are sent only when it is on the registry's own origin. `progress`
    /// gets the bytes handed to the connection so far, about every 100 ms.
    pub async fn push_blob_from_file(
        &self,
        desc: &Descriptor,
        path: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<()> {
        check_digest(&desc.digest)?;
        let file = File::open(path).map_err(|e| io_error("opening", path, &e))?;
        let len = file
            .metadata()
            .map_err(|e| io_error("reading", path, &e))?
            .len();
        if len != desc.size {
            return Err(RegistryError::Io(format!(
                "blob {} at {}: {len} bytes on disk, {} in its descriptor",
                desc.digest,
                path.display(),
                desc.size
            )));
        }

        let start_url = self.url("/blobs/uploads/");
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let resp = self
            .send(Method::POST, &start_url, headers, Some(Bytes::new()))
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .error_from(resp, "POST", &start_url, &self.reference.name())
                .await);
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                RegistryError::Protocol(format!(
                    "registry answered the upload request for {} without a Location",
                    desc.digest
                ))
            })?;
        drop(resp);
        let base = Url::parse(&start_url).map_err(|e| RegistryError::Protocol(e.to_string()))?;
        let mut put_url = base.join(&location).map_err(|e| {
            RegistryError::Protocol(format!("invalid upload Location {location:?}: {e}"))
        })?;
        if !matches!(put_url.scheme(), "http" | "https") {
            return Err(RegistryError::Protocol(format!(
                "invalid upload Location {location:?}"
            )));
        }
        put_url
            .query_pairs_mut()
            .append_pair("digest", &desc.digest);
        let same_origin = put_url.origin() == base.origin();

        let sent = Arc::new(AtomicU64::new(0));
        let local_error = Arc::new(Mutex::new(None::<RegistryError>));
        let body = upload_stream(
            file,
            desc.clone(),
            path.to_path_buf(),
            Arc::clone(&sent),
            Arc::clone(&local_error),
        );
        let (client, authorization) = self.client_and_auth();
        let mut request = client
            .put(put_url.as_str())
            .headers(self.meta.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, desc.size)
            .body(reqwest::Body::wrap_stream(body));
        if same_origin {
            if let Some(a) = authorization {
                request = request.header(AUTHORIZATION, a);
            }
        }
        let put_text = put_url.to_string();
        let options = &self.shared.options;
        let mut send = Box::pin(request.send());
        let mut reported = 0u64;
        let mut last_move = Instant::now();
        let outcome = loop {
            match tokio::time::timeout(UPLOAD_TICK, &mut send).await {
                Ok(r) => break r,
                Err(_) => {
                    let now = Instant::now();
                    let n = sent.load(Ordering::Relaxed);
                    if n != reported {
                        reported = n;
                        last_move = now;
                        progress(n);
                    } else {
                        // Waiting for bytes to move, or (all sent) for the registry's verdict.
                        let limit = if n < desc.size {
                            options.stall_timeout
                        } else {
                            options.request_timeout
                        };
                        if now.duration_since(last_move) >= limit {
                            return Err(RegistryError::Stalled {
                                method: "Put".into(),
                                url: put_text,
                                after: limit,
                            });
                        }
                    }
                }
            }
        };
        if let Some(e) = local_error.lock().unwrap().take() {
            return Err(e);
        }
        let resp = outcome.map_err(|e| transport_error("PUT", &put_text, &e))?;
        if !resp.status().is_success() {
            return Err(self.error_from(resp, "PUT", &put_text, &desc.digest).await);
        }
        if let Some(served) = header_str(resp.headers(), "docker-content-digest") {
            if served.starts_with("sha256:") && served != desc.digest {
                return Err(RegistryError::DigestMismatch {
                    expected: desc.digest.clone(),
                    actual: served.to_string(),
                });
            }
        }
        if reported != desc.size {
            progress(desc.size);
        }
        Ok(())
    }

    /// `PUT /v2/<repo>/manifests/<tag>` with `raw` as `media_type`; returns the manifest digest
    /// (sha256 of `raw`, checked against the registry's `Docker-Content-Digest`).
    pub async fn push_manifest(&self, tag: &str, media_type: &str, raw: &[u8]) -> Result<String> {
        if !valid_tag(tag) && check_digest(tag).is_err() {
            return Err(RegistryError::Protocol(format!("invalid tag {tag:?}")));
        }
        let digest = sha256_digest(raw);
        let url = self.url(&format!("/manifests/{tag}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(media_type).map_err(|_| {
                RegistryError::Protocol(format!("invalid media type {media_type:?}"))
            })?,
        );
        let resp = self
            .send(
                Method::PUT,
                &url,
                headers,
                Some(Bytes::copy_from_slice(raw)),
            )
            .await?;
        if !resp.status().is_success() {
            let what = format!("{}:{tag}", self.reference.name());
            return Err(self.error_from(resp, "PUT", &url, &what).await);
        }
        if let Some(served) = header_str(resp.headers(), "docker-content-digest") {
            if served.starts_with("sha256:") && served != digest {
                return Err(RegistryError::DigestMismatch {
                    expected: digest,
                    actual: served.to_string(),
                });
            }
        }
        Ok(digest)
    }

    // ---- manifests ------------------------------------------------------------------------

    async fn fetch_manifest_here(&self) -> Result<Manifest> {
        let (target, by_digest) = match (&self.reference.digest, &self.reference.tag) {
            (Some(d), _) => {
                check_digest(d)?;
                (d.clone(), true)
            }
            (None, Some(t)) => (t.clone(), false),
            (None, None) => ("latest".to_string(), false),
        };
        let display_ref = if by_digest {
            format!("{}@{target}", self.reference.name())
        } else {
            format!("{}:{target}", self.reference.name())
        };
        let expected = by_digest.then(|| target.clone());
        let (raw, header_type) = self
            .get_manifest_bytes(&target, &display_ref, expected.as_deref(), None)
            .await?;
        let parsed = parse_manifest(&raw, header_type.as_deref())?;
        let digest = sha256_digest(&raw);
        match parsed {
            Parsed::Manifest(m) => finish_manifest(m, raw, digest, None),
            Parsed::Index { entries, .. } => {
                let platform = default_platform();
                let entry = select_entry(&entries, &platform)?;
                let limit = self.shared.options.max_manifest_bytes;
                if entry.descriptor.size > limit {
                    return Err(RegistryError::TooLarge {
                        what: format!(
                            "manifest {} ({} bytes)",
                            entry.descriptor.digest, entry.descriptor.size
                        ),
                        limit,
                    });
                }
                let child_ref = format!("{}@{}", self.reference.name(), entry.descriptor.digest);
                let (child_raw, child_type) = self
                    .get_manifest_bytes(
                        &entry.descriptor.digest,
                        &child_ref,
                        Some(&entry.descriptor.digest),
                        Some(entry.descriptor.size),
                    )
                    .await?;
                let child_type = child_type.or_else(|| Some(entry.descriptor.media_type.clone()));
                match parse_manifest(&child_raw, child_type.as_deref())? {
                    Parsed::Manifest(m) => {
                        let child_digest = sha256_digest(&child_raw);
                        finish_manifest(m, child_raw, child_digest, Some(digest))
                    }
                    Parsed::Index { media_type, .. } => {
                        Err(RegistryError::UnsupportedManifest(media_type))
                    }
                }
            }
        }
    }

    /// GET a manifest (tag or digest), bounded; verifies `expected` (digest) and the
    /// `Docker-Content-Digest` header; returns the bytes and the Content-Type.
    async fn get_manifest_bytes(
        &self,
        target: &str,
        display_ref: &str,
        expected: Option<&str>,
        expected_size: Option<u64>,
    ) -> Result<(Vec<u8>, Option<String>)> {
        let url = self.url(&format!("/manifests/{target}"));
        let mut headers = HeaderMap::new();
        for mt in MANIFEST_ACCEPT {
            headers.append(ACCEPT, HeaderValue::from_static(mt));
        }
        let deadline = Instant::now() + self.shared.options.request_timeout;
        let mut resp = self.send(Method::GET, &url, headers, None).await?;
        if !resp.status().is_success() {
            return Err(self.error_from(resp, "GET", &url, display_ref).await);
        }
        let content_type = header_str(resp.headers(), "content-type")
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .filter(|v| !v.is_empty());
        let served = header_str(resp.headers(), "docker-content-digest").map(str::to_string);
        let limit = self.shared.options.max_manifest_bytes;
        let raw = self
            .read_bounded(
                &mut resp,
                &url,
                limit,
                &format!("manifest {display_ref}"),
                deadline,
            )
            .await?;
        let actual = sha256_digest(&raw);
        if let Some(exp) = expected {
            if actual != exp {
                return Err(RegistryError::DigestMismatch {
                    expected: exp.to_string(),
                    actual,
                });
            }
        }
        if let Some(served) = served {
            if served.starts_with("sha256:") && served != actual {
                return Err(RegistryError::DigestMismatch {
                    expected: served,
                    actual,
                });
            }
        }
        if let Some(size) = expected_size {
            if raw.len() as u64 != size {
                return Err(RegistryError::Protocol(format!(
                    "manifest {display_ref} is {} bytes, its index entry says {size}",
                    raw.len()
                )));
            }
        }
        Ok((raw, content_type))
    }

    // ---- blobs ----------------------------------------------------------------------------

    async fn get_blob(&self, desc: &Descriptor) -> Result<(Response, String)> {
        let url = self.url(&format!("/blobs/{}", desc.digest));
        let resp = self.send(Method::GET, &url, HeaderMap::new(), None).await?;
        if !resp.status().is_success() {
            return Err(self.error_from(resp, "GET", &url, &desc.digest).await);
        }
        Ok((resp, url))
    }

    /// Feeds a blob body to `sink(chunk, bytes so far)`, never more than `desc.size` bytes: a
    /// chunk that would pass it fails with `TooLong` before it is handed on.
    async fn stream_blob(
        &self,
        resp: &mut Response,
        url: &str,
        desc: &Descriptor,
        deadline: Option<Instant>,
        mut sink: impl FnMut(&Bytes, u64) -> Result<()>,
    ) -> Result<()> {
        let mut received = 0u64;
        loop {
            let chunk = match self.next_chunk(resp, "Get", url, deadline).await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(ChunkError::Timeout(e)) => return Err(e),
                Err(ChunkError::Body) => {
                    return Err(RegistryError::Truncated {
                        digest: desc.digest.clone(),
                        expected: desc.size,
                        received,
                    })
                }
            };
            if chunk.len() as u64 > desc.size - received {
                return Err(RegistryError::TooLong {
                    digest: desc.digest.clone(),
                    expected: desc.size,
                });
            }
            received += chunk.len() as u64;
            sink(&chunk, received)?;
        }
        if received < desc.size {
            return Err(RegistryError::Truncated {
                digest: desc.digest.clone(),
                expected: desc.size,
                received,
            });
        }
        Ok(())
    }

    async fn next_chunk(
        &self,
        resp: &mut Response,
        method: &str,
        url: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<Bytes>, ChunkError> {
        let stall = self.shared.options.stall_timeout;
        let wait_until = match deadline {
            Some(d) => d.min(Instant::now() + stall),
            None => Instant::now() + stall,
        };
        match tokio::time::timeout_at(wait_until, resp.chunk()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(_)) => Err(ChunkError::Body),
            Err(_) if deadline.is_some_and(|d| d <= Instant::now()) => {
                Err(ChunkError::Timeout(RegistryError::Transport {
                    method: method.to_string(),
                    url: url.to_string(),
                    message: format!(
                        "request not completed within {}",
                        go_duration(self.shared.options.request_timeout)
                    ),
                }))
            }
            Err(_) => Err(ChunkError::Timeout(RegistryError::Stalled {
                method: method.to_string(),
                url: url.to_string(),
                after: stall,
            })),
        }
    }

    /// Reads a whole (small) body, failing once it passes `limit`.
    async fn read_bounded(
        &self,
        resp: &mut Response,
        url: &str,
        limit: u64,
        what: &str,
        deadline: Instant,
    ) -> Result<Vec<u8>> {
        if let Some(len) = resp.content_length() {
            if len > limit {
                return Err(RegistryError::TooLarge {
                    what: format!("{what} ({len} bytes)"),
                    limit,
                });
            }
        }
        let mut out = Vec::new();
        loop {
            match self.next_chunk(resp, "Get", url, Some(deadline)).await {
                Ok(Some(c)) => {
                    if (out.len() + c.len()) as u64 > limit {
                        return Err(RegistryError::TooLarge {
                            what: what.to_string(),
                            limit,
                        });
                    }
                    out.extend_from_slice(&c);
                }
                Ok(None) => return Ok(out),
                Err(ChunkError::Timeout(e)) => return Err(e),
                Err(ChunkError::Body) => {
                    return Err(RegistryError::Transport {
                        method: "Get".into(),
                        url: url.to_string(),
                        message: format!("unexpected EOF after {} bytes", out.len()),
                    })
                }
            }
        }
    }

    // ---- requests and auth ----------------------------------------------------------------

    /// `<base>/v2/<repo><suffix>`.
    fn url(&self, suffix: &str) -> String {
        let index = self.state.lock().unwrap().index;
        format!(
            "{}/v2/{}{suffix}",
            self.endpoints[index].base, self.reference.path
        )
    }

    fn client_and_auth(&self) -> (reqwest::Client, Option<String>) {
        let state = self.state.lock().unwrap();
        let endpoint = &self.endpoints[state.index];
        (
            self.shared.client(endpoint.skip_verify).clone(),
            state.authorization.clone(),
        )
    }

    /// Sends a request to the endpoint in use with its credentials; a 401 with a challenge
    /// re-authenticates once and repeats the request. Waits `request_timeout` for the headers.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Response> {
        let mut retried = false;
        loop {
            let (client, authorization) = self.client_and_auth();
            let mut request = client
                .request(method.clone(), url)
                .headers(self.meta.clone())
                .headers(headers.clone());
            if let Some(a) = &authorization {
                request = request.header(AUTHORIZATION, a.as_str());
            }
            if let Some(b) = &body {
                request = request.body(b.clone());
            }
            let resp = self.execute(request, method.as_str(), url).await?;
            if resp.status() != StatusCode::UNAUTHORIZED || retried {
                return Ok(resp);
            }
            retried = true;
            let challenges = parse_challenges(resp.headers());
            if challenges.is_empty() || !self.auth.registry_token.is_empty() {
                return Ok(resp);
            }
            let index = self.state.lock().unwrap().index;
            match self.authorize(index, &challenges).await? {
                Some(new) if new.starts_with("Bearer ") || Some(&new) != authorization.as_ref() => {
                    self.state.lock().unwrap().authorization = Some(new);
                }
                _ => return Ok(resp),
            }
        }
    }

    async fn execute(
        &self,
        request: reqwest::RequestBuilder,
        method: &str,
        url: &str,
    ) -> Result<Response> {
        let timeout = self.shared.options.request_timeout;
        match tokio::time::timeout(timeout, request.send()).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(transport_error(method, url, &e)),
            Err(_) => Err(RegistryError::Transport {
                method: go_method(method),
                url: url.to_string(),
                message: format!(
                    "no answer within {} (Client.Timeout exceeded while awaiting headers)",
                    go_duration(timeout)
                ),
            }),
        }
    }

    /// Tries endpoints from `start` until one answers as a registry and accepts us.
    async fn connect_from(&self, start: usize) -> Result<()> {
        let mut last = None;
        for index in start..self.endpoints.len() {
            match self.connect(index).await {
                Connect::Ok(authorization) => {
                    let mut state = self.state.lock().unwrap();
                    state.index = index;
                    state.authorization = authorization;
                    return Ok(());
                }
                Connect::Unreachable(e) => {
                    log::debug!(
                        "registry endpoint {} unusable: {e}",
                        self.endpoints[index].base
                    );
                    last = Some(e);
                }
                Connect::Failed(e) => {
                    if self.endpoints[index].mirror {
                        log::info!(
                            "registry mirror {} refused: {e}",
                            self.endpoints[index].base
                        );
                        last = Some(e);
                    } else {
                        return Err(e);
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Protocol("no registry endpoint".into())))
    }

    /// Pings `/v2/` on one endpoint and answers its challenge.
    async fn connect(&self, index: usize) -> Connect {
        let endpoint = &self.endpoints[index];
        let url = format!("{}/v2/", endpoint.base);
        let client = self.shared.client(endpoint.skip_verify);
        let request = client.get(&url).headers(self.meta.clone());
        let resp = match self.execute(request, "GET", &url).await {
            Ok(r) => r,
            Err(e) => return Connect::Unreachable(e),
        };
        let registry_token = (!self.auth.registry_token.is_empty())
            .then(|| format!("Bearer {}", self.auth.registry_token));
        match resp.status() {
            s if s.is_success() => Connect::Ok(registry_token),
            StatusCode::UNAUTHORIZED => {
                if registry_token.is_some() {
                    return Connect::Ok(registry_token);
                }
                let challenges = parse_challenges(resp.headers());
                match self.authorize(index, &challenges).await {
                    Ok(authorization) => Connect::Ok(authorization),
                    Err(e) if e.is_transport() => Connect::Unreachable(e),
                    Err(e) => Connect::Failed(e),
                }
            }
            status => Connect::Unreachable(RegistryError::Registry {
                status: status.as_u16(),
                message: format!(
                    "unexpected status from GET request to {url}: {}",
                    status_text(status)
                ),
            }),
        }
    }

    /// The `Authorization` value answering `challenges`; `None` when nothing can be sent
    /// (a Basic challenge without credentials: the request goes out anonymously and the
    /// registry's own 401 is reported).
    async fn authorize(&self, index: usize, challenges: &[Challenge]) -> Result<Option<String>> {
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let token = self.fetch_token(index, bearer).await?;
            return Ok(Some(format!("Bearer {token}")));
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            if let Some((user, pass)) = self.auth.basic_credentials() {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                return Ok(Some(format!("Basic {encoded}")));
            }
        }
        Ok(None)
    }

    /// The token-server exchange for a Bearer challenge.
    async fn fetch_token(&self, index: usize, challenge: &Challenge) -> Result<String> {
        let realm = challenge.param("realm").ok_or_else(|| {
            RegistryError::Protocol("bearer challenge without a realm".to_string())
        })?;
        let mut url = Url::parse(realm)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| RegistryError::Protocol(format!("invalid token realm {realm:?}")))?;
        let actions = if self.push { "pull,push" } else { "pull" };
        let mut scopes = vec![format!(
            "repository(plugin):{}:{actions}",
            self.reference.path
        )];
        if let Some(extra) = challenge.param("scope") {
            for s in extra.split(' ').filter(|s| !s.is_empty()) {
                if !scopes.iter().any(|have| have == s) {
                    scopes.push(s.to_string());
                }
            }
        }
        let service = challenge.param("service").unwrap_or("");
        let endpoint = &self.endpoints[index];
        let client = self.shared.client(endpoint.skip_verify);
        let request = if !self.auth.identity_token.is_empty() {
            let mut form = vec![
                ("grant_type", "refresh_token".to_string()),
                ("service", service.to_string()),
                ("client_id", CLIENT_ID.to_string()),
                ("refresh_token", self.auth.identity_token.clone()),
            ];
            form.push(("scope", scopes.join(" ")));
            let body = form
                .iter()
                .map(|(k, v)| format!("{k}={}", form_encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            client
                .post(url.as_str())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body)
        } else {
            let creds = self.auth.basic_credentials();
            {
                let mut q = url.query_pairs_mut();
                if !service.is_empty() {
                    q.append_pair("service", service);
                }
                for s in &scopes {
                    q.append_pair("scope", s);
                }
                if let Some((user, _)) = &creds {
                    if !user.is_empty() {
                        q.append_pair("account", user);
                    }
                }
            }
            let mut r = client.get(url.as_str());
            if let Some((user, pass)) = creds {
                r = r.basic_auth(user, Some(pass));
            }
            r
        };
        let method = if self.auth.identity_token.is_empty() {
            "GET"
        } else {
            "POST"
        };
        let url_text = url.to_string();
        let deadline = Instant::now() + self.shared.options.request_timeout;
        let mut resp = self.execute(request, method, &url_text).await?;
        let status = resp.status();
        let body = self
            .read_bounded(
                &mut resp,
                &url_text,
                MAX_TOKEN_BODY,
                "token answer",
                deadline,
            )
            .await?;
        if !status.is_success() {
            let rendered = render_error_body(&body).or_else(|| {
                let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
                let details = v.get("details")?.as_str()?;
                Some(format!("unauthorized: {details}"))
            });
            return Err(match status {
                StatusCode::UNAUTHORIZED => RegistryError::Unauthorized(
                    rendered.unwrap_or_else(|| "unauthorized: authentication required".into()),
                ),
                StatusCode::FORBIDDEN => RegistryError::Denied(rendered.unwrap_or_else(|| {
                    "denied: requested access to the resource is denied".into()
                })),
                _ => RegistryError::Registry {
                    status: status.as_u16(),
                    message: rendered.unwrap_or_else(|| {
                        format!(
                            "unexpected status from {method} request to {url_text}: {}",
                            status_text(status)
                        )
                    }),
                },
            });
        }
        #[derive(Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::Protocol(format!("unable to decode token response: {e}"))
        })?;
        let token = if answer.token.is_empty() {
            answer.access_token
        } else {
            answer.token
        };
        if token.is_empty() {
            return Err(RegistryError::Protocol(
                "authorization server did not include a token in the response".into(),
            ));
        }
        Ok(token)
    }

    /// The typed error of a non-success answer (its body read up to 64 KiB).
    async fn error_from(
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
        let rendered = render_error_body(&body);
        match status {
            StatusCode::UNAUTHORIZED => RegistryError::Unauthorized(
                rendered.unwrap_or_else(|| "unauthorized: authentication required".into()),
            ),
            StatusCode::FORBIDDEN => RegistryError::Denied(
                rendered
                    .unwrap_or_else(|| "denied: requested access to the resource is denied".into()),
            ),
            StatusCode::NOT_FOUND => RegistryError::NotFound {
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
}

impl Shared {
    fn client(&self, skip_verify: bool) -> &reqwest::Client {
        if skip_verify {
            &self.insecure
        } else {
            &self.secure
        }
    }
}

enum ChunkError {
    /// No data for the stall timeout, or the whole-request deadline passed.
    Timeout(RegistryError),
    /// The body broke off (connection closed before its announced end, reset, …).
    Body,
}

/// Network chunks gathered to at least this many bytes before they are written to a blob file.
const WRITE_BATCH: usize = 256 * 1024;
/// Writeback of a downloaded blob file is started every this many bytes.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Chunks of a download waiting to be written to its file in one vectored write.
struct WriteBatch<'f> {
    file: &'f mut File,
    chunks: Vec<Bytes>,
    len: usize,
    /// Bytes in the file.
    written: u64,
    /// Bytes whose writeback has been started.
    flushed: u64,
}

impl<'f> WriteBatch<'f> {
    fn new(file: &'f mut File) -> Self {
        WriteBatch {
            file,
            chunks: Vec::new(),
            len: 0,
            written: 0,
            flushed: 0,
        }
    }

    /// Adds a chunk (without copying it); true once the batch is worth a write.
    fn push(&mut self, chunk: &Bytes) -> bool {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push(chunk.clone());
        }
        self.len >= WRITE_BATCH
    }

    fn pending(&self) -> bool {
        self.len > 0
    }

    /// Writes the batch; returns the file's length.
    fn write(&mut self) -> std::io::Result<u64> {
        use bytes::Buf as _;
        let mut chunks = &mut self.chunks[..];
        while !chunks.is_empty() {
            let slices: Vec<std::io::IoSlice<'_>> =
                chunks.iter().map(|c| std::io::IoSlice::new(c)).collect();
            let mut n = match self.file.write_vectored(&slices) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            while n > 0 {
                let first = chunks[0].len();
                if n >= first {
                    n -= first;
                    chunks = &mut chunks[1..];
                } else {
                    chunks[0].advance(n);
                    n = 0;
                }
            }
        }
        self.written += self.len as u64;
        self.chunks.clear();
        self.len = 0;
        if self.written - self.flushed >= WRITEBACK_STEP {
            crate::fsutil::start_writeback(self.file, self.flushed, self.written - self.flushed);
            self.flushed = self.written;
        }
        Ok(self.written)
    }
}

/// A file being downloaded: removed on drop unless [`finish`](Self::finish)ed.
struct PartialFile {
    path: PathBuf,
    file: Option<File>,
}

impl PartialFile {
    fn create(path: &Path) -> Result<PartialFile> {
        let file = File::create(path).map_err(|e| io_error("creating", path, &e))?;
        Ok(PartialFile {
            path: path.to_path_buf(),
            file: Some(file),
        })
    }

    fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until finished")
    }

    fn finish(mut self) -> Result<()> {
        let mut file = self.file.take().expect("open until finished");
        if let Err(e) = file.flush() {
            let _ = std::fs::remove_file(&self.path);
            return Err(io_error("writing", &self.path, &e));
        }
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The upload body: `desc.size` bytes of `file` in chunks, hashed; a short file or a digest
/// that is not `desc.digest` ends the stream with an error (recorded in `local_error`).
fn upload_stream(
    file: File,
    desc: Descriptor,
    path: PathBuf,
    sent: Arc<AtomicU64>,
    local_error: Arc<Mutex<Option<RegistryError>>>,
) -> impl futures_util::Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + 'static {
    struct Upload {
        file: File,
        hasher: Sha256,
        remaining: u64,
        done: bool,
    }
    let start = Upload {
        file,
        hasher: Sha256::new(),
        remaining: desc.size,
        done: false,
    };
    futures_util::stream::unfold(start, move |mut up| {
        let (desc, path, sent, local_error) = (
            desc.clone(),
            path.clone(),
            Arc::clone(&sent),
            Arc::clone(&local_error),
        );
        async move {
            if up.done {
                return None;
            }
            let fail = |e: RegistryError, up: Upload| {
                let text = e.to_string();
                *local_error.lock().unwrap() = Some(e);
                Some((
                    Err(std::io::Error::other(text)),
                    Upload { done: true, ..up },
                ))
            };
            let digest_error = |hasher: &Sha256| {
                let actual = format!("sha256:{}", hex::encode(hasher.clone().finalize()));
                (actual != desc.digest).then(|| RegistryError::DigestMismatch {
                    expected: desc.digest.clone(),
                    actual,
                })
            };
            if up.remaining == 0 {
                // Only for an empty blob: otherwise the last chunk ended the stream.
                up.done = true;
                return match digest_error(&up.hasher) {
                    Some(e) => fail(e, up),
                    None => None,
                };
            }
            let want = (up.remaining as usize).min(UPLOAD_CHUNK);
            let mut buf = vec![0u8; want];
            let n = loop {
                match up.file.read(&mut buf) {
                    Ok(0) => {
                        return fail(
                            RegistryError::Io(format!(
                                "blob {} at {}: file ended before {} bytes",
                                desc.digest,
                                path.display(),
                                desc.size
                            )),
                            up,
                        )
                    }
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return fail(io_error("reading", &path, &e), up),
                }
            };
            buf.truncate(n);
            up.hasher.update(&buf);
            up.remaining -= n as u64;
            if up.remaining == 0 {
                // Checked before the last bytes go out, so a file that changed since its digest
                // was computed never completes an upload.
                if let Some(e) = digest_error(&up.hasher) {
                    return fail(e, up);
                }
                up.done = true;
            }
            sent.fetch_add(n as u64, Ordering::Relaxed);
            Some((Ok(Bytes::from(buf)), up))
        }
    })
}

// ---- manifest parsing ---------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
}

/// An entry of a manifest list / OCI index.
#[derive(Debug, Clone, Deserialize)]
struct IndexEntry {
    #[serde(flatten)]
    descriptor: Descriptor,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

struct SingleManifest {
    media_type: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

enum Parsed {
    Manifest(SingleManifest),
    Index {
        media_type: String,
        entries: Vec<IndexEntry>,
    },
}

fn parse_manifest(raw: &[u8], content_type: Option<&str>) -> Result<Parsed> {
    let m: RawManifest = serde_json::from_slice(raw)
        .map_err(|e| RegistryError::Protocol(format!("invalid manifest: {e}")))?;
    let known = |t: &str| {
        MANIFEST_ACCEPT.contains(&t)
            || t == MEDIA_TYPE_DOCKER_SCHEMA1
            || t == MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED
    };
    let media_type = match (&m.media_type, content_type) {
        (Some(t), _) if !t.is_empty() => t.clone(),
        (_, Some(t)) if known(t) => t.to_string(),
        _ if m.schema_version == Some(1) => MEDIA_TYPE_DOCKER_SCHEMA1.to_string(),
        _ if m.manifests.is_some() => MEDIA_TYPE_OCI_INDEX.to_string(),
        _ if m.config.is_some() => MEDIA_TYPE_OCI_MANIFEST.to_string(),
        _ => content_type.unwrap_or("").to_string(),
    };
    match media_type.as_str() {
        MEDIA_TYPE_DOCKER_MANIFEST | MEDIA_TYPE_OCI_MANIFEST => {
            if m.schema_version != Some(2) {
                return Err(RegistryError::Protocol(format!(
                    "invalid manifest: schemaVersion {:?}, expected 2",
                    m.schema_version
                )));
            }
            let config = m.config.ok_or_else(|| {
                RegistryError::Protocol("invalid manifest: no config descriptor".into())
            })?;
            Ok(Parsed::Manifest(SingleManifest {
                media_type,
                config,
                layers: m.layers.unwrap_or_default(),
            }))
        }
        MEDIA_TYPE_DOCKER_MANIFEST_LIST | MEDIA_TYPE_OCI_INDEX => Ok(Parsed::Index {
            media_type,
            entries: m.manifests.unwrap_or_default(),
        }),
        _ => Err(RegistryError::UnsupportedManifest(media_type)),
    }
}

/// Checks a single manifest's descriptors and config type and assembles the result.
fn finish_manifest(
    m: SingleManifest,
    raw: Vec<u8>,
    digest: String,
    index_digest: Option<String>,
) -> Result<Manifest> {
    match m.config.media_type.as_str() {
        MEDIA_TYPE_PLUGIN_CONFIG => {}
        other => {
            let class = match other {
                MEDIA_TYPE_DOCKER_IMAGE_CONFIG | MEDIA_TYPE_OCI_IMAGE_CONFIG => "image",
                _ => "unknown",
            };
            return Err(RegistryError::WrongMediaType {
                media_type: other.to_string(),
                class: class.to_string(),
            });
        }
    }
    check_digest(&m.config.digest)?;
    for layer in &m.layers {
        check_digest(&layer.digest)?;
    }
    Ok(Manifest {
        digest,
        media_type: m.media_type,
        raw,
        config: m.config,
        layers: m.layers,
        index_digest,
    })
}

/// `linux/<GOARCH>` of this machine.
fn default_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    };
    Platform {
        architecture: arch.to_string(),
        os: "linux".to_string(),
        variant: None,
    }
}

/// The index entry for `want`: the first manifest entry for that OS/architecture; otherwise,
/// when the index holds a single manifest entry without a platform (how some plugin indexes are
/// written), that one.
fn select_entry<'a>(entries: &'a [IndexEntry], want: &Platform) -> Result<&'a IndexEntry> {
    let manifests: Vec<&IndexEntry> = entries
        .iter()
        .filter(|e| {
            matches!(
                e.descriptor.media_type.as_str(),
                MEDIA_TYPE_DOCKER_MANIFEST | MEDIA_TYPE_OCI_MANIFEST | ""
            )
        })
        .collect();
    let chosen = manifests
        .iter()
        .find(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
        })
        .or_else(|| match manifests.as_slice() {
            [only] if only.platform.as_ref().is_none_or(|p| p.os.is_empty()) => Some(only),
            _ => None,
        })
        .copied()
        .ok_or_else(|| {
            RegistryError::NoMatchingPlatform(format!("{}/{}", want.os, want.architecture))
        })?;
    check_digest(&chosen.descriptor.digest)?;
    Ok(chosen)
}

// ---- WWW-Authenticate -----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Challenge {
    /// Lower-cased.
    scheme: String,
    /// Names lower-cased.
    params: Vec<(String, String)>,
}

impl Challenge {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_challenges(headers: &HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenge_header)
        .collect()
}

/// RFC 7235 challenges: `scheme [param=value|"quoted"] [, …]`, several per header allowed.
fn parse_challenge_header(s: &str) -> Vec<Challenge> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let is_tchar = |c: u8| !c.is_ascii_whitespace() && c != b',' && c != b'=' && c != b'"';
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
            i += 1;
        }
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        if start == i {
            break;
        }
        let mut challenge = Challenge {
            scheme: s[start..i].to_ascii_lowercase(),
            params: Vec::new(),
        };
        loop {
            let save = i;
            skip_ws(&mut i);
            let name_start = i;
            while i < b.len() && is_tchar(b[i]) {
                i += 1;
            }
            let name = &s[name_start..i];
            skip_ws(&mut i);
            if name.is_empty() || i >= b.len() || b[i] != b'=' {
                i = save;
                break;
            }
            i += 1;
            skip_ws(&mut i);
            let mut value = String::new();
            if i < b.len() && b[i] == b'"' {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
                    value.push(ch);
                    i += ch.len_utf8();
                }
                i = (i + 1).min(b.len());
            } else {
                let v_start = i;
                while i < b.len() && b[i] != b',' && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                value.push_str(&s[v_start..i]);
            }
            challenge.params.push((name.to_ascii_lowercase(), value));
            skip_ws(&mut i);
            if i < b.len() && b[i] == b',' {
                i += 1;
            }
        }
        out.push(challenge);
    }
    out
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
fn render_error_body(body: &[u8]) -> Option<String> {
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

// ---- small helpers --------------------------------------------------------------------------

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn verify_digest(expected: &str, hasher: Sha256) -> Result<()> {
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != expected {
        return Err(RegistryError::DigestMismatch {
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// `sha256:<64 lower-case hex>`, the only digests used in URLs and blob-store paths.
fn check_digest(digest: &str) -> Result<()> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64 && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(())
        }
        Some((alg, _)) if alg != "sha256" && !alg.is_empty() => Err(RegistryError::Protocol(
            format!("unsupported digest algorithm in {digest:?}"),
        )),
        _ => Err(RegistryError::Protocol(format!(
            "invalid digest {digest:?}"
        ))),
    }
}

/// Docker's tag grammar: `[\w][\w.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(r) => format!("{} {r}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// Go's `url.Error` operation: `Get`, `Head`, `Post`, `Put`.
fn go_method(method: &str) -> String {
    let mut chars = method.chars();
    match chars.next() {
        Some(first) => {
            first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
        }
        None => String::new(),
    }
}

fn transport_error(method: &str, url: &str, e: &reqwest::Error) -> RegistryError {
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

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
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

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> RegistryError {
    let why = match e.raw_os_error() {
        Some(code) => errno_text(code),
        None => e.to_string(),
    };
    RegistryError::Io(format!("{what} {}: {why}", path.display()))
}

/// `application/x-www-form-urlencoded` value encoding.
fn form_encode(v: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const FORM: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'*')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_');
    utf8_percent_encode(v, FORM).to_string().replace("%20", "+")
}

fn strip_scheme(s: &str) -> &str {
    s.strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .unwrap_or(s)
}

fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// `host` of `host[:port]` (IPv6 literals in brackets kept whole).
fn split_host(host_port: &str) -> &str {
    if host_port.starts_with('[') {
        return match host_port.find(']') {
            Some(end) => &host_port[..=end],
            None => host_port,
        };
    }
    match host_port.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => host_port,
    }
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

fn cidr_contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    let ip = match (net, ip) {
        (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => return false,
        },
        _ => ip,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64url(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE.encode(s)
    }

    #[test]
    fn auth_header_decodes_like_moby() {
        let a = AuthConfig::from_header(&b64url(
            r#"{"username":"alice","password":"s3cret","serveraddress":"localhost:5000"}"#,
        ));
        assert_eq!(a.username, "alice");
        assert_eq!(a.password, "s3cret");
        assert_eq!(a.server_address, "localhost:5000");
        assert!(!a.is_anonymous());
        // Keys match case-insensitively; the last occurrence wins.
        let a = AuthConfig::from_header(&b64url(
            r#"{"Username":"x","USERNAME":"bob","IdentityToken":"tok"}"#,
        ));
        assert_eq!(a.username, "bob");
        assert_eq!(a.identity_token, "tok");
        // Unpadded and standard-alphabet values are accepted.
        let a = AuthConfig::from_header(b64url(r#"{"registrytoken":"rt"}"#).trim_end_matches('='));
        assert_eq!(a.registry_token, "rt");
        // `{}` (what the CLI sends without credentials), empty, garbage, non-objects and
        // wrongly typed fields are all "no credentials".
        for v in ["e30=", "", "!!!", &b64url("not json"), &b64url("[1]")] {
            assert_eq!(AuthConfig::from_header(v), AuthConfig::default(), "{v:?}");
        }
        assert_eq!(
            AuthConfig::from_header(&b64url(r#"{"username":5}"#)),
            AuthConfig::default()
        );
        // Trailing data after the first JSON value is ignored (Go's json.Decoder).
        let a = AuthConfig::from_header(&b64url(r#"{"username":"u"} trailing"#));
        assert_eq!(a.username, "u");
        assert!(AuthConfig::default().is_anonymous());
    }

    #[test]
    fn auth_field_is_a_fallback_for_basic_credentials() {
        let a = AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("carol:pa:ss"),
            ..Default::default()
        };
        assert_eq!(
            a.basic_credentials(),
            Some(("carol".to_string(), "pa:ss".to_string()))
        );
        let a = AuthConfig {
            username: "dave".into(),
            password: "pw".into(),
            auth: base64::engine::general_purpose::STANDARD.encode("carol:x"),
            ..Default::default()
        };
        assert_eq!(a.basic_credentials().unwrap().0, "dave");
        assert!(!format!("{a:?}").contains("pw"), "secrets are redacted");
    }

    #[test]
    fn challenges_parse() {
        let c = parse_challenge_header(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:samalba/my-app:pull,push")
        );
        let c =
            parse_challenge_header(r#"Basic realm="Registry Realm", Bearer realm=x,error="a\"b""#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("x"));
        assert_eq!(c[1].param("error"), Some("a\"b"));
        assert!(parse_challenge_header("").is_empty());
        assert_eq!(parse_challenge_header("Negotiate")[0].scheme, "negotiate");
    }

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
    fn digests_are_strict() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert!(check_digest(&ok).is_ok());
        for bad in [
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:../{}", "a".repeat(61)),
            "sha256:".to_string(),
            "nonsense".to_string(),
        ] {
            assert!(check_digest(&bad).is_err(), "{bad}");
        }
        assert!(check_digest(&format!("sha512:{}", "a".repeat(128)))
            .unwrap_err()
            .to_string()
            .contains("unsupported digest algorithm"));
    }

    #[test]
    fn insecure_networks() {
        let (net, bits) = parse_cidr("127.0.0.0/8").unwrap();
        assert!(cidr_contains(net, bits, "127.1.2.3".parse().unwrap()));
        assert!(!cidr_contains(net, bits, "128.0.0.1".parse().unwrap()));
        assert!(cidr_contains(
            net,
            bits,
            "::ffff:127.0.0.1".parse().unwrap()
        ));
        let (net, bits) = parse_cidr("::1/128").unwrap();
        assert!(cidr_contains(net, bits, "::1".parse().unwrap()));
        assert!(!cidr_contains(net, bits, "::2".parse().unwrap()));
        let (net, bits) = parse_cidr("0.0.0.0/0").unwrap();
        assert!(cidr_contains(net, bits, "10.0.0.1".parse().unwrap()));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert_eq!(split_host("localhost:5000"), "localhost");
        assert_eq!(split_host("registry.example"), "registry.example");
        assert_eq!(split_host("[::1]:5000"), "[::1]");
    }

    #[actix_rt::test]
    async fn endpoints_follow_moby() {
        let client = RegistryClient::new(RegistryOptions {
            insecure_registries: vec!["myreg.example:5000".into(), "10.0.0.0/8".into()],
            mirrors: vec![
                "https://mirror.example".into(),
                "mirror2.example:5001/".into(),
            ],
            ..Default::default()
        })
        .unwrap();
        let bases = |eps: Vec<Endpoint>| {
            eps.into_iter()
                .map(|e| (e.base, e.skip_verify, e.mirror))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            bases(client.endpoints("docker.io", false).await),
            vec![
                ("https://mirror.example".to_string(), false, true),
                ("https://mirror2.example:5001".to_string(), false, true),
                ("https://registry-1.docker.io".to_string(), false, false),
            ]
        );
        assert_eq!(
            bases(client.endpoints("docker.io", true).await),
            vec![("https://registry-1.docker.io".to_string(), false, false)]
        );
        assert_eq!(
            bases(client.endpoints("myreg.example:5000", false).await),
            vec![
                ("https://myreg.example:5000".to_string(), true, false),
                ("http://myreg.example:5000".to_string(), false, false),
            ]
        );
        for host in ["127.0.0.1:5000", "localhost:5000", "10.1.2.3"] {
            assert_eq!(client.endpoints(host, true).await.len(), 2, "{host}");
        }
        assert_eq!(
            bases(client.endpoints("203.0.113.7:5000", false).await),
            vec![("https://203.0.113.7:5000".to_string(), false, false)]
        );
        assert!(RegistryClient::new(RegistryOptions {
            mirrors: vec!["https://mirror.example/path".into()],
            ..Default::default()
        })
        .is_err());
        assert!(RegistryClient::new(RegistryOptions {
            insecure_registries: vec!["10.0.0.0/99".into()],
            ..Default::default()
        })
        .is_err());
    }

    fn entry(digest_char: char, platform: Option<(&str, &str)>) -> IndexEntry {
        IndexEntry {
            descriptor: Descriptor {
                media_type: MEDIA_TYPE_DOCKER_MANIFEST.into(),
                digest: format!("sha256:{}", digest_char.to_string().repeat(64)),
                size: 10,
            },
            platform: platform.map(|(os, arch)| Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: None,
            }),
        }
    }

    #[test]
    fn platform_selection() {
        let want = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        let entries = vec![
            entry('a', Some(("linux", "arm64"))),
            entry('b', Some(("windows", "amd64"))),
            entry('c', Some(("linux", "amd64"))),
        ];
        assert!(select_entry(&entries, &want)
            .unwrap()
            .descriptor
            .digest
            .ends_with('c'));
        let sole = vec![entry('d', None)];
        assert!(select_entry(&sole, &want)
            .unwrap()
            .descriptor
            .digest
            .ends_with('d'));
        let none = vec![entry('a', Some(("linux", "arm64")))];
        assert_eq!(
            select_entry(&none, &want).unwrap_err().to_string(),
            "no matching manifest for linux/amd64 in the manifest list entries"
        );
        let two_bare = vec![entry('a', None), entry('b', None)];
        assert!(select_entry(&two_bare, &want).is_err());
    }

    #[test]
    fn manifests_are_classified() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let plugin = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_PLUGIN_CONFIG, "digest": d('a'), "size": 3},
            "layers": [{"mediaType": MEDIA_TYPE_DOCKER_LAYER_GZIP, "digest": d('b'), "size": 4}],
        });
        let raw = serde_json::to_vec(&plugin).unwrap();
        let Parsed::Manifest(m) = parse_manifest(&raw, None).unwrap() else {
            panic!("a manifest")
        };
        let m = finish_manifest(m, raw.clone(), sha256_digest(&raw), None).unwrap();
        assert_eq!(m.layers[0].size, 4);
        assert!(m.layers[0].is_layer());
        assert_eq!(m.layers[0].short_id(), "bbbbbbbbbbbb");

        // No mediaType field: the Content-Type decides, then the shape.
        let oci = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": MEDIA_TYPE_OCI_IMAGE_CONFIG, "digest": d('a'), "size": 3},
            "layers": [],
        });
        let raw = serde_json::to_vec(&oci).unwrap();
        let Parsed::Manifest(m) = parse_manifest(&raw, Some("application/json")).unwrap() else {
            panic!("a manifest")
        };
        assert_eq!(m.media_type, MEDIA_TYPE_OCI_MANIFEST);
        let err = finish_manifest(m, raw.clone(), sha256_digest(&raw), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"Encountered remote "application/vnd.oci.image.config.v1+json"(image) when fetching"#
        );

        let bad_digest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_PLUGIN_CONFIG, "digest": "sha256:../../etc", "size": 3},
            "layers": [],
        });
        let raw = serde_json::to_vec(&bad_digest).unwrap();
        let Parsed::Manifest(m) = parse_manifest(&raw, None).unwrap() else {
            panic!("a manifest")
        };
        assert!(matches!(
            finish_manifest(m, raw, String::new(), None),
            Err(RegistryError::Protocol(_))
        ));

        let schema1 = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert!(matches!(
            parse_manifest(schema1, Some(MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED)),
            Err(RegistryError::UnsupportedManifest(_))
        ));
        let negative =
            br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:a","size":-1}}"#;
        assert!(matches!(
            parse_manifest(negative, None),
            Err(RegistryError::Protocol(_))
        ));
    }

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(
            form_encode("repository(plugin):a/b:pull,push x"),
            "repository%28plugin%29%3Aa%2Fb%3Apull%2Cpush+x"
        );
    }

    #[test]
    fn session_futures_are_send() {
        fn assert_send<T: Send>(_: T) {}
        let client = RegistryClient::new(RegistryOptions::default()).unwrap();
        let reference = Reference::parse_normalized("127.0.0.1:1/a/b").unwrap();
        assert_send(client.session(&reference, &AuthConfig::default(), false));
        #[allow(dead_code)]
        fn session_methods(s: &Session, d: &Descriptor, p: &Path) {
            let mut progress = |_: u64| {};
            assert_send(s.fetch_manifest());
            assert_send(s.fetch_blob_bytes(d, 1));
            assert_send(s.fetch_blob_to_file(d, p, &mut progress));
            assert_send(s.push_blob_from_file(d, p, &mut progress));
            assert_send(s.push_manifest("t", "m", b""));
            assert_send(s.blob_exists(d));
        }
    }
}
