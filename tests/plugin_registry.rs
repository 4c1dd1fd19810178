//! `docker plugin install / upgrade / push` end to end, as the docker CLI drives them: a real berth
//! daemon (temp roots, raw HTTP on its socket) against registries on loopback only — Debian's
//! `docker-registry` (plain, and with an htpasswd bcrypt entry) and a scripted, hostile stand-in
//! (tests/common/registry.rs) — and, when it is installed, a private dockerd 20.10 started the way
//! compat-tests/harness.py starts it (own data/exec roots, own containerd, stopped by PID).
//!
//! What is checked after every failure: no plugin, no staging directory under
//! `<data-root>/plugins/tmp`, nothing in `storage/ingest`, no blob that was not there before.
//! Runs as root (enable starts the test driver in namespaces; CI runs as root).

mod common;
#[path = "common/registry.rs"]
mod registry;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth::distribution::reference::Reference;
use berth::distribution::registry::{
    AuthConfig, RegistryClient, RegistryOptions, MEDIA_TYPE_DOCKER_IMAGE_CONFIG,
    MEDIA_TYPE_DOCKER_LAYER_GZIP, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_PLUGIN_CONFIG,
};
use common::*;
use registry::*;
use serde_json::{json, Value};

/// `X-Registry-Auth` the CLI sends without credentials (`{}`).
const NO_AUTH: &str = "e30=";
/// The last line of a pull whose grant does not match.
const INCORRECT_PRIVILEGES: &str =
    r#"{"errorDetail":{"message":"incorrect privileges"},"error":"incorrect privileges"}"#;

// ---- support: berth over raw HTTP ---------------------------------------------------------------

fn daemon() -> Daemon {
    Daemon::start_with(&["--plugin-start-timeout", "10"])
}

/// Prints how long a test took when it ends (visible with `--nocapture`).
struct Timer(String, Instant);

impl Timer {
    /// Times the test running on this thread (libtest names the thread after the test).
    fn start() -> Timer {
        let test = thread::current().name().unwrap_or("?").to_string();
        Timer(test, Instant::now())
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        println!(
            "[timing] {}: {:.1}s",
            self.0,
            self.1.elapsed().as_secs_f64()
        );
    }
}

/// `host/<ref>` for each of `refs`.
fn at<const N: usize>(host: &str, refs: [&str; N]) -> [String; N] {
    refs.map(|r| format!("{host}/{r}"))
}

/// The start of a test against Debian's docker-registry (plain, or with an htpasswd entry):
/// its timer, the registry and berth.
fn with_registry(htpasswd: Option<(&str, &str)>) -> (Timer, DockerRegistry, Daemon) {
    (Timer::start(), DockerRegistry::start(htpasswd), daemon())
}

/// One request as the CLI sends it to the plugin distribution endpoints: `X-Registry-Auth`
/// when given, and a grant (the privileges, as JSON) as body when given. Its whole answer is
/// read with a long deadline: a progress stream may be quiet for a minute (a stalled registry)
/// before its last message.
fn call(
    socket: &Path,
    method: &str,
    path: &str,
    auth: Option<&str>,
    grant: Option<&str>,
) -> Response {
    let mut headers = Vec::new();
    if grant.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    if let Some(auth) = auth {
        headers.push(("X-Registry-Auth", auth));
    }
    let body = grant.unwrap_or_default().as_bytes();
    let stream = send_request(socket, (method, path, &headers, body), body.len())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(150)))
        .unwrap();
    read_response(stream).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// `POST /plugins/pull?remote=…&name=…` with `grant` as the body, as the CLI sends it.
fn pull(socket: &Path, remote: &str, alias: &str, grant: &str, auth: Option<&str>) -> Response {
    let (remote, alias) = (url_escape(remote), url_escape(alias));
    let path = format!("/v1.41/plugins/pull?remote={remote}&name={alias}");
    call(socket, "POST", &path, auth, Some(grant))
}

fn upgrade(socket: &Path, name: &str, remote: &str, grant: &str) -> Response {
    let path = format!(
        "/v1.41/plugins/{name}/upgrade?remote={}",
        url_escape(remote)
    );
    call(socket, "POST", &path, Some(NO_AUTH), Some(grant))
}

fn push(socket: &Path, name: &str, auth: Option<&str>) -> Response {
    call(
        socket,
        "POST",
        &format!("/v1.41/plugins/{name}/push"),
        auth,
        None,
    )
}

fn privileges(socket: &Path, remote: &str, auth: Option<&str>) -> Response {
    let path = format!("/v1.41/plugins/privileges?remote={}", url_escape(remote));
    call(socket, "GET", &path, auth, None)
}

/// The JSON messages of a progress stream (each line ends with `\r\n`).
fn messages(r: &Response) -> Vec<Value> {
    let text = r.text();
    assert!(
        text.is_empty() || text.ends_with("\r\n"),
        "stream lines end with CRLF: {text:?}"
    );
    text.split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad stream line {l:?}: {e}")))
        .collect()
}

fn status_of(m: &Value) -> String {
    m["status"].as_str().unwrap_or_default().to_string()
}

/// `errorDetail.message` of the stream's last message, if it is an error.
fn stream_error(r: &Response) -> Option<String> {
    let msgs = messages(r);
    let last = msgs.last()?;
    last["errorDetail"]["message"].as_str().map(str::to_string)
}

/// The stream of a successful transfer: 200, JSON, no error anywhere.
fn assert_streamed_ok(r: &Response, what: &str) -> Vec<Value> {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    let msgs = messages(r);
    assert!(
        msgs.iter().all(|m| m.get("errorDetail").is_none()),
        "{what} failed: {}",
        r.text()
    );
    msgs
}

/// The error a failed transfer reports: a plain HTTP error when the remote did not resolve
/// (nothing was streamed yet, as with moby), else the stream's last message.
fn failed_stream(r: &Response, what: &str) -> String {
    if r.status != 200 {
        assert_eq!(r.status, 500, "{what}: {}", r.text());
        let message = r.message();
        assert!(
            message.starts_with("error resolving plugin reference: "),
            "{what}: only resolution fails before streaming: {message}"
        );
        return message
            .trim_start_matches("error resolving plugin reference: ")
            .to_string();
    }
    stream_error(r).unwrap_or_else(|| panic!("{what} did not fail: {}", r.text()))
}

