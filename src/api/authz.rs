//! The authorization middleware: every routed request (OPTIONS included) passes the
//! [`Chain`] before its handler and again after it, the way moby's authz middleware wraps
//! every route, with what dockerd 20.10 shows plugins and what its clients see:
//!
//! * A refusal in the request phase is the error alone (no `Api-Version`/`Server` headers: those
//!   are set inside the middleware).
//! * After the handler, the plugins see the response as moby buffers it: the status (left out
//!   when the handler never set one, as 20.10's `/_ping` does), the headers the handler and the
//!   version middleware set, and a JSON body. A body larger than [`RESPONSE_BUFFER`] is on its
//!   way before they are asked: they see neither status nor headers nor body, the client gets
//!   the status and headers at once, and a refusal then becomes the body. A streamed body
//!   (progress) is flushed as it comes and a refusal is appended to it. A refusal of a buffered
//!   response replaces it with the error (again without the common headers).
//! * When the handler failed, its error is the answer whatever the plugins say; they are
//!   asked all the same (status and body unset), and only if they allow does the error carry
//!   the common headers.
//!
//! berth adds what the chain needs to be sound (moby 41452, CVE-2024-41110): a request body is
//! read before the handler runs, whatever its framing, up to [`MAX_BODY_SIZE`] and no further,
//! and the handler reads exactly the bytes the plugins saw; a body the plugins are not shown
//! (not declared JSON) is refused on every route but those taking a tar; and a path the router
//! would decode (percent-escapes) or an absolute URI is refused, so no handler runs under a URI
//! the plugins did not see.

use std::convert::Infallible;
use std::future::{ready, Future};
use std::pin::Pin;
use std::sync::Arc;

use actix_web::body::{BodySize, BodyStream, BoxBody, MessageBody};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::routes::RouteId;
use super::version::Compat;
use super::{error_response, Handled, Routed};
use crate::authz::request::{
    request_headers, response_headers, shows_body, shows_response_body, MAX_BODY_SIZE,
    RESPONSE_BUFFER,
};
use crate::authz::{AuthzError, Chain};
use crate::drivers::authz::{AuthzRequest, GoBytes, Phase};

/// The unix socket peer's user, found once per connection (`--authz-peer-credentials`).
#[derive(Debug, Clone)]
pub(super) struct PeerUser(String);

/// `HttpServer::on_connect`: remembers who is on the other end of a unix socket connection
/// (user name, else uid).
pub(super) fn remember_peer(connection: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    let Some(stream) = connection.downcast_ref::<tokio::net::UnixStream>() else {
        return;
    };
    match stream.peer_cred() {
        Ok(credentials) => {
            let uid = credentials.uid();
            let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| uid.to_string());
            data.insert(PeerUser(user));
        }
        Err(e) => log::warn!("no peer credentials for an API connection: {e}"),
    }
}

/// How moby's handler for a route writes its answer where berth's differs in form only.
#[derive(Debug, Clone, Copy, Default)]
struct GoWrites {
    /// The handler never calls `WriteHeader`: plugins get no status.
    implicit_status: bool,
    /// Go sniffs the `Content-Type` when the body is written: plugins do not see it.
    sniffed_content_type: bool,
}

fn go_writes(routed: &Routed) -> GoWrites {
    match routed.route.map(|r| r.id) {
        Some(RouteId::Ping) => GoWrites {
            implicit_status: true,
            sniffed_content_type: true,
        },
        Some(RouteId::PingHead) => GoWrites {
            implicit_status: true,
            sniffed_content_type: false,
        },
        _ => GoWrites::default(),
    }
}

/// Runs `serve` between the request and response phases of `chain`.
pub(super) async fn guard<F, Fut>(
    chain: Arc<Chain>,
    routed: Routed,
    req: HttpRequest,
    payload: web::Payload,
    serve: F,
) -> HttpResponse
where
    F: FnOnce(Routed, HttpRequest, web::Payload) -> Fut,
    Fut: Future<Output = Handled>,
{
    let compat = routed.compat.clone();
    let writes = go_writes(&routed);
    let opaque_body = routed.route.is_some_and(|r| r.opaque_body);
    let (request, payload) = match prepare(&chain, &req, payload, opaque_body).await {
        Ok(prepared) => prepared,
        Err(e) => return refuse(Phase::Request, &req, e, &compat),
    };
    if let Err(e) = chain.authorize(Phase::Request, &request).await {
        return refuse(Phase::Request, &req, e, &compat);
    }
    let method = req.method().to_string();
    let handled = serve(routed, req, payload).await;
    respond(chain, request, handled, writes, compat, method).await
}

fn refuse(phase: Phase, req: &HttpRequest, e: AuthzError, compat: &Compat) -> HttpResponse {
    log_refusal(phase, req.method().as_str(), &request_uri(req), &e);
    error_response(&e.into(), compat)
}

fn log_refusal(phase: Phase, method: &str, uri: &str, e: &AuthzError) {
    let name = match phase {
        Phase::Request => "AuthZRequest",
        Phase::Response => "AuthZResponse",
    };
    log::error!("{name} for {method} {uri} returned error: {e}");
}

/// The request target as the client sent it.
fn request_uri(req: &HttpRequest) -> String {
    let uri = req.uri();
    if uri.scheme().is_some() {
        return uri.to_string();
    }
    uri.path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string())
}

