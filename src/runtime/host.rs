//! The host side of running a plugin, shared by every executor: the socket directory, the
//! propagated mount bound onto itself and made `rshared` (as moby does before starting a
//! plugin), and releasing what a plugin left on the host (its devices cgroup, mounts below its
//! directories, stale sockets) once it is gone or after berth was killed.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use nix::libc;
use nix::mount::MsFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::spec::PluginSpec;
use crate::mounts::{self, read_mountinfo, UnmountError};

/// Mount point of the v1 `devices` hierarchy, if the host has one.
pub fn devices_hierarchy() -> Option<PathBuf> {
    read_mountinfo()
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "devices"))
        .map(|m| m.mount_point)
}

/// The cgroups of process `pid` as host directories: `(controllers, directory)` per hierarchy
/// mounted here (`controllers` empty for cgroup2).
pub fn cgroup_dirs(pid: u32) -> io::Result<Vec<(String, PathBuf)>> {
    let mounts = read_mountinfo()?;
    let mut dirs = Vec::new();
    for line in fs::read_to_string(format!("/proc/{pid}/cgroup"))?.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mount = if controllers.is_empty() {
            mounts.iter().find(|m| m.fstype == "cgroup2")
        } else {
            mounts.iter().find(|m| {
                m.fstype == "cgroup"
                    && controllers
                        .split(',')
                        .all(|c| m.super_options.split(',').any(|o| o == c))
            })
        };
        if let Some(mount) = mount {
            let dir = mount.mount_point.join(path.trim_start_matches('/'));
            dirs.push((controllers.to_string(), dir));
        }
    }
    Ok(dirs)
}

/// Refuses IDs that could name a path outside the plugin's directories.
pub fn check_id(id: &str) -> io::Result<()> {
    let ok = !id.is_empty() && id != "." && id != ".." && !id.contains('/') && !id.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid plugin ID {id:?}"),
        ))
    }
}

/// Host paths whose mounts belong to a running plugin: the propagated-mount directory when
/// the spec binds it (the executor bound it onto itself on the host).
pub fn propagated_sources(spec: &PluginSpec) -> Vec<PathBuf> {
    spec.mounts
        .iter()
        .filter(|m| Path::new(&m.source) == spec.paths.propagated_mount)
        .map(|_| spec.paths.propagated_mount.clone())
        .take(1)
        .collect()
}

/// What has to be undone when a plugin process is gone.
#[derive(Debug, Clone)]
pub struct Release {
    pub id: String,
    pub cgroup: Option<PathBuf>,
    pub host_mounts: Vec<PathBuf>,
}

impl Release {
    pub fn run(&self) -> io::Result<()> {
        let mut first_error = None;
        if let Some(dir) = &self.cgroup {
            if let Err(e) = remove_cgroup(dir) {
                first_error.get_or_insert(e);
            }
        }
        if !self.host_mounts.is_empty() {
            let roots = self.host_mounts.clone();
            if let Err(e) = unmount_all(|mp| roots.iter().any(|r| mp.starts_with(r))) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(io::Error::new(
                e.kind(),
                format!("releasing plugin {}: {e}", self.id),
            )),
        }
    }
}

/// The path as mountinfo shows it (symlinks resolved) when it exists.
pub fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `<...>/plugins/<id>[/...]`.
pub fn below_plugin_dir(mount_point: &Path, id: &str) -> bool {
    let parts: Vec<Component> = mount_point.components().collect();
    parts
        .windows(2)
        .any(|w| w[0].as_os_str() == "plugins" && w[1].as_os_str() == id)
}

/// Lazily unmounts every mount whose mount point matches, deepest (then newest) first, until
/// none is left.
pub fn unmount_all(matches: impl Fn(&Path) -> bool) -> io::Result<()> {
    mounts::unmount_matching(matches).map_err(|e| match e {
        UnmountError::Failed { target, errno } => io::Error::new(
            io::Error::from(errno).kind(),
            format!("unmounting {}: {}", target.display(), errno.desc()),
        ),
        other => other.into(),
    })
}

/// Binds `path` onto itself unless it is a mount point already, then makes it `rshared`
/// (moby: `mount.MakeRShared(propRoot)`).
pub fn make_rshared_mount(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)?;
    let real = fs::canonicalize(path)?;
    let mounted = read_mountinfo()?.iter().any(|m| m.mount_point == real);
    if !mounted {
        nix::mount::mount(
            Some(&real),
            &real,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(io::Error::from)?;
    }
    nix::mount::mount(
        None::<&str>,
        &real,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

pub fn cgroup_pids(dir: &Path) -> io::Result<Vec<i32>> {
    match fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Kills every process left in the cgroup and removes it (idempotent, bounded to 10 s).
pub fn remove_cgroup(dir: &Path) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if !dir.exists() {
            return Ok(());
        }
        let pids = cgroup_pids(dir)?;
        for pid in &pids {
            let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        if pids.is_empty() {
            match fs::remove_dir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("removing cgroup {}: {e}", dir.display()),
                    ))
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "cgroup {} still holds processes {pids:?}",
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn remove_stale_sockets(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_socket()) {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Makes the host side ready for `spec`: the socket directory, and each propagated mount
/// bound onto itself and made `rshared`. The returned [`Release`] undoes it (and removes
/// `cgroup`, the executor's own cgroup for the plugin, if any); on error it has run already.
pub fn prepare(spec: &PluginSpec, cgroup: Option<PathBuf>) -> io::Result<Release> {
    if !spec.paths.socket_dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&spec.paths.socket_dir)?;
    }
    let mut release = Release {
        id: spec.id.clone(),
        cgroup,
        host_mounts: Vec::new(),
    };
    for path in propagated_sources(spec) {
        let prepared = make_rshared_mount(&path);
        release.host_mounts.push(canonical(&path));
        if let Err(e) = prepared {
            let _ = release.run();
            return Err(io::Error::new(
                e.kind(),
                format!("preparing propagated mount {}: {e}", path.display()),
            ));
        }
    }
    Ok(release)
}

/// Everything mounted on the host for plugin `id` and its stale sockets, after a crash of the
/// plugin or of berth. With the spec, only its own directories; without, anything below a
/// `plugins/<id>` directory.
pub fn release_leftovers(id: &str, spec: Option<&PluginSpec>) -> io::Result<()> {
    match spec {
        Some(spec) => {
            let roots = [
                canonical(&spec.paths.propagated_mount),
                canonical(&spec.paths.socket_dir),
                canonical(&spec.paths.rootfs),
            ];
            unmount_all(|mp| roots.iter().any(|r| mp.starts_with(r)))?;
            remove_stale_sockets(&spec.paths.socket_dir)
        }
        None => unmount_all(|mp| below_plugin_dir(mp, id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_dir_matching() {
        let id = "abcdef";
        assert!(below_plugin_dir(
            Path::new("/var/lib/berth/plugins/abcdef/propagated-mount/v"),
            id
        ));
        assert!(below_plugin_dir(Path::new("/run/berth/plugins/abcdef"), id));
        assert!(!below_plugin_dir(Path::new("/var/lib/abcdef/x"), id));
        assert!(!below_plugin_dir(
            Path::new("/var/lib/berth/plugins/abcdefg"),
            id
        ));
        assert!(check_id("../x").is_err());
        assert!(check_id("").is_err());
    }
}