/// `(status, id)` of every message but transfer progress (`Downloading`/`Pushing` updates are
/// throttled and may be dropped, so their number varies).
fn steps(msgs: &[Value]) -> Vec<(String, String)> {
    msgs.iter()
        .filter(|m| m.get("aux").is_none())
        .map(|m| {
            (
                status_of(m),
                m["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        // Transfer progress, and `Pulling fs layer` (said only when a download outlasts the
        // first 100 ms look), depend on timing.
        .filter(|(s, _)| s != "Downloading" && s != "Pushing" && s != "Pulling fs layer")
        .collect()
}

/// `GET /plugins/privileges` for a remote that cannot be fetched: moby hides the error behind
/// `200 []`. berth answers `null` (see the ignored test
/// `privileges_of_an_unfetchable_remote_is_an_empty_list`); both read as "nothing" to clients.
fn assert_privileges_hidden(r: &Response, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    let v = r.json();
    assert!(
        v.is_null() || v.as_array().is_some_and(|a| a.is_empty()),
        "{what}: {}",
        r.text()
    );
}

fn short(digest: &str) -> String {
    digest.trim_start_matches("sha256:")[..12].to_string()
}

fn s(status: &str, id: &str) -> (String, String) {
    (status.to_string(), id.to_string())
}

/// The steps of a stream that reports each of `statuses` in turn for every one of `digests`.
fn each(statuses: &[&str], digests: &[&str]) -> Vec<(String, String)> {
    let ids: Vec<String> = digests.iter().map(|d| short(d)).collect();
    statuses
        .iter()
        .flat_map(|st| ids.iter().map(move |id| s(st, id)))
        .collect()
}

// ---- support: what is on disk ---------------------------------------------------------------------

fn names_in(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn plugins_root(d: &Daemon) -> PathBuf {
    d.data_root.join("plugins")
}

/// Digests in `<data-root>/plugins/storage/blobs/sha256`.
fn blobs(d: &Daemon) -> BTreeSet<String> {
    names_in(&plugins_root(d).join("storage/blobs/sha256"))
        .into_iter()
        .map(|n| format!("sha256:{n}"))
        .collect()
}

fn blob(d: &Daemon, digest: &str) -> Vec<u8> {
    std::fs::read(
        plugins_root(d)
            .join("storage/blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap_or_else(|e| panic!("blob {digest}: {e}"))
}

fn plugin_dirs(d: &Daemon) -> BTreeSet<String> {
    names_in(&plugins_root(d))
        .into_iter()
        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

/// What a transfer may leave behind: staging dirs, ingest files.
fn scratch(d: &Daemon) -> (BTreeSet<String>, BTreeSet<String>) {
    (
        names_in(&plugins_root(d).join("tmp")),
        names_in(&plugins_root(d).join("storage/ingest")),
    )
}

/// After a failed transfer: plugins and blobs as before, nothing staged.
fn assert_nothing_left(
    d: &Daemon,
    plugins_before: &[String],
    blobs_before: &BTreeSet<String>,
    what: &str,
) {
    assert_eq!(d.plugin_names(""), plugins_before, "{what}: plugins");
    let (tmp, ingest) = scratch(d);
    assert!(tmp.is_empty(), "{what}: left in plugins/tmp: {tmp:?}");
    assert!(
        ingest.is_empty(),
        "{what}: left in storage/ingest: {ingest:?}"
    );
    assert_eq!(&blobs(d), blobs_before, "{what}: blobs");
    assert_eq!(
        plugin_dirs(d).len(),
        plugins_before.len(),
        "{what}: plugin directories"
    );
}

/// Every file below `dir`, relative, with its bytes (symlinks as `-> target`).
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                out.push((format!("{rel}/"), Vec::new()));
                todo.push(p);
            } else if md.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.push((rel, format!("-> {}", t.display()).into_bytes()));
            } else {
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

// ---- support: plugin contents and registries --------------------------------------------------

/// The test driver's create context with `extra` files added to its rootfs.
fn driver_context(config: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let base = test_plugin_context(config);
    if extra.is_empty() {
        return base;
    }
    let mut archive = tar::Archive::new(&base[..]);
    let mut out = tar::Builder::new(Vec::new());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut h = entry.header().clone();
        let path = entry.path().unwrap().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.append_data(&mut h, path, &data[..]).unwrap();
    }
    for (path, data) in extra {
        let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
        out.append_data(&mut h, format!("rootfs/{path}"), *data)
            .unwrap();
    }
    out.into_inner().unwrap()
}

/// A small plugin (no binary) for tests that never enable it.
fn small_context(description: &str, file: &[u8]) -> Vec<u8> {
    let config = json!({
        "Description": description,
        "Entrypoint": ["/bin/none"],
        "Interface": {"Socket": "none.sock", "Types": ["docker.volumedriver/1.0"]},
    })
    .to_string();
    plugin_context(&config, &[("bin/none", file)])
}

/// Config fragment of a plugin that needs privileges: host network, a mount, a device, a
/// capability.
const PRIVILEGED: &str = r#"
  "Linux": {"Capabilities": ["CAP_SYS_ADMIN"],
            "Devices": [{"Name": "fuse", "Path": "/dev/fuse", "Settable": ["path"]}]},
  "Network": {"Type": "host"},
  "Mounts": [{"Name": "state", "Source": "/var/lib/berth-test-state", "Destination": "/state",
              "Type": "bind", "Options": ["rbind"], "Settable": ["source"]}],"#;

/// What `PRIVILEGED` asks for, in moby's order (network, mounts, devices, capabilities).
fn privileged_list() -> Value {
    json!([
        {"Name": "network", "Description": "permissions to access a network", "Value": ["host"]},
        {"Name": "mount", "Description": "host path to mount", "Value": ["/var/lib/berth-test-state"]},
        {"Name": "device", "Description": "host device to access", "Value": ["/dev/fuse"]},
        {"Name": "capabilities", "Description": "list of additional capabilities required", "Value": ["CAP_SYS_ADMIN"]},
    ])
}

const PRIVILEGED_TEXT: &str = concat!(
    r#"[{"Name":"network","Description":"permissions to access a network","Value":["host"]},"#,
    r#"{"Name":"mount","Description":"host path to mount","Value":["/var/lib/berth-test-state"]},"#,
    r#"{"Name":"device","Description":"host device to access","Value":["/dev/fuse"]},"#,
    r#"{"Name":"capabilities","Description":"list of additional capabilities required","Value":["CAP_SYS_ADMIN"]}]"#,
    "\n"
);

fn small_privileged_context(description: &str) -> Vec<u8> {
    let config = format!(
        r#"{{{PRIVILEGED}
  "Description": "{description}",
  "Entrypoint": ["/bin/none"],
  "Interface": {{"Socket": "none.sock", "Types": ["docker.volumedriver/1.0"]}}
}}"#
    );
    plugin_context(&config, &[("bin/none", b"#!/bin/sh\n")])
}

/// GET on a registry over plain HTTP/1.0 (so no chunked answers): (status, headers, body).
fn registry_get(
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).unwrap();
    let r = read_response(conn).unwrap();
    (r.status, r.headers, r.body)
}

/// The manifest bytes the registry serves for `repo:reference`.
fn served_manifest(host: &str, repo: &str, reference: &str, auth: Option<&str>) -> Vec<u8> {
    let mut headers = vec![("Accept", MEDIA_TYPE_DOCKER_MANIFEST)];
    let basic;
    if let Some(a) = auth {
        basic = format!("Basic {a}");
        headers.push(("Authorization", basic.as_str()));
    }
    let (status, _, body) =
        registry_get(host, &format!("/v2/{repo}/manifests/{reference}"), &headers);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    body
}

fn served_blob(host: &str, repo: &str, digest: &str) -> Vec<u8> {
    let (status, _, body) = registry_get(host, &format!("/v2/{repo}/blobs/{digest}"), &[]);
    assert_eq!(status, 200, "blob {digest}");
    body
}

/// Pushes blobs and a manifest to a registry with berth's registry client (for artifacts berth
/// cannot create: images). Returns the manifest digest.
fn push_raw(
    reference: &str,
    tag: &str,
    blobs: &[&[u8]],
    media_type: &str,
    manifest: &[u8],
) -> String {
    let dir = tempfile::tempdir().unwrap();
    actix_rt::System::new().block_on(async {
        let client = RegistryClient::new(RegistryOptions::default()).unwrap();
        let r = Reference::parse_normalized(reference).unwrap();
        let session = client
            .session(&r, &AuthConfig::default(), true)
            .await
            .unwrap();
        for (i, b) in blobs.iter().enumerate() {
            let path = write_file(dir.path(), &format!("b{i}"), b);
            session
                .push_blob_from_file(&desc(MEDIA_TYPE_DOCKER_LAYER_GZIP, b), &path, &mut |_| {})
                .await
                .unwrap();
        }
        session
            .push_manifest(tag, media_type, manifest)
            .await
            .unwrap()
    })
}

/// Pushes a small image (not a plugin) as `reference` with tag `1`.
fn push_image(reference: &str) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = layer(&[E::File("hello", b"image")]);
    let manifest = manifest_json(
        &desc(MEDIA_TYPE_DOCKER_IMAGE_CONFIG, config),
        &[desc(MEDIA_TYPE_DOCKER_LAYER_GZIP, &layer)],
    );
    push_raw(
        reference,
        "1",
        &[config, &layer],
        MEDIA_TYPE_DOCKER_MANIFEST,
        &manifest,
    );
}

/// One tar entry of a hand-made layer. Names are written as raw bytes, so `..` can be said.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn layer(entries: &[E]) -> Vec<u8> {
    layer_with(entries, flate2::Compression::fast())
}

fn layer_with(entries: &[E], level: flate2::Compression) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    for e in entries {
        let (kind, name, data, target): (_, &str, &[u8], Option<&str>) = match e {
            E::Dir(n) => (tar::EntryType::Directory, n, &[], None),
            E::File(n, d) => (tar::EntryType::Regular, n, d, None),
            E::Symlink(n, t) => (tar::EntryType::Symlink, n, &[], Some(t)),
            E::Hardlink(n, t) => (tar::EntryType::Link, n, &[], Some(t)),
        };
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        if let Some(t) = target {
            h.set_link_name(t).unwrap();
        }
        h.set_cksum();
        out.append(&h, data).unwrap();
    }
    gzip(&out.into_inner().unwrap(), level)
}

fn gzip(data: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), level);
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A plugin as a registry holds it: config, layers, schema 2 manifest.
struct Art {
    config: Vec<u8>,
    layers: Vec<Vec<u8>>,
    manifest: Vec<u8>,
}

impl Art {
    fn new(description: &str, layers: Vec<Vec<u8>>) -> Art {
        let config = serde_json::to_vec(&json!({
            "Description": description,
            "Entrypoint": ["/bin/none"],
            "Interface": {"Socket": "none.sock", "Types": ["docker.volumedriver/1.0"]},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| digest_of(l)).collect::<Vec<_>>()},
        }))
        .unwrap();
        let layer_descs: Vec<_> = layers
            .iter()
            .map(|l| desc(MEDIA_TYPE_DOCKER_LAYER_GZIP, l))
            .collect();
        let manifest = manifest_json(&desc(MEDIA_TYPE_PLUGIN_CONFIG, &config), &layer_descs);
        Art {
            config,
            layers,
            manifest,
        }
    }

    fn digest(&self) -> String {
        digest_of(&self.manifest)
    }

    fn blobs(&self) -> Vec<Vec<u8>> {
        let mut b = vec![self.config.clone()];
        b.extend(self.layers.iter().cloned());
        b
    }
}

/// A stand-in serving `art` as `<any repo>:<tag>`, except that requests for `hostile_blob`
/// are answered by `reply`.
fn hostile_registry(
    art: &Art,
    tag: &str,
    hostile_blob: Option<String>,
    reply: impl Fn() -> Reply + Send + Sync + 'static,
) -> StandIn {
    let base = simple_registry(
        vec![served(tag, MEDIA_TYPE_DOCKER_MANIFEST, &art.manifest)],
        art.blobs(),
    );
    StandIn::start(move |req| match &hostile_blob {
        Some(d) if req.path().ends_with(&format!("/blobs/{d}")) => reply(),
        _ => base(req),
    })
}

/// Deterministic incompressible bytes (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn basic_auth_header(user: &str, password: &str, server: &str) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(
        json!({"username": user, "password": password, "serveraddress": server}).to_string(),
    )
}

// =================================================================================================
// 1. Round trip through a real registry
// =================================================================================================

