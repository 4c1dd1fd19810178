//! The route table: every (method, path) berth serves, as data, so the OpenAPI document can be
//! checked against it and the dispatcher cannot drift from it.

/// What a request addresses once the `/vX.Y` prefix is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteId {
    Ping,
    PingHead,
    Version,
    Info,
    Events,
    SystemDf,
    Auth,
    PluginList,
    PluginCreate,
    PluginInspect,
    PluginSet,
    PluginRemove,
    PluginEnable,
    PluginDisable,
    PluginLogs,
    PluginPs,
    PluginProcess,
    PluginEndpoint,
    PluginPrivileges,
    PluginPull,
    PluginUpgrade,
    PluginPush,
    VolumeList,
    VolumeCreate,
    VolumePrune,
    VolumeInspect,
    VolumeUpdate,
    VolumeRemove,
    VolumeMount,
    VolumeUnmount,
    NetworkList,
    NetworkCreate,
    NetworkPrune,
    NetworkInspect,
    NetworkRemove,
    NetworkConnect,
    NetworkDisconnect,
}

/// One served route. `{name}` matches greedily (plugin names hold `/` and `:`).
pub struct Route {
    pub method: &'static str,
    pub pattern: &'static str,
    pub id: RouteId,
    /// Lowest API version the route answers to (moby's per-route minimums).
    pub min_version: Option<&'static str>,
    /// The body is not JSON (a tar): authorization plugins are not shown it, as with dockerd.
    /// On every other route a body the plugins were not shown is refused.
    pub opaque_body: bool,
}

const fn route(method: &'static str, pattern: &'static str, id: RouteId) -> Route {
    Route {
        method,
        pattern,
        id,
        min_version: None,
        opaque_body: false,
    }
}

/// Order matters where patterns overlap: literal routes come before `{name}` routes.
pub const ROUTES: &[Route] = &[
    route("GET", "/_ping", RouteId::Ping),
    route("HEAD", "/_ping", RouteId::PingHead),
    route("GET", "/version", RouteId::Version),
    route("GET", "/info", RouteId::Info),
    route("GET", "/events", RouteId::Events),
    route("GET", "/system/df", RouteId::SystemDf),
    route("POST", "/auth", RouteId::Auth),
    route("GET", "/plugins", RouteId::PluginList),
    Route {
        opaque_body: true,
        ..route("POST", "/plugins/create", RouteId::PluginCreate)
    },
    route("GET", "/plugins/{name}/json", RouteId::PluginInspect),
    route("POST", "/plugins/{name}/set", RouteId::PluginSet),
    route("DELETE", "/plugins/{name}", RouteId::PluginRemove),
    route("POST", "/plugins/{name}/enable", RouteId::PluginEnable),
    route("POST", "/plugins/{name}/disable", RouteId::PluginDisable),
    route("GET", "/plugins/{name}/logs", RouteId::PluginLogs),
    route("GET", "/plugins/ps", RouteId::PluginPs),
    route("GET", "/plugins/{name}/process", RouteId::PluginProcess),
    route("GET", "/plugins/{name}/endpoint", RouteId::PluginEndpoint),
    route("GET", "/plugins/privileges", RouteId::PluginPrivileges),
    route("POST", "/plugins/pull", RouteId::PluginPull),
    Route {
        min_version: Some("1.26"),
        ..route("POST", "/plugins/{name}/upgrade", RouteId::PluginUpgrade)
    },
    route("POST", "/plugins/{name}/push", RouteId::PluginPush),
    route("GET", "/volumes", RouteId::VolumeList),
    route("POST", "/volumes/create", RouteId::VolumeCreate),
    // Current moby requires 1.25 here; dockerd 20.10 did not, and berth keeps 20.10's rule
    // for the old versions it serves.
    route("POST", "/volumes/prune", RouteId::VolumePrune),
    route("POST", "/volumes/{name}/mount", RouteId::VolumeMount),
    route("POST", "/volumes/{name}/unmount", RouteId::VolumeUnmount),
    route("GET", "/volumes/{name}", RouteId::VolumeInspect),
    Route {
        min_version: Some("1.42"),
        ..route("PUT", "/volumes/{name}", RouteId::VolumeUpdate)
    },
    route("DELETE", "/volumes/{name}", RouteId::VolumeRemove),
    route("GET", "/networks", RouteId::NetworkList),
    route("POST", "/networks/create", RouteId::NetworkCreate),
    route("POST", "/networks/prune", RouteId::NetworkPrune),
    route("POST", "/networks/{name}/connect", RouteId::NetworkConnect),
    route(
        "POST",
        "/networks/{name}/disconnect",
        RouteId::NetworkDisconnect,
    ),
    route("GET", "/networks/{name}", RouteId::NetworkInspect),
    route("DELETE", "/networks/{name}", RouteId::NetworkRemove),
];

