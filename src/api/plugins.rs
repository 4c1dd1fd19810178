//! `/plugins` handlers: decode the request, call the plugin manager, encode the reply.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::body;
use super::filters::Filters;
use super::{json_response, Call};
use crate::error::{Error, Result};
use crate::plugin::manager::{parse_capability, EnabledFilter, Manager};

/// Runs blocking store work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    web::block(f)
        .await
        .map_err(|e| Error::System(format!("worker failed: {e}")))?
}

/// Runs `op` on the manager with the request's plugin name, off the async workers.
async fn on_plugin<T: Send + 'static>(
    call: &Call,
    op: impl FnOnce(&Manager, &str) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (manager, name) = (call.state.plugins.clone(), call.name.clone());
    blocking(move || op(&manager, &name)).await
}

pub async fn list(call: Call) -> Result<HttpResponse> {
    let filters = Filters::parse_request(&call.query("filters"), &call.compat)?;
    filters.validate(&["enabled", "capability"], &call.compat)?;
    let enabled = if !filters.contains("enabled") {
        EnabledFilter::Any
    } else if filters.exact_match("enabled", "true") {
        EnabledFilter::EnabledOnly
    } else if filters.exact_match("enabled", "false") {
        EnabledFilter::DisabledOnly
    } else {
        return Err(filters.invalid_value(&call.compat, "enabled"));
    };
    let plugins = call.state.plugins.list(enabled, |plugin| {
        !filters.contains("capability")
            || plugin.config.interface.types.iter().flatten().all(|t| {
                let capability = parse_capability(t).map(|(_, c)| c).unwrap_or_default();
                filters.matches("capability", &capability)
            })
    });
    Ok(json_response(StatusCode::OK, &plugins))
}

pub async fn inspect(call: Call) -> Result<HttpResponse> {
    let plugin = call.state.plugins.get(&call.name)?;
    Ok(json_response(StatusCode::OK, &plugin))
}

pub async fn set(call: Call, payload: web::Payload) -> Result<HttpResponse> {
    let args = body::read_string_list(&call, payload).await?;
    on_plugin(&call, move |manager, name| manager.set(name, &args)).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn remove(call: Call) -> Result<HttpResponse> {
    let force = call.query_bool("force");
    on_plugin(&call, move |manager, name| manager.remove(name, force)).await?;
    Ok(HttpResponse::Ok().finish())
}

pub async fn enable(call: Call) -> Result<HttpResponse> {
    // moby parses the mandatory `timeout` with strconv.Atoi and reports its error verbatim.
    let text = call.query("timeout");
    let seconds: i64 = text.parse().map_err(|_| {
        let digits = text.strip_prefix(['+', '-']).unwrap_or(&text);
        let reason = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            "value out of range"
        } else {
            "invalid syntax"
        };
        call.compat.request_error(format!(
            "strconv.Atoi: parsing {}: {reason}",
            crate::gojson::go_quote(&text)
        ))
    })?;
    let rpc_timeout = std::time::Duration::from_secs(seconds.max(0) as u64);
    on_plugin(&call, move |manager, name| {
        manager.enable(name, rpc_timeout)
    })
    .await?;
    Ok(HttpResponse::Ok().finish())
}

pub async fn disable(call: Call) -> Result<HttpResponse> {
    let force = call.query_bool("force");
    on_plugin(&call, move |manager, name| manager.disable(name, force)).await?;
    Ok(HttpResponse::Ok().finish())
}

/// berth extension: the plugin's recent output, one line per entry
/// (`<RFC3339 time> <stdout|stderr|daemon> <text>`); `?tail=N` keeps the last N.
pub async fn logs(call: Call) -> Result<HttpResponse> {
    let tail = match call.query("tail").as_str() {
        "" | "all" => None,
        n => Some(n.parse::<usize>().map_err(|_| {
            Error::InvalidParameter(format!(
                "invalid tail value {n:?}: expected a number or \"all\""
            ))
        })?),
    };
    let lines = call.state.plugins.logs(&call.name, tail)?;
    let mut body = lines.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    Ok(HttpResponse::Ok()
        .insert_header(("content-type", "text/plain; charset=utf-8"))
        .body(body))
}

/// berth extension: the running plugins (`berth plugin ps`).
pub async fn ps(call: Call) -> Result<HttpResponse> {
    Ok(json_response(StatusCode::OK, &call.state.plugins.running()))
}

/// berth extension: the process `berth plugin exec` joins; 409 when the plugin is not running.
pub async fn process(call: Call) -> Result<HttpResponse> {
    let target = on_plugin(&call, |manager, name| manager.exec_target(name)).await?;
    Ok(json_response(StatusCode::OK, &target))
}

/// berth extension: where the plugin's socket and files are on this host (for
/// `berth conformance --plugin`).
pub async fn endpoint(call: Call) -> Result<HttpResponse> {
    let endpoint = call.state.plugins.public_endpoint(&call.name)?;
    Ok(json_response(StatusCode::OK, &endpoint))
}

/// The upload is received whole into a spool file (memory stays flat, no blocking thread
/// waits on the client) before the unpacker runs; an upload that fails or stalls creates
/// nothing.
pub async fn create(call: Call, payload: web::Payload) -> Result<HttpResponse> {
    let name = call.query("name");
    let manager = call.state.plugins.clone();
    let slot = call.state.uploads.admit()?;
    let context = body::spool(payload, manager.upload_spool()?).await?;
    blocking(move || {
        let _slot = slot;
        manager.create(&name, context)
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