#[test]
fn push_rm_privileges_pull_inspect_round_trip() {
    let (_t, reg, d) = with_registry(None);
    let host = reg.host();
    let [name, priv_name] = at(&host, ["test/td:1", "test/priv:1"]);

    d.create_plugin_ok(&name, &test_plugin_context(&test_plugin_config("")));
    d.create_plugin_ok(
        &priv_name,
        &test_plugin_context(&test_plugin_config(PRIVILEGED)),
    );
    let created = d.plugin(&name).unwrap();
    let created_priv = d.plugin(&priv_name).unwrap();
    let layer = created["Config"]["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .to_string();

    // Push: the stream names the repository, prepares both blobs, pushes them, then says the
    // digest and ends with the aux result.
    let r = push(&d.socket, &name, Some(NO_AUTH));
    let msgs = assert_streamed_ok(&r, "push");
    assert!(r.header("docker-plugin-name").is_none());
    let aux = msgs.last().unwrap()["aux"].clone();
    assert_eq!(
        msgs.last().unwrap().as_object().unwrap().len(),
        1,
        "the last message is only the aux: {:?}",
        msgs.last()
    );
    let digest = aux["Digest"].as_str().unwrap().to_string();
    let size = aux["Size"].as_u64().unwrap();
    assert_eq!(aux["Tag"], "1");
    let manifest = served_manifest(&host, "test/td", "1", None);
    assert_eq!(digest, digest_of(&manifest));
    assert_eq!(size, manifest.len() as u64);
    let served: Value = serde_json::from_slice(&manifest).unwrap();
    let config_digest = served["config"]["digest"].as_str().unwrap().to_string();
    assert_eq!(served["layers"][0]["digest"], layer.as_str());
    assert_eq!(served["config"]["mediaType"], MEDIA_TYPE_PLUGIN_CONFIG);
    assert_eq!(
        served["layers"][0]["mediaType"],
        MEDIA_TYPE_DOCKER_LAYER_GZIP
    );
    assert_eq!(
        steps(&msgs),
        [
            vec![s(
                &format!("The push refers to repository [{host}/test/td]"),
                ""
            )],
            // dockerd 20.10's non-TTY shape: every blob and the manifest announced twice,
            // then `Upload complete` each; the digest only in the aux message.
            each(
                &["Preparing", "Preparing", "Upload complete"],
                &[&layer, &config_digest, &digest]
            ),
        ]
        .concat(),
        "{}",
        r.text()
    );
    // What berth stores is what the registry serves, byte for byte.
    assert_eq!(blob(&d, &digest), manifest);
    assert_eq!(
        blob(&d, &config_digest),
        served_blob(&host, "test/td", &config_digest)
    );
    assert_eq!(blob(&d, &layer), served_blob(&host, "test/td", &layer));

    // Pushing again: same digest, nothing uploaded.
    let again = push(&d.socket, &name, Some(NO_AUTH));
    let msgs = assert_streamed_ok(&again, "re-push");
    assert_eq!(msgs.last().unwrap()["aux"], aux);
    assert!(
        steps(&msgs).contains(&s("Layer already exists", &short(&layer))),
        "{}",
        again.text()
    );
    assert!(
        !steps(&msgs).contains(&s("Upload complete", &short(&layer))),
        "{}",
        again.text()
    );

    let r = push(&d.socket, &priv_name, Some(NO_AUTH));
    assert_streamed_ok(&r, "push privileged");

    // rm: the plugin and every blob nobody references go.
    d.remove_plugin(&name, false).expect(200, "rm");
    d.remove_plugin(&priv_name, false).expect(200, "rm");
    assert!(d.plugin_names("").is_empty());
    assert!(blobs(&d).is_empty(), "blobs left: {:?}", blobs(&d));
    assert!(plugin_dirs(&d).is_empty());

    // Privileges: `null` for the privilege-free driver, the exact list in moby's order else.
    let r = privileges(&d.socket, &format!("{host}/test/td:1"), Some(NO_AUTH));
    assert_eq!((r.status, r.text()), (200, "null\n".to_string()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Untagged means :latest, which was never pushed: fetch errors are hidden as `[]`.
    let r = privileges(&d.socket, &format!("{host}/test/priv"), Some(NO_AUTH));
    assert_privileges_hidden(&r, "untagged");
    let r = privileges(&d.socket, &priv_name, Some(NO_AUTH));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), privileged_list());
    assert_eq!(r.text(), PRIVILEGED_TEXT);

    // Pull with the grant the privileges endpoint gave (the CLI re-sends it unchanged).
    let r = pull(&d.socket, &name, "", "null", Some(NO_AUTH));
    assert_eq!(r.header("docker-plugin-name"), Some(name.as_str()));
    let msgs = assert_streamed_ok(&r, "pull");
    assert_eq!(
        steps(&msgs),
        [
            vec![
                s(&format!("Pulling from {host}/test/td"), "1"),
                s(&format!("Digest: {digest}"), ""),
            ],
            each(
                &["Waiting", "Download complete", "Extracting", "Complete"],
                &[&layer]
            ),
        ]
        .concat(),
        "{}",
        r.text()
    );
    for m in msgs.iter().filter(|m| status_of(m) == "Downloading") {
        let current = m["progressDetail"]["current"].as_u64().unwrap();
        assert!(current <= m["progressDetail"]["total"].as_u64().unwrap());
        assert_eq!(m["id"], short(&layer).as_str());
    }

    // Inspect: the same config, the remote as reference, settings initialised, disabled.
    let pulled = d.plugin(&name).unwrap();
    assert_eq!(pulled["Config"], created["Config"]);
    assert_eq!(pulled["Name"], name.as_str());
    assert_eq!(pulled["PluginReference"], name.as_str());
    assert_eq!(pulled["Enabled"], false);
    assert_eq!(
        pulled["Settings"],
        json!({"Args": [], "Devices": [], "Env": [], "Mounts": []})
    );
    assert_ne!(pulled["Id"], created["Id"]);
    let id = pulled["Id"].as_str().unwrap();
    assert!(plugins_root(&d)
        .join(id)
        .join("rootfs/bin/berth-test-plugin")
        .is_file());

    // Byte identity: stored manifest == served manifest; the store holds exactly the three.
    assert_eq!(blob(&d, &digest), manifest);
    assert_eq!(
        blobs(&d),
        BTreeSet::from([digest.clone(), config_digest.clone(), layer.clone()])
    );
    assert_eq!(scratch(&d), (BTreeSet::new(), BTreeSet::new()));
    // ... and pushing the pulled plugin gives the same digest.
    let r = push(&d.socket, &name, Some(NO_AUTH));
    let msgs = assert_streamed_ok(&r, "push after pull");
    assert_eq!(msgs.last().unwrap()["aux"], aux);

    // The privileged one with its exact grant.
    let grant = privileged_list().to_string();
    let r = pull(&d.socket, &priv_name, "", &grant, Some(NO_AUTH));
    assert_streamed_ok(&r, "pull privileged");
    let pulled_priv = d.plugin(&priv_name).unwrap();
    assert_eq!(pulled_priv["Config"], created_priv["Config"]);
    assert_eq!(pulled_priv["Settings"], created_priv["Settings"]);

    // A pulled plugin runs.
    let r = d.enable_plugin(&name);
    assert_eq!(
        r.status,
        200,
        "enable after pull: {}\n{}",
        r.text(),
        d.log()
    );
    assert_eq!(d.plugin(&name).unwrap()["Enabled"], true);
    d.disable_plugin(&name).expect(200, "disable");
}

#[test]
fn pull_names_aliases_digests_and_shared_blobs() {
    let (_t, reg, d) = with_registry(None);
    let host = reg.host();
    let [name, second] = at(&host, ["test/td:1", "test/second:1"]);
    // Same rootfs, different config: the layer is shared.
    d.create_plugin_ok(&name, &small_context("first", b"shared rootfs"));
    d.create_plugin_ok(&second, &small_context("second", b"shared rootfs"));
    let layer = d.plugin(&name).unwrap()["Config"]["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        d.plugin(&second).unwrap()["Config"]["rootfs"]["diff_ids"][0],
        layer.as_str(),
        "create is deterministic: the same rootfs gives the same layer"
    );
    let digest = assert_streamed_ok(&push(&d.socket, &name, Some(NO_AUTH)), "push")
        .last()
        .unwrap()["aux"]["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_streamed_ok(&push(&d.socket, &second, Some(NO_AUTH)), "push second");
    d.remove_plugin(&name, false).expect(200, "rm");
    d.remove_plugin(&second, false).expect(200, "rm");
    assert!(blobs(&d).is_empty());

    // --alias: the local name is the alias (tagged), the reference the remote.
    let r = pull(&d.socket, &name, "myalias", "null", Some(NO_AUTH));
    assert_eq!(r.header("docker-plugin-name"), Some("myalias:latest"));
    assert_streamed_ok(&r, "pull --alias");
    let p = d.plugin("myalias").unwrap();
    assert_eq!(p["Name"], "myalias:latest");
    assert_eq!(p["PluginReference"], name.as_str());
    assert_eq!(p["Config"]["Description"], "first");
    let after_first = blobs(&d);
    assert_eq!(after_first.len(), 3);

    // By digest: named `repo:latest`, referenced by digest; every blob is already there.
    let by_digest = format!("{host}/test/td@{digest}");
    let r = pull(&d.socket, &by_digest, "", "null", Some(NO_AUTH));
    let latest = format!("{host}/test/td:latest");
    assert_eq!(r.header("docker-plugin-name"), Some(latest.as_str()));
    let msgs = assert_streamed_ok(&r, "pull by digest");
    assert!(
        steps(&msgs).contains(&s("Already exists", &short(&layer))),
        "{}",
        r.text()
    );
    assert!(!msgs.iter().any(|m| status_of(m) == "Pulling fs layer"));
    let p = d.plugin(&latest).unwrap();
    assert_eq!(p["Name"], latest.as_str());
    assert_eq!(p["PluginReference"], by_digest.as_str());
    assert_eq!(blobs(&d), after_first);

    // A different plugin sharing the layer: `Already exists`, and the layer is stored once.
    let r = pull(&d.socket, &second, "", "null", Some(NO_AUTH));
    let msgs = assert_streamed_ok(&r, "pull second");
    assert_eq!(
        steps(&msgs)[2..],
        [
            s("Already exists", &short(&layer)),
            s("Extracting", &short(&layer)),
            s("Complete", &short(&layer)),
        ],
        "{}",
        r.text()
    );
    let all = blobs(&d);
    assert_eq!(
        all.len(),
        5,
        "two manifests, two configs, one layer: {all:?}"
    );
    assert!(all.is_superset(&after_first));
    let second_id = d.plugin(&second).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        std::fs::read(plugins_root(&d).join(&second_id).join("rootfs/bin/none")).unwrap(),
        b"shared rootfs"
    );

    // rm collects what nobody references any more, and only that.
    d.remove_plugin("myalias", false).expect(200, "rm");
    assert_eq!(
        blobs(&d),
        all,
        "td:latest still uses the first plugin's blobs"
    );
    d.remove_plugin(&latest, false).expect(200, "rm");
    let left = blobs(&d);
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.contains(&layer));
    assert!(!left.contains(&digest));
    d.remove_plugin(&second, false).expect(200, "rm");
    assert!(blobs(&d).is_empty());
    assert_eq!(scratch(&d), (BTreeSet::new(), BTreeSet::new()));
}

// =================================================================================================
// 2. Privilege grants
// =================================================================================================

#[test]
fn wrong_grants_fail_with_incorrect_privileges_and_leave_nothing() {
    let (_t, reg, d) = with_registry(None);
    let host = reg.host();
    let name = format!("{host}/test/priv:1");
    d.create_plugin_ok(&name, &small_privileged_context("needs privileges"));
    assert_streamed_ok(&push(&d.socket, &name, Some(NO_AUTH)), "push");
    d.remove_plugin(&name, false).expect(200, "rm");
    let (plugins_before, blobs_before) = (d.plugin_names(""), blobs(&d));
    assert!(blobs_before.is_empty());

    let full = privileged_list();
    let mut missing = full.clone();
    missing.as_array_mut().unwrap().remove(1);
    let mut other_value = full.clone();
    other_value[2]["Value"] = json!(["/dev/null"]);
    // `capabilities` sorts first: 20.10 never compared it (CVE-2026-33997 class).
    let mut first_sorted = full.clone();
    first_sorted[3]["Value"] = json!(["CAP_NET_ADMIN"]);
    let mut first_sorted_extra_value = full.clone();
    first_sorted_extra_value[3]["Value"] = json!(["CAP_SYS_ADMIN", "CAP_SYS_MODULE"]);
    let mut extra = full.clone();
    extra.as_array_mut().unwrap().push(
        json!({"Name": "host pid namespace", "Description": "allow access to host pid namespace", "Value": ["true"]}),
    );
    let mut renamed = full.clone();
    renamed[0]["Name"] = json!("networks");
    let cases = [
        ("missing element", missing.to_string()),
        ("different value", other_value.to_string()),
        ("first-sorted element differs", first_sorted.to_string()),
        (
            "first-sorted element has an extra value",
            first_sorted_extra_value.to_string(),
        ),
        ("extra element", extra.to_string()),
        ("different name", renamed.to_string()),
        ("empty list", "[]".to_string()),
        ("null", "null".to_string()),
    ];
    for (what, grant) in &cases {
        let r = pull(&d.socket, &name, "", grant, Some(NO_AUTH));
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        assert_eq!(
            r.header("docker-plugin-name"),
            Some(name.as_str()),
            "{what}"
        );
        let text = r.text();
        let last = text
            .trim_end()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        assert_eq!(last, INCORRECT_PRIVILEGES, "{what}: {text}");
        assert_nothing_left(&d, &plugins_before, &blobs_before, what);
    }

    // No body at all is not a grant: refused before streaming (the CLI always sends one).
    let r = pull(&d.socket, &name, "", "", Some(NO_AUTH));
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.message().starts_with("failed to parse privileges: "),
        "{}",
        r.text()
    );
    assert_nothing_left(&d, &plugins_before, &blobs_before, "no body");

    // Descriptions are not compared and order does not matter: these grants are right.
    let mut described = full.clone();
    for p in described.as_array_mut().unwrap() {
        p["Description"] = json!("whatever the client says");
    }
    let mut reversed = full.as_array().unwrap().clone();
    reversed.reverse();
    for (i, grant) in [described.to_string(), Value::Array(reversed).to_string()]
        .iter()
        .enumerate()
    {
        let alias = format!("granted{i}");
        let r = pull(&d.socket, &name, &alias, grant, Some(NO_AUTH));
        assert_streamed_ok(&r, &alias);
        assert!(d.plugin(&alias).is_some());
    }
}

