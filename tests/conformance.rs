//! `berth conformance` against the project's test plugin: every check passes against the
//! plugin in its normal modes, and every transport, volume and log check fails (or warns)
//! against a mode broken on purpose (`TEST_BROKEN`). Network, IPAM and authz checks are proven
//! against scripted plugins in the unit tests. Also: the plugin-directory target (run in its
//! namespaces, restarted, removed), the CLI's flags, exit status and output formats.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

use serde_json::Value;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn conformance(args: &[&str]) -> Output {
    let start = std::time::Instant::now();
    let out = Command::new(BERTH)
        .arg("conformance")
        .args(args)
        .output()
        .expect("run berth conformance");
    eprintln!(
        "berth conformance {args:?}: {:.1}s",
        start.elapsed().as_secs_f64()
    );
    out
}

/// Results by check ID of a JSON run.
fn results(out: &Output) -> BTreeMap<String, String> {
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                format!(
                    "{} ({})",
                    c["result"].as_str().unwrap(),
                    c["got"].as_str().unwrap()
                ),
            )
        })
        .collect()
}

/// A test plugin on the host with `knobs`, checked with `args`; the JSON report's results.
fn run_against(knobs: &[(&str, &str)], args: &[&str]) -> (Output, BTreeMap<String, String>) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("p.sock");
    let _plugin = common::host_test_plugin(&socket, &dir.path().join("root"), knobs);
    let mut all = vec!["--socket", socket.to_str().unwrap(), "--format", "json"];
    all.extend_from_slice(args);
    let out = conformance(&all);
    let r = results(&out);
    (out, r)
}

fn outcome(results: &BTreeMap<String, String>, id: &str) -> String {
    results
        .get(id)
        .map(|r| r.split(' ').next().unwrap().to_string())
        .unwrap_or_else(|| "absent".into())
}

/// Every check ID of `protocol` (`berth conformance --list`).
fn check_ids(protocol: &str) -> Vec<String> {
    let out = conformance(&["--list"]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split('\t').next())
        .filter(|id| id.starts_with(&format!("{protocol}.")))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_test_plugin_passes_in_its_volume_and_log_modes() {
    for (mode, implements) in [("volume", "VolumeDriver"), ("log", "LogDriver")] {
        let (out, r) = run_against(&[("TEST_IMPLEMENTS", implements)], &[]);
        assert!(out.status.success(), "{mode}: {r:#?}");
        for (id, result) in &r {
            let expected_warnings = ["transport.error.json", "volume.create.bad-opts"];
            if result.starts_with("fail")
                || (result.starts_with("warn") && !expected_warnings.contains(&id.as_str()))
            {
                panic!("{mode}: {id}: {result}");
            }
        }
        for id in check_ids(mode) {
            assert!(r.contains_key(&id), "{mode}: {id} not reported");
        }
    }
}

/// A `TEST_BROKEN` knob, the protocol it breaks, and the checks (ID, outcome) it must turn.
type BrokenCase = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
);

