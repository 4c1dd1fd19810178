//! The HTTP surface: one dispatcher in front of a route table, so the `/vX.Y` prefix, version
//! checks, common headers and the 404 for unknown routes behave as moby's mux does, and every
//! error leaves through [`error_response`]. When authorization plugins are configured, every
//! routed request passes them around its handler ([`authz`]), as moby's authz middleware wraps
//! every route.

mod authz;
pub mod body;
mod connection;
mod events;
mod filters;
mod networks;
mod plugins;
mod remote;
pub mod routes;
mod system;
pub mod version;
mod volumes;

use std::future::Future;
use std::sync::Arc;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::plugin::manager::Manager;
use routes::{recognize, split_version, RouteId};
pub use system::build_description;
use version::{ApiVersion, Compat, DEFAULT_API_VERSION, MAX_API_VERSION, MIN_API_VERSION};

/// What handlers share: the services behind the API and the daemon's identity.
pub struct ApiState {
    pub plugins: Arc<Manager>,
    pub volumes: Arc<crate::volume::service::VolumeService>,
    pub networks: Arc<crate::network::service::NetworkService>,
    pub events: Arc<crate::events::EventBus>,
    /// The authorization plugins every routed request passes (empty: none).
    pub authz: Arc<crate::authz::Chain>,
    pub daemon: system::DaemonIdentity,
    /// The idle timeout of every request body and the bound on concurrent uploads.
    pub uploads: body::Uploads,
}

/// One request after routing: the version it asked for, its `{name}`, and the raw request.
pub struct Call {
    pub req: HttpRequest,
    pub compat: Compat,
    pub name: String,
    pub state: web::Data<ApiState>,
}

impl Call {
    /// A query parameter, or "" when absent (Go's `r.Form.Get`).
    pub fn query(&self, key: &str) -> String {
        web::Query::<Vec<(String, String)>>::from_query(self.req.query_string())
            .ok()
            .and_then(|q| q.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
            .unwrap_or_default()
    }

    /// Every value of a query parameter, or `None` when it is absent (Go's `r.Form[key]`).
    pub fn query_all(&self, key: &str) -> Option<Vec<String>> {
        let pairs =
            web::Query::<Vec<(String, String)>>::from_query(self.req.query_string()).ok()?;
        let values: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect();
        (!values.is_empty()).then_some(values)
    }

    /// moby's `httputils.BoolValue`: false only for "", "0", "no", "false", "none".
    pub fn query_bool(&self, key: &str) -> bool {
        let value = self.query(key);
        !matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "no" | "false" | "none"
        )
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.req.headers().get(name).and_then(|v| v.to_str().ok())
    }
}

/// The identity `/version` and `/info` report for a daemon started now.
pub fn system_identity(
    api_version: &str,
    data_root: &std::path::Path,
    exec_root: &std::path::Path,
) -> system::DaemonIdentity {
    system::DaemonIdentity {
        api_version: api_version.to_string(),
        data_root: data_root.display().to_string(),
        exec_root: exec_root.display().to_string(),
        started: chrono::Utc::now(),
    }
}

/// Binds every `--host` socket and serves until the process is told to stop.
/// Serves the API on `listeners` until SIGTERM or SIGINT. `started` runs once the server's
/// workers and accept loop are running, so every connection from then on is answered.
pub async fn serve(
    state: ApiState,
    listeners: Vec<std::os::unix::net::UnixListener>,
    started: impl FnOnce(),
) -> std::io::Result<()> {
    let peer_credentials = state.authz.peer_credentials();
    let state = web::Data::new(state);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            // Bodies are streamed by the handlers themselves; no size limit applies here.
            .app_data(web::PayloadConfig::new(usize::MAX))
            .default_service(web::to(dispatch))
    })
    .workers(2)
    .on_connect(move |connection, data| {
        connection::remember(connection, data);
        if peer_credentials {
            authz::remember_peer(connection, data);
        }
    });
    for listener in listeners {
        server = server.listen_uds(listener)?;
    }
    // The first poll of actix's server starts its workers and accept thread and returns only
    // once they run (it waits for each to report); that moment is when the API answers, found
    // without sending the API a request of its own (which plugins and metrics would see).
    let mut server = std::pin::pin!(server.run());
    let mut started = Some(started);
    std::future::poll_fn(|cx| {
        let polled = server.as_mut().poll(cx);
        if polled.is_pending() {
            if let Some(started) = started.take() {
                started();
            }
        }
        polled
    })
    .await
}

/// What a request addresses once routing has accepted it.
pub(crate) struct Routed {
    /// `None` for `OPTIONS`, which moby answers on any path.
    route: Option<&'static routes::Route>,
    name: String,
    version: ApiVersion,
    /// Whether the path carried a `/vX.Y` prefix.
    versioned: bool,
    compat: Compat,
}

