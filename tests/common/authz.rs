//! Authorization tests: the test plugin in its AuthZ mode as a legacy plugin on the host, and
//! what its log says it received (`TEST_AUTHZ_LOG`, one field per line).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{host_test_plugin, Daemon, HostProcess};

/// A legacy AuthZ plugin `<dir>/plugins/<name>.sock` (so `--legacy-plugin-dir <dir>/plugins`
/// finds it) logging to `<dir>/<name>.log`.
pub struct AuthzPlugin {
    pub name: String,
    pub log: PathBuf,
    pub process: HostProcess,
}

/// One call the plugin received: `AuthZPlugin.AuthZReq` or `AuthZPlugin.AuthZRes`, and its
/// fields as logged (JSON values; bodies as `<n> bytes "<text>"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzCall {
    pub method: String,
    pub fields: BTreeMap<String, String>,
}

impl AuthzCall {
    pub fn is_request(&self) -> bool {
        self.method == "AuthZPlugin.AuthZReq"
    }

    /// A string field's value (JSON-decoded), "" when absent.
    pub fn text(&self, name: &str) -> String {
        self.fields
            .get(name)
            .map(|raw| serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.clone()))
            .unwrap_or_default()
    }

    pub fn uri(&self) -> String {
        self.text("RequestUri")
    }

    /// A map field (`RequestHeaders`, `ResponseHeaders`).
    pub fn map(&self, name: &str) -> BTreeMap<String, String> {
        self.fields
            .get(name)
            .map(|raw| serde_json::from_str(raw).expect("a JSON object"))
            .unwrap_or_default()
    }

    /// A body field as `(length, shown text)`.
    pub fn body(&self, name: &str) -> Option<(usize, String)> {
        let raw = self.fields.get(name)?;
        let (len, rest) = raw.split_once(" bytes ")?;
        let text = rest.trim_end_matches('…');
        Some((len.parse().ok()?, serde_json::from_str(text).ok()?))
    }
}

/// The test plugin as a legacy AuthZ plugin with `rules` (`TEST_AUTHZ_RULES`) and extra knobs.
pub fn authz_plugin(dir: &Path, name: &str, rules: &str, knobs: &[(&str, &str)]) -> AuthzPlugin {
    let log = dir.join(format!("{name}.log"));
    let log_path = log.display().to_string();
    let mut all = vec![
        ("TEST_IMPLEMENTS", "authz"),
        ("TEST_AUTHZ_RULES", rules),
        ("TEST_AUTHZ_LOG", log_path.as_str()),
    ];
    all.extend_from_slice(knobs);
    let socket = dir.join("plugins").join(format!("{name}.sock"));
    let process = host_test_plugin(&socket, &dir.join(format!("{name}-root")), &all);
    AuthzPlugin {
        name: name.to_string(),
        log,
        process,
    }
}

impl AuthzPlugin {
    /// Every call logged so far.
    pub fn calls(&self) -> Vec<AuthzCall> {
        read_log(&self.log)
    }

    /// The calls whose `RequestUri` is `uri`.
    pub fn calls_for(&self, uri: &str) -> Vec<AuthzCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.uri() == uri)
            .collect()
    }

    pub fn forget(&self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

pub fn read_log(path: &Path) -> Vec<AuthzCall> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut calls: Vec<AuthzCall> = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("  ") {
            None => calls.push(AuthzCall {
                method: line.to_string(),
                fields: BTreeMap::new(),
            }),
            Some(field) => {
                let (name, value) = field.split_once(": ").expect("`Name: value`");
                if let Some(call) = calls.last_mut() {
                    call.fields.insert(name.to_string(), value.to_string());
                }
            }
        }
    }
    calls
}

/// The `--legacy-plugin-dir` of plugins made with [`authz_plugin`] in `dir`.
pub fn plugin_dir(dir: &Path) -> String {
    dir.join("plugins").display().to_string()
}

/// berth with one legacy AuthZ plugin, `guard`, following `rules`; `extra` daemon flags.
pub fn guarded_daemon(
    prefix: &str,
    rules: &str,
    extra: &[&str],
) -> (tempfile::TempDir, AuthzPlugin, Daemon) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    let plugin = authz_plugin(dir.path(), "guard", rules, &[]);
    let plugins = plugin_dir(dir.path());
    let mut args = vec![
        "--legacy-plugin-dir",
        plugins.as_str(),
        "--authorization-plugin",
        "guard",
    ];
    args.extend_from_slice(extra);
    let d = Daemon::start_with(&args);
    (dir, plugin, d)
}

/// Runs `berth daemon` with `args` (roots and socket included) expecting it to refuse to
/// start; returns its stderr.
pub fn refused_start(args: &[std::ffi::OsString]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("daemon")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}
