//! Hostile answers, for berth's hardening tests: what a broken or malicious plugin could send
//! instead of a proper reply. `TEST_HOSTILE=<mode>[@<Method>[,<Method>..]]` picks the mode and
//! the methods it applies to (full `VolumeDriver.Get` or short `Get`, `*` for all; without `@`
//! every method but `Plugin.Activate`, so the plugin can still be activated).
//! `TEST_HOSTILE_FILE=<path>` holds the same text and is read on every call (absent or empty:
//! no hostility), so a test can switch modes and methods without restarting the plugin. An
//! authorization rule's action `hostile=<mode>` answers that call with the mode.
//!
//! Modes (the connection is closed after each, except where the mode never ends):
//! * `huge`: 200 with `Content-Length` of 1 GiB, and that many bytes streamed.
//! * `chunked`: 200, chunked, 64 KiB chunks forever.
//! * `drip`: 200 announcing 1 MiB, then one byte every 100 ms.
//! * `slow-headers`: the status line, then one header byte every 100 ms, forever.
//! * `garbage`: bytes that are not HTTP at all.
//! * `not-json`: 200 whose body is not JSON.
//! * `wrong-types`: 200 with JSON of the wrong types for the method (`{"Err":7}`, ...).
//! * `close-mid-body`: 200 announcing 1000 bytes, 16 sent, then the connection is closed.
//! * `never`: the request is read and never answered.
//! * `long-error`: 500 with an `Err` of 32 KiB (more than berth passes on).
//! * `huge-error`: 500 with a 1 GiB body.

use super::*;

const GIB: u64 = 1 << 30;
const CHUNK: usize = 64 << 10;
const DRIP_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Huge,
    Chunked,
    Drip,
    SlowHeaders,
    Garbage,
    NotJson,
    WrongTypes,
    CloseMidBody,
    Never,
    LongError,
    HugeError,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        Ok(match s {
            "huge" => Mode::Huge,
            "chunked" => Mode::Chunked,
            "drip" => Mode::Drip,
            "slow-headers" => Mode::SlowHeaders,
            "garbage" => Mode::Garbage,
            "not-json" => Mode::NotJson,
            "wrong-types" => Mode::WrongTypes,
            "close-mid-body" => Mode::CloseMidBody,
            "never" => Mode::Never,
            "long-error" => Mode::LongError,
            "huge-error" => Mode::HugeError,
            other => return Err(format!("unknown hostile mode {other:?}")),
        })
    }
}

/// A mode and the methods it applies to (empty: every method but `Plugin.Activate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hostility {
    mode: Mode,
    methods: Vec<String>,
}

impl Hostility {
    /// `<mode>[@<Method>[,<Method>..]]`; `None` for empty text.
    pub(super) fn parse(text: &str) -> Result<Option<Hostility>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let (mode, methods) = match text.split_once('@') {
            Some((mode, methods)) => (mode, split_list(Some(methods.to_string()))),
            None => (text, Vec::new()),
        };
        Ok(Some(Hostility {
            mode: mode.trim().parse()?,
            methods,
        }))
    }

    fn applies_to(&self, method: &str) -> bool {
        if self.methods.is_empty() {
            return method != "Plugin.Activate";
        }
        let short = method.rsplit('.').next().unwrap_or("");
        self.methods
            .iter()
            .any(|m| m == "*" || m == method || m == short)
    }
}

/// Where the hostility comes from: fixed at start, or re-read from a file on every call.
pub(super) enum Source {
    None,
    Fixed(Hostility),
    File(PathBuf),
}

impl Source {
    pub(super) fn from_knobs(fixed: Option<String>, file: Option<String>) -> Source {
        if let Some(path) = file {
            return Source::File(PathBuf::from(path));
        }
        match Hostility::parse(&fixed.unwrap_or_default()) {
            Ok(Some(h)) => Source::Fixed(h),
            Ok(None) => Source::None,
            Err(why) => {
                eprintln!("berth-test-plugin: ignoring TEST_HOSTILE: {why}");
                Source::None
            }
        }
    }

    /// The mode to answer `method` with, if any.
    pub(super) fn mode_for(&self, method: &str) -> Option<Mode> {
        let current = match self {
            Source::None => return None,
            Source::Fixed(h) => h.clone(),
            Source::File(path) => {
                let text = fs::read_to_string(path).unwrap_or_default();
                match Hostility::parse(&text) {
                    Ok(h) => h?,
                    Err(why) => {
                        eprintln!("berth-test-plugin: ignoring {}: {why}", path.display());
                        return None;
                    }
                }
            }
        };
        current.applies_to(method).then_some(current.mode)
    }
}

