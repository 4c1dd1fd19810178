//! Small HTTP/1.1 servers beside the Docker API: the metrics endpoint and the volume plugin
//! sockets other engines call. They answer a handful of fixed paths, open and close while the
//! daemon runs (a volume plugin's socket lives while the plugin is enabled), and run on the
//! daemon's main runtime, one task per listener and per connection.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// A request as handlers see it: method, path, whole body.
pub struct SideRequest {
    pub method: hyper::Method,
    pub path: String,
    pub body: Bytes,
}

/// An answer: status, `Content-Type`, body.
pub struct SideResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl SideResponse {
    pub fn json(status: u16, value: &serde_json::Value) -> SideResponse {
        let mut body = serde_json::to_vec(value).unwrap_or_default();
        body.push(b'\n');
        SideResponse {
            status,
            content_type: "application/json",
            body: body.into(),
        }
    }

    pub fn text(status: u16, text: impl Into<String>) -> SideResponse {
        SideResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from(text.into()),
        }
    }
}

pub type BoxAnswer = Pin<Box<dyn Future<Output = SideResponse>>>;

/// What answers a side server's requests.
pub type Handler = Rc<dyn Fn(SideRequest) -> BoxAnswer>;

/// Requests larger than this are refused: side endpoints take small JSON bodies.
const MAX_BODY: usize = 1 << 20;

/// A listener bound before the runtime starts (so its socket exists early, e.g. the metrics
/// socket before MetricsCollector plugins are started with it mounted).
pub enum SideListener {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
}

impl SideListener {
    /// A unix socket at `path`, mode `mode`; a stale socket file is replaced.
    pub fn bind_unix(path: &Path, mode: u32) -> anyhow::Result<SideListener> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path)
            .with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        Ok(SideListener::Unix(listener))
    }

    pub fn bind_tcp(addr: std::net::SocketAddr) -> anyhow::Result<SideListener> {
        let listener =
            std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        Ok(SideListener::Tcp(listener))
    }
}

/// A running side server; dropping it stops accepting (connections already open finish) and
/// removes the socket file it was given.
pub struct SideServer {
    accept: tokio::task::JoinHandle<()>,
    socket: Option<PathBuf>,
}

impl Drop for SideServer {
    fn drop(&mut self) {
        self.accept.abort();
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Serves `listener` with `handler` on the current (actix) runtime. `socket`: a file to remove
/// when the server is dropped.
pub fn serve(
    listener: SideListener,
    socket: Option<PathBuf>,
    handler: Handler,
) -> anyhow::Result<SideServer> {
    let listener = match listener {
        SideListener::Unix(l) => {
            l.set_nonblocking(true)?;
            Accepting::Unix(tokio::net::UnixListener::from_std(l)?)
        }
        SideListener::Tcp(l) => {
            l.set_nonblocking(true)?;
            Accepting::Tcp(tokio::net::TcpListener::from_std(l)?)
        }
    };
    let accept = actix_rt::spawn(async move {
        loop {
            let accepted = match &listener {
                Accepting::Unix(l) => l
                    .accept()
                    .await
                    .map(|(s, _)| connection(TokioIo::new(s), handler.clone())),
                Accepting::Tcp(l) => l
                    .accept()
                    .await
                    .map(|(s, _)| connection(TokioIo::new(s), handler.clone())),
            };
            if let Err(e) = accepted {
                // Out of descriptors, usually: give the others time to close some.
                log::warn!("side server accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    });
    Ok(SideServer { accept, socket })
}

enum Accepting {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

fn connection<S>(io: TokioIo<S>, handler: Handler)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    actix_rt::spawn(async move {
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let handler = handler.clone();
            async move { Ok::<_, std::convert::Infallible>(answer(req, handler).await) }
        });
        let served = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
        if let Err(e) = served {
            log::debug!("side server connection: {e}");
        }
    });
}

async fn answer(req: Request<Incoming>, handler: Handler) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let response = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => {
            handler(SideRequest {
                method: parts.method,
                path: parts.uri.path().to_string(),
                body: collected.to_bytes(),
            })
            .await
        }
        Err(e) => SideResponse::text(413, format!("reading the request: {e}\n")),
    };
    Response::builder()
        .status(response.status)
        .header("content-type", response.content_type)
        .body(Full::new(response.body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
