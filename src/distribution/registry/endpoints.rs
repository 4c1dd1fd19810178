//! Where a repository is reached: Docker Hub or the reference's own registry, configured
//! mirrors (pulls only), and insecure registries (by `host[:port]`, CIDR or loopback) tried over
//! HTTPS without verification and then plain HTTP. A session falls over to the next endpoint only
//! when one cannot be reached, never after a registry answered an operation.

use std::net::IpAddr;

use reqwest::{StatusCode, Url};

use super::auth::parse_challenges;
use super::error::status_text;
use super::{RegistryClient, RegistryError, Result, Session};
use crate::distribution::reference::DEFAULT_DOMAIN;

/// Docker Hub's registry host (containerd `docker.DefaultHost`).
const DOCKER_HUB_HOST: &str = "registry-1.docker.io";
/// Always insecure, whatever the options say (moby's default `InsecureRegistryCIDRs`).
const DEFAULT_INSECURE_CIDRS: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// A host matcher from `insecure_registries`.
#[derive(Debug, Clone)]
pub(super) enum Insecure {
    Host(String),
    Net(IpAddr, u8),
}

/// One place a repository can be reached.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    /// `scheme://host[:port]`, no trailing slash.
    pub(super) base: String,
    /// HTTPS without certificate verification (insecure registry).
    pub(super) skip_verify: bool,
    pub(super) mirror: bool,
}

/// The outcome of trying one endpoint.
enum Connect {
    Ok(Option<String>),
    /// The endpoint is unusable; the next may work.
    Unreachable(RegistryError),
    /// The registry answered with a failure.
    Failed(RegistryError),
}

/// The host matchers of `--insecure-registry` values, after the always-insecure loopback nets.
pub(super) fn insecure_list(entries: &[String]) -> Result<Vec<Insecure>> {
    let mut insecure_list = Vec::new();
    for cidr in DEFAULT_INSECURE_CIDRS {
        let (ip, bits) = parse_cidr(cidr).expect("default CIDRs parse");
        insecure_list.push(Insecure::Net(ip, bits));
    }
    for entry in entries {
        let e = strip_scheme(entry.trim()).trim_end_matches('/');
        if e.is_empty() {
            continue;
        }
        if e.contains('/') {
            let (ip, bits) = parse_cidr(e).ok_or_else(|| {
                RegistryError::Protocol(format!("invalid insecure registry CIDR {entry:?}"))
            })?;
            insecure_list.push(Insecure::Net(ip, bits));
        } else {
            insecure_list.push(Insecure::Host(e.to_ascii_lowercase()));
        }
    }
    Ok(insecure_list)
}

/// `(scheme://host[:port], host[:port])` of each `--registry-mirror` value.
pub(super) fn parse_mirrors(urls: &[String]) -> Result<Vec<(String, String)>> {
    let mut mirrors = Vec::new();
    for m in urls {
        let raw = m.trim().trim_end_matches('/');
        let with_scheme = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("https://{raw}")
        };
        let url = Url::parse(&with_scheme)
            .map_err(|e| RegistryError::Protocol(format!("invalid mirror {m:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(RegistryError::Protocol(format!(
                "invalid mirror {m:?}: only a scheme, host and port are allowed"
            )));
        }
        let host = host_port(&url);
        mirrors.push((format!("{}://{}", url.scheme(), host), host));
    }
    Ok(mirrors)
}

impl RegistryClient {
    pub(super) async fn endpoints(&self, domain: &str, push: bool) -> Vec<Endpoint> {
        let mut out = Vec::new();
        if domain == DEFAULT_DOMAIN {
            if !push {
                for (base, host) in &self.shared.mirrors {
                    let insecure = self.is_insecure(host).await;
                    out.push(Endpoint {
                        base: base.clone(),
                        skip_verify: insecure,
                        mirror: true,
                    });
                }
            }
            out.push(Endpoint {
                base: format!("https://{DOCKER_HUB_HOST}"),
                skip_verify: false,
                mirror: false,
            });
            return out;
        }
        let insecure = self.is_insecure(domain).await;
        out.push(Endpoint {
            base: format!("https://{domain}"),
            skip_verify: insecure,
            mirror: false,
        });
        if insecure {
            out.push(Endpoint {
                base: format!("http://{domain}"),
                skip_verify: false,
                mirror: false,
            });
        }
        out
    }

    /// moby `isSecureIndex`, inverted: an exact `host[:port]` entry, `localhost`, or any address
    /// of the host inside an insecure CIDR.
    async fn is_insecure(&self, host_port: &str) -> bool {
        let key = host_port.to_ascii_lowercase();
        let list = &self.shared.insecure_list;
        if list
            .iter()
            .any(|e| matches!(e, Insecure::Host(h) if *h == key))
        {
            return true;
        }
        let host = split_host(&key);
        if host == "localhost" || host.ends_with(".localhost") {
            return true;
        }
        let in_nets = |ip: IpAddr| {
            list.iter()
                .any(|e| matches!(e, Insecure::Net(net, bits) if cidr_contains(*net, *bits, ip)))
        };
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return in_nets(ip);
        }
        if !list.iter().any(|e| matches!(e, Insecure::Net(..))) {
            return false;
        }
        let lookup = tokio::net::lookup_host((host.to_string(), 0u16));
        let found = match tokio::time::timeout(self.shared.options.request_timeout, lookup).await {
            Ok(Ok(addrs)) => addrs.map(|a| a.ip()).any(in_nets),
            _ => false,
        };
        found
    }
}

