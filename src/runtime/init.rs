//! `berth plugin-init`: the fresh, single-threaded process that turns a [`PluginSpec`] into a
//! running plugin. OWNER: helper "executor".
//!
//! berth spawns it (see [`super::linux`]) already inside new mount/UTS/IPC(/net) namespaces
//! and, when the plugin has a private PID namespace, with `CLONE_NEWPID` pending, so the first
//! child it forks is PID 1 of that namespace. The process that berth started then stays as a
//! tiny shim: it forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to the plugin, waits
//! for it and exits the way it did. The plugin side runs [`prepare`] (the whole setup, every
//! kernel call through [`Syscall`]) and `execve`s the entrypoint.
//!
//! Setup errors go back to berth over a pipe (the `report` fd, close-on-exec): berth reads `S`
//! when the init process is alive, then either `E<message>` or end-of-file, which means the
//! entrypoint was exec'd.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use caps::{CapSet, Capability, CapsHashSet};
use nix::libc;
use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::goerr::io_error_text;
use crate::runtime::spec::{DeviceNode, DeviceRule, MountSpec, PluginSpec};
use crate::runtime::syscall::{Create, FileKind, LinuxSyscall, Syscall};

/// What berth hands to `plugin-init`: the spec plus the executor's host-dependent choices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitRequest {
    pub spec: PluginSpec,
    /// The plugin's cgroup in the v1 `devices` hierarchy; `None` when the host has none (device
    /// rules are then not enforced: cgroup v2 needs BPF device programs, not implemented).
    pub devices_cgroup: Option<PathBuf>,
    /// The host's `/sys/fs/cgroup` is a cgroup2 mount (no v1 hierarchies).
    pub cgroup2_only: bool,
}

/// The entrypoint to exec once the setup is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub path: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
}

/// A failed setup step.
#[derive(Debug)]
pub struct SetupError {
    pub step: String,
    pub error: io::Error,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, io_error_text(&self.error))
    }
}

impl std::error::Error for SetupError {}

trait Step<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, SetupError>;
}

impl<T> Step<T> for io::Result<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, SetupError> {
        self.map_err(|error| SetupError {
            step: what(),
            error,
        })
    }
}

fn fail<T>(step: String, message: impl Into<String>) -> Result<T, SetupError> {
    Err(SetupError {
        step,
        error: io::Error::other(message.into()),
    })
}

/// Parsed OCI mount options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Propagation changes to apply after mounting, in order.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options (`mode=755`, `size=65536k`, ...), comma-joined.
    pub data: Vec<String>,
    pub bind: bool,
    pub recursive: bool,
}

impl MountOptions {
    pub fn parse(options: &[String]) -> MountOptions {
        let mut o = MountOptions {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
            bind: false,
            recursive: false,
        };
        for option in options {
            let (set, flag) = match option.as_str() {
                "defaults" => continue,
                "ro" => (true, MsFlags::MS_RDONLY),
                "rw" => (false, MsFlags::MS_RDONLY),
                "nosuid" => (true, MsFlags::MS_NOSUID),
                "suid" => (false, MsFlags::MS_NOSUID),
                "nodev" => (true, MsFlags::MS_NODEV),
                "dev" => (false, MsFlags::MS_NODEV),
                "noexec" => (true, MsFlags::MS_NOEXEC),
                "exec" => (false, MsFlags::MS_NOEXEC),
                "sync" => (true, MsFlags::MS_SYNCHRONOUS),
                "async" => (false, MsFlags::MS_SYNCHRONOUS),
                "dirsync" => (true, MsFlags::MS_DIRSYNC),
                "remount" => (true, MsFlags::MS_REMOUNT),
                "mand" => (true, MsFlags::MS_MANDLOCK),
                "nomand" => (false, MsFlags::MS_MANDLOCK),
                "noatime" => (true, MsFlags::MS_NOATIME),
                "atime" => (false, MsFlags::MS_NOATIME),
                "nodiratime" => (true, MsFlags::MS_NODIRATIME),
                "diratime" => (false, MsFlags::MS_NODIRATIME),
                "relatime" => (true, MsFlags::MS_RELATIME),
                "norelatime" => (false, MsFlags::MS_RELATIME),
                "strictatime" => (true, MsFlags::MS_STRICTATIME),
                "nostrictatime" => (false, MsFlags::MS_STRICTATIME),
                "bind" => {
                    o.bind = true;
                    continue;
                }
                "rbind" => {
                    o.bind = true;
                    o.recursive = true;
                    continue;
                }
                p @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
                | "unbindable" | "runbindable") => {
                    let mut flag = match p.trim_start_matches('r') {
                        "private" => MsFlags::MS_PRIVATE,
                        "shared" => MsFlags::MS_SHARED,
                        "slave" => MsFlags::MS_SLAVE,
                        _ => MsFlags::MS_UNBINDABLE,
                    };
                    if p.starts_with('r') {
                        flag |= MsFlags::MS_REC;
                    }
                    o.propagation.push(flag);
                    continue;
                }
                other => {
                    o.data.push(other.to_string());
                    continue;
                }
            };
            if set {
                o.flags |= flag;
            } else {
                o.flags &= !flag;
            }
        }
        o
    }

    fn shared(&self) -> bool {
        self.propagation
            .iter()
            .any(|p| p.contains(MsFlags::MS_SHARED))
    }

    fn data(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

fn is_bind(m: &MountSpec) -> bool {
    m.kind == "bind" || MountOptions::parse(&m.options).bind
}

/// `a`, `c 1:3 rwm`, `c *:* m`: a rule as the v1 devices controller reads it.
pub fn device_rule_line(rule: &DeviceRule) -> String {
    if rule.kind == 'a' && rule.major.is_none() && rule.minor.is_none() {
        return "a".into();
    }
    let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "*".into());
    format!(
        "{} {}:{} {}",
        rule.kind,
        n(rule.major),
        n(rule.minor),
        rule.access
    )
}

