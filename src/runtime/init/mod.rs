//! `berth plugin-init`: the fresh, single-threaded process that turns a [`PluginSpec`] into a
//! running plugin.
//!
//! berth spawns it (see [`super::linux`]) already inside new mount/UTS/IPC(/net) namespaces
//! and, when the plugin has a private PID namespace, with `CLONE_NEWPID` pending, so the first
//! child it forks is PID 1 of that namespace. The process that berth started then stays as a
//! tiny shim (`shim.rs`): it forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to the
//! plugin, waits for it and exits the way it did. The plugin side runs [`prepare`] (the whole
//! setup, every kernel call through [`Syscall`]) and `execve`s the entrypoint.
//!
//! Setup errors go back to berth over a pipe (the `report` fd, close-on-exec): berth reads `S`
//! when the init process is alive, then either `E<message>` or end-of-file, which means the
//! entrypoint was exec'd.
//!
//! One file per group of setup steps, in the order [`prepare`] takes them: `devices.rs` (the
//! devices cgroup, later the nodes in `/dev`), `mounts.rs` (shared binds cloned, the spec's
//! mounts), `rootfs.rs` (propagation cut, rootfs and init layer, `pivot_root`, masking),
//! `process.rs` (hostname, working directory, entrypoint lookup, capabilities).

mod devices;
mod mounts;
pub(crate) mod process;
mod rootfs;
pub(crate) mod shim;

use std::fmt;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use devices::{default_devices, device_rule_line};
pub use mounts::{create_mount_targets, MountOptions};
pub use rootfs::create_init_layer;
pub use shim::run;

use crate::goerr::io_error_text;
use crate::runtime::spec::PluginSpec;
use crate::runtime::syscall::Syscall;

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
    if spec.namespaces.network {
        sys.loopback_up()
            .step(|| "setting up the loopback interface".into())?;
    }
    devices::join_devices_cgroup(sys, req)?;
    let clones = mounts::clone_shared_binds(sys, spec)?;
    rootfs::cut_host_propagation(sys, spec)?;
    rootfs::prepare_rootfs(sys, spec)?;
    mounts::mount_all(sys, req, clones)?;
    devices::populate_dev(sys, spec)?;
    rootfs::pivot_root(sys, spec)?;
    rootfs::mask_paths(sys, spec)?;
    process::set_hostname(sys, spec)?;
    process::enter_working_dir(sys, spec)?;
    let path = process::find_executable(sys, &spec.args[0], &spec.env)?;
    sys.umask(0o022);
    process::set_capabilities(sys, spec)?;
    Ok(Execution {
        path,
        args: spec.args.clone(),
        env: spec.env.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::{self, DeviceNode, DeviceRule, MountSpec, Namespaces, PluginPaths};
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
}
