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
    /// Seconds a request body may send nothing before the request is dropped (408) [default: 30]
    #[arg(long, value_name = "SECONDS")]
    pub body_idle_timeout: Option<f64>,
    /// Uploads (plugin create contexts) received at once; more are refused with 503
    /// [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_concurrent_uploads: Option<usize>,
    /// Bytes a plugin create context or a pulled layer may unpack to at least; an archive may
    /// unpack to 10 times what was read of it beyond that; 0: no limit [default: 1073741824]
    #[arg(long, value_name = "BYTES")]
    pub max_unpacked_size: Option<u64>,
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
    /// Default address pool of the built-in IPAM, cut into subnets for networks created
    /// without one (base=<cidr>,size=<prefix length>); repeatable [default: dockerd's,
    /// 172.17.0.0/16 to 172.31.0.0/16, then 192.168.0.0/16 as /20s]
    #[arg(long = "default-address-pool", value_name = "base=CIDR,size=N")]
    pub default_address_pools: Vec<String>,
    /// Linux bridge of the predefined `bridge` network: an existing bridge (its IPv4 address
    /// gives the network's subnet), or `none` for no such network [default: none]
    #[arg(short = 'b', long = "bridge", value_name = "NAME")]
    pub bridge: Option<String>,
    /// Make the predefined `bridge` network on bridge docker0 with this gateway address and
    /// subnet (e.g. 10.99.0.1/24); not with --bridge
    #[arg(long = "bip", value_name = "CIDR")]
    pub bip: Option<String>,
    /// What runs plugins: builtin (berth's own namespaces executor), runc or crun (found on
    /// PATH) [default: builtin]
    #[arg(long, value_name = "NAME")]
    pub plugin_runtime: Option<String>,
    /// Authorization plugin every API request must pass, in chain order; repeatable
    /// (daemon.json `authorization-plugins`, reloaded on SIGHUP)
    #[arg(long = "authorization-plugin", value_name = "NAME")]
    pub authorization_plugins: Vec<String>,
    /// Show authorization plugins who is on the other end of the unix socket: `User` = the
    /// peer's user name (or uid), `UserAuthNMethod` = `peercred` (dockerd leaves both empty)
    #[arg(long)]
    pub authz_peer_credentials: bool,
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
    pub body_idle_timeout: std::time::Duration,
    pub max_concurrent_uploads: usize,
    /// The floor of the unpack limit in bytes (0: none).
    pub max_unpacked_size: u64,
    pub legacy_plugin_dirs: Vec<PathBuf>,
    pub insecure_registries: Vec<String>,
    pub registry_mirrors: Vec<String>,
    /// Empty: the built-in IPAM's defaults (dockerd's).
    pub default_address_pools: Vec<crate::cidr::AddressPool>,
    /// The predefined `bridge` network's setup (`--bridge` / `--bip`); none by default, so
    /// berth and dockerd can share a host.
    pub default_bridge: Option<DefaultBridge>,
    pub plugin_runtime: crate::runtime::PluginRuntime,
    /// The authorization chain, in order (duplicates are dropped by the chain).
    pub authorization_plugins: Vec<String>,
    pub authz_peer_credentials: bool,
}

/// The Linux bridge dockerd's default network uses when only `--bip` names it.
pub const DEFAULT_BRIDGE_NAME: &str = "docker0";

/// How the predefined `bridge` network is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultBridge {
    /// The Linux bridge: docker0 (made when missing), or one that must exist.
    pub name: String,
    /// `--bip`: the gateway address with the subnet's length. None: the bridge's own IPv4
    /// address, else a default pool.
    pub address: Option<crate::cidr::Prefix>,
}

pub const DEFAULT_LEGACY_PLUGIN_DIRS: &[&str] = &[
    "/run/docker/plugins",
    "/etc/docker/plugins",
    "/usr/lib/docker/plugins",
];
const DEFAULT_PLUGIN_CALL_TIMEOUT: f64 = 10.0;
/// Long enough for a client on a slow link, short enough that stalled uploads do not pile up.
const DEFAULT_BODY_IDLE_TIMEOUT: f64 = 30.0;
/// Far above what a daemon sees in use; each costs a connection, a spool file and an async task.
const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 1024;