impl Session {
    /// Tries endpoints from `start` until one answers as a registry and accepts us.
    pub(super) async fn connect_from(&self, start: usize) -> Result<()> {
        let mut last = None;
        for index in start..self.endpoints.len() {
            match self.connect(index).await {
                Connect::Ok(authorization) => {
                    let mut state = self.state.lock().unwrap();
                    state.index = index;
                    state.authorization = authorization;
                    return Ok(());
                }
                Connect::Unreachable(e) => {
                    log::debug!(
                        "registry endpoint {} unusable: {e}",
                        self.endpoints[index].base
                    );
                    last = Some(e);
                }
                Connect::Failed(e) => {
                    if self.endpoints[index].mirror {
                        log::info!(
                            "registry mirror {} refused: {e}",
                            self.endpoints[index].base
                        );
                        last = Some(e);
                    } else {
                        return Err(e);
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Protocol("no registry endpoint".into())))
    }

    /// Pings `/v2/` on one endpoint and answers its challenge.
    async fn connect(&self, index: usize) -> Connect {
        let endpoint = &self.endpoints[index];
        let url = format!("{}/v2/", endpoint.base);
        let client = self.shared.client(endpoint.skip_verify);
        let request = client.get(&url).headers(self.meta.clone());
        let resp = match self.execute(request, "GET", &url).await {
            Ok(r) => r,
            Err(e) => return Connect::Unreachable(e),
        };
        let registry_token = (!self.auth.registry_token.is_empty())
            .then(|| format!("Bearer {}", self.auth.registry_token));
        match resp.status() {
            s if s.is_success() => Connect::Ok(registry_token),
            StatusCode::UNAUTHORIZED => {
                if registry_token.is_some() {
                    return Connect::Ok(registry_token);
                }
                let challenges = parse_challenges(resp.headers());
                match self.authorize(index, &challenges).await {
                    Ok(authorization) => Connect::Ok(authorization),
                    Err(e) if e.is_transport() => Connect::Unreachable(e),
                    Err(e) => Connect::Failed(e),
                }
            }
            status => Connect::Unreachable(RegistryError::Registry {
                status: status.as_u16(),
                message: format!(
                    "unexpected status from GET request to {url}: {}",
                    status_text(status)
                ),
            }),
        }
    }
}

fn strip_scheme(s: &str) -> &str {
    s.strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .unwrap_or(s)
}

fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// `host` of `host[:port]` (IPv6 literals in brackets kept whole).
fn split_host(host_port: &str) -> &str {
    if host_port.starts_with('[') {
        return match host_port.find(']') {
            Some(end) => &host_port[..=end],
            None => host_port,
        };
    }
    match host_port.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => host_port,
    }
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

fn cidr_contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    let ip = match (net, ip) {
        (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => return false,
        },
        _ => ip,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distribution::registry::RegistryOptions;

    #[test]
    fn insecure_networks() {
        let (net, bits) = parse_cidr("127.0.0.0/8").unwrap();
        assert!(cidr_contains(net, bits, "127.1.2.3".parse().unwrap()));
        assert!(!cidr_contains(net, bits, "128.0.0.1".parse().unwrap()));
        assert!(cidr_contains(
            net,
            bits,
            "::ffff:127.0.0.1".parse().unwrap()
        ));
        let (net, bits) = parse_cidr("::1/128").unwrap();
        assert!(cidr_contains(net, bits, "::1".parse().unwrap()));
        assert!(!cidr_contains(net, bits, "::2".parse().unwrap()));
        let (net, bits) = parse_cidr("0.0.0.0/0").unwrap();
        assert!(cidr_contains(net, bits, "10.0.0.1".parse().unwrap()));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert_eq!(split_host("localhost:5000"), "localhost");
        assert_eq!(split_host("registry.example"), "registry.example");
        assert_eq!(split_host("[::1]:5000"), "[::1]");
    }

    #[actix_rt::test]
    async fn endpoints_follow_moby() {
        let client = RegistryClient::new(RegistryOptions {
            insecure_registries: vec!["myreg.example:5000".into(), "10.0.0.0/8".into()],
            mirrors: vec![
                "https://mirror.example".into(),
                "mirror2.example:5001/".into(),
            ],
            ..Default::default()
        })
        .unwrap();
        let bases = |eps: Vec<Endpoint>| {
            eps.into_iter()
                .map(|e| (e.base, e.skip_verify, e.mirror))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            bases(client.endpoints("docker.io", false).await),
            vec![
                ("https://mirror.example".to_string(), false, true),
                ("https://mirror2.example:5001".to_string(), false, true),
                ("https://registry-1.docker.io".to_string(), false, false),
            ]
        );
        assert_eq!(
            bases(client.endpoints("docker.io", true).await),
            vec![("https://registry-1.docker.io".to_string(), false, false)]
        );
        assert_eq!(
            bases(client.endpoints("myreg.example:5000", false).await),
            vec![
                ("https://myreg.example:5000".to_string(), true, false),
                ("http://myreg.example:5000".to_string(), false, false),
            ]
        );
        for host in ["127.0.0.1:5000", "localhost:5000", "10.1.2.3"] {
            assert_eq!(client.endpoints(host, true).await.len(), 2, "{host}");
        }
        assert_eq!(
            bases(client.endpoints("203.0.113.7:5000", false).await),
            vec![("https://203.0.113.7:5000".to_string(), false, false)]
        );
        assert!(RegistryClient::new(RegistryOptions {
            mirrors: vec!["https://mirror.example/path".into()],
            ..Default::default()
        })
        .is_err());
        assert!(RegistryClient::new(RegistryOptions {
            insecure_registries: vec!["10.0.0.0/99".into()],
            ..Default::default()
        })
        .is_err());
    }
}
