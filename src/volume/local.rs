//! The built-in `local` volume driver.
//!
//! Same layout and texts as dockerd 20.10's `volume/local`: a volume `foo` is the directory
//! `<data-root>/volumes/foo` (mode 0701) holding `_data` (0755), the directory containers see,
//! and, when it was created with driver options, `opts.json` (0600) such as
//! `{"MountType":"tmpfs","MountOpts":"size=1m","MountDevice":"tmpfs","Quota":{"Size":0}}`.
//! A volume with a `type` or `device` is mounted onto its `_data` on [`LocalDriver::mount`]
//! (`mount -t <type> -o <o> <device> _data`, with moby's split of `o` into mount flags and
//! file-system data) and unmounted on [`LocalDriver::unmount`].
//!
//! # Division of labour
//! - Errors ([`LocalError`]) carry dockerd's texts and their class: name and option errors
//!   ([`LocalDriver::validate_name`], [`LocalDriver::validate_options`]) are refusals (400s),
//!   the rest failures (500s); the service adds the prefix (`create <name>: `).
//! - The driver is seen by the volume service as a [`VolumeDriver`] like any plugin. Through
//!   that trait it counts the callers that mounted a volume: the first one's mount is
//!   [`LocalDriver::mount`], the last one's unmount [`LocalDriver::unmount`]. Whether `_data` is
//!   mounted is read from `/proc/self/mountinfo`, so the driver cannot disagree with the kernel.
//! - [`LocalDriver::restore`] runs once at start-up, before any mount: it learns what is on
//!   disk, unmounts what a crash left mounted and sweeps half-made or half-removed directories.
//!
//! # Crash safety
//! A volume directory appears and disappears with one `rename`: create builds
//! `.creating-<hex>` and renames it to `<name>`; remove renames `<name>` to `.removing-<hex>`
//! and then deletes that. Names starting with `.` are never volume names (see
//! [`LocalDriver::validate_name`]), and `restore` deletes such leftovers.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};

use crate::drivers::volume::{Created, DriverError, DriverVolume, VolumeDriver};
use crate::fsutil;
// Go's wording of an OS error (`no such device`), as dockerd's messages carry it.
use crate::goerr::io_error_text as errno_text;
use crate::gojson::go_quote;
use crate::mounts;
pub use crate::mounts::mount_points;

/// The driver's name in the API.
pub const DRIVER_NAME: &str = "local";
/// Directory of each volume's data inside its volume directory.
const DATA_DIR: &str = "_data";
const OPTS_FILE: &str = "opts.json";
const CREATING_PREFIX: &str = ".creating-";
const REMOVING_PREFIX: &str = ".removing-";

/// moby `names.RestrictedNameChars`, printed in the invalid-name error.
const RESTRICTED_NAME_CHARS: &str = "[a-zA-Z0-9][a-zA-Z0-9_.-]";

/// Driver options the local driver accepts.
const VALID_OPTS: [&str; 4] = ["type", "o", "device", "size"];
/// An option and the options it needs (moby `mandatoryOpts`).
const MANDATORY_OPTS: [(&str, &[&str]); 3] = [
    ("device", &["type"]),
    ("type", &["device"]),
    ("o", &["device", "type"]),
];

/// A failure of the local driver, worded as dockerd's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalError {
    /// The volume name or the driver options are not acceptable (a 400).
    #[error("{0}")]
    Invalid(String),
    /// Anything else (a 500).
    #[error("{0}")]
    Failed(String),
}

impl LocalError {
    /// As the error of a [`VolumeDriver`] method.
    fn for_method(self, method: &str) -> DriverError {
        match self {
            LocalError::Invalid(m) => DriverError::invalid(method, m),
            LocalError::Failed(m) => DriverError::failed(method, m),
        }
    }
}

fn invalid(message: impl Into<String>) -> LocalError {
    LocalError::Invalid(message.into())
}

fn failed(message: impl std::fmt::Display) -> LocalError {
    LocalError::Failed(message.to_string())
}

// ---------------------------------------------------------------------------------------------
// Validation

/// See [`LocalDriver::validate_name`].
fn validate_name(name: &str) -> Result<(), LocalError> {
    if name.len() == 1 {
        return Err(invalid(
            "volume name is too short, names should be at least two alphanumeric characters",
        ));
    }
    let b = name.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if !ok {
        return Err(invalid(format!(
            "{} includes invalid characters for a local volume name, only {} are allowed. If you \
             intended to pass a host directory, use absolute path",
            go_quote(name),
            go_quote(RESTRICTED_NAME_CHARS)
        )));
    }
    Ok(())
}

