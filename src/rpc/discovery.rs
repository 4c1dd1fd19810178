//! Legacy (v1) plugin discovery: `.sock` files, `.spec` and `.json` files, lazy activation.
//!
//! Docker's rules (moby `pkg/plugins/discovery.go`, `plugins.go`), over one ordered list of
//! directories (normally `/run/docker/plugins`, `/etc/docker/plugins`, `/usr/lib/docker/plugins`):
//!
//! * **Lookup of `N`** ([`LegacyPlugins::locate`]), first hit wins: sockets first, across all
//!   directories — `D/N.sock`, then `D/N/N.sock` (must be sockets) — then spec files, directory by
//!   directory: `D/N.spec`, `D/N/N.spec`, `D/N.json`, `D/N/N.json` (must exist). A spec file that
//!   is found but unusable is an error; the search does not go on past it.
//! * **`.spec`**: one URL, trimmed: `unix:///path.sock`, `tcp://host:port` (plain HTTP),
//!   `http://…`, `https://…` (TLS without verification, as moby). No scheme → `Unknown protocol`.
//! * **`.json`**: `{"Name","Addr","TLSConfig":{"InsecureSkipVerify","CAFile","CertFile",
//!   "KeyFile"}}`; the name is the file stem (`Name` is ignored); a `TLSConfig` without `CAFile`
//!   disables verification, no `TLSConfig` means default verification.
//! * **Scan** ([`LegacyPlugins::names`]): sockets `D/X.sock`, directories `D/X` holding socket
//!   `D/X/X.sock`, files `D/X.spec`/`D/X.json`, directories `D/X` holding `D/X/X.spec` or
//!   `D/X/X.json`. So the `<id>/` directories of managed plugins under the same socket directory
//!   (`<id>/<Socket>`) never count as legacy plugins.
//! * **Activation** is lazy ([`LegacyPlugins::get`]): `POST /Plugin.Activate` (empty body) →
//!   `{"Implements":[…]}`, cached per name.
//!
//! berth differs from moby on purpose:
//! * A name with no socket/spec file fails at once with `plugin "N" not found` (moby retries the
//!   lookup for ~15 s). A file that exists but whose plugin does not answer yet is retried with
//!   backoff up to `activation_timeout` (connection failures only; a hung `Plugin.Activate` is cut
//!   at the same deadline).
//! * moby keeps an activated plugin for the daemon's lifetime, even after its socket is gone.
//!   berth re-checks the discovery file on every `get`: if it disappeared the entry is dropped
//!   (`not found`); if it now points elsewhere, or the plugin's last call could not connect or
//!   timed out ([`PluginClient::is_unreachable`]), the plugin is activated afresh (a new
//!   [`LegacyPlugin`], so callers can tell by `Arc::ptr_eq` that adapters built on the old one
//!   should be rebuilt).
//! * Names containing `/`, NUL, or equal to `.`/`..` are never looked up (no path escapes).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::client::{within, PluginClient, Retry, RpcError, TlsConfig, Transport};

/// Per-plugin deadline of activations done by [`LegacyPlugins::all`] (e.g. for `volume ls`),
/// unless [`LegacyPlugins::with_scan_timeout`] says otherwise.
pub const DEFAULT_SCAN_TIMEOUT: Duration = Duration::from_secs(3);

/// moby's activation error for a plugin that lacks the requested kind.
pub const ERR_NOT_IMPLEMENTS: &str = "Plugin does not implement the requested driver";

/// An activated legacy plugin.
#[derive(Debug)]
pub struct LegacyPlugin {
    /// The discovery name (file stem).
    pub name: String,
    pub client: PluginClient,
    /// `Implements` of the `Plugin.Activate` answer (`VolumeDriver`, `NetworkDriver`, …).
    pub implements: Vec<String>,
}

