//! NetworkDriver: capabilities, a network with IPv4 (and IPv6) data, an endpoint with and
//! without addresses, Join and Leave, external connectivity (404 allowed), deletion.

use serde_json::{json, Value};

use super::ipam::Cidr;
use super::probe::{field, str_field, Reply};
use super::registry::sources::*;
use super::registry::Check;
use super::runner::{Context, Recorder};
use super::{Outcome, Protocol};

const N: Protocol = Protocol::Network;

pub const CHECKS: &[Check] = &[
    Check { id: "network.capabilities.answers", protocol: N, rule: "NetworkDriver.GetCapabilities (empty body) answers 200 (dockerd refuses to register the driver otherwise)", source: NETWORK_DRIVER },
    Check { id: "network.capabilities.scope", protocol: N, rule: "Scope is \"local\" or \"global\"", source: NETWORK_DRIVER },
    Check { id: "network.capabilities.connectivity-scope", protocol: N, rule: "ConnectivityScope, when given, is \"local\" or \"global\"", source: NETWORK_DRIVER },
    Check { id: "network.field-case", protocol: N, rule: "fields are spelled as Docker writes them (Scope, Interface, InterfaceName, SrcName, DstPrefix, Gateway, StaticRoutes, Err)", source: NETWORK_DOC },
    Check { id: "network.create.ipv4", protocol: N, rule: "CreateNetwork with IPv4Data (Pool, Gateway, AuxAddresses in CIDR form) succeeds", source: NETWORK_DOC },
    Check { id: "network.create.ipv6", protocol: N, rule: "CreateNetwork with IPv4Data and IPv6Data succeeds", source: NETWORK_DOC },
    Check { id: "network.endpoint.create", protocol: N, rule: "CreateEndpoint with an Address and MacAddress given succeeds", source: NETWORK_DOC },
    Check { id: "network.endpoint.keeps-address", protocol: N, rule: "the answer does not change a given Address or MacAddress (dockerd fails with \"driver modified interface address\")", source: NETWORK_DRIVER },
    Check { id: "network.endpoint.no-address", protocol: N, rule: "CreateEndpoint without a MacAddress succeeds; a MacAddress the driver fills in is valid", source: NETWORK_DOC },
    Check { id: "network.endpoint.unknown-network", protocol: N, rule: "CreateEndpoint in an unknown network answers an error", source: NETWORK_DOC },
    Check { id: "network.endpoint.oper-info", protocol: N, rule: "EndpointOperInfo answers 200 with Value an object (or nothing)", source: NETWORK_DOC },
    Check { id: "network.join.answers", protocol: N, rule: "Join answers InterfaceName {SrcName, DstPrefix}", source: NETWORK_DOC },
    Check { id: "network.join.interface-exists", protocol: N, rule: "the SrcName interface exists on the host, for dockerd to move into the sandbox", source: NETWORK_DOC },
    Check { id: "network.join.gateway", protocol: N, rule: "Gateway and GatewayIPv6, when given, are plain IP addresses", source: NETWORK_DOC },
    Check { id: "network.join.routes", protocol: N, rule: "StaticRoutes have a CIDR Destination, RouteType 0 (with a NextHop) or 1", source: NETWORK_DOC },
    Check { id: "network.external.program", protocol: N, rule: "ProgramExternalConnectivity answers 200, or 404 when not implemented", source: NETWORK_DRIVER },
    Check { id: "network.external.revoke", protocol: N, rule: "RevokeExternalConnectivity answers 200, or 404 when not implemented", source: NETWORK_DRIVER },
    Check { id: "network.leave", protocol: N, rule: "Leave succeeds", source: NETWORK_DOC },
    Check { id: "network.endpoint.delete", protocol: N, rule: "DeleteEndpoint succeeds", source: NETWORK_DOC },
    Check { id: "network.delete", protocol: N, rule: "DeleteNetwork succeeds", source: NETWORK_DOC },
];

const FIELDS: &[&str] = &[
    "Scope",
    "ConnectivityScope",
    "Interface",
    "Address",
    "AddressIPv6",
    "MacAddress",
    "InterfaceName",
    "SrcName",
    "DstPrefix",
    "Gateway",
    "GatewayIPv6",
    "StaticRoutes",
    "Destination",
    "RouteType",
    "NextHop",
    "Err",
];

