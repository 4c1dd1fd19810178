//! `berth daemon`: the one place the daemon is wired together and run.
//!
//! Order of start-up: the data and exec roots are locked first (a second daemon on them stops
//! before touching anything); then the sockets (the API's, created or passed by systemd, and
//! the metrics sockets), so clients queue instead of failing and a second daemon on the same
//! socket stops before touching any plugin; then the plugin store and the plugins that were
//! enabled; then the services, and what a crash interrupted in the network store is finished
//! or undone; then the API is served and, once its workers and accept loop run (every
//! connection from then on is answered), systemd is told READY.
//! SIGHUP reloads the configuration ([`reload`]); SIGTERM or SIGINT stops the API, tells
//! MetricsCollector plugins to stop, closes the side sockets and stops every plugin (their
//! enabled state stays recorded, so they run again at the next start).

mod follow;
mod listeners;
pub mod reload;
pub mod side;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::api::{self, version::DEFAULT_API_VERSION, ApiState};
use crate::authz::Chain;
use crate::config::{DaemonConfig, DaemonFlags, Host, MetricsAddr};
use crate::distribution::extract::UnpackLimit;
use crate::distribution::registry::{RegistryClient, RegistryOptions};
use crate::events::EventBus;
use crate::logforward::LogForwarder;
use crate::network::service::{NetworkOptions, NetworkService};
use crate::plugin::getter::PluginGetter;
use crate::plugin::manager::{Manager, RuntimeOptions};
use crate::rootlock::RootLock;
use crate::rpc::discovery::LegacyPlugins;
use crate::systemd::{notify, DaemonState, PassedSockets};
use crate::volume::service::VolumeService;
pub use follow::volume_plugin_socket;
use listeners::ApiListeners;
use side::{Handler, SideListener, SideResponse, SideServer};

/// How long a legacy plugin whose socket or spec exists may take to answer its activation
/// (moby retries for about 15 s).
const LEGACY_ACTIVATION_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs the daemon until SIGTERM or SIGINT. `passed`: the sockets systemd passed (taken from
/// the environment before any thread started).
pub fn run(
    flags: DaemonFlags,
    config: DaemonConfig,
    mut passed: PassedSockets,
) -> anyhow::Result<()> {
    for dir in [&config.data_root, &config.exec_root] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
    }
    // Before anything below the roots is touched: start-up clean-up would harm a daemon
    // already using them.
    let _locks = lock_roots(&config)?;
    let api_listeners = ApiListeners::open(&config.hosts, &mut passed)?;
    let metrics_listeners = match &config.metrics_addr {
        Some(addr) => {
            crate::metrics::enable();
            metrics_listeners(addr, &config.metrics_socket())?
        }
        None => Vec::new(),
    };

    let executor = crate::runtime::executor_for(config.plugin_runtime, &config.exec_root);
    log::info!(
        "plugins run with the {} runtime",
        config.plugin_runtime.name()
    );
    let options = RuntimeOptions {
        start_timeout: config.plugin_start_timeout,
        metrics_socket: config
            .metrics_addr
            .as_ref()
            .map(|_| config.metrics_socket()),
        ..RuntimeOptions::default()
    };
    let registry = RegistryClient::new(RegistryOptions {
        insecure_registries: config.insecure_registries.clone(),
        mirrors: config.registry_mirrors.clone(),
        ..RegistryOptions::default()
    })
    .context("configuring the registry client")?;
    // In memory only: events do not survive a restart (as with dockerd).
    let events = EventBus::new();
    let manager = Manager::open(
        &config.data_root,
        &config.exec_root,
        executor,
        options,
        registry,
        events.clone(),
    )
    .context("opening the plugin store")?
    .with_unpack_limit(UnpackLimit::new(config.max_unpacked_size));
    let manager = Arc::new(manager);
    manager.publish_metrics();
    let legacy = LegacyPlugins::new(
        config.legacy_plugin_dirs.clone(),
        LEGACY_ACTIVATION_TIMEOUT,
        Some(config.plugin_call_timeout),
    )
    .with_scan_timeout(config.plugin_call_timeout);
    let getter = Arc::new(PluginGetter::new(
        manager.clone(),
        legacy,
        config.plugin_call_timeout,
    ));
    if let Some(driver) = &config.plugin_log_driver {
        // Before plugins start, so that their first lines are shipped too.
        manager.set_log_sink(LogForwarder::start(
            getter.clone(),
            driver.clone(),
            config.exec_root.join("logging"),
        ));
    }
    // Plugins that were enabled run again before the API answers.
    manager.restore();
    let volumes = Arc::new(
        VolumeService::open(&config.data_root, getter.clone(), events.clone())
            .context("opening the volume store")?,
    );
    let mut network_options = NetworkOptions::default();
    if !config.default_address_pools.is_empty() {
        network_options.default_address_pools = config.default_address_pools.clone();
    }
    network_options.default_bridge = config.default_bridge.clone();
    let networks = Arc::new(
        NetworkService::open(&config.data_root, getter.clone(), network_options)
            .context("opening the network store")?,
    );
    // Reference counts follow from the records; set_references replaces what was counted, so
    // every kind of user's references go in together.
    getter.set_references(
        volumes
            .plugin_references()
            .iter()
            .chain(networks.plugin_references().iter())
            .map(String::as_str),
    );
    let ApiListeners { listeners, created } = api_listeners;
    for host in &config.hosts {
        log::info!("API listen on {host}");
    }

    let reloader = reload::Reloader::new(flags, config.clone());
    let follower = follow::Follower::new(
        getter.clone(),
        volumes.clone(),
        &config.exec_root,
        config.metrics_addr.is_some(),
    );
    let served = actix_rt::System::new().block_on(async {
        // SIGHUP is watched from here on: its default action would end the daemon.
        let mut reloads = reloader.watch().context("watching for SIGHUP")?;
        // Every authorization plugin must be there before the API answers, as dockerd checks.
        let authz = Chain::resolve(
            getter,
            &config.authorization_plugins,
            config.authz_peer_credentials,
        )
        .await
        .map(Arc::new)?;
        let chain = authz.clone();
        reloads.hook(
            "authorization plugins",
            Box::new(move |config| {
                let chain = chain.clone();
                Box::pin(async move {
                    match chain.reload(&config.authorization_plugins).await {
                        Ok(()) => Ok(format!("authorization plugins {:?}", chain.names())),
                        Err(e) => Err(format!("{e}; the chain stays {:?}", chain.names())),
                    }
                })
            }),
        );
        let state = ApiState {
            volumes,
            networks: networks.clone(),
            plugins: manager.clone(),
            events,
            authz,
            daemon: api::system_identity(DEFAULT_API_VERSION, &config.data_root, &config.exec_root),
            uploads: api::body::Uploads::new(api::body::BodyLimits {
                idle_timeout: config.body_idle_timeout,
                max_concurrent_uploads: config.max_concurrent_uploads,
            }),
        };
        let _metrics_servers = serve_metrics(metrics_listeners)?;
        let (stop_following, following) = tokio::sync::oneshot::channel();
        let followed = actix_rt::spawn(follower.run(following));
        actix_rt::spawn(reloads.run());
        // What a crash interrupted is finished or undone before the API answers.
        networks.recover().await;
        if let Err(e) = networks.ensure_default_bridge().await {
            let _ = stop_following.send(());
            let _ = followed.await;
            return Err(anyhow::Error::from(e).context(
                "Error initializing network controller: Error creating default \"bridge\" network",
            ));
        }
        let served = api::serve(state, listeners, || {
            log::info!("Daemon has completed initialization");
            notify(DaemonState::Ready, "Serving the API");
        })
        .await;
        notify(DaemonState::Stopping, "Stopping plugins");
        let _ = stop_following.send(());
        let _ = followed.await;
        anyhow::Ok(served)
    });
    for path in &created {
        let _ = std::fs::remove_file(path);
    }
    manager.shutdown();
    log::info!("daemon stopped");
    served?.context("serving the API")
}

