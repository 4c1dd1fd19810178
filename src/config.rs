//! `berth daemon` configuration: flags, an optional daemon.json-style file, and defaults.
//!
//! Every value is checked where it comes from: a bad flag is refused by the flag parser, naming
//! the flag; a bad file value names the file and its key. Setting one thing both as a flag and
//! in the file is an error, as with dockerd.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::de::DeserializeOwned;

use crate::cidr::AddressPool;
use crate::runtime::{PluginRuntime, UnknownRuntime};

pub const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/berth";
pub const DEFAULT_EXEC_ROOT: &str = "/run/berth";
pub const DEFAULT_CONFIG_FILE: &str = "/etc/berth/daemon.json";
pub const DEFAULT_LOG_LEVEL: &str = "info";
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
const DEFAULT_PLUGIN_START_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_PLUGIN_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Long enough for a client on a slow link, short enough that stalled uploads do not pile up.
const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Far above what a daemon sees in use; each costs a connection, a spool file and an async task.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 1024;
pub const DEFAULT_MAX_UNPACKED_SIZE: u64 = crate::distribution::extract::UnpackLimit::DEFAULT_FLOOR;

/// Flags of `berth daemon`. Each may instead be set in the config file under the key named in
/// its help (`hosts` for `--host`). Defaults are written into the help texts; a unit test keeps
/// them equal to the constants above.
#[derive(Debug, Clone, Default, Args)]
pub struct DaemonFlags {
    /// Socket to serve the API on (repeatable): unix:///PATH, or fd:// for every socket systemd
    /// passed, fd://NAME for the one named NAME (FileDescriptorName=) [default:
    /// unix:///run/berth/berth.sock] [file: hosts]
    #[arg(short = 'H', long = "host", value_name = "ADDR", value_parser = parse_host)]
    pub hosts: Vec<Host>,
    /// Root of persistent state: plugins, blobs, volumes [default: /var/lib/berth]
    /// [file: data-root]
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// Root of runtime state: plugin sockets, metrics.sock, volume-plugins/ [default:
    /// /run/berth] [file: exec-root]
    #[arg(long, value_name = "DIR")]
    pub exec_root: Option<PathBuf>,
    /// Log level: debug, info, warn, error, fatal [default: info] [file: log-level]
    #[arg(short = 'l', long, value_name = "LEVEL", value_parser = parse_log_level)]
    pub log_level: Option<log::LevelFilter>,
    /// Seconds `plugin enable` waits for a plugin's socket to accept a connection [default:
    /// 30] [file: plugin-start-timeout]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub plugin_start_timeout: Option<Duration>,
    /// Deadline in seconds of each call to a plugin that set no timeout of its own [default:
    /// 10] [file: plugin-call-timeout]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub plugin_call_timeout: Option<Duration>,
    /// Seconds a request body may send nothing before the request is dropped (408) [default:
    /// 30] [file: body-idle-timeout]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub body_idle_timeout: Option<Duration>,
    /// Uploads (plugin create contexts) received at once; more are refused with 503 [default:
    /// 1024] [file: max-concurrent-uploads]
    #[arg(long, value_name = "N", value_parser = parse_upload_bound)]
    pub max_concurrent_uploads: Option<usize>,
    /// Bytes a plugin create context or a pulled layer may unpack to at least; an archive may
    /// unpack to 10 times what was read of it beyond that; 0: no limit [default: 1073741824]
    /// [file: max-unpacked-size]
    #[arg(long, value_name = "BYTES")]
    pub max_unpacked_size: Option<u64>,
    /// Directory searched for legacy plugins (.sock, .spec, .json); repeatable [default:
    /// /run/docker/plugins, /etc/docker/plugins, /usr/lib/docker/plugins] [file:
    /// legacy-plugin-dirs]
    #[arg(long = "legacy-plugin-dir", value_name = "DIR")]
    pub legacy_plugin_dirs: Vec<PathBuf>,
    /// Registry reachable over plain HTTP or without certificate checks (`host[:port]` or CIDR);
    /// repeatable [default: loopback registries only] [file: insecure-registries]
    #[arg(long = "insecure-registry", value_name = "REGISTRY")]
    pub insecure_registries: Vec<String>,
    /// Mirror tried before Docker Hub for docker.io pulls; repeatable [default: none] [file:
    /// registry-mirrors]
    #[arg(long = "registry-mirror", value_name = "URL")]
    pub registry_mirrors: Vec<String>,
    /// Default address pool of the built-in IPAM, cut into subnets for networks created
    /// without one; repeatable [default: dockerd's, 172.17.0.0/16 to 172.31.0.0/16, then
    /// 192.168.0.0/16 as /20s] [file: default-address-pools, as {"base": CIDR, "size": N}]
    #[arg(
        long = "default-address-pool",
        value_name = "base=CIDR,size=N",
        value_parser = crate::cidr::parse_address_pool
    )]
    pub default_address_pools: Vec<AddressPool>,
    /// Linux bridge of the predefined `bridge` network: an existing bridge (its IPv4 address
    /// gives the network's subnet), or `none` for no such network [default: none] [file:
    /// bridge]
    #[arg(short = 'b', long = "bridge", value_name = "NAME")]
    pub bridge: Option<String>,
    /// Make the predefined `bridge` network on bridge docker0 with this gateway address and
    /// subnet (e.g. 10.99.0.1/24); not with --bridge [default: none] [file: bip]
    #[arg(long = "bip", value_name = "CIDR")]
    pub bip: Option<String>,
    /// What runs plugins: builtin (berth's own namespaces executor), runc or crun (found on
    /// PATH) [default: builtin] [file: plugin-runtime]
    #[arg(long, value_name = "NAME", value_parser = parse_plugin_runtime)]
    pub plugin_runtime: Option<PluginRuntime>,
    /// Serve Prometheus metrics at unix:///PATH or HOST:PORT (PORT alone: 127.0.0.1); also
    /// turns on <exec-root>/metrics.sock for MetricsCollector plugins [default: off] [file:
    /// metrics-addr]
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics_addr: Option<MetricsAddr>,
    /// Authorization plugin every API request must pass, in chain order; repeatable, reloaded
    /// on SIGHUP [default: none] [file: authorization-plugins]
    #[arg(long = "authorization-plugin", value_name = "NAME")]
    pub authorization_plugins: Vec<String>,
    /// Show authorization plugins who is on the other end of the unix socket: `User` = the
    /// peer's user name (or uid), `UserAuthNMethod` = `peercred` (dockerd leaves both empty)
    /// [file: authz-peer-credentials]
    #[arg(long)]
    pub authz_peer_credentials: bool,
    /// LogDriver plugin (managed or legacy) that every managed plugin's output is also sent
    /// to, as a container's would be [default: none] [file: plugin-log-driver]
    #[arg(long, value_name = "NAME")]
    pub plugin_log_driver: Option<String>,
    /// daemon.json-style configuration file, read when present [default:
    /// /etc/berth/daemon.json]
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
}

