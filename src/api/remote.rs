//! Plugins from registries: `/plugins/privileges`, `/plugins/pull`, `/plugins/{name}/upgrade`,
//! `/plugins/{name}/push`. Checks that can fail fast answer with a normal HTTP error; the
//! transfer itself is a JSON-message stream, whose last message carries any error.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::body::{self, LegacyContentType};
use super::{json_response, Call};
use crate::distribution::reference::Reference;
use crate::distribution::registry::AuthConfig;
use crate::error::{Error, Result};
use crate::plugin::manager::Manager;
use crate::plugin::names::pull_names;
use crate::plugin::privileges::PluginPrivilege;
use crate::plugin::remote::StreamError;
use crate::progress::{Progress, ProgressReceiver};

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

/// Runs a streamed operation; its error becomes the stream's last message.
fn run_streamed<F, Fut>(manager: Arc<Manager>, progress: Progress, operation: F)
where
    F: FnOnce(Arc<Manager>, Progress) -> Fut + 'static,
    Fut: std::future::Future<Output = std::result::Result<(), StreamError>> + 'static,
{
    actix_web::rt::spawn(async move {
        match operation(manager, progress.clone()).await {
            Ok(()) => {}
            Err(StreamError::Failed(e)) => {
                log::info!("plugin transfer failed: {}", e.message());
                let _ = progress.error(e.message()).await;
            }
            Err(StreamError::Cancelled) => log::info!("plugin transfer cancelled by the client"),
        }
    });
}

fn parse_remote(call: &Call, remote: &str) -> Result<Reference> {
    Reference::parse_normalized(remote).map_err(|e| {
        if call.compat.legacy() {
            Error::System(e.to_string())
        } else {
            Error::InvalidParameter(e.to_string())
        }
    })
}

pub async fn privileges(call: Call) -> Result<HttpResponse> {
    let remote = parse_remote(&call, &call.query("remote"))?.with_default_tag();
    let list = call
        .state
        .plugins
        .remote_privileges(&call.state.registry, &remote, &auth(&call))
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
    let names = pull_names(
        &call.query("remote"),
        &call.query("name"),
        call.compat.legacy(),
    )?;
    call.state.plugins.check_pull_name(&names)?;
    let (registry, auth) = (call.state.registry.clone(), auth(&call));
    let resolved = call
        .state
        .plugins
        .resolve_remote(&registry, &names.remote, &auth)
        .await?;
    let (progress, receiver) = Progress::channel();
    let local_name = names.name.clone();
    run_streamed(
        call.state.plugins.clone(),
        progress,
        move |manager, progress| async move {
            manager
                .pull(&registry, resolved, &names, &granted, &progress)
                .await
        },
    );
    Ok(stream(receiver, Some(&local_name)))
}

pub async fn upgrade(call: Call, payload: web::Payload) -> Result<HttpResponse> {
    let granted = granted(&call, payload).await?;
    let plugin = call.state.plugins.get(&call.name)?;
    call.state.plugins.check_upgradable(&call.name)?;
    let names = pull_names(&call.query("remote"), "", call.compat.legacy())?;
    let (registry, auth, name) = (call.state.registry.clone(), auth(&call), plugin.id.clone());
    let resolved = call
        .state
        .plugins
        .resolve_remote(&registry, &names.remote, &auth)
        .await?;
    let (progress, receiver) = Progress::channel();
    run_streamed(
        call.state.plugins.clone(),
        progress,
        move |manager, progress| async move {
            manager
                .upgrade(&registry, resolved, &name, &names, &granted, &progress)
                .await
        },
    );
    Ok(stream(receiver, Some(&plugin.name)))
}

pub async fn push(call: Call) -> Result<HttpResponse> {
    let plugin = call.state.plugins.get(&call.name)?;
    let (progress, receiver) = Progress::channel();
    let (registry, auth) = (call.state.registry.clone(), auth(&call));
    run_streamed(
        call.state.plugins.clone(),
        progress,
        move |manager, progress| async move {
            manager.push(&registry, &plugin.id, &auth, &progress).await
        },
    );
    Ok(stream(receiver, None))
}
