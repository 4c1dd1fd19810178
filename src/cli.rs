//! The client side of `berth plugin ps` and `berth plugin exec`: find the daemon's socket, ask
//! it over its API (the berth extensions `GET /plugins/ps` and `GET /plugins/{name}/process`),
//! print the table or run the command in the plugin ([`crate::runtime::exec`]).
//!
//! The socket is `-H/--host unix://PATH` as `berth daemon` spells it, else `DOCKER_HOST` when
//! it names a unix socket, else the daemon's default.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::config::{parse_host, Host, DEFAULT_HOST};
use crate::plugin::processes::{PluginExecTarget, RunningPlugin};
use crate::runtime::exec::{self, ExecOptions};

/// The API version the client asks for (berth's default).
const API_PREFIX: &str = "/v1.41";

/// The daemon's socket: `host` (a `-H` value), else a unix `DOCKER_HOST`, else the default.
pub fn daemon_socket(host: Option<&str>) -> anyhow::Result<PathBuf> {
    if let Some(host) = host {
        return socket_path(host);
    }
    if let Ok(from_env) = std::env::var("DOCKER_HOST") {
        if from_env.starts_with("unix://") {
            return socket_path(&from_env);
        }
    }
    socket_path(DEFAULT_HOST)
}

/// A host as `berth daemon` spells it, which a client can dial: a unix socket path (a client
/// has no sockets passed by systemd).
fn socket_path(host: &str) -> anyhow::Result<PathBuf> {
    match parse_host(host).map_err(anyhow::Error::msg)? {
        Host::Unix(path) => Ok(path),
        Host::Systemd(_) => bail!("invalid host {host:?}: a client needs unix:///absolute/path"),
    }
}

/// A failure the daemon answered with: printed as the docker CLI prints it.
#[derive(Debug, thiserror::Error)]
#[error("Error response from daemon: {0}")]
pub struct DaemonError(pub String);

/// `GET path` over the socket (one request per connection); the body of a 2xx answer.
fn get(socket: &Path, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "Cannot connect to the berth daemon at unix://{}. Is the daemon running?",
            socket.display()
        )
    })?;
    write!(
        stream,
        "GET {API_PREFIX}{path} HTTP/1.1\r\nHost: berth\r\nUser-Agent: berth-cli\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed answer from the daemon")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed status line from the daemon")?;
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    if !(200..300).contains(&status) {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        return Err(DaemonError(message).into());
    }
    Ok(body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        let start = end + 2;
        if size == 0 || start + size > data.len() {
            break;
        }
        out.extend_from_slice(&data[start..start + size]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// `berth plugin ps`: one line per running plugin, like `runc list`.
pub fn ps(socket: &Path, no_trunc: bool, quiet: bool) -> anyhow::Result<()> {
    let rows: Vec<RunningPlugin> = serde_json::from_slice(&get(socket, "/plugins/ps")?)
        .context("decoding the daemon's answer")?;
    let id = |r: &RunningPlugin| {
        if no_trunc {
            r.id.clone()
        } else {
            r.id.chars().take(12).collect()
        }
    };
    let mut out = std::io::stdout().lock();
    if quiet {
        for r in &rows {
            writeln!(out, "{}", id(r))?;
        }
        return Ok(());
    }
    let table: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                id(r),
                r.name.clone(),
                r.pid.to_string(),
                r.status.clone(),
                r.since.clone(),
                r.runtime.clone(),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "PID", "STATUS", "SINCE", "RUNTIME"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&table) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", cells.join("   ").trim_end())?;
    }
    Ok(())
}

/// `berth plugin exec`: runs the command inside the plugin; returns its exit status.
pub fn exec(socket: &Path, name: &str, options: &ExecOptions) -> anyhow::Result<i32> {
    if options.command.is_empty() {
        bail!("no command given");
    }
    let target: PluginExecTarget =
        serde_json::from_slice(&get(socket, &format!("/plugins/{name}/process"))?)
            .context("decoding the daemon's answer")?;
    match exec::run(&target.target, options) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("{e}");
            Ok(e.exit_code())
        }
    }
}

/// `-e` values as `docker exec` takes them: `K=V` as given; a bare `K` carries this client's
/// value of `K`, and is dropped when the client has none.
pub fn exec_env(entries: Vec<String>, lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    entries
        .into_iter()
        .filter_map(|entry| {
            if entry.contains('=') {
                return Some(entry);
            }
            lookup(&entry).map(|value| format!("{entry}={value}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_env_names_take_the_clients_value() {
        let lookup = |k: &str| (k == "SET").then(|| "here".to_string());
        assert_eq!(
            exec_env(vec!["A=1".into(), "SET".into(), "UNSET".into()], lookup),
            ["A=1", "SET=here"]
        );
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
    }

    #[test]
    fn host_flag_wins_and_must_be_unix() {
        assert_eq!(
            daemon_socket(Some("unix:///tmp/x.sock")).unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        assert!(daemon_socket(Some("tcp://127.0.0.1:2375")).is_err());
    }
}