/// Where the API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A socket berth creates (and removes when it stops).
    Unix(PathBuf),
    /// Sockets systemd passed (`LISTEN_FDS`): all of them (`fd://`), or the one whose
    /// `FileDescriptorName=` is the given name (`fd://NAME`).
    Systemd(Option<String>),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Unix(path) => write!(f, "unix://{}", path.display()),
            Host::Systemd(None) => f.write_str("fd://"),
            Host::Systemd(Some(name)) => write!(f, "fd://{name}"),
        }
    }
}

/// Where metrics are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAddr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsAddr::Unix(path) => write!(f, "unix://{}", path.display()),
            MetricsAddr::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    pub hosts: Vec<Host>,
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    pub log_level: log::LevelFilter,
    pub plugin_start_timeout: Duration,
    pub plugin_call_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub max_concurrent_uploads: usize,
    /// The floor of the unpack limit in bytes (0: none).
    pub max_unpacked_size: u64,
    pub legacy_plugin_dirs: Vec<PathBuf>,
    pub insecure_registries: Vec<String>,
    pub registry_mirrors: Vec<String>,
    /// Empty: the built-in IPAM's defaults (dockerd's).
    pub default_address_pools: Vec<AddressPool>,
    /// The predefined `bridge` network's setup (`--bridge` / `--bip`); none by default, so
    /// berth and dockerd can share a host.
    pub default_bridge: Option<DefaultBridge>,
    pub plugin_runtime: PluginRuntime,
    /// None: metrics are off (nothing is counted, no metrics socket exists).
    pub metrics_addr: Option<MetricsAddr>,
    /// The authorization chain, in order (duplicates are dropped by the chain).
    pub authorization_plugins: Vec<String>,
    pub authz_peer_credentials: bool,
    /// `--plugin-log-driver`: where plugin output is shipped besides the daemon log.
    pub plugin_log_driver: Option<String>,
}

