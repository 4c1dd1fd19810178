//! Requests on one repository: URLs on the endpoint in use, sending with its credentials (and
//! re-authenticating once on a 401), header deadlines, and bodies read chunk by chunk under a
//! stall timeout and an optional whole-request deadline.

use bytes::Bytes;
use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::{Method, Response, StatusCode};
use tokio::time::Instant;

use super::auth::parse_challenges;
use super::error::{go_method, transport_error};
use super::{RegistryError, Result, Session};
use crate::goerr::go_duration;

impl Session {
    pub(super) async fn next_chunk(
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
    pub(super) async fn read_bounded(
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

    /// `<base>/v2/<repo><suffix>`.
    pub(super) fn url(&self, suffix: &str) -> String {
        let index = self.state.lock().unwrap().index;
        format!(
            "{}/v2/{}{suffix}",
            self.endpoints[index].base, self.reference.path
        )
    }

    pub(super) fn client_and_auth(&self) -> (reqwest::Client, Option<String>) {
        let state = self.state.lock().unwrap();
        let endpoint = &self.endpoints[state.index];
        (
            self.shared.client(endpoint.skip_verify).clone(),
            state.authorization.clone(),
        )
    }

    /// Sends a request to the endpoint in use with its credentials; a 401 with a challenge
    /// re-authenticates once and repeats the request. Waits `request_timeout` for the headers.
    pub(super) async fn send(
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

    pub(super) async fn execute(
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
}

pub(super) enum ChunkError {
    /// No data for the stall timeout, or the whole-request deadline passed.
    Timeout(RegistryError),
    /// The body broke off (connection closed before its announced end, reset, …).
    Body,
}

pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
