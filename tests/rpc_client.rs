//! The plugin RPC client against a scripted plugin on a unix socket: the request moby sends,
//! status/decode/transport errors, deadlines and connection retries; the VolumeDriver adapter's
//! in-band errors and capabilities cache.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use berth::drivers::volume::{DriverErrorKind, PathMapper, VolumeDriverClient};
use berth::rpc::client::{within, PluginClient, Retry, RpcError, Transport};
use common::http::{find_header, read_request, Request};
use serde_json::{json, Value};

/// One request as the plugin saw it.
type Seen = Request;

/// What the scripted plugin answers: `Some((status, body))`, or `None` to never answer.
type Script = dyn Fn(&Seen) -> Option<(u16, String)> + Send + Sync;

/// A plugin that answers from a script; stops (and removes its socket) when dropped.
struct FakePlugin {
    path: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl FakePlugin {
    fn start(
        path: &Path,
        script: impl Fn(&Seen) -> Option<(u16, String)> + Send + Sync + 'static,
    ) -> FakePlugin {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let accept = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let (seen, stop, script) =
                                (Arc::clone(&seen), Arc::clone(&stop), Arc::clone(&script));
                            thread::spawn(move || serve(conn, &seen, &stop, &*script));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        FakePlugin {
            path: path.to_path_buf(),
            seen,
            stop,
            accept: Some(accept),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn client(&self, timeout: Option<Duration>) -> PluginClient {
        PluginClient::new(Transport::Unix(self.path.clone()), timeout).unwrap()
    }
}

impl Drop for FakePlugin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(conn: UnixStream, seen: &Mutex<Vec<Seen>>, stop: &AtomicBool, script: &Script) {
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let req = match read_request(&mut reader) {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(_) if !stop.load(Ordering::Relaxed) => continue,
            Err(_) => return,
        };
        seen.lock().unwrap().push(req.clone());
        match script(&req) {
            Some((status, body)) => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/vnd.docker.plugins.v1.1+json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                writer.write_all(head.as_bytes()).unwrap();
                writer.write_all(body.as_bytes()).unwrap();
            }
            None => {
                // Hang (bounded), then drop the connection.
                let until = Instant::now() + Duration::from_secs(10);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    thread::sleep(Duration::from_millis(10));
                }
                return;
            }
        }
    }
}

fn ok(body: Value) -> Option<(u16, String)> {
    Some((200, format!("{body}\n")))
}

/// Retries connection failures for `millis`.
fn backoff(millis: u64) -> Retry {
    Retry::Backoff {
        total: Duration::from_millis(millis),
    }
}

/// A call expected to fail: the error and how long it took.
async fn failed_call(
    client: &PluginClient,
    method: &str,
    args: &Value,
    retry: Retry,
) -> (RpcError, Duration) {
    let started = Instant::now();
    let e = client.call::<Value>(method, args, retry).await.unwrap_err();
    (e, started.elapsed())
}

/// `Plugin.Activate` through a new client on `transport`, expected to fail.
async fn failed_activation(
    transport: Transport,
    deadline: Option<Duration>,
    retry: Retry,
) -> (RpcError, Duration, PluginClient) {
    let client = PluginClient::new(transport, deadline).unwrap();
    let (e, took) = failed_call(&client, "Plugin.Activate", &Value::Null, retry).await;
    (e, took, client)
}

#[actix_rt::test]
async fn request_shape_is_mobys() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = FakePlugin::start(&dir.path().join("p.sock"), |_| {
        ok(json!({"Implements": ["VolumeDriver"]}))
    });
    let client = plugin.client(None);
    let v: Value = client
        .call("Plugin.Activate", &Value::Null, Retry::Never)
        .await
        .unwrap();
    assert_eq!(v["Implements"][0], "VolumeDriver");
    let _: Value = client
        .call(
            "VolumeDriver.Create",
            &json!({"Name": "v1", "Opts": null}),
            Retry::Never,
        )
        .await
        .unwrap();

    let seen = plugin.seen();
    assert_eq!(seen.len(), 2);
    let a = &seen[0];
    assert_eq!(
        (a.method.as_str(), a.target.as_str(), a.version.as_str()),
        ("POST", "/Plugin.Activate", "HTTP/1.1")
    );
    assert_eq!(
        find_header(&a.headers, "Accept"),
        Some("application/vnd.docker.plugins.v1.2+json")
    );
    assert_eq!(
        find_header(&a.headers, "Content-Type"),
        None,
        "moby sends no Content-Type"
    );
    assert_eq!(
        find_header(&a.headers, "Host"),
        Some("plugin.moby.localhost")
    );
    assert_eq!(find_header(&a.headers, "Content-Length"), Some("0"));
    assert!(a.body.is_empty());
    let c = &seen[1];
    assert_eq!(c.path(), "/VolumeDriver.Create");
    assert_eq!(
        String::from_utf8_lossy(&c.body),
        "{\"Name\":\"v1\",\"Opts\":null}\n"
    );
}