/// A matched route and its `{name}` parameter, if the pattern has one.
pub struct Matched {
    pub route: &'static Route,
    pub name: Option<String>,
}

/// Splits a `/vX.Y` prefix off a path. The prefix counts only when its version text is made of
/// digits and dots, as moby's `/v{version:[0-9.]+}` pattern requires.
pub fn split_version(path: &str) -> (Option<&str>, &str) {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let version = &rest[..end];
        if !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return (Some(version), &rest[end..]);
        }
    }
    (None, path)
}

/// Go's `path.Clean` as gorilla/mux applies it before routing (a trailing slash is kept): a
/// path that is not clean is answered with a redirect to the clean one.
pub fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let mut clean = format!("/{}", parts.join("/"));
    if path.ends_with('/') && clean != "/" {
        clean.push('/');
    }
    clean
}

/// The path as Go's `URL.Path` holds it: percent-escapes decoded (so `%2F` in a plugin name
/// is a `/`).
pub fn decode_path(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

pub fn recognize(method: &str, path: &str) -> Option<Matched> {
    ROUTES
        .iter()
        .filter(|r| r.method == method)
        .find_map(|route| match_pattern(route.pattern, path).map(|name| Matched { route, name }))
}

fn match_pattern(pattern: &str, path: &str) -> Option<Option<String>> {
    match pattern.split_once("{name}") {
        None => (pattern == path).then_some(None),
        Some((prefix, suffix)) => {
            let inner = path.strip_prefix(prefix)?.strip_suffix(suffix)?;
            Some(Some(inner.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefix_is_split_only_for_numeric_versions() {
        assert_eq!(split_version("/v1.41/plugins"), (Some("1.41"), "/plugins"));
        assert_eq!(split_version("/v1.41"), (Some("1.41"), ""));
        assert_eq!(split_version("/vx/plugins"), (None, "/vx/plugins"));
        assert_eq!(split_version("/plugins"), (None, "/plugins"));
        assert_eq!(split_version("/volumes"), (None, "/volumes"));
    }

    #[test]
    fn paths_are_cleaned_like_go_and_decoded() {
        assert_eq!(clean_path("/v1.41//plugins"), "/v1.41/plugins");
        assert_eq!(clean_path("/plugins/./a/../b/"), "/plugins/b/");
        assert_eq!(clean_path("/_ping"), "/_ping");
        assert_eq!(
            decode_path("/plugins/sample%2Fa%3A1.0/json"),
            "/plugins/sample/a:1.0/json"
        );
    }

    #[test]
    fn names_with_slashes_and_colons_match_greedily() {
        let m = recognize("GET", "/plugins/vieux/sshfs:latest/json").unwrap();
        assert_eq!(m.route.id, RouteId::PluginInspect);
        assert_eq!(m.name.as_deref(), Some("vieux/sshfs:latest"));
        let m = recognize("DELETE", "/plugins/localhost:5000/a/b:v1").unwrap();
        assert_eq!(m.name.as_deref(), Some("localhost:5000/a/b:v1"));
    }

    #[test]
    fn volume_routes_keep_literals_apart_from_names() {
        assert_eq!(
            recognize("GET", "/volumes").unwrap().route.id,
            RouteId::VolumeList
        );
        // A volume may be called "create": GET addresses it, POST creates.
        let m = recognize("GET", "/volumes/create").unwrap();
        assert_eq!(
            (m.route.id, m.name.as_deref()),
            (RouteId::VolumeInspect, Some("create"))
        );
        assert_eq!(
            recognize("POST", "/volumes/create").unwrap().route.id,
            RouteId::VolumeCreate
        );
        let m = recognize("POST", "/volumes/create/mount").unwrap();
        assert_eq!(
            (m.route.id, m.name.as_deref()),
            (RouteId::VolumeMount, Some("create"))
        );
        assert_eq!(
            recognize("PUT", "/volumes/x").unwrap().route.min_version,
            Some("1.42")
        );
    }

    #[test]
    fn literal_routes_win_and_wrong_methods_do_not_match() {
        assert_eq!(
            recognize("POST", "/plugins/create").unwrap().route.id,
            RouteId::PluginCreate
        );
        assert!(recognize("PUT", "/plugins/create").is_none());
        assert!(recognize("GET", "/nosuch").is_none());
        assert!(recognize("POST", "/_ping").is_none());
    }
}