/// See [`LocalDriver::validate_options`].
fn validate_options(opts: &BTreeMap<String, String>) -> Result<(), LocalError> {
    if let Some(bad) = opts.keys().find(|k| !VALID_OPTS.contains(&k.as_str())) {
        return Err(invalid(format!("invalid option: {}", go_quote(bad))));
    }
    for (opt, needs) in MANDATORY_OPTS {
        if opts.contains_key(opt) {
            if let Some(missing) = needs.iter().find(|n| !opts.contains_key(**n)) {
                return Err(invalid(format!(
                    "missing required option: {}",
                    go_quote(missing)
                )));
            }
        }
    }
    quota_size(opts)?;
    Ok(())
}

/// The `size` option in bytes (0 when absent), checked as [`LocalDriver::validate_options`]
/// says.
fn quota_size(opts: &BTreeMap<String, String>) -> Result<u64, LocalError> {
    let Some(val) = opts.get("size") else {
        return Ok(0);
    };
    let size = ram_in_bytes(val)?;
    if size > 0 {
        return Err(invalid("quota size requested but no quota support"));
    }
    Ok(0)
}

/// go-units `RAMInBytes`: `<number>[ ][kmgtp][i][b]`, binary multiples, truncated to an
/// integer. Error texts are Go's.
pub fn ram_in_bytes(s: &str) -> Result<i64, LocalError> {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"^([0-9]+(\.[0-9]+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$").unwrap()
    });
    let caps = re
        .captures(s)
        .ok_or_else(|| invalid(format!("invalid size: '{s}'")))?;
    let number = &caps[1];
    let size: f64 = number.parse().map_err(|_| {
        invalid(format!(
            "strconv.ParseFloat: parsing {}: invalid syntax",
            go_quote(number)
        ))
    })?;
    if size.is_infinite() {
        return Err(invalid(format!(
            "strconv.ParseFloat: parsing {}: value out of range",
            go_quote(number)
        )));
    }
    let mul: f64 = match caps.get(3).map(|m| m.as_str().to_ascii_lowercase()) {
        Some(u) if u == "k" => 1024.0,
        Some(u) if u == "m" => 1024f64.powi(2),
        Some(u) if u == "g" => 1024f64.powi(3),
        Some(u) if u == "t" => 1024f64.powi(4),
        Some(u) if u == "p" => 1024f64.powi(5),
        _ => 1.0,
    };
    Ok((size * mul) as i64)
}

// ---------------------------------------------------------------------------------------------
// opts.json and the mount it describes

/// `opts.json`: moby's `optsConfig`, field names and order as dockerd writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountOptions {
    #[serde(rename = "MountType", default)]
    pub mount_type: String,
    #[serde(rename = "MountOpts", default)]
    pub mount_opts: String,
    #[serde(rename = "MountDevice", default)]
    pub mount_device: String,
    #[serde(rename = "Quota", default)]
    pub quota: Quota,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    #[serde(rename = "Size", default)]
    pub size: u64,
}

impl MountOptions {
    /// From driver options that passed [`LocalDriver::validate_options`]; `None` for no
    /// options.
    pub fn from_driver_opts(opts: &BTreeMap<String, String>) -> Result<Option<Self>, LocalError> {
        if opts.is_empty() {
            return Ok(None);
        }
        let get = |k: &str| opts.get(k).cloned().unwrap_or_default();
        Ok(Some(MountOptions {
            mount_type: get("type"),
            mount_opts: get("o"),
            mount_device: get("device"),
            quota: Quota {
                size: quota_size(opts)?,
            },
        }))
    }

    /// moby `needsMount`: a type or a device means `_data` is a mount point when in use.
    pub fn needs_mount(&self) -> bool {
        !self.mount_type.is_empty() || !self.mount_device.is_empty()
    }
}

// Mount flags as moby/sys/mount names them (Linux values).
const MS_RDONLY: u64 = libc_flag(MsFlags::MS_RDONLY);
const MS_REMOUNT: u64 = libc_flag(MsFlags::MS_REMOUNT);
const MS_BIND: u64 = libc_flag(MsFlags::MS_BIND);
const MS_REC: u64 = libc_flag(MsFlags::MS_REC);
const MS_SILENT: u64 = libc_flag(MsFlags::MS_SILENT);
const MS_PRIVATE: u64 = libc_flag(MsFlags::MS_PRIVATE);
const MS_SHARED: u64 = libc_flag(MsFlags::MS_SHARED);
const MS_SLAVE: u64 = libc_flag(MsFlags::MS_SLAVE);
const MS_UNBINDABLE: u64 = libc_flag(MsFlags::MS_UNBINDABLE);
/// Propagation types: applied by a second mount(2) call.
const PTYPES: u64 = MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE;
const PFLAGS: u64 = PTYPES | MS_REC | MS_SILENT;
const BROFLAGS: u64 = MS_BIND | MS_RDONLY;

// `c_ulong` is u64 here but not on every target.
#[allow(clippy::unnecessary_cast)]
const fn libc_flag(f: MsFlags) -> u64 {
    f.bits() as u64
}

