//! Plugins from registries: `/plugins/privileges`, `/plugins/pull`, `/plugins/{name}/upgrade`,
//! `/plugins/{name}/push`. Checks that can fail fast answer with a normal HTTP error; the
//! transfer itself is a JSON-message stream, whose last message carries any error.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::body::{self, LegacyContentType};
use super::{json_response, Call};
use crate::distribution::reference::Reference;
use crate::distribution::registry::AuthConfig;
use crate::error::{Error, Result};
use crate::plugin::names::{pull_names, PullNameError, PullNames};
use crate::plugin::privileges::PluginPrivilege;
use crate::progress::ProgressReceiver;

fn auth(call: &Call) -> AuthConfig {
    call.header("x-registry-auth")
        .map(AuthConfig::from_header)
        .unwrap_or_default()
}

/// The privileges the client grants (the body of pull and upgrade).
async fn granted(call: &Call, payload: web::Payload) -> Result<Vec<PluginPrivilege>> {
    let legacy = call.compat.legacy();
    let wrap = |e: Error| {
        if legacy {
            Error::System(format!("failed to parse privileges: {}", e.message()))
        } else {
            e
        }
    };
    let value = body::read_json(call, payload, LegacyContentType::Ignored)
        .await
        .map_err(wrap)?;
    match value {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(v @ serde_json::Value::Array(_)) => {
            serde_json::from_value(v).map_err(|e| wrap(body::type_error(call, e.to_string())))
        }
        Some(other) => Err(wrap(body::type_error(
            call,
            crate::gojson::unmarshal_type_error(
                crate::gojson::kind_name(&other),
                "types.PluginPrivileges",
            ),
        ))),
    }
}

/// A streaming 200 answer fed by `receiver`.
fn stream(receiver: ProgressReceiver, plugin_name: Option<&str>) -> HttpResponse {
    let body = futures_util::stream::unfold(receiver, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, actix_web::Error>(chunk), rx))
    });
    let mut response = HttpResponse::Ok();
    response.insert_header(("content-type", "application/json"));
    if let Some(name) = plugin_name {
        response.insert_header(("docker-plugin-name", name.to_string()));
    }
    response.streaming(body)
}

/// The names of a pull or upgrade from `remote` (and an alias): a bad reference is the
/// client's error, classed per API version.
fn names(call: &Call, alias: &str) -> Result<PullNames> {
    pull_names(&call.query("remote"), alias).map_err(|e| match e {
        PullNameError::BadReference(m) => call.compat.request_error(m),
        PullNameError::DigestAlias => Error::System(e.to_string()),
    })
}

fn parse_remote(call: &Call, remote: &str) -> Result<Reference> {
    Reference::parse_normalized(remote).map_err(|e| call.compat.request_error(e.to_string()))
}

pub async fn privileges(call: Call) -> Result<HttpResponse> {
    let remote = parse_remote(&call, &call.query("remote"))?.with_default_tag();
    let list = call
        .state
        .plugins
        .remote_privileges(&remote, &auth(&call))
        .await?;
    match list {
        // moby answers `[]` when the remote cannot be fetched ...
        None => Ok(json_response(
            StatusCode::OK,
            &Vec::<PluginPrivilege>::new(),
        )),
        // ... and a nil slice (`null`) when nothing is needed.
        Some(list) if list.is_empty() => {
            Ok(json_response(StatusCode::OK, &serde_json::Value::Null))
        }
        Some(list) => Ok(json_response(StatusCode::OK, &list)),
    }
}

pub async fn pull(call: Call, payload: web::Payload) -> Result<HttpResponse> {
    let granted = granted(&call, payload).await?;
    let names = names(&call, &call.query("name"))?;
    let local_name = names.name.clone();
    let progress = call.state.plugins.pull(names, granted, auth(&call)).await?;
    Ok(stream(progress, Some(&local_name)))
}

pub async fn upgrade(call: Call, payload: web::Payload) -> Result<HttpResponse> {
    let granted = granted(&call, payload).await?;
    let names = names(&call, "")?;
    let (name, progress) = call
        .state
        .plugins
        .upgrade(&call.name, names, granted, auth(&call))
        .await?;
    Ok(stream(progress, Some(&name)))
}

pub async fn push(call: Call) -> Result<HttpResponse> {
    let progress = call.state.plugins.push(&call.name, auth(&call))?;
    Ok(stream(progress, None))
}
