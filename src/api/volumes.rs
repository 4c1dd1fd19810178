//! `/volumes` handlers: decode the request, call the volume service, encode the reply.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::body::{self, LegacyContentType};
use super::filters::Filters;
use super::{json_response, Call};
use crate::error::{Error, Result};
use crate::gojson;
use crate::gojson::decode::{go_struct, GoMap};
use crate::volume::service::{ListFilter, PruneFilter};
use crate::volume::types::VolumeCreateBody;

fn filters(call: &Call) -> Result<Filters> {
    let legacy = call.compat.legacy();
    Filters::parse(&call.query("filters"), |message| {
        if legacy {
            Error::InvalidParameter(format!("error reading volume filters: {message}"))
        } else {
            Error::InvalidParameter("error reading volume filters: invalid filter".into())
        }
    })
}

pub async fn list(call: Call) -> Result<HttpResponse> {
    let filters = filters(&call)?;
    filters.validate(&["dangling", "driver", "label", "name"], &call.compat)?;
    let dangling = if !filters.contains("dangling") {
        None
    } else if filters.exact_match("dangling", "true") || filters.exact_match("dangling", "1") {
        Some(true)
    } else if filters.exact_match("dangling", "false") || filters.exact_match("dangling", "0") {
        Some(false)
    } else {
        return Err(filters.invalid_value(&call.compat, "dangling"));
    };
    let filter = ListFilter {
        dangling,
        drivers: filters.values("driver"),
        names: filters.values("name"),
        labels: filters.values("label"),
    };
    let listed = call.state.volumes.list(&filter).await?;
    Ok(json_response(StatusCode::OK, &listed))
}

// What Go decodes the body into: `VolumeCreateBody` in 20.10, `CreateOptions` from API 1.42
// (the names show in type errors).
go_struct!([GoVolumeCreateBody = volume.VolumeCreateBody, GoCreateOptions = volume.CreateOptions] {
    name: String = "Name",
    driver: String = "Driver",
    driver_opts: GoMap<String> = "DriverOpts",
    labels: GoMap<String> = "Labels",
});

fn create_body(
    name: String,
    driver: String,
    driver_opts: GoMap<String>,
    labels: GoMap<String>,
) -> VolumeCreateBody {
    VolumeCreateBody {
        name,
        driver,
        driver_opts: driver_opts.0,
        labels: labels.0,
    }
}

pub async fn create(call: Call, payload: web::Payload) -> Result<HttpResponse> {
    let required = LegacyContentType::Required;
    let request = if call.compat.legacy() {
        body::read_go_json::<GoVolumeCreateBody>(&call, payload, required)
            .await?
            .map(|b| create_body(b.name, b.driver, b.driver_opts, b.labels))
    } else {
        body::read_go_json::<GoCreateOptions>(&call, payload, required)
            .await?
            .map(|b| create_body(b.name, b.driver, b.driver_opts, b.labels))
    }
    .unwrap_or_default();
    let volume = call
        .state
        .volumes
        .create(
            &request.name,
            &request.driver,
            request.driver_opts,
            request.labels,
            !call.compat.legacy(),
        )
        .await?;
    Ok(json_response(StatusCode::CREATED, &volume))
}

pub async fn inspect(call: Call) -> Result<HttpResponse> {
    let volume = call.state.volumes.inspect(&call.name).await?;
    Ok(json_response(StatusCode::OK, &volume))
}

pub async fn remove(call: Call) -> Result<HttpResponse> {
    let force = call.query_bool("force");
    call.state.volumes.remove(&call.name, force).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn prune(call: Call) -> Result<HttpResponse> {
    let legacy = call.compat.legacy();
    let filters = Filters::parse_request(&call.query("filters"), &call.compat)?;
    let allowed: &[&str] = if legacy {
        &["label", "label!"]
    } else {
        &["label", "label!", "all"]
    };
    filters.validate(allowed, &call.compat)?;
    let all = if legacy {
        // Before 1.42 prune removed every unused local volume.
        true
    } else if filters.contains("all") {
        let values = filters.values("all");
        if values.len() != 1 {
            return Err(Error::InvalidParameter(format!(
                "invalid filter 'all=[{}]': only one value is expected",
                values.join(" ")
            )));
        }
        parse_go_bool(&values[0]).ok_or_else(|| {
            Error::InvalidParameter(format!(
                "invalid filter 'all': strconv.ParseBool: parsing {}: invalid syntax",
                gojson::go_quote(&values[0])
            ))
        })?
    } else {
        false
    };
    let filter = PruneFilter {
        all,
        labels: filters.values("label"),
        not_labels: filters.values("label!"),
    };
    let report = call.state.volumes.prune(&filter).await?;
    Ok(json_response(StatusCode::OK, &report))
}

/// `PUT /volumes/{name}` updates swarm cluster volumes; berth is never a swarm manager, and
/// moby answers that before looking at the request.
pub async fn update(_call: Call) -> Result<HttpResponse> {
    Err(Error::Unavailable(
        "volume update only valid for cluster volumes, but swarm is unavailable".into(),
    ))
}

#[derive(Serialize)]
struct MountReply {
    #[serde(rename = "Mountpoint")]
    mountpoint: String,
}

fn caller_id(call: &Call) -> Result<String> {
    let id = call.query("id");
    if id.is_empty() {
        return Err(Error::InvalidParameter(
            "the id of the caller is required (?id=...)".into(),
        ));
    }
    Ok(id)
}

/// berth extension: mount a volume for a consumer that is not a container.
pub async fn mount(call: Call) -> Result<HttpResponse> {
    let id = caller_id(&call)?;
    let mountpoint = call.state.volumes.mount(&call.name, &id).await?;
    Ok(json_response(StatusCode::OK, &MountReply { mountpoint }))
}

/// berth extension: release a mount made with `POST /volumes/{name}/mount`.
pub async fn unmount(call: Call) -> Result<HttpResponse> {
    let id = caller_id(&call)?;
    call.state.volumes.unmount(&call.name, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}
