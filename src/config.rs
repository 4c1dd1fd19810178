//! `berth daemon` configuration: flags, an optional daemon.json-style file, and defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

pub const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/berth";
pub const DEFAULT_EXEC_ROOT: &str = "/run/berth";
pub const DEFAULT_CONFIG_FILE: &str = "/etc/berth/daemon.json";

/// Flags of `berth daemon`. Every flag may instead be set in the config file under the same
/// name (`hosts` for `--host`); setting one in both places is an error, as with dockerd.
#[derive(Debug, Clone, Default, Args)]
pub struct DaemonFlags {
    /// Unix socket to serve the API on (repeatable), e.g. unix:///run/berth/berth.sock
    #[arg(short = 'H', long = "host", value_name = "unix://PATH")]
    pub hosts: Vec<String>,
    /// Root of persistent state (plugins, blobs)
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// Root of runtime state (plugin sockets)
    #[arg(long, value_name = "DIR")]
    pub exec_root: Option<PathBuf>,
    /// Log level: debug, info, warn, error, fatal
    #[arg(short = 'l', long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Seconds `plugin enable` waits for a plugin's socket to accept a connection [default: 30]
    #[arg(long, value_name = "SECONDS")]
    pub plugin_start_timeout: Option<f64>,
    /// Deadline in seconds of each call to a plugin that set no timeout of its own [default: 10]
    #[arg(long, value_name = "SECONDS")]
    pub plugin_call_timeout: Option<f64>,
    /// Directory searched for legacy plugins (.sock, .spec, .json); repeatable
    /// [default: /run/docker/plugins, /etc/docker/plugins, /usr/lib/docker/plugins]
    #[arg(long = "legacy-plugin-dir", value_name = "DIR")]
    pub legacy_plugin_dirs: Vec<PathBuf>,
    /// Registry reachable over plain HTTP or without certificate checks (`host[:port]` or CIDR;
    /// loopback always is); repeatable
    #[arg(long = "insecure-registry", value_name = "REGISTRY")]
    pub insecure_registries: Vec<String>,
    /// Mirror tried before Docker Hub for docker.io pulls; repeatable
    #[arg(long = "registry-mirror", value_name = "URL")]
    pub registry_mirrors: Vec<String>,
    /// Authorization plugin every API request must pass, in chain order; repeatable
    /// (daemon.json `authorization-plugins`, reloaded on SIGHUP)
    #[arg(long = "authorization-plugin", value_name = "NAME")]
    pub authorization_plugins: Vec<String>,
    /// Show authorization plugins who is on the other end of the unix socket: `User` = the
    /// peer's user name (or uid), `UserAuthNMethod` = `peercred` (dockerd leaves both empty)
    #[arg(long)]
    pub authz_peer_credentials: bool,
    /// LogDriver plugin (managed or legacy) that every managed plugin's output is also sent
    /// to, as a container's would be
    #[arg(long, value_name = "NAME")]
    pub plugin_log_driver: Option<String>,
    /// daemon.json-style configuration file (read when present)
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_FILE)]
    pub config_file: PathBuf,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Socket paths to listen on.
    pub sockets: Vec<PathBuf>,
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    pub log_level: log::LevelFilter,
    pub plugin_start_timeout: std::time::Duration,
    pub plugin_call_timeout: std::time::Duration,
    pub legacy_plugin_dirs: Vec<PathBuf>,
    pub insecure_registries: Vec<String>,
    pub registry_mirrors: Vec<String>,
    /// The authorization chain, in order (duplicates are dropped by the chain).
    pub authorization_plugins: Vec<String>,
    pub authz_peer_credentials: bool,
    /// `--plugin-log-driver`: where plugin output is shipped besides the daemon log.
    pub plugin_log_driver: Option<String>,
}

pub const DEFAULT_LEGACY_PLUGIN_DIRS: &[&str] = &[
    "/run/docker/plugins",
    "/etc/docker/plugins",
    "/usr/lib/docker/plugins",
];
const DEFAULT_PLUGIN_CALL_TIMEOUT: f64 = 10.0;

const FILE_KEYS: &[&str] = &[
    "hosts",
    "data-root",
    "exec-root",
    "log-level",
    "plugin-start-timeout",
    "plugin-call-timeout",
    "legacy-plugin-dirs",
    "insecure-registries",
    "registry-mirrors",
    "authorization-plugins",
    "authz-peer-credentials",
    "plugin-log-driver",
];
const DEFAULT_PLUGIN_START_TIMEOUT: f64 = 30.0;