impl DaemonConfig {
    /// The socket MetricsCollector plugins scrape (moby's `<exec-root>/metrics.sock`).
    pub fn metrics_socket(&self) -> PathBuf {
        self.exec_root.join("metrics.sock")
    }
}

/// What the config file may hold: every flag under its file key.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct FileConfig {
    hosts: Option<serde_json::Value>,
    data_root: Option<serde_json::Value>,
    exec_root: Option<serde_json::Value>,
    log_level: Option<serde_json::Value>,
    plugin_start_timeout: Option<serde_json::Value>,
    plugin_call_timeout: Option<serde_json::Value>,
    body_idle_timeout: Option<serde_json::Value>,
    max_concurrent_uploads: Option<serde_json::Value>,
    max_unpacked_size: Option<serde_json::Value>,
    legacy_plugin_dirs: Option<serde_json::Value>,
    insecure_registries: Option<serde_json::Value>,
    registry_mirrors: Option<serde_json::Value>,
    default_address_pools: Option<serde_json::Value>,
    bridge: Option<serde_json::Value>,
    bip: Option<serde_json::Value>,
    plugin_runtime: Option<serde_json::Value>,
    metrics_addr: Option<serde_json::Value>,
    plugin_log_driver: Option<serde_json::Value>,
    authorization_plugins: Option<serde_json::Value>,
    authz_peer_credentials: Option<serde_json::Value>,
    /// Keys that match no option, refused as dockerd refuses them.
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_json::Value>,
}

impl DaemonFlags {
    /// Flags, then the file, then the defaults. Errors about the file name the file.
    pub fn resolve(&self) -> anyhow::Result<DaemonConfig> {
        let path = self.config_file();
        let context = || {
            format!(
                "unable to configure the berth daemon with file {}",
                path.display()
            )
        };
        let file = read_config_file(path).with_context(context)?;
        resolve(self, file).with_context(context)
    }

    /// The configuration file: `--config-file`, else the default.
    pub fn config_file(&self) -> &Path {
        self.config_file
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_CONFIG_FILE))
    }
}

/// The file's settings; a missing file is none.
fn read_config_file(path: &Path) -> anyhow::Result<FileConfig> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(e.into()),
    }
}

/// One setting's value from the flag or the file; both set is recorded as a conflict.
struct Merge {
    conflicts: Vec<String>,
}

impl Merge {
    /// `parse` turns the file's value (read as `R`) into the setting; its errors name `key`.
    fn pick<T: Shown, R: DeserializeOwned>(
        &mut self,
        key: &str,
        flag: Option<T>,
        file: Option<serde_json::Value>,
        parse: impl FnOnce(R) -> anyhow::Result<T>,
    ) -> anyhow::Result<Option<T>> {
        let from_file = match file {
            None => None,
            Some(raw) => {
                let value: R = serde_json::from_value(raw.clone())
                    .with_context(|| format!("{key}: unexpected value {raw}"))?;
                Some(parse(value).with_context(|| key.to_string())?)
            }
        };
        match (flag, from_file) {
            (Some(flag), Some(file)) => {
                self.conflicts.push(format!(
                    "{key}: (from flag: {}, from file: {})",
                    flag.shown(),
                    file.shown()
                ));
                Ok(None)
            }
            (flag, file) => Ok(flag.or(file)),
        }
    }

    /// A repeatable flag: empty means unset.
    fn pick_list<T: Shown + Clone, R: DeserializeOwned>(
        &mut self,
        key: &str,
        flag: &[T],
        file: Option<serde_json::Value>,
        parse: impl Fn(R) -> anyhow::Result<T>,
    ) -> anyhow::Result<Option<Vec<T>>> {
        let flag = (!flag.is_empty()).then(|| flag.to_vec());
        self.pick(key, flag, file, |values: Vec<R>| {
            values.into_iter().map(&parse).collect()
        })
    }
}

