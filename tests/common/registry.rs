//! Registries on loopback for the integration tests (shared by tests/registry_client.rs and
//! tests/plugin_registry.rs, included with `#[path]`): Debian's `docker-registry` (plain or with
//! an htpasswd bcrypt entry) and a scripted stand-in on a std `TcpListener` that serves hostile
//! answers. Every process started here is stopped by its own PID when its guard drops.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::http::{find_header, read_request, Request};
use berth::distribution::registry::{Descriptor, MEDIA_TYPE_DOCKER_MANIFEST};
use sha2::{Digest as _, Sha256};

pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn desc(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: digest_of(bytes),
        size: bytes.len() as u64,
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GOARCH of this machine, as index entries name it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// A schema 2 manifest in moby's field order.
pub fn manifest_json(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
        "config": config,
        "layers": layers,
    }))
    .unwrap()
}

/// An entry of an index naming `manifest` (a schema 2 manifest), for `os/arch` when given.
pub fn index_entry(manifest: &[u8], platform: Option<(&str, &str)>) -> serde_json::Value {
    let mut entry = serde_json::json!({
        "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
        "digest": digest_of(manifest),
        "size": manifest.len(),
    });
    if let Some((os, arch)) = platform {
        entry["platform"] = serde_json::json!({"architecture": arch, "os": os});
    }
    entry
}

/// An index (`media_type`: a Docker manifest list or an OCI index) of `entries`.
pub fn index_json(media_type: &str, entries: &[serde_json::Value]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": entries,
    }))
    .unwrap()
}

/// A manifest `simple_registry` serves under `key` (a tag) as `media_type`.
pub fn served(key: &str, media_type: &str, body: &[u8]) -> (String, String, Vec<u8>) {
    (key.to_string(), media_type.to_string(), body.to_vec())
}

pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

pub fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

// ---- Debian's docker-registry ---------------------------------------------------------------

