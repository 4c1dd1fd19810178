//! `berth conformance`: protocol checks a plugin author runs against a plugin.
//!
//! Every check has an ID (`<protocol>.<area>.<what>`), a one-line rule, and a link to where the
//! rule comes from (the protocol documentation or the daemon code that depends on it). The
//! checks of one protocol run as one scenario against one plugin (create a volume, mount it
//! twice, ...): each step records the verdicts of the checks it settles, and a check its
//! scenario never reached (an earlier step failed) is reported as skipped, with the reason.
//!
//! * [`registry`]: every check's ID, protocol, rule and source; `--check` globs.
//! * [`probe`]: the calls, through the plugin's [`crate::rpc::client::PluginClient`], with the
//!   answer kept raw (status, content type, body) and every call's latency journaled.
//! * [`runner`]: activation and the transport checks first (they tell which protocols apply),
//!   then the protocol scenarios in parallel (each works on its own objects), then the checks
//!   that disturb the plugin (restart) last.
//! * [`report`]: the table, the JSON report (schema in `report.schema.json`) and JUnit XML.
//! * [`cli`]: the `berth conformance` flags, output and exit status.
//! * [`target`]: how the plugin is reached: a socket, a spec file, a plugin directory or a
//!   registry reference run in a private plugin store, or a managed plugin of a running berth.
//! * one file per protocol with its checks: [`transport`], [`volume`], [`network`], [`ipam`],
//!   [`authz`], [`log`].

pub mod authz;
pub mod cli;
pub mod ipam;
pub mod log;
pub mod network;
pub mod probe;
pub mod registry;
pub mod report;
pub mod runner;
pub mod target;
pub mod transport;
pub mod volume;

#[cfg(test)]
mod scripted;

/// What every protocol's check file uses: the run's context and recorder, the reply probes.
mod prelude {
    pub use super::probe::{call_failed, field, str_field, Reply};
    pub use super::runner::{Context, Recorder};
    pub use super::{Outcome, Protocol};
}

use std::time::Duration;

/// A protocol berth can check. `Transport` (the RPC rules every plugin follows) always applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Transport,
    Volume,
    Network,
    Ipam,
    Authz,
    Log,
}

impl Protocol {
    pub const ALL: [Protocol; 6] = [
        Protocol::Transport,
        Protocol::Volume,
        Protocol::Network,
        Protocol::Ipam,
        Protocol::Authz,
        Protocol::Log,
    ];

    /// The name in check IDs and `--protocol`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Transport => "transport",
            Protocol::Volume => "volume",
            Protocol::Network => "network",
            Protocol::Ipam => "ipam",
            Protocol::Authz => "authz",
            Protocol::Log => "log",
        }
    }

    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The `Implements` name of `Plugin.Activate` answers (case-sensitive, as moby compares).
    pub fn implements(self) -> Option<&'static str> {
        match self {
            Protocol::Transport => None,
            Protocol::Volume => Some("VolumeDriver"),
            Protocol::Network => Some("NetworkDriver"),
            Protocol::Ipam => Some("IpamDriver"),
            Protocol::Authz => Some("authz"),
            Protocol::Log => Some("LogDriver"),
        }
    }

    /// The capability of a managed plugin's `docker.<capability>/1.0` interface type.
    pub fn capability(self) -> Option<&'static str> {
        match self {
            Protocol::Transport => None,
            Protocol::Volume => Some("volumedriver"),
            Protocol::Network => Some("networkdriver"),
            Protocol::Ipam => Some("ipamdriver"),
            Protocol::Authz => Some("authz"),
            Protocol::Log => Some("logdriver"),
        }
    }

    /// The protocol of an `Implements` entry.
    pub fn from_implements(name: &str) -> Option<Protocol> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.implements() == Some(name))
    }

    /// The protocol of an `Interface.Types` entry (`docker.volumedriver/1.0`).
    pub fn from_interface_type(text: &str) -> Option<Protocol> {
        let (prefix, capability) = crate::plugin::manager::parse_capability(text)?;
        let capability = capability.to_ascii_lowercase();
        Protocol::ALL
            .into_iter()
            .find(|p| prefix == "docker" && p.capability() == Some(capability.as_str()))
    }
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Pass,
    /// Works with dockerd, but fragile, slow or unlike what Docker sends or expects.
    Warn,
    /// Breaks with dockerd (or berth): users see errors or wrong results.
    Fail,
    /// Not run: the protocol does not apply, the capability is not declared, or an earlier step
    /// the check depends on failed.
    Skip,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Warn => "warn",
            Outcome::Fail => "fail",
            Outcome::Skip => "skip",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub check: &'static registry::Check,
    pub outcome: Outcome,
    /// What the rule wants, concretely for this run.
    pub expected: String,
    /// What the plugin did.
    pub got: String,
    /// Time of the calls that settled the check.
    pub duration: Duration,
}

/// The options of a run (`berth conformance` flags).
#[derive(Debug, Clone)]
pub struct Options {
    /// Protocols to check (`--protocol`); `None`: every protocol the plugin declares.
    pub protocols: Option<Vec<Protocol>>,
    /// `--check` globs over check IDs; empty: all.
    pub checks: Vec<String>,
    /// Options every test volume is created with (`--volume-opt k=v`), for plugins that need
    /// some (rclone needs a backend type).
    pub volume_opts: std::collections::BTreeMap<String, String>,
    /// Latency budgets per call, for the p50 and p99 warnings.
    pub latency_p50: Duration,
    pub latency_p99: Duration,
    /// How many calls `transport.parallel` sends at once.
    pub parallel: usize,
    /// Deadline of each call.
    pub call_timeout: Duration,
    /// Where host-side FIFOs of legacy log plugins are made.
    pub scratch: std::path::PathBuf,
    /// Bytes of the request body `authz.req.large-body` sends (base64 makes it a third larger).
    pub authz_large_body: usize,
    /// The IPv4 network the NetworkDriver checks create (`--network-subnet`).
    pub network_subnet: String,
    /// The pool the IpamDriver address checks request (`--ipam-subnet`): small, so that
    /// exhausting it takes few calls.
    pub ipam_subnet: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            protocols: None,
            checks: Vec::new(),
            volume_opts: Default::default(),
            latency_p50: Duration::from_millis(50),
            latency_p99: Duration::from_millis(500),
            parallel: 16,
            call_timeout: Duration::from_secs(10),
            scratch: std::env::temp_dir(),
            // Near the daemon's 4 MiB limit once base64-encoded.
            authz_large_body: 3 << 20,
            // RFC 2544's benchmarking range: no real network uses it.
            network_subnet: "198.18.78.0/24".into(),
            ipam_subnet: "198.18.77.0/29".into(),
        }
    }
}

/// Why a conformance run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the plugin: {0}")]
    Target(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<ConformanceError> for crate::error::Error {
    fn from(e: ConformanceError) -> crate::error::Error {
        match e {
            ConformanceError::Usage(m) => crate::error::Error::InvalidParameter(m),
            other => crate::error::Error::System(other.to_string()),
        }
    }
}
