//! `/networks` end to end: a real berth daemon, the project's test plugin as a legacy network and
//! IPAM driver (and as a managed plugin with volume and network capabilities for the reference
//! counts), and real network namespaces (`ip netns add`) as consumers. Needs root.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{eventually, host_test_plugin, test_plugin_context, Daemon, HostProcess};
use serde_json::Value;

/// A named network namespace, deleted when dropped.
struct Namespace(String);

impl Namespace {
    fn new(tag: &str) -> Namespace {
        let name = format!("bt{tag}{}", std::process::id() % 100_000);
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        Namespace(name)
    }

    /// `ip -br addr` inside, one interface per line, without the `@ifN` peer index.
    fn addresses(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "ip", "-br", "addr"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                let name = fields[0].split('@').next().unwrap_or_default();
                let addrs = fields.get(2..).map(|a| a.join(" ")).unwrap_or_default();
                format!("{name} {addrs}").trim().to_string()
            })
            .collect()
    }

    fn routes(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "ip", "route"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).replace(" linkdown", "")
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A legacy network+IPAM test plugin `name` in `dir/plugins`, its calls logged.
struct LegacyDriver {
    /// Stopped when the driver is dropped.
    _process: HostProcess,
    log: PathBuf,
}

impl LegacyDriver {
    fn start(dir: &Path, name: &str, knobs: &[(&str, &str)]) -> LegacyDriver {
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let log = dir.join(format!("{name}.calls"));
        let log_text = log.display().to_string();
        let mut all = vec![
            ("TEST_IMPLEMENTS", "NetworkDriver,IpamDriver"),
            ("TEST_NET_VETH", "1"),
            ("TEST_CALL_LOG", log_text.as_str()),
        ];
        all.extend_from_slice(knobs);
        let process = host_test_plugin(
            &plugins.join(format!("{name}.sock")),
            &dir.join(format!("{name}-root")),
            &all,
        );
        LegacyDriver {
            _process: process,
            log,
        }
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
            .collect()
    }
}

fn plugin_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("btn")
        .tempdir_in("/tmp")
        .unwrap()
}

fn daemon_with_plugins(dir: &Path, extra: &[&str]) -> Daemon {
    let plugins = dir.join("plugins").display().to_string();
    let mut args = vec!["--legacy-plugin-dir", plugins.as_str()];
    args.extend_from_slice(extra);
    Daemon::start_with(&args)
}

fn create(d: &Daemon, body: &str) -> common::Response {
    d.post_json("/v1.41/networks/create", body)
}

fn connect(d: &Daemon, network: &str, body: &str) -> common::Response {
    d.post_json(&format!("/v1.41/networks/{network}/connect"), body)
}