fn id() -> String {
    crate::fsutil::random_hex(32)
}

/// The n-th host address of `pool` with the pool's prefix (`198.18.78.2/24`).
fn host(pool: Cidr, n: u8) -> String {
    match pool.addr {
        std::net::IpAddr::V4(a) => {
            let mut o = a.octets();
            o[3] = o[3].wrapping_add(n);
            format!("{}/{}", std::net::Ipv4Addr::from(o), pool.prefix)
        }
        std::net::IpAddr::V6(a) => {
            let mut s = a.segments();
            s[7] = s[7].wrapping_add(u16::from(n));
            format!("{}/{}", std::net::Ipv6Addr::from(s), pool.prefix)
        }
    }
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
}

fn ok_or_404(r: &Reply) -> bool {
    r.succeeded() || r.status == 404
}

pub async fn run(ctx: &Context<'_>, rec: &mut Recorder<'_>) {
    let mut answers: Vec<Reply> = Vec::new();
    match ctx.call("NetworkDriver.GetCapabilities", Value::Null).await {
        Ok(r) => {
            if rec.check(
                "network.capabilities.answers",
                r.succeeded(),
                "200 with a JSON object",
                r.summary(),
            ) {
                let scope = r.field("Scope").and_then(Value::as_str).unwrap_or("");
                rec.check(
                    "network.capabilities.scope",
                    matches!(scope, "local" | "global"),
                    "\"local\" or \"global\"",
                    r.summary(),
                );
                let conn = r
                    .field("ConnectivityScope")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                rec.check(
                    "network.capabilities.connectivity-scope",
                    matches!(conn, "" | "local" | "global"),
                    "empty, \"local\" or \"global\"",
                    r.summary(),
                );
            } else {
                rec.block(format!("GetCapabilities failed: {}", r.summary()));
            }
            answers.push(r);
        }
        Err(e) => {
            rec.check("network.capabilities.answers", false, "an answer", &e);
            rec.block(e);
        }
    }
    if rec.is_blocked() {
        return;
    }

    let pool =
        Cidr::parse(&ctx.options.network_subnet).expect("--network-subnet is checked when parsed");
    let pool_text = format!("{}/{}", pool.addr, pool.prefix);
    let v4 = json!([{"AddressSpace": "LocalDefault", "Pool": pool_text, "Gateway": host(pool, 1), "AuxAddresses": {"berth-aux": host(pool, 5)}}]);
    let network = id();
    match ctx.call("NetworkDriver.CreateNetwork", json!({"NetworkID": network, "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.generic": {}}, "IPv4Data": v4, "IPv6Data": []})).await {
        Ok(r) => {
            if !rec.check("network.create.ipv4", r.succeeded(), "success", r.summary()) {
                rec.block(format!("CreateNetwork failed: {}", r.summary()));
            }
            answers.push(r);
        }
        Err(e) => {
            rec.check("network.create.ipv4", false, "an answer", &e);
            rec.block(e);
        }
    }
    if rec.is_blocked() {
        return;
    }

    let v6_network = id();
    let v6 = json!([{"AddressSpace": "LocalDefault", "Pool": "fd42:b3e7:c0f::/64", "Gateway": "fd42:b3e7:c0f::1/64"}]);
    let v4b = json!([{"AddressSpace": "LocalDefault", "Pool": "198.18.79.0/24", "Gateway": "198.18.79.1/24"}]);
    match ctx.call("NetworkDriver.CreateNetwork", json!({"NetworkID": v6_network, "Options": {"com.docker.network.enable_ipv6": true, "com.docker.network.generic": {}}, "IPv4Data": v4b, "IPv6Data": v6})).await {
        Ok(r) => {
            rec.expect("network.create.ipv6", r.succeeded(), Outcome::Warn, "success", r.summary());
            if r.succeeded() {
                let _ = ctx.call("NetworkDriver.DeleteNetwork", json!({"NetworkID": v6_network})).await;
            }
        }
        Err(e) => {
            rec.check("network.create.ipv6", false, "an answer", e);
        }
    }

    match ctx.call("NetworkDriver.CreateEndpoint", json!({"NetworkID": id(), "EndpointID": id(), "Interface": {"Address": host(pool, 9), "AddressIPv6": "", "MacAddress": ""}, "Options": {}})).await {
        Ok(r) => {
            rec.expect("network.endpoint.unknown-network", r.is_error(), Outcome::Warn, "an error", r.summary());
        }
        Err(e) => {
            rec.check("network.endpoint.unknown-network", false, "an answer", e);
        }
    }

    // An endpoint with addresses given.
    let endpoint = id();
    let address = host(pool, 2);
    let mac = "02:42:c6:12:4e:02";
    let created = ctx.call("NetworkDriver.CreateEndpoint", json!({"NetworkID": network, "EndpointID": endpoint, "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": mac}, "Options": {}})).await;
    match &created {
        Ok(r) => {
            let ok = rec.check(
                "network.endpoint.create",
                r.succeeded(),
                "success",
                r.summary(),
            );
            if ok {
                let iface = r.field("Interface").cloned().unwrap_or(Value::Null);
                let changed: Vec<String> = [("Address", address.as_str()), ("MacAddress", mac)]
                    .iter()
                    .filter_map(|(k, given)| {
                        let back = str_field(&iface, k);
                        (!back.is_empty() && back != *given)
                            .then(|| format!("{k} {given} → {back}"))
                    })
                    .collect();
                rec.check(
                    "network.endpoint.keeps-address",
                    changed.is_empty(),
                    "the given Address and MacAddress unchanged (or not echoed)",
                    if changed.is_empty() {
                        r.summary()
                    } else {
                        changed.join(", ")
                    },
                );
            } else {
                rec.block(format!("CreateEndpoint failed: {}", r.summary()));
            }
            answers.push(r.clone());
        }
        Err(e) => {
            rec.check("network.endpoint.create", false, "an answer", e);
            rec.block(e.clone());
        }
    }

    // An endpoint without a MAC address: the driver may fill it in.
    let bare = id();
    match ctx.call("NetworkDriver.CreateEndpoint", json!({"NetworkID": network, "EndpointID": bare, "Interface": {"Address": host(pool, 3), "AddressIPv6": "", "MacAddress": ""}, "Options": {}})).await {
        Ok(r) => {
            let filled = r.field("Interface").map(|i| str_field(i, "MacAddress")).unwrap_or_default();
            rec.check("network.endpoint.no-address", r.succeeded() && (filled.is_empty() || valid_mac(&filled)), "success (a filled-in MacAddress is aa:bb:cc:dd:ee:ff)", r.summary());
            if r.succeeded() {
                let _ = ctx.call("NetworkDriver.DeleteEndpoint", json!({"NetworkID": network, "EndpointID": bare})).await;
            }
        }
        Err(e) => {
            rec.check("network.endpoint.no-address", false, "an answer", e);
        }
    }

    if !rec.is_blocked() {
        endpoint_life(ctx, rec, &network, &endpoint, &mut answers).await;
    }

    match ctx
        .call("NetworkDriver.DeleteNetwork", json!({"NetworkID": network}))
        .await
    {
        Ok(r) => {
            rec.check("network.delete", r.succeeded(), "success", r.summary());
        }
        Err(e) => {
            rec.check("network.delete", false, "an answer", e);
        }
    }
    let misspelled: Vec<String> = answers
        .iter()
        .flat_map(|r| r.misspelled_keys(FIELDS))
        .collect();
    rec.expect(
        "network.field-case",
        misspelled.is_empty(),
        Outcome::Warn,
        "Docker's spelling",
        if misspelled.is_empty() {
            "as Docker writes them".to_string()
        } else {
            misspelled.join(", ")
        },
    );
}

