//! What a caller holds to talk to one plugin: its RPC client, how the paths it reports map to
//! the host, and who it is. The plugin getter (`plugin::getter`) hands these out for managed
//! and legacy plugins alike, so protocol adapters and services never ask where a plugin runs.

use std::path::{Component, Path, PathBuf};

use super::client::PluginClient;

/// Which kind of plugin a handle talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginKind {
    /// A managed plugin with its 64-hex ID.
    Managed { id: String },
    /// A legacy (v1) plugin found by discovery.
    Legacy,
}

/// One plugin as a protocol caller needs it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PluginHandle {
    /// The name users give the driver: a managed plugin's full name (`name:tag`), a legacy
    /// plugin's discovery name.
    pub name: String,
    pub kind: PluginKind,
    pub client: PluginClient,
    pub paths: PathMapper,
}

impl PluginHandle {
    /// The managed plugin's ID (what references are counted against).
    pub fn managed_id(&self) -> Option<&str> {
        match &self.kind {
            PluginKind::Managed { id } => Some(id),
            PluginKind::Legacy => None,
        }
    }

    /// Whether `other` talks to the same activation of the same plugin (a restarted managed
    /// plugin or a re-activated legacy one gets a new client): adapters that cache what a
    /// plugin said (capabilities) are kept only while this holds.
    pub fn same_activation(&self, other: &PluginHandle) -> bool {
        self.client.same_plugin(&other.client)
    }
}

/// How a plugin's paths map to the host (moby `ScopedPath`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMapper {
    /// Legacy plugins run on the host: paths are used as reported.
    Identity,
    /// A managed plugin: a path under `propagated_mount` (the plugin's `PropagatedMount`, as seen
    /// inside; empty when it has none) maps to `host_propagated`
    /// (`<data-root>/plugins/<id>/propagated-mount`), any other path to the same path under
    /// `rootfs` (`<data-root>/plugins/<id>/rootfs`).
    Managed {
        propagated_mount: String,
        host_propagated: PathBuf,
        rootfs: PathBuf,
    },
}

impl PathMapper {
    /// The host path of a path reported by the plugin. An empty path stays empty (a plugin
    /// that reports no mountpoint). Differences to moby, on purpose: the propagated-mount prefix
    /// must match whole path components (`/data2` is not under `/data`), and `..` cannot climb
    /// out of the rootfs or the propagated mount.
    pub fn host_path(&self, reported: &str) -> String {
        match self {
            PathMapper::Identity => reported.to_string(),
            PathMapper::Managed { .. } if reported.is_empty() => String::new(),
            PathMapper::Managed {
                propagated_mount,
                host_propagated,
                rootfs,
            } => {
                if !propagated_mount.is_empty() {
                    if let Some(rest) = strip_path_prefix(reported, propagated_mount) {
                        return join_inside(host_propagated, rest);
                    }
                }
                join_inside(rootfs, reported)
            }
        }
    }
}

/// `path` below `prefix` (whole components), as the remainder; `None` when not below it.
fn strip_path_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        // PropagatedMount "/": everything is below it.
        return Some(path);
    }
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

/// `base` joined with `p` cleaned lexically, with `..` stopping at `base`.
fn join_inside(base: &Path, p: &str) -> String {
    let mut out = base.to_path_buf();
    let mut depth = 0usize;
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => {
                out.push(n);
                depth += 1;
            }
            Component::ParentDir if depth > 0 => {
                out.pop();
                depth -= 1;
            }
            _ => {}
        }
    }
    // Not `display()`: that formats through a lossy UTF-8 scan, measurable in lists of
    // thousands of volumes.
    out.into_os_string()
        .into_string()
        .unwrap_or_else(|raw| raw.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed(propagated: &str) -> PathMapper {
        PathMapper::Managed {
            propagated_mount: propagated.into(),
            host_propagated: "/var/lib/berth/plugins/abc/propagated-mount".into(),
            rootfs: "/var/lib/berth/plugins/abc/rootfs".into(),
        }
    }

    #[test]
    fn identity_paths() {
        assert_eq!(PathMapper::Identity.host_path("/mnt/v1"), "/mnt/v1");
        assert_eq!(PathMapper::Identity.host_path(""), "");
    }

    #[test]
    fn managed_paths_without_propagated_mount() {
        let m = managed("");
        assert_eq!(
            m.host_path("/mnt/anc-nvol1"),
            "/var/lib/berth/plugins/abc/rootfs/mnt/anc-nvol1"
        );
        assert_eq!(
            m.host_path("rel/x"),
            "/var/lib/berth/plugins/abc/rootfs/rel/x"
        );
        assert_eq!(m.host_path("/"), "/var/lib/berth/plugins/abc/rootfs");
        assert_eq!(m.host_path(""), "");
        assert_eq!(
            m.host_path("/../../etc/passwd"),
            "/var/lib/berth/plugins/abc/rootfs/etc/passwd"
        );
        assert_eq!(
            m.host_path("/a/./b/../c/"),
            "/var/lib/berth/plugins/abc/rootfs/a/c"
        );
    }

    #[test]
    fn managed_paths_with_propagated_mount() {
        let m = managed("/data");
        assert_eq!(
            m.host_path("/data/v1"),
            "/var/lib/berth/plugins/abc/propagated-mount/v1"
        );
        assert_eq!(
            m.host_path("/data"),
            "/var/lib/berth/plugins/abc/propagated-mount"
        );
        assert_eq!(
            m.host_path("/data2/v1"),
            "/var/lib/berth/plugins/abc/rootfs/data2/v1"
        );
        assert_eq!(
            m.host_path("/other/v1"),
            "/var/lib/berth/plugins/abc/rootfs/other/v1"
        );
        assert_eq!(
            m.host_path("/data/../../x"),
            "/var/lib/berth/plugins/abc/propagated-mount/x"
        );
        let trailing = managed("/mnt/volumes/");
        assert_eq!(
            trailing.host_path("/mnt/volumes/v"),
            "/var/lib/berth/plugins/abc/propagated-mount/v"
        );
    }
}
