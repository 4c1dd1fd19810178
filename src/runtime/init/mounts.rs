//! Mounts: OCI mount options, the clones of shared binds (step 3) and the spec's mounts inside
//! the rootfs (step 6).

use std::os::fd::RawFd;
use std::path::Path;

use nix::mount::MsFlags;

use super::{InitRequest, SetupError, Step};
use crate::runtime::spec::{MountSpec, PluginSpec};
use crate::runtime::syscall::{Create, FileKind, Mount, Syscall};

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

pub(super) fn is_bind(m: &MountSpec) -> bool {
    m.kind == "bind" || MountOptions::parse(&m.options).bind
}

/// Step 3: every shared bind (`rshared`: the propagated mount, the socket dir) cloned with
/// `open_tree` before propagation to the host is cut, so the mount made from the clone stays a
/// peer of the host's. One entry per spec mount, `None` where nothing was cloned.
pub(super) fn clone_shared_binds(
    sys: &dyn Syscall,
    spec: &PluginSpec,
) -> Result<Vec<Option<RawFd>>, SetupError> {
    let mut clones = Vec::with_capacity(spec.mounts.len());
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
    Ok(clones)
}

/// Step 6: the spec's mounts in order, each target resolved inside the rootfs (symlink-safe);
/// a cloned shared bind is attached rather than mounted again.
pub(super) fn mount_all(
    sys: &dyn Syscall,
    req: &InitRequest,
    clones: Vec<Option<RawFd>>,
) -> Result<(), SetupError> {
    for (m, clone) in req.spec.mounts.iter().zip(clones) {
        mount_one(sys, req, m, clone)?;
    }
    Ok(())
}

/// What a mount's target must be: the kind of a bind's source, else a directory.
fn target_kind(sys: &dyn Syscall, m: &MountSpec, bind: bool) -> Result<Create, SetupError> {
    if !bind {
        return Ok(Create::Dir);
    }
    match sys.stat_kind(Path::new(&m.source)) {
        Ok(FileKind::Dir) => Ok(Create::Dir),
        Ok(FileKind::File) => Ok(Create::File),
        Err(e) => Err(e).step(|| format!("mount source {} for {}", m.source, m.destination)),
    }
}

/// The targets of the spec's mounts created in the rootfs on the host, each resolved inside
/// it, for an OCI runtime: crun will not create a target behind a symlink that does not
/// resolve yet (runc does). Targets under another mount of the spec (`/dev/pts` under `/dev`)
/// are left to the runtime, since that mount hides whatever the rootfs has there.
pub fn create_mount_targets(sys: &dyn Syscall, spec: &PluginSpec) -> Result<(), SetupError> {
    let root = spec.paths.rootfs.as_path();
    for (i, m) in spec.mounts.iter().enumerate() {
        let destination = Path::new(&m.destination);
        if spec.mounts[..i]
            .iter()
            .any(|earlier| destination.starts_with(&earlier.destination))
        {
            continue;
        }
        let create = target_kind(sys, m, is_bind(m))?;
        sys.resolve_in_root(root, &m.destination, create)
            .step(|| format!("creating mount target {}", m.destination))?;
    }
    Ok(())
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
            sys.mount(Mount::filesystem(
                Path::new("cgroup2"),
                &target,
                "cgroup2",
                options.flags,
                None,
            ))
        } else {
            sys.mount(Mount::filesystem(
                Path::new("tmpfs"),
                &target,
                "tmpfs",
                options.flags,
                Some("mode=755"),
            ))
        }
        .step(what);
    }

    let (target, _) = sys
        .resolve_in_root(root, &m.destination, target_kind(sys, m, bind)?)
        .step(what)?;
    if let Some(fd) = clone {
        sys.attach_mount(fd, &target).step(what)?;
    } else if bind {
        let tree = if options.recursive {
            MsFlags::MS_REC
        } else {
            MsFlags::empty()
        };
        sys.mount(Mount::bind(Path::new(&m.source), &target, tree))
            .step(what)?;
    } else {
        let fstype = if m.kind.is_empty() { "none" } else { &m.kind };
        sys.mount(Mount::filesystem(
            Path::new(&m.source),
            &target,
            fstype,
            options.flags,
            options.data().as_deref(),
        ))
        .step(what)?;
    }
    if bind && !options.flags.is_empty() {
        sys.mount(Mount::change(
            &target,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | options.flags,
        ))
        .step(what)?;
    }
    for propagation in &options.propagation {
        sys.mount(Mount::change(&target, *propagation)).step(what)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
