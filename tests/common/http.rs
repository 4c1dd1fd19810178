//! HTTP/1.1 written and read by hand, for both ends the tests play: a client of berth (or of a
//! plugin) on a unix socket, and the scripted servers (fake plugins, stand-in registries) that
//! read berth's requests.

use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The value of header `name` (case-insensitive) in `headers`.
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// The `message` of a Docker error body.
    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    /// Asserts the status of the answer to `what`, showing its body otherwise.
    #[track_caller]
    pub fn expect(&self, status: u16, what: &str) -> &Response {
        assert_eq!(self.status, status, "{what}: {}", self.text());
        self
    }
    /// Asserts that this is the Docker error `status` with `message`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, message: &str) {
        assert_eq!(
            (self.status, self.message().as_str()),
            (status, message),
            "{}",
            self.text()
        );
    }
}

/// One request as a scripted server read it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap()
    }
}

/// A request as `(method, path, headers, body)`.
pub type Outgoing<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8]);

/// One request on a new connection with `Connection: close`; the answer is read to the end of
/// the connection (at most 60 s apart).
pub fn raw_request(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let request = (method, path, headers, body);
    read_response(send_request(socket, request, body.len())?)
}

/// Connects and writes `request` with a `Content-Length` announcing all of its body, but only
/// the first `sent` bytes of it: less than all is a client stalled in the middle of its upload.
pub fn send_request(
    socket: &Path,
    (method, path, headers, body): Outgoing,
    sent: usize,
) -> std::io::Result<UnixStream> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body[..sent])?;
    Ok(stream)
}

/// Reads the answer on `stream` to the end of the connection (an error when it ends before a
/// whole head). The body is what follows the head, de-chunked when chunked; a chunked body cut
/// short is kept as far as it came.
pub fn read_response(mut stream: impl Read) -> std::io::Result<Response> {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// The answer in `raw`, the bytes of a whole connection, read as [`read_response`] does.
pub fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let mut rest = raw;
    let (status_line, headers) = read_head(&mut rest)?.ok_or_else(|| invalid("no answer"))?;
    let mut body = rest.to_vec();
    if is_chunked(&headers) {
        body = read_chunked(&mut rest);
    }
    Ok(Response {
        status: status_of(&status_line)?,
        headers,
        body,
    })
}

/// Sends `raw` bytes (a whole request, framed by the caller) and reads the answer until the
/// peer closes the connection or `wait` passes. With `half_close`, the write side is shut
/// after sending (the body ends there).
pub fn exchange(socket: &Path, raw: &[u8], half_close: bool, wait: Duration) -> Response {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.write_all(raw).expect("send");
    if half_close {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if answer.is_empty() => panic!("no answer: {e}"),
            Err(_) => break,
        }
    }
    parse_response(&answer).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&answer)))
}

/// Reads one response framed by its `Content-Length` or chunked encoding (no body without
/// either), leaving the connection at the next response.
pub fn read_framed_response(r: &mut impl BufRead) -> std::io::Result<Response> {
    let (status_line, headers) = read_head(r)?.ok_or_else(|| invalid("no answer"))?;
    let body = read_framed_body(r, &headers)?;
    Ok(Response {
        status: status_of(&status_line)?,
        headers,
        body,
    })
}

/// Reads one request; `None` when the connection ended before one started.
pub fn read_request(r: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let Some((request_line, headers)) = read_head(r)? else {
        return Ok(None);
    };
    let mut parts = request_line.split_whitespace();
    let mut part = || parts.next().unwrap_or("").to_string();
    let (method, target, version) = (part(), part(), part());
    let body = read_framed_body(r, &headers)?;
    Ok(Some(Request {
        method,
        target,
        version,
        headers,
        body,
    }))
}

/// The first line of a message (request or status line) and its headers.
pub type Head = (String, Vec<(String, String)>);

/// The head of the next message; `None` at the end of the stream.
pub fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(invalid("no header end"));
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Ok(Some((first.trim_end().to_string(), headers)));
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
}

fn read_framed_body(
    r: &mut impl BufRead,
    headers: &[(String, String)],
) -> std::io::Result<Vec<u8>> {
    if let Some(len) = find_header(headers, "content-length") {
        let mut body = vec![0; len.parse().map_err(|_| invalid("bad Content-Length"))?];
        r.read_exact(&mut body)?;
        Ok(body)
    } else if is_chunked(headers) {
        Ok(read_chunked(r))
    } else {
        Ok(Vec::new())
    }
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    find_header(headers, "transfer-encoding").is_some_and(|v| v.contains("chunked"))
}

/// The chunks up to the last one, or as far as they came.
fn read_chunked(r: &mut impl BufRead) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut size = String::new();
        if r.read_line(&mut size).unwrap_or(0) == 0 {
            return out;
        }
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let mut chunk = vec![0; size];
        if size == 0 || r.read_exact(&mut chunk).is_err() {
            return out;
        }
        out.extend_from_slice(&chunk);
        let _ = r.read_exact(&mut [0; 2]);
    }
}

fn status_of(status_line: &str) -> std::io::Result<u16> {
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))
}

fn invalid(m: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string())
}

/// Percent-encodes everything but unreserved characters (for query values).
pub fn url_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