/// Which checks each broken knob makes fail (or warn).
fn broken_cases() -> Vec<BrokenCase> {
    let v = "VolumeDriver";
    let l = "LogDriver";
    vec![
        (
            "activate-fails",
            v,
            vec![("transport.activate.status", "fail")],
        ),
        (
            "activate-empty",
            v,
            vec![("transport.activate.json", "fail")],
        ),
        (
            "activate-no-implements",
            v,
            vec![("transport.activate.implements", "fail")],
        ),
        (
            "activate-lowercase",
            v,
            vec![("transport.activate.known-names", "fail")],
        ),
        (
            "content-type-required",
            v,
            vec![
                ("transport.accept.v1-2", "fail"),
                ("transport.content-type.absent", "fail"),
            ],
        ),
        ("strict-accept", v, vec![("transport.accept.other", "warn")]),
        (
            "strict-json-ct",
            v,
            vec![("transport.content-type.json", "warn")],
        ),
        ("strict-host", v, vec![("transport.host.any", "warn")]),
        (
            "unknown-200",
            v,
            vec![
                ("transport.unknown-method.404", "fail"),
                ("transport.unknown-interface.404", "fail"),
            ],
        ),
        ("empty-200", v, vec![("transport.reply.nonempty", "fail")]),
        ("text-200", v, vec![("transport.reply.json", "fail")]),
        (
            "no-content-type",
            v,
            vec![("transport.reply.content-type", "warn")],
        ),
        ("plain-errors", v, vec![("transport.error.json", "warn")]),
        (
            "silent-errors",
            v,
            vec![("transport.error.message", "fail")],
        ),
        (
            "accept-garbage",
            v,
            vec![
                ("transport.malformed.refused", "fail"),
                ("transport.empty-body", "warn"),
            ],
        ),
        (
            "crash-on-garbage",
            v,
            vec![("transport.malformed.survives", "fail")],
        ),
        ("serial", v, vec![("transport.parallel", "fail")]),
        ("caps-404", v, vec![("volume.capabilities.answers", "warn")]),
        (
            "scope-bogus",
            v,
            vec![("volume.capabilities.scope", "fail")],
        ),
        ("create-fails", v, vec![("volume.create.basic", "fail")]),
        (
            "strict-opts-silent",
            v,
            vec![("volume.create.bad-opts", "fail")],
        ),
        ("create-serial", v, vec![("volume.create.parallel", "fail")]),
        (
            "get-misnamed",
            v,
            vec![
                ("volume.get.created", "fail"),
                ("volume.get.adapter", "fail"),
            ],
        ),
        ("bad-created-at", v, vec![("volume.get.created-at", "fail")]),
        ("status-list", v, vec![("volume.get.status", "fail")]),
        (
            "mountpoint-case",
            v,
            vec![
                ("volume.get.field-case", "warn"),
                ("volume.list.field-case", "warn"),
            ],
        ),
        ("get-ghosts", v, vec![("volume.get.unknown", "fail")]),
        ("list-missing", v, vec![("volume.list.contains", "fail")]),
        (
            "list-bad",
            v,
            vec![
                ("volume.list.shape", "fail"),
                ("volume.list.adapter", "fail"),
            ],
        ),
        ("path-error", v, vec![("volume.path.before-mount", "warn")]),
        ("mount-fails", v, vec![("volume.mount.answers", "fail")]),
        ("mount-relative", v, vec![("volume.mount.absolute", "fail")]),
        (
            "mount-nowhere",
            v,
            vec![("volume.mount.host-visible", "fail")],
        ),
        (
            "mount-unwritable",
            v,
            vec![("volume.mount.write-read", "fail")],
        ),
        ("path-empty", v, vec![("volume.path.after-mount", "fail")]),
        ("mount-new-dir", v, vec![("volume.mount.second-id", "fail")]),
        (
            "unmount-fails",
            v,
            vec![
                ("volume.unmount.first-id", "fail"),
                ("volume.unmount.last-id", "fail"),
            ],
        ),
        (
            "unmount-wipes",
            v,
            vec![
                ("volume.unmount.keeps-other", "fail"),
                ("volume.mount.remount-data", "fail"),
            ],
        ),
        (
            "mount-unknown-ok",
            v,
            vec![("volume.mount.unknown", "fail")],
        ),
        (
            "remove-mounted-ok",
            v,
            // The removal alone is reported: the unmount checks still judge Unmount.
            vec![
                ("volume.remove.mounted", "warn"),
                ("volume.unmount.first-id", "pass"),
                ("volume.unmount.last-id", "pass"),
                ("volume.unmount.keeps-other", "skip"),
            ],
        ),
        ("remove-fails", v, vec![("volume.remove.unmounted", "fail")]),
        ("remove-keeps", v, vec![("volume.remove.gone", "fail")]),
        (
            "remove-unknown-ok",
            v,
            vec![("volume.remove.unknown", "warn")],
        ),
        (
            "log-caps-404",
            l,
            vec![("log.capabilities.answers", "warn")],
        ),
        ("log-caps-bad", l, vec![("log.capabilities.shape", "fail")]),
        ("log-field-case", l, vec![("log.field-case", "warn")]),
        ("log-start-fails", l, vec![("log.start.answers", "fail")]),
        (
            "log-no-read",
            l,
            vec![
                ("log.start.opens-fifo", "fail"),
                ("log.start.consumes", "fail"),
            ],
        ),
        ("log-bad-file-ok", l, vec![("log.start.bad-file", "warn")]),
        ("log-bad-frames", l, vec![("log.readlogs.framing", "fail")]),
        (
            "log-drop-first",
            l,
            vec![("log.readlogs.round-trip", "fail")],
        ),
        ("log-tail-ignored", l, vec![("log.readlogs.tail", "fail")]),
        ("log-since-ignored", l, vec![("log.readlogs.since", "fail")]),
        ("log-until-ignored", l, vec![("log.readlogs.until", "fail")]),
        (
            "log-follow-closes",
            l,
            vec![("log.readlogs.follow", "fail")],
        ),
        ("log-stop-fails", l, vec![("log.stop.answers", "fail")]),
        (
            "log-die-on-eof",
            l,
            vec![("log.fifo-close.survives", "fail")],
        ),
    ]
}