/// moby/sys/mount `flags`: (name, clear?, flag). Names not here, and `defaults` (flag 0),
/// go to the file-system data.
const FLAG_TABLE: &[(&str, bool, MsFlags)] = &[
    ("ro", false, MsFlags::MS_RDONLY),
    ("rw", true, MsFlags::MS_RDONLY),
    ("suid", true, MsFlags::MS_NOSUID),
    ("nosuid", false, MsFlags::MS_NOSUID),
    ("dev", true, MsFlags::MS_NODEV),
    ("nodev", false, MsFlags::MS_NODEV),
    ("exec", true, MsFlags::MS_NOEXEC),
    ("noexec", false, MsFlags::MS_NOEXEC),
    ("sync", false, MsFlags::MS_SYNCHRONOUS),
    ("async", true, MsFlags::MS_SYNCHRONOUS),
    ("dirsync", false, MsFlags::MS_DIRSYNC),
    ("remount", false, MsFlags::MS_REMOUNT),
    ("mand", false, MsFlags::MS_MANDLOCK),
    ("nomand", true, MsFlags::MS_MANDLOCK),
    ("atime", true, MsFlags::MS_NOATIME),
    ("noatime", false, MsFlags::MS_NOATIME),
    ("diratime", true, MsFlags::MS_NODIRATIME),
    ("nodiratime", false, MsFlags::MS_NODIRATIME),
    ("bind", false, MsFlags::MS_BIND),
    ("rbind", false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
    ("unbindable", false, MsFlags::MS_UNBINDABLE),
    (
        "runbindable",
        false,
        MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC),
    ),
    ("private", false, MsFlags::MS_PRIVATE),
    (
        "rprivate",
        false,
        MsFlags::MS_PRIVATE.union(MsFlags::MS_REC),
    ),
    ("shared", false, MsFlags::MS_SHARED),
    ("rshared", false, MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
    ("slave", false, MsFlags::MS_SLAVE),
    ("rslave", false, MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
    ("relatime", false, MsFlags::MS_RELATIME),
    ("norelatime", true, MsFlags::MS_RELATIME),
    ("strictatime", false, MsFlags::MS_STRICTATIME),
    ("nostrictatime", true, MsFlags::MS_STRICTATIME),
];

/// moby/sys/mount `parseOptions`: the `o` option as mount flags plus file-system data
/// (`ro,nosuid,size=1m` → `(MS_RDONLY|MS_NOSUID, "size=1m")`).
pub fn parse_mount_options(options: &str) -> (u64, String) {
    let mut flags = 0u64;
    let mut data = Vec::new();
    for o in options.split(',') {
        match FLAG_TABLE.iter().find(|(name, _, _)| *name == o) {
            Some((_, clear, f)) => {
                let f = libc_flag(*f);
                if *clear {
                    flags &= !f;
                } else {
                    flags |= f;
                }
            }
            None => data.push(o),
        }
    }
    (flags, data.join(","))
}

/// One mount(2) call of a volume mount, and how its failure reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountCall {
    /// `mount`, `remount` (propagation) or `remount-ro` (read-only bind).
    pub op: &'static str,
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
    pub flags: u64,
    pub data: String,
}

impl MountCall {
    /// moby/sys/mount `mountError`:
    /// `mount tmpfs:/v/_data, flags: 0x3, data: size=1m: invalid argument`.
    pub fn error_text(&self, err: &io::Error) -> String {
        let mut out = format!("{} ", self.op);
        if self.source.is_empty() {
            out.push_str(&self.target.display().to_string());
        } else {
            out.push_str(&format!("{}:{}", self.source, self.target.display()));
        }
        if self.flags != 0 {
            out.push_str(&format!(", flags: 0x{:x}", self.flags));
        }
        if !self.data.is_empty() {
            out.push_str(&format!(", data: {}", self.data));
        }
        out.push_str(": ");
        out.push_str(&errno_text(err));
        out
    }
}

/// moby/sys/mount `Mount(device, target, type, options)` as the calls it makes.
pub fn mount_calls(device: &str, target: &Path, fstype: &str, options: &str) -> Vec<MountCall> {
    let (flags, data) = parse_mount_options(options);
    let oflags = flags & !PTYPES;
    let mut calls = Vec::new();
    if flags & MS_REMOUNT == 0 || !data.is_empty() {
        calls.push(MountCall {
            op: "mount",
            source: device.to_string(),
            target: target.to_path_buf(),
            fstype: fstype.to_string(),
            flags: oflags,
            data,
        });
    }
    if flags & PTYPES != 0 {
        calls.push(MountCall {
            op: "remount",
            source: String::new(),
            target: target.to_path_buf(),
            fstype: String::new(),
            flags: flags & PFLAGS,
            data: String::new(),
        });
    }
    if oflags & BROFLAGS == BROFLAGS {
        calls.push(MountCall {
            op: "remount-ro",
            source: String::new(),
            target: target.to_path_buf(),
            fstype: String::new(),
            flags: oflags | MS_REMOUNT,
            data: String::new(),
        });
    }
    calls
}

/// The value of the first `<key>=` item of a comma-separated option string.
fn option_value<'a>(opts: &'a str, key: &str) -> Option<&'a str> {
    opts.split(',')
        .find_map(|o| o.strip_prefix(key)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
}

