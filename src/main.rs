//! The `berth` command.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use berth::api::{self, version::DEFAULT_API_VERSION, ApiState};
use berth::authz::Chain;
use berth::config::{DaemonConfig, DaemonFlags};
use berth::distribution::registry::{RegistryClient, RegistryOptions};
use berth::events::EventBus;
use berth::logforward::LogForwarder;
use berth::plugin::getter::PluginGetter;
use berth::plugin::manager::{Manager, RuntimeOptions};
use berth::rpc::discovery::LegacyPlugins;
use berth::volume::service::VolumeService;

/// How long a legacy plugin whose socket or spec exists may take to answer its activation
/// (moby retries for about 15 s).
const LEGACY_ACTIVATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Docker Engine API plugin and volume daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon
    Daemon(DaemonFlags),
    /// Check a plugin against the plugin protocols (exit status 1 when a check fails)
    Conformance(berth::conformance::cli::ConformanceFlags),
}

fn main() {
    // The executor re-executes this binary to set up a plugin's namespaces in a fresh,
    // single-threaded process; that entry point bypasses flag parsing.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "plugin-init") {
        berth::runtime::plugin_init(&args[2..]);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Daemon(flags) => flags
            .resolve()
            .and_then(|config| run_daemon(&flags, config)),
        Command::Conformance(flags) => {
            init_logging(log::LevelFilter::Warn);
            std::process::exit(berth::conformance::cli::run(flags))
        }
    };
    if let Err(e) = result {
        log::error!("{e:#}");
        eprintln!("berth: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(level: log::LevelFilter) {
    env_logger::Builder::new()
        .filter_level(level)
        // actix's own start-up chatter is not the daemon's business at info level.
        .filter_module("actix_server", log::LevelFilter::Warn)
        .format(|buf, record| {
            write!(
                buf,
                "time=\"{}\" level={} msg=\"{}\"",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                record.level().as_str().to_ascii_lowercase(),
                record.args().to_string().replace('"', "\\\"")
            )?;
            // Key-value pairs such as `plugin=<id>` follow the message, as in dockerd's log.
            let mut fields = KeyValues(buf);
            let _ = record.key_values().visit(&mut fields);
            writeln!(fields.0)
        })
        .init();
}

struct KeyValues<'a>(&'a mut env_logger::fmt::Formatter);

impl<'kvs> log::kv::VisitSource<'kvs> for KeyValues<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        write!(self.0, " {key}={value}").map_err(|_| log::kv::Error::msg("write failed"))
    }
}

fn run_daemon(flags: &DaemonFlags, config: DaemonConfig) -> anyhow::Result<()> {
    init_logging(config.log_level);
    for dir in [&config.data_root, &config.exec_root] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
    }
    let executor = berth::runtime::default_executor(&config.exec_root);
    let options = RuntimeOptions {
        start_timeout: config.plugin_start_timeout,
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
    .context("opening the plugin store")?;
    let manager = Arc::new(manager);
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
    let system = actix_rt::System::new();
    // SIGHUP is watched from here on (its default action would end the daemon); every
    // authorization plugin must be there before the API answers (as dockerd checks).
    let (hangups, authz) = system.block_on(async {
        let hangups = actix_rt::signal::unix::signal(actix_rt::signal::unix::SignalKind::hangup());
        let chain = Chain::resolve(
            getter.clone(),
            &config.authorization_plugins,
            config.authz_peer_credentials,
        )
        .await;
        (hangups, chain)
    });
    let authz = match authz {
        Ok(chain) => Arc::new(chain),
        Err(e) => {
            manager.shutdown();
            return Err(e.into());
        }
    };
    let hangups = hangups.context("watching for SIGHUP")?;
    let listeners = config
        .sockets
        .iter()
        .map(|path| bind_socket(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let volumes = VolumeService::open(&config.data_root, getter, events.clone())
        .context("opening the volume store")?;
    let state = ApiState {
        volumes: Arc::new(volumes),
        plugins: manager.clone(),
        events,
        authz: authz.clone(),
        daemon: api::system_identity(DEFAULT_API_VERSION, &config.data_root, &config.exec_root),
    };
    for path in &config.sockets {
        log::info!("API listen on {}", path.display());
    }
    let served = system.block_on(async {
        actix_rt::spawn(reload_on_hangup(hangups, flags.clone(), authz));
        api::serve(state, listeners).await
    });
    for path in &config.sockets {
        let _ = std::fs::remove_file(path);
    }
    manager.shutdown();
    log::info!("daemon stopped");
    served.context("serving the API")
}

/// SIGHUP reloads the configuration file, as dockerd does; what it changes is the
/// authorization chain: the file's `authorization-plugins`, else the flags' list. A file that
/// cannot be used, or a name that does not resolve, leaves the chain as it was (dockerd exits).
async fn reload_on_hangup(
    mut hangups: actix_rt::signal::unix::Signal,
    flags: DaemonFlags,
    authz: Arc<Chain>,
) {
    while hangups.recv().await.is_some() {
        log::info!(
            "Got signal to reload configuration, reloading from: {}",
            flags.config_file.display()
        );
        let config = match flags.resolve() {
            Ok(config) => config,
            Err(e) => {
                log::error!("{e:#}");
                continue;
            }
        };
        match authz.reload(&config.authorization_plugins).await {
            Ok(()) => log::info!(
                "Reloaded configuration: authorization plugins {:?}",
                authz.names()
            ),
            Err(e) => log::error!("{e}; the authorization chain stays {:?}", authz.names()),
        }
    }
}

/// Binds a unix socket: a stale socket file left by a dead daemon is replaced, a live one is
/// refused. Mode 0660, group `docker` when that group exists (as dockerd does).
fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() || std::fs::symlink_metadata(path).is_ok() {
        if UnixStream::connect(path).is_ok() {
            bail!("another daemon is already listening on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("docker") {
        nix::unistd::chown(path, None, Some(group.gid))
            .with_context(|| format!("giving {} to group docker", path.display()))?;
    }
    Ok(listener)
}