/// Nodes every plugin gets in its `/dev` (runc's defaults).
pub fn default_devices() -> Vec<DeviceNode> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(path, major, minor)| DeviceNode {
        path: path.into(),
        kind: 'c',
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// Docker's init layer: created in the rootfs where missing (moby `initlayer.Setup`).
const INIT_LAYER: [(&str, Create); 9] = [
    ("/dev/pts", Create::Dir),
    ("/dev/shm", Create::Dir),
    ("/proc", Create::Dir),
    ("/sys", Create::Dir),
    ("/.dockerenv", Create::File),
    ("/etc/resolv.conf", Create::File),
    ("/etc/hosts", Create::File),
    ("/etc/hostname", Create::File),
    ("/dev/console", Create::File),
];

const DEV_SYMLINKS: [(&str, &str); 4] = [
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
];

fn parent_and_name(path: &str) -> Option<(&str, &str)> {
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/')?;
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    Some((if parent.is_empty() { "/" } else { parent }, name))
}

/// The whole setup of a plugin, in order, ending just before `execve`:
///
/// 1. umask 0 (modes below are exact); `lo` up in a private network namespace;
/// 2. the devices cgroup: rules written, the process moved in (or a warning on cgroup v2);
/// 3. shared bind mounts (`rshared`: the propagated mount, the socket dir) cloned with
///    `open_tree` *before* the next step, so they stay peers of the host mount;
/// 4. `/` made `rslave` (or `rprivate`) recursively: nothing mounted from here on reaches the host;
/// 5. the rootfs bound onto itself; the init layer and the working directory created in it;
/// 6. the spec's mounts in order (targets resolved inside the rootfs, symlink-safe);
/// 7. device nodes, `/dev/ptmx`, the `/dev/fd`... symlinks (unless `/dev` is a bind mount);
/// 8. `pivot_root(".", ".")`; back into the old root through an fd opened before (a lookup
///    of `.` would find the new root), the old root made rslave (so detaching it cannot
///    propagate unmounts to the host) and detached; `/` made rshared when the spec wants it;
/// 9. masked paths (`/dev/null` over files, a read-only tmpfs over directories), read-only paths;
/// 10. hostname; chdir to the working directory; the entrypoint looked up on the spec's `PATH`;
/// 11. umask 022; capabilities: bounding set limited to the spec's, ambient cleared,
///     inheritable/effective/permitted set.
pub fn prepare(sys: &dyn Syscall, req: &InitRequest) -> Result<Execution, SetupError> {
    let spec = &req.spec;
    let root = spec.paths.rootfs.as_path();
    if spec.args.is_empty() {
        return fail(
            "starting plugin".into(),
            "no entrypoint: Config.Entrypoint and Settings.Args are empty",
        );
    }
    if !spec.namespaces.mount {
        return fail(
            "starting plugin".into(),
            "a private mount namespace is required",
        );
    }
    sys.umask(0);

    // 1. network
    if spec.namespaces.network {
        sys.loopback_up()
            .step(|| "setting up the loopback interface".into())?;
    }

    // 2. devices cgroup
    match &req.devices_cgroup {
        Some(dir) => {
            sys.mkdir_all(dir, 0o755)
                .step(|| format!("creating cgroup {}", dir.display()))?;
            for rule in &spec.device_rules {
                let file = if rule.allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                let line = device_rule_line(rule);
                sys.write_file(&dir.join(file), &line)
                    .step(|| format!("writing {line:?} to {}", dir.join(file).display()))?;
            }
            sys.write_file(&dir.join("cgroup.procs"), "0")
                .step(|| format!("joining cgroup {}", dir.display()))?;
        }
        None if req.cgroup2_only => sys.warn(
            "device rules are not enforced: the host has only cgroup v2, whose device \
             control needs BPF programs (not implemented)",
        ),
        None => sys.warn("device rules are not enforced: no v1 devices cgroup on this host"),
    }

    // 3. clones of shared binds, before propagation to the host is cut
    let mut clones: Vec<Option<RawFd>> = Vec::with_capacity(spec.mounts.len());
    for m in &spec.mounts {
        let options = MountOptions::parse(&m.options);
        let clone = if is_bind(m) && options.shared() {
            Some(
                sys.clone_mount(Path::new(&m.source), options.recursive)
                    .step(|| format!("cloning mount {} for {}", m.source, m.destination))?,
            )
        } else {
            None
        };
        clones.push(clone);
    }

    // 4. root propagation
    let root_propagation = match spec.rootfs_propagation.as_str() {
        "rprivate" | "private" => MsFlags::MS_PRIVATE,
        _ => MsFlags::MS_SLAVE,
    };
    sys.mount(
        None,
        Path::new("/"),
        None,
        root_propagation | MsFlags::MS_REC,
        None,
    )
    .step(|| "making / rslave".into())?;

    // 5. rootfs, init layer, working directory
    sys.mount(
        Some(root),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .step(|| format!("binding rootfs {}", root.display()))?;
    for (path, create) in INIT_LAYER {
        sys.resolve_in_root(root, path, create)
            .step(|| format!("init layer: creating {path}"))?;
    }
    let (etc, _) = sys
        .resolve_in_root(root, "/etc", Create::Dir)
        .step(|| "init layer: creating /etc".into())?;
    sys.symlink_if_missing("/proc/mounts", &etc.join("mtab"))
        .step(|| "init layer: creating /etc/mtab".into())?;
    sys.resolve_in_root(root, &spec.cwd, Create::Dir)
        .step(|| format!("creating working directory {}", spec.cwd))?;

    // 6. mounts
    for (m, clone) in spec.mounts.iter().zip(clones) {
        mount_one(sys, req, m, clone)?;
    }

    // 7. /dev
    let dev_is_bound = spec
        .mounts
        .iter()
        .any(|m| m.destination.trim_end_matches('/') == "/dev" && is_bind(m));
    if !dev_is_bound {
        for device in default_devices().iter().chain(&spec.devices) {
            create_device(sys, root, device)?;
        }
        let (dev, _) = sys
            .resolve_in_root(root, "/dev", Create::Dir)
            .step(|| "creating /dev".into())?;
        sys.replace_with_symlink("pts/ptmx", &dev.join("ptmx"))
            .step(|| "creating /dev/ptmx".into())?;
        for (target, link) in DEV_SYMLINKS {
            let name = link.trim_start_matches("/dev/");
            sys.symlink_if_missing(target, &dev.join(name))
                .step(|| format!("creating {link}"))?;
        }
    }

    // 8. pivot_root: afterwards the old root sits on top of the new one; the fd taken before
    // is the way back into it (a path lookup of "." or "/" would land on the new root).
    let old_root = sys
        .open_dir(Path::new("/"))
        .step(|| "opening the old root".into())?;
    let pivoted = sys
        .chdir(root)
        .step(|| format!("chdir {}", root.display()))
        .and_then(|()| {
            sys.pivot_root(Path::new("."), Path::new("."))
                .step(|| "pivot_root".into())
        })
        .and_then(|()| sys.fchdir(old_root).step(|| "entering the old root".into()));
    sys.close(old_root);
    pivoted?;
    sys.mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )
    .step(|| "making the old root rslave".into())?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH)
        .step(|| "detaching the old root".into())?;
    sys.chdir(Path::new("/")).step(|| "chdir /".into())?;
    if spec.rootfs_propagation.trim_start_matches('r') == "shared" {
        sys.mount(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None,
        )
        .step(|| "making / rshared".into())?;
    }

    // 9. masked and read-only paths
    let new_root = Path::new("/");
    for path in &spec.masked_paths {
        let (target, kind) = match sys.resolve_in_root(new_root, path, Create::No) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).step(|| format!("masking {path}")),
        };
        match kind {
            FileKind::Dir => sys.mount(
                Some(Path::new("tmpfs")),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            ),
            FileKind::File => sys.mount(
                Some(Path::new("/dev/null")),
                &target,
                None,
                MsFlags::MS_BIND,
                None,
            ),
        }
        .step(|| format!("masking {path}"))?;
    }
    for path in &spec.readonly_paths {
        let (target, _) = match sys.resolve_in_root(new_root, path, Create::No) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).step(|| format!("making {path} read-only")),
        };
        sys.mount(
            Some(&target),
            &target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .step(|| format!("making {path} read-only"))?;
        let keep = sys
            .mount_flags(&target)
            .step(|| format!("making {path} read-only"))?;
        sys.mount(
            None,
            &target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep,
            None,
        )
        .step(|| format!("making {path} read-only"))?;
    }

    // 10. hostname, cwd, entrypoint
    if !spec.hostname.is_empty() {
        if spec.namespaces.uts {
            sys.sethostname(&spec.hostname)
                .step(|| format!("setting hostname {}", spec.hostname))?;
        } else {
            sys.warn("hostname ignored: the plugin shares the host's UTS namespace");
        }
    }
    sys.chdir(Path::new(&spec.cwd))
        .step(|| format!("chdir to working directory {}", spec.cwd))?;
    let path = find_executable(sys, &spec.args[0], &spec.env)?;

    // 11. capabilities
    sys.umask(0o022);
    let (capabilities, inheritable) = capability_sets(sys, spec);
    sys.limit_bounding_set(&capabilities)
        .step(|| "setting the capability bounding set".into())?;
    sys.clear_ambient_caps()
        .step(|| "clearing ambient capabilities".into())?;
    sys.set_caps(CapSet::Inheritable, &inheritable)
        .step(|| "setting inheritable capabilities".into())?;
    sys.set_caps(CapSet::Effective, &capabilities)
        .step(|| "setting effective capabilities".into())?;
    sys.set_caps(CapSet::Permitted, &capabilities)
        .step(|| "setting permitted capabilities".into())?;

    Ok(Execution {
        path,
        args: spec.args.clone(),
        env: spec.env.clone(),
    })
}