// =================================================================================================
// 3. Errors before streaming, and registry errors
// =================================================================================================

#[test]
fn errors_before_streaming_and_from_the_registry() {
    let (_t, reg, d) = with_registry(None);
    let host = reg.host();
    let name = format!("{host}/test/td:1");
    d.create_plugin_ok(&name, &small_context("errors", b"x"));
    assert_streamed_ok(&push(&d.socket, &name, Some(NO_AUTH)), "push");

    // The name is taken (checked before anything is fetched): 400, plain JSON error.
    let r = pull(&d.socket, &name, "", "null", Some(NO_AUTH));
    r.assert_error(400, &format!("plugin {name} already exists"));
    assert!(r.header("docker-plugin-name").is_none());
    d.create_plugin_ok("local", &small_context("local", b"y"));
    let r = pull(&d.socket, &name, "local", "null", Some(NO_AUTH));
    r.assert_error(400, "plugin local:latest already exists");
    // A digest in the alias: 500.
    let alias = format!("foo@sha256:{}", "a".repeat(64));
    let r = pull(&d.socket, &name, &alias, "null", Some(NO_AUTH));
    r.assert_error(500, "cannot use digest in plugin tag");
    // A bad reference: 500 on 1.41, 400 from 1.42.
    let r = pull(&d.socket, "Not/Valid", "", "null", Some(NO_AUTH));
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.message().contains("invalid reference format"),
        "{}",
        r.message()
    );
    let r = d.post_json("/v1.44/plugins/pull?remote=Not%2FValid&name=", "null");
    assert_eq!(r.status, 400, "{}", r.text());

    d.remove_plugin(&name, false).expect(200, "rm");
    d.remove_plugin("local", false).expect(200, "rm");
    let (plugins_before, blobs_before) = (d.plugin_names(""), blobs(&d));

    // Unknown tag / repository on a real registry: the stream says so.
    for (remote, expected) in [
        (
            format!("{host}/test/td:nope"),
            format!("{host}/test/td:nope: not found"),
        ),
        (
            format!("{host}/test/absent"),
            format!("{host}/test/absent:latest: not found"),
        ),
    ] {
        let r = pull(&d.socket, &remote, "", "null", Some(NO_AUTH));
        let err = failed_stream(&r, &remote);
        println!("[berth] pull {remote}: {err}");
        assert_eq!(err, expected);
        assert_nothing_left(&d, &plugins_before, &blobs_before, &remote);
        // The privileges endpoint hides fetch errors: 200 [].
        let r = privileges(&d.socket, &remote, Some(NO_AUTH));
        assert_privileges_hidden(&r, &remote);
    }

    // An image, not a plugin: the privileges endpoint refuses, and so does pull.
    let image = format!("{host}/test/image:1");
    push_image(&image);
    let r = privileges(&d.socket, &image, Some(NO_AUTH));
    r.assert_error(
        500,
        &format!("did not find plugin config for specified reference {image}"),
    );
    let r = pull(&d.socket, &image, "", "null", Some(NO_AUTH));
    let err = failed_stream(&r, "pull image");
    println!("[berth] pull {image}: {err}");
    assert_eq!(
        err,
        r#"Encountered remote "application/vnd.docker.container.image.v1+json"(image) when fetching"#
    );
    assert_nothing_left(&d, &plugins_before, &blobs_before, "image");

    // Push of a plugin that does not exist.
    let r = push(&d.socket, "nosuch:latest", Some(NO_AUTH));
    r.assert_error(404, r#"plugin "nosuch:latest" not found"#);
}

#[test]
fn privileges_of_an_unfetchable_remote_is_an_empty_list() {
    let reg = DockerRegistry::start(None);
    let host = reg.host();
    let d = daemon();
    let name = format!("{host}/test/free:1");
    d.create_plugin_ok(&name, &small_context("needs nothing", b"x"));
    assert_streamed_ok(&push(&d.socket, &name, Some(NO_AUTH)), "push");
    // Needs nothing: `null` (a Go nil slice).
    let r = privileges(&d.socket, &name, Some(NO_AUTH));
    assert_eq!((r.status, r.text()), (200, "null\n".to_string()));
    // Cannot be fetched (unknown tag, unknown repository, registry down): `[]`.
    let down = format!("127.0.0.1:{}/x/y:1", free_port());
    for remote in [
        format!("{host}/test/free:nope"),
        format!("{host}/test/absent"),
        down,
    ] {
        let r = privileges(&d.socket, &remote, Some(NO_AUTH));
        assert_eq!((r.status, r.text()), (200, "[]\n".to_string()), "{remote}");
    }
}

#[test]
fn a_remote_that_does_not_resolve_fails_before_streaming() {
    let reg = DockerRegistry::start(None);
    let host = reg.host();
    let d = daemon();
    for remote in [
        format!("{host}/test/td:nope"),
        format!("{host}/test/absent"),
    ] {
        let r = pull(&d.socket, &remote, "", "null", Some(NO_AUTH));
        let full = if remote.ends_with("absent") {
            format!("{remote}:latest")
        } else {
            remote.clone()
        };
        assert!(
            [404, 500].contains(&r.status),
            "{remote}: {} {}",
            r.status,
            r.text()
        );
        assert_eq!(
            r.message(),
            format!("error resolving plugin reference: {full}: not found")
        );
        assert!(r.header("docker-plugin-name").is_none());
    }
}

// =================================================================================================
// 4. Hostile registry
// =================================================================================================

fn hostile_art(seed: u64) -> Art {
    Art::new(
        "hostile",
        vec![layer(&[
            E::Dir("bin/"),
            E::File("bin/data", &noise(200_000, seed)),
        ])],
    )
}

/// Pulls `<stand-in>/hostile/plugin:1` and returns the stream's error, checking nothing is
/// left behind.
fn hostile_pull(d: &Daemon, stand_in: &StandIn, what: &str) -> String {
    let (plugins_before, blobs_before) = (d.plugin_names(""), blobs(d));
    let remote = format!("{}/hostile/plugin:1", stand_in.host());
    let started = Instant::now();
    let r = pull(&d.socket, &remote, "", "null", None);
    let err = failed_stream(&r, what);
    println!(
        "[berth] hostile {what} ({:.1}s): {err}",
        started.elapsed().as_secs_f64()
    );
    assert_nothing_left(d, &plugins_before, &blobs_before, what);
    // The daemon still serves.
    assert_eq!(d.get("/_ping").status, 200);
    err
}

#[test]
fn hostile_blobs_and_manifests_fail_cleanly() {
    let _t = Timer::start();
    let d = daemon();

    // A layer whose bytes are not its digest.
    let art = hostile_art(1);
    let digest = digest_of(&art.layers[0]);
    let mut evil = art.layers[0].clone();
    let n = evil.len();
    evil[n / 2] ^= 0xff;
    let evil_digest = digest_of(&evil);
    let stand_in = hostile_registry(&art, "1", Some(digest.clone()), move || {
        ok("application/octet-stream", &evil)
    });
    assert_eq!(
        hostile_pull(&d, &stand_in, "bad layer digest"),
        format!("unexpected commit digest {evil_digest}, expected {digest}: failed precondition")
    );

    // A layer cut off half way (the connection closes).
    let half = art.layers[0][..n / 2].to_vec();
    let stand_in = hostile_registry(&art, "1", Some(digest.clone()), move || Reply::Partial {
        content_length: Some(n as u64),
        body: half.clone(),
        hold: None,
    });
    let err = hostile_pull(&d, &stand_in, "truncated layer");
    assert!(
        err.starts_with(&format!("failed to fetch {digest}: unexpected EOF after ")),
        "{err}"
    );
    assert!(err.ends_with(&format!(" of {n} bytes")), "{err}");

    // A 100 MiB manifest, announced and not announced: refused without reading it all.
    for content_length in [Some(100u64 << 20), None] {
        let stand_in = StandIn::start(move |req| match req.path() {
            "/v2/" => ok("application/json", b"{}"),
            _ => Reply::Endless {
                content_type: MEDIA_TYPE_DOCKER_MANIFEST.into(),
                content_length,
            },
        });
        let err = hostile_pull(&d, &stand_in, "oversized manifest");
        assert!(err.contains("exceeds the limit of 4194304 bytes"), "{err}");
        assert!(eventually(Duration::from_secs(60), || stand_in.all_hung_up()));
        let written = stand_in.written.load(Ordering::Relaxed);
        assert!(written < 32 << 20, "berth read {written} bytes of it");
    }

    // A layer longer than its descriptor.
    let stand_in = hostile_registry(&art, "1", Some(digest.clone()), move || Reply::Endless {
        content_type: "application/octet-stream".into(),
        content_length: None,
    });
    assert_eq!(
        hostile_pull(&d, &stand_in, "overlong layer"),
        format!("failed to fetch {digest}: more than the {n} bytes its descriptor declares")
    );

    // A config that is not JSON.
    let mut broken = hostile_art(2);
    broken.config = b"not json".to_vec();
    broken.manifest = manifest_json(
        &desc(MEDIA_TYPE_PLUGIN_CONFIG, &broken.config),
        &[desc(MEDIA_TYPE_DOCKER_LAYER_GZIP, &broken.layers[0])],
    );
    let stand_in = hostile_registry(&broken, "1", None, || status(500, &[], ""));
    let err = hostile_pull(&d, &stand_in, "config not JSON");
    assert!(err.starts_with("failed to parse config: "), "{err}");
}

/// Pulls `remote` on another thread while watching `<data-root>/plugins/tmp`; returns the
/// response and whether `file` showed up below a staging rootfs before the pull ended.
fn pull_watching_staging(d: &Daemon, remote: &str, file: &str) -> (Response, bool) {
    let (socket, remote) = (d.socket.clone(), remote.to_string());
    let pulling = thread::spawn(move || pull(&socket, &remote, "", "null", None));
    let tmp = plugins_root(d).join("tmp");
    let mut seen = false;
    while !pulling.is_finished() {
        seen = seen
            || names_in(&tmp)
                .iter()
                .any(|n| n.starts_with(".rootfs") && tmp.join(n).join(file).exists());
        thread::sleep(Duration::from_millis(2));
    }
    (pulling.join().unwrap(), seen)
}