#[test]
fn every_transport_volume_and_log_check_fails_against_a_broken_test_plugin() {
    let cases = broken_cases();
    let failures = Mutex::new(Vec::new());
    let proven = Mutex::new(Vec::new());
    // A few plugins at a time: each run is short, most of it waiting.
    let queue = Mutex::new(cases.into_iter());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let Some((knob, implements, expected)) = queue.lock().unwrap().next() else {
                    return;
                };
                let (out, r) = run_against(
                    &[("TEST_IMPLEMENTS", implements), ("TEST_BROKEN", knob)],
                    &[],
                );
                for (id, want) in expected {
                    let got = outcome(&r, id);
                    if got == want {
                        proven.lock().unwrap().push(id.to_string());
                    } else {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{knob}: {id} is {:?}, expected {want}", r.get(id)));
                    }
                }
                if !out.status.success() && !r.values().any(|v| v.starts_with("fail")) {
                    failures.lock().unwrap().push(format!(
                        "{knob}: exit {:?} without a failed check",
                        out.status
                    ));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
    // The latency warnings (a slow plugin) and the restart (a plugin directory) are proven in
    // their own tests.
    let mut proven = proven.into_inner().unwrap();
    proven.extend(
        [
            "transport.latency.p50",
            "transport.latency.p99",
            "transport.restart",
            "transport.activate.matches-config",
        ]
        .map(String::from),
    );
    for protocol in ["transport", "volume", "log"] {
        for id in check_ids(protocol) {
            assert!(proven.contains(&id), "{id} is never shown failing");
        }
    }
}

#[test]
fn a_slow_plugin_gets_latency_warnings_and_failures_exit_one() {
    let (out, r) = run_against(
        &[("TEST_SLOW_CALL_MS", "30"), ("TEST_BROKEN", "create-fails")],
        &[
            "--latency-p50",
            "10",
            "--latency-p99",
            "20",
            "--check",
            "transport.latency.*",
            "--check",
            "volume.create.*",
        ],
    );
    assert_eq!(outcome(&r, "transport.latency.p50"), "warn", "{r:#?}");
    assert_eq!(outcome(&r, "transport.latency.p99"), "warn", "{r:#?}");
    assert_eq!(outcome(&r, "volume.create.basic"), "fail");
    assert_eq!(
        outcome(&r, "volume.create.bad-opts"),
        "skip",
        "blocked by the failed create"
    );
    assert_eq!(r.len(), 5, "only the selected checks: {r:#?}");
    assert_eq!(out.status.code(), Some(1));
}

/// A plugin directory holding the test plugin (as `docker plugin create` takes it).
fn plugin_dir(env: &str, types: &str) -> tempfile::TempDir {
    let config = format!(
        r#"{{"Description": "test plugin", "Entrypoint": ["/bin/berth-test-plugin"],
  "Interface": {{"Socket": "testdriver.sock", "Types": [{types}]}},
  "PropagatedMount": "/data", "Env": [{env}]}}"#
    );
    let tar = common::test_plugin_context(&config);
    let dir = tempfile::tempdir().unwrap();
    tar::Archive::new(&tar[..]).unpack(dir.path()).unwrap();
    dir
}