fn capability_sets(sys: &dyn Syscall, spec: &PluginSpec) -> (CapsHashSet, CapsHashSet) {
    let parse = |names: &[String]| -> CapsHashSet {
        let mut set = CapsHashSet::new();
        for name in names {
            match name.parse::<Capability>() {
                Ok(cap) => {
                    set.insert(cap);
                }
                Err(_) => sys.warn(&format!("unknown capability {name} ignored")),
            }
        }
        set
    };
    let capabilities = parse(&spec.capabilities);
    // inheritable ⊆ bounding, or capset refuses it
    let inheritable = parse(&spec.inheritable_capabilities)
        .intersection(&capabilities)
        .copied()
        .collect();
    (capabilities, inheritable)
}

fn mount_one(
    sys: &dyn Syscall,
    req: &InitRequest,
    m: &MountSpec,
    clone: Option<RawFd>,
) -> Result<(), SetupError> {
    let root = req.spec.paths.rootfs.as_path();
    let options = MountOptions::parse(&m.options);
    let bind = m.kind == "bind" || options.bind;
    let what = || format!("mounting {} on {}", m.source, m.destination);

    if m.kind == "cgroup" && !bind {
        let (target, _) = sys
            .resolve_in_root(root, &m.destination, Create::Dir)
            .step(what)?;
        // No cgroup namespace (as in moby's plugin spec): on cgroup v2 the read-only hierarchy;
        // on v1/hybrid hosts an empty read-only tmpfs rather than the host's hierarchies.
        return if req.cgroup2_only {
            sys.mount(
                Some(Path::new("cgroup2")),
                &target,
                Some("cgroup2"),
                options.flags,
                None,
            )
        } else {
            sys.mount(
                Some(Path::new("tmpfs")),
                &target,
                Some("tmpfs"),
                options.flags,
                Some("mode=755"),
            )
        }
        .step(what);
    }

    let create = if bind {
        match sys.stat_kind(Path::new(&m.source)) {
            Ok(FileKind::Dir) => Create::Dir,
            Ok(FileKind::File) => Create::File,
            Err(e) => {
                return Err(e).step(|| format!("mount source {} for {}", m.source, m.destination))
            }
        }
    } else {
        Create::Dir
    };
    let (target, _) = sys
        .resolve_in_root(root, &m.destination, create)
        .step(what)?;
    if let Some(fd) = clone {
        sys.attach_mount(fd, &target).step(what)?;
    } else if bind {
        let mut flags = MsFlags::MS_BIND;
        if options.recursive {
            flags |= MsFlags::MS_REC;
        }
        sys.mount(Some(Path::new(&m.source)), &target, None, flags, None)
            .step(what)?;
    } else {
        let fstype = if m.kind.is_empty() { "none" } else { &m.kind };
        sys.mount(
            Some(Path::new(&m.source)),
            &target,
            Some(fstype),
            options.flags,
            options.data().as_deref(),
        )
        .step(what)?;
    }
    if bind && !options.flags.is_empty() {
        sys.mount(
            None,
            &target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | options.flags,
            None,
        )
        .step(what)?;
    }
    for propagation in &options.propagation {
        sys.mount(None, &target, None, *propagation, None)
            .step(what)?;
    }
    Ok(())
}