/// Layers are unpacked while they download, so when a layer's digest turns out wrong its
/// bytes already went into the staging rootfs: the pull must still fail with the digest
/// error (not an unpacking error, also when the wrong bytes do not unpack) and leave nothing.
#[test]
fn a_layer_unpacked_while_downloading_is_refused_when_its_digest_is_wrong() {
    let _t = Timer::start();
    let d = daemon();
    // Stored (uncompressed) gzip: the same length for the same entry sizes.
    let content = |seed| {
        layer_with(
            &[
                E::Dir("bin/"),
                E::File("bin/first", b"unpacked early"),
                E::File("bin/data", &noise(2 << 20, seed)),
            ],
            flate2::Compression::none(),
        )
    };
    let good = content(1);
    let art = Art::new("overlap", vec![good.clone()]);
    let digest = digest_of(&good);
    let other = content(2);
    assert_eq!(other.len(), good.len());
    // A valid layer that is not the one announced, and the announced one with a flipped byte
    // near its end (its gzip checksum fails once it is all unpacked).
    let mut corrupt = good.clone();
    let n = corrupt.len();
    corrupt[n * 3 / 4] ^= 0xff;
    for (what, served) in [("another valid layer", other), ("a corrupt layer", corrupt)] {
        let (plugins_before, blobs_before) = (d.plugin_names(""), blobs(&d));
        let actual = digest_of(&served);
        let body = Arc::new(served);
        let stand_in = hostile_registry(&art, "1", Some(digest.clone()), move || Reply::Slow {
            body: body.clone(),
            chunk: 64 << 10,
            delay: Duration::from_millis(10),
        });
        let remote = format!("{}/overlap/plugin:1", stand_in.host());
        let (r, unpacked_early) = pull_watching_staging(&d, &remote, "bin/first");
        assert!(
            unpacked_early,
            "{what}: nothing was unpacked while the layer downloaded"
        );
        assert_eq!(
            failed_stream(&r, what),
            format!("unexpected commit digest {actual}, expected {digest}: failed precondition")
        );
        assert_nothing_left(&d, &plugins_before, &blobs_before, what);
    }
    assert_eq!(d.get("/_ping").status, 200);
}

/// Several layers, one already stored and two unpacked while they download, with whiteouts and
/// overwrites: applied in manifest order, with the statuses in the order of sequential
/// download and unpacking.
#[test]
fn layers_unpacked_while_downloading_apply_in_order() {
    let _t = Timer::start();
    let d = daemon();
    let base = layer(&[
        E::Dir("bin/"),
        E::File("bin/a", b"a from base"),
        E::File("bin/b", b"b from base"),
        E::Dir("etc/"),
        E::File("etc/conf", b"conf from base"),
    ]);
    let big = noise(3 << 20, 7);
    let middle = layer(&[
        E::Dir("bin/"),
        E::File("bin/.wh.b", b""),
        E::File("etc/conf", b"conf from middle"),
        E::File("big", &big),
    ]);
    let top = layer(&[
        E::Dir("etc/"),
        E::File("etc/.wh..wh..opq", b""),
        E::File("etc/other", b"other from top"),
        E::File("bin/a", b"a from top"),
    ]);
    let first = Art::new("base only", vec![base.clone()]);
    let stack = Art::new("stack", vec![base.clone(), middle.clone(), top.clone()]);
    let mut all_blobs = first.blobs();
    all_blobs.extend(stack.blobs());
    let stand_in = StandIn::start(simple_registry(
        vec![
            served("base", MEDIA_TYPE_DOCKER_MANIFEST, &first.manifest),
            served("stack", MEDIA_TYPE_DOCKER_MANIFEST, &stack.manifest),
        ],
        all_blobs,
    ));
    let host = stand_in.host();
    assert_streamed_ok(
        &pull(
            &d.socket,
            &format!("{host}/layers/base:base"),
            "",
            "null",
            None,
        ),
        "pull base",
    );
    let name = format!("{host}/layers/stack:stack");
    let r = pull(&d.socket, &name, "", "null", None);
    let msgs = assert_streamed_ok(&r, "pull stack");
    let (b, m, t) = (
        short(&digest_of(&base)),
        short(&digest_of(&middle)),
        short(&digest_of(&top)),
    );
    assert_eq!(
        steps(&msgs)[2..],
        [
            s("Waiting", &m),
            s("Waiting", &t),
            s("Already exists", &b),
            s("Download complete", &m),
            s("Download complete", &t),
            s("Extracting", &b),
            s("Complete", &b),
            s("Extracting", &m),
            s("Complete", &m),
            s("Extracting", &t),
            s("Complete", &t),
        ],
        "{}",
        r.text()
    );
    let id = d.plugin(&name).unwrap()["Id"].as_str().unwrap().to_string();
    let rootfs = tree(&plugins_root(&d).join(id).join("rootfs"));
    let expected: Vec<(String, Vec<u8>)> = vec![
        ("big".into(), big),
        ("bin/".into(), vec![]),
        ("bin/a".into(), b"a from top".to_vec()),
        ("etc/".into(), vec![]),
        ("etc/other".into(), b"other from top".to_vec()),
    ];
    assert!(rootfs == expected, "rootfs: {:?}", {
        rootfs.iter().map(|(p, c)| (p, c.len())).collect::<Vec<_>>()
    });
    let (tmp, ingest) = scratch(&d);
    assert!(tmp.is_empty() && ingest.is_empty(), "{tmp:?} {ingest:?}");
}

/// Pulls a plugin whose layers are `layers` from a stand-in; returns the error.
fn unsafe_layers_pull(d: &Daemon, what: &str, layers: Vec<Vec<u8>>) -> (String, Art) {
    let art = Art::new(what, layers);
    let stand_in = hostile_registry(&art, "1", None, || status(500, &[], ""));
    (hostile_pull(d, &stand_in, what), art)
}

/// `unsafe_layers_pull` of one layer of `entries`; returns the error and the layer's short
/// digest.
fn unsafe_layer_pull(d: &Daemon, what: &str, entries: &[E]) -> (String, String) {
    let (err, art) = unsafe_layers_pull(d, what, vec![layer(entries)]);
    (err, short(&digest_of(&art.layers[0])))
}

