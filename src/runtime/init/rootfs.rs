//! The plugin's root: propagation to the host cut (step 4), the rootfs and its init layer
//! (step 5), `pivot_root` (step 8), masked and read-only paths (step 9).

use std::io;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

use super::{SetupError, Step};
use crate::runtime::spec::PluginSpec;
use crate::runtime::syscall::{Create, FileKind, Mount, Syscall};

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

/// Step 4: `/` made `rslave` (or `rprivate`) recursively, so nothing mounted from here on
/// reaches the host.
pub(super) fn cut_host_propagation(sys: &dyn Syscall, spec: &PluginSpec) -> Result<(), SetupError> {
    let root_propagation = match spec.rootfs_propagation.as_str() {
        "rprivate" | "private" => MsFlags::MS_PRIVATE,
        _ => MsFlags::MS_SLAVE,
    };
    sys.mount(Mount::change(
        Path::new("/"),
        root_propagation | MsFlags::MS_REC,
    ))
    .step(|| "making / rslave".into())
}

/// Step 5: the rootfs bound onto itself (so it is a mount `pivot_root` accepts); the init
/// layer and the working directory created in it.
pub(super) fn prepare_rootfs(sys: &dyn Syscall, spec: &PluginSpec) -> Result<(), SetupError> {
    let root = spec.paths.rootfs.as_path();
    sys.mount(Mount::bind(root, root, MsFlags::MS_REC))
        .step(|| format!("binding rootfs {}", root.display()))?;
    create_init_layer(sys, spec)
}

/// moby's init layer and the working directory, created in the rootfs where missing (every
/// path resolved inside the rootfs). An OCI runtime gets the same done on the host before
/// `create`.
pub fn create_init_layer(sys: &dyn Syscall, spec: &PluginSpec) -> Result<(), SetupError> {
    let root = spec.paths.rootfs.as_path();
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
    Ok(())
}

/// Step 8: `pivot_root(".", ".")`. Afterwards the old root sits on top of the new one; an fd
/// taken before is the way back into it (a path lookup of "." or "/" would land on the new
/// root). The old root is made rslave (so detaching it cannot propagate unmounts to the host)
/// and detached; `/` is made rshared when the spec wants it.
pub(super) fn pivot_root(sys: &dyn Syscall, spec: &PluginSpec) -> Result<(), SetupError> {
    let root = spec.paths.rootfs.as_path();
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
    sys.mount(Mount::change(
        Path::new("."),
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
    ))
    .step(|| "making the old root rslave".into())?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH)
        .step(|| "detaching the old root".into())?;
    sys.chdir(Path::new("/")).step(|| "chdir /".into())?;
    if spec.rootfs_propagation.trim_start_matches('r') == "shared" {
        sys.mount(Mount::change(
            Path::new("/"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
        ))
        .step(|| "making / rshared".into())?;
    }
    Ok(())
}

/// Step 9: masked paths (`/dev/null` over files, a read-only tmpfs over directories), then
/// read-only paths (bound onto themselves, remounted read-only keeping their flags). Paths
/// the plugin's root does not have are skipped.
pub(super) fn mask_paths(sys: &dyn Syscall, spec: &PluginSpec) -> Result<(), SetupError> {
    let new_root = Path::new("/");
    for path in &spec.masked_paths {
        let (target, kind) = match sys.resolve_in_root(new_root, path, Create::No) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).step(|| format!("masking {path}")),
        };
        let mask = match kind {
            FileKind::Dir => Mount::filesystem(
                Path::new("tmpfs"),
                &target,
                "tmpfs",
                MsFlags::MS_RDONLY,
                None,
            ),
            FileKind::File => Mount::bind(Path::new("/dev/null"), &target, MsFlags::empty()),
        };
        sys.mount(mask).step(|| format!("masking {path}"))?;
    }
    for path in &spec.readonly_paths {
        let (target, _) = match sys.resolve_in_root(new_root, path, Create::No) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).step(|| format!("making {path} read-only")),
        };
        sys.mount(Mount::bind(&target, &target, MsFlags::MS_REC))
            .step(|| format!("making {path} read-only"))?;
        let keep = sys
            .mount_flags(&target)
            .step(|| format!("making {path} read-only"))?;
        sys.mount(Mount::change(
            &target,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep,
        ))
        .step(|| format!("making {path} read-only"))?;
    }
    Ok(())
}