#[actix_rt::test]
async fn status_and_decode_errors() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = FakePlugin::start(&dir.path().join("p.sock"), |req| match req.path() {
        "/A.Err" => Some((500, "{\"Err\":\"disk on fire\"}\n".into())),
        "/A.Plain" => Some((404, "404 page not found\n".into())),
        "/A.EmptyErr" => Some((500, "{\"Err\":\"\"}".into())),
        "/A.NotJson" => Some((200, "hello there\n".into())),
        "/A.Empty" => Some((200, String::new())),
        _ => ok(json!({})),
    });
    let client = plugin.client(None);
    let call = |m: &'static str| {
        let client = client.clone();
        async move {
            client
                .call::<Value>(m, &json!({}), Retry::Never)
                .await
                .unwrap_err()
        }
    };

    let e = call("A.Err").await;
    assert_eq!(
        e,
        RpcError::Status {
            method: "A.Err".into(),
            code: 500,
            message: "disk on fire".into()
        }
    );
    assert_eq!(e.to_string(), "A.Err: disk on fire");

    let e = call("A.Plain").await;
    assert_eq!(e.to_string(), "A.Plain: 404 page not found");
    assert_eq!(e.status_code(), Some(404));

    assert_eq!(
        call("A.EmptyErr").await.to_string(),
        "A.EmptyErr: {\"Err\":\"\"}"
    );

    let e = call("A.NotJson").await;
    assert!(matches!(e, RpcError::Decode(_)), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("A.NotJson: error reading plugin resp: ")
            && e.to_string().contains("\"hello there\""),
        "{e}"
    );

    let e = call("A.Empty").await;
    assert!(matches!(e, RpcError::Decode(_)), "{e:?}");
    assert!(e.to_string().contains("EOF"), "{e}");
}

#[actix_rt::test]
async fn transport_errors_read_like_go_and_fail_fast_without_retry() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let (e, took, client) =
        failed_activation(Transport::Unix(missing.clone()), None, Retry::Never).await;
    assert!(took < Duration::from_millis(500));
    assert_eq!(
        e,
        RpcError::Transport(format!(
            "dial unix {}: connect: no such file or directory",
            missing.display()
        ))
    );
    assert!(client.is_unreachable());

    // A socket file nobody listens on.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let (e, _, _) = failed_activation(Transport::Unix(stale.clone()), None, Retry::Never).await;
    assert_eq!(
        e.to_string(),
        format!("dial unix {}: connect: connection refused", stale.display())
    );

    // Nothing listens on a freshly closed loopback port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("tcp://127.0.0.1:{port}");
    let (e, _, _) = failed_activation(Transport::Tcp { url, tls: None }, None, Retry::Never).await;
    assert_eq!(
        e.to_string(),
        format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
    );
}

#[actix_rt::test]
async fn backoff_retries_connection_failures_until_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let (e, took, _) =
        failed_activation(Transport::Unix(missing.clone()), None, backoff(400)).await;
    assert!(
        took >= Duration::from_millis(380) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert!(matches!(e, RpcError::Transport(ref m) if m.contains("no such file or directory")));

    // The call's deadline also ends the retries (with the connection error, the real cause).
    let deadline = Some(Duration::from_millis(300));
    let (e, took, _) = failed_activation(Transport::Unix(missing), deadline, backoff(30_000)).await;
    assert!(took < Duration::from_millis(1200), "{took:?}");
    assert!(matches!(e, RpcError::Transport(_)), "{e:?}");
}

#[actix_rt::test]
async fn a_plugin_that_appears_during_backoff_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.sock");
    let starter = {
        let path = path.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            FakePlugin::start(&path, |_| ok(json!({"Implements": ["VolumeDriver"]})))
        })
    };
    let client = PluginClient::new(Transport::Unix(path), None).unwrap();
    let t = Instant::now();
    let v: Value = client
        .call("Plugin.Activate", &Value::Null, backoff(5000))
        .await
        .unwrap();
    assert_eq!(v["Implements"][0], "VolumeDriver");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(!client.is_unreachable());
    drop(starter.join().unwrap());
}