#[test]
fn a_layer_that_unpacks_beyond_the_limit_is_refused_with_nothing_left() {
    let _t = Timer::start();
    // A 64 MiB floor: the 10 MB bomb (about 10 GiB unpacked) stops after 64 MiB.
    let d = Daemon::start_with(&["--max-unpacked-size", "67108864"]);
    let (bomb, _) = common::archives::gzip_bomb(common::archives::RawTar::new(), "bomb", 10 << 20);
    let started = Instant::now();
    let (err, art) = unsafe_layers_pull(&d, "gzip bomb", vec![bomb]);
    let short = short(&digest_of(&art.layers[0]));
    assert_starts_with(
        &err,
        &format!(
            "failed to extract layer {short}: refusing an archive that unpacks to more than 67.11MB: the limit after "
        ),
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn layers_that_escape_the_rootfs_are_refused() {
    let _t = Timer::start();
    let d = daemon();
    let outside = tempfile::Builder::new()
        .prefix("berth-outside")
        .tempdir_in("/tmp")
        .unwrap();
    let out = outside.path().display().to_string();
    let escape_names = [
        d.data_root.join("escaped"),
        plugins_root(&d).join("escaped"),
        plugins_root(&d).join("tmp/escaped"),
        d.dir.path().join("escaped"),
    ];

    // `..` breakout.
    let (err, refused) = unsafe_layer_pull(
        &d,
        "dotdot",
        &[
            E::Dir("bin/"),
            E::File("bin/ok", b"fine"),
            E::File("../../../escaped", b"pwned"),
        ],
    );
    assert_eq!(
        err,
        format!(
            r#"failed to extract layer {refused}: refusing unsafe tar entry "../../../escaped": climbs above the root (".." breakout)"#
        )
    );
    let (err, _) = unsafe_layer_pull(
        &d,
        "dotdot inside a name",
        &[E::File("bin/../../escaped", b"pwned")],
    );
    assert!(err.contains("climbs above the root"), "{err}");

    // An absolute symlink to a host directory, then a file written through it.
    let (err, refused) = unsafe_layer_pull(
        &d,
        "write through symlink",
        &[E::Symlink("evil", &out), E::File("evil/pwned", b"pwned")],
    );
    assert_eq!(
        err,
        format!(
            r#"failed to extract layer {refused}: refusing unsafe tar entry "evil/pwned": parent "evil" is a symbolic link; refusing to write through it"#
        )
    );
    // The same across two layers (the second layer meets the first one's link on disk).
    let (err, art) = unsafe_layers_pull(
        &d,
        "write through symlink of an earlier layer",
        vec![
            layer(&[E::Symlink("evil", &out)]),
            layer(&[E::File("evil/pwned", b"pwned")]),
        ],
    );
    assert!(
        err.starts_with(&format!(
            "failed to extract layer {}: refusing unsafe tar entry",
            short(&digest_of(&art.layers[1]))
        )),
        "{err}"
    );
    // A relative symlink climbing out.
    let relative = format!("../../../../../../../../..{out}");
    let (err, _) = unsafe_layer_pull(
        &d,
        "relative symlink escape",
        &[
            E::Symlink("evil", &relative),
            E::File("evil/pwned", b"pwned"),
        ],
    );
    assert!(
        err.contains(&format!(
            r#"refusing unsafe tar entry "evil": symlink target "{relative}" escapes the root"#
        )),
        "{err}"
    );
    // Hard links to host files, by climbing and by absolute name.
    for (what, target) in [
        ("hardlink climbing out", "../../../../../../etc/passwd"),
        ("hardlink to an absolute host path", "/etc/passwd"),
    ] {
        let (err, _) = unsafe_layer_pull(&d, what, &[E::Hardlink("passwd", target)]);
        assert!(
            err.contains(r#"refusing unsafe tar entry "passwd""#),
            "{what}: {err}"
        );
    }

    // A directory entry over a symlink replaces the link (it is not followed): the file lands
    // inside the rootfs and the pull succeeds.
    let art = Art::new(
        "dir replaces symlink",
        vec![layer(&[
            E::Symlink("evil", &out),
            E::Dir("evil/"),
            E::File("evil/pwned", b"inside"),
        ])],
    );
    let stand_in = hostile_registry(&art, "1", None, || status(500, &[], ""));
    let remote = format!("{}/hostile/plugin:1", stand_in.host());
    assert_streamed_ok(
        &pull(&d.socket, &remote, "", "null", None),
        "dir over symlink",
    );
    let id = d.plugin(&remote).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let evil = plugins_root(&d).join(id).join("rootfs/evil");
    assert!(std::fs::symlink_metadata(&evil).unwrap().is_dir());
    assert_eq!(std::fs::read(evil.join("pwned")).unwrap(), b"inside");

    assert!(
        names_in(outside.path()).is_empty(),
        "written outside: {:?}",
        names_in(outside.path())
    );
    for p in &escape_names {
        assert!(!p.exists(), "{} was written", p.display());
    }
}

#[test]
fn a_stalled_layer_fails_at_the_stall_deadline() {
    let _t = Timer::start();
    let art = hostile_art(3);
    let digest = digest_of(&art.layers[0]);
    let n = art.layers[0].len();
    let half = art.layers[0][..n / 2].to_vec();
    let d = daemon();
    let stand_in = hostile_registry(&art, "1", Some(digest.clone()), move || Reply::Partial {
        content_length: Some(n as u64),
        body: half.clone(),
        hold: Some(Duration::from_secs(90)),
    });
    let started = Instant::now();
    let err = hostile_pull(&d, &stand_in, "stalled layer");
    let took = started.elapsed();
    assert_eq!(
        err,
        format!(
            "Get \"http://{}/v2/hostile/plugin/blobs/{digest}\": no data transferred for 1m0s",
            stand_in.host()
        )
    );
    assert!(
        took >= Duration::from_secs(55) && took < Duration::from_secs(85),
        "{took:?}"
    );
}

#[test]
fn a_multi_arch_index_installs_this_platform() {
    let _t = Timer::start();
    let d = daemon();
    let arch_art = |arch: &str| {
        Art::new(
            &format!("built for {arch}"),
            vec![layer(&[E::File("arch", arch.as_bytes())])],
        )
    };
    let (amd, arm) = (arch_art("amd64"), arch_art("arm64"));
    let entry = |a: &Art, arch: &str| index_entry(&a.manifest, Some(("linux", arch)));
    let index = index_json(
        MEDIA_TYPE_DOCKER_MANIFEST_LIST,
        &[entry(&amd, "amd64"), entry(&arm, "arm64")],
    );
    let mut blob_list = amd.blobs();
    blob_list.extend(arm.blobs());
    let stand_in = StandIn::start(simple_registry(
        vec![
            served("1", MEDIA_TYPE_DOCKER_MANIFEST_LIST, &index),
            served("amd", MEDIA_TYPE_DOCKER_MANIFEST, &amd.manifest),
            served("arm", MEDIA_TYPE_DOCKER_MANIFEST, &arm.manifest),
        ],
        blob_list,
    ));
    let remote = format!("{}/multi/plugin:1", stand_in.host());
    let ours = if go_arch() == "arm64" { &arm } else { &amd };
    let theirs = if go_arch() == "arm64" { &amd } else { &arm };

    let r = privileges(&d.socket, &remote, None);
    assert_eq!((r.status, r.text()), (200, "null\n".to_string()));
    let r = pull(&d.socket, &remote, "", "null", None);
    let msgs = assert_streamed_ok(&r, "pull index");
    println!("[berth] index pull: {:?}", steps(&msgs));
    let p = d.plugin(&remote).unwrap();
    assert_eq!(
        p["Config"]["Description"],
        format!("built for {}", go_arch())
    );
    assert_eq!(p["PluginReference"], remote.as_str());
    let id = p["Id"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(plugins_root(&d).join(id).join("rootfs/arch")).unwrap(),
        go_arch()
    );
    // The chosen manifest is stored as served; nothing of the other platform was fetched.
    assert_eq!(blob(&d, &ours.digest()), ours.manifest);
    let theirs_blobs: Vec<String> = theirs.blobs().iter().map(|b| digest_of(b)).collect();
    for req in stand_in.seen() {
        assert!(
            !theirs_blobs
                .iter()
                .any(|t| req.path().ends_with(t.as_str()))
                && !req.path().ends_with(&theirs.digest()),
            "fetched the other platform: {}",
            req.path()
        );
    }
    let mut expected: BTreeSet<String> = ours.blobs().iter().map(|b| digest_of(b)).collect();
    expected.insert(ours.digest());
    assert_eq!(blobs(&d), expected);
}

// =================================================================================================
// 5. Auth
// =================================================================================================

#[test]
fn htpasswd_registry_needs_credentials_for_push_and_pull() {
    let (_t, reg, d) = with_registry(Some(("alice", "s3cret")));
    let host = reg.host();
    let name = format!("{host}/alice/td:1");
    let good = basic_auth_header("alice", "s3cret", &host);
    let wrong = basic_auth_header("alice", "guess", &host);
    d.create_plugin_ok(&name, &small_context("private", b"secret rootfs"));

    for (what, auth) in [
        ("no header", None),
        ("{}", Some(NO_AUTH)),
        ("wrong password", Some(wrong.as_str())),
    ] {
        let r = push(&d.socket, &name, auth);
        let err = failed_stream(&r, what);
        println!("[berth] push without credentials ({what}): {err}");
        assert_eq!(
            err, "error pushing plugin: unauthorized: authentication required",
            "{what}"
        );
    }
    let r = push(&d.socket, &name, Some(&good));
    let aux = assert_streamed_ok(&r, "push with credentials")
        .last()
        .unwrap()["aux"]
        .clone();
    let digest = aux["Digest"].as_str().unwrap().to_string();
    let basic = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    assert_eq!(
        digest_of(&served_manifest(&host, "alice/td", "1", Some(&basic))),
        digest
    );
    d.remove_plugin(&name, false).expect(200, "rm");
    let (plugins_before, blobs_before) = (d.plugin_names(""), blobs(&d));

    for (what, auth) in [
        ("no header", None),
        ("{}", Some(NO_AUTH)),
        ("wrong password", Some(wrong.as_str())),
    ] {
        let r = pull(&d.socket, &name, "", "null", auth);
        let err = failed_stream(&r, what);
        println!("[berth] pull without credentials ({what}): {err}");
        assert_eq!(err, "unauthorized: authentication required", "{what}");
        assert_nothing_left(&d, &plugins_before, &blobs_before, what);
        let r = privileges(&d.socket, &name, auth);
        assert_privileges_hidden(&r, what);
    }
    let r = privileges(&d.socket, &name, Some(&good));
    assert_eq!((r.status, r.text()), (200, "null\n".to_string()));
    let r = pull(&d.socket, &name, "", "null", Some(&good));
    assert_streamed_ok(&r, "pull with credentials");
    let p = d.plugin(&name).unwrap();
    assert_eq!(p["Config"]["Description"], "private");
    assert_eq!(
        blob(&d, &digest),
        served_manifest(&host, "alice/td", "1", Some(&basic))
    );
}

// =================================================================================================
// 6. Cancellation
// =================================================================================================

/// Starts a pull and closes the connection after the first `Downloading` message. Returns when
/// it closed.
fn pull_and_hang_up(d: &Daemon, remote: &str) {
    let path = format!("/v1.41/plugins/pull?remote={}&name=", url_escape(remote));
    let headers = [
        ("Content-Type", "application/json"),
        ("X-Registry-Auth", NO_AUTH),
    ];
    let mut stream = send_request(&d.socket, ("POST", &path, &headers, b"null"), 4).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no Downloading message");
        let n = stream.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "stream ended before any download: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&seen).contains(r#""status":"Downloading""#) {
            break;
        }
        assert!(
            !String::from_utf8_lossy(&seen).contains("errorDetail"),
            "{}",
            String::from_utf8_lossy(&seen)
        );
    }
    stream.shutdown(std::net::Shutdown::Both).unwrap();
}

fn large_art() -> Art {
    let big = noise(50 << 20, 42);
    Art::new(
        "large",
        vec![gzip(
            &{
                let mut t = tar::Builder::new(Vec::new());
                let mut h = header(tar::EntryType::Regular, big.len() as u64, 0o644);
                t.append_data(&mut h, "big.bin", &big[..]).unwrap();
                t.into_inner().unwrap()
            },
            flate2::Compression::none(),
        )],
    )
}

/// Pulls `remote`, hangs up at the first `Downloading`, and asserts that within `within` berth
/// has left nothing of the pull behind and still answers.
fn cancel_pull(d: &Daemon, remote: &str, within: Duration, what: &str) {
    pull_and_hang_up(d, remote);
    let started = Instant::now();
    let clean = eventually(within, || {
        let (tmp, ingest) = scratch(d);
        tmp.is_empty() && ingest.is_empty() && blobs(d).is_empty() && plugin_dirs(d).is_empty()
    });
    let took = started.elapsed();
    assert!(
        clean,
        "{what}: {within:?} after the client left: plugins {:?}, scratch {:?}, blobs {:?}",
        d.plugin_names(""),
        scratch(d),
        blobs(d)
    );
    assert!(d.plugin_names("").is_empty(), "{what}");
    println!(
        "[berth] cancelled pull ({what}) clean after {:.1}s",
        took.as_secs_f64()
    );
    assert_eq!(d.get("/_ping").status, 200);
}

/// berth after a pull of a large plugin from a slow stand-in (its layer in `chunk`-byte
/// pieces) was cancelled, checked as `cancel_pull` does; the plugin and its remote.
fn cancelled_slow_pull(
    chunk: usize,
    within: Duration,
    what: &str,
) -> (Daemon, StandIn, Art, String) {
    let art = large_art();
    let stand_in = slow_registry(&art, chunk);
    let d = daemon();
    let remote = format!("{}/slow/plugin:1", stand_in.host());
    cancel_pull(&d, &remote, within, what);
    (d, stand_in, art, remote)
}

/// A stand-in serving `art` whose layer comes in `chunk`-byte pieces, 50 ms apart.
fn slow_registry(art: &Art, chunk: usize) -> StandIn {
    let body = Arc::new(art.layers[0].clone());
    let delay = Duration::from_millis(50);
    let layer = Some(digest_of(&body));
    hostile_registry(art, "1", layer, move || Reply::Slow {
        body: body.clone(),
        chunk,
        delay,
    })
}

#[test]
fn a_client_that_hangs_up_cancels_the_pull_real_registry() {
    let _t = Timer::start();
    let reg = DockerRegistry::start(None);
    let host = reg.host();
    let art = large_art();
    let remote = format!("{host}/test/large:1");
    let all = art.blobs();
    let refs: Vec<&[u8]> = all.iter().map(|b| b.as_slice()).collect();
    push_raw(
        &remote,
        "1",
        &refs,
        MEDIA_TYPE_DOCKER_MANIFEST,
        &art.manifest,
    );
    let d = daemon();

    cancel_pull(&d, &remote, Duration::from_secs(15), "real registry");
    // The daemon still serves, and the same pull completes.
    let started = Instant::now();
    let r = pull(&d.socket, &remote, "", "null", Some(NO_AUTH));
    assert_streamed_ok(&r, "pull after cancel");
    println!(
        "[berth] a whole pull of the 50 MiB plugin took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let id = d.plugin(&remote).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        std::fs::metadata(plugins_root(&d).join(id).join("rootfs/big.bin"))
            .unwrap()
            .len(),
        50 << 20
    );
}

#[test]
fn a_client_that_hangs_up_stops_the_download_promptly() {
    let _t = Timer::start();
    // 50 MiB at ~2.5 MB/s: 20 s for the whole layer.
    let within = Duration::from_secs(5);
    let (_d, stand_in, art, _) = cancelled_slow_pull(128 * 1024, within, "slow stand-in");
    // berth stopped reading: the stand-in's writes stop growing.
    let a = stand_in.written.load(Ordering::Relaxed);
    thread::sleep(Duration::from_secs(2));
    let b = stand_in.written.load(Ordering::Relaxed);
    assert!(b - a < 2 << 20, "still downloading: {a} -> {b} bytes");
    assert!(b < (art.layers[0].len() as u64) / 2, "downloaded {b} bytes");
}

#[test]
fn a_client_that_hangs_up_leaves_nothing_slow_registry() {
    let _t = Timer::start();
    // 50 MiB at ~10 MB/s: ~5 s for the whole layer; the client leaves at the start.
    let within = Duration::from_secs(30);
    let (d, _stand_in, _, remote) = cancelled_slow_pull(512 * 1024, within, "5 s layer");
    let r = pull(&d.socket, &remote, "", "null", None);
    assert_streamed_ok(&r, "pull after cancel");
    assert_eq!(d.plugin_names(""), vec![remote]);
}

// =================================================================================================
// 7. Upgrade
// =================================================================================================

#[test]
fn upgrade_keeps_id_name_settings_and_swaps_config_and_rootfs() {
    let (_t, reg, d) = with_registry(None);
    let host = reg.host();
    let [v1, v2, v3] = at(&host, ["test/up:1", "test/up:2", "test/up:3"]);
    d.create_plugin_ok(&v1, &driver_context(&test_plugin_config(""), &[]));
    let config2 = test_plugin_config("").replace("berth test volume driver", "upgraded driver");
    d.create_plugin_ok(
        &v2,
        &driver_context(&config2, &[("upgraded.txt", b"version 2\n")]),
    );
    d.create_plugin_ok(&v3, &driver_context(&test_plugin_config(PRIVILEGED), &[]));
    let mut aux2 = Value::Null;
    for n in [&v1, &v2, &v3] {
        let msgs = assert_streamed_ok(&push(&d.socket, n, Some(NO_AUTH)), n);
        if n == &v2 {
            aux2 = msgs.last().unwrap()["aux"].clone();
        }
        d.remove_plugin(n, false).expect(200, "rm");
    }

    let r = pull(&d.socket, &v1, "", "null", Some(NO_AUTH));
    assert_streamed_ok(&r, "pull v1");
    d.set_plugin(&v1, &["TEST_START_DELAY_MS=0"])
        .expect(204, "set");
    let before = d.plugin(&v1).unwrap();
    let id = before["Id"].as_str().unwrap().to_string();
    let rootfs = plugins_root(&d).join(&id).join("rootfs");

    // Enabled: refused with 409 before anything streams.
    let r = d.enable_plugin(&v1);
    assert_eq!(r.status, 200, "enable: {}\n{}", r.text(), d.log());
    let r = upgrade(&d.socket, &v1, &v2, "null");
    r.assert_error(
        409,
        &format!("plugin must be disabled before upgrading: plugin {v1} is enabled"),
    );
    d.disable_plugin(&v1).expect(200, "disable");

    // Disabled: upgraded in place.
    let r = upgrade(&d.socket, &v1, &v2, "null");
    assert_eq!(r.header("docker-plugin-name"), Some(v1.as_str()));
    let msgs = assert_streamed_ok(&r, "upgrade");
    assert_eq!(status_of(&msgs[0]), format!("Pulling from {host}/test/up"));
    let after = d.plugin(&v1).unwrap();
    assert_eq!(after["Id"], before["Id"]);
    assert_eq!(after["Name"], before["Name"]);
    assert_eq!(after["Settings"], before["Settings"]);
    assert!(after["Settings"]["Env"]
        .as_array()
        .unwrap()
        .contains(&json!("TEST_START_DELAY_MS=0")));
    assert_eq!(after["PluginReference"], v2.as_str());
    assert_eq!(after["Config"]["Description"], "upgraded driver");
    assert_ne!(after["Config"]["rootfs"], before["Config"]["rootfs"]);
    assert_eq!(
        std::fs::read(rootfs.join("upgraded.txt")).unwrap(),
        b"version 2\n"
    );
    assert_eq!(plugin_dirs(&d), BTreeSet::from([id.clone()]));
    assert_eq!(
        names_in(&plugins_root(&d).join(&id))
            .iter()
            .filter(|n| n.starts_with("rootfs"))
            .count(),
        1,
        "{:?}",
        names_in(&plugins_root(&d).join(&id))
    );
    // The store holds exactly v2's blobs, v2's manifest as served.
    let digest2 = aux2["Digest"].as_str().unwrap();
    assert_eq!(
        blob(&d, digest2),
        served_manifest(&host, "test/up", "2", None)
    );
    assert_eq!(blobs(&d).len(), 3, "{:?}", blobs(&d));
    assert_eq!(scratch(&d), (BTreeSet::new(), BTreeSet::new()));
    // ... and it runs.
    let r = d.enable_plugin(&v1);
    assert_eq!(
        r.status,
        200,
        "enable after upgrade: {}\n{}",
        r.text(),
        d.log()
    );
    d.disable_plugin(&v1).expect(200, "disable");

    let state = |d: &Daemon| (d.plugin(&v1).unwrap(), tree(&rootfs), blobs(d));
    let upgraded = state(&d);

    // A fetch that fails leaves everything as it was.
    let r = upgrade(&d.socket, &v1, &format!("{host}/test/up:nope"), "null");
    let err = failed_stream(&r, "upgrade to a missing tag");
    assert_eq!(err, format!("{host}/test/up:nope: not found"));
    assert!(state(&d) == upgraded, "a failed upgrade changed the plugin");
    assert_eq!(scratch(&d), (BTreeSet::new(), BTreeSet::new()));

    // A wrong grant: incorrect privileges, nothing changed.
    for grant in ["null", "[]"] {
        let r = upgrade(&d.socket, &v1, &v3, grant);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.text().trim_end().lines().last().unwrap(),
            INCORRECT_PRIVILEGES
        );
        assert!(
            state(&d) == upgraded,
            "a refused upgrade changed the plugin"
        );
        assert_eq!(scratch(&d), (BTreeSet::new(), BTreeSet::new()));
    }
    // The right grant for v3 works.
    let r = upgrade(&d.socket, &v1, &v3, &privileged_list().to_string());
    assert_streamed_ok(&r, "upgrade to v3");
    let p = d.plugin(&v1).unwrap();
    assert_eq!(p["PluginReference"], v3.as_str());
    assert_eq!(p["Config"]["Network"]["Type"], "host");
    assert_eq!(
        p["Settings"], before["Settings"],
        "Settings are kept even when the config grows"
    );
    assert!(!rootfs.join("upgraded.txt").exists());
}

