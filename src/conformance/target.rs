//! How a conformance run reaches the plugin under test.
//!
//! * a socket or a legacy spec file (`.spec`, `.json`, read by `rpc::discovery`): a plugin
//!   someone else runs;
//! * a plugin directory (rootfs + config.json) or a registry reference: berth runs it the way
//!   the daemon runs managed plugins (same store, run spec, namespaces executor and getter) in a
//!   private plugin store under a temporary data root, and can restart it; everything is removed
//!   afterwards;
//! * a managed plugin of a running berth: its socket and paths come from that daemon's
//!   `GET /plugins/{name}/endpoint` (a berth extension).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{ConformanceError, Protocol};
use crate::plugin::getter::{Capability, Mode, PluginGetter};
use crate::plugin::lifecycle::PublicEndpoint;
use crate::plugin::manager::{Manager, RuntimeOptions};
use crate::rpc::client::{PluginClient, Transport};
use crate::rpc::discovery::LegacyPlugins;
use crate::rpc::handle::{PathMapper, PluginHandle, PluginKind};

/// Restarts a plugin the harness runs; answers the new run's client.
#[async_trait::async_trait]
pub trait Restart: Send + Sync {
    async fn restart(&self) -> Result<PluginClient, String>;
}

/// The plugin under test.
pub struct Target {
    /// How it was reached, for the report.
    pub description: String,
    pub plugin: PluginHandle,
    /// A managed plugin's protocols by its config (`Interface.Types`); `None` for legacy
    /// plugins (their `Plugin.Activate` answer says).
    pub declared: Option<Vec<Protocol>>,
    /// Set when the harness runs the plugin.
    pub restart: Option<Box<dyn Restart>>,
    /// Whether the plugin's paths and interfaces can be looked at from here.
    pub host_visible: bool,
    /// What the harness started; stopped and removed when the target is dropped.
    _private: Option<PrivateStore>,
}

impl Target {
    /// A plugin answering on a unix socket (a running legacy plugin).
    pub fn socket(path: &Path, timeout: Duration) -> Result<Target, ConformanceError> {
        let transport = Transport::Unix(absolute(path)?);
        Target::legacy(stem(path), transport, timeout)
    }

    /// A legacy spec file: `.spec` (one URL) or `.json` (address and TLS settings).
    pub fn spec(path: &Path, timeout: Duration) -> Result<Target, ConformanceError> {
        let transport = crate::rpc::discovery::read_spec_file(&absolute(path)?)
            .map_err(|e| ConformanceError::Target(e.to_string()))?;
        Target::legacy(stem(path), transport, timeout)
    }

    fn legacy(
        name: String,
        transport: Transport,
        timeout: Duration,
    ) -> Result<Target, ConformanceError> {
        let host_visible = match &transport {
            Transport::Unix(_) => true,
            Transport::Tcp { url, .. } => ["127.", "localhost", "[::1]"].iter().any(|h| {
                url.split("://")
                    .nth(1)
                    .is_some_and(|rest| rest.starts_with(h))
            }),
        };
        let description = transport.address();
        let client = PluginClient::new(transport, Some(timeout))
            .map_err(|e| ConformanceError::Target(e.to_string()))?;
        Ok(Target {
            description,
            plugin: PluginHandle {
                name,
                kind: PluginKind::Legacy,
                client,
                paths: PathMapper::Identity,
            },
            declared: None,
            restart: None,
            host_visible,
            _private: None,
        })
    }

    /// A plugin directory (`config.json` + `rootfs/`), created and enabled in a private store.
    pub async fn directory(dir: &Path, timeout: Duration) -> Result<Target, ConformanceError> {
        if !dir.join("config.json").is_file() || !dir.join("rootfs").is_dir() {
            return Err(ConformanceError::Usage(format!(
                "{} is no plugin directory (config.json and rootfs/)",
                dir.display()
            )));
        }
        let store = PrivateStore::open(timeout)?;
        let context = tar_stream(dir.to_path_buf());
        let manager = store.manager.clone();
        let name = tokio::task::spawn_blocking(move || manager.create(PRIVATE_NAME, context))
            .await
            .map_err(|e| ConformanceError::Target(e.to_string()))?
            .map_err(|e| ConformanceError::Target(format!("plugin create: {}", e.message())))?;
        store
            .start(name, format!("plugin directory {}", dir.display()))
            .await
    }

