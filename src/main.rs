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
use berth::distribution::extract::UnpackLimit;
use berth::distribution::registry::{RegistryClient, RegistryOptions};
use berth::events::EventBus;
use berth::network::service::{NetworkOptions, NetworkService};
use berth::plugin::getter::PluginGetter;
use berth::plugin::manager::{Manager, RuntimeOptions};
use berth::rootlock::RootLock;
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
    // Boxed: its flags are far larger than the other commands'.
    Daemon(Box<DaemonFlags>),
    /// Debug running plugins
    Plugin(PluginArgs),
}

#[derive(clap::Args)]
struct PluginArgs {
    /// The daemon's socket [default: DOCKER_HOST when it is unix://, else unix:///run/berth/berth.sock]
    #[arg(short = 'H', long = "host", value_name = "unix://PATH", global = true)]
    host: Option<String>,
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// List running plugins: ID, name, PID, status, since, runtime
    Ps {
        /// Full plugin IDs
        #[arg(long)]
        no_trunc: bool,
        /// Only IDs
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run a command inside a running plugin (its namespaces, root, cgroups and capabilities)
    Exec {
        /// Allocate a pseudo-TTY
        #[arg(short = 't', long)]
        tty: bool,
        /// Accepted for docker habits: stdin is always attached
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Set an environment variable (K=V, or K for this shell's value of K); repeatable
        #[arg(short = 'e', long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// Working directory inside the plugin [default: the plugin's]
        #[arg(short = 'w', long = "workdir", value_name = "DIR")]
        workdir: Option<String>,
        /// Plugin name, ID or ID prefix
        name: String,
        /// The command and its arguments
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

fn main() {
    // The executor re-executes this binary to set up a plugin's namespaces in a fresh,
    // single-threaded process; that entry point bypasses flag parsing.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "plugin-init") {
        berth::runtime::plugin_init(&args[2..]);
    }
    if args.get(1).is_some_and(|a| a == "runtime-shim") {
        berth::runtime::runtime_shim(&args[2..]);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Daemon(flags) => flags
            .resolve()
            .and_then(|config| run_daemon(&flags, config)),
        Command::Plugin(plugin) => match run_plugin_command(plugin) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("{e:#}");
                std::process::exit(1);
            }
        },
    };
    if let Err(e) = result {
        log::error!("{e:#}");
        eprintln!("berth: {e:#}");
        std::process::exit(1);
    }
}

/// `berth plugin ...`: a client of the daemon; returns the exit status.
fn run_plugin_command(args: PluginArgs) -> anyhow::Result<i32> {
    let socket = berth::cli::daemon_socket(args.host.as_deref())?;
    match args.command {
        PluginCommand::Ps { no_trunc, quiet } => {
            berth::cli::ps(&socket, no_trunc, quiet).map(|()| 0)
        }
        PluginCommand::Exec {
            tty,
            interactive: _,
            env,
            workdir,
            name,
            command,
        } => {
            let options = berth::runtime::exec::ExecOptions {
                command,
                env: berth::cli::exec_env(env, |k| std::env::var(k).ok()),
                workdir,
                tty,
            };
            berth::cli::exec(&socket, &name, &options)
        }
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
    // Before anything below the roots is touched: start-up clean-up would harm a daemon
    // already using them.
    let _locks = lock_roots(&config)?;
    let executor = berth::runtime::executor_for(config.plugin_runtime, &config.exec_root);
    log::info!(
        "plugins run with the {} runtime",
        config.plugin_runtime.name()
    );
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
    .context("opening the plugin store")?
    .with_unpack_limit(UnpackLimit::new(config.max_unpacked_size));
    let manager = Arc::new(manager);
    // Plugins that were enabled run again before the API answers.
    manager.restore();
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
    let volumes = VolumeService::open(&config.data_root, getter.clone(), events.clone())
        .context("opening the volume store")?;
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
    let state = ApiState {
        volumes: Arc::new(volumes),
        networks: networks.clone(),
        plugins: manager.clone(),
        events,
        authz: authz.clone(),
        daemon: api::system_identity(DEFAULT_API_VERSION, &config.data_root, &config.exec_root),
        uploads: api::body::Uploads::new(api::body::BodyLimits {
            idle_timeout: config.body_idle_timeout,
            max_concurrent_uploads: config.max_concurrent_uploads,
        }),
    };
    for path in &config.sockets {
        log::info!("API listen on {}", path.display());
    }
    // What a crash interrupted is finished or undone before the API answers.
    let networks_ready = system.block_on(async {
        networks.recover().await;
        networks.ensure_default_bridge().await
    });
    let served = match networks_ready {
        Ok(()) => system
            .block_on(async {
                actix_rt::spawn(reload_on_hangup(hangups, flags.clone(), authz));
                api::serve(state, listeners).await
            })
            .context("serving the API"),
        Err(e) => Err(anyhow::Error::from(e).context(
            "Error initializing network controller: Error creating default \"bridge\" network",
        )),
    };
    for path in &config.sockets {
        let _ = std::fs::remove_file(path);
    }
    manager.shutdown();
    log::info!("daemon stopped");
    served
}

/// Locks the data root and the exec root (once when they are the same directory).
fn lock_roots(config: &DaemonConfig) -> anyhow::Result<Vec<RootLock>> {
    let mut roots = vec![config.data_root.canonicalize()?];
    let exec_root = config.exec_root.canonicalize()?;
    if exec_root != roots[0] {
        roots.push(exec_root);
    }
    roots
        .iter()
        .map(|root| RootLock::acquire(root, &config.sockets).map_err(anyhow::Error::from))
        .collect()
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
