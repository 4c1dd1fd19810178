//! Legacy plugin discovery, activation and every VolumeDriver call against real plugin
//! processes on the host: berth's test plugin (`berth-test-plugin`) found through `.sock`,
//! `.spec` (`unix://`, `tcp://` via a loopback forwarder) and `.json` (`https://` via a loopback
//! TLS front with a CA and a client certificate made by the `openssl` CLI), and rclone's
//! `serve docker` as a third-party plugin. Every process and thread started here is stopped by
//! its guard; every wait is bounded.

mod common;
use common::{host_test_plugin, opts, rclone_serve_docker, HostProcess};

use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use berth::drivers::volume::{DriverErrorKind, PathMapper, VolumeDriverClient};
use berth::rpc::client::{RpcError, Transport};
use berth::rpc::discovery::{LegacyPlugins, LookupError};

/// `dir/<name>` for each of `names`.
fn paths_in<const N: usize>(dir: &Path, names: [&str; N]) -> [PathBuf; N] {
    names.map(|name| dir.join(name))
}

/// A temp directory whose `plugins/<name>.sock` is the test plugin with `knobs` (volumes in
/// `root/`): the temp directory, the plugin and its discovery directory.
fn one_plugin(name: &str, knobs: &[(&str, &str)]) -> (tempfile::TempDir, HostProcess, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let [plugins, root] = paths_in(t.path(), ["plugins", "root"]);
    let p = host_test_plugin(&plugins.join(format!("{name}.sock")), &root, knobs);
    (t, p, plugins)
}

/// `dir/<name>.spec` naming the unix socket `socket`.
fn write_spec(dir: &Path, name: &str, socket: &Path) {
    write(
        &dir.join(format!("{name}.spec")),
        &format!("unix://{}", socket.display()),
    );
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn registry(dirs: &[&Path], activation: Duration) -> LegacyPlugins {
    LegacyPlugins::new(
        dirs.iter().map(|d| d.to_path_buf()).collect(),
        activation,
        Some(Duration::from_secs(10)),
    )
}

// ---------------------------------------------------------------------------------------------
// Loopback fronts: TCP → unix and TLS → unix.

/// Forwards each loopback TCP connection to a unix socket (one thread per direction). Stops
/// accepting when dropped.
struct Forwarder {
    port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Forwarder {
    fn start(target: &Path) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let target = target.to_path_buf();
        let accept = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((tcp, _)) => {
                            tcp.set_nonblocking(false).unwrap();
                            let Ok(unix) = UnixStream::connect(&target) else {
                                continue;
                            };
                            pipe(tcp, unix);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Forwarder {
            port,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn pipe(tcp: TcpStream, unix: UnixStream) {
    let (mut tcp_r, mut unix_w) = (tcp.try_clone().unwrap(), unix.try_clone().unwrap());
    let (mut unix_r, mut tcp_w) = (unix, tcp);
    thread::spawn(move || {
        let _ = std::io::copy(&mut tcp_r, &mut unix_w);
        let _ = unix_w.shutdown(std::net::Shutdown::Write);
    });
    thread::spawn(move || {
        let _ = std::io::copy(&mut unix_r, &mut tcp_w);
        let _ = tcp_w.shutdown(std::net::Shutdown::Write);
    });
}

/// Test PKI from the `openssl` CLI: a CA, a server certificate for 127.0.0.1, a client
/// certificate; all PEM.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("the openssl CLI is needed for the TLS plugin tests (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca_args = vec!["req", "-x509"];
    ca_args.extend(ec);
    ca_args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=berth test CA",
    ]);
    openssl(dir, &ca_args);
    for (who, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        ),
        (
            "client",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        ),
    ] {
        write(&dir.join(format!("{who}.ext")), ext);
        let key = format!("{who}.key");
        let csr = format!("{who}.csr");
        let pem = format!("{who}.pem");
        let extfile = format!("{who}.ext");
        let subj = format!("/CN=berth test {who}");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        let serial = if who == "server" { "2" } else { "3" };
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                serial,
                "-days",
                "2",
                "-out",
                &pem,
                "-extfile",
                &extfile,
            ],
        );
    }
    Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}