fn create_device(sys: &dyn Syscall, root: &Path, device: &DeviceNode) -> Result<(), SetupError> {
    let what = || format!("creating device {}", device.path);
    let Some((parent, name)) = parent_and_name(&device.path) else {
        return fail(what(), "not a file path");
    };
    let (dir, _) = sys.resolve_in_root(root, parent, Create::Dir).step(what)?;
    let node = dir.join(name);
    match sys.mknod(
        &node,
        device.kind,
        device.mode & 0o7777,
        device.major,
        device.minor,
    ) {
        Ok(()) => {}
        // something (a mount or an earlier node) is there already: leave it
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(()),
        Err(e) => return Err(e).step(what),
    }
    sys.chown(&node, device.uid, device.gid).step(what)
}

/// Go's `exec.LookPath` as runc uses it: a name with a `/` is used as is, anything else is
/// searched on the spec's `PATH` (the last `PATH=` entry wins, as the environment would).
fn find_executable(sys: &dyn Syscall, arg0: &str, env: &[String]) -> Result<PathBuf, SetupError> {
    if arg0.contains('/') {
        let path = PathBuf::from(arg0);
        return match sys.check_executable(&path) {
            Ok(()) => Ok(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fail(
                format!("exec: {arg0:?}"),
                format!("stat {arg0}: {}", io_error_text(&e)),
            ),
            Err(e) => Err(e).step(|| format!("exec: {arg0:?}")),
        };
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("");
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(arg0);
        if sys.check_executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    fail(
        format!("exec: {arg0:?}"),
        "executable file not found in $PATH",
    )
}

// ---------------------------------------------------------------------------------------------
// The process side of plugin-init.

/// The write end of the report pipe.
struct Report(Option<RawFd>);

impl Report {
    fn write(&self, bytes: &[u8]) {
        if let Some(fd) = self.0 {
            let mut rest = bytes;
            while !rest.is_empty() {
                // SAFETY: writing a valid buffer to an fd we own.
                let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
                if n < 0 {
                    if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return;
                }
                rest = &rest[n as usize..];
            }
        }
    }

    fn fail(&self, message: &str) -> ! {
        eprintln!("berth plugin-init: {message}");
        let mut bytes = b"E".to_vec();
        bytes.extend_from_slice(message.as_bytes());
        self.write(&bytes);
        std::process::exit(1)
    }

    fn close(&mut self) {
        if let Some(fd) = self.0.take() {
            // SAFETY: closing an fd we own, once.
            unsafe { libc::close(fd) };
        }
    }
}

/// Marks every fd above stderr close-on-exec, so nothing berth leaked reaches the plugin.
fn cloexec_from_3() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes fd flags.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if rc < 0 {
        for fd in 3..4096 {
            // SAFETY: F_SETFD on a possibly closed fd just fails.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(signal: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, signal) };
    }
}

const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn signal_mask(how: libc::c_int) {
    // SAFETY: sigset manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(how, &set, std::ptr::null_mut());
    }
}

fn set_pdeathsig() {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
}

/// `berth plugin-init <request.json> <report-fd>`.
pub fn run(args: &[OsString]) -> ! {
    let usage = || -> ! {
        eprintln!("usage: berth plugin-init REQUEST-FILE REPORT-FD (internal to the daemon)");
        std::process::exit(2)
    };
    let [request_path, fd] = args else { usage() };
    let Some(fd) = fd.to_str().and_then(|s| s.parse::<RawFd>().ok()) else {
        usage()
    };
    cloexec_from_3();
    let mut report = Report(Some(fd));
    report.write(b"S");

    let request: InitRequest = match std::fs::read(request_path)
        .map_err(|e| io_error_text(&e))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => report.fail(&format!(
            "reading {}: {e}",
            Path::new(request_path).display()
        )),
    };

    if !request.spec.namespaces.pid {
        setup_and_exec(&request, &report);
    }

    // A private PID namespace: berth unshared it before exec, so our first child is its PID 1.
    signal_mask(libc::SIG_BLOCK);
    // The shim holds the write end of this pipe for as long as it lives: the child (whose
    // parent is outside its PID namespace, so getppid() says 0) sees it hang up if the shim
    // died before PDEATHSIG was armed.
    let (lifeline_r, lifeline_w) =
        match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from) {
            Ok(fds) => fds,
            Err(e) => report.fail(&format!("pipe: {}", io_error_text(&e))),
        };
    // SAFETY: this process is single-threaded (plugin-init runs before anything else in main).
    match unsafe { libc::fork() } {
        -1 => report.fail(&format!(
            "fork: {}",
            io_error_text(&io::Error::last_os_error())
        )),
        0 => {
            set_pdeathsig();
            drop(lifeline_w);
            let mut pfd = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&lifeline_r),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, no wait.
            if unsafe { libc::poll(&mut pfd, 1, 0) } != 0 {
                std::process::exit(1);
            }
            drop(lifeline_r);
            signal_mask(libc::SIG_UNBLOCK);
            setup_and_exec(&request, &report)
        }
        child => {
            drop(lifeline_r);
            // kept open (never exec'd) until the shim exits
            std::mem::forget(lifeline_w);
            CHILD.store(child, Ordering::SeqCst);
            for s in FORWARDED {
                // SAFETY: forward_signal only calls kill.
                unsafe { libc::signal(s, forward_signal as *const () as libc::sighandler_t) };
            }
            signal_mask(libc::SIG_UNBLOCK);
            report.close();
            shim_wait(child)
        }
    }
}