impl DaemonFlags {
    pub fn resolve(&self) -> anyhow::Result<DaemonConfig> {
        let file = read_config_file(&self.config_file)?;
        resolve(self, &file).with_context(|| {
            format!(
                "unable to configure the berth daemon with file {}",
                self.config_file.display()
            )
        })
    }
}

fn read_config_file(path: &Path) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("invalid configuration file {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn resolve(
    flags: &DaemonFlags,
    file: &BTreeMap<String, serde_json::Value>,
) -> anyhow::Result<DaemonConfig> {
    let unknown: Vec<&str> = file
        .keys()
        .map(String::as_str)
        .filter(|k| !FILE_KEYS.contains(k))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "the following directives don't match any configuration option: {}",
            unknown.join(", ")
        );
    }
    let file_string = |key: &str| -> anyhow::Result<Option<String>> {
        match file.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => bail!("{key} must be a string, not {other}"),
        }
    };
    let file_hosts: Option<Vec<String>> = match file.get("hosts") {
        None => None,
        Some(v) => {
            Some(serde_json::from_value(v.clone()).context("hosts must be a list of strings")?)
        }
    };

    let mut conflicts = Vec::new();
    if let (false, Some(h)) = (flags.hosts.is_empty(), &file_hosts) {
        conflicts.push(format!(
            "hosts: (from flag: {:?}, from file: {:?})",
            flags.hosts, h
        ));
    }
    let data_root_file = file_string("data-root")?;
    let exec_root_file = file_string("exec-root")?;
    let log_level_file = file_string("log-level")?;
    let log_driver_file = file_string("plugin-log-driver")?;
    for (key, flag, from_file) in [
        (
            "data-root",
            flags.data_root.as_ref().map(|p| p.display().to_string()),
            &data_root_file,
        ),
        (
            "exec-root",
            flags.exec_root.as_ref().map(|p| p.display().to_string()),
            &exec_root_file,
        ),
        ("log-level", flags.log_level.clone(), &log_level_file),
        (
            "plugin-log-driver",
            flags.plugin_log_driver.clone(),
            &log_driver_file,
        ),
    ] {
        if let (Some(flag), Some(from_file)) = (flag, from_file) {
            conflicts.push(format!(
                "{key}: (from flag: {flag}, from file: {from_file})"
            ));
        }
    }
    let start_timeout_file = match file.get("plugin-start-timeout") {
        None => None,
        Some(v) => Some(
            v.as_f64()
                .context("plugin-start-timeout must be a number of seconds")?,
        ),
    };
    if let (Some(flag), Some(from_file)) = (flags.plugin_start_timeout, start_timeout_file) {
        conflicts.push(format!(
            "plugin-start-timeout: (from flag: {flag}, from file: {from_file})"
        ));
    }
    let call_timeout_file = match file.get("plugin-call-timeout") {
        None => None,
        Some(v) => Some(
            v.as_f64()
                .context("plugin-call-timeout must be a number of seconds")?,
        ),
    };
    if let (Some(flag), Some(from_file)) = (flags.plugin_call_timeout, call_timeout_file) {
        conflicts.push(format!(
            "plugin-call-timeout: (from flag: {flag}, from file: {from_file})"
        ));
    }
    let legacy_dirs_file: Option<Vec<PathBuf>> = match file.get("legacy-plugin-dirs") {
        None => None,
        Some(v) => Some(
            serde_json::from_value(v.clone())
                .context("legacy-plugin-dirs must be a list of paths")?,
        ),
    };
    if let (false, Some(d)) = (flags.legacy_plugin_dirs.is_empty(), &legacy_dirs_file) {
        conflicts.push(format!(
            "legacy-plugin-dirs: (from flag: {:?}, from file: {:?})",
            flags.legacy_plugin_dirs, d
        ));
    }
    if !conflicts.is_empty() {
        bail!(
            "the following directives are specified both as a flag and in the configuration file: {}",
            conflicts.join(", ")
        );
    }

    let hosts = if !flags.hosts.is_empty() {
        flags.hosts.clone()
    } else {
        file_hosts.unwrap_or_else(|| vec![DEFAULT_HOST.to_string()])
    };
    let sockets = hosts
        .iter()
        .map(|h| parse_host(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let data_root = flags
        .data_root
        .clone()
        .or(data_root_file.map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_ROOT));
    let exec_root = flags
        .exec_root
        .clone()
        .or(exec_root_file.map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_EXEC_ROOT));
    let level = flags
        .log_level
        .clone()
        .or(log_level_file)
        .unwrap_or_else(|| "info".into());
    let start_timeout = flags
        .plugin_start_timeout
        .or(start_timeout_file)
        .unwrap_or(DEFAULT_PLUGIN_START_TIMEOUT);
    if !(start_timeout.is_finite() && start_timeout > 0.0) {
        bail!("plugin-start-timeout must be a positive number of seconds, not {start_timeout}");
    }
    let call_timeout = flags
        .plugin_call_timeout
        .or(call_timeout_file)
        .unwrap_or(DEFAULT_PLUGIN_CALL_TIMEOUT);
    if !(call_timeout.is_finite() && call_timeout > 0.0) {
        bail!("plugin-call-timeout must be a positive number of seconds, not {call_timeout}");
    }
    let legacy_plugin_dirs = if !flags.legacy_plugin_dirs.is_empty() {
        flags.legacy_plugin_dirs.clone()
    } else {
        legacy_dirs_file.unwrap_or_else(|| {
            DEFAULT_LEGACY_PLUGIN_DIRS
                .iter()
                .map(PathBuf::from)
                .collect()
        })
    };
    let list = |flag: &Vec<String>, key: &str| -> anyhow::Result<Vec<String>> {
        match file.get(key) {
            Some(v) if flag.is_empty() => {
                serde_json::from_value(v.clone()).with_context(|| format!("{key} must be a list of strings"))
            }
            Some(_) => bail!(
                "the following directives are specified both as a flag and in the configuration file: {key}"
            ),
            None => Ok(flag.clone()),
        }
    };
    let insecure_registries = list(&flags.insecure_registries, "insecure-registries")?;
    let registry_mirrors = list(&flags.registry_mirrors, "registry-mirrors")?;
    let plugin_log_driver = flags
        .plugin_log_driver
        .clone()
        .or(log_driver_file)
        .filter(|n| !n.is_empty());
    let authorization_plugins = list(&flags.authorization_plugins, "authorization-plugins")?;
    let authz_peer_credentials = match file.get("authz-peer-credentials") {
        None => flags.authz_peer_credentials,
        Some(_) if flags.authz_peer_credentials => bail!(
            "the following directives are specified both as a flag and in the configuration file: authz-peer-credentials"
        ),
        Some(v) => v
            .as_bool()
            .context("authz-peer-credentials must be true or false")?,
    };
    Ok(DaemonConfig {
        plugin_log_driver,
        authorization_plugins,
        authz_peer_credentials,
        insecure_registries,
        registry_mirrors,
        plugin_start_timeout: std::time::Duration::from_secs_f64(start_timeout),
        plugin_call_timeout: std::time::Duration::from_secs_f64(call_timeout),
        legacy_plugin_dirs,
        sockets,
        data_root: absolute(data_root)?,
        exec_root: absolute(exec_root)?,
        log_level: parse_log_level(&level)?,
    })
}

