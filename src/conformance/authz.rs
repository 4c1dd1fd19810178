//! AuthZPlugin: the request and response phases as the daemon sends them (every optional field
//! omitted when empty, bodies base64, `RequestUri` spelled so), and the answers it can use.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Map, Value};

use super::prelude::*;

const FIELDS: &str = "Allow Msg Err";

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn headers() -> Value {
    json!({"Content-Type": "application/json", "User-Agent": "Docker-Client/28.2.2 (linux)"})
}

fn request(method: &str, uri: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("RequestMethod".into(), method.into());
    m.insert("RequestUri".into(), uri.into());
    m
}

/// Whether an answer is one the daemon can use: 200 with a boolean `Allow`.
fn decision(r: &Reply) -> Option<bool> {
    if r.status != 200 {
        return None;
    }
    r.field("Allow").and_then(Value::as_bool)
}

/// Sends one phase call and checks the daemon could use what comes back; the answer, if any.
async fn usable_answer(
    ctx: &Context<'_>,
    rec: &mut Recorder<'_>,
    id: &str,
    method: &str,
    body: &Value,
) -> Option<Reply> {
    match ctx.probe.call(method, body).await {
        Ok(r) => {
            rec.check(
                id,
                decision(&r).is_some(),
                "200 with a boolean Allow",
                r.summary(),
            );
            Some(r)
        }
        Err(e) => {
            rec.check(id, false, "an answer", call_failed(method, &e));
            None
        }
    }
}