impl LegacyPlugin {
    /// Case-sensitive, as moby compares.
    pub fn implements(&self, kind: &str) -> bool {
        self.implements.iter().any(|i| i == kind)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No socket or spec file with that name.
    #[error("plugin \"{0}\" not found")]
    NotFound(String),
    /// A spec file was found but cannot be used.
    #[error("invalid plugin spec {}: {reason}", path.display())]
    InvalidSpec { path: PathBuf, reason: String },
    /// Found, but activation failed (no connection within the activation timeout, a hung or
    /// failing `Plugin.Activate`). The text is the RPC error's.
    #[error("{0}")]
    Unavailable(String),
    /// Activated, but `Implements` lacks the requested kind.
    #[error("Plugin does not implement the requested driver: plugin=\"{name}\", requested implementation=\"{implements}\"")]
    DoesNotImplement { name: String, implements: String },
}

/// Legacy plugin discovery and the cache of activated plugins.
#[derive(Debug)]
pub struct LegacyPlugins {
    dirs: Vec<PathBuf>,
    activation_timeout: Duration,
    call_timeout: Option<Duration>,
    scan_timeout: Duration,
    /// Activated plugins by name. A plain mutex, never held across an await.
    cache: Mutex<HashMap<String, Arc<LegacyPlugin>>>,
    /// One activation at a time per name (concurrent `get`s of one name share it).
    activating: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl LegacyPlugins {
    /// `dirs`: searched in order (socket directory first, then spec directories; every rule is
    /// applied to every directory). `activation_timeout`: how long a found plugin may take to
    /// answer `Plugin.Activate` (connection retries included). `call_timeout`: the deadline of
    /// every later call through the plugin's client (moby: none for legacy plugins).
    pub fn new(
        dirs: Vec<PathBuf>,
        activation_timeout: Duration,
        call_timeout: Option<Duration>,
    ) -> LegacyPlugins {
        LegacyPlugins {
            dirs,
            activation_timeout,
            call_timeout,
            scan_timeout: DEFAULT_SCAN_TIMEOUT.min(activation_timeout),
            cache: Mutex::new(HashMap::new()),
            activating: Mutex::new(HashMap::new()),
        }
    }

    /// The per-plugin activation deadline of [`all`](Self::all).
    pub fn with_scan_timeout(mut self, timeout: Duration) -> LegacyPlugins {
        self.scan_timeout = timeout;
        self
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Pure file lookup of `name` (see the module doc for the order). `NotFound` when no file
    /// exists; `InvalidSpec` when the first file found cannot be used.
    pub fn locate(&self, name: &str) -> Result<Transport, LookupError> {
        if !valid_name(name) {
            return Err(LookupError::NotFound(name.to_string()));
        }
        for dir in &self.dirs {
            for p in candidates(dir, name, "sock") {
                if fs::metadata(&p).is_ok_and(|m| m.file_type().is_socket()) {
                    return Ok(Transport::Unix(p));
                }
            }
        }
        for dir in &self.dirs {
            let specs = candidates(dir, name, "spec");
            let jsons = candidates(dir, name, "json");
            for p in specs.into_iter().chain(jsons) {
                if fs::metadata(&p).is_ok() {
                    return if p.extension().is_some_and(|e| e == "json") {
                        read_json_spec(&p)
                    } else {
                        read_spec(&p)
                    };
                }
            }
        }
        Err(LookupError::NotFound(name.to_string()))
    }

    /// Every discoverable plugin name, sorted, each once. Missing or unreadable directories are
    /// skipped.
    pub fn names(&self) -> Vec<String> {
        let mut names = BTreeSet::new();
        for dir in &self.dirs {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let Some(file_name) = file_name.to_str() else {
                    continue;
                };
                let path = entry.path();
                // `metadata` follows symlinks, as Go's os.Stat in moby's scan.
                let Ok(meta) = fs::metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    if !valid_name(file_name) {
                        continue;
                    }
                    let sock = path.join(format!("{file_name}.sock"));
                    let is_sock = fs::metadata(&sock).is_ok_and(|m| m.file_type().is_socket());
                    let has_spec = ["spec", "json"].iter().any(|ext| {
                        fs::metadata(path.join(format!("{file_name}.{ext}")))
                            .is_ok_and(|m| !m.is_dir())
                    });
                    if is_sock || has_spec {
                        names.insert(file_name.to_string());
                    }
                    continue;
                }
                let Some((stem, ext)) = file_name.rsplit_once('.') else {
                    continue;
                };
                if stem.is_empty() || !valid_name(stem) {
                    continue;
                }
                let counts = match ext {
                    "sock" => meta.file_type().is_socket(),
                    "spec" | "json" => true,
                    _ => false,
                };
                if counts {
                    names.insert(stem.to_string());
                }
            }
        }
        names.into_iter().collect()
    }