/// A loopback TLS server (rustls, client certificate required, signed by the test CA) that
/// forwards the decrypted stream to a unix socket. Runs its own runtime on a thread; stopped
/// when dropped.
struct TlsFront {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TlsFront {
    fn start(pki: &Pki, target: &Path) -> TlsFront {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .unwrap();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let target = target.to_path_buf();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                tokio::spawn(async move {
                    while let Ok((tcp, _)) = listener.accept().await {
                        let acceptor = acceptor.clone();
                        let target = target.clone();
                        tokio::spawn(async move {
                            let Ok(mut tls) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let Ok(mut unix) = tokio::net::UnixStream::connect(&target).await
                            else {
                                return;
                            };
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut unix).await;
                        });
                    }
                });
                let _ = stop_rx.await;
            });
        });
        TlsFront {
            port,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Activation through a `.sock` file and every VolumeDriver method, against the real plugin.
#[actix_rt::test]
async fn every_volume_call_against_the_host_test_plugin() {
    let t = tempfile::tempdir().unwrap();
    let [plugins, root, log] = paths_in(t.path(), ["plugins", "root", "calls.log"]);
    let _p = host_test_plugin(
        &plugins.join("tdrv.sock"),
        &root,
        &[
            ("TEST_SCOPE", "Global"),
            ("TEST_CALL_LOG", log.to_str().unwrap()),
        ],
    );
    let reg = registry(&[&plugins], Duration::from_secs(5));
    assert_eq!(reg.names(), vec!["tdrv"]);
    let plugin = reg.get("tdrv", "VolumeDriver").await.unwrap();
    assert_eq!(plugin.name, "tdrv");
    assert_eq!(plugin.implements, vec!["VolumeDriver"]);
    assert_eq!(
        plugin.client.transport(),
        &Transport::Unix(plugins.join("tdrv.sock"))
    );
    // Cached: the same activation comes back.
    let again = reg.get("tdrv", "VolumeDriver").await.unwrap();
    assert!(Arc::ptr_eq(&plugin, &again));

    let d = VolumeDriverClient::new("tdrv".into(), plugin.client.clone(), PathMapper::Identity);
    assert_eq!(d.capabilities().await.scope, "global");

    d.create("v1", Some(&opts(&[("size", "1m")])))
        .await
        .unwrap();
    d.create("v2", None).await.unwrap();
    let v1 = d.get("v1").await.unwrap().expect("v1 exists");
    let v1_dir = root.join("v1").display().to_string();
    assert_eq!(v1.name, "v1");
    assert_eq!(v1.mountpoint, v1_dir);
    assert_eq!(v1.host_mountpoint, v1_dir);
    let created = v1.created_at.clone().expect("CreatedAt");
    assert!(
        chrono::DateTime::parse_from_rfc3339(&created).is_ok(),
        "{created}"
    );
    let status = v1.status.clone().expect("Status");
    assert_eq!(status["Mounts"], 0);
    assert_eq!(status["Opts"]["size"], "1m");

    let names: Vec<String> = d
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, vec!["v1", "v2"]);

    assert_eq!(d.path("v1").await.unwrap(), v1_dir);
    let id = "a".repeat(64);
    assert_eq!(d.mount("v1", &id).await.unwrap(), v1_dir);
    assert_eq!(
        d.get("v1").await.unwrap().unwrap().status.unwrap()["Mounts"],
        1
    );
    d.unmount("v1", &id).await.unwrap();
    assert_eq!(
        d.get("v1").await.unwrap().unwrap().status.unwrap()["Mounts"],
        0
    );

    // Errors as moby shows them after `create <name>: `.
    let e = d
        .create("bad", Some(&opts(&[("error", "no space left for bad")])))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "VolumeDriver.Create: no space left for bad");
    assert_eq!(e.method(), "VolumeDriver.Create");
    assert!(matches!(
        e.kind,
        DriverErrorKind::Rpc(RpcError::Status { code: 500, .. })
    ));
    let e = d.get("nope").await.unwrap_err();
    assert_eq!(e.to_string(), "VolumeDriver.Get: no such volume");
    assert!(!e.is_unreachable());

    d.remove("v1").await.unwrap();
    d.remove("v2").await.unwrap();
    assert!(d.list().await.unwrap().is_empty());

    // The wire: Activate with an empty body, Opts null without options.
    let calls = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines[0], "Plugin.Activate -");
    assert_eq!(lines[1], "VolumeDriver.Capabilities {}");
    assert!(
        lines.contains(&r#"VolumeDriver.Create {"Name":"v2","Opts":null}"#),
        "{calls}"
    );
    assert!(
        lines.contains(&r#"VolumeDriver.Create {"Name":"v1","Opts":{"size":"1m"}}"#),
        "{calls}"
    );
    assert!(
        lines.contains(&format!(r#"VolumeDriver.Mount {{"Name":"v1","ID":"{id}"}}"#).as_str()),
        "{calls}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("Plugin.Activate"))
            .count(),
        1,
        "activated once"
    );
}

#[actix_rt::test]
async fn get_null_is_no_such_volume() {
    let (_t, _p, plugins) = one_plugin("nul", &[("TEST_GET_NULL", "1")]);
    let reg = registry(&[&plugins], Duration::from_secs(5));
    let plugin = reg.get("nul", "VolumeDriver").await.unwrap();
    let d = VolumeDriverClient::new("nul".into(), plugin.client.clone(), PathMapper::Identity);
    assert_eq!(d.get("absent").await.unwrap(), None);
}

#[actix_rt::test]
async fn discovery_by_spec_files_unix_and_tcp() {
    let t = tempfile::tempdir().unwrap();
    let [sockets, specs] = paths_in(t.path(), ["run", "etc"]);
    // The plugin's socket lives outside every discovery directory.
    let hidden = t.path().join("elsewhere/viaspec.sock");
    let _p = host_test_plugin(&hidden, &t.path().join("root"), &[]);
    let fwd = Forwarder::start(&hidden);
    write(
        &specs.join("viaspec.spec"),
        &format!("unix://{}\n", hidden.display()),
    );
    write(
        &specs.join("viatcp/viatcp.spec"),
        &format!("tcp://127.0.0.1:{}", fwd.port),
    );
    let reg = registry(&[&sockets, &specs], Duration::from_secs(5));
    assert_eq!(reg.names(), vec!["viaspec", "viatcp"]);

    let a = reg.get("viaspec", "VolumeDriver").await.unwrap();
    assert_eq!(a.client.transport(), &Transport::Unix(hidden.clone()));
    let b = reg.get("viatcp", "VolumeDriver").await.unwrap();
    assert!(
        matches!(b.client.transport(), Transport::Tcp { url, .. } if url == &format!("http://127.0.0.1:{}", fwd.port))
    );

    // Both reach the same plugin.
    let da = VolumeDriverClient::new("viaspec".into(), a.client.clone(), PathMapper::Identity);
    let db = VolumeDriverClient::new("viatcp".into(), b.client.clone(), PathMapper::Identity);
    da.create("shared", None).await.unwrap();
    assert_eq!(db.get("shared").await.unwrap().unwrap().name, "shared");
    db.remove("shared").await.unwrap();
    assert!(da.list().await.unwrap().is_empty());
}

#[actix_rt::test]
async fn discovery_by_json_with_tls() {
    let t = tempfile::tempdir().unwrap();
    let pki = make_pki(&t.path().join("pki"));
    let sock = t.path().join("elsewhere/tls.sock");
    let _p = host_test_plugin(&sock, &t.path().join("root"), &[]);
    let front = TlsFront::start(&pki, &sock);
    let specs = t.path().join("specs");
    let addr = format!("https://127.0.0.1:{}", front.port);
    // Verified with the CA, client certificate presented.
    write(
        &specs.join("verified.json"),
        &serde_json::json!({
            "Name": "ignored",
            "Addr": addr,
            "TLSConfig": {
                "InsecureSkipVerify": false,
                "CAFile": pki.ca,
                "CertFile": pki.client_cert,
                "KeyFile": pki.client_key,
            }
        })
        .to_string(),
    );
    // No CAFile: moby does not verify the server (the client certificate is still needed).
    write(
        &specs.join("noca/noca.json"),
        &serde_json::json!({
            "Addr": addr,
            "TLSConfig": {"CertFile": pki.client_cert, "KeyFile": pki.client_key}
        })
        .to_string(),
    );
    // No TLSConfig: default verification against the system roots fails, at once.
    write(
        &specs.join("system.json"),
        &serde_json::json!({ "Addr": addr }).to_string(),
    );
    // Verified, but without a client certificate: the server refuses the handshake.
    write(
        &specs.join("nocert.json"),
        &serde_json::json!({ "Addr": addr, "TLSConfig": {"CAFile": pki.ca} }).to_string(),
    );
    let reg = registry(&[&specs], Duration::from_secs(5));

    let p = reg.get("verified", "VolumeDriver").await.unwrap();
    let d = VolumeDriverClient::new("verified".into(), p.client.clone(), PathMapper::Identity);
    d.create("tlsvol", None).await.unwrap();
    assert_eq!(d.list().await.unwrap()[0].name, "tlsvol");
    d.remove("tlsvol").await.unwrap();

    reg.get("noca", "VolumeDriver").await.unwrap();

    let t0 = Instant::now();
    let e = reg.get("system", "VolumeDriver").await.unwrap_err();
    assert!(
        matches!(&e, LookupError::Unavailable(m) if m.starts_with("tls: ") && m.contains("UnknownIssuer")),
        "{e}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "TLS failures are not retried"
    );

    let e = reg.get("nocert", "VolumeDriver").await.unwrap_err();
    assert!(matches!(e, LookupError::Unavailable(_)), "{e}");
}

/// A plugin whose address is known (spec file, or a stale socket file) but which starts late:
/// activation retries until it answers.
#[actix_rt::test]
async fn activation_waits_for_a_plugin_that_starts_late() {
    let t = tempfile::tempdir().unwrap();
    let [dir, late_sock] = paths_in(t.path(), ["plugins", "elsewhere/late.sock"]);
    write_spec(&dir, "late", &late_sock);
    // A socket file left by a previous run: connection refused until the plugin re-binds it.
    let stale_sock = dir.join("stale.sock");
    std::fs::create_dir_all(&dir).unwrap();
    drop(UnixListener::bind(&stale_sock).unwrap());

    let reg = registry(&[&dir], Duration::from_secs(10));
    let _a = host_test_plugin(
        &late_sock,
        &t.path().join("root-a"),
        &[("TEST_START_DELAY_MS", "700")],
    );
    let _b = host_test_plugin(
        &stale_sock,
        &t.path().join("root-b"),
        &[("TEST_START_DELAY_MS", "700")],
    );
    let t0 = Instant::now();
    let (a, b) = futures_util::future::join(
        reg.get("late", "VolumeDriver"),
        reg.get("stale", "VolumeDriver"),
    )
    .await;
    let took = t0.elapsed();
    a.unwrap();
    b.unwrap();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[actix_rt::test]
async fn unknown_names_fail_at_once() {
    let t = tempfile::tempdir().unwrap();
    let reg = registry(
        &[t.path(), Path::new("/nonexistent/berth")],
        Duration::from_secs(15),
    );
    let t0 = Instant::now();
    let e = reg.get("nosuchplugin", "VolumeDriver").await.unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(e, LookupError::NotFound("nosuchplugin".into()));
    assert_eq!(e.to_string(), "plugin \"nosuchplugin\" not found");
}

#[actix_rt::test]
async fn a_found_plugin_that_never_answers_is_unavailable_after_the_activation_timeout() {
    let t = tempfile::tempdir().unwrap();
    let [dir, sock] = paths_in(t.path(), ["plugins", "elsewhere/mute.sock"]);
    write_spec(&dir, "mute", &sock);
    let _p = host_test_plugin(&sock, &t.path().join("root"), &[("TEST_NEVER_LISTEN", "1")]);
    let reg = registry(&[&dir], Duration::from_millis(600));
    let t0 = Instant::now();
    let e = reg.get("mute", "VolumeDriver").await.unwrap_err();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(
        e,
        LookupError::Unavailable(format!(
            "dial unix {}: connect: no such file or directory",
            sock.display()
        ))
    );

    // A plugin that accepts but hangs on Plugin.Activate is cut at the same deadline.
    let hung = dir.join("hung.sock");
    let _h = host_test_plugin(
        &hung,
        &t.path().join("root-h"),
        &[("TEST_HANG_ON", "Activate")],
    );
    let t0 = Instant::now();
    let e = reg.get("hung", "VolumeDriver").await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(
        matches!(&e, LookupError::Unavailable(m) if m.starts_with("Plugin.Activate: deadline")),
        "{e}"
    );
}

#[actix_rt::test]
async fn a_hung_call_times_out_within_its_deadline() {
    let (_t, _p, dir) = one_plugin("slowpoke", &[("TEST_HANG_ON", "List")]);
    let reg = LegacyPlugins::new(
        vec![dir.clone()],
        Duration::from_secs(5),
        Some(Duration::from_millis(500)),
    );
    let p = reg.get("slowpoke", "VolumeDriver").await.unwrap();
    let d = VolumeDriverClient::new("slowpoke".into(), p.client.clone(), PathMapper::Identity);
    let t0 = Instant::now();
    let e = d.list().await.unwrap_err();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert!(e.is_unreachable());
    assert_eq!(e.method(), "VolumeDriver.List");
    assert_eq!(
        e.to_string(),
        "VolumeDriver.List: deadline of 500ms exceeded"
    );
    // Other calls still work.
    d.create("after", None).await.unwrap();
}

#[actix_rt::test]
async fn implements_mismatch() {
    let (_t, _p, dir) = one_plugin(
        "netonly",
        &[("TEST_IMPLEMENTS", "NetworkDriver,IpamDriver")],
    );
    let reg = registry(&[&dir], Duration::from_secs(5));
    let e = reg.get("netonly", "VolumeDriver").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "Plugin does not implement the requested driver: plugin=\"netonly\", requested implementation=\"VolumeDriver\""
    );
    let p = reg.get("netonly", "NetworkDriver").await.unwrap();
    assert_eq!(p.implements, vec!["NetworkDriver", "IpamDriver"]);
    assert!(reg.all("VolumeDriver").await.is_empty());
}

/// berth drops cached activations whose socket went away, and re-activates a plugin whose
/// last call could not reach it.
#[actix_rt::test]
async fn stale_cache_entries_are_rediscovered() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("plugins");
    let sock = dir.join("flaky.sock");
    let root = t.path().join("root");
    let mut p = host_test_plugin(&sock, &root, &[]);
    let reg = registry(&[&dir], Duration::from_millis(500));
    let first = reg.get("flaky", "VolumeDriver").await.unwrap();

    // Clean stop: the socket file is removed → not found, at once.
    p.terminate();
    let t0 = Instant::now();
    assert_eq!(
        reg.get("flaky", "VolumeDriver").await.unwrap_err(),
        LookupError::NotFound("flaky".into())
    );
    assert!(t0.elapsed() < Duration::from_millis(100));

    // Back again: a fresh activation.
    let mut p = host_test_plugin(&sock, &root, &[]);
    let second = reg.get("flaky", "VolumeDriver").await.unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    // Cached while it answers.
    assert!(Arc::ptr_eq(
        &second,
        &reg.get("flaky", "VolumeDriver").await.unwrap()
    ));

    // Crash: the socket file stays, calls are refused; the failed call marks the client, and
    // the next get re-activates (and fails after the activation timeout).
    p.kill();
    let d = VolumeDriverClient::with_retry(
        "flaky".into(),
        second.client.clone(),
        PathMapper::Identity,
        berth::rpc::client::Retry::Never,
    );
    let e = d.list().await.unwrap_err();
    assert!(e.is_unreachable());
    assert!(
        e.to_string().ends_with("connect: connection refused"),
        "{e}"
    );
    let e = reg.get("flaky", "VolumeDriver").await.unwrap_err();
    assert!(matches!(e, LookupError::Unavailable(_)), "{e}");

    // Restarted on the same socket: found and activated again.
    let _p = host_test_plugin(&sock, &root, &[]);
    let third = reg.get("flaky", "VolumeDriver").await.unwrap();
    assert!(!Arc::ptr_eq(&second, &third));
}

/// `all` (for `volume ls`): every discoverable volume plugin, in parallel, each bounded by the
/// scan timeout; dead ones and other kinds left out; managed plugin directories ignored.
#[actix_rt::test]
async fn all_volume_plugins() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("plugins");
    let _a = host_test_plugin(&dir.join("alpha.sock"), &t.path().join("ra"), &[]);
    let _b = host_test_plugin(&dir.join("beta/beta.sock"), &t.path().join("rb"), &[]);
    let _n = host_test_plugin(
        &dir.join("net.sock"),
        &t.path().join("rn"),
        &[("TEST_IMPLEMENTS", "NetworkDriver")],
    );
    // A managed plugin's exec root next to the legacy sockets.
    let id = "0123456789abcdef".repeat(4);
    let _m = host_test_plugin(
        &dir.join(&id).join("managed.sock"),
        &t.path().join("rm"),
        &[],
    );
    // Spec of a plugin that is not running, and one that never answers Activate.
    write(
        &dir.join("dead.spec"),
        &format!("unix://{}", t.path().join("dead.sock").display()),
    );
    let _h = host_test_plugin(
        &dir.join("hang.sock"),
        &t.path().join("rh"),
        &[("TEST_HANG_ON", "Activate")],
    );
    // The scan timeout cuts the hung plugin; it is long enough for a live plugin to answer on
    // a loaded machine (at 700 ms, live plugins were left out under a load of 8 on 2 cores).
    let scan = Duration::from_secs(3);
    let reg = registry(&[&dir], Duration::from_secs(30)).with_scan_timeout(scan);
    assert_eq!(reg.names(), vec!["alpha", "beta", "dead", "hang", "net"]);
    let t0 = Instant::now();
    let all = reg.all("VolumeDriver").await;
    let took = t0.elapsed();
    let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["alpha", "beta"]);
    assert!(took < scan + Duration::from_secs(2), "{took:?}");
    // Activations done by `all` are cached for `get`.
    assert!(Arc::ptr_eq(
        &all[0],
        &reg.get("alpha", "VolumeDriver").await.unwrap()
    ));
}