pub async fn run(ctx: &Context<'_>, rec: &mut Recorder<'_>) {
    const REQ: &str = "AuthZPlugin.AuthZReq";
    const RES: &str = "AuthZPlugin.AuthZRes";
    let mut ping = request("GET", "/_ping");
    ping.insert(
        "RequestHeaders".into(),
        json!({"User-Agent": "Docker-Client/28.2.2 (linux)"}),
    );
    let ping = Value::Object(ping);
    let first = match ctx.probe.call(REQ, &ping).await {
        Ok(r) => r,
        Err(e) => {
            rec.check(
                "authz.req.answers",
                false,
                "an answer",
                call_failed(REQ, &e),
            );
            rec.block(call_failed(REQ, &e));
            return;
        }
    };
    if !rec.check(
        "authz.req.answers",
        first.status == 200,
        "200",
        first.summary(),
    ) {
        rec.block(format!("AuthZReq failed: {}", first.summary()));
        return;
    }
    rec.check(
        "authz.req.shape",
        decision(&first).is_some()
            && matches!(
                first.field("Msg"),
                None | Some(Value::Null | Value::String(_))
            ),
        "{\"Allow\":true|false,\"Msg\":\"…\"}",
        first.summary(),
    );
    rec.spelling(
        "authz.req.field-case",
        first.misspelled_keys(FIELDS),
        first.summary(),
    );
    let mut answers = vec![first.clone()];

    let mut cases: Vec<(&str, Value)> = Vec::new();
    cases.push((
        "authz.req.minimal",
        Value::Object(request("GET", "/v1.41/version")),
    ));
    let mut with_body = request("POST", "/v1.41/volumes/create");
    with_body.insert(
        "RequestBody".into(),
        b64(b"{\"Name\":\"v1\",\"Driver\":\"local\"}\n").into(),
    );
    with_body.insert("RequestHeaders".into(), headers());
    cases.push(("authz.req.body", Value::Object(with_body.clone())));
    let mut tls = request("GET", "/v1.41/info");
    tls.insert("User".into(), "client".into());
    tls.insert("UserAuthNMethod".into(), "TLS".into());
    tls.insert(
        "RequestPeerCertificates".into(),
        json!([b64(
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        )]),
    );
    cases.push(("authz.req.tls-user", Value::Object(tls)));
    for (id, body) in cases {
        answers.extend(usable_answer(ctx, rec, id, REQ, &body).await);
    }

    // A body near the daemon's limit: base64 of ~3 MiB of JSON.
    let mut large = request("POST", "/v1.41/volumes/create");
    let filler = "x".repeat(ctx.options.authz_large_body);
    large.insert(
        "RequestBody".into(),
        b64(format!("{{\"Name\":\"{filler}\"}}").as_bytes()).into(),
    );
    large.insert("RequestHeaders".into(), headers());
    match ctx.probe.call(REQ, &Value::Object(large)).await {
        Ok(r) => {
            rec.check(
                "authz.req.large-body",
                decision(&r).is_some(),
                "200 with a boolean Allow",
                format!("{} in {:.0} ms", r.summary(), r.elapsed.as_secs_f64() * 1e3),
            );
        }
        Err(e) => {
            rec.check(
                "authz.req.large-body",
                false,
                "an answer",
                call_failed(REQ, &e),
            );
        }
    }

    // Same request twice.
    match ctx.probe.call(REQ, &Value::Object(with_body.clone())).await {
        Ok(again) => {
            let before = answers.get(2).and_then(decision);
            rec.expect(
                "authz.req.consistent",
                decision(&again) == before,
                Outcome::Warn,
                format!("Allow {before:?} again"),
                again.summary(),
            );
            answers.push(again);
        }
        Err(e) => {
            rec.check(
                "authz.req.consistent",
                false,
                "an answer",
                call_failed(REQ, &e),
            );
        }
    }

    let denials: Vec<&Reply> = answers
        .iter()
        .filter(|r| decision(r) == Some(false))
        .collect();
    if denials.is_empty() {
        rec.skip("authz.req.deny-message", "no request was denied");
    } else {
        let silent = denials.iter().find(|r| r.text("Msg").is_empty());
        rec.expect(
            "authz.req.deny-message",
            silent.is_none(),
            Outcome::Warn,
            "a Msg with every denial",
            silent
                .map(|r| r.summary())
                .unwrap_or_else(|| "every denial says why".into()),
        );
    }

    let mut res = with_body.clone();
    res.insert("ResponseStatusCode".into(), 201.into());
    res.insert(
        "ResponseHeaders".into(),
        json!({"Api-Version": "1.41", "Content-Type": "application/json", "Server": "berth"}),
    );
    res.insert(
        "ResponseBody".into(),
        b64(b"{\"Name\":\"v1\",\"Driver\":\"local\"}\n").into(),
    );
    let res = Value::Object(res);
    answers.extend(usable_answer(ctx, rec, "authz.res.answers", RES, &res).await);
    let mut implicit = request("GET", "/v1.41/info");
    implicit.insert(
        "ResponseHeaders".into(),
        json!({"Api-Version": "1.41", "Content-Type": "application/json"}),
    );
    let implicit = Value::Object(implicit);
    answers.extend(usable_answer(ctx, rec, "authz.res.no-status", RES, &implicit).await);

    let err_in_200 = answers.iter().find(|r| {
        r.status == 200
            && r.field("Err")
                .and_then(Value::as_str)
                .is_some_and(|e| !e.is_empty())
    });
    rec.expect(
        "authz.err.not-in-200",
        err_in_200.is_none(),
        Outcome::Warn,
        "no Err in 200 answers",
        err_in_200
            .map(|r| r.summary())
            .unwrap_or_else(|| "none".into()),
    );

    let slowest = answers
        .iter()
        .map(|r| r.elapsed)
        .max()
        .unwrap_or(Duration::ZERO);
    rec.expect(
        "authz.deadline",
        slowest <= ctx.options.latency_p99,
        Outcome::Warn,
        format!(
            "within {:.0} ms",
            ctx.options.latency_p99.as_secs_f64() * 1e3
        ),
        format!("slowest decision {:.1} ms", slowest.as_secs_f64() * 1e3),
    );
}