#[actix_rt::test]
async fn deadlines_cut_hung_calls_and_errors_are_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = FakePlugin::start(&dir.path().join("p.sock"), |req| match req.path() {
        "/VolumeDriver.List" => None,
        "/VolumeDriver.Create" => Some((500, "{\"Err\":\"nope\"}".into())),
        _ => ok(json!({})),
    });
    let client = plugin.client(Some(Duration::from_millis(300)));
    let (e, took) = failed_call(&client, "VolumeDriver.List", &json!({}), backoff(10_000)).await;
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(
        e,
        RpcError::Timeout {
            method: "VolumeDriver.List".into(),
            timeout: Duration::from_millis(300)
        }
    );
    // An operation's shorter deadline wins over the client's.
    let t = Instant::now();
    let e = within(
        Duration::from_millis(100),
        client.call::<Value>("VolumeDriver.List", &json!({}), Retry::Never),
    )
    .await
    .unwrap_err();
    assert!(
        t.elapsed() < Duration::from_millis(280),
        "{:?}",
        t.elapsed()
    );
    assert!(
        matches!(e, RpcError::Timeout { timeout, .. } if timeout == Duration::from_millis(100))
    );
    // One operation, one deadline: the calls inside it share it rather than each getting its
    // own.
    let t = Instant::now();
    let (first, second) = within(Duration::from_millis(200), async {
        let first = client
            .call::<Value>("VolumeDriver.List", &json!({}), Retry::Never)
            .await;
        let second = client
            .call::<Value>("VolumeDriver.List", &json!({}), Retry::Never)
            .await;
        (first, second)
    })
    .await;
    assert!(matches!(first, Err(RpcError::Timeout { .. })), "{first:?}");
    assert!(
        matches!(second, Err(RpcError::Timeout { .. })),
        "{second:?}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(280),
        "two calls in one operation took {:?}",
        t.elapsed()
    );

    // Status errors are answers: one request, no retry.
    let before = plugin.seen().len();
    let create = json!({"Name": "x"});
    let (e, _) = failed_call(&client, "VolumeDriver.Create", &create, backoff(10_000)).await;
    assert_eq!(e.to_string(), "VolumeDriver.Create: nope");
    assert_eq!(plugin.seen().len(), before + 1);
    // And the client still works after a timed-out call.
    let _: Value = client
        .call("VolumeDriver.Get", &json!({"Name": "x"}), Retry::Never)
        .await
        .unwrap();
}

#[actix_rt::test]
async fn volume_adapter_errors_and_capabilities_cache() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = FakePlugin::start(&dir.path().join("p.sock"), |req| match req.path() {
        // In-band error on a 200 answer.
        "/VolumeDriver.Create" => ok(json!({"Err": "in-band failure"})),
        "/VolumeDriver.Remove" => Some((500, "{\"Err\":\"busy\"}".into())),
        "/VolumeDriver.Capabilities" => Some((404, "404 page not found\n".into())),
        // Lower-case keys and a null volume, as Go's decoder accepts them.
        "/VolumeDriver.Get" => ok(json!({"volume": null, "err": ""})),
        "/VolumeDriver.List" => ok(json!({"volumes": [{"name": "a", "mountpoint": "/mnt/a"}]})),
        "/VolumeDriver.Mount" => ok(json!({"Mountpoint": "/data/a"})),
        "/VolumeDriver.Path" => ok(json!({"Mountpoint": "/mnt/a"})),
        _ => ok(json!({})),
    });
    let driver = VolumeDriverClient::new(
        "fake".into(),
        plugin.client(None),
        PathMapper::Managed {
            propagated_mount: "/data".into(),
            host_propagated: "/host/propagated".into(),
            rootfs: "/host/rootfs".into(),
        },
    );

    let e = driver.create("v", None).await.unwrap_err();
    assert_eq!(e.to_string(), "in-band failure");
    assert_eq!(e.method(), "VolumeDriver.Create");
    assert!(matches!(e.kind, DriverErrorKind::Plugin(_)));

    let e = driver.remove("v").await.unwrap_err();
    assert_eq!(e.to_string(), "VolumeDriver.Remove: busy");
    assert_eq!(e.message(), "busy");
    assert!(!e.is_unreachable());

    assert_eq!(driver.get("v").await.unwrap(), None);
    let l = driver.list().await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].name, "a");
    assert_eq!(l[0].mountpoint, "/mnt/a");
    assert_eq!(l[0].host_mountpoint, "/host/rootfs/mnt/a");
    assert_eq!(
        driver.mount("a", "id1").await.unwrap(),
        "/host/propagated/a"
    );
    assert_eq!(driver.path("a").await.unwrap(), "/host/rootfs/mnt/a");

    assert_eq!(driver.capabilities().await.scope, "local");
    assert_eq!(driver.clone().capabilities().await.scope, "local");
    let asked = plugin
        .seen()
        .iter()
        .filter(|s| s.path() == "/VolumeDriver.Capabilities")
        .count();
    assert_eq!(asked, 1, "capabilities are asked once per client");

    let creates: Vec<String> = plugin
        .seen()
        .iter()
        .filter(|s| s.path() == "/VolumeDriver.Create")
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    assert_eq!(creates, vec!["{\"Name\":\"v\",\"Opts\":null}\n"]);
}