    /// The activated plugin `name`, activating it if needed, checked to implement `implements`.
    pub async fn get(
        &self,
        name: &str,
        implements: &str,
    ) -> Result<Arc<LegacyPlugin>, LookupError> {
        let plugin = self
            .activated(
                name,
                self.activation_timeout,
                Retry::Backoff {
                    total: self.activation_timeout,
                },
            )
            .await?;
        if plugin.implements(implements) {
            log::debug!("{name} implements: {implements}");
            Ok(plugin)
        } else {
            Err(LookupError::DoesNotImplement {
                name: name.to_string(),
                implements: implements.to_string(),
            })
        }
    }

    /// Every discoverable plugin that implements `implements`, activated in parallel, each
    /// bounded by the scan timeout. Plugins that fail are logged and left out; successes are
    /// cached like [`get`](Self::get)'s. In [`names`](Self::names) order.
    pub async fn all(&self, implements: &str) -> Vec<Arc<LegacyPlugin>> {
        self.all_reporting(implements).await.0
    }

    /// Like [`all`](Self::all), also returning the plugins that could not be activated, with
    /// the reason (callers turn them into warnings).
    pub async fn all_reporting(
        &self,
        implements: &str,
    ) -> (Vec<Arc<LegacyPlugin>>, Vec<(String, String)>) {
        let names = self.names();
        let timeout = self.scan_timeout;
        let results = futures_util::future::join_all(names.iter().map(|name| async move {
            (
                name,
                self.activated(name, timeout, Retry::Backoff { total: timeout })
                    .await,
            )
        }))
        .await;
        let mut out = Vec::new();
        let mut failed = Vec::new();
        for (name, result) in results {
            match result {
                Ok(p) if p.implements(implements) => out.push(p),
                Ok(_) => {}
                Err(e) => {
                    log::warn!("legacy plugin {name}: {e}");
                    failed.push((name.clone(), e.to_string()));
                }
            }
        }
        (out, failed)
    }

    /// Activated plugins currently cached (no discovery, no calls).
    pub fn cached(&self) -> Vec<Arc<LegacyPlugin>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = cache.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Drops the cached activation of `name` (the next `get` activates again).
    pub fn forget(&self, name: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    async fn activated(
        &self,
        name: &str,
        deadline: Duration,
        retry: Retry,
    ) -> Result<Arc<LegacyPlugin>, LookupError> {
        let gate = {
            let mut gates = self.activating.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(gates.entry(name.to_string()).or_default())
        };
        let result = {
            let _turn = gate.lock().await;
            self.activated_locked(name, deadline, retry).await
        };
        // Drop the gate unless another caller is waiting on it (names are user input).
        let mut gates = self.activating.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::strong_count(&gate) == 2 {
            gates.remove(name);
        }
        result
    }

    async fn activated_locked(
        &self,
        name: &str,
        deadline: Duration,
        retry: Retry,
    ) -> Result<Arc<LegacyPlugin>, LookupError> {
        let transport = match self.locate(name) {
            Ok(t) => t,
            Err(e) => {
                self.forget(name);
                return Err(e);
            }
        };
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        if let Some(p) = cached {
            if p.client.transport() == &transport && !p.client.is_unreachable() {
                return Ok(p);
            }
            log::info!(
                "legacy plugin {name}: re-activating ({})",
                if p.client.transport() != &transport {
                    "its address changed"
                } else {
                    "its last call could not reach it"
                }
            );
            self.forget(name);
        }
        let client = PluginClient::new(transport, self.call_timeout)
            .map_err(|e| LookupError::Unavailable(e.to_string()))?
            .named(name);
        let answer: Value = within(
            deadline,
            client.call("Plugin.Activate", &Value::Null, retry),
        )
        .await
        .map_err(|e| LookupError::Unavailable(e.to_string()))?;
        let implements = parse_implements(&answer).map_err(|why| {
            LookupError::Unavailable(
                RpcError::Decode(format!("Plugin.Activate: {why}")).to_string(),
            )
        })?;
        let plugin = Arc::new(LegacyPlugin {
            name: name.to_string(),
            client,
            implements,
        });
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), Arc::clone(&plugin));
        Ok(plugin)
    }
}

