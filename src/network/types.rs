//! `/networks` wire types, named and ordered as the Docker API has them (API 1.41).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `IPAMConfig`: what the client asked for, shown back as given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    #[serde(rename = "Subnet", default, skip_serializing_if = "String::is_empty")]
    pub subnet: String,
    #[serde(rename = "IPRange", default, skip_serializing_if = "String::is_empty")]
    pub ip_range: String,
    #[serde(rename = "Gateway", default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(
        rename = "AuxiliaryAddresses",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub aux_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    #[serde(rename = "Driver")]
    pub driver: String,
    #[serde(rename = "Options")]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(rename = "Config")]
    pub config: Vec<IpamConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigReference {
    #[serde(rename = "Network")]
    pub network: String,
}

/// A consumer's endpoint as inspect shows it (`Containers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointResource {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// `NetworkResource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkResource {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Created")]
    pub created: String,
    #[serde(rename = "Scope")]
    pub scope: String,
    #[serde(rename = "Driver")]
    pub driver: String,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    #[serde(rename = "Internal")]
    pub internal: bool,
    #[serde(rename = "Attachable")]
    pub attachable: bool,
    #[serde(rename = "Ingress")]
    pub ingress: bool,
    #[serde(rename = "ConfigFrom")]
    pub config_from: ConfigReference,
    #[serde(rename = "ConfigOnly")]
    pub config_only: bool,
    #[serde(rename = "Containers")]
    pub containers: BTreeMap<String, EndpointResource>,
    #[serde(rename = "Options")]
    pub options: BTreeMap<String, String>,
    #[serde(rename = "Labels")]
    pub labels: BTreeMap<String, String>,
}

/// `NetworkCreateRequest` as decoded (names as in the API).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkCreateRequest {
    pub name: String,
    pub check_duplicate: bool,
    pub driver: String,
    pub scope: String,
    pub enable_ipv6: bool,
    pub ipam: Option<Ipam>,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub config_only: bool,
    pub config_from: Option<String>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkCreateResponse {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Warning")]
    pub warning: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworksPruneReport {
    #[serde(rename = "NetworksDeleted")]
    pub networks_deleted: Option<Vec<String>>,
}

/// What `POST /networks/{id}/connect` asks for (`EndpointSettings`, the parts that apply to a
/// namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectRequest {
    pub consumer: String,
    pub ipv4_address: String,
    pub ipv6_address: String,
    pub aliases: Vec<String>,
    pub driver_opts: BTreeMap<String, String>,
}

/// Go's `time.Time` in JSON: RFC 3339 with nanoseconds, trailing zeros dropped.
pub fn go_time(t: &DateTime<Utc>) -> String {
    let mut text = t.format("%Y-%m-%dT%H:%M:%S%.9f").to_string();
    while text.ends_with('0') {
        text.pop();
    }
    if text.ends_with('.') {
        text.pop();
    }
    text.push('Z');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_drop_trailing_zeros_as_go_does() {
        let t = DateTime::parse_from_rfc3339("2026-12-03T07:46:48.136387490Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(go_time(&t), "2026-12-03T07:46:48.13638749Z");
        let whole = DateTime::parse_from_rfc3339("2026-12-03T07:46:48Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(go_time(&whole), "2026-12-03T07:46:48Z");
    }

    #[test]
    fn ipam_config_leaves_empty_fields_out() {
        let c = IpamConfig {
            subnet: "10.20.0.0/24".into(),
            ..IpamConfig::default()
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"Subnet":"10.20.0.0/24"}"#
        );
    }
}