/// EndpointOperInfo, Join, external connectivity, Leave, DeleteEndpoint.
async fn endpoint_life(
    ctx: &Context<'_>,
    rec: &mut Recorder<'_>,
    network: &str,
    endpoint: &str,
    answers: &mut Vec<Reply>,
) {
    let ids = json!({"NetworkID": network, "EndpointID": endpoint});
    match ctx
        .call("NetworkDriver.EndpointOperInfo", ids.clone())
        .await
    {
        Ok(r) => {
            let value = r.field("Value");
            rec.expect(
                "network.endpoint.oper-info",
                r.succeeded() && matches!(value, None | Some(Value::Null | Value::Object(_))),
                Outcome::Warn,
                "{\"Value\":{…}}",
                r.summary(),
            );
        }
        Err(e) => {
            rec.check("network.endpoint.oper-info", false, "an answer", e);
        }
    }

    let sandbox = format!("/var/run/docker/netns/{}", &crate::fsutil::random_hex(6));
    let joined = ctx.call("NetworkDriver.Join",
        json!({"NetworkID": network, "EndpointID": endpoint, "SandboxKey": sandbox, "Options": {}}),
    )
    .await;
    match &joined {
        Ok(r) => {
            let name = r.field("InterfaceName").cloned().unwrap_or(Value::Null);
            let src = str_field(&name, "SrcName");
            rec.check(
                "network.join.answers",
                r.succeeded() && !src.is_empty(),
                "InterfaceName {SrcName, DstPrefix}",
                r.summary(),
            );
            if !src.is_empty() && ctx.host_visible {
                let exists = std::path::Path::new("/sys/class/net").join(&src).exists();
                rec.check(
                    "network.join.interface-exists",
                    exists,
                    format!("interface {src} on the host"),
                    if exists {
                        "exists".to_string()
                    } else {
                        format!("no interface {src}")
                    },
                );
            } else if !src.is_empty() {
                rec.skip(
                    "network.join.interface-exists",
                    "the plugin's interfaces are not on this host",
                );
            }
            let gateways: Vec<String> = ["Gateway", "GatewayIPv6"]
                .iter()
                .map(|k| r.field(k).and_then(Value::as_str).unwrap_or("").to_string())
                .collect();
            let bad: Vec<&String> = gateways
                .iter()
                .filter(|g| !g.is_empty() && g.parse::<std::net::IpAddr>().is_err())
                .collect();
            rec.check(
                "network.join.gateway",
                r.succeeded() && bad.is_empty(),
                "plain IP addresses (no prefix)",
                if bad.is_empty() {
                    r.summary()
                } else {
                    format!("{bad:?}")
                },
            );
            let routes = r.field("StaticRoutes").cloned().unwrap_or(Value::Null);
            let routes_ok = match &routes {
                Value::Null => true,
                Value::Array(items) => items.iter().all(|route| {
                    let dest_ok = Cidr::parse(&str_field(route, "Destination")).is_some();
                    match field(route, "RouteType").and_then(Value::as_i64) {
                        Some(0) => {
                            dest_ok
                                && str_field(route, "NextHop")
                                    .parse::<std::net::IpAddr>()
                                    .is_ok()
                        }
                        Some(1) => dest_ok,
                        _ => false,
                    }
                }),
                _ => false,
            };
            rec.check(
                "network.join.routes",
                routes_ok,
                "[{\"Destination\":\"10.0.0.0/8\",\"RouteType\":0,\"NextHop\":\"…\"}]",
                format!("StaticRoutes {routes}"),
            );
            answers.push(r.clone());
        }
        Err(e) => {
            rec.check("network.join.answers", false, "an answer", e);
        }
    }

    for (id, method, body) in [
        (
            "network.external.program",
            "NetworkDriver.ProgramExternalConnectivity",
            json!({"NetworkID": network, "EndpointID": endpoint, "Options": {"com.docker.network.endpoint.exposedports": [], "com.docker.network.portmap": []}}),
        ),
        (
            "network.external.revoke",
            "NetworkDriver.RevokeExternalConnectivity",
            ids.clone(),
        ),
    ] {
        match ctx.call(method, body).await {
            Ok(r) => {
                rec.check(id, ok_or_404(&r), "200, or 404", r.summary());
            }
            Err(e) => {
                rec.check(id, false, "an answer", e);
            }
        }
    }

    if matches!(&joined, Ok(r) if r.succeeded()) {
        match ctx.call("NetworkDriver.Leave", ids.clone()).await {
            Ok(r) => {
                rec.check("network.leave", r.succeeded(), "success", r.summary());
            }
            Err(e) => {
                rec.check("network.leave", false, "an answer", e);
            }
        }
    } else {
        rec.skip("network.leave", "Join failed");
    }
    match ctx.call("NetworkDriver.DeleteEndpoint", ids).await {
        Ok(r) => {
            rec.check(
                "network.endpoint.delete",
                r.succeeded(),
                "success",
                r.summary(),
            );
        }
        Err(e) => {
            rec.check("network.endpoint.delete", false, "an answer", e);
        }
    }
}