/// `Implements` of an activation answer (key matched case-insensitively; `null` or missing is an
/// empty list, as Go decodes it).
fn parse_implements(answer: &Value) -> Result<Vec<String>, String> {
    let Value::Object(map) = answer else {
        return Err(format!("expected a JSON object, got {answer}"));
    };
    let field = map.get("Implements").or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Implements"))
            .map(|(_, v)| v)
    });
    match field {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("Implements holds a non-string: {i}"))
            })
            .collect(),
        Some(other) => Err(format!("Implements is not a list: {other}")),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// `D/N.ext`, `D/N/N.ext` (moby `pluginPaths`).
fn candidates(dir: &Path, name: &str, ext: &str) -> [PathBuf; 2] {
    let file = format!("{name}.{ext}");
    [dir.join(&file), dir.join(name).join(&file)]
}

fn invalid(path: &Path, reason: impl Into<String>) -> LookupError {
    LookupError::InvalidSpec {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A legacy plugin's spec file, by its extension: `.json` (address and TLS settings) or
/// anything else as `.spec` (one URL).
pub fn read_spec_file(path: &Path) -> Result<Transport, LookupError> {
    if path.extension().is_some_and(|e| e == "json") {
        read_json_spec(path)
    } else {
        read_spec(path)
    }
}

/// A `.spec` file: one URL.
fn read_spec(path: &Path) -> Result<Transport, LookupError> {
    let content = fs::read_to_string(path).map_err(|e| invalid(path, e.to_string()))?;
    transport_from_addr(path, content.trim(), None, true)
}

/// A `.json` file: `{"Name","Addr","TLSConfig":{…}}`.
fn read_json_spec(path: &Path) -> Result<Transport, LookupError> {
    let content = fs::read(path).map_err(|e| invalid(path, e.to_string()))?;
    let v: Value = serde_json::from_slice(&content).map_err(|e| invalid(path, e.to_string()))?;
    let Value::Object(map) = &v else {
        return Err(invalid(path, "expected a JSON object"));
    };
    let get = |m: &serde_json::Map<String, Value>, key: &str| -> Option<Value> {
        m.get(key)
            .or_else(|| {
                m.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v)
            })
            .cloned()
    };
    let addr = match get(map, "Addr") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => String::new(),
        Some(other) => return Err(invalid(path, format!("Addr is not a string: {other}"))),
    };
    let tls = match get(map, "TLSConfig") {
        None | Some(Value::Null) => None,
        Some(Value::Object(t)) => {
            let file = |key: &str| -> Result<Option<PathBuf>, LookupError> {
                match get(&t, key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) if s.is_empty() => Ok(None),
                    Some(Value::String(s)) => Ok(Some(PathBuf::from(s))),
                    Some(other) => Err(invalid(
                        path,
                        format!("TLSConfig.{key} is not a string: {other}"),
                    )),
                }
            };
            let insecure = match get(&t, "InsecureSkipVerify") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => b,
                Some(other) => {
                    return Err(invalid(
                        path,
                        format!("TLSConfig.InsecureSkipVerify is not a boolean: {other}"),
                    ))
                }
            };
            let ca_file = file("CAFile")?;
            Some(TlsConfig {
                // moby: a TLSConfig without CAFile does not verify the server.
                insecure_skip_verify: insecure || ca_file.is_none(),
                ca_file,
                cert_file: file("CertFile")?,
                key_file: file("KeyFile")?,
            })
        }
        Some(other) => {
            return Err(invalid(
                path,
                format!("TLSConfig is not an object: {other}"),
            ))
        }
    };
    transport_from_addr(path, addr.trim(), tls, false)
}