const FILE_KEYS: &[&str] = &[
    "hosts",
    "data-root",
    "exec-root",
    "log-level",
    "plugin-start-timeout",
    "plugin-call-timeout",
    "body-idle-timeout",
    "max-concurrent-uploads",
    "max-unpacked-size",
    "legacy-plugin-dirs",
    "insecure-registries",
    "registry-mirrors",
    "authorization-plugins",
    "authz-peer-credentials",
    "default-address-pools",
    "plugin-runtime",
    "bridge",
    "bip",
];
const DEFAULT_PLUGIN_START_TIMEOUT: f64 = 30.0;
const DEFAULT_MAX_UNPACKED_SIZE: u64 = crate::distribution::extract::UnpackLimit::DEFAULT_FLOOR;

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
    let plugin_runtime_file = file_string("plugin-runtime")?;
    let exec_root_file = file_string("exec-root")?;
    let log_level_file = file_string("log-level")?;
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
            "plugin-runtime",
            flags.plugin_runtime.clone(),
            &plugin_runtime_file,
        ),
    ] {
        if let (Some(flag), Some(from_file)) = (flag, from_file) {
            conflicts.push(format!(
                "{key}: (from flag: {flag}, from file: {from_file})"
            ));
        }
    }
    let mut number = |key: &str, flag: Option<f64>, unit: &str| -> anyhow::Result<Option<f64>> {
        let from_file = match file.get(key) {
            None => None,
            Some(v) => Some(
                v.as_f64()
                    .with_context(|| format!("{key} must be a number of {unit}"))?,
            ),
        };
        if let (Some(flag), Some(from_file)) = (flag, from_file) {
            conflicts.push(format!(
                "{key}: (from flag: {flag}, from file: {from_file})"
            ));
        }
        Ok(from_file)
    };
    let start_timeout_file = number(
        "plugin-start-timeout",
        flags.plugin_start_timeout,
        "seconds",
    )?;
    let call_timeout_file = number("plugin-call-timeout", flags.plugin_call_timeout, "seconds")?;
    let max_unpacked_file = match file.get("max-unpacked-size") {
        Some(v) if v.as_u64().is_none() => bail!("max-unpacked-size must be a number of bytes"),
        v => v.and_then(serde_json::Value::as_u64),
    };
    number(
        "max-unpacked-size",
        flags.max_unpacked_size.map(|n| n as f64),
        "bytes",
    )?;
    let body_idle_timeout = setting(
        file,
        "body-idle-timeout",
        flags.body_idle_timeout,
        &mut conflicts,
        "a number of seconds",
        serde_json::Value::as_f64,
    )?
    .unwrap_or(DEFAULT_BODY_IDLE_TIMEOUT);
    let max_concurrent_uploads = setting(
        file,
        "max-concurrent-uploads",
        flags.max_concurrent_uploads,
        &mut conflicts,
        "a whole number",
        |v| v.as_u64().and_then(|n| usize::try_from(n).ok()),
    )?
    .unwrap_or(DEFAULT_MAX_CONCURRENT_UPLOADS);
    let as_string = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let bridge = setting(
        file,
        "bridge",
        flags.bridge.clone(),
        &mut conflicts,
        "a string",
        as_string,
    )?;
    let bip = setting(
        file,
        "bip",
        flags.bip.clone(),
        &mut conflicts,
        "a string",
        as_string,
    )?;
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
    if !(body_idle_timeout.is_finite() && body_idle_timeout > 0.0) {
        bail!("body-idle-timeout must be a positive number of seconds, not {body_idle_timeout}");
    }
    if max_concurrent_uploads == 0 {
        bail!("max-concurrent-uploads must be at least 1");
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
    let default_address_pools = match file.get("default-address-pools") {
        Some(_) if !flags.default_address_pools.is_empty() => bail!(
            "the following directives are specified both as a flag and in the configuration file: default-address-pools"
        ),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(crate::cidr::address_pool_from_json)
            .collect::<Result<Vec<_>, String>>()
            .map_err(anyhow::Error::msg)?,
        Some(_) => bail!("default-address-pools must be a list of {{\"base\": CIDR, \"size\": N}}"),
        None => flags
            .default_address_pools
            .iter()
            .map(|p| {
                crate::cidr::parse_address_pool(p)
                    .map_err(|e| anyhow::anyhow!("invalid --default-address-pool {p:?}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    let default_bridge = default_bridge(bridge, bip)?;
    let plugin_runtime = match flags.plugin_runtime.clone().or(plugin_runtime_file) {
        Some(name) => name.parse()?,
        None => crate::runtime::PluginRuntime::default(),
    };
    let insecure_registries = list(&flags.insecure_registries, "insecure-registries")?;
    let registry_mirrors = list(&flags.registry_mirrors, "registry-mirrors")?;
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
        default_address_pools,
        default_bridge,
        plugin_runtime,
        authorization_plugins,
        authz_peer_credentials,
        insecure_registries,
        registry_mirrors,
        plugin_start_timeout: std::time::Duration::from_secs_f64(start_timeout),
        plugin_call_timeout: std::time::Duration::from_secs_f64(call_timeout),
        body_idle_timeout: std::time::Duration::from_secs_f64(body_idle_timeout),
        max_concurrent_uploads,
        max_unpacked_size: flags
            .max_unpacked_size
            .or(max_unpacked_file)
            .unwrap_or(DEFAULT_MAX_UNPACKED_SIZE),
        legacy_plugin_dirs,
        sockets,
        data_root: absolute(data_root)?,
        exec_root: absolute(exec_root)?,
        log_level: parse_log_level(&level)?,
    })
}

/// dockerd's reading of `--bridge` and `--bip` (in its words), except that no flag means no
/// predefined `bridge` network rather than docker0.
fn default_bridge(
    bridge: Option<String>,
    bip: Option<String>,
) -> anyhow::Result<Option<DefaultBridge>> {
    let bridge = bridge.filter(|b| !b.is_empty());
    let bip = bip.filter(|b| !b.is_empty());
    match (bridge, bip) {
        (Some(_), Some(_)) => {
            bail!("You specified -b & --bip, mutually exclusive options. Please specify only one")
        }
        (Some(name), None) if name == "none" => Ok(None),
        (Some(name), None) => Ok(Some(DefaultBridge {
            name,
            address: None,
        })),
        (None, Some(bip)) => {
            let address = crate::cidr::Prefix::parse(&bip)
                .with_context(|| format!("invalid CIDR address: {bip}"))?;
            Ok(Some(DefaultBridge {
                name: DEFAULT_BRIDGE_NAME.into(),
                address: Some(address),
            }))
        }
        (None, None) => Ok(None),
    }
}

/// A setting given by flag or file (a conflict when both), the file's value read by `parse`.
fn setting<T: std::fmt::Display>(
    file: &BTreeMap<String, serde_json::Value>,
    key: &str,
    flag: Option<T>,
    conflicts: &mut Vec<String>,
    expected: &str,
    parse: impl Fn(&serde_json::Value) -> Option<T>,
) -> anyhow::Result<Option<T>> {
    let Some(value) = file.get(key) else {
        return Ok(flag);
    };
    let from_file = parse(value).with_context(|| format!("{key} must be {expected}"))?;
    if let Some(flag) = flag {
        conflicts.push(format!(
            "{key}: (from flag: {flag}, from file: {from_file})"
        ));
    }
    Ok(Some(from_file))
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
    fn body_limits_come_from_flag_or_file_but_not_both() {
        let cfg = resolve(&DaemonFlags::default(), &BTreeMap::new()).unwrap();
        assert_eq!(cfg.body_idle_timeout, std::time::Duration::from_secs(30));
        assert_eq!(cfg.max_concurrent_uploads, 1024);
        let cfg = resolve(
            &DaemonFlags::default(),
            &file(r#"{"body-idle-timeout": 1.5, "max-concurrent-uploads": 8}"#),
        )
        .unwrap();
        assert_eq!(
            cfg.body_idle_timeout,
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(cfg.max_concurrent_uploads, 8);
        let flags = DaemonFlags {
            max_concurrent_uploads: Some(2),
            ..Default::default()
        };
        let err = resolve(&flags, &file(r#"{"max-concurrent-uploads": 8}"#))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max-concurrent-uploads: (from flag: 2, from file: 8)"),
            "{err}"
        );
        for bad in [
            r#"{"max-concurrent-uploads": 0}"#,
            r#"{"max-concurrent-uploads": -1}"#,
            r#"{"body-idle-timeout": 0}"#,
            r#"{"body-idle-timeout": "30s"}"#,
        ] {
            assert!(
                resolve(&DaemonFlags::default(), &file(bad)).is_err(),
                "{bad}"
            );
        }
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
    fn bridge_and_bip_as_dockerd_reads_them() {
        let with = |bridge: Option<&str>, bip: Option<&str>, f: &str| {
            let flags = DaemonFlags {
                bridge: bridge.map(str::to_string),
                bip: bip.map(str::to_string),
                ..Default::default()
            };
            resolve(&flags, &file(f)).map(|c| c.default_bridge)
        };
        assert_eq!(with(None, None, "{}").unwrap(), None);
        assert_eq!(with(Some("none"), None, "{}").unwrap(), None);
        assert_eq!(
            with(None, Some("10.99.0.1/24"), "{}").unwrap(),
            Some(DefaultBridge {
                name: "docker0".into(),
                address: crate::cidr::Prefix::parse("10.99.0.1/24"),
            })
        );
        assert_eq!(
            with(None, None, r#"{"bridge":"brt0"}"#).unwrap(),
            Some(DefaultBridge {
                name: "brt0".into(),
                address: None,
            })
        );
        let err = |b, i, f| format!("{:#}", with(b, i, f).unwrap_err());
        assert!(
            err(Some("brt0"), None, r#"{"bip":"10.99.0.1/24"}"#).ends_with(
                "You specified -b & --bip, mutually exclusive options. Please specify only one"
            )
        );
        assert!(err(Some("none"), Some("10.99.0.1/24"), "{}").contains("mutually exclusive"));
        assert!(err(None, Some("10.99.0.300/24"), "{}")
            .ends_with("invalid CIDR address: 10.99.0.300/24"));
        assert!(err(None, Some("10.99.0.1/24"), r#"{"bip":"10.98.0.1/24"}"#)
            .contains("bip: (from flag: 10.99.0.1/24, from file: 10.98.0.1/24)"));
    }

    #[test]
    fn default_address_pools_come_from_flag_or_file() {
        let flags = DaemonFlags {
            default_address_pools: vec!["base=10.10.0.0/16,size=24".into()],
            ..Default::default()
        };
        let cfg = resolve(&flags, &BTreeMap::new()).unwrap();
        assert_eq!(cfg.default_address_pools[0].size, 24);
        let cfg = resolve(
            &DaemonFlags::default(),
            &file(r#"{"default-address-pools":[{"base":"172.80.0.0/16","size":24}]}"#),
        )
        .unwrap();
        assert_eq!(
            cfg.default_address_pools[0].base.to_string(),
            "172.80.0.0/16"
        );
        assert!(resolve(
            &DaemonFlags {
                default_address_pools: vec!["base=10.10.0.0/16".into()],
                ..Default::default()
            },
            &BTreeMap::new()
        )
        .is_err());
    }

    #[test]
    fn plugin_runtime_comes_from_flag_or_file_and_must_be_known() {
        use crate::runtime::{oci::OciRuntime, PluginRuntime};
        let cfg = resolve(&DaemonFlags::default(), &BTreeMap::new()).unwrap();
        assert_eq!(cfg.plugin_runtime, PluginRuntime::Builtin);
        let cfg = resolve(
            &DaemonFlags::default(),
            &file(r#"{"plugin-runtime":"crun"}"#),
        )
        .unwrap();
        assert_eq!(cfg.plugin_runtime, PluginRuntime::Oci(OciRuntime::Crun));
        let flags = DaemonFlags {
            plugin_runtime: Some("runsc".into()),
            ..Default::default()
        };
        let err = resolve(&flags, &BTreeMap::new()).unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown plugin runtime \"runsc\": expected builtin, runc or crun"
        );
        let flags = DaemonFlags {
            plugin_runtime: Some("runc".into()),
            ..Default::default()
        };
        assert!(resolve(&flags, &file(r#"{"plugin-runtime":"crun"}"#)).is_err());
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
