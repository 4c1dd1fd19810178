//! Scripted plugins for the checks' unit tests: a unix-socket HTTP server whose answers come
//! from a closure, so every check can be shown passing against a good model of a protocol and
//! failing (or warning) against that model with one answer spoiled.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::registry;
use super::report::Report;
use super::target::Target;
use super::{Options, Outcome, Protocol};

/// An answer: status and body.
pub type Answer = (u16, String);

/// Answers a call: method, decoded body (`Null` when empty or not JSON), raw body.
pub type Handler = Arc<dyn Fn(&str, &Value, &[u8]) -> Answer + Send + Sync>;

pub fn ok(v: Value) -> Answer {
    (200, v.to_string())
}

pub fn err(status: u16, message: &str) -> Answer {
    (status, json!({ "Err": message }).to_string())
}

/// A scripted plugin listening on a socket in a temporary directory; stops when dropped.
pub struct Scripted {
    dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl Scripted {
    pub fn start(handler: Handler) -> Scripted {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("p.sock");
        let listener = UnixListener::bind(&socket).expect("bind the scripted plugin");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let handler = handler.clone();
                std::thread::spawn(move || serve(stream, handler));
            }
        });
        Scripted { dir, socket }
    }

    pub fn scratch(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

fn serve(stream: UnixStream, handler: Handler) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let args: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let method = path.trim_start_matches('/');
        let (status, text) = handler(method, &args, &body);
        let head = format!(
            "HTTP/1.1 {status} Scripted\r\nContent-Type: application/vnd.docker.plugins.v1.1+json\r\nContent-Length: {}\r\n\r\n",
            text.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(text.as_bytes()).is_err()
        {
            return;
        }
    }
}

/// Runs the checks matching `checks` against `plugin`.
pub async fn run(plugin: &Scripted, checks: &[&str]) -> Report {
    let target = Target::socket(&plugin.socket, std::time::Duration::from_secs(5)).unwrap();
    let options = Options {
        checks: checks.iter().map(|c| c.to_string()).collect(),
        scratch: plugin.scratch(),
        parallel: 4,
        authz_large_body: 200_000,
        ..Options::default()
    };
    super::runner::run(&target, &options).await
}

/// The outcome of check `id` in `report`.
pub fn outcome(report: &Report, id: &str) -> Option<Outcome> {
    report
        .results
        .iter()
        .find(|r| r.check.id == id)
        .map(|r| r.outcome)
}

/// Runs the checks of `protocol` against a plugin answering with `good` and asserts that all
/// of them pass.
pub async fn prove_good(good: Handler, protocol: Protocol) {
    let plugin = Scripted::start(good);
    let report = run(&plugin, &[&format!("{}.*", protocol.name())]).await;
    for r in &report.results {
        assert_eq!(
            r.outcome,
            Outcome::Pass,
            "{} against the good model: {}",
            r.check.id,
            r.got
        );
    }
    assert_eq!(report.results.len(), registry::of(protocol).count());
}

/// Runs each case's plugin against the checks of `protocol` and asserts that its check comes
/// out as expected; every check of `protocol` must have a case, so none goes unproven.
pub async fn prove_cases(cases: Vec<(&str, Outcome, Handler)>, protocol: Protocol) {
    let pattern = format!("{}.*", protocol.name());
    let mut proven: Vec<&str> = Vec::new();
    for (id, expected, handler) in cases {
        let plugin = Scripted::start(handler);
        let report = run(&plugin, &[&pattern]).await;
        assert_eq!(
            outcome(&report, id),
            Some(expected),
            "{id}: {:?}",
            report.results.iter().find(|r| r.check.id == id)
        );
        proven.push(id);
    }
    for c in registry::of(protocol) {
        assert!(proven.contains(&c.id), "{} has no failing case", c.id);
    }
}

/// Wraps `base`: answers of `method` pass through `spoil`.
pub fn spoiled(
    base: Handler,
    method: &'static str,
    spoil: impl Fn(&Value, Answer) -> Answer + Send + Sync + 'static,
) -> Handler {
    Arc::new(move |m: &str, args: &Value, raw: &[u8]| {
        let answer = base(m, args, raw);
        if m == method {
            spoil(args, answer)
        } else {
            answer
        }
    })
}

/// The answer with its JSON changed by `edit`.
pub fn edit(answer: Answer, edit: impl Fn(&mut Value)) -> Answer {
    let mut v: Value = serde_json::from_str(&answer.1).unwrap_or(Value::Null);
    edit(&mut v);
    (answer.0, v.to_string())
}

/// A well-behaved plugin implementing `implements`, with the answers of `methods`.
pub fn model(
    implements: &'static str,
    methods: impl Fn(&str, &Value) -> Option<Answer> + Send + Sync + 'static,
) -> Handler {
    Arc::new(move |method: &str, args: &Value, raw: &[u8]| {
        if method == "Plugin.Activate" {
            return ok(json!({ "Implements": [implements] }));
        }
        let interface = implements_interface(implements);
        if !method.starts_with(&format!("{interface}.")) {
            return (404, "404 page not found\n".into());
        }
        let needs_args = !matches!(
            method,
            "NetworkDriver.GetCapabilities"
                | "IpamDriver.GetCapabilities"
                | "IpamDriver.GetDefaultAddressSpaces"
        );
        if needs_args && serde_json::from_slice::<Value>(raw).is_err() {
            return (400, "bad request\n".into());
        }
        methods(method, args).unwrap_or_else(|| (404, "404 page not found\n".into()))
    })
}

fn implements_interface(implements: &str) -> &str {
    match implements {
        "authz" => "AuthZPlugin",
        other => other,
    }
}

/// Shared state of a model.
pub type State<T> = Arc<Mutex<T>>;

pub fn state<T: Default>() -> State<T> {
    Arc::new(Mutex::new(T::default()))
}

/// Field `name` of a request, as a string.
pub fn arg(args: &Value, name: &str) -> String {
    args.get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}