    /// A plugin from a registry, pulled into a private store (`grant_all`: accept the
    /// privileges it asks for, as `docker plugin install --grant-all-permissions`).
    pub async fn registry(
        reference: &str,
        grant_all: bool,
        insecure_registries: Vec<String>,
        timeout: Duration,
    ) -> Result<Target, ConformanceError> {
        use crate::distribution::registry::AuthConfig;
        let names = crate::plugin::names::pull_names(reference, "")
            .map_err(|e| ConformanceError::Usage(e.to_string()))?;
        let store = PrivateStore::open_with(timeout, insecure_registries)?;
        let auth = AuthConfig::default();
        let privileges = store
            .manager
            .remote_privileges(&names.remote, &auth)
            .await
            .map_err(|e| ConformanceError::Target(e.message().to_string()))?
            .ok_or_else(|| ConformanceError::Target(format!("cannot fetch {reference}")))?;
        if !grant_all && !privileges.is_empty() {
            let asked: Vec<String> = privileges
                .iter()
                .map(|p| format!("{}: {:?}", p.name, p.value))
                .collect();
            return Err(ConformanceError::Usage(format!(
                "{reference} asks for privileges ({}); give --grant-all-permissions to grant them",
                asked.join("; ")
            )));
        }
        let name = names.name.clone();
        let mut progress = store
            .manager
            .pull(names, privileges, auth)
            .await
            .map_err(|e| ConformanceError::Target(format!("pull: {}", e.message())))?;
        let mut last_error = None;
        while let Some(chunk) = progress.recv().await {
            for line in chunk.split(|b| *b == b'\n') {
                if let Ok(v) = serde_json::from_slice::<Value>(line) {
                    if let Some(e) = v.get("error").and_then(Value::as_str) {
                        last_error = Some(e.to_string());
                    }
                }
            }
        }
        if let Some(e) = last_error {
            return Err(ConformanceError::Target(format!("pull {reference}: {e}")));
        }
        store.start(name, reference.to_string()).await
    }

    /// A managed plugin of the berth daemon at `host` (`unix:///run/berth/berth.sock`),
    /// found through that daemon's `GET /plugins/{name}/endpoint`.
    pub async fn berth(
        host: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<Target, ConformanceError> {
        let socket = host.strip_prefix("unix://").ok_or_else(|| {
            ConformanceError::Usage(format!("--host {host}: berth serves unix:// sockets only"))
        })?;
        let path = format!("/plugins/{name}/endpoint");
        let socket = PathBuf::from(socket);
        let answer = tokio::task::spawn_blocking(move || http_get(&socket, &path, timeout))
            .await
            .map_err(|e| ConformanceError::Target(e.to_string()))?
            .map_err(|e| ConformanceError::Target(format!("{host}: {e}")))?;
        let (status, body) = answer;
        if status != 200 {
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ConformanceError::Target(format!("{host}: {message}")));
        }
        let endpoint: PublicEndpoint = serde_json::from_slice(&body).map_err(|e| {
            ConformanceError::Target(format!("{host}: not a berth plugin endpoint: {e}"))
        })?;
        if !endpoint.enabled {
            return Err(ConformanceError::Usage(format!(
                "plugin {} is disabled: enable it first",
                endpoint.name
            )));
        }
        let client = PluginClient::new(Transport::Unix(endpoint.socket.clone()), Some(timeout))
            .map_err(|e| ConformanceError::Target(e.to_string()))?;
        Ok(Target {
            description: format!("managed plugin of {host}"),
            plugin: PluginHandle {
                name: endpoint.name.clone(),
                kind: PluginKind::Managed {
                    id: endpoint.id.clone(),
                },
                client,
                paths: PathMapper::Managed {
                    propagated_mount: endpoint.propagated_mount.clone(),
                    host_propagated: endpoint.host_propagated_mount.clone(),
                    rootfs: endpoint.rootfs.clone(),
                },
            },
            declared: Some(
                endpoint
                    .types
                    .iter()
                    .filter_map(|t| Protocol::from_interface_type(t))
                    .collect(),
            ),
            restart: None,
            host_visible: true,
            _private: None,
        })
    }
}

/// `GET path` over HTTP/1.0 on a unix socket: status and body.
fn http_get(socket: &Path, path: &str, timeout: Duration) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::Write;
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: berth\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    Ok((status, raw[split + 4..].to_vec()))
}

/// The name plugins get in a private store.
const PRIVATE_NAME: &str = "berth-conformance/plugin:latest";

/// A plugin store of its own under a temporary directory: the daemon's manager, executor and
/// getter, nothing shared with a running berth.
struct PrivateStore {
    root: PathBuf,
    manager: Arc<Manager>,
    timeout: Duration,
}

impl PrivateStore {
    fn open(timeout: Duration) -> Result<PrivateStore, ConformanceError> {
        PrivateStore::open_with(timeout, Vec::new())
    }

