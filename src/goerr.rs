//! Errors worded as Go words them, for messages users compare with dockerd's: OS error
//! texts, durations, and what failed at the bottom of an HTTP client error (shared by the
//! plugin RPC client and the registry client).

use std::time::Duration;

/// Go's `syscall.Errno.Error()`: the C library's text with a lower-case first letter
/// (`no such file or directory`, `input/output error`); Go's `errno N` for a number the
/// table does not know.
pub fn errno_text(code: i32) -> String {
    let text = std::io::Error::from_raw_os_error(code).to_string();
    let text = text
        .strip_suffix(&format!(" (os error {code})"))
        .unwrap_or(&text);
    if text.is_empty() || text.starts_with("Unknown error") {
        return format!("errno {code}");
    }
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("errno {code}"),
    }
}

/// An `io::Error` as Go prints the matching error: an OS error is its [`errno_text`] (no
/// Rust ` (os error N)` suffix), anything else its own text.
pub fn io_error_text(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => errno_text(code),
        None => error.to_string(),
    }
}

/// A duration as Go's `time.Duration.String()` writes the ones we log (`50ms`, `1.6s`, `1m4s`).
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return if d.is_zero() {
            "0s".into()
        } else {
            format!("{}µs", d.as_micros())
        };
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let mins = ms / 60_000;
    let rest = ms % 60_000;
    let secs = if rest.is_multiple_of(1000) {
        format!("{}s", rest / 1000)
    } else {
        let s = format!("{}.{:03}", rest / 1000, rest % 1000);
        format!("{}s", s.trim_end_matches('0'))
    };
    if mins == 0 {
        secs
    } else if mins < 60 {
        format!("{mins}m{secs}")
    } else {
        format!("{}h{}m{secs}", mins / 60, mins % 60)
    }
}

/// What an HTTP client error comes down to, found by walking its causes (looking inside the
/// `io::Error`s, whose `source()` skips the error they wrap).
#[derive(Debug, Default)]
pub struct Cause {
    /// The first OS error number.
    pub os_error: Option<i32>,
    /// An `io::Error` of kind `TimedOut` came before any OS error number.
    pub timed_out_first: bool,
    /// The text of a TLS error.
    pub tls: Option<String>,
    /// EPIPE: written into a connection the peer had closed.
    pub broken_pipe: bool,
    /// ECONNRESET.
    pub reset: bool,
}

impl Cause {
    pub fn of(e: &reqwest::Error) -> Cause {
        use std::error::Error as _;
        let mut cause = Cause::default();
        let mut src = e.source();
        while let Some(s) = src {
            let mut next = s.source();
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                if cause.os_error.is_none() {
                    cause.os_error = io.raw_os_error();
                    if cause.os_error.is_none() && io.kind() == std::io::ErrorKind::TimedOut {
                        cause.timed_out_first = true;
                    }
                }
                match io.kind() {
                    std::io::ErrorKind::BrokenPipe => cause.broken_pipe = true,
                    std::io::ErrorKind::ConnectionReset => cause.reset = true,
                    _ => {}
                }
                if let Some(inner) = io.get_ref() {
                    next = Some(inner as &(dyn std::error::Error + 'static));
                }
            }
            if let Some(t) = s.downcast_ref::<rustls::Error>() {
                cause.tls = Some(t.to_string());
            }
            src = next;
        }
        cause
    }

    /// The OS error number, with a time-out that came first read as ETIMEDOUT.
    pub fn os_error_or_timeout(&self) -> Option<i32> {
        if self.timed_out_first {
            Some(nix::errno::Errno::ETIMEDOUT as i32)
        } else {
            self.os_error
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_texts_read_like_go() {
        assert_eq!(
            errno_text(nix::errno::Errno::ENOENT as i32),
            "no such file or directory"
        );
        assert_eq!(
            errno_text(nix::errno::Errno::ECONNREFUSED as i32),
            "connection refused"
        );
        // glibc's (and so Go's) wording, not the kernel header comments
        let t = |n| io_error_text(&std::io::Error::from_raw_os_error(n));
        assert_eq!(t(nix::libc::ENODEV), "no such device");
        assert_eq!(t(nix::libc::ENOTBLK), "block device required");
        assert_eq!(t(nix::libc::EIO), "input/output error");
        assert_eq!(t(nix::libc::ENAMETOOLONG), "file name too long");
        assert_eq!(t(nix::libc::ELOOP), "too many levels of symbolic links");
        assert_eq!(errno_text(4000), "errno 4000");
        assert_eq!(
            io_error_text(&std::io::Error::other("not a device node")),
            "not a device node"
        );
    }

    #[test]
    fn durations_read_like_go() {
        assert_eq!(go_duration(Duration::from_millis(50)), "50ms");
        assert_eq!(go_duration(Duration::from_millis(1600)), "1.6s");
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_millis(64_000)), "1m4s");
        assert_eq!(go_duration(Duration::from_millis(12_800)), "12.8s");
    }
}
