//! Transport and activation: the RPC rules every plugin follows, whatever its protocol.

use std::time::Duration;

use serde_json::{json, Value};

use super::prelude::*;
use super::probe::quantile;
use super::target::Target;

/// The `Implements` names Docker knows.
const KNOWN: &[&str] = &[
    "VolumeDriver",
    "NetworkDriver",
    "IpamDriver",
    "authz",
    "LogDriver",
    "MetricsCollector",
];

/// `Plugin.Activate` and its answer's checks; the `Implements` entries.
pub async fn activation(ctx: &Context<'_>, rec: &mut Recorder<'_>) -> Vec<String> {
    const M: &str = "Plugin.Activate";
    // dockerd never activates managed plugins; an author may leave it out there.
    let severity = if ctx.managed() {
        Outcome::Warn
    } else {
        Outcome::Fail
    };
    let reply = match ctx.probe.call(M, &Value::Null).await {
        Ok(r) => r,
        Err(e) => {
            rec.expect(
                "transport.activate.status",
                false,
                severity,
                "200",
                call_failed(M, &e),
            );
            rec.block(call_failed(M, &e));
            return Vec::new();
        }
    };
    if !rec.expect(
        "transport.activate.status",
        reply.status == 200,
        severity,
        "200",
        reply.summary(),
    ) {
        for id in [
            "transport.activate.json",
            "transport.activate.implements",
            "transport.activate.known-names",
        ] {
            rec.skip(id, "Plugin.Activate failed");
        }
        return Vec::new();
    }
    if !rec.expect(
        "transport.activate.json",
        reply.object().is_some(),
        severity,
        "a JSON object",
        reply.summary(),
    ) {
        return Vec::new();
    }
    let implements: Option<Vec<String>> = reply
        .field("Implements")
        .and_then(Value::as_array)
        .and_then(|items| {
            items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect()
        });
    let implements = implements.unwrap_or_default();
    rec.expect(
        "transport.activate.implements",
        !implements.is_empty(),
        severity,
        "Implements: a non-empty list of strings",
        reply.summary(),
    );
    let unknown: Vec<&String> = implements
        .iter()
        .filter(|i| !KNOWN.contains(&i.as_str()))
        .collect();
    if implements.is_empty() {
        rec.skip("transport.activate.known-names", "no Implements");
    } else {
        rec.check(
            "transport.activate.known-names",
            unknown.is_empty(),
            format!("names among {}", KNOWN.join(", ")),
            if unknown.is_empty() {
                format!("{implements:?}")
            } else {
                format!("unknown to Docker: {unknown:?}")
            },
        );
    }
    implements
}

