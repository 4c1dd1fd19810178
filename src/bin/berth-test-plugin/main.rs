//! `berth-test-plugin`: a small, dependency-light Docker plugin used by berth's runtime, volume
//! and authorization tests, as a managed plugin (`scripts/make-test-plugins.sh` packs it into
//! plugin directories) or directly on the host as a legacy plugin.
//!
//! It speaks the plugin RPC protocol (HTTP/1.1 over a unix socket, `POST /<Interface>.<Method>`
//! with a JSON body): `Plugin.Activate`, every `VolumeDriver.*` method (volume.rs),
//! `AuthZPlugin.AuthZReq`/`AuthZRes` (authz.rs), every `LogDriver.*` method (log.rs) and, in its
//! network and IPAM modes (network.rs, ipam.rs), every `NetworkDriver.*` and `IpamDriver.*`
//! method. Volumes are directories
//! `<TEST_ROOT>/<name>`; per-volume metadata (creation time, options) lives in
//! `<TEST_ROOT>/.berth-test-plugin/<name>.json`, so volumes survive a plugin restart. Mounts are
//! refcounted by caller ID in memory, as real plugins do.
//!
//! Behaviour is steered by environment variables (a managed plugin's `Settings.Env`); plugin
//! arguments of the form `TEST_X=value` override the environment. See [`USAGE`].

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

mod authz;
mod hostile;
mod ipam;
mod log;
mod metrics;
mod network;
mod volume;

const USAGE: &str = "\
berth-test-plugin: a Docker volume and authorization plugin for tests (HTTP/1.1 JSON RPC on a
unix socket)