/// Waits for the plugin and exits as it did (a signal death is re-raised on the shim).
fn shim_wait(child: libc::pid_t) -> ! {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid status pointer.
        let rc = unsafe { libc::waitpid(child, &mut status, 0) };
        if rc == child {
            break;
        }
        if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            std::process::exit(1);
        }
    }
    if libc::WIFEXITED(status) {
        std::process::exit(libc::WEXITSTATUS(status));
    }
    let signal = libc::WTERMSIG(status);
    // SAFETY: restoring the default disposition and raising it on ourselves.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    std::process::exit(128 + signal)
}

fn setup_and_exec(request: &InitRequest, report: &Report) -> ! {
    let sys = LinuxSyscall;
    let execution = match prepare(&sys, request) {
        Ok(e) => e,
        Err(e) => report.fail(&e.to_string()),
    };
    if let Err(e) = sys.reset_signals() {
        report.fail(&format!("resetting signals: {}", io_error_text(&e)));
    }
    let error = sys.execve(&execution.path, &execution.args, &execution.env);
    report.fail(&format!(
        "exec {}: {}",
        execution.path.display(),
        io_error_text(&error)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::{self, Namespaces, PluginPaths};
    use crate::runtime::syscall::RecordingSyscall;

    const ROOT: &str = "/p/rootfs";

    fn base_spec() -> PluginSpec {
        let mut mounts = spec::default_mounts();
        mounts.push(MountSpec {
            source: "/run/p/sock".into(),
            destination: "/run/docker/plugins".into(),
            kind: "bind".into(),
            options: vec!["rbind".into(), "rshared".into()],
        });
        let mut device_rules = spec::default_device_rules();
        device_rules.extend(spec::runtime_device_rules());
        PluginSpec {
            id: "abc".into(),
            paths: PluginPaths {
                rootfs: ROOT.into(),
                propagated_mount: "/p/propagated-mount".into(),
                socket_dir: "/run/p/sock".into(),
            },
            args: vec!["plugin".into(), "--flag".into()],
            env: vec![spec::DEFAULT_PATH_ENV.into(), "A=1".into()],
            cwd: "/".into(),
            hostname: String::new(),
            namespaces: Namespaces {
                network: true,
                pid: true,
                ipc: true,
                uts: true,
                mount: true,
            },
            mounts,
            rootfs_propagation: "rslave".into(),
            capabilities: spec::DEFAULT_CAPABILITIES.map(String::from).to_vec(),
            inheritable_capabilities: vec![],
            devices: vec![],
            device_rules,
            masked_paths: vec![
                "/proc/kcore".into(),
                "/sys/firmware".into(),
                "/proc/nope".into(),
            ],
            readonly_paths: vec!["/proc/sys".into()],
        }
    }

    fn request(spec: PluginSpec) -> InitRequest {
        InitRequest {
            spec,
            devices_cgroup: Some("/cg/devices/berth/abc".into()),
            cgroup2_only: false,
        }
    }

    fn recorder() -> RecordingSyscall {
        let mut sys = RecordingSyscall::new();
        sys.existing = Some(
            [
                "/proc/kcore",
                "/sys/firmware",
                "/proc/sys",
                "/usr/bin/plugin",
                "/run/p/sock",
                "/p/propagated-mount",
                "/dev/fuse",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/var/lib/state",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
        );
        sys.dirs = ["/sys/firmware", "/proc/sys"]
            .iter()
            .map(PathBuf::from)
            .collect();
        sys.files = ["/etc/hosts", "/etc/resolv.conf", "/dev/fuse"]
            .iter()
            .map(PathBuf::from)
            .collect();
        sys
    }

    const DEFAULT_CAPS: &str = "CAP_CHOWN,CAP_DAC_OVERRIDE,CAP_FOWNER,CAP_FSETID,CAP_KILL,\
        CAP_SETGID,CAP_SETUID,CAP_SETPCAP,CAP_NET_BIND_SERVICE,CAP_NET_RAW,CAP_SYS_CHROOT,\
        CAP_MKNOD,CAP_AUDIT_WRITE,CAP_SETFCAP";

    /// The full sequence for a privilege-free plugin with a private network.
    #[test]
    fn privilege_free_sequence() {
        let sys = recorder();
        let exe = prepare(&sys, &request(base_spec())).unwrap();
        assert_eq!(
            exe,
            Execution {
                path: "/usr/bin/plugin".into(),
                args: vec!["plugin".into(), "--flag".into()],
                env: vec![spec::DEFAULT_PATH_ENV.into(), "A=1".into()],
            }
        );
        let want = vec![
            "umask 0000".to_string(),
            "loopback up".into(),
            "mkdir -p /cg/devices/berth/abc 0755".into(),
            "write /cg/devices/berth/abc/devices.deny \"a\"".into(),
            "write /cg/devices/berth/abc/devices.allow \"c 1:5 rwm\"".into(),
            "write /cg/devices/berth/abc/devices.allow \"c 1:3 rwm\"".into(),
            "write /cg/devices/berth/abc/devices.allow \"c 1:9 rwm\"".into(),
            "write /cg/devices/berth/abc/devices.allow \"c 1:8 rwm\"".into(),
            "write /cg/devices/berth/abc/devices.allow \"c 5:0 rwm\"".into(),
            "write /cg/devices/berth/abc/devices.allow \"c 5:1 rwm\"".into(),
            "write /cg/devices/berth/abc/devices.deny \"c 10:229 rwm\"".into(),
            "write /cg/devices/berth/abc/devices.allow \"c *:* m\"".into(),
            "write /cg/devices/berth/abc/devices.allow \"b *:* m\"".into(),
            "write /cg/devices/berth/abc/devices.allow \"c 1:7 rwm\"".into(),
            "write /cg/devices/berth/abc/devices.allow \"c 136:* rwm\"".into(),
            "write /cg/devices/berth/abc/devices.allow \"c 5:2 rwm\"".into(),
            "write /cg/devices/berth/abc/cgroup.procs \"0\"".into(),
            "clone_mount /run/p/sock recursive = fd 101".into(),
            "mount - -> / flags=MS_REC|MS_SLAVE".into(),
            "mount /p/rootfs -> /p/rootfs flags=MS_BIND|MS_REC".into(),
            "ensure dir /p/rootfs/dev/pts".into(),
            "ensure dir /p/rootfs/dev/shm".into(),
            "ensure dir /p/rootfs/proc".into(),
            "ensure dir /p/rootfs/sys".into(),
            "ensure file /p/rootfs/.dockerenv".into(),
            "ensure file /p/rootfs/etc/resolv.conf".into(),
            "ensure file /p/rootfs/etc/hosts".into(),
            "ensure file /p/rootfs/etc/hostname".into(),
            "ensure file /p/rootfs/dev/console".into(),
            "ensure dir /p/rootfs/etc".into(),
            "symlink /p/rootfs/etc/mtab -> /proc/mounts (if missing)".into(),
            "ensure dir /p/rootfs".into(),
            "ensure dir /p/rootfs/proc".into(),
            "mount proc -> /p/rootfs/proc type=proc flags=MS_NOSUID|MS_NODEV|MS_NOEXEC".into(),
            "ensure dir /p/rootfs/dev".into(),
            "mount tmpfs -> /p/rootfs/dev type=tmpfs flags=MS_NOSUID|MS_STRICTATIME data=mode=755,size=65536k".into(),
            "ensure dir /p/rootfs/dev/pts".into(),
            "mount devpts -> /p/rootfs/dev/pts type=devpts flags=MS_NOSUID|MS_NOEXEC data=newinstance,ptmxmode=0666,mode=0620,gid=5".into(),
            "ensure dir /p/rootfs/sys".into(),
            "mount sysfs -> /p/rootfs/sys type=sysfs flags=MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC".into(),
            "ensure dir /p/rootfs/sys/fs/cgroup".into(),
            "mount tmpfs -> /p/rootfs/sys/fs/cgroup type=tmpfs flags=MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC data=mode=755".into(),
            "ensure dir /p/rootfs/dev/mqueue".into(),
            "mount mqueue -> /p/rootfs/dev/mqueue type=mqueue flags=MS_NOSUID|MS_NODEV|MS_NOEXEC".into(),
            "ensure dir /p/rootfs/dev/shm".into(),
            "mount shm -> /p/rootfs/dev/shm type=tmpfs flags=MS_NOSUID|MS_NODEV|MS_NOEXEC data=mode=1777".into(),
            "ensure dir /p/rootfs/run/docker/plugins".into(),
            "attach_mount fd 101 -> /p/rootfs/run/docker/plugins".into(),
            "mount - -> /p/rootfs/run/docker/plugins flags=MS_REC|MS_SHARED".into(),
            "ensure dir /p/rootfs/dev".into(),
            "mknod /p/rootfs/dev/null c 1:3 0666".into(),
            "chown /p/rootfs/dev/null 0:0".into(),
            "ensure dir /p/rootfs/dev".into(),
            "mknod /p/rootfs/dev/zero c 1:5 0666".into(),
            "chown /p/rootfs/dev/zero 0:0".into(),
            "ensure dir /p/rootfs/dev".into(),
            "mknod /p/rootfs/dev/full c 1:7 0666".into(),
            "chown /p/rootfs/dev/full 0:0".into(),
            "ensure dir /p/rootfs/dev".into(),
            "mknod /p/rootfs/dev/random c 1:8 0666".into(),
            "chown /p/rootfs/dev/random 0:0".into(),
            "ensure dir /p/rootfs/dev".into(),
            "mknod /p/rootfs/dev/urandom c 1:9 0666".into(),
            "chown /p/rootfs/dev/urandom 0:0".into(),
            "ensure dir /p/rootfs/dev".into(),
            "mknod /p/rootfs/dev/tty c 5:0 0666".into(),
            "chown /p/rootfs/dev/tty 0:0".into(),
            "ensure dir /p/rootfs/dev".into(),
            "symlink /p/rootfs/dev/ptmx -> pts/ptmx".into(),
            "symlink /p/rootfs/dev/fd -> /proc/self/fd (if missing)".into(),
            "symlink /p/rootfs/dev/stdin -> /proc/self/fd/0 (if missing)".into(),
            "symlink /p/rootfs/dev/stdout -> /proc/self/fd/1 (if missing)".into(),
            "symlink /p/rootfs/dev/stderr -> /proc/self/fd/2 (if missing)".into(),
            "open / = fd 102".into(),
            "chdir /p/rootfs".into(),
            "pivot_root . .".into(),
            "fchdir fd 102".into(),
            "close fd 102".into(),
            "mount - -> . flags=MS_REC|MS_SLAVE".into(),
            "umount2 . MntFlags(MNT_DETACH)".into(),
            "chdir /".into(),
            "mount /dev/null -> /proc/kcore flags=MS_BIND".into(),
            "mount tmpfs -> /sys/firmware type=tmpfs flags=MS_RDONLY".into(),
            "mount /proc/sys -> /proc/sys flags=MS_BIND|MS_REC".into(),
            "mount - -> /proc/sys flags=MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT|MS_BIND".into(),
            "chdir /".into(),
            "umask 0022".into(),
            format!("capbset {DEFAULT_CAPS}"),
            "capamb clear".into(),
            "capset inheritable ".into(),
            format!("capset effective {DEFAULT_CAPS}"),
            format!("capset permitted {DEFAULT_CAPS}"),
        ];
        let got = sys.calls();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "call {i}");
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
    }

    fn calls_matching(sys: &RecordingSyscall, needle: &str) -> Vec<String> {
        sys.calls()
            .into_iter()
            .filter(|c| c.contains(needle))
            .collect()
    }

    /// rclone-like: host network, CAP_SYS_ADMIN, /dev/fuse, a propagated mount, config mounts,
    /// network files.
    #[test]
    fn host_network_propagated_mount_and_devices() {
        let mut spec = base_spec();
        spec.namespaces.network = false;
        spec.rootfs_propagation = "rshared".into();
        spec.cwd = "/data".into();
        let socket = spec.mounts.pop().unwrap();
        spec.mounts.push(MountSpec {
            source: "/p/propagated-mount".into(),
            destination: "/data".into(),
            kind: "bind".into(),
            options: vec!["rbind".into(), "rw".into(), "rshared".into()],
        });
        spec.mounts.push(MountSpec {
            source: "/var/lib/state".into(),
            destination: "/data/state".into(),
            kind: "bind".into(),
            options: vec!["rbind".into()],
        });
        spec.mounts.push(socket);
        for f in ["/etc/hosts", "/etc/resolv.conf"] {
            spec.mounts.push(MountSpec {
                source: f.into(),
                destination: f.into(),
                kind: "bind".into(),
                options: vec!["rbind".into(), "ro".into()],
            });
        }
        spec.capabilities.push("CAP_SYS_ADMIN".into());
        spec.inheritable_capabilities.push("CAP_SYS_ADMIN".into());
        spec.devices.push(DeviceNode {
            path: "/dev/fuse".into(),
            kind: 'c',
            major: 10,
            minor: 229,
            mode: 0o600,
            uid: 0,
            gid: 0,
        });
        spec.device_rules.insert(
            8,
            DeviceRule {
                allow: true,
                kind: 'c',
                major: Some(10),
                minor: Some(229),
                access: "rwm".into(),
            },
        );
        let sys = recorder();
        prepare(&sys, &request(spec)).unwrap();
        let calls = sys.calls();
        assert!(!calls.contains(&"loopback up".to_string()));
        let pos = |line: &str| {
            calls
                .iter()
                .position(|c| c == line)
                .unwrap_or_else(|| panic!("{line} not in {calls:#?}"))
        };
        // the fuse deny is overridden by the allow that follows it
        assert!(
            pos("write /cg/devices/berth/abc/devices.deny \"c 10:229 rwm\"")
                < pos("write /cg/devices/berth/abc/devices.allow \"c 10:229 rwm\"")
        );
        // both shared binds are cloned before / is made rslave, then attached in spec order
        let clone_pm = pos("clone_mount /p/propagated-mount recursive = fd 101");
        let clone_sock = pos("clone_mount /run/p/sock recursive = fd 102");
        let rslave = pos("mount - -> / flags=MS_REC|MS_SLAVE");
        assert!(clone_pm < clone_sock && clone_sock < rslave);
        let attach_pm = pos("attach_mount fd 101 -> /p/rootfs/data");
        let state = pos("mount /var/lib/state -> /p/rootfs/data/state flags=MS_BIND|MS_REC");
        let attach_sock = pos("attach_mount fd 102 -> /p/rootfs/run/docker/plugins");
        assert!(attach_pm < state && state < attach_sock);
        assert_eq!(
            calls[attach_pm + 1],
            "mount - -> /p/rootfs/data flags=MS_REC|MS_SHARED"
        );
        // read-only network files: bind, then a read-only remount
        let hosts = pos("mount /etc/hosts -> /p/rootfs/etc/hosts flags=MS_BIND|MS_REC");
        assert_eq!(calls[hosts - 1], "ensure file /p/rootfs/etc/hosts");
        assert_eq!(
            calls[hosts + 1],
            "mount - -> /p/rootfs/etc/hosts flags=MS_RDONLY|MS_REMOUNT|MS_BIND"
        );
        // the device node after the defaults; the root made rshared after pivot
        assert!(
            pos("mknod /p/rootfs/dev/fuse c 10:229 0600")
                > pos("mknod /p/rootfs/dev/tty c 5:0 0666")
        );
        assert!(pos("mount - -> / flags=MS_REC|MS_SHARED") > pos("umount2 . MntFlags(MNT_DETACH)"));
        assert!(calls.contains(&"chdir /data".to_string()));
        assert_eq!(
            calls_matching(&sys, "capset inheritable"),
            ["capset inheritable CAP_SYS_ADMIN"]
        );
        assert!(calls_matching(&sys, "capbset")[0].contains("CAP_SYS_ADMIN"));
    }

    #[test]
    fn allow_all_devices_and_cgroup_v2() {
        let mut spec = base_spec();
        spec.device_rules = vec![DeviceRule {
            allow: true,
            kind: 'a',
            major: None,
            minor: None,
            access: "rwm".into(),
        }];
        let sys = recorder();
        prepare(&sys, &request(spec.clone())).unwrap();
        assert_eq!(
            calls_matching(&sys, "/cg/"),
            [
                "mkdir -p /cg/devices/berth/abc 0755",
                "write /cg/devices/berth/abc/devices.allow \"a\"",
                "write /cg/devices/berth/abc/cgroup.procs \"0\""
            ]
        );
        let sys = recorder();
        let mut req = request(spec);
        req.devices_cgroup = None;
        req.cgroup2_only = true;
        prepare(&sys, &req).unwrap();
        assert!(calls_matching(&sys, "/cg/").is_empty());
        assert!(
            calls_matching(&sys, "warn device rules are not enforced")[0].contains("cgroup v2")
        );
        assert_eq!(
            calls_matching(&sys, "sys/fs/cgroup type"),
            ["mount cgroup2 -> /p/rootfs/sys/fs/cgroup type=cgroup2 flags=MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC"]
        );
    }

    #[test]
    fn bound_dev_gets_no_nodes_and_hostname_is_set() {
        let mut spec = base_spec();
        spec.hostname = "plug".into();
        spec.mounts.push(MountSpec {
            source: "/dev".into(),
            destination: "/dev".into(),
            kind: "bind".into(),
            options: vec!["rbind".into()],
        });
        let mut sys = recorder();
        sys.existing.as_mut().unwrap().insert("/dev".into());
        prepare(&sys, &request(spec)).unwrap();
        assert!(calls_matching(&sys, "mknod").is_empty());
        assert!(calls_matching(&sys, "dev/ptmx").is_empty());
        assert_eq!(calls_matching(&sys, "sethostname"), ["sethostname plug"]);
    }

    #[test]
    fn errors_name_the_step() {
        let mut spec = base_spec();
        spec.args = vec!["missing-plugin".into()];
        let err = prepare(&recorder(), &request(spec.clone())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "exec: \"missing-plugin\": executable file not found in $PATH"
        );
        spec.args = vec!["/bin/absent".into()];
        let err = prepare(&recorder(), &request(spec.clone())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "exec: \"/bin/absent\": stat /bin/absent: no such file or directory"
        );
        spec.args.clear();
        let err = prepare(&recorder(), &request(spec.clone())).unwrap_err();
        assert!(err.to_string().contains("no entrypoint"));
        spec.args = vec!["plugin".into()];
        spec.mounts.push(MountSpec {
            source: "/nonexistent".into(),
            destination: "/x".into(),
            kind: "bind".into(),
            options: vec!["rbind".into()],
        });
        let err = prepare(&recorder(), &request(spec)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "mount source /nonexistent for /x: no such file or directory"
        );
    }

    #[test]
    fn option_parsing() {
        let o = MountOptions::parse(
            &[
                "rbind", "ro", "rshared", "nosuid", "rw", "size=1m", "private",
            ]
            .map(String::from),
        );
        assert!(o.bind && o.recursive);
        assert_eq!(o.flags, MsFlags::MS_NOSUID);
        assert_eq!(
            o.propagation,
            [MsFlags::MS_SHARED | MsFlags::MS_REC, MsFlags::MS_PRIVATE]
        );
        assert_eq!(o.data().as_deref(), Some("size=1m"));
        assert_eq!(
            device_rule_line(&DeviceRule {
                allow: false,
                kind: 'a',
                major: None,
                minor: None,
                access: "rwm".into()
            }),
            "a"
        );
    }
}