// =================================================================================================
// 8. Cross-compatibility with dockerd 20.10
// =================================================================================================

fn proc_stat(pid: i32) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// pid -> starttime of every live descendant of `roots`.
fn descendants(roots: &BTreeSet<i32>) -> Vec<(i32, u64)> {
    let stats: Vec<(i32, i32, u64)> = all_pids()
        .into_iter()
        .filter_map(|p| proc_stat(p).map(|(pp, st)| (p, pp, st)))
        .collect();
    let mut out: Vec<(i32, u64)> = Vec::new();
    let mut todo: Vec<i32> = roots.iter().copied().collect();
    while let Some(parent) = todo.pop() {
        for (p, pp, st) in &stats {
            if *pp == parent && !roots.contains(p) && !out.iter().any(|(q, _)| q == p) {
                out.push((*p, *st));
                todo.push(*p);
            }
        }
    }
    out
}

fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().next() != Some("Z"))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

fn unmount_below(prefix: &Path) {
    let prefix = prefix.display().to_string();
    let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(|m| m.replace("\\040", " ")))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in points {
        let _ = Command::new("umount")
            .args(["-l", &p])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The docker CLI the compat harness uses: `DOCKER_CLI`, default `/usr/local/bin/docker`.
fn docker_cli() -> PathBuf {
    std::env::var_os("DOCKER_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/docker"))
}

/// containerd with its own socket (returned), root, state and configuration under `dir`, as
/// scripts/testbed.py starts one for the compat harness: a dockerd pointed at it leaves a
/// containerd already listening on /run/containerd alone (whose state mixed with the private
/// dockerd's made `plugin enable` fail with `... plugins.moby/<id>: file exists`).
fn private_containerd(dir: &Path) -> (HostProcess, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let address = dir.join("c.sock");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.internal.v1.opt\"]\n\
             [grpc]\n  address = \"{}\"\n",
            dir.join("root").display(),
            dir.join("state").display(),
            address.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
    let mut cmd = Command::new("containerd");
    cmd.arg("--config")
        .arg(&config)
        .arg("--address")
        .arg(&address)
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let containerd = HostProcess::spawn("containerd", &mut cmd);
    wait_for_socket(&address);
    (containerd, address)
}

/// A private dockerd as compat-tests/harness.py starts one: its own data and exec roots under
/// `/tmp/bc…`, its own containerd, an empty config file, no iptables, no bridge; stopped by
/// PID (SIGTERM, 30 s, SIGKILL), then its containerd, leftovers killed by PID + start time.
/// /var/lib/docker is never touched.
struct Dockerd {
    tmp: PathBuf,
    sock: PathBuf,
    data_root: PathBuf,
    exec_root: PathBuf,
    child: Option<Child>,
    containerd: HostProcess,
    containerd_address: PathBuf,
}