Knobs (environment, or arguments TEST_X=value which override the environment):
  TEST_SOCKET_PATH=<path>    listen here (wins over TEST_SOCKET); a socket passed by an
                             activator (LISTEN_FDS=1) wins over both
  TEST_SOCKET=<file>         listen on /run/docker/plugins/<file> (default testdriver.sock)
  TEST_ROOT=<dir>            volume directories live here (default /data)
  TEST_START_DELAY_MS=<n>    sleep before listening
  TEST_CRASH_AFTER_MS=<n>    exit with status 3 that long after start
  TEST_NEVER_LISTEN=1        never create the socket
  TEST_STDERR_LINES=<n>      print `test-plugin stderr line <i>` for i in 1..=n to stderr
  TEST_REPORT=1              print `caps: CapEff=.. CapBnd=.. pid=.. hostname=.. uid=.. gid=.. cwd=..`
                             and `args: [..]` to stdout
  TEST_TRY_MOUNT=<dir>       mount a tmpfs there, print `mount <dir>: ok|<errno>`
  TEST_OPEN_DEVICE=<path>    open read-write, print `open <path>: ok|<errno>`
  TEST_MKNOD_FUSE=<path>     mknod c 10:229 there and open it, print `mknod ..` and `open ..`
  TEST_SLOW_CALL_MS=<n>      delay every RPC answer
  TEST_HANG_ON=<m>[,<m>..]   never answer these methods (`VolumeDriver.List`, `List`, or `*`)
  TEST_IGNORE_SIGTERM=1      ignore SIGTERM (otherwise: remove the socket, exit 0)
  TEST_IMPLEMENTS=<a>[,<b>]  Plugin.Activate answer (default VolumeDriver)
  TEST_SCOPE=<scope>         VolumeDriver.Capabilities scope (default local)
  TEST_GET_NULL=1            Get of an unknown volume answers {\"Volume\":null,\"Err\":\"\"}
  TEST_CALL_LOG=<path>|-     append `<Method> <body>` per RPC to a file (`-`: stdout)
  TEST_FAIL_ON=<m>[,<m>..]   NetworkDriver/IpamDriver methods (`NetworkDriver.Join` or `Join`) that
                             answer 500 {\"Err\":\"<method> failed (TEST_FAIL_ON)\"}
  TEST_NET_SCOPE=<scope>     NetworkDriver.GetCapabilities scope (default local)
  TEST_NET_VETH=1            Join makes a veth pair tp<id>h/tp<id>c and answers tp<id>c as SrcName
                             (needs CAP_NET_ADMIN in the daemon's network namespace)
  TEST_NET_PREFIX=<p>        Join's DstPrefix (default eth)
  TEST_NET_ROUTES=<r>[,<r>]  Join's StaticRoutes: `dest>nexthop` or `dest` (connected)
  TEST_NET_MAC=<mac>         CreateEndpoint answers this MacAddress
  TEST_NET_ADDRESS=<cidr>    CreateEndpoint answers this Address (a driver changing the address)
  TEST_NET_NO_EXT=1          Program/RevokeExternalConnectivity answer 404 (not implemented)
  TEST_AUTHZ_RULES=<rules>   AuthZ decisions, `;`-separated rules
                             `<req|res|both> <allow|deny|error|garbage|hang|slow=MS> <METHOD|*>
                             <uri-substring|*> [body=<substring>] [msg=<text to the end>]`;
                             the first match decides, no match allows
  TEST_AUTHZ_LOG=<path>      append every AuthZ call, one field per line, bodies decoded
  TEST_METRICS_SOCKET=<path> MetricsCollector mode: the daemon's metrics socket to scrape after
                             StartMetrics (default /run/docker/metrics.sock); each scrape
                             replaces <TEST_ROOT>/metrics.txt
  TEST_SCRAPE_INTERVAL_MS=<n> between scrapes (default 100)
  TEST_HOSTILE=<mode>[@<m>[,<m>..]]  answer these methods (default: all but Plugin.Activate)
                             with a hostile reply: huge, chunked, drip, slow-headers, garbage,
                             not-json, wrong-types, close-mid-body, never, long-error, huge-error
                             (an AuthZ rule's action `hostile=<mode>` does the same)
  TEST_HOSTILE_FILE=<path>   read the TEST_HOSTILE text from this file on every call
  TEST_BROKEN=<k>[,<k>..]    break the protocol on purpose, for `berth conformance` (see below)

Modes: VolumeDriver (default), AuthZ (TEST_IMPLEMENTS=authz, see TEST_AUTHZ_RULES), LogDriver
(TEST_IMPLEMENTS=LogDriver: entries read from each FIFO are kept in memory per container;
ReadLogs with Since/Until/Tail/Follow), NetworkDriver and IpamDriver (see the TEST_NET_* knobs).

Broken knobs (each makes some conformance checks fail or warn):
  transport: activate-fails activate-empty activate-no-implements activate-lowercase
             content-type-required strict-accept
             strict-json-ct strict-host unknown-200 empty-200 text-200 no-content-type
             plain-errors silent-errors accept-garbage crash-on-garbage serial restart
  volume:    scope-bogus caps-404 create-fails strict-opts strict-opts-silent bad-created-at
             status-list mountpoint-case get-ghosts get-misnamed list-missing list-bad
             path-empty path-error mount-fails mount-relative mount-nowhere mount-unwritable
             mount-new-dir unmount-wipes
             unmount-fails mount-unknown-ok remove-mounted-ok remove-fails remove-keeps
             remove-unknown-ok create-serial
  log:       log-caps-404 log-caps-bad log-field-case log-start-fails log-no-read
             log-bad-file-ok log-bad-frames log-drop-first log-tail-ignored
             log-since-ignored log-until-ignored log-follow-closes log-stop-fails
             log-die-on-eof

Volume options: `-o error=<text>` makes VolumeDriver.Create fail with that Err text.
";

/// `Content-Type` of successful answers, as go-plugins-helpers sends it.
const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.1+json";
const META_DIR: &str = ".berth-test-plugin";
const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The socket this process bound, removed on SIGTERM.
static BOUND_SOCKET: OnceLock<PathBuf> = OnceLock::new();

struct Knobs {
    overrides: HashMap<String, String>,
}

impl Knobs {
    fn get(&self, name: &str) -> Option<String> {
        self.overrides
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
            .filter(|v| !v.is_empty())
    }
    fn flag(&self, name: &str) -> bool {
        matches!(
            self.get(name).as_deref(),
            Some("1" | "true" | "yes" | "on" | "TRUE" | "True")
        )
    }
    fn millis(&self, name: &str) -> Option<Duration> {
        let v = self.get(name)?;
        match v.trim().parse::<u64>() {
            Ok(ms) => Some(Duration::from_millis(ms)),
            Err(_) => {
                eprintln!("berth-test-plugin: ignoring {name}={v:?}: not a number of milliseconds");
                None
            }
        }
    }
}

struct Config {
    root: PathBuf,
    slow: Option<Duration>,
    hang_on: Vec<String>,
    implements: Vec<String>,
    scope: String,
    get_null: bool,
    call_log: Option<String>,
    /// `TEST_BROKEN` knobs.
    broken: HashSet<String>,
    net: network::NetConfig,
    authz_rules: Vec<authz::Rule>,
    authz_log: Option<String>,
    metrics_socket: PathBuf,
    scrape_interval: Duration,
    hostile: hostile::Source,
}

struct Driver {
    cfg: Config,
    /// Calls being answered now (`serial` refuses a second one).
    in_flight: std::sync::atomic::AtomicUsize,
    /// The LogDriver mode's streams and entries.
    logs: Arc<log::Logs>,
    /// Volume name → IDs of the callers that mounted it.
    mounts: Mutex<HashMap<String, HashSet<String>>>,
    /// Serialises create/remove and call-log appends.
    fs_lock: Mutex<()>,
    /// Held by a create under `create-serial`.
    create_gate: Mutex<()>,
    /// Networks, endpoints and pools of the network and IPAM modes.
    net: Mutex<network::NetState>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return;
    }
    let mut overrides = HashMap::new();
    for a in &args {
        match a.split_once('=') {
            Some((k, v)) if k.starts_with("TEST_") => {
                overrides.insert(k.to_string(), v.to_string());
            }
            _ => eprintln!("berth-test-plugin: ignoring argument {a:?} (expected TEST_X=value)"),
        }
    }
    let knobs = Knobs { overrides };

    setup_signals(knobs.flag("TEST_IGNORE_SIGTERM"));

    if let Some(after) = knobs.millis("TEST_CRASH_AFTER_MS") {
        thread::spawn(move || {
            thread::sleep(after);
            eprintln!("berth-test-plugin: crashing with status 3 (TEST_CRASH_AFTER_MS)");
            std::process::exit(3);
        });
    }

    if let Some(n) = knobs.get("TEST_STDERR_LINES") {
        let n: u64 = n.trim().parse().unwrap_or(0);
        let mut err = io::stderr().lock();
        for i in 1..=n {
            let _ = writeln!(err, "test-plugin stderr line {i}");
        }
    }
    if knobs.flag("TEST_REPORT") {
        println!("{}", report_line());
        println!("args: {}", Value::from(args.clone()));
    }
    if let Some(dir) = knobs.get("TEST_TRY_MOUNT") {
        println!("mount {dir}: {}", try_mount(Path::new(&dir)));
    }
    if let Some(dev) = knobs.get("TEST_OPEN_DEVICE") {
        println!("open {dev}: {}", try_open(Path::new(&dev)));
    }
    if let Some(node) = knobs.get("TEST_MKNOD_FUSE") {
        println!("mknod {node}: {}", try_mknod_fuse(Path::new(&node)));
        println!("open {node}: {}", try_open(Path::new(&node)));
    }

    if let Some(delay) = knobs.millis("TEST_START_DELAY_MS") {
        thread::sleep(delay);
    }
    if knobs.flag("TEST_NEVER_LISTEN") {
        eprintln!("berth-test-plugin: not listening (TEST_NEVER_LISTEN)");
        loop {
            thread::park();
        }
    }

    let cfg = Config {
        root: PathBuf::from(knobs.get("TEST_ROOT").unwrap_or_else(|| "/data".into())),
        slow: knobs.millis("TEST_SLOW_CALL_MS"),
        hang_on: split_list(knobs.get("TEST_HANG_ON")),
        implements: {
            let l = split_list(knobs.get("TEST_IMPLEMENTS"));
            if l.is_empty() {
                vec!["VolumeDriver".to_string()]
            } else {
                l
            }
        },
        scope: knobs.get("TEST_SCOPE").unwrap_or_else(|| "local".into()),
        get_null: knobs.flag("TEST_GET_NULL"),
        call_log: knobs.get("TEST_CALL_LOG"),
        broken: split_list(knobs.get("TEST_BROKEN")).into_iter().collect(),
        net: network::NetConfig::from(&knobs),
        authz_rules: authz::parse_rules(&knobs.get("TEST_AUTHZ_RULES").unwrap_or_default()),
        authz_log: knobs.get("TEST_AUTHZ_LOG"),
        metrics_socket: PathBuf::from(
            knobs
                .get("TEST_METRICS_SOCKET")
                .unwrap_or_else(|| "/run/docker/metrics.sock".into()),
        ),
        scrape_interval: knobs
            .millis("TEST_SCRAPE_INTERVAL_MS")
            .unwrap_or(Duration::from_millis(100)),
        hostile: hostile::Source::from_knobs(
            knobs.get("TEST_HOSTILE"),
            knobs.get("TEST_HOSTILE_FILE"),
        ),
    };
    if cfg.broken.contains("restart") {
        // Starts once: a second start (a restart) finds the marker and fails.
        let marker = cfg.root.join(".berth-test-plugin-started");
        if marker.exists() {
            eprintln!("berth-test-plugin: refusing to start again (TEST_BROKEN=restart)");
            std::process::exit(1);
        }
        let _ = fs::create_dir_all(&cfg.root);
        let _ = fs::write(&marker, b"");
    }
    if let Err(e) = fs::create_dir_all(&cfg.root) {
        eprintln!(
            "berth-test-plugin: cannot create root {}: {e}",
            cfg.root.display()
        );
    }

    let socket = match knobs.get("TEST_SOCKET_PATH") {
        Some(p) => PathBuf::from(p),
        None => Path::new("/run/docker/plugins").join(
            knobs
                .get("TEST_SOCKET")
                .unwrap_or_else(|| "testdriver.sock".into()),
        ),
    };
    let listener = if let Some(passed) = socket_from_activation() {
        // Socket activation (systemd, systemd-socket-activate): the socket is the activator's
        // to keep; it is neither bound nor removed here.
        eprintln!("listening on the socket passed by the activator");
        passed
    } else {
        let listener = match bind(&socket) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("berth-test-plugin: listen on {}: {e}", socket.display());
                std::process::exit(1);
            }
        };
        let _ = BOUND_SOCKET.set(socket.clone());
        eprintln!("listening on {}", socket.display());
        listener
    };

    let cfg_root = cfg.root.clone();
    let driver = Arc::new(Driver {
        cfg,
        in_flight: std::sync::atomic::AtomicUsize::new(0),
        logs: Arc::default(),
        mounts: Mutex::new(HashMap::new()),
        fs_lock: Mutex::new(()),
        create_gate: Mutex::new(()),
        net: Mutex::new(Driver::load_net_state(&cfg_root)),
    });
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let driver = Arc::clone(&driver);
                thread::spawn(move || serve_connection(stream, &driver));
            }
            Err(e) => {
                eprintln!("berth-test-plugin: accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// The listening socket passed as descriptor 3 by a socket activator (`LISTEN_PID` is this
/// process, `LISTEN_FDS=1`), as go-plugins-helpers' plugins take it.
fn socket_from_activation() -> Option<UnixListener> {
    use std::os::fd::FromRawFd;
    let for_us = std::env::var("LISTEN_PID").ok()?.parse::<u32>().ok()? == std::process::id();
    if !for_us || std::env::var("LISTEN_FDS").ok()?.trim() != "1" {
        return None;
    }
    // SAFETY: the activator passed descriptor 3 to this process alone; it is wrapped once.
    Some(unsafe { UnixListener::from_raw_fd(3) })
}

fn split_list(v: Option<String>) -> Vec<String> {
    v.unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn bind(socket: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        fs::create_dir_all(dir)?;
    }
    match fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(socket)
}

// ---------------------------------------------------------------------------------------------
// Signals

/// SIGTERM/SIGINT are blocked in every thread and collected by one thread with `sigwait`, which
/// also works when the plugin is PID 1 of its namespace (blocked signals are never discarded as
/// "default action for init"). With `ignore_sigterm`, SIGTERM is set to SIG_IGN instead.
fn setup_signals(ignore_sigterm: bool) {
    use nix::sys::signal::{signal, SigHandler, SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    // SAFETY: installing SIG_IGN/SIG_DFL runs no code in signal context; no threads exist yet.
    unsafe {
        if ignore_sigterm {
            let _ = signal(Signal::SIGTERM, SigHandler::SigIgn);
        } else {
            let _ = signal(Signal::SIGTERM, SigHandler::SigDfl);
            set.add(Signal::SIGTERM);
        }
        let _ = signal(Signal::SIGINT, SigHandler::SigDfl);
    }
    if ignore_sigterm {
        eprintln!("berth-test-plugin: ignoring SIGTERM (TEST_IGNORE_SIGTERM)");
    }
    if let Err(e) = set.thread_block() {
        eprintln!("berth-test-plugin: blocking signals: {e}");
        return;
    }
    thread::spawn(move || loop {
        if let Ok(sig) = set.wait() {
            if let Some(path) = BOUND_SOCKET.get() {
                let _ = fs::remove_file(path);
            }
            eprintln!("berth-test-plugin: received {}, exiting", sig.as_str());
            std::process::exit(0);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Start-up probes

fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).to_string(),
        None => e.to_string(),
    }
}

fn report_line() -> String {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| "?".into())
    };
    let first = |v: String| v.split_whitespace().next().unwrap_or("?").to_string();
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into());
    format!(
        "caps: CapEff={} CapBnd={} pid={} hostname={} uid={} gid={} cwd={}",
        field("CapEff:"),
        field("CapBnd:"),
        std::process::id(),
        hostname,
        first(field("Uid:")),
        first(field("Gid:")),
        cwd
    )
}

fn try_mount(dir: &Path) -> String {
    use nix::mount::{mount, MsFlags};
    let _ = fs::create_dir_all(dir);
    match mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    ) {
        Ok(()) => {
            // A marker a test can look for through mount propagation.
            let _ = fs::write(dir.join("mounted-by-test-plugin"), b"tmpfs\n");
            "ok".into()
        }
        Err(e) => e.to_string(),
    }
}

fn try_open(path: &Path) -> String {
    match fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(_) => "ok".into(),
        Err(e) => errno_text(&e),
    }
}

