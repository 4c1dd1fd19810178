//! The `berth` command: `berth daemon` runs the daemon (see `berth::daemon`), `berth plugin
//! ps|exec` debug running plugins (a client of the daemon, see `berth::cli`), `berth
//! conformance` checks a plugin against its protocols (see `berth::conformance`), `berth version`
//! prints what was built.

use std::io::Write;

use clap::{Parser, Subcommand};

use berth::config::DaemonFlags;
use berth::systemd::PassedSockets;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    propagate_version = true,
    about = "Docker Engine API plugin and volume daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (in the foreground; SIGTERM or Ctrl-C stops it, SIGHUP reloads its
    /// configuration file)
    // `berth daemon --version` says `berth`, not clap's `berth-daemon`.
    #[command(display_name = "berth")]
    Daemon(Box<DaemonFlags>),
    /// Debug running plugins
    Plugin(PluginArgs),
    /// Show the version, commit, compiler and API versions of this build
    Version,
    /// Check a plugin against the plugin protocols (exit status 1 when a check fails)
    // Boxed as the daemon's: its flags are far larger than the other commands'.
    Conformance(Box<berth::conformance::cli::ConformanceFlags>),
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
        Command::Daemon(flags) => run_daemon(*flags),
        Command::Plugin(plugin) => match run_plugin_command(plugin) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("{e:#}");
                std::process::exit(1);
            }
        },
        Command::Version => {
            print!("{}", berth::api::build_description());
            Ok(())
        }
        Command::Conformance(flags) => {
            init_logging(log::LevelFilter::Warn);
            std::process::exit(berth::conformance::cli::run(*flags))
        }
    };
    if let Err(e) = result {
        log::error!("{e:#}");
        eprintln!("berth: {e:#}");
        std::process::exit(1);
    }
}

fn run_daemon(flags: DaemonFlags) -> anyhow::Result<()> {
    // SAFETY: no other thread exists yet (logging and the runtime start below).
    let passed = unsafe { PassedSockets::take_from_env() }?;
    let config = flags.resolve()?;
    init_logging(config.log_level);
    // dockerd refuses to start without a file its --config-file names; berth's tests and
    // benchmarks name absent files to keep the machine's own out of their daemons, so it is
    // only said.
    if let Some(named) = flags.config_file.as_deref().filter(|f| !f.exists()) {
        log::warn!(
            "configuration file {} does not exist: flags and defaults only",
            named.display()
        );
    }
    berth::daemon::run(flags, config, passed)
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
        // The level is the global maximum set below, so SIGHUP can change it.
        .filter_level(log::LevelFilter::Trace)
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
    log::set_max_level(level);
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn daemon_help_shows_every_default() {
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("daemon")
            .unwrap()
            .render_long_help()
            .to_string();
        let config = berth::config::DaemonFlags::default().resolve().unwrap();
        let mut defaults = vec![
            berth::config::DEFAULT_HOST.to_string(),
            berth::config::DEFAULT_DATA_ROOT.to_string(),
            berth::config::DEFAULT_EXEC_ROOT.to_string(),
            berth::config::DEFAULT_CONFIG_FILE.to_string(),
            format!("[default: {}]", berth::config::DEFAULT_LOG_LEVEL),
            format!("[default: {}]", config.plugin_start_timeout.as_secs()),
            format!("[default: {}]", config.plugin_call_timeout.as_secs()),
            format!("[default: {}]", config.body_idle_timeout.as_secs()),
            format!("[default: {}]", config.max_concurrent_uploads),
            format!("[default: {}]", config.max_unpacked_size),
            format!("[default: {}]", config.plugin_runtime.name()),
            "[default: off]".to_string(),
        ];
        defaults.extend(
            berth::config::DEFAULT_LEGACY_PLUGIN_DIRS
                .iter()
                .map(|d| d.to_string()),
        );
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for default in defaults {
            assert!(flat.contains(&default), "{default} missing from:\n{help}");
        }
    }

    #[test]
    fn bad_flags_are_refused_naming_the_flag() {
        for (args, flag) in [
            ("--log-level verbose", "--log-level"),
            ("-H tcp://0.0.0.0:2375", "--host"),
            ("--metrics-addr x:y", "--metrics-addr"),
            ("--plugin-call-timeout 0", "--plugin-call-timeout"),
            ("--plugin-runtime runsc", "--plugin-runtime"),
            ("--max-concurrent-uploads 0", "--max-concurrent-uploads"),
        ] {
            let args = ["berth", "daemon"].into_iter().chain(args.split(' '));
            let err = Cli::try_parse_from(args)
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains(flag), "{err}");
            assert!(!err.contains("daemon.json"), "{err}");
        }
        assert!(Cli::try_parse_from(["berth", "daemon", "--version"])
            .is_err_and(|e| e.kind() == clap::error::ErrorKind::DisplayVersion));
    }
}