/// The mount's device and `o` after dockerd's rewriting: for `type=nfs` an `addr=` that is
/// not an IPv4 literal is resolved (the kernel's NFS client wants an address).
pub fn resolve_mount_options(
    opts: &MountOptions,
    resolve: impl Fn(&str) -> Result<IpAddr, LocalError>,
) -> Result<(String, String), LocalError> {
    if opts.mount_device.is_empty() {
        return Err(failed("missing device in volume options"));
    }
    let mut mount_opts = opts.mount_opts.clone();
    if opts.mount_type == "nfs" {
        if let Some(addr) = option_value(&opts.mount_opts, "addr") {
            if !matches!(addr.parse::<IpAddr>(), Ok(IpAddr::V4(_))) {
                let ip = resolve(addr).map_err(|e| {
                    failed(format!(
                        "error resolving passed in network volume address: {e}"
                    ))
                })?;
                mount_opts = mount_opts.replacen(&format!("addr={addr}"), &format!("addr={ip}"), 1);
            }
        }
    }
    Ok((opts.mount_device.clone(), mount_opts))
}

/// Go's `net.ResolveIPAddr("ip", host)`: an IP literal as is, else the first IPv4 address
/// of the name (else the first address). Failures read like Go's resolver.
pub fn resolve_ip(host: &str) -> Result<IpAddr, LocalError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let lookup_err = |why: &str| {
        let server = fs::read_to_string("/etc/resolv.conf")
            .ok()
            .and_then(|conf| {
                conf.lines().find_map(|l| {
                    let mut w = l.split_whitespace();
                    (w.next() == Some("nameserver")).then(|| w.next().map(str::to_string))?
                })
            });
        match server {
            Some(s) if s.contains(':') => format!("lookup {host} on [{s}]:53: {why}"),
            Some(s) => format!("lookup {host} on {s}:53: {why}"),
            None => format!("lookup {host}: {why}"),
        }
    };
    let addrs: Vec<IpAddr> = match (host, 0u16).to_socket_addrs() {
        Ok(a) => a.map(|a| a.ip()).collect(),
        Err(e) => {
            let text = e.to_string();
            let why = if text.contains("not known") || text.contains("No address") {
                "no such host".to_string()
            } else {
                text.trim_start_matches("failed to lookup address information: ")
                    .to_string()
            };
            return Err(failed(lookup_err(&why)));
        }
    };
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| failed(lookup_err("no such host")))
}

/// Hides the value of a `password=` option in a message (as current moby does for CIFS).
fn mask_password(message: String, mount_opts: &str) -> String {
    match option_value(mount_opts, "password") {
        Some(pw) => message.replacen(&format!("password={pw}"), "password=********", 1),
        None => message,
    }
}

// ---------------------------------------------------------------------------------------------
// /proc/self/mountinfo

fn is_mount_point(path: &Path) -> bool {
    match mount_points() {
        Ok(points) => points.iter().any(|p| p == path),
        Err(e) => {
            log::warn!("reading /proc/self/mountinfo: {e}");
            false
        }
    }
}

/// Lazily detaches every mount stacked on `path`. Not mounted (`EINVAL`) and missing
/// (`ENOENT`) are success.
fn unmount_all(path: &Path) -> Result<(), LocalError> {
    mounts::unmount_stack(path).map_err(failed)
}

fn sys_mount(call: &MountCall) -> io::Result<()> {
    let data = (!call.data.is_empty()).then_some(call.data.as_str());
    nix::mount::mount(
        Some(call.source.as_str()),
        &call.target,
        Some(call.fstype.as_str()),
        MsFlags::from_bits_retain(call.flags as _),
        data,
    )
    .map_err(io::Error::from)
}

// ---------------------------------------------------------------------------------------------
// The driver

/// What the driver knows of one volume.
#[derive(Debug, Default)]
struct VolumeState {
    /// `None`: a plain directory.
    opts: Option<MountOptions>,
    /// `opts.json` exists but does not parse: mounting reports this.
    opts_error: Option<String>,
}

