//! `/networks` handlers: decode the request, call the network service, encode the reply.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::{Map, Value};

use super::body::{self, LegacyContentType};
use super::filters::Filters;
use super::{json_response, Call};
use crate::error::{Error, Result};
use crate::gojson;
use crate::network::service::{ListFilter, PruneFilter};
use crate::network::types::{ConnectRequest, Ipam, IpamConfig, NetworkCreateRequest};

pub async fn list(call: Call) -> Result<HttpResponse> {
    let filters = Filters::parse_request(&call.query("filters"), &call.compat)?;
    filters.validate(
        &["dangling", "driver", "id", "label", "name", "scope", "type"],
        &call.compat,
    )?;
    let dangling = match filters.values("dangling").as_slice() {
        [] => None,
        [one] => match one.as_str() {
            "1" | "true" => Some(true),
            "0" | "false" => Some(false),
            _ => {
                return Err(Error::InvalidParameter(
                    "invalid value for filter 'dangling', must be \"true\" (or \"1\"), or \"false\" (or \"0\")".into(),
                ))
            }
        },
        _ => {
            return Err(Error::InvalidParameter(
                "got more than one value for filter key \"dangling\"".into(),
            ))
        }
    };
    let types = filters.values("type");
    if let Some(bad) = types.iter().find(|t| *t != "custom" && *t != "builtin") {
        return Err(Error::System(format!("invalid filter: 'type'='{bad}'")));
    }
    let filter = ListFilter {
        drivers: filters.values("driver"),
        names: filters.values("name"),
        ids: filters.values("id"),
        labels: filters.values("label"),
        scopes: filters.values("scope"),
        types,
        dangling,
    };
    Ok(json_response(
        StatusCode::OK,
        &call.state.networks.list(&filter),
    ))
}

/// `verbose` adds nothing without swarm services; a `scope` the network does not have makes
/// it not found, as in dockerd.
pub async fn inspect(call: Call) -> Result<HttpResponse> {
    let network = call.state.networks.inspect(&call.name)?;
    let scope = call.query("scope");
    if !scope.is_empty() && scope != network.scope {
        return Err(Error::NotFound(format!("network {} not found", call.name)));
    }
    Ok(json_response(StatusCode::OK, &network))
}

pub async fn create(call: Call, payload: web::Payload) -> Result<HttpResponse> {
    let value = body::read_json(&call, payload, LegacyContentType::Required).await?;
    let request = Decoder::new(&call, "NetworkCreateRequest").create(value)?;
    let created = call.state.networks.create(request).await?;
    Ok(json_response(StatusCode::CREATED, &created))
}