/// A harmless call of a declared protocol (for the header and reply checks), and a method
/// that takes arguments (for the malformed-request checks).
fn probe_methods(declared: &[Protocol]) -> ((&'static str, Value), Option<&'static str>) {
    let ping = json!({"RequestMethod": "GET", "RequestUri": "/_ping", "RequestHeaders": {}});
    for p in declared {
        match p {
            Protocol::Volume => {
                return (("VolumeDriver.List", json!({})), Some("VolumeDriver.Get"))
            }
            Protocol::Ipam => {
                return (
                    ("IpamDriver.GetDefaultAddressSpaces", Value::Null),
                    Some("IpamDriver.RequestPool"),
                )
            }
            Protocol::Network => {
                return (
                    ("NetworkDriver.GetCapabilities", Value::Null),
                    Some("NetworkDriver.CreateNetwork"),
                )
            }
            Protocol::Log => {
                return (
                    ("LogDriver.Capabilities", Value::Null),
                    Some("LogDriver.StartLogging"),
                )
            }
            Protocol::Authz => {
                return (("AuthZPlugin.AuthZReq", ping), Some("AuthZPlugin.AuthZReq"))
            }
            Protocol::Transport => {}
        }
    }
    (("Plugin.Activate", Value::Null), None)
}

/// A call that fails for what it asks, in the first declared protocol that has one.
fn failing_call(declared: &[Protocol]) -> Option<(&'static str, Value)> {
    let ghost = format!("berth-conformance-ghost-{}", crate::fsutil::random_hex(6));
    declared.iter().find_map(|p| match p {
        Protocol::Volume => Some((
            "VolumeDriver.Mount",
            json!({"Name": ghost, "ID": crate::fsutil::random_hex(32)}),
        )),
        Protocol::Ipam => Some((
            "IpamDriver.RequestAddress",
            json!({"PoolID": ghost, "Address": "", "Options": {}}),
        )),
        Protocol::Network => Some((
            "NetworkDriver.Join",
            json!({"NetworkID": crate::fsutil::random_hex(32), "EndpointID": crate::fsutil::random_hex(32), "SandboxKey": "/var/run/docker/netns/0", "Options": {}}),
        )),
        Protocol::Log => Some((
            "LogDriver.StartLogging",
            json!({"File": format!("/nonexistent/{ghost}"), "Info": {"ContainerID": crate::fsutil::random_hex(32)}}),
        )),
        _ => None,
    })
}

fn body_of(v: &Value) -> Vec<u8> {
    if v.is_null() {
        return Vec::new();
    }
    let mut b = serde_json::to_vec(v).expect("JSON serializes");
    b.push(b'\n');
    b
}

/// The checks that need only a harmless call. `implements`: the activation's answer;
/// `from_config`: a managed plugin's protocols by its config.
pub async fn run(
    ctx: &Context<'_>,
    rec: &mut Recorder<'_>,
    declared: &[Protocol],
    implements: &[String],
    from_config: Option<&[Protocol]>,
) {
    match from_config {
        None => rec.skip(
            "transport.activate.matches-config",
            "a legacy plugin has no config",
        ),
        Some(_) if implements.is_empty() => rec.skip(
            "transport.activate.matches-config",
            "Plugin.Activate named nothing",
        ),
        Some(config) => {
            let activated: Vec<Protocol> = implements
                .iter()
                .filter_map(|i| Protocol::from_implements(i))
                .collect();
            let missing: Vec<&str> = config
                .iter()
                .filter(|p| !activated.contains(p))
                .filter_map(|p| p.implements())
                .collect();
            rec.expect(
                "transport.activate.matches-config",
                missing.is_empty(),
                Outcome::Warn,
                format!(
                    "Implements names {:?}",
                    config
                        .iter()
                        .filter_map(|p| p.implements())
                        .collect::<Vec<_>>()
                ),
                format!("Implements: {implements:?}"),
            );
        }
    }

    let ((method, body), with_args) = probe_methods(declared);
    let body = body_of(&body);
    let headers_case = |id: &str, headers: &[(&str, &str)], severity: Outcome| {
        let id = id.to_string();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (id, headers, severity)
    };
    // The plain call (Accept v1.2, no Content-Type) first: the reply checks judge its answer.
    let plain = match ctx.probe.raw(method, &body, &[]).await {
        Ok(reply) => reply,
        Err(e) => {
            rec.check(
                "transport.accept.v1-2",
                false,
                format!("{method} answers"),
                call_failed(method, &e),
            );
            rec.block(call_failed(method, &e));
            return;
        }
    };
    let expected = format!("{method} answers 200");
    rec.check(
        "transport.accept.v1-2",
        plain.status == 200,
        &expected,
        plain.summary(),
    );
    rec.check(
        "transport.content-type.absent",
        plain.status == 200,
        &expected,
        plain.summary(),
    );
    if plain.status == 200 {
        rec.check(
            "transport.reply.nonempty",
            !plain.body.iter().all(u8::is_ascii_whitespace),
            "a body (at least {})",
            plain.summary(),
        );
        rec.check(
            "transport.reply.json",
            plain.object().is_some(),
            "a JSON object",
            plain.summary(),
        );
    }
    rec.expect(
        "transport.reply.content-type",
        json_content_type(&plain),
        Outcome::Warn,
        "Content-Type: application/json or application/vnd.docker.plugins.v1.x+json",
        format!(
            "Content-Type: {}",
            plain.content_type.as_deref().unwrap_or("(none)")
        ),
    );

    for (id, headers, severity) in [
        headers_case(
            "transport.accept.other",
            &[("Accept", "application/json")],
            Outcome::Warn,
        ),
        headers_case(
            "transport.content-type.json",
            &[("Content-Type", "application/json")],
            Outcome::Warn,
        ),
        headers_case(
            "transport.host.any",
            &[("Host", "run-docker-plugins.sock")],
            Outcome::Warn,
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let got = match ctx.probe.raw(method, &body, &headers).await {
            Ok(r) => r.summary(),
            Err(e) => call_failed(method, &e),
        };
        let ok = got.starts_with("200 ");
        let sent: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        rec.expect(
            &id,
            ok,
            severity,
            format!("{expected} with {}", sent.join(", ")),
            got,
        );
    }

    // Unknown methods.
    let interface = method.split('.').next().unwrap_or("Plugin");
    let unknown = format!("{interface}.BerthConformanceNoSuchMethod");
    let network = declared.contains(&Protocol::Network);
    match ctx.probe.raw(&unknown, b"{}\n", &[]).await {
        Ok(r) => {
            let severity = if network || r.succeeded() {
                Outcome::Fail
            } else {
                Outcome::Warn
            };
            rec.expect(
                "transport.unknown-method.404",
                r.status == 404,
                severity,
                format!("404 for {unknown}"),
                r.summary(),
            );
        }
        Err(e) => {
            rec.check(
                "transport.unknown-method.404",
                false,
                format!("404 for {unknown}"),
                call_failed(&unknown, &e),
            );
        }
    }
    match ctx
        .probe
        .raw("BerthConformance.Nothing", b"{}\n", &[])
        .await
    {
        Ok(r) => {
            let severity = if r.succeeded() {
                Outcome::Fail
            } else {
                Outcome::Warn
            };
            rec.expect(
                "transport.unknown-interface.404",
                r.status == 404,
                severity,
                "404 for BerthConformance.Nothing",
                r.summary(),
            );
        }
        Err(e) => {
            rec.check(
                "transport.unknown-interface.404",
                false,
                "404 for BerthConformance.Nothing",
                call_failed("BerthConformance.Nothing", &e),
            );
        }
    }

    // Malformed and empty requests; the error answers they get are judged for shape.
    let mut error_answer: Option<Reply> = None;
    match with_args {
        None => {
            for id in [
                "transport.malformed.refused",
                "transport.empty-body",
                "transport.malformed.survives",
            ] {
                rec.skip(id, "no declared protocol has a method with arguments");
            }
        }
        Some(args_method) => {
            match ctx.probe.raw(args_method, b"{\"Name\": \n", &[]).await {
                Ok(r) => {
                    rec.check(
                        "transport.malformed.refused",
                        r.is_error(),
                        "an error answer (go-plugins-helpers: 400)",
                        r.summary(),
                    );
                    if r.is_error() {
                        error_answer = Some(r);
                    }
                }
                Err(e) => {
                    rec.check(
                        "transport.malformed.refused",
                        false,
                        "an error answer",
                        call_failed(args_method, &e),
                    );
                }
            }
            match ctx.probe.raw(args_method, b"", &[]).await {
                Ok(r) => {
                    rec.expect(
                        "transport.empty-body",
                        r.is_error(),
                        Outcome::Warn,
                        "an error answer",
                        r.summary(),
                    );
                    if error_answer.is_none() && r.is_error() {
                        error_answer = Some(r);
                    }
                }
                Err(e) => {
                    rec.check(
                        "transport.empty-body",
                        false,
                        "an error answer",
                        call_failed(args_method, &e),
                    );
                }
            }
            let after = ctx.probe.raw(method, &body, &[]).await;
            rec.check(
                "transport.malformed.survives",
                after.as_ref().is_ok_and(|r| r.status == 200),
                format!("{method} still answers 200"),
                match after {
                    Ok(r) => r.summary(),
                    Err(e) => call_failed(method, &e),
                },
            );
        }
    }
    // A call that must fail for what it asks (not for how it is written) shows how the plugin
    // reports errors; decoding failures (go-plugins-helpers: plain-text 400) are the fallback.
    if let Some((failing, body)) = failing_call(declared) {
        if let Ok(r) = ctx.probe.call(failing, &body).await {
            if r.is_error() {
                error_answer = Some(r);
            }
        }
    }
    match error_answer {
        None => {
            rec.skip("transport.error.message", "no error answer was provoked");
            rec.skip("transport.error.json", "no error answer was provoked");
        }
        Some(r) => judge_error(rec, &r),
    }

    // Parallel calls.
    let n = ctx.options.parallel.max(2);
    let calls = (0..n).map(|_| ctx.probe.raw(method, &body, &[]));
    let answers = futures_util::future::join_all(calls).await;
    let bad: Vec<String> = answers
        .iter()
        .filter_map(|a| match a {
            Ok(r) if r.status == 200 => None,
            Ok(r) => Some(r.summary()),
            Err(e) => Some(e.to_string()),
        })
        .collect();
    rec.check(
        "transport.parallel",
        bad.is_empty(),
        format!("{n} parallel {method} calls answer 200"),
        if bad.is_empty() {
            format!("{n} answered 200")
        } else {
            format!("{} of {n} failed, first: {}", bad.len(), bad[0])
        },
    );
}

/// The shape checks of an error answer.
pub fn judge_error(rec: &mut Recorder<'_>, r: &Reply) {
    rec.check(
        "transport.error.message",
        r.message().is_some(),
        "a message",
        r.summary(),
    );
    if r.status == 200 {
        rec.pass("transport.error.json", "an in-band Err in a 200 answer");
        return;
    }
    let err = r
        .field("Err")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty());
    rec.expect(
        "transport.error.json",
        err.is_some(),
        Outcome::Warn,
        "{\"Err\":\"<message>\"}",
        r.summary(),
    );
}

/// Checks over the whole run (latency) and those that disturb the plugin (restart).
pub async fn after_scenarios(
    ctx: &Context<'_>,
    rec: &mut Recorder<'_>,
    target: &Target,
    declared: &[Protocol],
) {
    let samples = ctx.probe.all_latencies();
    let budget = |d: Duration| format!("within {:.0} ms", d.as_secs_f64() * 1e3);
    let seen = |d: Duration| {
        format!(
            "{:.1} ms over {} calls",
            d.as_secs_f64() * 1e3,
            samples.len()
        )
    };
    for (id, q, limit) in [
        ("transport.latency.p50", 0.5, ctx.options.latency_p50),
        ("transport.latency.p99", 0.99, ctx.options.latency_p99),
    ] {
        if samples.is_empty() {
            rec.skip(id, "no calls answered");
        } else {
            let at = quantile(&samples, q);
            rec.expect(id, at <= limit, Outcome::Warn, budget(limit), seen(at));
        }
    }

    let Some(restart) = &target.restart else {
        rec.skip(
            "transport.restart",
            "the harness does not control this plugin's process (give a plugin directory or reference)",
        );
        return;
    };
    if !rec.wants("transport.restart") {
        return;
    }
    let ((method, body), _) = probe_methods(declared);
    let body = body_of(&body);
    match restart.restart().await {
        Ok(client) => {
            ctx.probe.replace_client(client);
            match ctx.probe.raw(method, &body, &[]).await {
                Ok(reply) => {
                    rec.check(
                        "transport.restart",
                        reply.status == 200,
                        format!("{method} answers 200 after the restart"),
                        reply.summary(),
                    );
                }
                Err(e) => {
                    rec.check(
                        "transport.restart",
                        false,
                        format!("{method} answers 200 after the restart"),
                        call_failed(method, &e),
                    );
                }
            }
        }
        Err(e) => {
            rec.check(
                "transport.restart",
                false,
                "the plugin starts again",
                format!("restart failed: {e}"),
            );
        }
    }
}

/// Whether an answer's content type says JSON.
fn json_content_type(reply: &Reply) -> bool {
    reply.content_type.as_deref().is_some_and(|ct| {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        media == "application/json"
            || (media.starts_with("application/vnd.docker.plugins.") && media.ends_with("+json"))
    })
}