// ---------------------------------------------------------------------------------------------
// rclone as a third-party legacy plugin.

#[actix_rt::test]
async fn rclone_serve_docker_as_a_legacy_plugin() {
    let t = tempfile::tempdir().unwrap();
    let [plugins, base, data] = paths_in(t.path(), ["plugins", "mnt", "data"]);
    std::fs::create_dir_all(&data).unwrap();
    let _rclone = rclone_serve_docker(&plugins.join("rclone.sock"), t.path());

    let reg = registry(&[&plugins], Duration::from_secs(5));
    let p = reg.get("rclone", "VolumeDriver").await.unwrap();
    assert_eq!(p.implements, vec!["VolumeDriver"]);
    let d = VolumeDriverClient::new("rclone".into(), p.client.clone(), PathMapper::Identity);
    assert_eq!(d.capabilities().await.scope, "local");

    let remote = data.display().to_string();
    d.create("v1", Some(&opts(&[("remote", &remote)])))
        .await
        .unwrap();
    d.create("v2", Some(&opts(&[("type", "local"), ("path", &remote)])))
        .await
        .unwrap();
    let listed = d.list().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, vec!["v1", "v2"]);
    assert_eq!(listed[0].mountpoint, base.join("v1").display().to_string());

    let v1 = d.get("v1").await.unwrap().expect("v1");
    assert_eq!(v1.mountpoint, base.join("v1").display().to_string());
    assert!(v1.created_at.is_some());
    assert!(v1.status.is_some());
    assert_eq!(
        d.path("v1").await.unwrap(),
        base.join("v1").display().to_string()
    );

    // rclone reports errors as 500 {"Err":…}.
    let e = d.get("absent").await.unwrap_err();
    assert_eq!(e.to_string(), "VolumeDriver.Get: volume not found");
    let e = d
        .create("v3", Some(&opts(&[("bogus", "x")])))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "VolumeDriver.Create: unsupported backend option \"bogus\""
    );
    let e = d.create("v4", None).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "VolumeDriver.Create: volume must have either remote or backend type"
    );

    d.remove("v1").await.unwrap();
    d.remove("v2").await.unwrap();
    assert!(d.list().await.unwrap().is_empty());
}
