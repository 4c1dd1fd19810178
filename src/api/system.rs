//! `/_ping`, `/version`, `/info`.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;

use super::version::MIN_API_VERSION;
use super::{json_response, Call};
use crate::error::Result;

/// Who this daemon says it is in `/version` and `/info`.
#[derive(Debug, Clone)]
pub struct DaemonIdentity {
    /// Advertised in `Api-Version` and `/version`.
    pub api_version: String,
    pub data_root: String,
    pub exec_root: String,
    pub started: chrono::DateTime<chrono::Utc>,
}

pub async fn ping(_call: Call, head: bool) -> Result<HttpResponse> {
    let mut response = HttpResponse::Ok();
    response
        .insert_header(("content-type", "text/plain; charset=utf-8"))
        .insert_header(("cache-control", "no-cache, no-store, must-revalidate"))
        .insert_header(("pragma", "no-cache"));
    Ok(if head {
        response.insert_header(("content-length", "0")).finish()
    } else {
        response.body("OK")
    })
}

#[derive(Serialize)]
struct VersionReply {
    #[serde(rename = "Platform")]
    platform: Platform,
    #[serde(rename = "Components")]
    components: Vec<Component>,
    #[serde(rename = "Version")]
    version: String,
    #[serde(rename = "ApiVersion")]
    api_version: String,
    #[serde(rename = "MinAPIVersion")]
    min_api_version: String,
    #[serde(rename = "GitCommit")]
    git_commit: String,
    #[serde(rename = "GoVersion")]
    go_version: String,
    #[serde(rename = "Os")]
    os: String,
    #[serde(rename = "Arch")]
    arch: String,
    #[serde(rename = "KernelVersion")]
    kernel_version: String,
    #[serde(rename = "BuildTime")]
    build_time: String,
}

#[derive(Serialize)]
struct Platform {
    #[serde(rename = "Name")]
    name: String,
}

#[derive(Serialize)]
struct Component {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Version")]
    version: String,
    #[serde(rename = "Details")]
    details: serde_json::Value,
}

/// Go's name for this machine's architecture (what `docker version` prints as OS/Arch).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

pub fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

const GIT_COMMIT: &str = env!("BERTH_GIT_COMMIT");
const RUSTC_VERSION: &str = env!("BERTH_RUSTC_VERSION");
const BUILD_TIME: &str = env!("BERTH_BUILD_TIME");

pub async fn version(call: Call) -> Result<HttpResponse> {
    let api_version = call.state.daemon.api_version.clone();
    let version = env!("CARGO_PKG_VERSION").to_string();
    let details = serde_json::json!({
        "ApiVersion": api_version,
        "Arch": go_arch(),
        "BuildTime": BUILD_TIME,
        "Experimental": "false",
        "GitCommit": GIT_COMMIT,
        "GoVersion": RUSTC_VERSION,
        "KernelVersion": kernel_version(),
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
    });
    let reply = VersionReply {
        platform: Platform {
            name: "berth".into(),
        },
        components: vec![Component {
            name: "Engine".into(),
            version: version.clone(),
            details,
        }],
        version,
        api_version,
        min_api_version: MIN_API_VERSION.into(),
        git_commit: GIT_COMMIT.into(),
        go_version: RUSTC_VERSION.into(),
        os: "linux".into(),
        arch: go_arch().into(),
        kernel_version: kernel_version(),
        build_time: BUILD_TIME.into(),
    };
    Ok(json_response(StatusCode::OK, &reply))
}

pub async fn info(call: Call) -> Result<HttpResponse> {
    let daemon = &call.state.daemon;
    let summary = call.state.plugins.summary();
    // The chain configured at start-up, as dockerd reports it (`null` when there is none).
    let authorization = Some(call.state.authz.configured()).filter(|names| !names.is_empty());
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (mem_total, ncpu) = machine_size();
    let reply = serde_json::json!({
        "ID": "",
        "Containers": 0,
        "ContainersRunning": 0,
        "ContainersPaused": 0,
        "ContainersStopped": 0,
        "Images": 0,
        "Driver": "",
        "DriverStatus": null,
        "Plugins": {
            "Volume": std::iter::once("local".to_string()).chain(summary.volume).collect::<Vec<_>>(),
            "Network": summary.network,
            "Authorization": authorization,
            "Log": summary.log,
        },
        "MemoryLimit": false,
        "SwapLimit": false,
        "CpuCfsPeriod": false,
        "CpuCfsQuota": false,
        "CPUShares": false,
        "CPUSet": false,
        "PidsLimit": false,
        "IPv4Forwarding": false,
        "Debug": log::log_enabled!(log::Level::Debug),
        "NFd": open_fds(),
        "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "LoggingDriver": "",
        "CgroupDriver": "",
        "CgroupVersion": "",
        "NEventsListener": 0,
        "KernelVersion": kernel_version(),
        "OperatingSystem": "berth",
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": null,
        "NCPU": ncpu,
        "MemTotal": mem_total,
        "DockerRootDir": daemon.data_root,
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Runtimes": {},
        "DefaultRuntime": "",
        "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": false,
        "Isolation": "",
        "InitBinary": "",
        "SecurityOptions": [],
        "Warnings": null,
    });
    Ok(json_response(StatusCode::OK, &reply))
}

fn machine_size() -> (u64, usize) {
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (mem_total, ncpu)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}