pub async fn remove(call: Call) -> Result<HttpResponse> {
    call.state.networks.remove(&call.name).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn prune(call: Call) -> Result<HttpResponse> {
    let filters = Filters::parse_request(&call.query("filters"), &call.compat)?;
    filters.validate(&["label", "label!", "until"], &call.compat)?;
    let until = match filters.values("until").as_slice() {
        [] => None,
        [one] => Some(parse_until(one)?),
        _ => {
            return Err(Error::InvalidParameter(
                "more than one until filter specified".into(),
            ))
        }
    };
    let filter = PruneFilter {
        until,
        labels: filters.values("label"),
        not_labels: filters.values("label!"),
    };
    let report = call.state.networks.prune(&filter).await?;
    Ok(json_response(StatusCode::OK, &report))
}

pub async fn connect(call: Call, payload: web::Payload) -> Result<HttpResponse> {
    let value = body::read_json(&call, payload, LegacyContentType::Required).await?;
    let request = Decoder::new(&call, "NetworkConnect").connect(value)?;
    call.state.networks.connect(&call.name, request).await?;
    Ok(HttpResponse::Ok().finish())
}

pub async fn disconnect(call: Call, payload: web::Payload) -> Result<HttpResponse> {
    let value = body::read_json(&call, payload, LegacyContentType::Required).await?;
    let decoder = Decoder::new(&call, "NetworkDisconnect");
    let object = decoder.object(value, "types.NetworkDisconnect")?;
    let consumer = decoder.string(&object, "Container", &[])?;
    let force = decoder.boolean(&object, "Force", &[])?;
    call.state
        .networks
        .disconnect(&call.name, &consumer, force)
        .await?;
    Ok(HttpResponse::Ok().finish())
}

/// `until`: a Go duration before now (`24h`, `90m`), Unix seconds, or an RFC 3339 time.
fn parse_until(text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    let invalid = || {
        Error::InvalidParameter(format!(
            "failed to parse value as time or duration: \"{text}\""
        ))
    };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    if let Ok(secs) = text.parse::<f64>() {
        let whole = secs.trunc() as i64;
        let nanos = ((secs - secs.trunc()) * 1e9) as u32;
        return chrono::DateTime::from_timestamp(whole, nanos).ok_or_else(invalid);
    }
    let duration = go_duration(text).ok_or_else(invalid)?;
    Ok(chrono::Utc::now() - duration)
}

/// Go's `time.ParseDuration` for the units a filter uses (`h`, `m`, `s`, `ms`).
fn go_duration(text: &str) -> Option<chrono::Duration> {
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    chrono::Duration::try_milliseconds((total * 1000.0) as i64)
}

/// Decodes a JSON body as Go's `encoding/json` fills moby's structs: keys matched
/// case-insensitively, `null` leaves a field alone, a value of the wrong type is an error that
/// names the field.
struct Decoder<'a> {
    call: &'a Call,
    root: &'static str,
}

