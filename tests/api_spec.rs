//! api-spec/openapi.json must describe exactly what berth serves: every served route is
//! documented, every documented route is served (probed on a running daemon).

mod common;
use std::collections::BTreeSet;

use berth::api::routes::ROUTES;

fn documented() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/api-spec/openapi.json"
    ))
    .unwrap();
    let spec: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut routes = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "head", "post", "put", "delete"].contains(&method.as_str()) {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

#[test]
fn every_served_route_is_documented_and_nothing_else() {
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.pattern.to_string()))
        .collect();
    let documented = documented();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in api-spec: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in api-spec but not served: {unserved:?}"
    );
}

#[test]
fn every_documented_route_answers_on_a_running_daemon() {
    let d = common::Daemon::start();
    for (method, path) in documented() {
        let mut concrete = path.replace("{name}", "no-such-plugin");
        if path == "/events" {
            // A stream that ends at once: `until` is in the past.
            concrete.push_str("?until=1");
        }
        for prefix in ["", "/v1.41"] {
            let r = d.request(&method, &format!("{prefix}{concrete}"), &[], &[]);
            let unrouted = r.status == 404 && r.text().contains("page not found");
            assert!(
                !unrouted,
                "{method} {prefix}{concrete} is documented but not routed"
            );
            assert!(
                r.header("Api-Version").is_some(),
                "{method} {path}: routed responses carry Api-Version"
            );
        }
    }
}
