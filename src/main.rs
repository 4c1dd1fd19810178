//! The `berth` command.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use berth::api::{self, version::DEFAULT_API_VERSION, ApiState};
use berth::config::{DaemonConfig, DaemonFlags};
use berth::plugin::manager::Manager;

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
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Daemon(flags) => flags.resolve().and_then(run_daemon),
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
        .format(|buf, record| {
            writeln!(
                buf,
                "time=\"{}\" level={} msg=\"{}\"",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                record.level().as_str().to_ascii_lowercase(),
                record.args().to_string().replace('"', "\\\"")
            )
        })
        .init();
}

fn run_daemon(config: DaemonConfig) -> anyhow::Result<()> {
    init_logging(config.log_level);
    for dir in [&config.data_root, &config.exec_root] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
    }
    let manager = Manager::open(&config.data_root).context("opening the plugin store")?;
    let listeners = config
        .sockets
        .iter()
        .map(|path| bind_socket(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let state = ApiState {
        plugins: Arc::new(manager),
        daemon: api::system_identity(DEFAULT_API_VERSION, &config.data_root, &config.exec_root),
    };
    for path in &config.sockets {
        log::info!("API listen on {}", path.display());
    }
    let served = actix_rt::System::new().block_on(api::serve(state, listeners));
    for path in &config.sockets {
        let _ = std::fs::remove_file(path);
    }
    log::info!("daemon stopped");
    served.context("serving the API")
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