/// The request as the plugins are shown it, and the body the handler will read.
async fn prepare(
    chain: &Chain,
    req: &HttpRequest,
    mut payload: web::Payload,
    opaque_body: bool,
) -> Result<(AuthzRequest, web::Payload), AuthzError> {
    let uri = req.uri();
    if uri.scheme().is_some() || uri.authority().is_some() || uri.path().contains('%') {
        return Err(AuthzError::AmbiguousTarget(request_uri(req)));
    }
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut request = AuthzRequest {
        request_method: req.method().to_string(),
        request_uri: request_uri(req),
        request_headers: request_headers(req.headers().iter().map(|(n, v)| {
            (
                n.as_str(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })),
        ..Default::default()
    };
    if chain.peer_credentials() {
        if let Some(PeerUser(user)) = req.conn_data::<PeerUser>() {
            request.user = user.clone();
            request.user_authn_method = "peercred".to_string();
        }
    }
    if shows_body(uri.path(), content_type.as_deref()) {
        let body = read_limited(&mut payload).await?;
        request.request_body = GoBytes(body.clone());
        return Ok((request, replay(req, body)?));
    }
    if !opaque_body && !at_end(&mut payload).await? {
        return Err(AuthzError::UnseenBody {
            content_type: content_type.unwrap_or_default(),
        });
    }
    Ok((request, payload))
}

/// The whole body, refused once it passes [`MAX_BODY_SIZE`] (the rest is never read).
async fn read_limited(payload: &mut web::Payload) -> Result<bytes::Bytes, AuthzError> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| AuthzError::ReadBody(e.to_string()))?;
        if body.len() + chunk.len() > MAX_BODY_SIZE {
            return Err(AuthzError::BodyTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Whether the body is empty (reads at most its first bytes).
async fn at_end(payload: &mut web::Payload) -> Result<bool, AuthzError> {
    while let Some(chunk) = payload.next().await {
        if !chunk
            .map_err(|e| AuthzError::ReadBody(e.to_string()))?
            .is_empty()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A payload holding exactly `body`, for the handler.
fn replay(req: &HttpRequest, body: bytes::Bytes) -> Result<web::Payload, AuthzError> {
    use actix_web::FromRequest as _;
    let mut payload = actix_web::dev::Payload::from(body);
    web::Payload::from_request(req, &mut payload)
        .into_inner()
        .map_err(|e| AuthzError::ReadBody(e.to_string()))
}

async fn respond(
    chain: Arc<Chain>,
    mut request: AuthzRequest,
    handled: Handled,
    writes: GoWrites,
    compat: Compat,
    method: String,
) -> HttpResponse {
    let Handled { result, common } = handled;
    let mut response = match result {
        Ok(response) => response,
        Err(e) => {
            request.response_headers =
                response_headers(common.pairs().iter().map(|(n, v)| (*n, v.clone())));
            let allowed = ask(&chain, &request, &method).await.is_ok();
            let mut response = error_response(&e, &compat);
            if allowed {
                common.apply(&mut response);
            }
            return response;
        }
    };
    common.apply(&mut response);
    let (head, body) = response.into_parts();
    let size = body.size();
    if matches!(size, BodySize::Stream) {
        return head.set_body(authorized_after(body, chain, request, compat, method));
    }
    let body = match body.try_into_bytes() {
        Ok(bytes) => bytes,
        Err(body) => return head.set_body(authorized_after(body, chain, request, compat, method)),
    };
    if body.len() > RESPONSE_BUFFER {
        // Gone to the client before the plugins are asked: they see none of it.
        let verdict = ask(&chain, &request, &method).await;
        let sent = match verdict {
            Ok(()) => body,
            Err(e) => error_bytes(e, &compat),
        };
        let stream = futures_util::stream::once(ready(Ok::<_, Infallible>(sent)));
        return head.set_body(BoxBody::new(BodyStream::new(stream)));
    }
    let mut shown = head.headers().iter().collect::<Vec<_>>();
    if writes.sniffed_content_type {
        shown.retain(|(name, _)| *name != actix_web::http::header::CONTENT_TYPE);
    }
    request.response_headers = response_headers(shown.into_iter().map(|(n, v)| {
        (
            n.as_str(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )
    }));
    if !writes.implicit_status {
        request.response_status_code = head.status().as_u16();
    }
    let content_type = head
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if shows_response_body(content_type) {
        request.response_body = GoBytes(body.clone());
    }
    match ask(&chain, &request, &method).await {
        // A response without a body (204) keeps having none.
        Ok(()) if size == BodySize::None => head.set_body(BoxBody::new(())),
        Ok(()) => head.set_body(BoxBody::new(body)),
        Err(e) => error_response(&e.into(), &compat),
    }
}

/// The response phase, logged when it refuses.
async fn ask(chain: &Chain, request: &AuthzRequest, method: &str) -> Result<(), AuthzError> {
    let verdict = chain.authorize(Phase::Response, request).await;
    if let Err(e) = &verdict {
        log_refusal(Phase::Response, method, &request.request_uri, e);
    }
    verdict
}

/// An error's body as `error_response` renders it (appended to a response already sent).
fn error_bytes(e: AuthzError, compat: &Compat) -> bytes::Bytes {
    error_response(&e.into(), compat)
        .into_body()
        .try_into_bytes()
        .unwrap_or_default()
}

/// `body` as it streams, then the response phase; a refusal is appended to what was sent.
fn authorized_after(
    mut body: BoxBody,
    chain: Arc<Chain>,
    request: AuthzRequest,
    compat: Compat,
    method: String,
) -> BoxBody {
    let streamed = futures_util::stream::poll_fn(move |cx| Pin::new(&mut body).poll_next(cx));
    let verdict = futures_util::stream::once(async move {
        match ask(&chain, &request, &method).await {
            Ok(()) => None,
            Err(e) => Some(Ok(error_bytes(e, &compat))),
        }
    })
    .filter_map(ready);
    BoxBody::new(BodyStream::new(streamed.chain(verdict)))
}