/// A handler's result and the headers moby's version and experimental middlewares set
/// around it (they sit inside the authorization middleware, so plugins see them).
pub(crate) struct Handled {
    result: Result<HttpResponse>,
    common: CommonHeaders,
}

impl Handled {
    fn into_response(self, compat: &Compat) -> HttpResponse {
        let mut response = self.result.unwrap_or_else(|e| error_response(&e, compat));
        self.common.apply(&mut response);
        response
    }
}

async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> HttpResponse {
    let routing = route(&req);
    if !crate::metrics::enabled() {
        return respond(routing, req, payload, state).await;
    }
    let started = std::time::Instant::now();
    let method = metrics_method(req.method());
    let pattern = match &routing {
        Routing::To(routed) => routed.route.map(|r| r.pattern),
        Routing::Answered(_) => None,
    };
    let response = respond(routing, req, payload, state).await;
    crate::metrics::api_request(
        method,
        pattern,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The method as a metrics label (a fixed set, so labels cannot grow without bound).
fn metrics_method(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn respond(
    routing: Routing,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> HttpResponse {
    let payload = body::with_idle_timeout(&req, payload, state.uploads.idle_timeout());
    let routed = match routing {
        Routing::To(routed) => routed,
        // Redirects and 404s reach no handler and, as in moby, no authorization plugin.
        Routing::Answered(response) => return response,
    };
    if state.authz.is_empty() {
        let compat = routed.compat.clone();
        return handle(routed, req, payload, state)
            .await
            .into_response(&compat);
    }
    let chain = state.authz.clone();
    authz::guard(chain, routed, req, payload, move |routed, req, payload| {
        handle(routed, req, payload, state)
    })
    .await
}

/// Where routing sends a request.
enum Routing {
    To(Routed),
    /// The answer of a request that reaches no handler.
    Answered(HttpResponse),
}

fn route(req: &HttpRequest) -> Routing {
    let options = req.method() == actix_web::http::Method::OPTIONS;
    let decoded = routes::decode_path(req.path());
    let clean = routes::clean_path(&decoded);
    if clean != decoded && !options {
        let mut location = clean;
        if !req.query_string().is_empty() {
            location = format!("{location}?{}", req.query_string());
        }
        return Routing::Answered(
            HttpResponse::MovedPermanently()
                .insert_header(("location", location))
                .finish(),
        );
    }
    let (requested, path) = split_version(&decoded);
    let matched = if options {
        None
    } else {
        match recognize(req.method().as_str(), path) {
            Some(matched) => Some(matched),
            None => {
                return Routing::Answered(json_message(StatusCode::NOT_FOUND, "page not found"))
            }
        }
    };
    let version = requested
        .map(ApiVersion::parse)
        .unwrap_or_else(|| ApiVersion::parse(DEFAULT_API_VERSION));
    Routing::To(Routed {
        route: matched.as_ref().map(|m| m.route),
        name: matched.and_then(|m| m.name).unwrap_or_default(),
        compat: Compat::new(version.clone()),
        version,
        versioned: requested.is_some(),
    })
}

async fn handle(
    routed: Routed,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Handled {
    let mut common = CommonHeaders {
        api_version: state.daemon.api_version.clone(),
        experimental: false,
    };
    let Some(route) = routed.route else {
        common.experimental = true;
        return Handled {
            result: Ok(HttpResponse::Ok().finish()),
            common,
        };
    };
    // moby's experimental middleware sits inside the version check, so a refused version gets
    // no `Docker-Experimental` header.
    if let Err(e) = check_version(&routed, route, &req) {
        return Handled {
            result: Err(e),
            common,
        };
    }
    common.experimental = true;
    let call = Call {
        req,
        compat: routed.compat,
        name: routed.name,
        state,
    };
    Handled {
        result: run(route.id, call, payload).await,
        common,
    }
}

async fn run(id: RouteId, call: Call, payload: web::Payload) -> Result<HttpResponse> {
    match id {
        RouteId::Ping => system::ping(call, false).await,
        RouteId::PingHead => system::ping(call, true).await,
        RouteId::Version => system::version(call).await,
        RouteId::Info => system::info(call).await,
        RouteId::Events => events::events(call).await,
        RouteId::SystemDf => system::disk_usage(call).await,
        RouteId::Auth => system::auth(call, payload).await,
        RouteId::PluginList => plugins::list(call).await,
        RouteId::PluginCreate => plugins::create(call, payload).await,
        RouteId::PluginInspect => plugins::inspect(call).await,
        RouteId::PluginSet => plugins::set(call, payload).await,
        RouteId::PluginRemove => plugins::remove(call).await,
        RouteId::PluginEnable => plugins::enable(call).await,
        RouteId::PluginDisable => plugins::disable(call).await,
        RouteId::PluginLogs => plugins::logs(call).await,
        RouteId::PluginPs => plugins::ps(call).await,
        RouteId::PluginProcess => plugins::process(call).await,
        RouteId::PluginEndpoint => plugins::endpoint(call).await,
        RouteId::PluginPrivileges => remote::privileges(call).await,
        RouteId::PluginPull => remote::pull(call, payload).await,
        RouteId::PluginUpgrade => remote::upgrade(call, payload).await,
        RouteId::PluginPush => remote::push(call).await,
        RouteId::VolumeList => volumes::list(call).await,
        RouteId::VolumeCreate => volumes::create(call, payload).await,
        RouteId::VolumePrune => volumes::prune(call).await,
        RouteId::VolumeInspect => volumes::inspect(call).await,
        RouteId::VolumeUpdate => volumes::update(call).await,
        RouteId::VolumeRemove => volumes::remove(call).await,
        RouteId::VolumeMount => volumes::mount(call).await,
        RouteId::VolumeUnmount => volumes::unmount(call).await,
        RouteId::NetworkList => networks::list(call).await,
        RouteId::NetworkCreate => networks::create(call, payload).await,
        RouteId::NetworkPrune => networks::prune(call).await,
        RouteId::NetworkInspect => networks::inspect(call).await,
        RouteId::NetworkRemove => networks::remove(call).await,
        RouteId::NetworkConnect => networks::connect(call, payload).await,
        RouteId::NetworkDisconnect => networks::disconnect(call, payload).await,
    }
}

fn check_version(routed: &Routed, route: &routes::Route, req: &HttpRequest) -> Result<()> {
    // The served range bounds versions clients ask for; a route's own minimum also holds for
    // unversioned requests, which are made at the default version (as in moby).
    let version = &routed.version;
    if routed.versioned {
        check_served_range(version)?;
    }
    if let Some(min) = route.min_version {
        if version.less_than(min) {
            // moby names the route as registered, with its path pattern.
            let pattern = route.pattern.replace("{name}", "{name:.*}");
            return Err(Error::InvalidParameter(format!(
                "{} {pattern} requires minimum API version {min}",
                req.method()
            )));
        }
    }
    Ok(())
}

fn check_served_range(version: &ApiVersion) -> Result<()> {
    if *version > ApiVersion::parse(MAX_API_VERSION) {
        return Err(Error::InvalidParameter(format!(
            "client version {version} is too new. Maximum supported API version is {MAX_API_VERSION}"
        )));
    }
    if version.less_than(MIN_API_VERSION) {
        return Err(Error::InvalidParameter(format!(
            "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    Ok(())
}

/// `Api-Version`, `Server`, `Ostype` and, once the version is accepted, `Docker-Experimental`.
pub(crate) struct CommonHeaders {
    api_version: String,
    experimental: bool,
}

impl CommonHeaders {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            ("api-version", self.api_version.clone()),
            (
                "server",
                format!("berth/{} (linux)", env!("CARGO_PKG_VERSION")),
            ),
            ("ostype", "linux".to_string()),
        ];
        if self.experimental {
            pairs.push(("docker-experimental", "false".to_string()));
        }
        pairs
    }

    fn apply(&self, response: &mut HttpResponse) {
        let headers = response.headers_mut();
        for (name, value) in self.pairs() {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
    }
}

/// The one place an error becomes a response: Docker's status for its class and a
/// `{"message": ...}` body whose Content-Type is exactly `application/json` (the CLI compares
/// the header as a string before decoding).
pub fn error_response(error: &Error, compat: &Compat) -> HttpResponse {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        log::error!("Handler for request returned an error: {}", error.message());
    } else {
        log::debug!("request failed ({}): {}", status.as_u16(), error.message());
    }
    if compat.plain_text_errors() {
        return HttpResponse::build(status)
            .insert_header(("content-type", "text/plain; charset=utf-8"))
            .insert_header(("x-content-type-options", "nosniff"))
            .body(format!("{}\n", error.message()));
    }
    json_message(status, error.message())
}

fn json_message(status: StatusCode, message: &str) -> HttpResponse {
    #[derive(Serialize)]
    struct Message<'a> {
        message: &'a str,
    }
    json_response(status, &Message { message })
}

/// A JSON body as Go's encoder writes it: trailing newline, exact Content-Type.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> HttpResponse {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            HttpResponse::build(status)
                .insert_header(("content-type", "application/json"))
                .body(body)
        }
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}