fn try_mknod_fuse(path: &Path) -> String {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    match mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(10, 229),
    ) {
        Ok(()) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 server

/// Any HTTP method is accepted, as Go's `ServeMux` in go-plugins-helpers does.
struct Request {
    path: String,
    body: Vec<u8>,
    keep_alive: bool,
    /// Header names lower-cased.
    headers: HashMap<String, String>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Writes a streamed answer's body until it ends (the connection is closed after it).
type StreamBody = Box<dyn FnOnce(&mut dyn Write) + Send>;

struct Reply {
    status: u16,
    /// Empty: no Content-Type header.
    content_type: &'static str,
    body: Vec<u8>,
    /// A body of unknown length, written as it comes (`LogDriver.ReadLogs`).
    stream: Option<StreamBody>,
}

impl Reply {
    /// What go-plugins-helpers' mux answers for a method it does not serve.
    fn not_found() -> Reply {
        Reply::text(404, "404 page not found")
    }

    fn json(status: u16, v: impl serde::Serialize) -> Reply {
        let mut body = serde_json::to_vec(&v).unwrap_or_default();
        body.push(b'\n');
        Reply {
            status,
            content_type: CONTENT_TYPE,
            body,
            stream: None,
        }
    }
    /// A 200 answer whose body `write` streams.
    fn streamed(write: impl FnOnce(&mut dyn Write) + Send + 'static) -> Reply {
        Reply {
            status: 200,
            content_type: "application/x-protobuf",
            body: Vec::new(),
            stream: Some(Box::new(write)),
        }
    }
    fn ok(v: Value) -> Reply {
        Reply::json(200, v)
    }
    /// A 200 answer without a body (which dockerd reads as EOF).
    fn ok_empty() -> Reply {
        Reply {
            status: 200,
            content_type: CONTENT_TYPE,
            body: Vec::new(),
            stream: None,
        }
    }
    /// go-plugins-helpers: driver errors are 500 with `{"Err":"…"}`.
    fn err(msg: impl Into<String>) -> Reply {
        Reply::json(500, json!({ "Err": msg.into() }))
    }
    fn text(status: u16, msg: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{msg}\n").into_bytes(),
            stream: None,
        }
    }
}

fn serve_connection(stream: UnixStream, driver: &Driver) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut writer = write_half;
    loop {
        let req = match read_request(&mut reader, &mut writer) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let reply = Reply::text(400, &format!("bad request: {e}"));
                let _ = write_reply(&mut writer, &reply, false);
                return;
            }
        };
        if let Some(mode) = driver.hostile_mode(&req) {
            let method = req.path.trim_start_matches('/');
            let _ = hostile::answer(mode, method, &mut writer);
            return;
        }
        let mut reply = driver.handle(&req);
        if let Some(stream) = reply.stream.take() {
            if write_head(&mut writer, &reply, None, false).is_ok() {
                stream(&mut writer);
            }
            return;
        }
        if write_reply(&mut writer, &reply, req.keep_alive).is_err() || !req.keep_alive {
            return;
        }
    }
}