/// A plugin whose open connections can be cut from the test, as a plugin restart cuts them;
/// counts the requests it read. `answer_first_only`: requests after the first on a connection
/// are read and then the connection is closed without an answer (a crash mid-call).
struct CuttablePlugin {
    conns: Arc<Mutex<Vec<UnixStream>>>,
    requests: Arc<std::sync::atomic::AtomicUsize>,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl CuttablePlugin {
    fn start(answer_first_only: bool) -> CuttablePlugin {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (c, r) = (Arc::clone(&conns), Arc::clone(&requests));
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                c.lock().unwrap().push(conn.try_clone().unwrap());
                let r = Arc::clone(&r);
                thread::spawn(move || {
                    let mut writer = conn.try_clone().unwrap();
                    let mut reader = BufReader::new(conn);
                    for n in 0.. {
                        let mut len = 0;
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if let Some(v) =
                                line.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                len = v.trim().parse().unwrap();
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        r.fetch_add(1, Ordering::SeqCst);
                        if answer_first_only && n > 0 {
                            let _ = writer.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        let body = "{\"Implements\":[\"VolumeDriver\"]}\n";
                        let _ = write!(
                            writer,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                    }
                });
            }
        });
        CuttablePlugin {
            conns,
            requests,
            _dir: dir,
            path,
        }
    }

    /// Closes every connection the plugin has accepted so far.
    fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Connections are kept alive; one the plugin has closed since the last call is detected when
/// the request cannot be written, and the call goes out once on a new connection.
#[actix_rt::test]
async fn kept_alive_connections_closed_by_the_plugin_are_replaced() {
    let plugin = CuttablePlugin::start(false);
    let client = PluginClient::new(Transport::Unix(plugin.path.clone()), None).unwrap();
    for _ in 0..3 {
        let _: Value = client
            .call("Plugin.Activate", &Value::Null, Retry::Never)
            .await
            .unwrap();
    }
    assert_eq!(
        plugin.conns.lock().unwrap().len(),
        1,
        "one connection for three calls"
    );
    for round in 1..=3 {
        // Cut, then call at once: the pool cannot have noticed.
        plugin.cut();
        let answer: Value = client
            .call("Plugin.Activate", &Value::Null, Retry::Never)
            .await
            .unwrap_or_else(|e| panic!("call after cut {round}: {e}"));
        assert_eq!(answer["Implements"][0], "VolumeDriver");
    }
    assert_eq!(
        plugin.requests(),
        6,
        "each request reached the plugin exactly once"
    );
}

/// A request the plugin read before it closed the connection is not sent again (it may have
/// had its effect): the call fails.
#[actix_rt::test]
async fn a_request_the_plugin_read_is_never_sent_twice() {
    let plugin = CuttablePlugin::start(true);
    let client = PluginClient::new(Transport::Unix(plugin.path.clone()), None).unwrap();
    let _: Value = client
        .call("Plugin.Activate", &Value::Null, Retry::Never)
        .await
        .unwrap();
    let e = client
        .call::<Value>("VolumeDriver.Create", &json!({"Name": "x"}), Retry::Never)
        .await
        .unwrap_err();
    assert!(matches!(e, RpcError::Transport(_)), "{e:?}");
    assert_eq!(plugin.requests(), 2, "{e}");
}
