//! NetworkDriver: capabilities, a network with IPv4 (and IPv6) data, an endpoint with and
//! without addresses, Join and Leave, external connectivity (404 allowed), deletion.

use serde_json::{json, Value};

use super::ipam::Cidr;
use super::prelude::*;

const FIELDS: &str = "Scope ConnectivityScope Interface Address AddressIPv6 MacAddress InterfaceName SrcName DstPrefix Gateway GatewayIPv6 StaticRoutes Destination RouteType NextHop Err";

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

/// Checks a call the scenario cannot go on without: one that got no answer, or one that did
/// not succeed, blocks the scenario (`what` failed). The answer, if any.
fn needed<'r>(
    rec: &mut Recorder<'_>,
    id: &str,
    answer: &'r Result<Reply, String>,
    expected: &str,
    what: &str,
) -> Option<&'r Reply> {
    match answer {
        Ok(r) => {
            if !rec.check(id, r.succeeded(), expected, r.summary()) {
                rec.block(format!("{what} failed: {}", r.summary()));
            }
            Some(r)
        }
        Err(e) => {
            rec.check(id, false, "an answer", e);
            rec.block(e);
            None
        }
    }
}

pub async fn run(ctx: &Context<'_>, rec: &mut Recorder<'_>) {
    let mut answers: Vec<Reply> = Vec::new();
    let capabilities = ctx.call("NetworkDriver.GetCapabilities", Value::Null).await;
    if let Some(r) = needed(
        rec,
        "network.capabilities.answers",
        &capabilities,
        "200 with a JSON object",
        "GetCapabilities",
    ) {
        if r.succeeded() {
            let scope = r.text("Scope");
            rec.check(
                "network.capabilities.scope",
                matches!(scope, "local" | "global"),
                "\"local\" or \"global\"",
                r.summary(),
            );
            let conn = r.text("ConnectivityScope");
            rec.check(
                "network.capabilities.connectivity-scope",
                matches!(conn, "" | "local" | "global"),
                "empty, \"local\" or \"global\"",
                r.summary(),
            );
        }
        answers.push(r.clone());
    }
    if rec.is_blocked() {
        return;
    }

    let pool =
        Cidr::parse(&ctx.options.network_subnet).expect("--network-subnet is checked when parsed");
    let pool_text = format!("{}/{}", pool.addr, pool.prefix);
    let v4 = json!([{"AddressSpace": "LocalDefault", "Pool": pool_text, "Gateway": host(pool, 1), "AuxAddresses": {"berth-aux": host(pool, 5)}}]);
    let network = id();
    let network_created = ctx.call("NetworkDriver.CreateNetwork", json!({"NetworkID": network, "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.generic": {}}, "IPv4Data": v4, "IPv6Data": []})).await;
    answers.extend(
        needed(
            rec,
            "network.create.ipv4",
            &network_created,
            "success",
            "CreateNetwork",
        )
        .cloned(),
    );
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
    if let Some(r) = needed(
        rec,
        "network.endpoint.create",
        &created,
        "success",
        "CreateEndpoint",
    ) {
        if r.succeeded() {
            let iface = r.field("Interface").cloned().unwrap_or(Value::Null);
            let changed: Vec<String> = [("Address", address.as_str()), ("MacAddress", mac)]
                .iter()
                .filter_map(|(k, given)| {
                    let back = str_field(&iface, k);
                    (!back.is_empty() && back != *given).then(|| format!("{k} {given} → {back}"))
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
        }
        answers.push(r.clone());
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

    rec.succeeded(
        "network.delete",
        &ctx.call("NetworkDriver.DeleteNetwork", json!({"NetworkID": network}))
            .await,
    );
    rec.spelling(
        "network.field-case",
        answers
            .iter()
            .flat_map(|r| r.misspelled_keys(FIELDS))
            .collect(),
        "as Docker writes them",
    );
}

/// The checks on a Join answer.
fn judge_join(ctx: &Context<'_>, rec: &mut Recorder<'_>, r: &Reply) {
    let name = r.field("InterfaceName").cloned().unwrap_or(Value::Null);
    let src = str_field(&name, "SrcName");
    rec.check(
        "network.join.answers",
        r.succeeded() && !src.is_empty(),
        "InterfaceName {SrcName, DstPrefix}",
        r.summary(),
    );
    if !r.succeeded() {
        // What a failed Join answers is judged once, above.
        for id in [
            "network.join.interface-exists",
            "network.join.gateway",
            "network.join.routes",
        ] {
            rec.skip(id, "Join failed");
        }
        return;
    }
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
        .map(|k| r.text(k).to_string())
        .collect();
    let bad: Vec<&String> = gateways
        .iter()
        .filter(|g| !g.is_empty() && g.parse::<std::net::IpAddr>().is_err())
        .collect();
    rec.check(
        "network.join.gateway",
        bad.is_empty(),
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
            judge_join(ctx, rec, r);
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
        rec.succeeded(
            "network.leave",
            &ctx.call("NetworkDriver.Leave", ids.clone()).await,
        );
    } else {
        rec.skip("network.leave", "Join failed");
    }
    rec.succeeded(
        "network.endpoint.delete",
        &ctx.call("NetworkDriver.DeleteEndpoint", ids).await,
    );
}

#[cfg(test)]
mod model_tests {
    use std::collections::HashSet;

    use serde_json::json;

    use super::*;
    use crate::conformance::scripted::{self, arg, edit, err, ok, spoiled, Handler};

    /// A well-behaved network driver (interfaces named `lo`, which exists everywhere).
    fn driver() -> Handler {
        let networks = scripted::state::<HashSet<String>>();
        scripted::model("NetworkDriver", move |method, args| {
            let mut known = networks.lock().unwrap();
            Some(match method {
                "NetworkDriver.GetCapabilities" => {
                    ok(json!({"Scope": "local", "ConnectivityScope": "global"}))
                }
                "NetworkDriver.CreateNetwork" => {
                    known.insert(arg(args, "NetworkID"));
                    ok(json!({}))
                }
                "NetworkDriver.DeleteNetwork" => {
                    known.remove(&arg(args, "NetworkID"));
                    ok(json!({}))
                }
                "NetworkDriver.CreateEndpoint" if !known.contains(&arg(args, "NetworkID")) => {
                    err(500, "no such network")
                }
                "NetworkDriver.CreateEndpoint" => ok(json!({"Interface": null})),
                "NetworkDriver.EndpointOperInfo" => ok(json!({"Value": {}})),
                "NetworkDriver.Join" => ok(json!({
                    "InterfaceName": {"SrcName": "lo", "DstPrefix": "eth"},
                    "Gateway": "198.18.78.1",
                    "StaticRoutes": [{"Destination": "10.0.0.0/8", "RouteType": 0, "NextHop": "198.18.78.1"}, {"Destination": "10.1.0.0/16", "RouteType": 1}]
                })),
                "NetworkDriver.Leave" | "NetworkDriver.DeleteEndpoint" => ok(json!({})),
                // Optional: not implemented.
                _ => return None,
            })
        })
    }

    fn answer(status: u16) -> impl Fn(&Value, scripted::Answer) -> scripted::Answer {
        move |_, _| err(status, "spoiled")
    }

    #[tokio::test]
    async fn every_network_check_passes_against_a_good_driver_and_fails_against_a_spoiled_one() {
        scripted::prove_good(driver(), Protocol::Network).await;

        let join =
            |f: fn(&mut Value)| spoiled(driver(), "NetworkDriver.Join", move |_, a| edit(a, f));
        let cases: Vec<(&str, Outcome, Handler)> = vec![
            (
                "network.capabilities.answers",
                Outcome::Fail,
                spoiled(driver(), "NetworkDriver.GetCapabilities", answer(500)),
            ),
            (
                "network.capabilities.scope",
                Outcome::Fail,
                spoiled(driver(), "NetworkDriver.GetCapabilities", |_, _| {
                    ok(json!({"Scope": "cluster"}))
                }),
            ),
            (
                "network.capabilities.connectivity-scope",
                Outcome::Fail,
                spoiled(driver(), "NetworkDriver.GetCapabilities", |_, _| {
                    ok(json!({"Scope": "local", "ConnectivityScope": "world"}))
                }),
            ),
            (
                "network.field-case",
                Outcome::Warn,
                spoiled(driver(), "NetworkDriver.GetCapabilities", |_, _| {
                    ok(json!({"Scope": "local", "connectivityScope": "local"}))
                }),
            ),
            (
                "network.create.ipv4",
                Outcome::Fail,
                spoiled(driver(), "NetworkDriver.CreateNetwork", answer(500)),
            ),
            (
                "network.create.ipv6",
                Outcome::Warn,
                spoiled(driver(), "NetworkDriver.CreateNetwork", |args, a| {
                    if args["IPv6Data"].as_array().is_some_and(|d| !d.is_empty()) {
                        err(500, "no IPv6")
                    } else {
                        a
                    }
                }),
            ),
            (
                "network.endpoint.create",
                Outcome::Fail,
                spoiled(driver(), "NetworkDriver.CreateEndpoint", answer(500)),
            ),
            (
                "network.endpoint.keeps-address",
                Outcome::Fail,
                spoiled(driver(), "NetworkDriver.CreateEndpoint", |_, a| {
                    edit(a, |v| v["Interface"] = json!({"Address": "10.9.9.9/24"}))
                }),
            ),
            (
                "network.endpoint.no-address",
                Outcome::Fail,
                spoiled(driver(), "NetworkDriver.CreateEndpoint", |args, a| {
                    if args["Interface"]["MacAddress"] == "" {
                        edit(a, |v| v["Interface"] = json!({"MacAddress": "zz"}))
                    } else {
                        a
                    }
                }),
            ),
            (
                "network.endpoint.unknown-network",
                Outcome::Warn,
                spoiled(driver(), "NetworkDriver.CreateEndpoint", |_, _| {
                    ok(json!({}))
                }),
            ),
            (
                "network.endpoint.oper-info",
                Outcome::Warn,
                spoiled(driver(), "NetworkDriver.EndpointOperInfo", answer(500)),
            ),
            (
                "network.join.answers",
                Outcome::Fail,
                join(|v| v["InterfaceName"] = Value::Null),
            ),
            (
                "network.join.interface-exists",
                Outcome::Fail,
                join(|v| v["InterfaceName"]["SrcName"] = "berthnope0".into()),
            ),
            (
                "network.join.gateway",
                Outcome::Fail,
                join(|v| v["Gateway"] = "198.18.78.1/24".into()),
            ),
            (
                "network.join.routes",
                Outcome::Fail,
                join(|v| {
                    v["StaticRoutes"] = json!([{"Destination": "10.0.0.0/8", "RouteType": 0}])
                }),
            ),
            (
                "network.external.program",
                Outcome::Fail,
                spoiled(
                    driver(),
                    "NetworkDriver.ProgramExternalConnectivity",
                    answer(500),
                ),
            ),
            (
                "network.external.revoke",
                Outcome::Fail,
                spoiled(
                    driver(),
                    "NetworkDriver.RevokeExternalConnectivity",
                    answer(500),
                ),
            ),
            (
                "network.leave",
                Outcome::Fail,
                spoiled(driver(), "NetworkDriver.Leave", answer(500)),
            ),
            (
                "network.endpoint.delete",
                Outcome::Fail,
                spoiled(driver(), "NetworkDriver.DeleteEndpoint", answer(500)),
            ),
            (
                "network.delete",
                Outcome::Fail,
                spoiled(driver(), "NetworkDriver.DeleteNetwork", answer(500)),
            ),
        ];
        scripted::prove_cases(cases, Protocol::Network).await;
    }
}
