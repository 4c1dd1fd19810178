//! Prometheus metrics (`--metrics-addr`): scraped before and after a known sequence of calls,
//! every counter must have moved by exactly that much; MetricsCollector plugins get the metrics
//! socket and `StartMetrics`/`StopMetrics`. Runs as root (plugins run in namespaces).

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;

/// A daemon with metrics on (a loopback TCP port chosen by the kernel, plus
/// `<exec-root>/metrics.sock`, which the tests scrape) and a legacy plugin directory.
fn daemon(legacy_dir: &Path) -> Daemon {
    Daemon::start_with(&[
        "--metrics-addr",
        "127.0.0.1:0",
        "--legacy-plugin-dir",
        legacy_dir.to_str().unwrap(),
        "--plugin-start-timeout",
        "10",
    ])
}

fn scrape(d: &Daemon) -> String {
    let r = raw_request(
        &d.exec_root.join("metrics.sock"),
        "GET",
        "/metrics",
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    r.text()
}

/// The value of one series (name with its labels exactly as printed), 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn counters_move_by_exactly_the_calls_made() {
    let legacy = short_tempdir("btl");
    let root = legacy.path().join("volumes");
    let _plugin = host_test_plugin(&legacy.path().join("tp.sock"), &root, &[]);
    let d = daemon(legacy.path());
    let before = scrape(&d);

    for _ in 0..3 {
        assert_eq!(d.get("/volumes").status, 200);
    }
    assert_eq!(d.get("/v1.41/nosuch").status, 404);
    let r = d.post_json("/volumes/create", r#"{"Name":"m1","Driver":"tp"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = d.post_json("/volumes/create", r#"{"Name":"m2","Driver":"local"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(d.get("/volumes/nosuch").status, 404);

    let after = scrape(&d);
    for (series, by) in [
        (
            r#"berth_api_requests_total{method="GET",route="/volumes",status="200"}"#,
            3.0,
        ),
        (
            r#"berth_api_requests_total{method="GET",route="unmatched",status="404"}"#,
            1.0,
        ),
        (
            r#"berth_api_requests_total{method="POST",route="/volumes/create",status="201"}"#,
            2.0,
        ),
        (
            r#"berth_api_requests_total{method="GET",route="/volumes/{name}",status="404"}"#,
            1.0,
        ),
        (
            r#"berth_api_request_duration_seconds_count{method="GET",route="/volumes"}"#,
            3.0,
        ),
        // The legacy plugin is activated on first use, then asked for the volume, then creates it.
        (
            r#"berth_plugin_calls_total{plugin="tp",method="Plugin.Activate",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"berth_plugin_calls_total{plugin="tp",method="VolumeDriver.Create",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"berth_plugin_call_duration_seconds_count{plugin="tp",method="VolumeDriver.Create"}"#,
            1.0,
        ),
    ] {
        let moved = value(&after, series) - value(&before, series);
        assert_eq!(moved, by, "{series} moved by {moved}\n{after}");
    }
    assert_eq!(value(&after, r#"berth_volumes{driver="tp"}"#), 1.0);
    assert_eq!(value(&after, r#"berth_volumes{driver="local"}"#), 1.0);
    assert_eq!(value(&after, "berth_plugins_enabled"), 0.0);

    // A plugin that stops answering: its calls count as unreachable.
    drop(_plugin);
    let r = d.delete("/volumes/m1");
    assert_eq!(r.status, 500, "{}", r.text());
    let last = scrape(&d);
    assert!(
        value(
            &last,
            r#"berth_plugin_calls_total{plugin="tp",method="VolumeDriver.Get",outcome="unreachable"}"#
        ) >= 1.0,
        "{last}"
    );
}

#[test]
fn metrics_collector_plugins_scrape_the_metrics_socket_from_inside() {
    let legacy = short_tempdir("btl");
    let mut d = daemon(legacy.path());
    let config = test_plugin_config("").replace(
        r#""docker.volumedriver/1.0""#,
        r#""docker.volumedriver/1.0", "docker.metricscollector/1.0""#,
    );
    let r = d.create_plugin("test/collector", &test_plugin_context(&config));
    assert_eq!(r.status, 204, "{}", r.text());
    let id = d.get("/plugins/test/collector/json").json()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = d.post("/plugins/test/collector/enable?timeout=30");
    assert_eq!(r.status, 200, "{}", r.text());

    // StartMetrics made the plugin scrape /run/docker/metrics.sock inside its rootfs; what it
    // read lands in its propagated mount (/data).
    let data = d
        .data_root
        .join("plugins")
        .join(&id)
        .join("propagated-mount");
    let scraped = data.join("metrics.txt");
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_to_string(
            &scraped
        )
        .is_ok_and(|t| t.contains("berth_plugins_enabled 1"))),
        "no scrape from inside the plugin: {:?}\n{}",
        std::fs::read_to_string(&scraped),
        d.log()
    );
    let text = std::fs::read_to_string(&scraped).unwrap();
    assert!(text.starts_with("HTTP/1.0 200 OK\n"), "{text}");
    assert!(
        text.contains("# TYPE berth_api_requests_total counter"),
        "{text}"
    );

    // The socket is bound read-only: the plugin can scrape but not replace it.
    let inside = d
        .data_root
        .join("plugins")
        .join(&id)
        .join("rootfs/run/docker/metrics.sock");
    assert!(inside.exists(), "mount target {} missing", inside.display());

    // StopMetrics at daemon shutdown, before the plugin is stopped.
    d.stop();
    assert_eq!(
        std::fs::read_to_string(data.join("metrics-stopped"))
            .ok()
            .as_deref(),
        Some("stopped\n")
    );
}

#[test]
fn supervisor_restarts_are_counted() {
    let legacy = short_tempdir("btl");
    let d = daemon(legacy.path());
    let r = d.create_plugin(
        "test/crasher",
        &test_plugin_context(&test_plugin_config("")),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let id = d.get("/plugins/test/crasher/json").json()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = d.post_json(
        "/plugins/test/crasher/set",
        r#"["TEST_CRASH_AFTER_MS=200"]"#,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        d.post("/plugins/test/crasher/enable?timeout=30").status,
        200
    );
    let series = format!(r#"berth_plugin_restarts_total{{plugin_id="{id}"}}"#);
    assert!(
        eventually(Duration::from_secs(15), || value(&scrape(&d), &series)
            >= 2.0),
        "{}",
        scrape(&d)
    );
    assert_eq!(value(&scrape(&d), "berth_plugins_enabled"), 1.0);
    assert_eq!(d.post("/plugins/test/crasher/disable").status, 200);
    assert_eq!(value(&scrape(&d), "berth_plugins_enabled"), 0.0);
}

#[test]
fn metrics_are_off_unless_asked_for() {
    let d = Daemon::start();
    assert!(!d.exec_root.join("metrics.sock").exists());
}