/// A setting's value as a conflict message shows it (dockerd prints Go's `%v`: `/x`, `[a b]`).
trait Shown {
    fn shown(&self) -> String;
}

impl Shown for PathBuf {
    fn shown(&self) -> String {
        self.display().to_string()
    }
}

impl Shown for log::LevelFilter {
    fn shown(&self) -> String {
        self.as_str().to_ascii_lowercase()
    }
}

impl Shown for Duration {
    fn shown(&self) -> String {
        self.as_secs_f64().to_string()
    }
}

macro_rules! shown_by_display {
    ($($t:ty),*) => {$(
        impl Shown for $t {
            fn shown(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
shown_by_display!(String, bool, usize, u64, Host, MetricsAddr);

impl Shown for AddressPool {
    fn shown(&self) -> String {
        format!("base={},size={}", self.base, self.size)
    }
}

impl Shown for PluginRuntime {
    fn shown(&self) -> String {
        self.name().to_string()
    }
}

impl<T: Shown> Shown for Vec<T> {
    fn shown(&self) -> String {
        let items: Vec<String> = self.iter().map(Shown::shown).collect();
        format!("[{}]", items.join(" "))
    }
}

fn resolve(flags: &DaemonFlags, file: FileConfig) -> anyhow::Result<DaemonConfig> {
    if !file.unknown.is_empty() {
        let keys: Vec<&str> = file.unknown.keys().map(String::as_str).collect();
        bail!(
            "the following directives don't match any configuration option: {}",
            keys.join(", ")
        );
    }
    let mut merge = Merge {
        conflicts: Vec::new(),
    };
    let text = |s: String| Ok(s);
    let hosts = merge.pick_list("hosts", &flags.hosts, file.hosts, |h: String| {
        parse_host(&h).map_err(anyhow::Error::msg)
    })?;
    let path = |p: String| Ok(PathBuf::from(p));
    let data_root = merge.pick("data-root", flags.data_root.clone(), file.data_root, path)?;
    let exec_root = merge.pick("exec-root", flags.exec_root.clone(), file.exec_root, path)?;
    let log_level = merge.pick("log-level", flags.log_level, file.log_level, |l: String| {
        parse_log_level(&l).map_err(anyhow::Error::msg)
    })?;
    let seconds = |s: f64| parse_seconds(&s.to_string()).map_err(anyhow::Error::msg);
    let start_timeout = merge.pick(
        "plugin-start-timeout",
        flags.plugin_start_timeout,
        file.plugin_start_timeout,
        seconds,
    )?;
    let call_timeout = merge.pick(
        "plugin-call-timeout",
        flags.plugin_call_timeout,
        file.plugin_call_timeout,
        seconds,
    )?;
    let body_idle_timeout = merge.pick(
        "body-idle-timeout",
        flags.body_idle_timeout,
        file.body_idle_timeout,
        seconds,
    )?;
    let max_concurrent_uploads = merge.pick(
        "max-concurrent-uploads",
        flags.max_concurrent_uploads,
        file.max_concurrent_uploads,
        |n: usize| parse_upload_bound(&n.to_string()).map_err(anyhow::Error::msg),
    )?;
    let max_unpacked_size = merge.pick(
        "max-unpacked-size",
        flags.max_unpacked_size,
        file.max_unpacked_size,
        |bytes: u64| Ok(bytes),
    )?;
    let legacy_plugin_dirs = merge.pick_list(
        "legacy-plugin-dirs",
        &flags.legacy_plugin_dirs,
        file.legacy_plugin_dirs,
        path,
    )?;
    let insecure_registries = merge.pick_list(
        "insecure-registries",
        &flags.insecure_registries,
        file.insecure_registries,
        text,
    )?;
    let registry_mirrors = merge.pick_list(
        "registry-mirrors",
        &flags.registry_mirrors,
        file.registry_mirrors,
        text,
    )?;
    let default_address_pools = merge.pick_list(
        "default-address-pools",
        &flags.default_address_pools,
        file.default_address_pools,
        |pool: serde_json::Value| {
            crate::cidr::address_pool_from_json(&pool).map_err(anyhow::Error::msg)
        },
    )?;
    let bridge = merge.pick("bridge", flags.bridge.clone(), file.bridge, text)?;
    let bip = merge.pick("bip", flags.bip.clone(), file.bip, text)?;
    let plugin_runtime = merge.pick(
        "plugin-runtime",
        flags.plugin_runtime,
        file.plugin_runtime,
        |name: String| parse_plugin_runtime(&name).map_err(anyhow::Error::from),
    )?;
    let metrics_addr = merge.pick(
        "metrics-addr",
        flags.metrics_addr.clone(),
        file.metrics_addr,
        |a: String| parse_metrics_addr(&a).map_err(anyhow::Error::msg),
    )?;
    let authorization_plugins = merge.pick_list(
        "authorization-plugins",
        &flags.authorization_plugins,
        file.authorization_plugins,
        text,
    )?;
    // A switch: only `true` counts as set on the command line.
    let authz_peer_credentials = merge.pick(
        "authz-peer-credentials",
        flags.authz_peer_credentials.then_some(true),
        file.authz_peer_credentials,
        |on: bool| Ok(on),
    )?;
    let plugin_log_driver = merge.pick(
        "plugin-log-driver",
        flags.plugin_log_driver.clone(),
        file.plugin_log_driver,
        text,
    )?;
    if !merge.conflicts.is_empty() {
        bail!(
            "the following directives are specified both as a flag and in the configuration file: {}",
            merge.conflicts.join(", ")
        );
    }
    let default_bridge = default_bridge(bridge, bip)?;
    Ok(DaemonConfig {
        hosts: hosts.unwrap_or_else(|| vec![parse_host(DEFAULT_HOST).expect("default host")]),
        data_root: absolute(data_root.unwrap_or_else(|| DEFAULT_DATA_ROOT.into()))?,
        exec_root: absolute(exec_root.unwrap_or_else(|| DEFAULT_EXEC_ROOT.into()))?,
        log_level: log_level.unwrap_or(log::LevelFilter::Info),
        plugin_start_timeout: start_timeout.unwrap_or(DEFAULT_PLUGIN_START_TIMEOUT),
        plugin_call_timeout: call_timeout.unwrap_or(DEFAULT_PLUGIN_CALL_TIMEOUT),
        body_idle_timeout: body_idle_timeout.unwrap_or(DEFAULT_BODY_IDLE_TIMEOUT),
        max_concurrent_uploads: max_concurrent_uploads.unwrap_or(DEFAULT_MAX_CONCURRENT_UPLOADS),
        max_unpacked_size: max_unpacked_size.unwrap_or(DEFAULT_MAX_UNPACKED_SIZE),
        legacy_plugin_dirs: legacy_plugin_dirs.unwrap_or_else(|| {
            DEFAULT_LEGACY_PLUGIN_DIRS
                .iter()
                .map(PathBuf::from)
                .collect()
        }),
        insecure_registries: insecure_registries.unwrap_or_default(),
        registry_mirrors: registry_mirrors.unwrap_or_default(),
        default_address_pools: default_address_pools.unwrap_or_default(),
        default_bridge,
        plugin_runtime: plugin_runtime.unwrap_or_default(),
        metrics_addr,
        authorization_plugins: authorization_plugins.unwrap_or_default(),
        authz_peer_credentials: authz_peer_credentials.unwrap_or(false),
        plugin_log_driver,
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

fn absolute(path: PathBuf) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path)
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

/// `unix:///absolute/path` (the scheme may be left out), `fd://` or `fd://NAME`. Nothing over
/// TCP: the API grants root on this machine, and a TCP listener without TLS client auth would
/// hand that to the network.
pub fn parse_host(host: &str) -> Result<Host, String> {
    if let Some(name) = host.strip_prefix("fd://") {
        return Ok(Host::Systemd((!name.is_empty()).then(|| name.to_string())));
    }
    let path = host.strip_prefix("unix://").unwrap_or(host);
    if path.contains("://") || !path.starts_with('/') {
        return Err(format!(
            "invalid host {host:?}: berth serves only unix sockets (unix:///absolute/path) and \
             sockets passed by systemd (fd://, fd://NAME)"
        ));
    }
    Ok(Host::Unix(PathBuf::from(path)))
}

/// `unix:///path`, `HOST:PORT`, or `PORT` / `:PORT` (loopback: metrics stay on this machine
/// unless a host is named).
pub fn parse_metrics_addr(addr: &str) -> Result<MetricsAddr, String> {
    if let Some(path) = addr.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(format!(
                "invalid metrics address {addr:?}: a unix socket path must be absolute"
            ));
        }
        return Ok(MetricsAddr::Unix(PathBuf::from(path)));
    }
    let port_only = addr.strip_prefix(':').unwrap_or(addr);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(MetricsAddr::Tcp(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
        )));
    }
    addr.parse::<SocketAddr>()
        .map(MetricsAddr::Tcp)
        .map_err(|_| {
            format!("invalid metrics address {addr:?}: expected unix:///PATH, HOST:PORT or PORT")
        })
}

pub fn parse_log_level(level: &str) -> Result<log::LevelFilter, String> {
    Ok(match level {
        "debug" => log::LevelFilter::Debug,
        "info" => log::LevelFilter::Info,
        "warn" => log::LevelFilter::Warn,
        "error" | "fatal" => log::LevelFilter::Error,
        other => {
            return Err(format!(
                "unable to parse logging level: {other} (one of debug, info, warn, error, fatal)"
            ))
        }
    })
}

/// A positive, finite number of seconds.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

/// At least one upload at a time.
pub fn parse_upload_bound(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{text:?} is not a whole number of at least 1")),
    }
}

pub fn parse_plugin_runtime(name: &str) -> Result<PluginRuntime, UnknownRuntime> {
    name.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> FileConfig {
        serde_json::from_str(json).unwrap()
    }

    fn defaults() -> anyhow::Result<DaemonConfig> {
        resolve(&DaemonFlags::default(), FileConfig::default())
    }

    #[test]
    fn defaults_apply_without_flags_or_file() {
        let cfg = defaults().unwrap();
        assert_eq!(
            cfg.hosts,
            vec![Host::Unix(PathBuf::from("/run/berth/berth.sock"))]
        );
        assert_eq!(cfg.data_root, PathBuf::from(DEFAULT_DATA_ROOT));
        assert_eq!(cfg.exec_root, PathBuf::from(DEFAULT_EXEC_ROOT));
        assert_eq!(cfg.log_level, log::LevelFilter::Info);
        assert_eq!(cfg.plugin_start_timeout, Duration::from_secs(30));
        assert_eq!(cfg.plugin_call_timeout, Duration::from_secs(10));
        assert_eq!(cfg.metrics_addr, None);
        assert_eq!(cfg.legacy_plugin_dirs.len(), 3);
    }

    #[test]
    fn body_limits_come_from_flag_or_file_but_not_both() {
        let cfg = defaults().unwrap();
        assert_eq!(cfg.body_idle_timeout, Duration::from_secs(30));
        assert_eq!(cfg.max_concurrent_uploads, 1024);
        assert_eq!(cfg.max_unpacked_size, 1 << 30);
        let cfg = resolve(
            &DaemonFlags::default(),
            file(r#"{"body-idle-timeout": 1.5, "max-concurrent-uploads": 8, "max-unpacked-size": 0}"#),
        )
        .unwrap();
        assert_eq!(cfg.body_idle_timeout, Duration::from_millis(1500));
        assert_eq!(cfg.max_concurrent_uploads, 8);
        assert_eq!(cfg.max_unpacked_size, 0);
        let flags = DaemonFlags {
            max_concurrent_uploads: Some(2),
            ..Default::default()
        };
        let err = resolve(&flags, file(r#"{"max-concurrent-uploads": 8}"#))
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
            r#"{"max-unpacked-size": -1}"#,
        ] {
            assert!(
                resolve(&DaemonFlags::default(), file(bad)).is_err(),
                "{bad}"
            );
        }
        assert!(parse_upload_bound("0").is_err());
        assert_eq!(parse_upload_bound("3"), Ok(3));
    }

    #[test]
    fn bridge_and_bip_as_dockerd_reads_them() {
        let with = |bridge: Option<&str>, bip: Option<&str>, f: &str| {
            let flags = DaemonFlags {
                bridge: bridge.map(str::to_string),
                bip: bip.map(str::to_string),
                ..Default::default()
            };
            resolve(&flags, file(f)).map(|c| c.default_bridge)
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
            default_address_pools: vec![crate::cidr::parse_address_pool(
                "base=10.10.0.0/16,size=24",
            )
            .unwrap()],
            ..Default::default()
        };
        let cfg = resolve(&flags, FileConfig::default()).unwrap();
        assert_eq!(cfg.default_address_pools[0].size, 24);
        let json = r#"{"default-address-pools":[{"base":"172.80.0.0/16","size":24}]}"#;
        let cfg = resolve(&DaemonFlags::default(), file(json)).unwrap();
        assert_eq!(
            cfg.default_address_pools[0].base.to_string(),
            "172.80.0.0/16"
        );
        let err = resolve(&flags, file(json)).unwrap_err().to_string();
        assert!(err.contains("default-address-pools: (from flag: [base=10.10.0.0/16,size=24], from file: [base=172.80.0.0/16,size=24])"), "{err}");
        assert!(crate::cidr::parse_address_pool("base=10.10.0.0/16").is_err());
        assert!(resolve(
            &DaemonFlags::default(),
            file(r#"{"default-address-pools":[{"base":"172.80.0.0/16"}]}"#)
        )
        .is_err());
    }

    #[test]
    fn plugin_runtime_comes_from_flag_or_file_and_must_be_known() {
        use crate::runtime::oci::OciRuntime;
        assert_eq!(defaults().unwrap().plugin_runtime, PluginRuntime::Builtin);
        let cfg = resolve(
            &DaemonFlags::default(),
            file(r#"{"plugin-runtime":"crun"}"#),
        )
        .unwrap();
        assert_eq!(cfg.plugin_runtime, PluginRuntime::Oci(OciRuntime::Crun));
        assert_eq!(
            parse_plugin_runtime("runsc").unwrap_err().to_string(),
            "unknown plugin runtime \"runsc\": expected builtin, runc or crun"
        );
        let err = resolve(
            &DaemonFlags::default(),
            file(r#"{"plugin-runtime":"runsc"}"#),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").starts_with("plugin-runtime: unknown plugin runtime"),
            "{err:#}"
        );
        let flags = DaemonFlags {
            plugin_runtime: Some(PluginRuntime::Oci(OciRuntime::Runc)),
            ..Default::default()
        };
        let err = resolve(&flags, file(r#"{"plugin-runtime":"crun"}"#)).unwrap_err();
        assert!(
            err.to_string()
                .contains("plugin-runtime: (from flag: runc, from file: crun)"),
            "{err}"
        );
    }

    #[test]
    fn plugin_start_timeout_comes_from_flag_or_file() {
        let flags = DaemonFlags {
            plugin_start_timeout: Some(parse_seconds("2.5").unwrap()),
            ..Default::default()
        };
        let cfg = resolve(&flags, FileConfig::default()).unwrap();
        assert_eq!(cfg.plugin_start_timeout, Duration::from_millis(2500));
        let cfg = resolve(
            &DaemonFlags::default(),
            file(r#"{"plugin-start-timeout": 4}"#),
        )
        .unwrap();
        assert_eq!(cfg.plugin_start_timeout, Duration::from_secs(4));
        assert!(parse_seconds("0").is_err());
        let err = resolve(
            &DaemonFlags::default(),
            file(r#"{"plugin-start-timeout": -1}"#),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").starts_with("plugin-start-timeout: "),
            "{err:#}"
        );
    }

    #[test]
    fn file_values_apply_and_flags_may_not_repeat_them() {
        let json = r#"{"data-root":"/srv/b","hosts":["unix:///tmp/a.sock","fd://api"],"log-level":"debug"}"#;
        let cfg = resolve(&DaemonFlags::default(), file(json)).unwrap();
        assert_eq!(cfg.data_root, PathBuf::from("/srv/b"));
        assert_eq!(
            cfg.hosts,
            vec![
                Host::Unix("/tmp/a.sock".into()),
                Host::Systemd(Some("api".into()))
            ]
        );
        assert_eq!(cfg.log_level, log::LevelFilter::Debug);

        let flags = DaemonFlags {
            data_root: Some("/x".into()),
            ..Default::default()
        };
        let err = resolve(&flags, file(json)).unwrap_err().to_string();
        assert!(err.contains("specified both as a flag and in the configuration file: data-root: (from flag: /x, from file: /srv/b)"), "{err}");
    }

    #[test]
    fn every_key_the_file_may_hold_is_accepted() {
        let f = file(
            r#"{"plugin-call-timeout":2,"legacy-plugin-dirs":["/p"],"insecure-registries":["r:5000"],
                "registry-mirrors":["https://m"],"metrics-addr":"unix:///run/berth/metrics.sock","exec-root":"/e"}"#,
        );
        let cfg = resolve(&DaemonFlags::default(), f).unwrap();
        assert_eq!(cfg.plugin_call_timeout, Duration::from_secs(2));
        assert_eq!(cfg.legacy_plugin_dirs, vec![PathBuf::from("/p")]);
        assert_eq!(cfg.insecure_registries, vec!["r:5000"]);
        assert_eq!(cfg.registry_mirrors, vec!["https://m"]);
        assert_eq!(
            cfg.metrics_addr,
            Some(MetricsAddr::Unix("/run/berth/metrics.sock".into()))
        );
        assert_eq!(cfg.metrics_socket(), PathBuf::from("/e/metrics.sock"));
    }

    #[test]
    fn authorization_plugins_come_from_flags_or_file_not_both() {
        let flags = DaemonFlags {
            authorization_plugins: vec!["policy".into(), "audit".into()],
            ..Default::default()
        };
        let cfg = resolve(&flags, FileConfig::default()).unwrap();
        assert_eq!(cfg.authorization_plugins, vec!["policy", "audit"]);
        assert!(!cfg.authz_peer_credentials);
        let cfg = resolve(
            &DaemonFlags::default(),
            file(r#"{"authorization-plugins":["a"],"authz-peer-credentials":true}"#),
        )
        .unwrap();
        assert_eq!(cfg.authorization_plugins, vec!["a"]);
        assert!(cfg.authz_peer_credentials);
        let err = resolve(&flags, file(r#"{"authorization-plugins":["a"]}"#)).unwrap_err();
        assert!(
            err.to_string().contains(
                "specified both as a flag and in the configuration file: authorization-plugins"
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_file_keys_and_bad_file_values_name_the_key() {
        let err = resolve(&DaemonFlags::default(), file(r#"{"storage-driver":"x"}"#)).unwrap_err();
        assert!(err
            .to_string()
            .contains("don't match any configuration option: storage-driver"));
        let err = resolve(&DaemonFlags::default(), file(r#"{"log-level":"loud"}"#)).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("log-level: unable to parse logging level: loud"),
            "{err:#}"
        );
        let err = resolve(&DaemonFlags::default(), file(r#"{"hosts":"unix:///a"}"#)).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("hosts: unexpected value"),
            "{err:#}"
        );
    }

    #[test]
    fn hosts_are_unix_sockets_or_systemd_sockets() {
        assert!(parse_host("tcp://0.0.0.0:2375").is_err());
        assert!(parse_host("unix://relative.sock").is_err());
        assert_eq!(
            parse_host("unix:///run/b.sock").unwrap(),
            Host::Unix(PathBuf::from("/run/b.sock"))
        );
        assert_eq!(parse_host("fd://").unwrap(), Host::Systemd(None));
        assert_eq!(
            parse_host("fd://berth.socket").unwrap(),
            Host::Systemd(Some("berth.socket".into()))
        );
        assert_eq!(parse_host("fd://x").unwrap().to_string(), "fd://x");
    }

    #[test]
    fn metrics_addresses_default_to_loopback() {
        assert_eq!(
            parse_metrics_addr("9323").unwrap(),
            MetricsAddr::Tcp("127.0.0.1:9323".parse().unwrap())
        );
        assert_eq!(
            parse_metrics_addr(":9323").unwrap(),
            MetricsAddr::Tcp("127.0.0.1:9323".parse().unwrap())
        );
        assert_eq!(
            parse_metrics_addr("0.0.0.0:9323").unwrap(),
            MetricsAddr::Tcp("0.0.0.0:9323".parse().unwrap())
        );
        assert_eq!(
            parse_metrics_addr("unix:///run/m.sock").unwrap(),
            MetricsAddr::Unix("/run/m.sock".into())
        );
        assert!(parse_metrics_addr("unix://m.sock").is_err());
        assert!(parse_metrics_addr("localhost:x").is_err());
    }

    #[test]
    fn log_levels_follow_dockerd_names() {
        assert_eq!(parse_log_level("fatal").unwrap(), log::LevelFilter::Error);
        assert!(parse_log_level("loud").is_err());
    }
}