/// The `local` driver. `Send + Sync`; operations on one volume are serialized, operations on
/// different volumes run in parallel (a slow NFS mount holds up only its own volume).
pub struct LocalDriver {
    /// `<data-root>/volumes`, canonical (so paths compare equal to mountinfo's).
    root: PathBuf,
    volumes: Mutex<BTreeMap<String, Arc<Mutex<VolumeState>>>>,
    /// Callers that mounted each volume through [`VolumeDriver::mount`]: the first mounts, the
    /// last to unmount unmounts (moby's local driver counts the same way).
    users: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl std::fmt::Debug for LocalDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDriver")
            .field("root", &self.root)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LocalDriver {
    /// The driver for the volumes directory `root` (`<data-root>/volumes`), created with mode
    /// 0701 if missing; failing that, the error shows on the first create or restore. Knows no
    /// volume until [`LocalDriver::restore`] or [`LocalDriver::create`]; operations on a name
    /// it does not know look at the disk first.
    pub fn new(root: &Path) -> LocalDriver {
        if !root.is_dir() {
            if let Err(e) = fsutil::create_dir_mode(root, 0o701) {
                log::error!(
                    "creating volumes directory {}: {}",
                    root.display(),
                    errno_text(&e)
                );
            }
        }
        LocalDriver {
            root: fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
            volumes: Mutex::new(BTreeMap::new()),
            users: Mutex::new(HashMap::new()),
        }
    }

    /// dockerd's local volume name rule: at least two characters,
    /// `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (`volume name is too short, names should be at least two
    /// alphanumeric characters`, `"a/b" includes invalid characters for a local volume name,
    /// only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory,
    /// use absolute path`). A 400.
    pub fn validate_name(name: &str) -> Result<(), LocalError> {
        validate_name(name)
    }

    /// dockerd's checks of local driver options, in 20.10's order: unknown keys (`invalid
    /// option: "foo"`), options that need others (`missing required option: "device"`), then
    /// `size` (`invalid size: 'abc'`; any size above 0 is `quota size requested but no quota
    /// support`: berth has no project quotas). A 400 (20.10 made a bad size a 500, current
    /// moby a 400). dockerd names a random one of several unknown keys; this names the first.
    pub fn validate_options(opts: &BTreeMap<String, String>) -> Result<(), LocalError> {
        validate_options(opts)
    }

    /// `<data-root>/volumes`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<data-root>/volumes/<name>/_data`, whether or not the volume exists.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.root.join(name).join(DATA_DIR)
    }

    /// Start-up: deletes what an interrupted create or remove left, unmounts the `_data` of
    /// every volume with mount options (a crash leaves them mounted with no user), and learns
    /// the volumes on disk, whose names it returns sorted. Call once, before any mount.
    /// Directories whose names are not volume names (`lost+found`) are ignored.
    pub fn restore(&self) -> Result<Vec<String>, LocalError> {
        let mut found = BTreeMap::new();
        let entries = fs::read_dir(&self.root)
            .map_err(|e| failed(format!("open {}: {}", self.root.display(), errno_text(&e))))?;
        for entry in entries {
            let entry = entry.map_err(failed)?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if name.starts_with(CREATING_PREFIX) || name.starts_with(REMOVING_PREFIX) {
                log::info!(
                    "removing leftover volume directory {}",
                    entry.path().display()
                );
                if let Err(e) = self.remove_tree(&entry.path()) {
                    log::warn!("{e}");
                }
                continue;
            }
            if !is_dir || validate_name(&name).is_err() {
                continue;
            }
            let state = self.load(&name);
            if state.opts.is_some() || state.opts_error.is_some() {
                if let Err(e) = unmount_all(&self.mountpoint(&name)) {
                    log::warn!("volume {name}: {e}");
                }
            }
            found.insert(name, Arc::new(Mutex::new(state)));
        }
        let names = found.keys().cloned().collect();
        *lock(&self.volumes) = found;
        Ok(names)
    }

    /// Names of the volumes the driver knows, sorted.
    pub fn list(&self) -> Vec<String> {
        lock(&self.volumes).keys().cloned().collect()
    }