/// A transport for the address in spec file `spec`. `.spec` files (`from_spec`) get moby's
/// `NewLocalPlugin` TLS settings: verification off.
fn transport_from_addr(
    spec: &Path,
    addr: &str,
    tls: Option<TlsConfig>,
    from_spec: bool,
) -> Result<Transport, LookupError> {
    if addr.is_empty() {
        return Err(invalid(spec, "no address"));
    }
    let Some((scheme, rest)) = addr.split_once("://") else {
        return Err(invalid(
            spec,
            format!("Unknown protocol (address {addr:?} has no scheme)"),
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "unix" => {
            // `unix:///p` → `/p`; `unix://p` (moby: a path relative to its working directory) is
            // taken as `/p`.
            let path = if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            };
            if path == "/" {
                return Err(invalid(spec, format!("no socket path in {addr:?}")));
            }
            Ok(Transport::Unix(PathBuf::from(path)))
        }
        s @ ("tcp" | "http" | "https") => {
            let hostport = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if hostport.is_empty() {
                return Err(invalid(spec, format!("no host in {addr:?}")));
            }
            let scheme = if s == "https" { "https" } else { "http" };
            let tls = if from_spec {
                Some(TlsConfig {
                    insecure_skip_verify: true,
                    ..TlsConfig::default()
                })
            } else {
                tls
            };
            Ok(Transport::Tcp {
                url: format!("{scheme}://{hostport}"),
                tls,
            })
        }
        other => Err(invalid(
            spec,
            format!("unsupported protocol {other:?} in {addr:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn reg(dirs: &[&Path]) -> LegacyPlugins {
        LegacyPlugins::new(
            dirs.iter().map(|d| d.to_path_buf()).collect(),
            Duration::from_secs(1),
            None,
        )
    }

    /// Binds a socket file (the listener is dropped; the file stays, as a stale socket does).
    fn sock(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        drop(UnixListener::bind(path).unwrap());
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn socket_file_and_socket_in_own_dir() {
        let t = tempfile::tempdir().unwrap();
        sock(&t.path().join("a.sock"));
        sock(&t.path().join("b/b.sock"));
        let r = reg(&[t.path()]);
        assert_eq!(
            r.locate("a").unwrap(),
            Transport::Unix(t.path().join("a.sock"))
        );
        assert_eq!(
            r.locate("b").unwrap(),
            Transport::Unix(t.path().join("b/b.sock"))
        );
        assert_eq!(
            r.locate("c").unwrap_err().to_string(),
            "plugin \"c\" not found"
        );
        assert_eq!(r.names(), vec!["a", "b"]);
    }

    #[test]
    fn a_regular_file_named_sock_is_not_a_socket() {
        let t = tempfile::tempdir().unwrap();
        write(&t.path().join("a.sock"), "");
        let r = reg(&[t.path()]);
        assert!(matches!(r.locate("a"), Err(LookupError::NotFound(_))));
        assert!(r.names().is_empty());
    }

    #[test]
    fn spec_file_shapes() {
        let t = tempfile::tempdir().unwrap();
        write(&t.path().join("tcp.spec"), "tcp://127.0.0.1:8080\n");
        write(&t.path().join("unix.spec"), "  unix:///run/x/y.sock  ");
        write(&t.path().join("http.spec"), "http://localhost:99/some/path");
        write(&t.path().join("tls.spec"), "https://example.com:443");
        write(&t.path().join("nested/nested.spec"), "tcp://127.0.0.1:1");
        write(&t.path().join("noscheme.spec"), "127.0.0.1:8080");
        write(&t.path().join("empty.spec"), "\n");
        let r = reg(&[t.path()]);
        assert_eq!(
            r.locate("tcp").unwrap(),
            Transport::Tcp {
                url: "http://127.0.0.1:8080".into(),
                tls: Some(TlsConfig {
                    insecure_skip_verify: true,
                    ..Default::default()
                })
            }
        );
        assert_eq!(
            r.locate("unix").unwrap(),
            Transport::Unix("/run/x/y.sock".into())
        );
        assert!(
            matches!(r.locate("http").unwrap(), Transport::Tcp { url, .. } if url == "http://localhost:99")
        );
        assert!(
            matches!(r.locate("tls").unwrap(), Transport::Tcp { url, tls: Some(t) } if url == "https://example.com:443" && t.insecure_skip_verify)
        );
        assert!(
            matches!(r.locate("nested").unwrap(), Transport::Tcp { url, .. } if url == "http://127.0.0.1:1")
        );
        let e = r.locate("noscheme").unwrap_err();
        assert!(matches!(e, LookupError::InvalidSpec { .. }));
        assert!(e.to_string().contains("Unknown protocol"), "{e}");
        assert!(e.to_string().contains("noscheme.spec"), "{e}");
        assert!(matches!(
            r.locate("empty"),
            Err(LookupError::InvalidSpec { .. })
        ));
        assert_eq!(
            r.names(),
            vec!["empty", "http", "nested", "noscheme", "tcp", "tls", "unix"]
        );
    }

    #[test]
    fn json_spec_shapes() {
        let t = tempfile::tempdir().unwrap();
        write(
            &t.path().join("full.json"),
            r#"{"Name":"ignored","Addr":"https://127.0.0.1:4443","TLSConfig":{"InsecureSkipVerify":false,"CAFile":"/ca.pem","CertFile":"/cert.pem","KeyFile":"/key.pem"}}"#,
        );
        write(
            &t.path().join("noca.json"),
            r#"{"Addr":"https://h:1","TLSConfig":{"CertFile":"/c","KeyFile":"/k"}}"#,
        );
        write(&t.path().join("plain.json"), r#"{"addr":"tcp://h:2"}"#);
        write(
            &t.path().join("nested/nested.json"),
            r#"{"Addr":"unix:///s.sock"}"#,
        );
        write(&t.path().join("broken.json"), "{not json");
        write(&t.path().join("noaddr.json"), "{}");
        let r = reg(&[t.path()]);
        assert_eq!(
            r.locate("full").unwrap(),
            Transport::Tcp {
                url: "https://127.0.0.1:4443".into(),
                tls: Some(TlsConfig {
                    ca_file: Some("/ca.pem".into()),
                    cert_file: Some("/cert.pem".into()),
                    key_file: Some("/key.pem".into()),
                    insecure_skip_verify: false,
                })
            }
        );
        assert!(
            matches!(r.locate("noca").unwrap(), Transport::Tcp { tls: Some(t), .. } if t.insecure_skip_verify && t.cert_file.is_some())
        );
        assert_eq!(
            r.locate("plain").unwrap(),
            Transport::Tcp {
                url: "http://h:2".into(),
                tls: None
            }
        );
        assert_eq!(
            r.locate("nested").unwrap(),
            Transport::Unix("/s.sock".into())
        );
        let e = r.locate("broken").unwrap_err();
        assert!(
            e.to_string().starts_with("invalid plugin spec ")
                && e.to_string().contains("broken.json"),
            "{e}"
        );
        assert!(matches!(
            r.locate("noaddr"),
            Err(LookupError::InvalidSpec { .. })
        ));
    }

    #[test]
    fn search_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        // Sockets win over spec files, even when the spec is in an earlier directory.
        write(&a.path().join("p.spec"), "tcp://127.0.0.1:1");
        sock(&b.path().join("p.sock"));
        // `N.sock` before `N/N.sock`.
        sock(&b.path().join("q.sock"));
        sock(&b.path().join("q/q.sock"));
        // Earlier directories first for sockets.
        sock(&a.path().join("r/r.sock"));
        sock(&b.path().join("r.sock"));
        // Spec order inside a directory: N.spec, N/N.spec, N.json, N/N.json.
        write(&a.path().join("s/s.spec"), "tcp://127.0.0.1:2");
        write(&a.path().join("s.json"), r#"{"Addr":"tcp://127.0.0.1:3"}"#);
        write(&a.path().join("u.json"), r#"{"Addr":"tcp://127.0.0.1:4"}"#);
        write(
            &a.path().join("u/u.json"),
            r#"{"Addr":"tcp://127.0.0.1:5"}"#,
        );
        // Earlier directories first for specs, even a .json over a later .spec.
        write(&a.path().join("v.json"), r#"{"Addr":"tcp://127.0.0.1:6"}"#);
        write(&b.path().join("v.spec"), "tcp://127.0.0.1:7");
        let r = reg(&[a.path(), b.path()]);
        let url = |n: &str| match r.locate(n).unwrap() {
            Transport::Tcp { url, .. } => url,
            Transport::Unix(p) => p.display().to_string(),
        };
        assert_eq!(url("p"), b.path().join("p.sock").display().to_string());
        assert_eq!(url("q"), b.path().join("q.sock").display().to_string());
        assert_eq!(url("r"), a.path().join("r/r.sock").display().to_string());
        assert_eq!(url("s"), "http://127.0.0.1:2");
        assert_eq!(url("u"), "http://127.0.0.1:4");
        assert_eq!(url("v"), "http://127.0.0.1:6");
        assert_eq!(r.names(), vec!["p", "q", "r", "s", "u", "v"]);
    }

    #[test]
    fn managed_plugin_dirs_are_not_legacy_plugins() {
        let t = tempfile::tempdir().unwrap();
        let id = "3f4e0a1b2c3d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789ab";
        sock(&t.path().join(id).join("rclone.sock"));
        sock(&t.path().join(id).join("init.sock"));
        write(&t.path().join(id).join("init-stdout"), "");
        // A directory with an unrelated spec inside is not a plugin either.
        write(&t.path().join("x/other.spec"), "tcp://127.0.0.1:1");
        sock(&t.path().join("legacy/legacy.sock"));
        let r = reg(&[t.path()]);
        assert_eq!(r.names(), vec!["legacy"]);
        assert!(matches!(r.locate(id), Err(LookupError::NotFound(_))));
        assert!(matches!(r.locate("rclone"), Err(LookupError::NotFound(_))));
    }

    #[test]
    fn names_skip_missing_dirs_and_odd_entries() {
        let t = tempfile::tempdir().unwrap();
        write(&t.path().join("readme.txt"), "");
        write(&t.path().join(".spec"), "tcp://127.0.0.1:1");
        write(&t.path().join("ok.spec"), "tcp://127.0.0.1:1");
        write(&t.path().join("ok.json"), "{}");
        let r = reg(&[Path::new("/nonexistent/berth-test"), t.path()]);
        assert_eq!(r.names(), vec!["ok"]);
    }

    #[test]
    fn bad_names_are_never_looked_up() {
        let t = tempfile::tempdir().unwrap();
        write(&t.path().join("x/y.spec"), "tcp://127.0.0.1:1");
        let r = reg(&[t.path()]);
        for n in ["", ".", "..", "x/y", "a\0b"] {
            assert!(
                matches!(r.locate(n), Err(LookupError::NotFound(_))),
                "{n:?}"
            );
        }
    }

    #[test]
    fn implements_parsing() {
        let v = serde_json::json!({"Implements": ["VolumeDriver", "NetworkDriver"]});
        assert_eq!(
            parse_implements(&v).unwrap(),
            vec!["VolumeDriver", "NetworkDriver"]
        );
        assert!(parse_implements(&serde_json::json!({"implements": null}))
            .unwrap()
            .is_empty());
        assert!(parse_implements(&serde_json::json!({})).unwrap().is_empty());
        assert!(parse_implements(&serde_json::json!({"Implements": "x"})).is_err());
        assert!(parse_implements(&serde_json::json!([1])).is_err());
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            LookupError::NotFound("x".into()).to_string(),
            "plugin \"x\" not found"
        );
        assert_eq!(
            LookupError::DoesNotImplement {
                name: "x".into(),
                implements: "VolumeDriver".into()
            }
            .to_string(),
            "Plugin does not implement the requested driver: plugin=\"x\", requested implementation=\"VolumeDriver\""
        );
        assert!(LookupError::DoesNotImplement {
            name: "x".into(),
            implements: "y".into()
        }
        .to_string()
        .starts_with(ERR_NOT_IMPLEMENTS));
    }
}