/// JSON of the wrong types for `method`: what a careless plugin author might send.
fn wrong_types(method: &str) -> &'static str {
    match method.rsplit('.').next().unwrap_or("") {
        "Activate" => r#"{"Implements":"VolumeDriver"}"#,
        "Get" => r#"{"Volume":"not an object","Err":""}"#,
        "List" => r#"{"Volumes":{"a":1},"Err":""}"#,
        "Path" | "Mount" => r#"{"Mountpoint":42,"Err":""}"#,
        "Capabilities" => r#"{"Capabilities":[]}"#,
        "AuthZReq" | "AuthZRes" => r#"{"Allow":"yes","Msg":7}"#,
        _ => r#"{"Err":7}"#,
    }
}

fn head(status: &str, framing: &str) -> String {
    format!("HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\n{framing}\r\n")
}

/// Writes `total` bytes of `fill` after `prefix`, in chunks; stops at the first write error
/// (berth hung up).
fn stream(w: &mut impl Write, prefix: &[u8], fill: u8, total: u64) -> io::Result<()> {
    w.write_all(prefix)?;
    let block = vec![fill; CHUNK];
    let mut left = total.saturating_sub(prefix.len() as u64);
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        w.write_all(&block[..n])?;
        left -= n as u64;
    }
    w.flush()
}

/// Answers `method` with `mode` on `w`. Returns when the answer is complete or berth hung up;
/// the caller closes the connection.
pub(super) fn answer(mode: Mode, method: &str, w: &mut impl Write) -> io::Result<()> {
    eprintln!("berth-test-plugin: answering {method} with hostile mode {mode:?}");
    match mode {
        Mode::Huge => {
            w.write_all(head("200 OK", &format!("Content-Length: {GIB}\r\n")).as_bytes())?;
            stream(w, br#"{"Err":""#, b'x', GIB)
        }
        Mode::HugeError => {
            let status = "500 Internal Server Error";
            w.write_all(head(status, &format!("Content-Length: {GIB}\r\n")).as_bytes())?;
            stream(w, br#"{"Err":""#, b'e', GIB)
        }
        Mode::Chunked => {
            w.write_all(head("200 OK", "Transfer-Encoding: chunked\r\n").as_bytes())?;
            let mut chunk = format!("{CHUNK:x}\r\n").into_bytes();
            chunk.extend(std::iter::repeat_n(b'x', CHUNK));
            chunk.extend_from_slice(b"\r\n");
            w.write_all(b"8\r\n{\"Err\":\"\r\n")?;
            loop {
                w.write_all(&chunk)?;
            }
        }
        Mode::Drip => {
            w.write_all(head("200 OK", "Content-Length: 1048576\r\n").as_bytes())?;
            drip(w, b"{\"Err\":\"", b'd')
        }
        Mode::SlowHeaders => drip(w, b"HTTP/1.1 200 OK\r\nX-Slow: ", b's'),
        Mode::Garbage => {
            let mut noise: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
            noise[..4].copy_from_slice(b"\x00\xffNO");
            w.write_all(&noise)?;
            w.flush()
        }
        Mode::NotJson => write_body(w, "200 OK", b"<html>this is not JSON</html>\n"),
        Mode::WrongTypes => write_body(w, "200 OK", wrong_types(method).as_bytes()),
        Mode::CloseMidBody => {
            w.write_all(head("200 OK", "Content-Length: 1000\r\n").as_bytes())?;
            w.write_all(b"{\"Err\":\"cut short")?;
            w.flush()
        }
        Mode::Never => loop {
            thread::park();
        },
        Mode::LongError => {
            let body = json!({ "Err": "E".repeat(32 << 10) }).to_string();
            write_body(w, "500 Internal Server Error", body.as_bytes())
        }
    }
}

/// Writes `start`, then `byte` every [`DRIP_PAUSE`] until berth hangs up.
fn drip(w: &mut impl Write, start: &[u8], byte: u8) -> io::Result<()> {
    w.write_all(start)?;
    loop {
        w.flush()?;
        thread::sleep(DRIP_PAUSE);
        w.write_all(&[byte])?;
    }
}

fn write_body(w: &mut impl Write, status: &str, body: &[u8]) -> io::Result<()> {
    let framing = format!("Content-Length: {}\r\nConnection: close\r\n", body.len());
    w.write_all(head(status, &framing).as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostility_reads_mode_and_methods() {
        let h = Hostility::parse("huge@Create, VolumeDriver.Get")
            .unwrap()
            .unwrap();
        assert_eq!(h.mode, Mode::Huge);
        assert!(h.applies_to("VolumeDriver.Create") && h.applies_to("VolumeDriver.Get"));
        assert!(!h.applies_to("VolumeDriver.List"));
        let every = Hostility::parse("never").unwrap().unwrap();
        assert!(every.applies_to("AuthZPlugin.AuthZReq") && !every.applies_to("Plugin.Activate"));
        assert_eq!(Hostility::parse(" \n").unwrap(), None);
        assert!(Hostility::parse("nasty@Get").is_err());
    }
}
