//! `berth conformance`: flags, target choice, output, exit status (0: nothing failed, 1: a
//! check failed, 2: the run could not be made).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::report::Report;
use super::target::Target;
use super::{ConformanceError, Options, Protocol};

/// Flags of `berth conformance`.
#[derive(Debug, Clone, Args)]
pub struct ConformanceFlags {
    /// A plugin directory (config.json + rootfs/) or a registry reference; berth runs it in its
    /// namespaces, checks it and removes it
    #[arg(value_name = "DIR|REFERENCE")]
    pub target: Option<String>,
    /// The unix socket of a running plugin
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// A legacy plugin spec file (.spec: unix://, tcp://, https:// URL; .json: address and TLS)
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// A managed plugin of the berth daemon given with --host
    #[arg(long, value_name = "NAME", requires = "host")]
    pub plugin: Option<String>,
    /// The berth daemon holding --plugin
    #[arg(short = 'H', long, value_name = "unix://PATH")]
    pub host: Option<String>,
    /// Grant the privileges a plugin from a registry asks for
    #[arg(long)]
    pub grant_all_permissions: bool,
    /// Registry reachable over plain HTTP or without certificate checks (repeatable)
    #[arg(long = "insecure-registry", value_name = "REGISTRY")]
    pub insecure_registries: Vec<String>,
    /// Protocols to check, comma-separated: volume, network, ipam, authz, log [default: what the plugin declares]
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub protocol: Vec<String>,
    /// Only checks whose ID matches this glob (repeatable, or comma-separated), e.g. 'volume.mount.*'
    #[arg(long = "check", value_name = "GLOB")]
    pub checks: Vec<String>,
    /// Output: table or json
    #[arg(long, value_name = "FORMAT", default_value = "table")]
    pub format: String,
    /// Also write the results as JUnit XML to FILE
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Option every test volume is created with (repeatable), e.g. type=local for rclone
    #[arg(long = "volume-opt", value_name = "KEY=VALUE")]
    pub volume_opts: Vec<String>,
    /// Deadline in seconds of each call to the plugin
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub timeout: f64,
    /// Latency budget of the median call, in milliseconds (a warning past it)
    #[arg(long, value_name = "MS", default_value_t = 50)]
    pub latency_p50: u64,
    /// Latency budget of the 99th percentile call, in milliseconds (a warning past it)
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub latency_p99: u64,
    /// How many calls transport.parallel sends at once
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub parallel: usize,
    /// IPv4 network the NetworkDriver checks create
    #[arg(long, value_name = "CIDR", default_value = "198.18.78.0/24")]
    pub network_subnet: String,
    /// Pool the IpamDriver address checks request (small: it is exhausted)
    #[arg(long, value_name = "CIDR", default_value = "198.18.77.0/29")]
    pub ipam_subnet: String,
    /// List every check (ID, rule, source) and exit
    #[arg(long)]
    pub list: bool,
    /// Print the JSON schema of the json report and exit
    #[arg(long)]
    pub schema: bool,
}

/// Runs the command; the process exit status.
pub fn run(flags: ConformanceFlags) -> i32 {
    if flags.list {
        for c in super::registry::all() {
            println!("{}\t{}\t{}", c.id, c.rule, c.source);
        }
        return 0;
    }
    if flags.schema {
        print!("{}", super::report::SCHEMA);
        return 0;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth conformance: {e}");
            return 2;
        }
    };
    // A pull into a private store streams its progress from a local task, as in the daemon's
    // API workers.
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run_async(&flags)) {
        Ok(report) => {
            if report.failed() {
                1
            } else {
                0
            }
        }
        Err(e) => {
            eprintln!("berth conformance: {e}");
            2
        }
    }
}

async fn run_async(flags: &ConformanceFlags) -> Result<Report, ConformanceError> {
    let options = options(flags)?;
    let json = match flags.format.as_str() {
        "table" => false,
        "json" => true,
        other => {
            return Err(ConformanceError::Usage(format!(
                "--format {other}: table or json"
            )))
        }
    };
    let target = target(flags, options.call_timeout).await?;
    let report = super::runner::run(&target, &options).await;
    drop(target);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).expect("JSON serializes")
        );
    } else {
        print!("{}", report.to_table());
    }
    if let Some(path) = &flags.junit {
        std::fs::write(path, report.to_junit())?;
    }
    Ok(report)
}

fn options(flags: &ConformanceFlags) -> Result<Options, ConformanceError> {
    let protocols = if flags.protocol.is_empty() {
        None
    } else {
        let parsed: Option<Vec<Protocol>> = flags
            .protocol
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| Protocol::from_name(p))
            .collect();
        Some(parsed.ok_or_else(|| {
            ConformanceError::Usage(format!(
                "--protocol {}: names are volume, network, ipam, authz, log",
                flags.protocol.join(",")
            ))
        })?)
    };
    let mut volume_opts = std::collections::BTreeMap::new();
    for opt in &flags.volume_opts {
        let (k, v) = opt
            .split_once('=')
            .ok_or_else(|| ConformanceError::Usage(format!("--volume-opt {opt}: KEY=VALUE")))?;
        volume_opts.insert(k.to_string(), v.to_string());
    }
    for (flag, cidr) in [
        ("--network-subnet", &flags.network_subnet),
        ("--ipam-subnet", &flags.ipam_subnet),
    ] {
        if super::ipam::Cidr::parse(cidr).is_none_or(|c| !c.addr.is_ipv4()) {
            return Err(ConformanceError::Usage(format!(
                "{flag} {cidr}: an IPv4 network such as 198.18.77.0/29"
            )));
        }
    }
    if !(flags.timeout > 0.0 && flags.timeout.is_finite()) {
        return Err(ConformanceError::Usage("--timeout: seconds above 0".into()));
    }
    Ok(Options {
        protocols,
        checks: flags.checks.clone(),
        volume_opts,
        latency_p50: Duration::from_millis(flags.latency_p50),
        latency_p99: Duration::from_millis(flags.latency_p99),
        parallel: flags.parallel.max(1),
        call_timeout: Duration::from_secs_f64(flags.timeout),
        scratch: std::env::temp_dir(),
        authz_large_body: Options::default().authz_large_body,
        network_subnet: flags.network_subnet.clone(),
        ipam_subnet: flags.ipam_subnet.clone(),
    })
}

async fn target(flags: &ConformanceFlags, timeout: Duration) -> Result<Target, ConformanceError> {
    let given = [
        flags.target.is_some(),
        flags.socket.is_some(),
        flags.spec.is_some(),
        flags.plugin.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        return Err(ConformanceError::Usage(
            "name one plugin: a directory or reference, --socket, --spec, or --plugin with --host"
                .into(),
        ));
    }
    if let Some(path) = &flags.socket {
        return Target::socket(path, timeout);
    }
    if let Some(path) = &flags.spec {
        return Target::spec(path, timeout);
    }
    if let (Some(name), Some(host)) = (&flags.plugin, &flags.host) {
        return Target::berth(host, name, timeout).await;
    }
    let target = flags.target.as_deref().unwrap_or_default();
    let path = std::path::Path::new(target);
    if path.is_dir() {
        Target::directory(path, timeout).await
    } else {
        Target::registry(
            target,
            flags.grant_all_permissions,
            flags.insecure_registries.clone(),
            timeout,
        )
        .await
    }
}
