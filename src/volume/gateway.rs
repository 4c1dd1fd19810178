//! berth as a volume plugin for other engines: Podman (and anything else that speaks the
//! VolumeDriver protocol) reaches a berth-managed volume plugin through a socket berth serves
//! for it, and every call goes through the volume service. So a volume created this way is a
//! berth volume like any other: recorded, holding a reference on its plugin (the plugin is "in
//! use" and cannot be disabled unless forced), with the plugin's paths mapped to host paths,
//! under the same deadlines.
//!
//! The sockets themselves (`<exec-root>/volume-plugins/<name>.sock`, one per enabled managed
//! volume plugin) are opened and closed by the daemon; this module answers the calls.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::service::VolumeService;
use crate::drivers::volume::DriverVolume;
use crate::error::{Error, Result};

/// The VolumeDriver protocol for one driver (the plugin's full name, `name:tag`).
pub struct VolumeGateway {
    volumes: Arc<VolumeService>,
    driver: String,
}

#[derive(Debug, Default, Deserialize)]
struct Request {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Opts", default)]
    opts: Option<BTreeMap<String, String>>,
    #[serde(rename = "ID", default)]
    id: String,
}

#[derive(Debug, Serialize)]
struct ListedVolume {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Mountpoint")]
    mountpoint: String,
}

#[derive(Debug, Serialize)]
struct GotVolume {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Mountpoint")]
    mountpoint: String,
    #[serde(rename = "CreatedAt", skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    #[serde(rename = "Status", skip_serializing_if = "Option::is_none")]
    status: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An answer: the HTTP status and the JSON body. Failures are `500 {"Err": …}`, as plugins
/// written with Docker's helpers answer.
pub type Answer = (u16, serde_json::Value);

impl VolumeGateway {
    pub fn new(volumes: Arc<VolumeService>, driver: &str) -> VolumeGateway {
        VolumeGateway {
            volumes,
            driver: driver.to_string(),
        }
    }

    /// Answers `POST /<method>` with `body`.
    pub async fn call(&self, method: &str, body: &[u8]) -> Answer {
        log::debug!("volume plugin {} for other engines: {method}", self.driver);
        let request: Request = if body.iter().all(u8::is_ascii_whitespace) {
            Request::default()
        } else {
            match serde_json::from_slice(body) {
                Ok(r) => r,
                Err(e) => return (400, serde_json::json!({ "Err": format!("{method}: {e}") })),
            }
        };
        match self.answer(method, request).await {
            Ok(value) => (200, value),
            Err(Error::NotImplemented(m)) => (404, serde_json::json!({ "Err": m })),
            Err(e) => (500, serde_json::json!({ "Err": e.message() })),
        }
    }

    async fn answer(&self, method: &str, request: Request) -> Result<serde_json::Value> {
        let name = request.name.as_str();
        Ok(match method {
            "Plugin.Activate" => serde_json::json!({ "Implements": ["VolumeDriver"] }),
            "VolumeDriver.Capabilities" => {
                serde_json::json!({ "Capabilities": { "Scope": "local" } })
            }
            "VolumeDriver.Create" => {
                // Options as the other engine sent them (left out stays left out).
                self.volumes
                    .create(name, &self.driver, request.opts, None, false)
                    .await?;
                serde_json::json!({})
            }
            "VolumeDriver.Remove" => {
                self.own(name).await?;
                self.volumes.remove(name, false).await?;
                serde_json::json!({})
            }
            "VolumeDriver.Mount" => {
                self.own(name).await?;
                let mountpoint = self.volumes.mount(name, &request.id).await?;
                serde_json::json!({ "Mountpoint": mountpoint })
            }
            "VolumeDriver.Unmount" => {
                self.own(name).await?;
                self.volumes.unmount(name, &request.id).await?;
                serde_json::json!({})
            }
            "VolumeDriver.Path" => {
                let volume = self.own(name).await?;
                serde_json::json!({ "Mountpoint": volume.host_mountpoint })
            }
            "VolumeDriver.Get" => {
                let volume = self.own(name).await?;
                serde_json::json!({ "Volume": GotVolume {
                    name: volume.name,
                    mountpoint: volume.host_mountpoint,
                    created_at: volume.created_at,
                    status: volume.status,
                }})
            }
            "VolumeDriver.List" => {
                let volumes: Vec<ListedVolume> = self
                    .volumes
                    .driver_list(&self.driver)
                    .await?
                    .into_iter()
                    .map(|v| ListedVolume {
                        name: v.name,
                        mountpoint: v.host_mountpoint,
                    })
                    .collect();
                serde_json::json!({ "Volumes": volumes })
            }
            other => {
                return Err(Error::NotImplemented(format!(
                    "{other}: not a VolumeDriver method"
                )))
            }
        })
    }

    /// The volume `name` as the plugin reports it (paths mapped to the host); it must be this
    /// driver's: a gateway never reaches volumes of other drivers.
    async fn own(&self, name: &str) -> Result<DriverVolume> {
        let (driver, volume) = self.volumes.driver_view(name).await?;
        if driver != self.driver {
            return Err(Error::NotFound(format!(
                "no such volume: {name} (it belongs to driver {driver})"
            )));
        }
        Ok(volume)
    }
}