fn disconnect(d: &Daemon, network: &str, ns: &str, force: bool) -> common::Response {
    d.post_json(
        &format!("/v1.41/networks/{network}/disconnect"),
        &format!(r#"{{"Container":"{ns}","Force":{force}}}"#),
    )
}

/// The names `GET /networks` lists (`query`: its query string, with the `?`).
fn network_names(d: &Daemon, query: &str) -> Vec<String> {
    d.get(&format!("/v1.41/networks{query}"))
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Name"].as_str().unwrap().to_string())
        .collect()
}

fn containers(d: &Daemon, network: &str) -> Value {
    let r = d.get(&format!("/v1.41/networks/{network}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["Containers"].clone()
}

/// The `tp…` veth ends the test plugin made in this namespace.
fn plugin_links() -> Vec<String> {
    let out = Command::new("ip").args(["-br", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("tp"))
        .map(|l| l.split('@').next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn namespaces_join_and_everything_survives_kill9() {
    let dir = plugin_dir();
    // (Static routes are checked in target-berth-network-connect.scn: the plugin gives every
    // network the same ones, and a namespace cannot hold a route twice.)
    let driver = LegacyDriver::start(dir.path(), "tnk", &[]);
    let mut d = daemon_with_plugins(dir.path(), &[]);
    let r = create(
        &d,
        r#"{"Name":"k1","Driver":"tnk","IPAM":{"Config":[{"Subnet":"10.120.0.0/24","Gateway":"10.120.0.1"}]}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = create(
        &d,
        r#"{"Name":"k2","Driver":"tnk","IPAM":{"Driver":"tnk"}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());

    let a = Namespace::new("ka");
    let r = connect(
        &d,
        "k1",
        &format!(
            r#"{{"Container":"{}","EndpointConfig":{{"IPAMConfig":{{"IPv4Address":"10.120.0.7"}}}}}}"#,
            a.0
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = connect(&d, "k2", &format!(r#"{{"Container":"{}"}}"#, a.0));
    assert_eq!(r.status, 200, "{}", r.text());
    let mut addrs = a.addresses();
    addrs.sort();
    assert_eq!(addrs, ["eth0 10.120.0.7/24", "eth1 10.90.0.2/24", "lo"]);
    let routes = a.routes();
    assert!(
        routes.contains("default via 10.120.0.1 dev eth0"),
        "{routes}"
    );
    assert!(routes.contains("10.90.0.0/24 dev eth1"), "{routes}");

    // A crash: the next daemon finds the namespace as it was, and IPAM remembers.
    d.kill9();
    d.spawn();
    let joined = containers(&d, "k1");
    let (_, endpoint) = joined.as_object().unwrap().iter().next().unwrap();
    assert_eq!(endpoint["Name"], a.0.as_str());
    assert_eq!(endpoint["IPv4Address"], "10.120.0.7/24");
    let b = Namespace::new("kb");
    let r = connect(&d, "k1", &format!(r#"{{"Container":"{}"}}"#, b.0));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(b.addresses(), ["lo", "eth0 10.120.0.2/24"]);
    let r = connect(
        &d,
        "k1",
        &format!(
            r#"{{"Container":"{}","EndpointConfig":{{"IPAMConfig":{{"IPv4Address":"10.120.0.7"}}}}}}"#,
            "nosuchns"
        ),
    );
    assert_eq!(r.status, 404, "{}", r.text());

    // A namespace deleted behind berth's back is let go of at the next start.
    drop(b);
    d.stop();
    d.spawn();
    assert_eq!(containers(&d, "k1").as_object().unwrap().len(), 1);

    // The gateway endpoint leaves: the namespace's other network takes the default route.
    let r = disconnect(&d, "k1", &a.0, false);
    assert_eq!(r.status, 200, "{}", r.text());
    let routes = a.routes();
    assert!(
        routes.contains("default via 10.90.0.1 dev eth1"),
        "{routes}"
    );
    let r = disconnect(&d, "k2", &a.0, false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(a.addresses(), ["lo"]);
    assert!(
        plugin_links().iter().all(|l| !l.contains("tp")),
        "{:?}",
        plugin_links()
    );
    for net in ["k1", "k2"] {
        assert_eq!(d.delete(&format!("/v1.41/networks/{net}")).status, 204);
    }
    // Everything went back: the plugin's pool, berth's subnet.
    let calls = driver.calls();
    assert!(
        calls.contains(&"IpamDriver.ReleasePool".to_string()),
        "{calls:?}"
    );
    let r = create(
        &d,
        r#"{"Name":"k3","Driver":"tnk","IPAM":{"Config":[{"Subnet":"10.120.0.0/24"}]}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn failures_roll_back_and_a_hung_driver_costs_one_deadline() {
    let dir = plugin_dir();
    let _failing = LegacyDriver::start(dir.path(), "tnf", &[("TEST_FAIL_ON", "Join")]);
    let hung = LegacyDriver::start(dir.path(), "tnh", &[("TEST_HANG_ON", "CreateNetwork")]);
    let d = daemon_with_plugins(dir.path(), &["--plugin-call-timeout", "1"]);

    let r = create(
        &d,
        r#"{"Name":"f1","Driver":"tnf","IPAM":{"Config":[{"Subnet":"10.121.0.0/24"}]}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let ns = Namespace::new("fa");
    let body = format!(r#"{{"Container":"{}"}}"#, ns.0);
    let r = connect(&d, "f1", &body);
    assert_eq!(r.status, 500);
    assert_eq!(
        r.message(),
        "NetworkDriver.Join: NetworkDriver.Join failed (TEST_FAIL_ON)"
    );
    assert_eq!(containers(&d, "f1"), serde_json::json!({}));
    assert_eq!(ns.addresses(), ["lo"]);
    assert_eq!(disconnect(&d, "f1", &ns.0, false).status, 500);

    let started = Instant::now();
    let r = create(
        &d,
        r#"{"Name":"h1","Driver":"tnh","IPAM":{"Config":[{"Subnet":"10.122.0.0/24"}]}}"#,
    );
    let took = started.elapsed();
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.message().contains("deadline"), "{}", r.message());
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(eventually(Duration::from_secs(5), || hung
        .calls()
        .contains(&"NetworkDriver.CreateNetwork".to_string())));
    // The subnet was given back.
    let r = create(
        &d,
        r#"{"Name":"h2","Driver":"tnf","IPAM":{"Config":[{"Subnet":"10.122.0.0/24"}]}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(network_names(&d, ""), ["f1", "h2", "host", "none"]);
}

#[test]
fn a_crash_in_the_middle_of_a_connect_is_undone_at_start() {
    let dir = plugin_dir();
    let driver = LegacyDriver::start(dir.path(), "tnc", &[("TEST_SLOW_CALL_MS", "0")]);
    let mut d = daemon_with_plugins(dir.path(), &[]);
    let r = create(
        &d,
        r#"{"Name":"c1","Driver":"tnc","IPAM":{"Config":[{"Subnet":"10.123.0.0/24"}]}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let ns = Namespace::new("ca");
    // Make the next Join hang, then crash while berth waits for it.
    drop(driver);
    let hanging = LegacyDriver::start(dir.path(), "tnc", &[("TEST_HANG_ON", "Join")]);
    let socket = d.socket.clone();
    let body = format!(r#"{{"Container":"{}"}}"#, ns.0);
    let waiter = std::thread::spawn(move || {
        common::raw_request(
            &socket,
            "POST",
            "/v1.41/networks/c1/connect",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    });
    assert!(eventually(Duration::from_secs(10), || hanging
        .calls()
        .contains(&"NetworkDriver.Join".to_string())));
    d.kill9();
    let _ = waiter.join();
    drop(hanging);
    let answering = LegacyDriver::start(dir.path(), "tnc", &[]);
    d.spawn();
    assert_eq!(containers(&d, "c1"), serde_json::json!({}));
    let calls = answering.calls();
    assert!(
        calls.ends_with(&[
            "NetworkDriver.Leave".into(),
            "NetworkDriver.DeleteEndpoint".into()
        ]) || calls.contains(&"NetworkDriver.DeleteEndpoint".to_string()),
        "{calls:?}"
    );
    // The address went back: the next connect gets the first one again.
    let r = connect(&d, "c1", &format!(r#"{{"Container":"{}"}}"#, ns.0));
    assert_eq!(r.status, 200, "{}", r.text());
    let joined = containers(&d, "c1");
    assert_eq!(
        joined.as_object().unwrap().values().next().unwrap()["IPv4Address"],
        "10.123.0.2/24"
    );
}

#[test]
fn networks_and_volumes_both_keep_a_managed_plugin_in_use_across_restarts() {
    let config = common::test_plugin_config("").replace(
        r#""Types": ["docker.volumedriver/1.0"]"#,
        r#""Types": ["docker.volumedriver/1.0", "docker.networkdriver/1.0"]"#,
    );
    let mut d = Daemon::start();
    let r = d.create_plugin("test/both", &test_plugin_context(&config));
    assert_eq!(r.status, 204, "{}", r.text());
    let r = d.post("/v1.41/plugins/test/both/enable?timeout=30");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = d.create_volume("/v1.41", r#"{"Name":"bv","Driver":"test/both:latest"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = create(
        &d,
        r#"{"Name":"bn","Driver":"test/both","IPAM":{"Config":[{"Subnet":"10.124.0.0/24"}]}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    d.stop();
    d.spawn();
    let in_use = |d: &Daemon| {
        let r = d.post("/v1.41/plugins/test/both/disable");
        (r.status, r.text())
    };
    assert_eq!(in_use(&d).0, 409);
    assert_eq!(d.delete("/v1.41/networks/bn").status, 204);
    assert_eq!(in_use(&d).0, 409, "the volume still holds it");
    assert_eq!(d.delete("/v1.41/volumes/bv").status, 204);
    assert_eq!(in_use(&d).0, 200);
}

// ---------------------------------------------------------------------------------------------
// The built-in bridge driver

/// The Linux bridge of a network (`br-<first 12 of its ID>`).
fn bridge_of(d: &Daemon, network: &str) -> String {
    let r = d.get(&format!("/v1.41/networks/{network}"));
    assert_eq!(r.status, 200, "{}", r.text());
    format!("br-{}", &r.json()["Id"].as_str().unwrap()[..12])
}

/// Bridges a test made, deleted when dropped: a failed test leaves no address on the host
/// that a later run's routes would clash with.
#[derive(Default)]
struct Bridges(Vec<String>);

impl Bridges {
    fn of(&mut self, d: &Daemon, network: &str) -> String {
        let name = bridge_of(d, network);
        self.0.push(name.clone());
        name
    }
}

impl Drop for Bridges {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip")
                .args(["link", "del", name])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// The interfaces enslaved to `bridge` (empty when it does not exist).
fn ports_of(bridge: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-br", "link", "show", "master", bridge])
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(['@', ' ']).next().unwrap_or_default().to_string())
        .collect()
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Runs `work` on a thread of its own inside the namespace `name`.
fn inside<T: Send + 'static>(name: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsFd;
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        work()
    })
    .join()
    .unwrap()
}

impl Namespace {
    /// Whether a TCP connection from here reaches `address` (a listener made for it in `to`,
    /// or in berth's namespace): real traffic both ways over the bridge.
    fn reaches(&self, to: Option<&Namespace>, address: &str) -> bool {
        let ip: std::net::IpAddr = address.parse().unwrap();
        let bind = move || std::net::TcpListener::bind((ip, 0));
        let listener = match to {
            Some(ns) => inside(&ns.0, bind),
            None => bind(),
        }
        .unwrap();
        let target = std::net::SocketAddr::new(ip, listener.local_addr().unwrap().port());
        let connected = inside(&self.0, move || {
            std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5))
        });
        if let Err(e) = &connected {
            eprintln!("connecting to {target} from {}: {e}", self.0);
        }
        connected.is_ok() && listener.accept().is_ok()
    }

    /// The interfaces' IPv4 addresses (`ip -br addr`, link-local IPv6 left out).
    fn ipv4(&self) -> Vec<String> {
        self.addresses()
            .iter()
            .map(|l| {
                l.split(' ')
                    .filter(|w| !w.starts_with("fe80:"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    /// `ip link` of one interface inside.
    fn link(&self, name: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "ip", "link", "show", "dev", name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn connect_ns(d: &Daemon, network: &str, ns: &Namespace, ip: &str) -> common::Response {
    let config = if ip.is_empty() {
        String::new()
    } else {
        format!(r#","EndpointConfig":{{"IPAMConfig":{{"IPv4Address":"{ip}"}}}}"#)
    };
    connect(
        d,
        network,
        &format!(r#"{{"Container":"{}"{config}}}"#, ns.0),
    )
}

#[test]
fn bridge_networks_carry_traffic_between_namespaces() {
    let d = Daemon::start();
    let r = create(
        &d,
        r#"{"Name":"bapp","IPAM":{"Config":[{"Subnet":"10.230.0.0/24","Gateway":"10.230.0.1"}]},"Options":{"com.docker.network.driver.mtu":"1400"}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = create(
        &d,
        r#"{"Name":"bint","Internal":true,"IPAM":{"Config":[{"Subnet":"10.231.0.0/24"}]}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let mut bridges = Bridges::default();
    let (app, internal) = (bridges.of(&d, "bapp"), bridges.of(&d, "bint"));

    let a = Namespace::new("ba");
    let b = Namespace::new("bb");
    let r = connect_ns(&d, "bapp", &a, "");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = connect_ns(&d, "bapp", &b, "10.230.0.50");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(a.ipv4(), ["lo", "eth0 10.230.0.2/24"]);
    assert!(a.routes().contains("default via 10.230.0.1 dev eth0"));
    let eth0 = a.link("eth0");
    assert!(eth0.contains("mtu 1400"), "{eth0}");
    assert!(eth0.contains("link/ether 02:42:0a:e6:00:02"), "{eth0}");
    assert_eq!(ports_of(&app).len(), 2, "{:?}", ports_of(&app));
    assert!(
        a.reaches(Some(&b), "10.230.0.50"),
        "a cannot reach b over {app}"
    );
    assert!(b.reaches(None, "10.230.0.1"), "b cannot reach the gateway");

    // An internal network: an interface, no default route through it.
    let r = connect_ns(&d, "bint", &b, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        b.ipv4(),
        ["lo", "eth0 10.230.0.50/24", "eth1 10.231.0.2/24"]
    );
    let routes = b.routes();
    assert!(!routes.contains("default via 10.131"), "{routes}");
    let c = Namespace::new("bc");
    let r = connect_ns(&d, "bint", &c, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!c.routes().contains("default"), "{}", c.routes());
    assert!(c.reaches(Some(&b), "10.231.0.2"));

    // Twice, and what is not connected, in dockerd's words.
    let r = connect_ns(&d, "bapp", &a, "");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        r.message(),
        format!("endpoint with name {} already exists in network bapp", a.0)
    );
    let r = disconnect(&d, "bint", &a.0, false);
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.message().ends_with("is not connected to network bint"),
        "{}",
        r.message()
    );

    // Disconnect takes the veth pair away; rm takes the bridge.
    for (network, ns) in [("bapp", &a), ("bapp", &b), ("bint", &b), ("bint", &c)] {
        let r = disconnect(&d, network, &ns.0, false);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(a.addresses(), ["lo"]);
    assert!(ports_of(&app).is_empty() && ports_of(&internal).is_empty());
    for network in ["bapp", "bint"] {
        assert_eq!(d.delete(&format!("/v1.41/networks/{network}")).status, 204);
    }
    assert!(!link_exists(&app) && !link_exists(&internal));
}

#[test]
fn bridges_and_veths_survive_kill9_and_nothing_leaks() {
    let mut d = Daemon::start();
    let r = create(
        &d,
        r#"{"Name":"bk","IPAM":{"Config":[{"Subnet":"10.232.0.0/24"}]}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let mut bridges = Bridges::default();
    let bridge = bridges.of(&d, "bk");
    let a = Namespace::new("bka");
    let b = Namespace::new("bkb");
    for ns in [&a, &b] {
        let r = connect_ns(&d, "bk", ns, "");
        assert_eq!(r.status, 200, "{}", r.text());
    }

    // A crash: the next daemon finds the bridge, the endpoints and the traffic as they were,
    // and a veth on its bridge that no endpoint owns is taken away.
    d.kill9();
    let ok = Command::new("ip")
        .args([
            "link",
            "add",
            "vethdead0",
            "type",
            "veth",
            "peer",
            "name",
            "vbdead0",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = Command::new("ip")
        .args(["link", "set", "vethdead0", "master", &bridge])
        .status()
        .unwrap();
    assert!(ok.success());
    d.spawn();
    assert_eq!(containers(&d, "bk").as_object().unwrap().len(), 2);
    assert_eq!(ports_of(&bridge).len(), 2, "{:?}", ports_of(&bridge));
    assert!(!link_exists("vethdead0"));
    assert!(a.reaches(Some(&b), "10.232.0.3"));

    // A bridge gone behind berth's back (a reboot) is made again at the next start.
    d.stop();
    let ok = Command::new("ip")
        .args(["link", "del", &bridge])
        .status()
        .unwrap();
    assert!(ok.success());
    d.spawn();
    assert_eq!(ports_of(&bridge).len(), 2, "{:?}", ports_of(&bridge));
    assert!(a.reaches(Some(&b), "10.232.0.3"));
    assert!(a.reaches(None, "10.232.0.1"));

    // The same subnet and name are refused while the network lives, and the subnet is free
    // again after it went.
    let r = create(
        &d,
        r#"{"Name":"bk2","IPAM":{"Config":[{"Subnet":"10.232.0.0/24"}]}}"#,
    );
    assert_eq!(r.status, 403, "{}", r.text());
    for ns in [&a, &b] {
        let r = disconnect(&d, "bk", &ns.0, false);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(d.delete("/v1.41/networks/bk").status, 204);
    assert!(!link_exists(&bridge));
    let r = create(
        &d,
        r#"{"Name":"bk2","IPAM":{"Config":[{"Subnet":"10.232.0.0/24"}]}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let bridge2 = bridges.of(&d, "bk2");
    assert_eq!(d.delete("/v1.41/networks/bk2").status, 204);
    assert!(!link_exists(&bridge2));
}

/// `ip ARGS` inside the namespace `ns`, which must succeed.
fn ip_in(ns: &Namespace, args: &[&str]) {
    let ok = Command::new("ip")
        .args(["-n", &ns.0])
        .args(args)
        .status()
        .unwrap();
    assert!(ok.success(), "ip -n {} {args:?}", ns.0);
}

#[test]
fn the_predefined_bridge_network_and_pools_clear_of_host_routes() {
    // berth in a namespace of its own: the docker0 it makes and the routes it meets are that
    // namespace's, never the machine's.
    let home = Namespace::new("bh");
    // (A veth pair carries the route: the machine may have no dummy interfaces.)
    ip_in(
        &home,
        &["link", "add", "rt0", "type", "veth", "peer", "name", "rt1"],
    );
    ip_in(&home, &["addr", "add", "172.17.0.1/16", "dev", "rt0"]);
    for end in ["rt0", "rt1"] {
        ip_in(&home, &["link", "set", end, "up"]);
    }
    let mut d = Daemon::start_in_netns(&home.0, &[]);
    let names =
        |d: &Daemon| network_names(d, "?filters=%7B%22type%22%3A%7B%22builtin%22%3Atrue%7D%7D");
    assert_eq!(names(&d), ["host", "none"], "no flag: no bridge network");

    // A network without a subnet passes over the default pool a route of the host covers.
    let r = create(&d, r#"{"Name":"bpool"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = d.get("/v1.41/networks/bpool");
    assert_eq!(r.json()["IPAM"]["Config"][0]["Subnet"], "172.18.0.0/16");
    assert_eq!(d.delete("/v1.41/networks/bpool").status, 204);

    // --bip: docker0 with that address, the network as dockerd 20.10 shows it.
    d.stop();
    d.extra_args = vec!["--bip".into(), "10.99.0.1/24".into()];
    d.spawn();
    assert_eq!(names(&d), ["bridge", "host", "none"]);
    let bridge = d.get("/v1.41/networks/bridge").json();
    let expected: Value = serde_json::from_str(
        r#"{"Scope":"local","Driver":"bridge","EnableIPv6":false,
        "IPAM":{"Driver":"default","Options":null,"Config":[{"Subnet":"10.99.0.0/24","Gateway":"10.99.0.1"}]},
        "Internal":false,"Attachable":false,"Ingress":false,"ConfigFrom":{"Network":""},"ConfigOnly":false,
        "Containers":{},"Options":{"com.docker.network.bridge.default_bridge":"true",
        "com.docker.network.bridge.enable_icc":"true","com.docker.network.bridge.enable_ip_masquerade":"false",
        "com.docker.network.bridge.host_binding_ipv4":"0.0.0.0","com.docker.network.bridge.name":"docker0",
        "com.docker.network.driver.mtu":"1500"},"Labels":{}}"#,
    )
    .unwrap();
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(&bridge[key], value, "{key} in {bridge}");
    }
    assert!(
        home.ipv4().contains(&"docker0 10.99.0.1/24".to_string()),
        "{:?}",
        home.ipv4()
    );
    d.delete("/v1.41/networks/bridge")
        .assert_error(403, "bridge is a pre-defined network and cannot be removed");
    create(
        &d,
        r#"{"Name":"bover","IPAM":{"Config":[{"Subnet":"10.99.0.0/16"}]}}"#,
    )
    .assert_error(403, "Pool overlaps with other one on this address space");

    // The same setup after a restart: the same network, namespaces connected to it stay.
    let a = Namespace::new("bda");
    let r = connect_ns(&d, "bridge", &a, "");
    assert_eq!(r.status, 200, "{}", r.text());
    d.stop();
    d.spawn();
    assert_eq!(d.get("/v1.41/networks/bridge").json()["Id"], bridge["Id"]);
    assert_eq!(a.ipv4(), ["lo", "eth0 10.99.0.2/24"]);
    assert!(
        a.routes().contains("default via 10.99.0.1 dev eth0"),
        "{}",
        a.routes()
    );

    // No flag again: the network goes, its namespaces are disconnected, docker0 (berth made
    // it) is deleted.
    d.stop();
    d.extra_args.clear();
    d.spawn();
    assert_eq!(names(&d), ["host", "none"]);
    assert_eq!(a.addresses(), ["lo"]);
    assert!(!home.ipv4().iter().any(|l| l.starts_with("docker0")));

    // --bridge NAME: a bridge that must exist, its address giving the subnet; left in place
    // when the network goes.
    d.stop();
    let refused = d.command().args(["--bridge", "brt9"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Error creating default \"bridge\" network: bridge device with non default name brt9 must be created manually"),
        "{stderr}"
    );
    ip_in(&home, &["link", "add", "brt0", "type", "bridge"]);
    ip_in(&home, &["addr", "add", "10.98.0.1/24", "dev", "brt0"]);
    d.extra_args = vec!["--bridge".into(), "brt0".into()];
    d.spawn();
    let bridge = d.get("/v1.41/networks/bridge").json();
    assert_eq!(
        bridge["IPAM"]["Config"],
        serde_json::json!([{"Subnet":"10.98.0.0/24","Gateway":"10.98.0.1"}])
    );
    assert_eq!(bridge["Options"]["com.docker.network.bridge.name"], "brt0");
    d.stop();
    d.extra_args.clear();
    d.spawn();
    assert!(
        home.ipv4()
            .iter()
            .any(|l| l.starts_with("brt0 10.98.0.1/24")),
        "{:?}",
        home.ipv4()
    );
}