#[test]
fn a_plugin_directory_runs_in_its_namespaces_restarts_and_goes_away() {
    let dir = plugin_dir(
        r#"{"Name": "TEST_IMPLEMENTS", "Value": "VolumeDriver,LogDriver"}"#,
        r#""docker.volumedriver/1.0", "docker.logdriver/1.0""#,
    );
    let junit = dir.path().join("report.xml");
    let out = conformance(&[
        dir.path().to_str().unwrap(),
        "--format",
        "json",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let r = results(&out);
    for id in [
        "transport.restart",
        "transport.activate.matches-config",
        "volume.mount.host-visible",
        "volume.mount.write-read",
        "log.readlogs.round-trip",
        "log.start.opens-fifo",
    ] {
        assert_eq!(outcome(&r, id), "pass", "{id}: {r:#?}");
    }
    assert!(out.status.success(), "{r:#?}");
    assert_junit(&junit, r.len());
    // Nothing is left running or mounted.
    let leftovers: Vec<String> = common::mounts_under(Path::new("/tmp"))
        .into_iter()
        .filter(|m| m.starts_with("/tmp/bconf-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with("bconf-")));

    // A plugin that does not come back after a restart, and whose Activate does not match its
    // config.
    let broken = plugin_dir(
        r#"{"Name": "TEST_BROKEN", "Value": "restart"}, {"Name": "TEST_IMPLEMENTS", "Value": "LogDriver"}"#,
        r#""docker.volumedriver/1.0""#,
    );
    let out = conformance(&[
        broken.path().to_str().unwrap(),
        "--format",
        "json",
        "--check",
        "transport.*",
    ]);
    let r = results(&out);
    assert_eq!(outcome(&r, "transport.restart"), "fail", "{r:#?}");
    assert_eq!(
        outcome(&r, "transport.activate.matches-config"),
        "warn",
        "{r:#?}"
    );
    assert_eq!(out.status.code(), Some(1));
}

/// The JUnit file parses as XML and counts `tests` test cases.
fn assert_junit(path: &Path, tests: usize) {
    let xml = std::fs::read_to_string(path).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), tests);
    let script = "import sys, xml.etree.ElementTree as E\nroot = E.parse(sys.argv[1]).getroot()\nassert root.tag == 'testsuites', root.tag\nn = sum(1 for _ in root.iter('testcase'))\nassert n == int(root.get('tests')), (n, root.get('tests'))\nfor s in root.iter('testsuite'):\n    assert int(s.get('tests')) == len(s.findall('testcase'))\n";
    let checked = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output();
    match checked {
        Ok(o) => assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => eprintln!("python3 not available ({e}); JUnit checked by counts only"),
    }
}

#[test]
fn cli_formats_flags_and_exit_status() {
    // The schema the JSON report follows, checked with python's jsonschema when installed.
    let dir = tempfile::tempdir().unwrap();
    let schema = conformance(&["--schema"]);
    assert!(schema.status.success());
    let schema_file = dir.path().join("schema.json");
    std::fs::write(&schema_file, &schema.stdout).unwrap();
    let (out, r) = run_against(
        &[],
        &[
            "--protocol",
            "volume",
            "--check",
            "volume.*,transport.activate.*",
        ],
    );
    assert!(out.status.success());
    assert!(
        r.keys()
            .all(|id| id.starts_with("volume.") || id.starts_with("transport.activate.")),
        "{r:#?}"
    );
    let report_file = dir.path().join("report.json");
    std::fs::write(&report_file, &out.stdout).unwrap();
    let validate = "import json, sys\ntry:\n    import jsonschema\nexcept ImportError:\n    sys.exit(3)\njsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1])))\n";
    if let Ok(o) = Command::new("python3")
        .arg("-c")
        .arg(validate)
        .arg(&schema_file)
        .arg(&report_file)
        .output()
    {
        match o.status.code() {
            Some(0) => {}
            Some(3) => {
                eprintln!("jsonschema not installed: the schema is checked by the unit tests only")
            }
            _ => panic!(
                "the report does not follow its schema: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
        }
    }

    // The table.
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("t.sock");
    let _plugin = common::host_test_plugin(&socket, &socket_dir.path().join("root"), &[]);
    let table = conformance(&[
        "--socket",
        socket.to_str().unwrap(),
        "--check",
        "volume.mount.*",
    ]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("volume.mount.write-read") && text.contains("passed, 0 failed"),
        "{text}"
    );
    assert!(!text.contains("volume.create.basic"), "{text}");

    // Usage errors exit 2 with a message.
    for args in [
        vec!["--socket", socket.to_str().unwrap(), "--format", "yaml"],
        vec!["--socket", socket.to_str().unwrap(), "--protocol", "bogus"],
        vec![],
        vec!["--socket", "/nonexistent/berth-conformance.sock"],
        vec![
            "--socket",
            socket.to_str().unwrap(),
            "--volume-opt",
            "novalue",
        ],
    ] {
        let out = conformance(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if args.get(1).is_some_and(|a| a.starts_with("/nonexistent")) {
            // An unreachable plugin fails its activation.
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains("berth conformance:"), "{stderr}");
        }
    }
    let listed = conformance(&["--list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).lines().count() >= 60);
}

#[test]
fn spec_and_json_files_name_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("t.sock");
    let _plugin = common::host_test_plugin(&socket, &dir.path().join("root"), &[]);
    let spec = dir.path().join("t.spec");
    std::fs::write(&spec, format!("unix://{}\n", socket.display())).unwrap();
    let out = conformance(&[
        "--spec",
        spec.to_str().unwrap(),
        "--check",
        "transport.activate.*",
        "--format",
        "json",
    ]);
    let r = results(&out);
    assert_eq!(outcome(&r, "transport.activate.status"), "pass", "{r:#?}");
    let json = dir.path().join("t.json");
    std::fs::write(
        &json,
        format!(r#"{{"Name": "t", "Addr": "unix://{}"}}"#, socket.display()),
    )
    .unwrap();
    let out = conformance(&[
        "--spec",
        json.to_str().unwrap(),
        "--check",
        "volume.list.*",
        "--format",
        "json",
    ]);
    assert_eq!(outcome(&results(&out), "volume.list.contains"), "pass");
}

#[test]
fn a_managed_plugin_of_a_running_berth_is_checked_and_its_output_shipped_to_a_log_plugin() {
    use berth::drivers::log::{LogDriverClient, ReadConfig};
    // The log plugin: the test plugin in its LogDriver mode, as a legacy plugin.
    let dir = tempfile::Builder::new()
        .prefix("bc")
        .tempdir_in("/tmp")
        .unwrap();
    let legacy = dir.path().join("plugins");
    let socket = legacy.join("testlog.sock");
    let _log_plugin = common::host_test_plugin(
        &socket,
        &dir.path().join("root"),
        &[("TEST_IMPLEMENTS", "LogDriver")],
    );
    let daemon = common::Daemon::start_with(&[
        "--legacy-plugin-dir",
        legacy.to_str().unwrap(),
        "--plugin-log-driver",
        "testlog",
    ]);

    let r = daemon.create_plugin(
        "conf/vol",
        &common::test_plugin_context(&common::test_plugin_config("")),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let r = daemon.post_json("/v1.41/plugins/conf/vol/set", r#"["TEST_STDERR_LINES=3"]"#);
    assert_eq!(r.status, 204, "{}", r.text());
    let r = daemon.request(
        "POST",
        "/v1.41/plugins/conf/vol/enable?timeout=30",
        &[],
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let id = daemon.get("/v1.41/plugins/conf/vol/json").json()["Id"]
        .as_str()
        .unwrap()
        .to_string();

    let host = format!("unix://{}", daemon.socket.display());
    let out = conformance(&[
        "--plugin",
        "conf/vol",
        "--host",
        &host,
        "--format",
        "json",
        "--check",
        "volume.*",
        "--check",
        "transport.activate.*",
    ]);
    let r = results(&out);
    assert!(
        out.status.success(),
        "{r:#?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in [
        "volume.mount.host-visible",
        "volume.mount.write-read",
        "transport.activate.matches-config",
    ] {
        assert_eq!(outcome(&r, id), "pass", "{id}: {r:#?}");
    }
    let missing = conformance(&["--plugin", "conf/nope", "--host", &host]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    // The plugin's start-up lines reached the log plugin, in a stream named by its ID.
    let client = berth::rpc::client::PluginClient::new(
        berth::rpc::client::Transport::Unix(socket.clone()),
        Some(std::time::Duration::from_secs(5)),
    )
    .unwrap();
    let log = LogDriverClient::for_plugin(&berth::rpc::handle::PluginHandle {
        name: "testlog".into(),
        kind: berth::rpc::handle::PluginKind::Legacy,
        client,
        paths: berth::rpc::handle::PathMapper::Identity,
    });
    let info = berth::drivers::log::Info {
        container_id: id.clone(),
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shipped = common::eventually(std::time::Duration::from_secs(10), || {
        let lines: Vec<String> = runtime.block_on(async {
            let mut reader = log.read_logs(&info, &ReadConfig::default()).await.unwrap();
            let mut lines = Vec::new();
            while let Some(e) = reader.next().await.unwrap() {
                lines.push(format!("{} {}", e.source, String::from_utf8_lossy(&e.line)));
            }
            lines
        });
        (1..=3).all(|i| lines.contains(&format!("stderr test-plugin stderr line {i}")))
    });
    assert!(shipped, "the plugin's output did not reach the log plugin");
}

/// A third-party plugin the findings in the README are kept true against: how it is started
/// (`dir` is a private directory), the options its volumes need, and every check that does not
/// pass, with its outcome. Latency checks are left out: they measure the machine as much as
/// the plugin.
struct ThirdParty {
    name: &'static str,
    /// Whether it comes from the PyPI virtualenv of scripts/third-party-plugins.sh.
    from_pypi: bool,
    start: fn(&Path) -> Started,
    findings: &'static [(&'static str, &'static str)],
}

/// A third-party plugin's running processes and the `berth conformance` arguments that name it
/// (and its volume options).
struct Started {
    processes: Vec<common::HostProcess>,
    args: Vec<String>,
}

/// Where scripts/third-party-plugins.sh installs the PyPI plugins.
fn third_party_venv() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/third-party/venv")
}

/// Starts `cmd` (its output into `dir/<name>.log`) and waits for `socket`.
fn start_on_socket(dir: &Path, name: &str, mut cmd: Command, socket: &Path) -> common::HostProcess {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap());
    let process = common::HostProcess::spawn(name, &mut cmd);
    common::wait_for_socket(socket);
    process
}

fn socket_args(socket: &Path, volume_opts: &[String]) -> Vec<String> {
    let mut args = vec!["--socket".to_string(), socket.display().to_string()];
    for opt in volume_opts {
        args.extend(["--volume-opt".to_string(), opt.clone()]);
    }
    args
}

/// The OVN driver's Flask app with its `prepare()` left out (it adds a bridge to the host's
/// Open vSwitch and writes /etc/docker/plugins), a private northbound database, loopback only.
const OVN_DRIVER: &str = r#"
import importlib.machinery, importlib.util, sys
loader = importlib.machinery.SourceFileLoader("ovn_driver", "/usr/bin/ovn-docker-overlay-driver")
module = importlib.util.module_from_spec(importlib.util.spec_from_loader("ovn_driver", loader))
loader.exec_module(module)
module.OVN_NB = "unix:" + sys.argv[1]
module.app.run(host="127.0.0.1", port=int(sys.argv[2]))
"#;

fn third_party_plugins() -> Vec<ThirdParty> {
    vec![
        ThirdParty {
            name: "rclone",
            from_pypi: false,
            start: |dir| {
                let socket = dir.join("rclone.sock");
                let mut cmd = Command::new("rclone");
                cmd.args(["serve", "docker", "--base-dir"])
                    .arg(dir.join("volumes"))
                    .arg("--socket-addr")
                    .arg(&socket)
                    .arg("--cache-dir")
                    .arg(dir.join("cache"))
                    .arg("--config")
                    .arg(dir.join("rclone.conf"));
                Started {
                    processes: vec![start_on_socket(dir, "rclone", cmd, &socket)],
                    args: socket_args(&socket, &["type=local".into()]),
                }
            },
            findings: &[],
        },
        ThirdParty {
            name: "ovn-docker-overlay-driver",
            from_pypi: false,
            start: |dir| {
                let db = dir.join("nb.db");
                let made = Command::new("ovsdb-tool")
                    .arg("create")
                    .arg(&db)
                    .arg("/usr/share/ovn/ovn-nb.ovsschema")
                    .status()
                    .expect("ovsdb-tool");
                assert!(made.success(), "ovsdb-tool create: {made}");
                let nb = dir.join("nb.sock");
                let mut server = Command::new("ovsdb-server");
                server
                    .arg(format!("--remote=punix:{}", nb.display()))
                    .arg(format!("--unixctl={}", dir.join("nb.ctl").display()))
                    .arg("--no-chdir")
                    .arg(&db);
                let server = start_on_socket(dir, "ovsdb-server", server, &nb);
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let mut driver = Command::new("/usr/bin/python3");
                driver
                    .args(["-c", OVN_DRIVER])
                    .arg(&nb)
                    .arg(port.to_string())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::fs::File::create(dir.join("driver.log")).unwrap());
                let driver = common::HostProcess::spawn("ovn-docker-overlay-driver", &mut driver);
                assert!(
                    common::eventually(std::time::Duration::from_secs(15), || {
                        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                    }),
                    "the OVN driver did not listen on port {port}"
                );
                let spec = dir.join("ovn.spec");
                std::fs::write(&spec, format!("tcp://127.0.0.1:{port}\n")).unwrap();
                Started {
                    processes: vec![driver, server],
                    args: vec!["--spec".into(), spec.display().to_string()],
                }
            },
            // Written for Python 2: `ast.literal_eval` of ovn-nbctl's output, bytes on Python 3,
            // fails, so every EndpointOperInfo and Join answers an Err.
            findings: &[
                ("network.endpoint.oper-info", "warn"),
                ("network.join.answers", "fail"),
                ("network.join.interface-exists", "skip"),
                ("network.join.gateway", "skip"),
                ("network.join.routes", "skip"),
                ("network.leave", "skip"),
            ],
        },
        ThirdParty {
            name: "wolphin-driver",
            from_pypi: true,
            // Its own launcher binds /run/docker/plugins/<name>.sock; the same app on a
            // private socket.
            start: |dir| {
                let socket = dir.join("wolphin.sock");
                std::fs::create_dir_all(dir.join("base")).unwrap();
                let mut cmd = Command::new(third_party_venv().join("bin/gunicorn"));
                cmd.arg(format!("--bind=unix:{}", socket.display()))
                    .args(["--workers=1", "wolphin_driver.wsgi:app"])
                    .env("BASE_DIR", dir.join("base"));
                Started {
                    processes: vec![start_on_socket(dir, "wolphin-driver", cmd, &socket)],
                    args: socket_args(&socket, &[]),
                }
            },
            findings: &[
                ("volume.create.bad-opts", "warn"),
                ("volume.get.field-case", "warn"),
                ("volume.list.field-case", "warn"),
                ("volume.path.before-mount", "warn"),
                ("volume.path.after-mount", "fail"),
            ],
        },
        ThirdParty {
            name: "docker-volume-easyfuse",
            from_pypi: true,
            start: |dir| {
                let socket = dir.join("easyfuse.sock");
                let mut cmd = Command::new(third_party_venv().join("bin/python"));
                cmd.args(["-m", "easyfuse", "-s"])
                    .arg(&socket)
                    .arg("-m")
                    .arg(dir.join("mnt"))
                    .arg("-d")
                    .arg(dir.join("db/mntdb.json"));
                // Volumes are FUSE mounts: fuse-overlayfs over private directories.
                for d in ["lower", "upper", "work"] {
                    std::fs::create_dir_all(dir.join(d)).unwrap();
                }
                let opts = [
                    "device=fuse-overlayfs".to_string(),
                    format!(
                        "o=lowerdir={0}/lower,upperdir={0}/upper,workdir={0}/work",
                        dir.display()
                    ),
                ];
                Started {
                    processes: vec![start_on_socket(dir, "easyfuse", cmd, &socket)],
                    args: socket_args(&socket, &opts),
                }
            },
            findings: &[
                ("transport.reply.content-type", "warn"),
                ("volume.create.bad-opts", "warn"),
                ("volume.remove.mounted", "warn"),
                ("volume.unmount.keeps-other", "skip"),
                ("volume.mount.remount-data", "skip"),
            ],
        },
    ]
}

#[test]
fn third_party_plugins_keep_their_findings() {
    let pypi = third_party_venv().join("bin/python").exists();
    let mut mismatches = Vec::new();
    for plugin in third_party_plugins() {
        if plugin.from_pypi && !pypi {
            eprintln!(
                "{}: not installed (scripts/third-party-plugins.sh installs it); not checked",
                plugin.name
            );
            continue;
        }
        let dir = tempfile::Builder::new()
            .prefix("btp")
            .tempdir_in("/tmp")
            .unwrap();
        let mut started = (plugin.start)(dir.path());
        let mut args: Vec<&str> = started.args.iter().map(String::as_str).collect();
        args.extend(["--format", "json"]);
        let out = conformance(&args);
        for p in &mut started.processes {
            p.kill();
        }
        // A plugin that removes mounted volumes leaves their mounts behind.
        let _ = berth::mounts::unmount_matching(|p| p.starts_with(dir.path()));
        let r = results(&out);
        assert!(!r.is_empty(), "{}: no report", plugin.name);
        for (id, got) in &r {
            if id.starts_with("transport.latency.") {
                continue;
            }
            let want = plugin
                .findings
                .iter()
                .find(|(f, _)| f == id)
                .map(|(_, outcome)| *outcome);
            let result = got.split(' ').next().unwrap_or_default();
            let fits = match want {
                Some(w) => result == w,
                // A legacy plugin has no config, and its process is not the harness's.
                None => result == "pass" || result == "skip" && id.starts_with("transport."),
            };
            if !fits {
                mismatches.push(format!(
                    "{}: {id} is {got}, expected {}",
                    plugin.name,
                    want.unwrap_or("pass")
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}