    fn open_with(
        timeout: Duration,
        insecure_registries: Vec<String>,
    ) -> Result<PrivateStore, ConformanceError> {
        use crate::distribution::registry::{RegistryClient, RegistryOptions};
        // Short: plugin socket paths under it must fit a sockaddr.
        let root = PathBuf::from(format!("/tmp/bconf-{}", crate::fsutil::random_hex(4)));
        let data = root.join("d");
        let exec = root.join("x");
        std::fs::create_dir_all(&data)?;
        std::fs::create_dir_all(&exec)?;
        let registry = RegistryClient::new(RegistryOptions {
            insecure_registries,
            ..RegistryOptions::default()
        })
        .map_err(|e| ConformanceError::Target(e.to_string()))?;
        let manager = Manager::open(
            &data,
            &exec,
            crate::runtime::executor_for(crate::runtime::PluginRuntime::default(), &exec),
            RuntimeOptions {
                start_timeout: Duration::from_secs(30),
                stop_grace: Duration::from_secs(5),
                ..RuntimeOptions::default()
            },
            registry,
            // Nobody subscribes to a private store's events.
            crate::events::EventBus::new(),
        )
        .map_err(|e| ConformanceError::Target(format!("private plugin store: {}", e.message())))?;
        Ok(PrivateStore {
            root,
            manager: Arc::new(manager),
            timeout,
        })
    }

    /// Enables plugin `name` and makes the target.
    async fn start(self, name: String, description: String) -> Result<Target, ConformanceError> {
        let plugin = self
            .manager
            .get(&name)
            .map_err(|e| ConformanceError::Target(e.message().to_string()))?;
        let declared: Vec<Protocol> = plugin
            .config
            .interface
            .types
            .iter()
            .flatten()
            .filter_map(|t| Protocol::from_interface_type(t))
            .collect();
        let capability = declared
            .first()
            .and_then(|p| capability_of(*p))
            .ok_or_else(|| {
                ConformanceError::Target(format!(
                    "the plugin's Interface.Types name no protocol berth can check: {:?}",
                    plugin.config.interface.types
                ))
            })?;
        let restarter = Restarter {
            manager: self.manager.clone(),
            getter: Arc::new(PluginGetter::new(
                self.manager.clone(),
                LegacyPlugins::new(Vec::new(), Duration::from_secs(1), Some(self.timeout)),
                self.timeout,
            )),
            name: name.clone(),
            capability,
            timeout: self.timeout,
        };
        let mut target = Target {
            description,
            plugin: restarter.enable().await?,
            declared: Some(declared),
            restart: None,
            host_visible: true,
            _private: Some(self),
        };
        target.restart = Some(Box::new(restarter));
        Ok(target)
    }
}

/// Whatever happened, the plugins stop and the store goes.
impl Drop for PrivateStore {
    fn drop(&mut self) {
        for plugin in self
            .manager
            .list(crate::plugin::manager::EnabledFilter::Any, |_| true)
        {
            let _ = self.manager.remove(&plugin.id, true);
        }
        self.manager.shutdown();
        let _ = crate::fsutil::remove_all(&self.root);
    }
}

struct Restarter {
    manager: Arc<Manager>,
    getter: Arc<PluginGetter>,
    name: String,
    capability: Capability,
    timeout: Duration,
}

impl Restarter {
    async fn enable(&self) -> Result<PluginHandle, ConformanceError> {
        let manager = self.manager.clone();
        let name = self.name.clone();
        let timeout = self.timeout;
        tokio::task::spawn_blocking(move || manager.enable(&name, timeout))
            .await
            .map_err(|e| ConformanceError::Target(e.to_string()))?
            .map_err(|e| ConformanceError::Target(format!("plugin enable: {}", e.message())))?;
        self.getter
            .get(&self.name, self.capability, Mode::Lookup)
            .await
            .map_err(|e| ConformanceError::Target(e.to_string()))
    }
}

#[async_trait::async_trait]
impl Restart for Restarter {
    async fn restart(&self) -> Result<PluginClient, String> {
        let manager = self.manager.clone();
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || manager.disable(&name, true))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.message().to_string())?;
        self.enable()
            .await
            .map(|handle| handle.client)
            .map_err(|e| e.to_string())
    }
}

fn capability_of(p: Protocol) -> Option<Capability> {
    match p {
        Protocol::Volume => Some(Capability::VolumeDriver),
        Protocol::Network => Some(Capability::NetworkDriver),
        Protocol::Ipam => Some(Capability::IpamDriver),
        Protocol::Authz => Some(Capability::Authz),
        Protocol::Log => Some(Capability::LogDriver),
        Protocol::Transport => None,
    }
}

/// `dir` as the tar `docker plugin create` uploads, written by a thread as it is read.
fn tar_stream(dir: PathBuf) -> impl Read + Send {
    let (reader, writer) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    std::thread::spawn(move || {
        let mut builder = tar::Builder::new(writer);
        builder.follow_symlinks(false);
        builder.sparse(false);
        if let Err(e) = builder
            .append_dir_all(".", &dir)
            .and_then(|()| builder.finish())
        {
            log::warn!("packing {}: {e}", dir.display());
        }
    });
    reader
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn absolute(path: &Path) -> Result<PathBuf, ConformanceError> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    })
}