#[cfg(test)]
mod model_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::conformance::scripted::{self, arg, edit, err, ok, spoiled, Handler};

    /// Allows everything but volume creation, which it denies with a reason.
    fn plugin() -> Handler {
        scripted::model("authz", |method, args| {
            Some(match method {
                "AuthZPlugin.AuthZReq" if arg(args, "RequestUri").contains("/volumes/create") => {
                    ok(json!({"Allow": false, "Msg": "volumes are read-only here"}))
                }
                "AuthZPlugin.AuthZReq" | "AuthZPlugin.AuthZRes" => {
                    ok(json!({"Allow": true, "Msg": ""}))
                }
                _ => return None,
            })
        })
    }

    /// Refuses the requests `refuse` picks; answers the rest as the good model does.
    fn refusing(
        refuse: fn(&Value) -> bool,
    ) -> impl Fn(&Value, scripted::Answer) -> scripted::Answer {
        move |args, a| {
            if refuse(args) {
                err(500, "cannot handle it")
            } else {
                a
            }
        }
    }

    #[tokio::test]
    async fn every_authz_check_passes_against_a_good_plugin_and_fails_against_a_spoiled_one() {
        scripted::prove_good(plugin(), Protocol::Authz).await;

        const REQ: &str = "AuthZPlugin.AuthZReq";
        const RES: &str = "AuthZPlugin.AuthZRes";
        let flips = Arc::new(AtomicUsize::new(0));
        let cases: Vec<(&str, Outcome, Handler)> = vec![
            (
                "authz.req.answers",
                Outcome::Fail,
                spoiled(plugin(), REQ, |_, _| err(500, "down")),
            ),
            (
                "authz.req.shape",
                Outcome::Fail,
                spoiled(plugin(), REQ, |_, a| {
                    edit(a, |v| v["Allow"] = "true".into())
                }),
            ),
            (
                "authz.req.field-case",
                Outcome::Warn,
                spoiled(plugin(), REQ, |_, _| ok(json!({"allow": true}))),
            ),
            (
                "authz.req.minimal",
                Outcome::Fail,
                spoiled(
                    plugin(),
                    REQ,
                    refusing(|args| args.get("RequestHeaders").is_none()),
                ),
            ),
            (
                "authz.req.body",
                Outcome::Fail,
                spoiled(
                    plugin(),
                    REQ,
                    refusing(|args| args.get("RequestBody").is_some()),
                ),
            ),
            (
                "authz.req.large-body",
                Outcome::Fail,
                spoiled(
                    plugin(),
                    REQ,
                    refusing(|args| arg(args, "RequestBody").len() > 100_000),
                ),
            ),
            (
                "authz.req.tls-user",
                Outcome::Fail,
                spoiled(plugin(), REQ, refusing(|args| args.get("User").is_some())),
            ),
            (
                "authz.req.deny-message",
                Outcome::Warn,
                spoiled(plugin(), REQ, |_, a| edit(a, |v| v["Msg"] = "".into())),
            ),
            (
                "authz.req.consistent",
                Outcome::Warn,
                spoiled(plugin(), REQ, move |args, a| {
                    let small_post = arg(args, "RequestMethod") == "POST"
                        && arg(args, "RequestBody").len() < 1000;
                    if small_post && flips.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
                        ok(json!({"Allow": true}))
                    } else {
                        a
                    }
                }),
            ),
            (
                "authz.res.answers",
                Outcome::Fail,
                spoiled(plugin(), RES, |_, _| err(500, "down")),
            ),
            (
                "authz.res.no-status",
                Outcome::Fail,
                spoiled(
                    plugin(),
                    RES,
                    refusing(|args| args.get("ResponseStatusCode").is_none()),
                ),
            ),
            (
                "authz.err.not-in-200",
                Outcome::Warn,
                spoiled(plugin(), RES, |_, a| {
                    edit(a, |v| v["Err"] = "ignored".into())
                }),
            ),
            (
                "authz.deadline",
                Outcome::Warn,
                spoiled(plugin(), RES, |_, a| {
                    std::thread::sleep(std::time::Duration::from_millis(600));
                    a
                }),
            ),
        ];
        scripted::prove_cases(cases, Protocol::Authz).await;
    }
}
