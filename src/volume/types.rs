//! Wire types of `/volumes`, named and ordered as Docker emits them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `api/types/volume.Volume`. `Labels` and `Options` are always present (maybe `null`);
/// `Status` only on inspect (and only when not empty), `UsageData` only in `/system/df`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    #[serde(rename = "CreatedAt")]
    pub created_at: String,
    #[serde(rename = "Driver")]
    pub driver: String,
    #[serde(rename = "Labels")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Mountpoint")]
    pub mountpoint: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Options")]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(rename = "Scope")]
    pub scope: String,
    #[serde(rename = "Status", default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Map<String, serde_json::Value>>,
    /// Only in `GET /system/df`.
    #[serde(rename = "UsageData", default, skip_serializing_if = "Option::is_none")]
    pub usage_data: Option<UsageData>,
}

/// `volume.UsageData`: bytes used (-1 when they could not be measured) and how many users
/// have the volume mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageData {
    #[serde(rename = "RefCount")]
    pub ref_count: i64,
    #[serde(rename = "Size")]
    pub size: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeListResponse {
    #[serde(rename = "Volumes")]
    pub volumes: Vec<Volume>,
    #[serde(rename = "Warnings")]
    pub warnings: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumePruneReport {
    #[serde(rename = "VolumesDeleted")]
    pub volumes_deleted: Vec<String>,
    #[serde(rename = "SpaceReclaimed")]
    pub space_reclaimed: u64,
}

/// `POST /volumes/create` body (`volume.CreateOptions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeCreateBody {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Driver", default)]
    pub driver: String,
    #[serde(rename = "DriverOpts", default)]
    pub driver_opts: Option<BTreeMap<String, String>>,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// The label current daemons put on volumes created without a name; default prune (API ≥ 1.42)
/// removes only these.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// RFC3339 as Go's `time.Time` marshals in these responses (seconds, `Z`).
pub fn format_time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Go's zero `time.Time`, what list shows for plugin volumes whose driver gave no date.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