    /// Whether `name` is a volume of this driver (known, or its directory is on disk).
    pub fn exists(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    /// The mount options kept in the volume's `opts.json` (`None`: plain directory, or no
    /// such volume).
    pub fn options(&self, name: &str) -> Option<MountOptions> {
        let vol = self.lookup(name)?;
        let state = lock(&vol);
        state.opts.clone()
    }

    /// Creates volume `name` and returns its mountpoint (`_data`). Checks the name and options
    /// first (see [`LocalDriver::validate_name`], [`LocalDriver::validate_options`]). A volume the driver already has is
    /// returned as is, whatever the options (dockerd does the same); a directory already on
    /// disk is taken over and its `opts.json` rewritten.
    pub fn create(
        &self,
        name: &str,
        opts: &BTreeMap<String, String>,
    ) -> Result<PathBuf, LocalError> {
        validate_name(name)?;
        validate_options(opts)?;
        let mount_opts = MountOptions::from_driver_opts(opts)?;
        let mut volumes = lock(&self.volumes);
        let data = self.mountpoint(name);
        if volumes.contains_key(name) {
            if data.is_dir() {
                return Ok(data);
            }
            // Deleted behind our back: make it again.
            volumes.remove(name);
        }
        let dir = self.root.join(name);
        let creating = |e: io::Error| {
            failed(format!(
                "error while creating volume root path '{}': mkdir {}: {}",
                dir.display(),
                dir.display(),
                errno_text(&e)
            ))
        };
        if dir.is_dir() {
            // Left by something else (or a volume whose record was lost): adopt it.
            if !data.is_dir() {
                mkdir(&data, 0o755).map_err(|e| {
                    failed(format!(
                        "error while creating volume data path '{}': mkdir {}: {}",
                        data.display(),
                        data.display(),
                        errno_text(&e)
                    ))
                })?;
            }
            self.write_opts(&dir, mount_opts.as_ref())?;
        } else {
            let tmp = self
                .root
                .join(format!("{CREATING_PREFIX}{}", fsutil::random_hex(8)));
            let built = (|| -> Result<(), LocalError> {
                mkdir(&tmp, 0o701).map_err(creating)?;
                mkdir(&tmp.join(DATA_DIR), 0o755).map_err(creating)?;
                self.write_opts(&tmp, mount_opts.as_ref())?;
                fsutil::sync_dir(&tmp).map_err(creating)?;
                fs::rename(&tmp, &dir).map_err(creating)?;
                fsutil::sync_dir(&self.root).map_err(creating)
            })();
            if let Err(e) = built {
                let _ = fsutil::remove_all(&tmp);
                return Err(e);
            }
        }
        volumes.insert(
            name.to_string(),
            Arc::new(Mutex::new(VolumeState {
                // As restore would read it back: an all-empty config is no config.
                opts: mount_opts.filter(|o| *o != MountOptions::default()),
                opts_error: None,
            })),
        );
        Ok(data)
    }

    /// Removes volume `name`: unmounts its `_data` if it has mount options, then deletes its
    /// directory. A volume that is not there (its directory deleted behind our back) is
    /// removed without error. Users of the volume are the service's business: call this when
    /// there are none.
    pub fn remove(&self, name: &str) -> Result<(), LocalError> {
        let mut volumes = lock(&self.volumes);
        let Some(vol) = volumes
            .get(name)
            .cloned()
            .or_else(|| self.disk_volume(name))
        else {
            return Ok(());
        };
        let state = lock(&vol);
        let dir = self.root.join(name);
        let data = dir.join(DATA_DIR);
        if state.opts.is_some() || state.opts_error.is_some() {
            unmount_all(&data).map_err(failed)?;
        }
        // Never delete through a mount: that would empty a tmpfs or, worse, a bind-mounted
        // host directory.
        if let Some(p) = self.mounts_under(&dir) {
            return Err(failed(format!(
                "error removing volume path '{}': {} is mounted",
                dir.display(),
                p.display()
            )));
        }
        let doomed = self
            .root
            .join(format!("{REMOVING_PREFIX}{}", fsutil::random_hex(8)));
        match fs::rename(&dir, &doomed) {
            Ok(()) => {
                let _ = fsutil::sync_dir(&self.root);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(failed(format!(
                    "error removing volume path '{}': rename {} {}: {}",
                    dir.display(),
                    dir.display(),
                    doomed.display(),
                    errno_text(&e)
                )))
            }
        }
        volumes.remove(name);
        drop(state);
        drop(volumes);
        // The volume is gone from the namespace; the rest is clean-up that restore repeats.
        if let Err(e) = self.remove_tree(&doomed) {
            log::warn!("volume {name}: {e}");
        }
        Ok(())
    }

    /// First-use action: for a volume with a `type` or `device`, mounts it onto its `_data`
    /// unless already mounted; returns the mountpoint. A plain volume needs nothing.
    /// Errors are dockerd's (`failed to mount local volume: mount <device>:<dir>, flags:
    /// 0x1000, data: <data>: <errno>`; a 500). Unknown name: `volume not found`.
    pub fn mount(&self, name: &str) -> Result<PathBuf, LocalError> {
        let vol = self
            .lookup(name)
            .ok_or_else(|| failed("volume not found"))?;
        let state = lock(&vol);
        let data = self.mountpoint(name);
        if let Some(e) = &state.opts_error {
            return Err(failed(e));
        }
        let Some(opts) = state.opts.as_ref().filter(|o| o.needs_mount()) else {
            return Ok(data);
        };
        if is_mount_point(&data) {
            return Ok(data);
        }
        let (device, options) = resolve_mount_options(opts, resolve_ip)?;
        let calls = mount_calls(&device, &data, &opts.mount_type, &options);
        for (i, call) in calls.iter().enumerate() {
            if let Err(err) = sys_mount(call) {
                if i > 0 {
                    // moby leaves the first mount in place when a later step fails; a mount
                    // nobody asked for would then block remove. Take it off again.
                    let _ = unmount_all(&data);
                }
                let message = format!("failed to mount local volume: {}", call.error_text(&err));
                return Err(failed(mask_password(message, &opts.mount_opts)));
            }
        }
        Ok(data)
    }

    /// Last-use action: unmounts a volume with a `type` or `device` (every mount stacked on
    /// its `_data`); nothing for a plain volume or one that is not mounted.
    pub fn unmount(&self, name: &str) -> Result<(), LocalError> {
        let Some(vol) = self.lookup(name) else {
            return Ok(());
        };
        let state = lock(&vol);
        if state.opts.is_none() && state.opts_error.is_none() {
            return Ok(());
        }
        let data = self.mountpoint(name);
        unmount_all(&data).map_err(|e| {
            failed(format!(
                "error while unmounting volume path '{}': {e}",
                data.display()
            ))
        })
    }

    /// Whether the volume's `_data` is a mount point now.
    pub fn is_mounted(&self, name: &str) -> bool {
        is_mount_point(&self.mountpoint(name))
    }

    /// Bytes used by the files under the volume's `_data` (moby `directory.Size`: sizes of
    /// everything but directories, hard links counted once, symlinks not followed), for
    /// prune's `SpaceReclaimed`. A volume that cannot be measured counts 0 (logged), as in
    /// dockerd.
    pub fn usage(&self, name: &str) -> u64 {
        match dir_size(&self.mountpoint(name), &|| false) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("could not determine size of volume {name}: {e}");
                0
            }
        }
    }

    /// What `docker system df` shows for a volume: its bytes (files counted once however
    /// many links they have; directories count nothing), or an error. Stops early, with an
    /// error, once `cancelled` says so.
    pub fn size(&self, name: &str, cancelled: &dyn Fn() -> bool) -> io::Result<u64> {
        dir_size(&self.mountpoint(name), cancelled)
    }

    // -- internals --

    /// The state of `name`: known, or loaded from disk if its directory is there.
    fn lookup(&self, name: &str) -> Option<Arc<Mutex<VolumeState>>> {
        let mut volumes = lock(&self.volumes);
        if let Some(v) = volumes.get(name) {
            return Some(v.clone());
        }
        let v = self.disk_volume(name)?;
        volumes.insert(name.to_string(), v.clone());
        Some(v)
    }

    fn disk_volume(&self, name: &str) -> Option<Arc<Mutex<VolumeState>>> {
        if validate_name(name).is_err() {
            return None;
        }
        let meta = fs::symlink_metadata(self.root.join(name)).ok()?;
        meta.is_dir().then(|| Arc::new(Mutex::new(self.load(name))))
    }

    /// Reads `<name>/opts.json`. An all-empty config counts as none (older dockerd wrote such).
    fn load(&self, name: &str) -> VolumeState {
        let path = self.root.join(name).join(OPTS_FILE);
        match fs::read(&path) {
            Err(_) => VolumeState::default(),
            Ok(bytes) => match serde_json::from_slice::<MountOptions>(&bytes) {
                Ok(opts) if opts == MountOptions::default() => VolumeState::default(),
                Ok(opts) => VolumeState {
                    opts: Some(opts),
                    opts_error: None,
                },
                Err(e) => {
                    let message =
                        format!("error while unmarshaling volume options for volume: {name}: {e}");
                    log::warn!("{message}");
                    VolumeState {
                        opts: None,
                        opts_error: Some(message),
                    }
                }
            },
        }
    }

    /// Writes `opts.json` in `dir` (or removes a stale one when there are no options).
    fn write_opts(&self, dir: &Path, opts: Option<&MountOptions>) -> Result<(), LocalError> {
        let path = dir.join(OPTS_FILE);
        let persist = |e: io::Error| {
            failed(format!(
                "error while persisting volume options: open {}: {}",
                path.display(),
                errno_text(&e)
            ))
        };
        match opts {
            Some(opts) => {
                let json = serde_json::to_vec(opts).map_err(failed)?;
                fsutil::write_atomic(&path, &json, 0o600).map_err(persist)
            }
            None => fsutil::remove_all(&path).map_err(persist),
        }
    }

    /// The first mount point at or below `dir`, if any.
    fn mounts_under(&self, dir: &Path) -> Option<PathBuf> {
        mount_points()
            .ok()?
            .into_iter()
            .find(|p| p.starts_with(dir))
    }

    /// Deletes a directory tree that is no volume any more, refusing to descend into mounts.
    fn remove_tree(&self, path: &Path) -> Result<(), LocalError> {
        if let Some(p) = self.mounts_under(path) {
            unmount_all(&p)?;
            if let Some(p) = self.mounts_under(path) {
                return Err(failed(format!(
                    "not removing {}: {} is mounted",
                    path.display(),
                    p.display()
                )));
            }
        }
        fsutil::remove_all(path).map_err(|e| {
            failed(format!(
                "error removing volume path '{}': {}",
                path.display(),
                errno_text(&e)
            ))
        })
    }
}

fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().mode(mode).create(path)?;
    // The umask may have taken bits off.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// moby `directory.Size`.
fn dir_size(root: &Path, cancelled: &dyn Fn() -> bool) -> io::Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    let mut first = true;
    while let Some(path) = stack.pop() {
        if cancelled() {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Something that vanished while we walked does not count; a missing root does.
            Err(e) if !first && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let is_root = first;
        first = false;
        if meta.is_dir() {
            match fs::read_dir(&path) {
                Ok(entries) => {
                    for entry in entries {
                        match entry {
                            Ok(e) => stack.push(e.path()),
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) if !is_root && e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        if meta.len() == 0 || !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.len();
    }
    Ok(total)
}

/// The built-in driver as the volume service sees every driver. Its own errors are dockerd's
/// texts; name and option errors are 400s.
#[async_trait::async_trait]
impl VolumeDriver for LocalDriver {
    fn name(&self) -> &str {
        DRIVER_NAME
    }

    fn validate(&self, name: &str, opts: &BTreeMap<String, String>) -> Result<(), DriverError> {
        validate_name(name).map_err(|e| e.for_method("create"))?;
        validate_options(opts).map_err(|e| e.for_method("create"))
    }

    /// An existing directory is taken over with the options given (as dockerd's local driver
    /// does), so a create is always [`Created::New`] for the service.
    async fn create(
        &self,
        name: &str,
        opts: Option<&BTreeMap<String, String>>,
    ) -> Result<Created, DriverError> {
        let opts = opts.cloned().unwrap_or_default();
        LocalDriver::create(self, name, &opts).map_err(|e| e.for_method("create"))?;
        Ok(Created::New)
    }

    async fn remove(&self, name: &str) -> Result<(), DriverError> {
        LocalDriver::remove(self, name).map_err(|e| e.for_method("remove"))
    }

    async fn get(&self, name: &str) -> Result<Option<DriverVolume>, DriverError> {
        Ok(self.exists(name).then(|| self.driver_volume(name)))
    }

    async fn list(&self) -> Result<Vec<DriverVolume>, DriverError> {
        Ok(LocalDriver::list(self)
            .iter()
            .map(|name| self.driver_volume(name))
            .collect())
    }

    async fn mount(&self, name: &str, id: &str) -> Result<String, DriverError> {
        let first = lock(&self.users).get(name).is_none_or(|ids| ids.is_empty());
        let path = if first {
            LocalDriver::mount(self, name).map_err(|e| e.for_method("mount"))?
        } else {
            self.mountpoint(name)
        };
        lock(&self.users)
            .entry(name.to_string())
            .or_default()
            .insert(id.to_string());
        Ok(path.display().to_string())
    }

    async fn unmount(&self, name: &str, id: &str) -> Result<(), DriverError> {
        let last = {
            let mut users = lock(&self.users);
            let ids = users.entry(name.to_string()).or_default();
            ids.remove(id);
            let last = ids.is_empty();
            if last {
                users.remove(name);
            }
            last
        };
        if last {
            LocalDriver::unmount(self, name).map_err(|e| e.for_method("unmount"))?;
        }
        Ok(())
    }

    async fn scope(&self) -> String {
        DRIVER_NAME.to_string()
    }

    fn known_mountpoint(&self, name: &str) -> Option<String> {
        Some(self.mountpoint(name).display().to_string())
    }

    fn usage(&self, name: &str) -> Option<u64> {
        Some(LocalDriver::usage(self, name))
    }
}

impl LocalDriver {
    fn driver_volume(&self, name: &str) -> DriverVolume {
        let path = self.mountpoint(name).display().to_string();
        DriverVolume {
            name: name.to_string(),
            mountpoint: path.clone(),
            host_mountpoint: path,
            created_at: None,
            status: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::string_map as opts;

    #[test]
    fn from_driver_opts_keeps_dockerds_fields() {
        let o = MountOptions::from_driver_opts(&opts(&[
            ("type", "tmpfs"),
            ("device", "tmpfs"),
            ("o", "size=1m,uid=1000"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"MountType":"tmpfs","MountOpts":"size=1m,uid=1000","MountDevice":"tmpfs","Quota":{"Size":0}}"#
        );
        assert!(o.needs_mount());
        let size_only = MountOptions::from_driver_opts(&opts(&[("size", "0")]))
            .unwrap()
            .unwrap();
        assert!(!size_only.needs_mount());
        assert_eq!(MountOptions::from_driver_opts(&opts(&[])).unwrap(), None);
    }
}