/// Locks the data root and the exec root (once when they are the same directory), naming the
/// sockets berth creates as the holder's.
fn lock_roots(config: &DaemonConfig) -> anyhow::Result<Vec<RootLock>> {
    let sockets: Vec<PathBuf> = config
        .hosts
        .iter()
        .filter_map(|host| match host {
            Host::Unix(path) => Some(path.clone()),
            Host::Systemd(_) => None,
        })
        .collect();
    let mut roots = vec![config.data_root.canonicalize()?];
    let exec_root = config.exec_root.canonicalize()?;
    if exec_root != roots[0] {
        roots.push(exec_root);
    }
    roots
        .iter()
        .map(|root| RootLock::acquire(root, &sockets).map_err(anyhow::Error::from))
        .collect()
}

/// The metrics sockets: `--metrics-addr`, and the socket MetricsCollector plugins scrape
/// (one socket when both are the same path).
fn metrics_listeners(
    addr: &MetricsAddr,
    plugin_socket: &Path,
) -> anyhow::Result<Vec<(SideListener, Option<PathBuf>)>> {
    let mut listeners = vec![(
        SideListener::bind_unix(plugin_socket, 0o660)?,
        Some(plugin_socket.to_path_buf()),
    )];
    match addr {
        MetricsAddr::Unix(path) if path == plugin_socket => {}
        MetricsAddr::Unix(path) => {
            listeners.push((SideListener::bind_unix(path, 0o660)?, Some(path.clone())))
        }
        MetricsAddr::Tcp(addr) => listeners.push((SideListener::bind_tcp(*addr)?, None)),
    }
    Ok(listeners)
}

fn serve_metrics(
    listeners: Vec<(SideListener, Option<PathBuf>)>,
) -> anyhow::Result<Vec<SideServer>> {
    let handler: Handler = Rc::new(|request| {
        Box::pin(async move {
            match (request.method, request.path.as_str()) {
                (hyper::Method::GET, "/metrics") => SideResponse {
                    status: 200,
                    content_type: crate::metrics::CONTENT_TYPE,
                    body: crate::metrics::encode().into(),
                },
                _ => SideResponse::text(404, "404 page not found\n"),
            }
        })
    });
    listeners
        .into_iter()
        .map(|(listener, socket)| side::serve(listener, socket, handler.clone()))
        .collect()
}
