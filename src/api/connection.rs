//! Noticing a client that went away while a handler has nothing to write to it: an idle
//! `/events` stream, a `system df` still measuring. actix notices only when a write fails (and
//! does not poll a response's body once its client has closed while it had nothing to send),
//! so such handlers are watched from a task of their own that looks at the socket and, when the
//! client has hung up, stops their work (which ends their response, and actix drops the
//! connection when writing it fails).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Weak};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// A duplicate of a connection's socket (kept in the connection's data, closed with it).
#[derive(Clone)]
pub(super) struct ClientSocket(Arc<OwnedFd>);

/// `HttpServer::on_connect`: keeps a handle on each unix socket connection.
pub(super) fn remember(connection: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    let Some(stream) = connection.downcast_ref::<tokio::net::UnixStream>() else {
        return;
    };
    match stream.as_fd().try_clone_to_owned() {
        Ok(fd) => {
            data.insert(ClientSocket(Arc::new(fd)));
        }
        Err(e) => log::warn!("cannot watch an API connection for hang-ups: {e}"),
    }
}

impl ClientSocket {
    /// Whether the client has closed the connection (or it broke). A client that only shut
    /// down its sending side is still there: it may be reading.
    fn hung_up(&self) -> bool {
        // POLLHUP and POLLERR are reported whatever is asked for.
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) | Err(_) => false,
            Ok(_) => fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
        }
    }
}

/// Keeps a watch going while it lives (drop it when the watched work is done).
pub(super) struct Watch {
    _alive: Arc<()>,
}

/// Looks every `interval` whether the client of a request has hung up and then calls
/// `stop` once, from a task of its own, unless the returned [`Watch`] was dropped first.
/// Without a known socket nothing is watched.
pub(super) fn on_hang_up(
    client: Option<ClientSocket>,
    interval: Duration,
    stop: impl FnOnce() + 'static,
) -> Watch {
    let alive = Arc::new(());
    if let Some(client) = client {
        let watched: Weak<()> = Arc::downgrade(&alive);
        actix_rt::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if watched.strong_count() == 0 {
                    return;
                }
                if client.hung_up() {
                    stop();
                    return;
                }
            }
        });
    }
    Watch { _alive: alive }
}