fn read_line(r: &mut impl BufRead, budget: &mut usize) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.take((*budget as u64) + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if n > *budget {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "header too large",
        ));
    }
    *budget -= n;
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-request",
        ));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "header is not UTF-8"))
}

/// One request, or `None` when the client closed the connection between requests.
fn read_request(r: &mut impl BufRead, w: &mut impl Write) -> io::Result<Option<Request>> {
    let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut budget = MAX_HEADER_BYTES;
    // Tolerate stray empty lines before a request line (RFC 9112 §2.2).
    let line = loop {
        match read_line(r, &mut budget)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let mut parts = line.split_whitespace();
    let (Some(_method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(invalid("unsupported HTTP version"));
    }
    let mut keep_alive = version != "HTTP/1.0";
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut expect_continue = false;
    let mut headers = HashMap::new();
    loop {
        let Some(h) = read_line(r, &mut budget)? else {
            return Err(invalid("connection closed in headers"));
        };
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            return Err(invalid("malformed header"));
        };
        let value = value.trim();
        headers.insert(name.trim().to_ascii_lowercase(), value.to_string());
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                content_length = Some(value.parse().map_err(|_| invalid("bad Content-Length"))?)
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    keep_alive = false;
                } else if v.contains("keep-alive") {
                    keep_alive = true;
                }
            }
            "expect" => expect_continue = value.eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
    }
    if expect_continue {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        w.flush()?;
    }
    let body = if chunked {
        read_chunked(r)?
    } else {
        let len = content_length.unwrap_or(0);
        if len > MAX_BODY_BYTES {
            return Err(invalid("body too large"));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        body
    };
    // Origin form `/X.Y?q`, or absolute form `http://host/X.Y`.
    let path = match target.find("://") {
        Some(i) => {
            let rest = &target[i + 3..];
            rest.find('/').map(|j| &rest[j..]).unwrap_or("/")
        }
        None => target,
    };
    let path = path.split(['?', '#']).next().unwrap_or("/").to_string();
    Ok(Some(Request {
        path,
        body,
        keep_alive,
        headers,
    }))
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut body = Vec::new();
    loop {
        let mut budget = 4096;
        let line = read_line(r, &mut budget)?.ok_or_else(|| invalid("eof in chunk size"))?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            let mut budget = MAX_HEADER_BYTES;
            while let Some(l) = read_line(r, &mut budget)? {
                if l.is_empty() {
                    break;
                }
            }
            return Ok(body);
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(invalid("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = String::new();
        r.read_line(&mut crlf)?;
    }
}

fn write_reply(w: &mut impl Write, reply: &Reply, keep_alive: bool) -> io::Result<()> {
    write_head(w, reply, Some(reply.body.len()), keep_alive)?;
    w.write_all(&reply.body)?;
    w.flush()
}

/// The status line and headers; without a length the body ends when the connection closes.
fn write_head(
    w: &mut impl Write,
    reply: &Reply,
    length: Option<usize>,
    keep_alive: bool,
) -> io::Result<()> {
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        406 => "Not Acceptable",
        415 => "Unsupported Media Type",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    if !reply.content_type.is_empty() {
        head.push_str(&format!("Content-Type: {}\r\n", reply.content_type));
    }
    if let Some(n) = length {
        head.push_str(&format!("Content-Length: {n}\r\n"));
    }
    if !keep_alive || length.is_none() {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.flush()
}

// ---------------------------------------------------------------------------------------------
// The driver

/// A JSON object field as Go's encoding/json finds it: the exact key, else the first key
/// equal to it but for ASCII case.
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let fields = v.as_object()?;
    let exact = fields.get(name);
    exact.or_else(|| {
        let folded = |(k, v): (&String, &'a Value)| k.eq_ignore_ascii_case(name).then_some(v);
        fields.iter().find_map(folded)
    })
}

fn str_field(v: &Value, name: &str) -> String {
    field(v, name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl Driver {
    fn broken(&self, knob: &str) -> bool {
        self.cfg.broken.contains(knob)
    }

    /// The hostile mode this request is to be answered with, if any (`TEST_HOSTILE`, or an
    /// AuthZ rule's `hostile=<mode>`).
    fn hostile_mode(&self, req: &Request) -> Option<hostile::Mode> {
        let method = req.path.trim_start_matches('/');
        if let Some(mode) = self.cfg.hostile.mode_for(method) {
            self.log_call(method, &req.body);
            return Some(mode);
        }
        if !method.starts_with("AuthZPlugin.") {
            return None;
        }
        let request: Value = serde_json::from_slice(&req.body).ok()?;
        self.authz_hostile_mode(method, &request)
    }

    fn handle(&self, req: &Request) -> Reply {
        use std::sync::atomic::Ordering;
        let method = req.path.trim_start_matches('/').to_string();
        self.log_call(&method, &req.body);
        let short = method.rsplit('.').next().unwrap_or("");
        if self
            .cfg
            .hang_on
            .iter()
            .any(|h| h == "*" || *h == method || h == short)
        {
            eprintln!("berth-test-plugin: hanging on {method} (TEST_HANG_ON)");
            loop {
                thread::park();
            }
        }
        let others = self.in_flight.fetch_add(1, Ordering::SeqCst);
        if let Some(d) = self.cfg.slow {
            thread::sleep(d);
        }
        let reply = if others > 0 && self.broken("serial") {
            // Give parallel callers time to overlap, then refuse all but one.
            Reply::err("busy: one call at a time")
        } else {
            if self.broken("serial") {
                thread::sleep(Duration::from_millis(5));
            }
            self.answer(req, &method)
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.spoil(&method, reply)
    }

    /// The transport knobs that refuse a request for its headers.
    fn refuse_headers(&self, req: &Request) -> Option<Reply> {
        let media =
            |v: Option<&str>| v.map(|v| v.split(';').next().unwrap_or("").trim().to_string());
        if self.broken("content-type-required") && req.header("content-type").is_none() {
            return Some(Reply::text(415, "Content-Type required"));
        }
        if self.broken("strict-json-ct")
            && media(req.header("content-type")).as_deref() == Some("application/json")
        {
            return Some(Reply::text(415, "application/json is not accepted"));
        }
        if self.broken("strict-accept")
            && req.header("accept") != Some("application/vnd.docker.plugins.v1.2+json")
        {
            return Some(Reply::text(
                406,
                "Accept must be application/vnd.docker.plugins.v1.2+json",
            ));
        }
        if self.broken("strict-host") && req.header("host") != Some("plugin.moby.localhost") {
            return Some(Reply::text(400, "unexpected Host"));
        }
        None
    }

    fn answer(&self, req: &Request, method: &str) -> Reply {
        if let Some(refused) = self.refuse_headers(req) {
            return refused;
        }
        let needs_args = !matches!(
            method,
            "Plugin.Activate"
                | "VolumeDriver.List"
                | "VolumeDriver.Capabilities"
                | "LogDriver.Capabilities"
        ) && !method.starts_with("MetricsCollector.");
        let known = method == "Plugin.Activate"
            || method.starts_with("VolumeDriver.")
            || method.starts_with("LogDriver.");
        let args: Value = if req.body.iter().all(u8::is_ascii_whitespace) {
            if needs_args && known && self.broken("accept-garbage") {
                return Reply::ok(json!({}));
            }
            if needs_args && known {
                // json.Decoder on an empty body.
                return Reply::text(400, "EOF");
            }
            Value::Object(Map::new())
        } else {
            match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(_) if self.broken("crash-on-garbage") => {
                    eprintln!("berth-test-plugin: exiting on a malformed request (TEST_BROKEN=crash-on-garbage)");
                    std::process::exit(4);
                }
                Err(_) if self.broken("accept-garbage") => return Reply::ok(json!({})),
                Err(e) => return Reply::text(400, &e.to_string()),
            }
        };
        match method {
            "Plugin.Activate" if self.broken("activate-fails") => Reply::err("not ready"),
            "Plugin.Activate" if self.broken("activate-empty") => Reply::ok_empty(),
            "Plugin.Activate" if self.broken("activate-no-implements") => {
                Reply::ok(json!({ "Implements": [] }))
            }
            "Plugin.Activate" if self.broken("activate-lowercase") => Reply::ok(json!({
                "Implements": self.cfg.implements.iter().map(|i| i.to_ascii_lowercase()).collect::<Vec<_>>()
            })),
            "Plugin.Activate" => Reply::ok(json!({ "Implements": self.cfg.implements })),
            m if m.starts_with("VolumeDriver.") => self.volume_call(m, &args),
            m if m.starts_with("NetworkDriver.") => self.network_call(m, &args),
            m if m.starts_with("IpamDriver.") => self.ipam_call(m, &args),
            m if m.starts_with("LogDriver.") => self.log_driver_call(m, &args),
            m if m.starts_with("AuthZPlugin.") => self.authz_call(m, &args),
            m if m.starts_with("MetricsCollector.") => self.metrics_call(m),
            _ => Reply::not_found(),
        }
    }

    /// The knobs that spoil answers on their way out.
    fn spoil(&self, method: &str, mut reply: Reply) -> Reply {
        if reply.status == 404 && self.broken("unknown-200") {
            return Reply::ok(json!({}));
        }
        let probe = matches!(method, "VolumeDriver.List" | "LogDriver.Capabilities");
        if reply.status == 200 && probe && self.broken("empty-200") {
            return Reply::ok_empty();
        }
        if reply.status == 200 && probe && self.broken("text-200") {
            reply = Reply::text(200, "OK");
        }
        if reply.status >= 400 && reply.status != 404 && self.broken("plain-errors") {
            let message = serde_json::from_slice::<Value>(&reply.body)
                .ok()
                .map(|v| str_field(&v, "Err"))
                .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).trim().to_string());
            reply = Reply::text(reply.status, &message);
        }
        if reply.status >= 400 && reply.status != 404 && self.broken("silent-errors") {
            reply = Reply::json(reply.status, json!({"Err": ""}));
        }
        if self.broken("no-content-type") {
            reply.content_type = "";
        }
        reply
    }

    fn log_call(&self, method: &str, body: &[u8]) {
        let Some(target) = &self.cfg.call_log else {
            return;
        };
        let body = String::from_utf8_lossy(body);
        let body = body.trim();
        let line = format!("{method} {}\n", if body.is_empty() { "-" } else { body });
        let _guard = self.fs_lock.lock().unwrap_or_else(|e| e.into_inner());
        if target == "-" {
            print!("{line}");
            let _ = io::stdout().flush();
        } else if let Ok(mut f) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(target)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Time

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since the epoch as RFC 3339 UTC (`2026-01-02T03:04:05Z`).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}