impl Dockerd {
    /// `DOCKERD_BIN`, else `dockerd` on the PATH (as the harness finds it).
    fn binary() -> Option<PathBuf> {
        if let Some(bin) = std::env::var_os("DOCKERD_BIN") {
            return Some(PathBuf::from(bin));
        }
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
                .map(|p| p.join("dockerd"))
                .find(|p| p.is_file())
        })
    }

    fn start() -> Option<Dockerd> {
        let Some(bin) = Dockerd::binary() else {
            println!(
                "SKIPPED: dockerd is not installed (apt-get install docker.io): no cross-check"
            );
            return None;
        };
        if !docker_cli().is_file() {
            println!(
                "SKIPPED: no docker CLI at {} (set DOCKER_CLI): no cross-check",
                docker_cli().display()
            );
            return None;
        }
        let tmp = tempfile::Builder::new()
            .prefix("bc")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        let config = tmp.join("daemon.json");
        std::fs::write(&config, "{}\n").unwrap();
        let (containerd, containerd_address) = private_containerd(&tmp.join("ctd"));
        let mut d = Dockerd {
            sock: tmp.join("docker.sock"),
            data_root: tmp.join("data"),
            exec_root: tmp.join("exec"),
            tmp: tmp.clone(),
            child: None,
            containerd,
            containerd_address,
        };
        let log = std::fs::File::create(tmp.join("daemon.log")).unwrap();
        use std::os::unix::process::CommandExt;
        let child = Command::new(&bin)
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(&d.data_root)
            .arg("--exec-root")
            .arg(&d.exec_root)
            .arg("-H")
            .arg(format!("unix://{}", d.sock.display()))
            .arg("--pidfile")
            .arg(tmp.join("docker.pid"))
            .args(["--iptables=false", "--bridge=none"])
            .arg("--containerd")
            .arg(&d.containerd_address)
            .current_dir(&tmp)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start dockerd");
        d.child = Some(child);
        let up = eventually(Duration::from_secs(60), || {
            d.sock.exists()
                && raw_request(&d.sock, "GET", "/_ping", &[], &[]).is_ok_and(|r| r.status == 200)
        });
        assert!(up, "dockerd did not answer /_ping in 60 s:\n{}", d.log());
        Some(d)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.join("daemon.log")).unwrap_or_default()
    }

    /// The docker CLI against this daemon.
    fn docker(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(docker_cli())
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", self.tmp.join("cli"))
            .env("HOME", &self.tmp)
            .stdin(Stdio::null())
            .output()
            .expect("run docker");
        println!(
            "[dockerd] docker {}: exit {:?}\n  stdout: {}\n  stderr: {}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        out
    }

    /// Processes below dockerd and below the containerd shims talking to our containerd.
    fn owned(&self) -> Vec<(i32, u64)> {
        let addr = &self.containerd_address;
        let mut roots: BTreeSet<i32> = all_pids()
            .into_iter()
            .filter(|p| {
                let c = cmdline(*p);
                c.contains("containerd-shim")
                    && format!("{c} ").contains(&format!("-address {} ", addr.display()))
            })
            .collect();
        let mut procs: Vec<(i32, u64)> = roots
            .iter()
            .filter_map(|p| proc_stat(*p).map(|(_, st)| (*p, st)))
            .collect();
        if let Some(c) = &self.child {
            roots.insert(c.id() as i32);
        }
        procs.extend(descendants(&roots));
        procs
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Let dockerd stop its plugins itself first.
        if let Ok(out) = Command::new(docker_cli())
            .args([
                "plugin",
                "ls",
                "--no-trunc",
                "--filter",
                "enabled=true",
                "--format",
                "{{.ID}}",
            ])
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", self.tmp.join("cli"))
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new(docker_cli())
                    .args(["plugin", "disable", "-f", id])
                    .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
                    .env("DOCKER_CONFIG", self.tmp.join("cli"))
                    .output();
            }
        }
        let mut owned = self.owned();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(50));
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
        owned.extend(self.owned());
        self.containerd.terminate();
        owned.extend(self.owned());
        for (p, start) in owned {
            if proc_stat(p).is_some_and(|(_, st)| st == start) && pid_alive(p) {
                println!("[dockerd] killing leftover {p} {}", cmdline(p));
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Plugin socket dirs of our own plugin IDs (dockerd keeps them in /run/docker/plugins).
        for id in names_in(&self.data_root.join("plugins")) {
            if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                let dir = Path::new("/run/docker/plugins").join(&id);
                if dir.is_dir() {
                    unmount_below(&dir);
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        unmount_below(&self.tmp);
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn plugins_cross_between_berth_and_dockerd_20_10() {
    let _t = Timer::start();
    let Some(dockerd) = Dockerd::start() else {
        return;
    };
    let reg = DockerRegistry::start(None);
    let host = reg.host();
    let d = daemon();

    // berth -> registry -> dockerd.
    let from_berth = format!("{host}/cross/fromberth:1");
    d.create_plugin_ok(&from_berth, &test_plugin_context(&test_plugin_config("")));
    let berth_push = push(&d.socket, &from_berth, Some(NO_AUTH));
    let berth_push_msgs = assert_streamed_ok(&berth_push, "berth push");
    let created = d.plugin(&from_berth).unwrap();
    let out = dockerd.docker(&["plugin", "install", "--grant-all-permissions", &from_berth]);
    assert!(
        out.status.success(),
        "dockerd could not install berth's push:\n{}",
        dockerd.log()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("Installed plugin {from_berth}"))
    );
    let out = dockerd.docker(&["plugin", "inspect", &from_berth]);
    let in_dockerd: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        in_dockerd[0]["Config"]["Description"],
        created["Config"]["Description"]
    );
    assert_eq!(
        in_dockerd[0]["Config"]["Entrypoint"],
        created["Config"]["Entrypoint"]
    );
    assert_eq!(in_dockerd[0]["Enabled"], true, "dockerd enabled it");
    assert!(dockerd
        .docker(&["plugin", "disable", &from_berth])
        .status
        .success());
    assert!(dockerd
        .docker(&["plugin", "rm", &from_berth])
        .status
        .success());

    // dockerd -> registry -> berth.
    let from_dockerd = format!("{host}/cross/fromdockerd:1");
    let ctx_dir = tempfile::tempdir().unwrap();
    tar::Archive::new(
        &test_plugin_context(
            &test_plugin_config("").replace("berth test volume driver", "made by dockerd"),
        )[..],
    )
    .unpack(ctx_dir.path())
    .unwrap();
    let out = dockerd.docker(&[
        "plugin",
        "create",
        &from_dockerd,
        &ctx_dir.path().display().to_string(),
    ]);
    assert!(out.status.success(), "{}", dockerd.log());
    let dockerd_push = push(&dockerd.sock, &from_dockerd, Some(NO_AUTH));
    let dockerd_push_msgs = assert_streamed_ok(&dockerd_push, "dockerd push");
    let r = privileges(&d.socket, &from_dockerd, Some(NO_AUTH));
    assert_eq!((r.status, r.text()), (200, "null\n".to_string()));
    let berth_pull = pull(&d.socket, &from_dockerd, "", "null", Some(NO_AUTH));
    let berth_pull_msgs = assert_streamed_ok(&berth_pull, "berth pulls dockerd's push");
    let p = d.plugin(&from_dockerd).unwrap();
    assert_eq!(p["Config"]["Description"], "made by dockerd");
    assert_eq!(p["Config"]["DockerVersion"], "20.10.24+dfsg1");
    let digest = dockerd_push_msgs.last().unwrap()["aux"]["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        blob(&d, &digest),
        served_manifest(&host, "cross/fromdockerd", "1", None)
    );
    let r = d.enable_plugin(&from_dockerd);
    assert_eq!(
        r.status,
        200,
        "berth runs dockerd's plugin: {}\n{}",
        r.text(),
        d.log()
    );
    d.disable_plugin(&from_dockerd).expect(200, "disable");
    // ... and dockerd pulls it back from the registry the same (its own push, byte for byte).
    let dockerd_pull = pull(&dockerd.sock, &from_berth, "", "null", Some(NO_AUTH));
    let dockerd_pull_msgs = assert_streamed_ok(&dockerd_pull, "dockerd pull via API");

    println!(
        "[compare] raw push stream, dockerd:\n{}",
        dockerd_push.text()
    );
    println!(
        "[compare] raw pull stream, dockerd:\n{}",
        dockerd_pull.text()
    );
    println!(
        "[compare] push stream, berth:   {:?}",
        steps(&berth_push_msgs)
    );
    println!(
        "[compare] push stream, dockerd: {:?}",
        steps(&dockerd_push_msgs)
    );
    println!(
        "[compare] pull stream, berth:   {:?}",
        steps(&berth_pull_msgs)
    );
    println!(
        "[compare] pull stream, dockerd: {:?}",
        steps(&dockerd_pull_msgs)
    );
    println!(
        "[compare] push aux, berth: {}  dockerd: {}",
        berth_push_msgs.last().unwrap()["aux"],
        dockerd_push_msgs.last().unwrap()["aux"]
    );

    // Errors, side by side (raw HTTP, API 1.41).
    let priv_name = format!("{host}/cross/priv:1");
    d.create_plugin_ok(&priv_name, &small_privileged_context("privileged"));
    assert_streamed_ok(
        &push(&d.socket, &priv_name, Some(NO_AUTH)),
        "push privileged",
    );
    d.remove_plugin(&priv_name, false).expect(200, "rm");
    let mut first_sorted = privileged_list();
    first_sorted[3]["Value"] = json!(["CAP_NET_ADMIN"]);
    let image = format!("{host}/cross/image:1");
    push_image(&image);
    let cases = [
        (
            "missing tag",
            format!("{host}/cross/fromberth:nope"),
            "null".to_string(),
        ),
        (
            "missing repository",
            format!("{host}/cross/absent"),
            "null".to_string(),
        ),
        ("wrong grant []", priv_name.clone(), "[]".to_string()),
        (
            "wrong first-sorted grant",
            priv_name.clone(),
            first_sorted.to_string(),
        ),
        ("no body", priv_name.clone(), String::new()),
        ("an image", image.clone(), "null".to_string()),
    ];
    for (what, remote, grant) in &cases {
        let alias = "cmp:latest";
        let b = pull(&d.socket, remote, alias, grant, Some(NO_AUTH));
        let k = pull(&dockerd.sock, remote, alias, grant, Some(NO_AUTH));
        let text = |r: &Response| {
            if r.status != 200 {
                format!("HTTP {} {}", r.status, r.text().trim())
            } else {
                match stream_error(r) {
                    Some(e) => format!("stream error: {e}"),
                    None => "OK (installed)".to_string(),
                }
            }
        };
        println!(
            "[compare] {what}:\n  berth:   {}\n  dockerd: {}",
            text(&b),
            text(&k)
        );
        println!(
            "  berth last line:   {}",
            b.text().trim_end().lines().last().unwrap_or_default()
        );
        println!(
            "  dockerd last line: {}",
            k.text().trim_end().lines().last().unwrap_or_default()
        );
        if k.status == 200 && stream_error(&k).is_none() {
            let _ = dockerd.docker(&["plugin", "rm", "-f", alias]);
        }
        assert!(
            b.status != 200 || stream_error(&b).is_some(),
            "berth accepted {what}"
        );
        if what.starts_with("wrong") {
            assert_eq!(
                b.text().trim_end().lines().last().unwrap(),
                INCORRECT_PRIVILEGES
            );
        }
        if *what == "wrong grant []" {
            assert_eq!(
                stream_error(&k).as_deref(),
                Some("incorrect privileges"),
                "dockerd"
            );
        }
    }
    let r = privileges(
        &dockerd.sock,
        &format!("{host}/cross/fromberth:nope"),
        Some(NO_AUTH),
    );
    println!(
        "[compare] privileges of a missing tag: berth {} / dockerd {} {}",
        privileges(
            &d.socket,
            &format!("{host}/cross/fromberth:nope"),
            Some(NO_AUTH)
        )
        .text()
        .trim(),
        r.status,
        r.text().trim()
    );
    let (b, k) = (
        privileges(&d.socket, &image, Some(NO_AUTH)),
        privileges(&dockerd.sock, &image, Some(NO_AUTH)),
    );
    println!(
        "[compare] privileges of an image: berth {} {} / dockerd {} {}",
        b.status,
        b.text().trim(),
        k.status,
        k.text().trim()
    );
    assert_eq!((b.status, b.message()), (k.status, k.message()));
    let r = privileges(&dockerd.sock, &priv_name, Some(NO_AUTH));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        privileged_list(),
        "dockerd computes the same list"
    );
    assert_eq!(r.text(), PRIVILEGED_TEXT, "byte for byte");
}