/// `docker-registry serve` on 127.0.0.1:<free port> with a temporary storage root; stopped by PID
/// when dropped.
pub struct DockerRegistry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl DockerRegistry {
    pub fn start(htpasswd: Option<(&str, &str)>) -> DockerRegistry {
        let bin = Path::new("/usr/bin/docker-registry");
        assert!(
            bin.exists(),
            "/usr/bin/docker-registry is missing: apt-get install docker-registry (.ci/run does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: berth-registry-client-test\n",
            dir.path().join("storage").display()
        );
        if let Some((user, password)) = htpasswd {
            let hash = bcrypt::hash_with_result(password, 4)
                .unwrap()
                .format_for_version(bcrypt::Version::TwoY);
            let file = write_file(
                dir.path(),
                "htpasswd",
                format!("{user}:{hash}\n").as_bytes(),
            );
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = write_file(dir.path(), "config.yml", config.as_bytes());
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let registry = DockerRegistry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {port}: {}",
                std::fs::read_to_string(registry.dir.path().join("registry.log"))
                    .unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// One request as the stand-in saw it.
pub type Req = Request;

/// Decoded values of `key` in the query of `req`, or in its body when that is a form (the
/// token endpoint's POST).
pub fn params(req: &Req, key: &str) -> Vec<String> {
    let raw =
        if find_header(&req.headers, "content-type") == Some("application/x-www-form-urlencoded") {
            String::from_utf8_lossy(&req.body).into_owned()
        } else {
            req.target
                .split_once('?')
                .map(|(_, q)| q)
                .unwrap_or("")
                .to_string()
        };
    raw.split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

/// How the stand-in answers.
pub enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Headers (with `Content-Length` when given), `body`, then closes or holds the connection.
    Partial {
        content_length: Option<u64>,
        body: Vec<u8>,
        hold: Option<Duration>,
    },
    /// Zeros until the client hangs up (bytes counted in `StandIn::written`).
    Endless {
        content_type: String,
        content_length: Option<u64>,
    },
    /// `body` (with its `Content-Length`) in `chunk`-byte pieces, `delay` apart, until done or
    /// the client hangs up (bytes counted in `StandIn::written`).
    Slow {
        body: Arc<Vec<u8>>,
        chunk: usize,
        delay: Duration,
    },
}

pub fn ok(content_type: &str, body: &[u8]) -> Reply {
    Reply::Full {
        status: 200,
        headers: vec![("Content-Type".into(), content_type.into())],
        body: body.to_vec(),
    }
}

pub fn status(code: u16, headers: &[(&str, &str)], body: &str) -> Reply {
    Reply::Full {
        status: code,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

pub fn not_found() -> Reply {
    status(
        404,
        &[("Content-Type", "application/json")],
        r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":null}]}"#,
    )
}

pub type Handler = dyn Fn(&Req) -> Reply + Send + Sync;

/// A registry on 127.0.0.1 answering from a script, one request per connection. Connections that
/// do not start with an HTTP method (the client's HTTPS attempt) are closed at once.
pub struct StandIn {
    pub port: u16,
    seen: Arc<Mutex<Vec<Req>>>,
    /// Bytes written by `Endless` and `Slow` replies.
    pub written: Arc<AtomicU64>,
    /// Connections accepted and not yet ended.
    open: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl StandIn {
    pub fn start(handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let written = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        {
            let (seen, written, open, stop) =
                (seen.clone(), written.clone(), open.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let (seen, written, open, handler) =
                                (seen.clone(), written.clone(), open.clone(), handler.clone());
                            open.fetch_add(1, Ordering::SeqCst);
                            thread::spawn(move || {
                                serve(conn, &*handler, &seen, &written);
                                open.fetch_sub(1, Ordering::SeqCst);
                            });
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        StandIn {
            port,
            seen,
            written,
            open,
            stop,
        }
    }

    /// Whether every connection accepted so far has ended. An `Endless` reply ends when the
    /// client hangs up (or at 200 MiB): once it has, `written` says how far the client read.
    pub fn all_hung_up(&self) -> bool {
        self.open.load(Ordering::SeqCst) == 0
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn seen(&self) -> Vec<Req> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn serve(mut conn: TcpStream, handler: &Handler, seen: &Mutex<Vec<Req>>, written: &AtomicU64) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let first = match reader.fill_buf() {
        Ok(b) if !b.is_empty() => b[0],
        _ => return,
    };
    if !first.is_ascii_uppercase() {
        let _ = conn.shutdown(Shutdown::Both);
        return;
    }
    let Ok(Some(req)) = read_request(&mut reader) else {
        return;
    };
    seen.lock().unwrap().push(req.clone());
    let head = |status: u16, headers: &[(String, String)], len: Option<u64>| {
        let mut s = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
        for (k, v) in headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(len) = len {
            s.push_str(&format!("Content-Length: {len}\r\n"));
        }
        s.push_str("\r\n");
        s
    };
    match handler(&req) {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let len = (req.method != "HEAD" || !body.is_empty()).then_some(body.len() as u64);
            let _ = conn.write_all(head(status, &headers, len).as_bytes());
            if req.method != "HEAD" {
                let _ = conn.write_all(&body);
            }
        }
        Reply::Partial {
            content_length,
            body,
            hold,
        } => {
            let _ = conn.write_all(head(200, &[], content_length).as_bytes());
            let _ = conn.write_all(&body);
            let _ = conn.flush();
            if let Some(hold) = hold {
                thread::sleep(hold);
            }
        }
        Reply::Endless {
            content_type,
            content_length,
        } => {
            let headers = vec![("Content-Type".to_string(), content_type)];
            let _ = conn.write_all(head(200, &headers, content_length).as_bytes());
            let chunk = vec![b' '; 64 * 1024];
            while conn.write_all(&chunk).is_ok() {
                written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if written.load(Ordering::Relaxed) > 200 << 20 {
                    break;
                }
            }
        }
        Reply::Slow { body, chunk, delay } => {
            let headers = vec![(
                "Content-Type".to_string(),
                "application/octet-stream".to_string(),
            )];
            let _ = conn.write_all(head(200, &headers, Some(body.len() as u64)).as_bytes());
            for piece in body.chunks(chunk.max(1)) {
                if conn.write_all(piece).is_err() {
                    break;
                }
                written.fetch_add(piece.len() as u64, Ordering::Relaxed);
                thread::sleep(delay);
            }
        }
    }
    let _ = conn.shutdown(Shutdown::Both);
}

/// A stand-in serving `manifests` (by tag or digest) and `blobs` (by digest) for any repository,
/// with `/v2/` answering 200.
pub fn simple_registry(
    manifests: Vec<(String, String, Vec<u8>)>,
    blobs: Vec<Vec<u8>>,
) -> impl Fn(&Req) -> Reply + Send + Sync + 'static {
    let mut by_key: HashMap<String, (String, Vec<u8>)> = HashMap::new();
    for (key, media_type, body) in manifests {
        by_key.insert(digest_of(&body), (media_type.clone(), body.clone()));
        by_key.insert(key, (media_type, body));
    }
    let blobs: HashMap<String, Vec<u8>> = blobs.into_iter().map(|b| (digest_of(&b), b)).collect();
    move |req| {
        let path = req.path();
        if path == "/v2/" {
            return ok("application/json", b"{}");
        }
        if let Some((_, key)) = path.split_once("/manifests/") {
            return match by_key.get(key) {
                Some((mt, body)) => ok(mt, body),
                None => not_found(),
            };
        }
        if let Some((_, digest)) = path.split_once("/blobs/") {
            return match blobs.get(digest) {
                Some(b) => ok("application/octet-stream", b),
                None => status(404, &[], ""),
            };
        }
        status(404, &[], "")
    }
}
