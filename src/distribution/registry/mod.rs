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
//!
//! One file per responsibility: `endpoints` (where a repository is reached: Docker Hub, mirrors,
//! insecure registries), `auth` (`X-Registry-Auth`, challenges, tokens), `manifest` (media
//! types, manifests, platform selection), `transfer` (blob download and upload), `session`
//! (requests on one repository: re-authentication, deadlines, bounded reads) and `error` (the
//! typed error and Docker's wording of registry failures). This file holds the client, the
//! session and the digest rules they share.

mod auth;
mod endpoints;
mod error;
mod login;
mod manifest;
mod session;
mod transfer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest as _, Sha256};

use super::reference::Reference;
use endpoints::{Endpoint, Insecure};
use error::error_chain;

pub use auth::AuthConfig;
pub use error::{RegistryError, RegistryErrorClass};
pub use login::LoginError;
pub use manifest::{
    Descriptor, Manifest, MEDIA_TYPE_DOCKER_IMAGE_CONFIG, MEDIA_TYPE_DOCKER_LAYER,
    MEDIA_TYPE_DOCKER_LAYER_GZIP, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_DOCKER_SCHEMA1, MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED, MEDIA_TYPE_OCI_IMAGE_CONFIG,
    MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_PLUGIN_CONFIG,
};

type Result<T, E = RegistryError> = std::result::Result<T, E>;

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

/// What every session of one client shares: the options, the verifying and the non-verifying
/// HTTP client, and the parsed insecure-registry and mirror lists.
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
        let insecure_list = endpoints::insecure_list(&options.insecure_registries)?;
        let mirrors = endpoints::parse_mirrors(&options.mirrors)?;
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
            access: Access::Repository { push },
            auth: auth.clone(),
            meta,
            endpoints,
            state: Mutex::new(State::default()),
        };
        session.connect_from(0).await?;
        Ok(session)
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

/// Authentication state of the endpoint in use.
#[derive(Debug, Default)]
struct State {
    /// Index into `endpoints`.
    index: usize,
    /// `Authorization` value sent with registry requests.
    authorization: Option<String>,
    /// The refresh token a token server gave a login (what the client keeps as its
    /// `IdentityToken`).
    refresh_token: Option<String>,
}

/// What a session authenticates for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// A repository, for pull (or pull and push): tokens are asked for its plugin scope.
    Repository { push: bool },
    /// `docker login`: no scope; a token server is asked for a refresh token too.
    Login,
}

/// A repository on one registry, authenticated for pull or push.
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
    reference: Reference,
    access: Access,
    auth: AuthConfig,
    meta: HeaderMap,
    endpoints: Vec<Endpoint>,
    state: Mutex<State>,
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
}

// ---- integrity ----------------------------------------------------------------------------

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

/// A pushed blob or manifest whose `Docker-Content-Digest` (when the registry sends a sha256
/// one) is not the digest of what was sent.
fn check_pushed_digest(headers: &HeaderMap, pushed: &str) -> Result<()> {
    match session::header_str(headers, "docker-content-digest") {
        Some(served) if served.starts_with("sha256:") && served != pushed => {
            Err(RegistryError::DigestMismatch {
                expected: pushed.to_string(),
                actual: served.to_string(),
            })
        }
        _ => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
