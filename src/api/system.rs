//! `/_ping`, `/version`, `/info`, `/system/df`, `/auth`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::connection::{on_hang_up, ClientSocket};
use super::version::MIN_API_VERSION;
use super::{json_response, Call};
use crate::distribution::registry::AuthConfig;
use crate::error::{Error, Result};
use crate::gojson::decode::{self, go_struct};
use crate::volume::types::Volume;

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

/// What `berth version` prints: this build and the API versions it serves.
pub fn build_description() -> String {
    format!(
        "berth {}\n commit:       {GIT_COMMIT}\n built:        {BUILD_TIME}\n compiler:     {RUSTC_VERSION}\n API version:  {} (minimum {MIN_API_VERSION}, maximum {})\n OS/Arch:      linux/{}\n",
        env!("CARGO_PKG_VERSION"),
        super::version::DEFAULT_API_VERSION,
        super::version::MAX_API_VERSION,
        go_arch(),
    )
}

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
        "NEventsListener": call.state.events.subscribers(),
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

/// `types.DiskUsage` as berth can fill it: no images, containers or build cache exist here.
/// Lists left out by `type` are `null`; `BuilderSize` went away after API 1.41.
#[derive(Serialize)]
struct DiskUsage {
    #[serde(rename = "LayersSize")]
    layers_size: i64,
    #[serde(rename = "Images")]
    images: Option<[(); 0]>,
    #[serde(rename = "Containers")]
    containers: Option<[(); 0]>,
    #[serde(rename = "Volumes")]
    volumes: Option<Vec<Volume>>,
    #[serde(rename = "BuildCache")]
    build_cache: Option<[(); 0]>,
    #[serde(rename = "BuilderSize", skip_serializing_if = "Option::is_none")]
    builder_size: Option<i64>,
}

/// How often a `system df` that is measuring looks whether its client is still there.
const CLIENT_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// `GET /system/df`. From API 1.42 `type` (repeatable) picks what is reported.
pub async fn disk_usage(call: Call) -> Result<HttpResponse> {
    let legacy = call.compat.legacy();
    let (mut images, mut containers, mut volumes) = (true, true, true);
    if let Some(types) = call.query_all("type").filter(|_| !legacy) {
        (images, containers, volumes) = (false, false, false);
        for kind in types {
            match kind.as_str() {
                "container" => containers = true,
                "image" => images = true,
                "volume" => volumes = true,
                // There is no builder: nothing to report, nothing refused.
                "build-cache" => {}
                other => {
                    return Err(Error::InvalidParameter(format!(
                        "unknown object type: {other}"
                    )))
                }
            }
        }
    }
    let volumes = if volumes {
        // Measuring stops when the client goes.
        let stop = Arc::new(AtomicBool::new(false));
        let client = call.req.conn_data::<ClientSocket>().cloned();
        let _watch = on_hang_up(client, CLIENT_CHECK, {
            let stop = stop.clone();
            move || stop.store(true, Ordering::Relaxed)
        });
        Some(call.state.volumes.disk_usage(stop).await?)
    } else {
        None
    };
    let reply = DiskUsage {
        layers_size: 0,
        images: images.then_some([]),
        containers: containers.then_some([]),
        volumes,
        build_cache: None,
        builder_size: legacy.then_some(0),
    };
    Ok(json_response(StatusCode::OK, &reply))
}

#[derive(Serialize)]
struct AuthReply {
    #[serde(rename = "IdentityToken")]
    identity_token: String,
    #[serde(rename = "Status")]
    status: &'static str,
}

/// `POST /auth` (`docker login`): checks the credentials with the registry and answers; berth
/// keeps nothing (the client stores what it sent) and never logs the password.
pub async fn auth(call: Call, payload: web::Payload) -> Result<HttpResponse> {
    let body = super::body::read_bounded(payload, 1 << 20).await?;
    let credentials = decode_auth_body(&body, call.compat.legacy())?;
    let identity_token = call.state.plugins.login(&credentials).await?;
    Ok(json_response(
        StatusCode::OK,
        &AuthReply {
            identity_token,
            status: "Login Succeeded",
        },
    ))
}

go_struct!([GoAuthConfig = types.AuthConfig, GoRegistryAuthConfig = registry.AuthConfig] {
    username: String = "username",
    password: String = "password",
    auth: String = "auth",
    email: String = "email",
    server_address: String = "serveraddress",
    identity_token: String = "identitytoken",
    registry_token: String = "registrytoken",
});

/// The body of `POST /auth` as moby decodes it (`json.NewDecoder(r.Body).Decode`: the first
/// JSON value), every error untyped (500), on 20.10 (`types.AuthConfig`) as on current
/// daemons (`registry.AuthConfig`).
fn decode_auth_body(body: &[u8], legacy: bool) -> Result<AuthConfig> {
    // Both Go types have the same fields; only their names (in type errors) differ.
    macro_rules! auth_config {
        ($go_type:ty) => {{
            let (c, _) =
                decode::decode_first::<$go_type>(body).map_err(|e| Error::System(e.to_string()))?;
            AuthConfig {
                username: c.username,
                password: c.password,
                auth: c.auth,
                email: c.email,
                server_address: c.server_address,
                identity_token: c.identity_token,
                registry_token: c.registry_token,
            }
        }};
    }
    Ok(if legacy {
        auth_config!(GoAuthConfig)
    } else {
        auth_config!(GoRegistryAuthConfig)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_bodies_decode_like_go() {
        let ok = decode_auth_body(
            br#"{"Username":"u","password":"p","serveraddress":"127.0.0.1:5000"} trailing"#,
            true,
        )
        .unwrap();
        assert_eq!((ok.username.as_str(), ok.password.as_str()), ("u", "p"));
        assert_eq!(ok.server_address, "127.0.0.1:5000");
        let message = |body: &[u8]| {
            decode_auth_body(body, true)
                .unwrap_err()
                .message()
                .to_string()
        };
        assert_eq!(message(b""), "EOF");
        assert_eq!(
            message(b"nope"),
            "invalid character 'o' in literal null (expecting 'u')"
        );
        assert_eq!(
            message(b"[]"),
            "json: cannot unmarshal array into Go value of type types.AuthConfig"
        );
        assert_eq!(
            message(br#"{"username":5}"#),
            "json: cannot unmarshal number into Go struct field AuthConfig.username of type string"
        );
    }
}