fn absolute(path: PathBuf) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path)
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

/// Only unix sockets are served: the API grants root on this machine, and a TCP listener
/// without TLS client auth would hand that to the network.
pub fn parse_host(host: &str) -> anyhow::Result<PathBuf> {
    let path = host.strip_prefix("unix://").unwrap_or(host);
    if path.contains("://") || !path.starts_with('/') {
        bail!("invalid host {host:?}: berth serves only unix sockets (unix:///absolute/path)");
    }
    Ok(PathBuf::from(path))
}

pub fn parse_log_level(level: &str) -> anyhow::Result<log::LevelFilter> {
    Ok(match level {
        "debug" => log::LevelFilter::Debug,
        "info" => log::LevelFilter::Info,
        "warn" => log::LevelFilter::Warn,
        "error" | "fatal" => log::LevelFilter::Error,
        other => bail!("unable to parse logging level: {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> BTreeMap<String, serde_json::Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_apply_without_flags_or_file() {
        let cfg = resolve(&DaemonFlags::default(), &BTreeMap::new()).unwrap();
        assert_eq!(cfg.sockets, vec![PathBuf::from("/run/berth/berth.sock")]);
        assert_eq!(cfg.data_root, PathBuf::from(DEFAULT_DATA_ROOT));
        assert_eq!(cfg.exec_root, PathBuf::from(DEFAULT_EXEC_ROOT));
        assert_eq!(cfg.log_level, log::LevelFilter::Info);
        assert_eq!(cfg.plugin_start_timeout, std::time::Duration::from_secs(30));
    }

    #[test]
    fn plugin_start_timeout_comes_from_flag_or_file() {
        let flags = DaemonFlags {
            plugin_start_timeout: Some(2.5),
            ..Default::default()
        };
        let cfg = resolve(&flags, &BTreeMap::new()).unwrap();
        assert_eq!(
            cfg.plugin_start_timeout,
            std::time::Duration::from_millis(2500)
        );
        let cfg = resolve(
            &DaemonFlags::default(),
            &file(r#"{"plugin-start-timeout": 4}"#),
        )
        .unwrap();
        assert_eq!(cfg.plugin_start_timeout, std::time::Duration::from_secs(4));
        assert!(resolve(
            &DaemonFlags {
                plugin_start_timeout: Some(0.0),
                ..Default::default()
            },
            &BTreeMap::new()
        )
        .is_err());
    }

    #[test]
    fn file_values_apply_and_flags_may_not_repeat_them() {
        let f = file(
            r#"{"data-root":"/srv/b","hosts":["unix:///tmp/a.sock","unix:///tmp/b.sock"],"log-level":"debug"}"#,
        );
        let cfg = resolve(&DaemonFlags::default(), &f).unwrap();
        assert_eq!(cfg.data_root, PathBuf::from("/srv/b"));
        assert_eq!(cfg.sockets.len(), 2);
        assert_eq!(cfg.log_level, log::LevelFilter::Debug);

        let flags = DaemonFlags {
            data_root: Some("/x".into()),
            ..Default::default()
        };
        let err = resolve(&flags, &f).unwrap_err().to_string();
        assert!(err.contains("specified both as a flag and in the configuration file: data-root: (from flag: /x, from file: /srv/b)"), "{err}");
    }

    #[test]
    fn unknown_file_keys_and_non_unix_hosts_are_refused() {
        let err = resolve(&DaemonFlags::default(), &file(r#"{"storage-driver":"x"}"#)).unwrap_err();
        assert!(err
            .to_string()
            .contains("don't match any configuration option: storage-driver"));
        assert!(parse_host("tcp://0.0.0.0:2375").is_err());
        assert!(parse_host("unix://relative.sock").is_err());
        assert_eq!(
            parse_host("unix:///run/b.sock").unwrap(),
            PathBuf::from("/run/b.sock")
        );
    }

    #[test]
    fn authorization_plugins_come_from_flags_or_file_not_both() {
        let flags = DaemonFlags {
            authorization_plugins: vec!["policy".into(), "audit".into()],
            ..Default::default()
        };
        let cfg = resolve(&flags, &BTreeMap::new()).unwrap();
        assert_eq!(cfg.authorization_plugins, vec!["policy", "audit"]);
        assert!(!cfg.authz_peer_credentials);
        let cfg = resolve(
            &DaemonFlags::default(),
            &file(r#"{"authorization-plugins":["a"],"authz-peer-credentials":true}"#),
        )
        .unwrap();
        assert_eq!(cfg.authorization_plugins, vec!["a"]);
        assert!(cfg.authz_peer_credentials);
        let err = resolve(&flags, &file(r#"{"authorization-plugins":["a"]}"#)).unwrap_err();
        assert!(
            err.to_string().contains(
                "specified both as a flag and in the configuration file: authorization-plugins"
            ),
            "{err}"
        );
    }

    #[test]
    fn every_key_the_file_may_hold_is_accepted() {
        let f = file(
            r#"{"plugin-call-timeout":2,"legacy-plugin-dirs":["/p"],"insecure-registries":["r:5000"],"registry-mirrors":["https://m"]}"#,
        );
        let cfg = resolve(&DaemonFlags::default(), &f).unwrap();
        assert_eq!(cfg.plugin_call_timeout, std::time::Duration::from_secs(2));
        assert_eq!(cfg.legacy_plugin_dirs, vec![PathBuf::from("/p")]);
        assert_eq!(cfg.insecure_registries, vec!["r:5000"]);
        assert_eq!(cfg.registry_mirrors, vec!["https://m"]);
    }

    #[test]
    fn log_levels_follow_dockerd_names() {
        assert_eq!(parse_log_level("fatal").unwrap(), log::LevelFilter::Error);
        assert!(parse_log_level("loud").is_err());
    }
}