impl<'a> Decoder<'a> {
    fn new(call: &'a Call, root: &'static str) -> Decoder<'a> {
        Decoder { call, root }
    }

    fn type_error(&self, path: &[&str], value: &Value, go_type: &str) -> Error {
        body::type_error(
            self.call,
            gojson::unmarshal_field_type_error(gojson::kind_name(value), self.root, path, go_type),
        )
    }

    fn object(&self, value: Option<Value>, go_type: &str) -> Result<Map<String, Value>> {
        match value {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(object)) => Ok(object),
            Some(other) => Err(body::type_error(
                self.call,
                gojson::unmarshal_type_error(gojson::kind_name(&other), go_type),
            )),
        }
    }

    fn field<'v>(&self, object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
        // The last of several spellings wins, as in Go.
        object
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .next_back()
            .filter(|v| !v.is_null())
    }

    fn string(&self, object: &Map<String, Value>, name: &str, at: &[&str]) -> Result<String> {
        match self.field(object, name) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.type_error(&[at, &[name]].concat(), other, "string")),
        }
    }

    fn boolean(&self, object: &Map<String, Value>, name: &str, at: &[&str]) -> Result<bool> {
        match self.field(object, name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.type_error(&[at, &[name]].concat(), other, "bool")),
        }
    }

    fn string_map(
        &self,
        object: &Map<String, Value>,
        name: &str,
        at: &[&str],
    ) -> Result<Option<BTreeMap<String, String>>> {
        let path = [at, &[name]].concat();
        match self.field(object, name) {
            None => Ok(None),
            Some(Value::Object(map)) => {
                let mut out = BTreeMap::new();
                for (k, v) in map {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        Value::Null => {
                            out.insert(k.clone(), String::new());
                        }
                        other => return Err(self.type_error(&path, other, "string")),
                    }
                }
                Ok(Some(out))
            }
            Some(other) => Err(self.type_error(&path, other, "map[string]string")),
        }
    }

    fn sub_object<'v>(
        &self,
        object: &'v Map<String, Value>,
        name: &str,
        at: &[&str],
        go_type: &str,
    ) -> Result<Option<&'v Map<String, Value>>> {
        match self.field(object, name) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(other) => Err(self.type_error(&[at, &[name]].concat(), other, go_type)),
        }
    }

    fn create(&self, value: Option<Value>) -> Result<NetworkCreateRequest> {
        let object = self.object(value, "types.NetworkCreateRequest")?;
        let ipam = match self.sub_object(&object, "IPAM", &[], "network.IPAM")? {
            None => None,
            Some(ipam) => Some(self.ipam(ipam)?),
        };
        let config_from =
            match self.sub_object(&object, "ConfigFrom", &[], "network.ConfigReference")? {
                None => None,
                Some(from) => Some(self.string(from, "Network", &["ConfigFrom"])?),
            };
        Ok(NetworkCreateRequest {
            name: self.string(&object, "Name", &[])?,
            check_duplicate: self.boolean(&object, "CheckDuplicate", &[])?,
            driver: self.string(&object, "Driver", &[])?,
            scope: self.string(&object, "Scope", &[])?,
            enable_ipv6: self.boolean(&object, "EnableIPv6", &[])?,
            ipam,
            internal: self.boolean(&object, "Internal", &[])?,
            attachable: self.boolean(&object, "Attachable", &[])?,
            ingress: self.boolean(&object, "Ingress", &[])?,
            config_only: self.boolean(&object, "ConfigOnly", &[])?,
            config_from,
            options: self
                .string_map(&object, "Options", &[])?
                .unwrap_or_default(),
            labels: self.string_map(&object, "Labels", &[])?.unwrap_or_default(),
        })
    }

    fn ipam(&self, ipam: &Map<String, Value>) -> Result<Ipam> {
        let at = ["IPAM"];
        let mut config = Vec::new();
        match self.field(ipam, "Config") {
            None => {}
            Some(Value::Array(items)) => {
                let at = ["IPAM", "Config"];
                for item in items {
                    let entry = match item {
                        Value::Null => Map::new(),
                        Value::Object(o) => o.clone(),
                        other => return Err(self.type_error(&at, other, "network.IPAMConfig")),
                    };
                    config.push(IpamConfig {
                        subnet: self.string(&entry, "Subnet", &at)?,
                        ip_range: self.string(&entry, "IPRange", &at)?,
                        gateway: self.string(&entry, "Gateway", &at)?,
                        aux_addresses: self
                            .string_map(&entry, "AuxiliaryAddresses", &at)?
                            .unwrap_or_default(),
                    });
                }
            }
            Some(other) => {
                return Err(self.type_error(&["IPAM", "Config"], other, "[]network.IPAMConfig"))
            }
        }
        Ok(Ipam {
            driver: self.string(ipam, "Driver", &at)?,
            options: self.string_map(ipam, "Options", &at)?,
            config,
        })
    }

    fn connect(&self, value: Option<Value>) -> Result<ConnectRequest> {
        let object = self.object(value, "types.NetworkConnect")?;
        let mut request = ConnectRequest {
            consumer: self.string(&object, "Container", &[])?,
            ..ConnectRequest::default()
        };
        let Some(settings) =
            self.sub_object(&object, "EndpointConfig", &[], "network.EndpointSettings")?
        else {
            return Ok(request);
        };
        let at = ["EndpointConfig"];
        if let Some(ipam) =
            self.sub_object(settings, "IPAMConfig", &at, "network.EndpointIPAMConfig")?
        {
            let at = ["EndpointConfig", "IPAMConfig"];
            request.ipv4_address = self.string(ipam, "IPv4Address", &at)?;
            request.ipv6_address = self.string(ipam, "IPv6Address", &at)?;
        }
        match self.field(settings, "Aliases") {
            None => {}
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => request.aliases.push(s.clone()),
                        Value::Null => request.aliases.push(String::new()),
                        other => {
                            return Err(self.type_error(
                                &["EndpointConfig", "Aliases"],
                                other,
                                "string",
                            ))
                        }
                    }
                }
            }
            Some(other) => {
                return Err(self.type_error(&["EndpointConfig", "Aliases"], other, "[]string"))
            }
        }
        request.driver_opts = self
            .string_map(settings, "DriverOpts", &at)?
            .unwrap_or_default();
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(go_duration("24h").unwrap().num_hours(), 24);
        assert_eq!(go_duration("1h30m").unwrap().num_minutes(), 90);
        assert!(go_duration("3 days").is_none());
        assert!(go_duration("").is_none());
    }
}
