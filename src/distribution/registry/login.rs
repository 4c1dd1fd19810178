//! `docker login` (`POST /auth`): are these credentials good for this registry? As moby's
//! `loginV2`: the registry's endpoints are tried in order (never a mirror: credentials of the
//! upstream registry must not reach one); on each, `/v2/` is pinged, its challenge answered
//! (Basic: the credentials on the request; Bearer: a token from the realm, asking for a
//! refresh token to hand back as the client's identity token), and `/v2/` asked again with the
//! result. An endpoint that cannot be reached, or is no registry, hands over to the next.
//! Nothing is kept and nothing secret is logged.

use std::sync::{Arc, Mutex};

use reqwest::header::AUTHORIZATION;
use reqwest::StatusCode;

use super::auth::parse_challenges;
use super::error::status_text;
use super::{Access, AuthConfig, RegistryClient, RegistryError, Session, State};
use crate::distribution::reference::{Reference, DEFAULT_DOMAIN};

/// Docker Hub's login address (`https://index.docker.io/v1/`, what the CLI sends by default).
const INDEX_HOST: &str = "index.docker.io";

/// Why a login failed, classed as dockerd classes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// `serveraddress` is no URL (400).
    #[error("unable to parse server address: {0}")]
    BadAddress(String),
    /// The registry (or its token server) refused the credentials: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// Anything else: untyped, a 500 (`login attempt to … failed with status: 401
    /// Unauthorized` for a Basic registry that refuses, `Get "…": dial tcp …` when none
    /// answers).
    #[error("{0}")]
    Failed(String),
}

impl From<LoginError> for crate::error::Error {
    fn from(e: LoginError) -> Self {
        use crate::error::Error;
        match e {
            LoginError::BadAddress(_) => Error::InvalidParameter(e.to_string()),
            LoginError::Unauthorized(m) => Error::Unauthorized(m),
            LoginError::Failed(m) => Error::System(m),
        }
    }
}

/// One endpoint's outcome when it failed.
enum Attempt {
    /// Unreachable or not a registry: try the next endpoint.
    Fallback(LoginError),
    /// The registry answered: this is the result.
    Final(LoginError),
}

impl RegistryClient {
    /// Checks `auth` against the registry named by its `server_address` (Docker Hub when
    /// empty) and returns the identity token (empty unless a token server gave a refresh
    /// token).
    pub async fn login(&self, auth: &AuthConfig) -> Result<String, LoginError> {
        let host = login_host(&auth.server_address)?;
        let domain = if host == INDEX_HOST || host == DEFAULT_DOMAIN {
            DEFAULT_DOMAIN.to_string()
        } else {
            host
        };
        let endpoints = self.endpoints(&domain, true).await;
        let session = Session {
            shared: Arc::clone(&self.shared),
            reference: Reference {
                domain,
                path: String::new(),
                tag: None,
                digest: None,
            },
            access: Access::Login,
            auth: auth.clone(),
            meta: Default::default(),
            endpoints,
            state: Mutex::new(State::default()),
        };
        let mut last = LoginError::Failed("no registry endpoint".into());
        for index in 0..session.endpoints.len() {
            match session.login_at(index).await {
                Ok(token) => return Ok(token),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Fallback(e)) => {
                    log::info!(
                        "error logging in to endpoint {}, trying next endpoint: {e}",
                        session.endpoints[index].base
                    );
                    last = e;
                }
            }
        }
        Err(last)
    }
}

impl Session {
    async fn login_at(&self, index: usize) -> Result<String, Attempt> {
        let endpoint = &self.endpoints[index];
        let url = format!("{}/v2/", endpoint.base);
        let client = self.shared.client(endpoint.skip_verify).clone();
        let unreachable = |e: RegistryError| Attempt::Fallback(LoginError::Failed(e.to_string()));
        let ping = self
            .execute(client.get(&url), "GET", &url)
            .await
            .map_err(unreachable)?;
        // moby falls back only while the endpoint has not shown itself a registry.
        let is_registry = ping
            .headers()
            .get_all("docker-distribution-api-version")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split([',', ' ']))
            .any(|v| v.trim() == "registry/2.0");
        let failed = |e: LoginError| {
            if is_registry {
                Attempt::Final(e)
            } else {
                Attempt::Fallback(e)
            }
        };
        let authorization = match ping.status() {
            StatusCode::OK => None,
            StatusCode::UNAUTHORIZED => {
                let challenges = parse_challenges(ping.headers());
                let answer = self.authorize(index, &challenges).await.map_err(|e| {
                    failed(match e {
                        RegistryError::Unauthorized(m) | RegistryError::Denied(m) => {
                            LoginError::Unauthorized(format!("Get {url:?}: {m}"))
                        }
                        other => LoginError::Failed(other.to_string()),
                    })
                })?;
                let basic_only = challenges.iter().all(|c| c.scheme() == "basic");
                match answer {
                    Some(authorization) => Some(authorization),
                    None if basic_only && !challenges.is_empty() => {
                        return Err(failed(LoginError::Failed(format!(
                            "Get {url:?}: no basic auth credentials"
                        ))))
                    }
                    None => None,
                }
            }
            _ => None,
        };
        let mut request = client.get(&url);
        if let Some(a) = &authorization {
            request = request.header(AUTHORIZATION, a.as_str());
        }
        let answer = self
            .execute(request, "GET", &url)
            .await
            .map_err(|e| failed(LoginError::Failed(e.to_string())))?;
        if answer.status() != StatusCode::OK {
            return Err(failed(LoginError::Failed(format!(
                "login attempt to {url} failed with status: {}",
                status_text(answer.status())
            ))));
        }
        let token = self.state.lock().unwrap().refresh_token.take();
        Ok(token.unwrap_or_default())
    }
}

/// The `host[:port]` a login is for: `serveraddress` with or without a scheme (and with
/// whatever path the CLI put after it, such as `/v1/`).
fn login_host(server_address: &str) -> Result<String, LoginError> {
    if server_address.is_empty() {
        return Ok(INDEX_HOST.to_string());
    }
    let with_scheme =
        if server_address.starts_with("https://") || server_address.starts_with("http://") {
            server_address.to_string()
        } else {
            format!("https://{server_address}")
        };
    if let Some(escape) = bad_escape(&with_scheme) {
        return Err(LoginError::BadAddress(format!(
            "parse {with_scheme:?}: invalid URL escape {escape:?}"
        )));
    }
    let url = reqwest::Url::parse(&with_scheme)
        .map_err(|e| LoginError::BadAddress(format!("parse {with_scheme:?}: {e}")))?;
    let host = url.host_str().unwrap_or("");
    Ok(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// The first `%` not followed by two hex digits, as Go's URL parser reports it.
fn bad_escape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let at = bytes.iter().enumerate().find_map(|(i, b)| {
        let ok = bytes.len() > i + 2
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit();
        (*b == b'%' && !ok).then_some(i)
    })?;
    Some(text[at..].chars().take(3).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_name_a_host() {
        assert_eq!(login_host("").unwrap(), "index.docker.io");
        assert_eq!(
            login_host("https://index.docker.io/v1/").unwrap(),
            "index.docker.io"
        );
        assert_eq!(login_host("127.0.0.1:5000").unwrap(), "127.0.0.1:5000");
        assert_eq!(
            login_host("http://127.0.0.1:5000/v2/").unwrap(),
            "127.0.0.1:5000"
        );
        assert_eq!(
            login_host("%zz").unwrap_err().to_string(),
            "unable to parse server address: parse \"https://%zz\": invalid URL escape \"%zz\""
        );
    }
}
