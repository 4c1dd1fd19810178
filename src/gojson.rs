//! Go `encoding/json` error texts and string handling, reproduced byte for byte.
//!
//! The stock `docker` CLI prints the daemon's error message verbatim, and moby hands the errors
//! of Go's `encoding/json` straight back to the client. This module reproduces those texts:
//!
//! - [`check_syntax`] scans the first JSON value the way Go's scanner does and reports the
//!   first syntax error exactly as Go words it, in either of Go's two reading styles
//!   ([`Mode::Unmarshal`] for `json.Unmarshal`, [`Mode::Decoder`] for `json.NewDecoder(r).Decode`).
//! - [`kind_name`], [`unmarshal_type_error`] and [`unmarshal_field_type_error`] build Go's
//!   `*json.UnmarshalTypeError` texts for a well-formed value of the wrong shape.
//! - [`quote_char`], [`quote_bytes`] and [`go_quote`] quote like Go's scanner and `%q`;
//!   [`unquote`], [`lossy`] and [`go_escape_json`] turn raw bytes into strings and back the
//!   way Go's decoder and encoder do. Decoders built on top (such as the plugin config's) use
//!   these rather than their own copies.
//!
//! Everything here was checked against dockerd 20.10.24 built with Go 1.19.8 (see the tests,
//! where inputs observed on that daemon are marked `dockerd`, and the plugin config tests).
//!
//! Things Go's scanner does that are easy to get wrong, all reproduced here:
//! - whitespace is only space, `\t`, `\r`, `\n` (no `\v`, `\f`, NBSP or BOM);
//! - bytes are judged one at a time, never as UTF-8: invalid UTF-8 inside strings is accepted
//!   (Go replaces it with U+FFFD when decoding), and a stray byte `0xC3` outside a string is
//!   reported as the character U+00C3 (`'Ã'`), not as the UTF-8 sequence it begins;
//! - a number ends at the first byte that cannot continue it, so `01` is the value `0`
//!   followed by `1` (an "after top-level value"/"after array element" error, or, for a
//!   `Decoder`, a complete value `0`);
//! - at end of input `json.Unmarshal` feeds the scanner one extra space, so a truncated
//!   number or literal reports that space (`-` → `invalid character ' ' in numeric literal`)
//!   while a truncated string, array or object reports `unexpected end of JSON input`; a
//!   `Decoder` reports `unexpected EOF` for every truncated value;
//! - nesting deeper than 10000 arrays/objects is an error (`exceeded max depth`).

use serde_json::Value;

/// Which Go entry point produced the error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `json.Unmarshal(data, &v)`: the whole input must be one value plus optional whitespace.
    Unmarshal,
    /// `json.NewDecoder(r).Decode(&v)`: reads the first value and ignores whatever follows.
    Decoder,
}

/// Go's limit on nested arrays and objects (`[`/`{` number 10001 is rejected).
pub const MAX_DEPTH: usize = 10_000;

/// `json.Unmarshal` text for input that ends inside a value, or holds nothing but whitespace.
pub const UNEXPECTED_END: &str = "unexpected end of JSON input";
/// `Decoder` text (`io.ErrUnexpectedEOF`) for input that ends inside a value.
pub const UNEXPECTED_EOF: &str = "unexpected EOF";
/// `Decoder` text (`io.EOF`) for empty or whitespace-only input. moby's handlers usually turn
/// this into their own message (e.g. `got EOF while reading request body`), so callers should
/// match on it rather than show it.
pub const EOF: &str = "EOF";

/// Go's whitespace: space, tab, carriage return, newline. Nothing else.
pub fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// How Go's scanner quotes an offending byte in `invalid character ...`.
///
/// The byte is taken as the code point U+0000..U+00FF (not as UTF-8) and rendered like Go's
/// `strconv.Quote` body between single quotes, except that `'` becomes `'\''` and `"` is left
/// bare (`'"'`). Printable means ASCII 0x20..=0x7E and 0xA1..=0xFF except the soft hyphen
/// 0xAD; C0 controls and DEL use `\a \b \f \n \r \t \v` or `\xNN`, and 0x80..=0xA0 and 0xAD use
/// `\u00NN`.
///
/// This is Go's `quoteChar`: `strconv.Quote(string(c))` with the double quotes swapped for
/// single ones, so it shares [`quote_bytes`]'s escaping of one code point.
pub fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".to_string(),
        b'"' => "'\"'".to_string(),
        _ => {
            let mut out = String::from("'");
            quote_rune(&mut out, char::from(c));
            out.push('\'');
            out
        }
    }
}

/// Go's `strconv.IsPrint`, approximated for non-ASCII (control, format, separator and
/// private-use code points are treated as non-printable). Exact for U+0000..=U+00FF.
fn is_print(r: char) -> bool {
    if r.is_ascii() {
        return (' '..='~').contains(&r);
    }
    !(r.is_control()
        || r.is_whitespace()
        || matches!(r,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
            | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
            | '\u{E000}'..='\u{F8FF}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
            | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{FFFE}' | '\u{FFFF}'
            | '\u{F0000}'..='\u{10FFFF}'))
}

/// One code point as Go's `strconv.Quote` writes it between double quotes.
fn quote_rune(out: &mut String, r: char) {
    match r {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        r if is_print(r) => out.push(r),
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        r if (r as u32) < 0x20 || r == '\u{7f}' => out.push_str(&format!("\\x{:02x}", r as u32)),
        r if (r as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", r as u32)),
        r => out.push_str(&format!("\\U{:08x}", r as u32)),
    }
}

/// Go's `strconv.Quote` (and `%q`) of a byte string: invalid UTF-8 bytes become `\xHH`.
pub fn quote_bytes(b: &[u8]) -> String {
    let mut out = String::from("\"");
    let mut i = 0;
    while i < b.len() {
        match decode_rune(&b[i..]) {
            Some((r, n)) => {
                quote_rune(&mut out, r);
                i += n;
            }
            None => {
                out.push_str(&format!("\\x{:02x}", b[i]));
                i += 1;
            }
        }
    }
    out.push('"');
    out
}

/// Go's `%q` / `strconv.Quote` of a string (moby formats names in errors with `%q`).
pub fn go_quote(s: &str) -> String {
    quote_bytes(s.as_bytes())
}

/// Go `utf8.DecodeRune` on a non-empty slice: `None` where Go returns `(RuneError, 1)`.
fn decode_rune(b: &[u8]) -> Option<(char, usize)> {
    let n = match b[0] {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    let s = std::str::from_utf8(b.get(..n)?).ok()?;
    s.chars().next().map(|c| (c, n))
}

/// Bytes to a string the way Go's encoder would show them: each invalid byte is U+FFFD (one
/// per byte, unlike [`String::from_utf8_lossy`], which replaces a truncated sequence once).
pub fn lossy(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match decode_rune(&b[i..]) {
            Some((r, n)) => {
                out.push(r);
                i += n;
            }
            None => {
                out.push('\u{FFFD}');
                i += 1;
            }
        }
    }
    out
}

/// Go `unquoteBytes` on the inside of a string token [`check_syntax`] accepted: escapes
/// resolved, lone or invalid surrogates and invalid UTF-8 bytes become U+FFFD (one per byte).
pub fn unquote(b: &[u8]) -> String {
    fn hex4(b: &[u8]) -> Option<u32> {
        if b.len() < 6 || b[0] != b'\\' || b[1] != b'u' {
            return None;
        }
        u32::from_str_radix(std::str::from_utf8(&b[2..6]).ok()?, 16).ok()
    }
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && i + 1 < b.len() {
            let e = b[i + 1];
            i += 2;
            match e {
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let Some(r) = hex4(&b[i - 2..]) else {
                        out.push('\u{FFFD}');
                        continue;
                    };
                    i += 4;
                    if (0xD800..0xE000).contains(&r) {
                        if let Some(r2) = hex4(&b[i..]) {
                            if (0xD800..0xDC00).contains(&r) && (0xDC00..0xE000).contains(&r2) {
                                let cp = 0x10000 + ((r - 0xD800) << 10) + (r2 - 0xDC00);
                                out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                                i += 6;
                                continue;
                            }
                        }
                        out.push('\u{FFFD}');
                    } else {
                        out.push(char::from_u32(r).unwrap_or('\u{FFFD}'));
                    }
                }
                other => out.push(char::from(other)),
            }
            continue;
        }
        match decode_rune(&b[i..]) {
            Some((r, n)) => {
                out.push(r);
                i += n;
            }
            None => {
                out.push('\u{FFFD}');
                i += 1;
            }
        }
    }
    out
}

/// A JSON document serialized by serde as Go's `json.Marshal` (and an `Encoder` left at its
/// default) writes it: `<`, `>`, `&`, U+2028 and U+2029 escaped. They can only occur inside
/// strings, so the document's meaning is unchanged.
pub fn escape_html(json: Vec<u8>) -> Vec<u8> {
    let needs = |b: &[u8]| {
        b.iter().any(|c| matches!(c, b'<' | b'>' | b'&'))
            || b.windows(3)
                .any(|w| w == "\u{2028}".as_bytes() || w == "\u{2029}".as_bytes())
    };
    if !needs(&json) {
        return json;
    }
    let text = String::from_utf8_lossy(&json);
    let mut out = String::with_capacity(json.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.into_bytes()
}

/// The inside of Go `json.Marshal(string)` (HTML-escaping on, as `json.Marshal` does): Go
/// 1.19 writes `\n \r \t \" \\` short, other controls and `< > &` as `\u00XX`, U+2028/U+2029
/// as `\u2028`/`\u2029`, and each invalid UTF-8 byte as `\ufffd`.
pub fn go_escape_json(b: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c < 0x80 {
            match c {
                b'\\' | b'"' => out.extend_from_slice(&[b'\\', c]),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                c if c < 0x20 || c == b'<' || c == b'>' || c == b'&' => {
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(c >> 4)]);
                    out.push(HEX[usize::from(c & 0xf)]);
                }
                c => out.push(c),
            }
            i += 1;
            continue;
        }
        match decode_rune(&b[i..]) {
            None => {
                out.extend_from_slice(b"\\ufffd");
                i += 1;
            }
            Some(('\u{2028}', n)) => {
                out.extend_from_slice(b"\\u2028");
                i += n;
            }
            Some(('\u{2029}', n)) => {
                out.extend_from_slice(b"\\u2029");
                i += n;
            }
            Some((_, n)) => {
                out.extend_from_slice(&b[i..i + n]);
                i += n;
            }
        }
    }
    out
}

fn invalid(c: u8, context: &str) -> String {
    format!("invalid character {} {context}", quote_char(c))
}

/// What the innermost open array/object expects next once a value has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Inside an object, a key has just been read: expect `:`.
    ObjectKey,
    /// Inside an object, a member value has just been read: expect `,` or `}`.
    ObjectValue,
    /// Inside an array, an element has just been read: expect `,` or `]`.
    ArrayValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting any value.
    BeginValue,
    /// Just after `[`: a value or `]`.
    BeginValueOrEmpty,
    /// Just after `{`: a key or `}`.
    BeginStringOrEmpty,
    /// Just after `,` in an object: a key.
    BeginString,
    /// A value has ended; what follows depends on the innermost frame.
    EndValue,
    /// The top-level value has ended: only whitespace may follow.
    EndTop,
    /// The error state once a syntax error has been recorded.
    Failed,
    InString,
    InStringEsc,
    /// After `\u` and this many hex digits (0..=3).
    InStringEscU(u8),
    /// After `-`.
    Neg,
    /// After a leading `0` (possibly `-0`).
    Zero,
    /// In the integer part after a leading `1`..`9`.
    Int,
    /// After the decimal point.
    Dot,
    /// In the fraction digits.
    Frac,
    /// After `e`/`E`.
    Exp,
    /// After the exponent sign.
    ExpSign,
    /// In the exponent digits.
    ExpDigits,
    /// Inside `true`/`false`/`null`; `pos` is the index of the next expected letter.
    Literal {
        word: &'static str,
        pos: usize,
    },
}

struct Scanner {
    state: State,
    stack: Vec<Frame>,
    /// Offset just past the top-level value, once it is complete.
    end: Option<usize>,
    /// The first syntax error (Go keeps the first and fails every later step).
    err: Option<String>,
}

impl Scanner {
    fn new() -> Self {
        Scanner {
            state: State::BeginValue,
            stack: Vec::new(),
            end: None,
            err: None,
        }
    }

    fn fail(&mut self, msg: String) {
        if self.err.is_none() {
            self.err = Some(msg);
        }
        self.state = State::Failed;
    }

    fn push(&mut self, c: u8, frame: Frame, next: State) {
        self.stack.push(frame);
        if self.stack.len() > MAX_DEPTH {
            self.fail(invalid(c, "exceeded max depth"));
        } else {
            self.state = next;
        }
    }

    /// A value just ended. `end` is the offset just past it, used if it was the top-level one.
    fn value_done(&mut self, end: usize) {
        if self.stack.is_empty() {
            self.end = Some(end);
            self.state = State::EndTop;
        } else {
            self.state = State::EndValue;
        }
    }

    /// Pops a closed array/object whose closing byte sits at `pos`.
    fn pop(&mut self, pos: usize) {
        self.stack.pop();
        self.value_done(pos + 1);
    }

    /// Feeds the byte at `pos` to the state machine. `pos == input.len()` is the synthetic
    /// space Go feeds at end of input.
    fn step(&mut self, c: u8, pos: usize) {
        match self.state {
            State::Failed => {}
            State::BeginValue => self.begin_value(c),
            State::BeginValueOrEmpty => {
                if is_space(c) {
                } else if c == b']' {
                    self.end_value(c, pos);
                } else {
                    self.begin_value(c);
                }
            }
            State::BeginStringOrEmpty => {
                if is_space(c) {
                } else if c == b'}' {
                    if let Some(top) = self.stack.last_mut() {
                        *top = Frame::ObjectValue;
                    }
                    self.end_value(c, pos);
                } else {
                    self.begin_string(c);
                }
            }
            State::BeginString => self.begin_string(c),
            State::EndValue => self.end_value(c, pos),
            State::EndTop => {
                if !is_space(c) {
                    self.fail(invalid(c, "after top-level value"));
                }
            }
            State::InString => match c {
                b'"' => self.value_done(pos + 1),
                b'\\' => self.state = State::InStringEsc,
                0x00..=0x1f => self.fail(invalid(c, "in string literal")),
                _ => {}
            },
            State::InStringEsc => match c {
                b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => {
                    self.state = State::InString
                }
                b'u' => self.state = State::InStringEscU(0),
                _ => self.fail(invalid(c, "in string escape code")),
            },
            State::InStringEscU(n) => {
                if c.is_ascii_hexdigit() {
                    self.state = if n == 3 {
                        State::InString
                    } else {
                        State::InStringEscU(n + 1)
                    };
                } else {
                    self.fail(invalid(c, "in \\u hexadecimal character escape"));
                }
            }
            State::Neg => match c {
                b'0' => self.state = State::Zero,
                b'1'..=b'9' => self.state = State::Int,
                _ => self.fail(invalid(c, "in numeric literal")),
            },
            State::Int if c.is_ascii_digit() => {}
            State::Int | State::Zero => match c {
                b'.' => self.state = State::Dot,
                b'e' | b'E' => self.state = State::Exp,
                _ => self.number_done(c, pos),
            },
            State::Dot => {
                if c.is_ascii_digit() {
                    self.state = State::Frac;
                } else {
                    self.fail(invalid(c, "after decimal point in numeric literal"));
                }
            }
            State::Frac => match c {
                b'0'..=b'9' => {}
                b'e' | b'E' => self.state = State::Exp,
                _ => self.number_done(c, pos),
            },
            State::Exp if c == b'+' || c == b'-' => self.state = State::ExpSign,
            State::Exp | State::ExpSign => {
                if c.is_ascii_digit() {
                    self.state = State::ExpDigits;
                } else {
                    self.fail(invalid(c, "in exponent of numeric literal"));
                }
            }
            State::ExpDigits => {
                if !c.is_ascii_digit() {
                    self.number_done(c, pos);
                }
            }
            State::Literal { word, pos: at } => {
                let want = word.as_bytes()[at];
                if c != want {
                    self.fail(invalid(
                        c,
                        &format!("in literal {word} (expecting {})", quote_char(want)),
                    ));
                } else if at + 1 == word.len() {
                    self.value_done(pos + 1);
                } else {
                    self.state = State::Literal { word, pos: at + 1 };
                }
            }
        }
    }

    fn begin_value(&mut self, c: u8) {
        match c {
            _ if is_space(c) => {}
            b'{' => self.push(c, Frame::ObjectKey, State::BeginStringOrEmpty),
            b'[' => self.push(c, Frame::ArrayValue, State::BeginValueOrEmpty),
            b'"' => self.state = State::InString,
            b'-' => self.state = State::Neg,
            b'0' => self.state = State::Zero,
            b'1'..=b'9' => self.state = State::Int,
            b't' => {
                self.state = State::Literal {
                    word: "true",
                    pos: 1,
                }
            }
            b'f' => {
                self.state = State::Literal {
                    word: "false",
                    pos: 1,
                }
            }
            b'n' => {
                self.state = State::Literal {
                    word: "null",
                    pos: 1,
                }
            }
            _ => self.fail(invalid(c, "looking for beginning of value")),
        }
    }

    fn begin_string(&mut self, c: u8) {
        if is_space(c) {
        } else if c == b'"' {
            self.state = State::InString;
        } else {
            self.fail(invalid(c, "looking for beginning of object key string"));
        }
    }

    /// A number is delimited by the byte at `pos`, which is not part of it.
    fn number_done(&mut self, c: u8, pos: usize) {
        if self.stack.is_empty() {
            self.end = Some(pos);
            self.state = State::EndTop;
            self.step(c, pos);
        } else {
            self.end_value(c, pos);
        }
    }

    fn end_value(&mut self, c: u8, pos: usize) {
        let Some(&frame) = self.stack.last() else {
            self.state = State::EndTop;
            self.step(c, pos);
            return;
        };
        if is_space(c) {
            self.state = State::EndValue;
            return;
        }
        match (frame, c) {
            (Frame::ObjectKey, b':') => {
                if let Some(top) = self.stack.last_mut() {
                    *top = Frame::ObjectValue;
                }
                self.state = State::BeginValue;
            }
            (Frame::ObjectKey, _) => self.fail(invalid(c, "after object key")),
            (Frame::ObjectValue, b',') => {
                if let Some(top) = self.stack.last_mut() {
                    *top = Frame::ObjectKey;
                }
                self.state = State::BeginString;
            }
            (Frame::ObjectValue, b'}') | (Frame::ArrayValue, b']') => self.pop(pos),
            (Frame::ObjectValue, _) => self.fail(invalid(c, "after object key:value pair")),
            (Frame::ArrayValue, b',') => self.state = State::BeginValue,
            (Frame::ArrayValue, _) => self.fail(invalid(c, "after array element")),
        }
    }
}

/// Scans the first JSON value of `input` the way Go's `encoding/json` does.
///
/// Returns the offset just past that value (leading whitespace skipped; trailing whitespace not
/// included), or the exact text Go would give for the input:
///
/// - [`Mode::Unmarshal`] (`json.Unmarshal`): only whitespace may follow the value
///   (`invalid character 'x' after top-level value`); empty/whitespace-only or truncated input
///   is [`UNEXPECTED_END`], except that a truncated number or `true`/`false`/`null` reports the
///   space Go feeds at end of input (`1.` → `invalid character ' ' after decimal point in
///   numeric literal`).
/// - [`Mode::Decoder`] (`json.Decoder.Decode`): bytes after the first value are not looked at;
///   truncated input is [`UNEXPECTED_EOF`] and empty/whitespace-only input is [`EOF`] (which
///   moby handlers map to their own text).
///
/// Invalid UTF-8 is never a syntax error (Go decodes it as U+FFFD).
pub fn check_syntax(input: &[u8], mode: Mode) -> Result<usize, String> {
    let mut sc = Scanner::new();
    for (pos, &c) in input.iter().enumerate() {
        sc.step(c, pos);
        // A Decoder stops at the end of the first value, even when the byte that ended a
        // number would be an error after a top-level value.
        if mode == Mode::Decoder {
            if let Some(end) = sc.end {
                return Ok(end);
            }
        }
        if let Some(err) = sc.err.take() {
            return Err(err);
        }
    }
    if let Some(end) = sc.end {
        return Ok(end);
    }
    // End of input: Go feeds one space, which completes a top-level number.
    sc.step(b' ', input.len());
    if let Some(end) = sc.end {
        return Ok(end);
    }
    match mode {
        Mode::Unmarshal => Err(sc.err.unwrap_or_else(|| UNEXPECTED_END.to_string())),
        Mode::Decoder if input.iter().any(|&c| !is_space(c)) => Err(UNEXPECTED_EOF.to_string()),
        Mode::Decoder => Err(EOF.to_string()),
    }
}

/// Go's name for the kind of a JSON value in `json: cannot unmarshal <kind> into ...`.
///
/// `Value::Null` yields `"null"` only for completeness: Go never reports null as a type error
/// (null into a non-nullable Go type is silently ignored, into a pointer/slice/map/interface it
/// sets nil), so callers must skip nulls rather than build an error from them.
///
/// For a number that is well-formed but does not fit the Go numeric type (a fraction into an
/// integer, an overflow), Go writes the literal too: see [`number_literal_kind`].
pub fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The kind Go reports for a number literal that is valid JSON but does not fit the target
/// numeric type: `number 1.5` (into `int64`), `number 1e100` (into `int`), `number 300` (into
/// `uint8`). `literal` must be the number exactly as written in the input.
pub fn number_literal_kind(literal: &str) -> String {
    format!("number {literal}")
}

/// `json: cannot unmarshal {kind} into Go value of type {go_type}`: the text when the mismatch
/// is not inside a struct field (top-level value, or element of a top-level slice/map).
///
/// `go_type` is Go's `reflect.Type.String()`: `string`, `[]string`, `map[string]string`,
/// `types.PluginPrivileges` (package-qualified for named types).
pub fn unmarshal_type_error(kind: &str, go_type: &str) -> String {
    format!("json: cannot unmarshal {kind} into Go value of type {go_type}")
}

/// `json: cannot unmarshal {kind} into Go struct field {struct_name}.{field path} of type
/// {go_type}`: the text (Go 1.14+) when the mismatch is inside a struct field.
///
/// - `struct_name` is the bare type name (no package) of the innermost struct holding the
///   field: `RestartPolicy`, `VolumeCreateBody`. Fields promoted from an embedded struct count
///   as fields of the outer struct (`ContainerConfigWrapper.Image`).
/// - `field_path` is the JSON keys of the struct fields from the top-level value down to the
///   failing field (the JSON names, i.e. the `json:` tag name or else the Go field name). Map
///   keys and array indices are *not* part of it: `{"EndpointsConfig":{"n":{"IPAMConfig":
///   {"IPv4Address":1}}}}` gives `EndpointIPAMConfig.NetworkingConfig.EndpointsConfig.
///   IPAMConfig.IPv4Address` (one line), and a bad value inside a map field `DriverOpts` names
///   `DriverOpts` with the map's element type.
/// - `go_type` is the type of the Go value being filled (for a map or slice element, the
///   element type).
///
/// Go reports only the first mismatch in document order.
pub fn unmarshal_field_type_error(
    kind: &str,
    struct_name: &str,
    field_path: &[&str],
    go_type: &str,
) -> String {
    format!(
        "json: cannot unmarshal {kind} into Go struct field {struct_name}.{} of type {go_type}",
        field_path.join(".")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(input: &[u8]) -> Result<usize, String> {
        check_syntax(input, Mode::Unmarshal)
    }

    fn d(input: &[u8]) -> Result<usize, String> {
        check_syntax(input, Mode::Decoder)
    }

    /// Both modes give the same error.
    fn both(input: &[u8], want: &str) {
        assert_eq!(u(input), Err(want.to_string()), "Unmarshal {input:?}");
        assert_eq!(d(input), Err(want.to_string()), "Decoder {input:?}");
    }

    #[test]
    fn quote_char_matches_go() {
        // dockerd: each of these as a whole body, `invalid character X looking for beginning of value`.
        let cases: &[(u8, &str)] = &[
            (b'x', "'x'"),
            (b'\'', "'\\''"),
            (b'"', "'\"'"),
            (b'\\', "'\\\\'"),
            (b'}', "'}'"),
            (0x00, "'\\x00'"),
            (0x01, "'\\x01'"),
            (0x07, "'\\a'"),
            (0x08, "'\\b'"),
            (0x0b, "'\\v'"),
            (0x0c, "'\\f'"),
            (0x1f, "'\\x1f'"),
            (0x7f, "'\\x7f'"),
            (0x80, "'\\u0080'"),
            (0x9f, "'\\u009f'"),
            (0xa0, "'\\u00a0'"),
            (0xa1, "'¡'"),
            (0xad, "'\\u00ad'"),
            (0xc3, "'Ã'"),
            (0xe9, "'é'"),
            (0xef, "'ï'"),
            (0xfe, "'þ'"),
            (0xff, "'ÿ'"),
        ];
        for &(c, want) in cases {
            assert_eq!(quote_char(c), want, "byte {c:#04x}");
            if c == b'"' {
                // Starts a string; seen on dockerd as `["a" "b"]` (array_errors).
                continue;
            }
            both(
                &[c],
                &format!("invalid character {want} looking for beginning of value"),
            );
        }
        // Not observed on dockerd, from Go's strconv rules.
        assert_eq!(quote_char(b'\n'), "'\\n'");
        assert_eq!(quote_char(b'\r'), "'\\r'");
        assert_eq!(quote_char(b'\t'), "'\\t'");
        assert_eq!(quote_char(b' '), "' '");
        assert_eq!(quote_char(b'~'), "'~'");
        assert_eq!(quote_char(0xbf), "'¿'");
        assert_eq!(quote_char(0xd7), "'×'");
    }

    #[test]
    fn quoting_like_go() {
        assert_eq!(go_quote("abc"), "\"abc\"");
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\n\t\u{1}\u{7f}"), r#""\n\t\x01\x7f""#);
        assert_eq!(go_quote("é\u{a0}\u{2028}"), r#""é\u00a0\u2028""#);
        assert_eq!(quote_bytes(b"a\xffb"), r#""a\xffb""#);
        // From Go's strconv rules: quoting a single character, `'` and astral code points.
        assert_eq!(go_quote("'"), r#""'""#);
        assert_eq!(
            go_quote("\u{1f600}\u{e000}\u{f0000}"),
            r#""😀\ue000\U000f0000""#
        );
        // A truncated or overlong sequence is quoted byte by byte.
        assert_eq!(quote_bytes(b"\xe2\x82x\xc0\xaf"), r#""\xe2\x82x\xc0\xaf""#);
    }

    #[test]
    fn quote_char_is_quote_bytes_with_single_quotes() {
        // Go's quoteChar is strconv.Quote(string(c)): the byte read as U+00XX.
        for c in 0..=255u8 {
            if c == b'\'' || c == b'"' {
                continue;
            }
            let mut utf8 = [0; 2];
            let quoted = quote_bytes(char::from(c).encode_utf8(&mut utf8).as_bytes());
            assert_eq!(
                quote_char(c),
                format!("'{}'", &quoted[1..quoted.len() - 1]),
                "byte {c:#04x}"
            );
        }
    }

    #[test]
    fn strings_as_go_decodes_them() {
        // Escapes resolved; surrogate pairs joined, lone surrogates and invalid bytes U+FFFD.
        assert_eq!(
            unquote(br"a\/\b\f\n\r\t\\\u00e9\ud83d\ude00"),
            "a/\u{8}\u{c}\n\r\t\\é😀"
        );
        assert_eq!(
            unquote(br"\ud800x\udc00\ud800\u0041"),
            "\u{fffd}x\u{fffd}\u{fffd}A"
        );
        assert_eq!(
            unquote(b"\xc3\xa9\xff\xe2\x82"),
            "é\u{fffd}\u{fffd}\u{fffd}"
        );
        // One U+FFFD per invalid byte (String::from_utf8_lossy would give one for `\xe2\x82`).
        assert_eq!(lossy(b"a\xe2\x82b\xff"), "a\u{fffd}\u{fffd}b\u{fffd}");
        assert_eq!(lossy("é\u{2028}".as_bytes()), "é\u{2028}");
    }

    #[test]
    fn escaping_as_go_encodes() {
        // Go 1.19 json.Marshal: HTML-safe, only \n \r \t short, DEL and `'` `/` kept as they
        // are, U+2028/U+2029 escaped, invalid bytes as \ufffd.
        let mut input = b"a\"b\\c\n\r\t\x01\x08\x0c\x1f<>&'/\x7f".to_vec();
        input.extend_from_slice("é\u{2028}\u{2029}".as_bytes());
        input.extend_from_slice(b"\xff\xe2\x82");
        let mut want = br#"a\"b\\c\n\r\t\u0001\u0008\u000c\u001f\u003c\u003e\u0026'/"#.to_vec();
        want.push(0x7f);
        want.extend_from_slice("é".as_bytes());
        want.extend_from_slice(br"\u2028\u2029\ufffd\ufffd\ufffd");
        assert_eq!(
            String::from_utf8_lossy(&go_escape_json(&input)),
            String::from_utf8_lossy(&want)
        );
    }

    #[test]
    fn beginning_of_value() {
        // dockerd (both modes)
        both(
            b"xx",
            "invalid character 'x' looking for beginning of value",
        );
        both(
            b"'",
            "invalid character '\\'' looking for beginning of value",
        );
        both(b"]", "invalid character ']' looking for beginning of value");
        both(b",", "invalid character ',' looking for beginning of value");
        both(b":", "invalid character ':' looking for beginning of value");
        both(
            b"\\",
            "invalid character '\\\\' looking for beginning of value",
        );
        both(
            b"[1,]",
            "invalid character ']' looking for beginning of value",
        );
        both(
            b"[,]",
            "invalid character ',' looking for beginning of value",
        );
        both(
            b"{\"a\":}",
            "invalid character '}' looking for beginning of value",
        );
        both(
            b"[.5]",
            "invalid character '.' looking for beginning of value",
        );
        both(
            b"[+1]",
            "invalid character '+' looking for beginning of value",
        );
        both(
            b"[Infinity]",
            "invalid character 'I' looking for beginning of value",
        );
        both(
            b"[NaN]",
            "invalid character 'N' looking for beginning of value",
        );
        both(
            b"[True]",
            "invalid character 'T' looking for beginning of value",
        );
        both(
            b"[1,\n2 ,]",
            "invalid character ']' looking for beginning of value",
        );
        // A UTF-8 BOM and non-JSON whitespace are not skipped.
        both(
            b"\xef\xbb\xbf[]",
            "invalid character '\u{ef}' looking for beginning of value",
        );
        both(
            b"\x0b[]",
            "invalid character '\\v' looking for beginning of value",
        );
        both(
            b"\x0c[]",
            "invalid character '\\f' looking for beginning of value",
        );
        both(
            b"\xa0[]",
            "invalid character '\\u00a0' looking for beginning of value",
        );
    }

    #[test]
    fn object_errors() {
        // dockerd (both modes)
        both(
            b"{x",
            "invalid character 'x' looking for beginning of object key string",
        );
        both(
            b"{'a'",
            "invalid character '\\'' looking for beginning of object key string",
        );
        both(
            b"{,}",
            "invalid character ',' looking for beginning of object key string",
        );
        both(
            b"{\"a\":1,}",
            "invalid character '}' looking for beginning of object key string",
        );
        both(b"{\"a\" 1}", "invalid character '1' after object key");
        both(b"{\"a\",", "invalid character ',' after object key");
        both(b"{\"a\"}", "invalid character '}' after object key");
        both(
            b"{\"a\"\n:\n1\n,\n\"b\"\t}",
            "invalid character '}' after object key",
        );
        both(
            b"{\"a\":1 2}",
            "invalid character '2' after object key:value pair",
        );
        both(
            b"{\"a\":1;",
            "invalid character ';' after object key:value pair",
        );
        both(
            b"{\"a\":1]",
            "invalid character ']' after object key:value pair",
        );
    }

    #[test]
    fn array_errors() {
        // dockerd (both modes)
        both(b"[1 2]", "invalid character '2' after array element");
        both(b"[1:2]", "invalid character ':' after array element");
        both(b"[1}", "invalid character '}' after array element");
        both(
            b"[\"a\" \"b\"]",
            "invalid character '\"' after array element",
        );
        both(b"[01]", "invalid character '1' after array element");
        both(b"[-01]", "invalid character '1' after array element");
        both(b"[1.0.0]", "invalid character '.' after array element");
        both(b"[0x10]", "invalid character 'x' after array element");
        both(b"[truex]", "invalid character 'x' after array element");
        both(b"[nullx]", "invalid character 'x' after array element");
    }

    #[test]
    fn string_errors() {
        // dockerd (both modes)
        both(
            b"[\"a\x01\"]",
            "invalid character '\\x01' in string literal",
        );
        both(
            b"[\"a\x00\"]",
            "invalid character '\\x00' in string literal",
        );
        both(b"[\"a\n\"]", "invalid character '\\n' in string literal");
        both(b"[\"a\t\"]", "invalid character '\\t' in string literal");
        both(b"\"\t\"", "invalid character '\\t' in string literal");
        both(
            b"[\"a\x1f\"]",
            "invalid character '\\x1f' in string literal",
        );
        both(b"[\"\\x\"]", "invalid character 'x' in string escape code");
        both(
            b"[\"\\'\"]",
            "invalid character '\\'' in string escape code",
        );
        both(b"[\"\\a\"]", "invalid character 'a' in string escape code");
        both(
            b"[\"\\U0041\"]",
            "invalid character 'U' in string escape code",
        );
        both(
            b"[\"\\\x01\"]",
            "invalid character '\\x01' in string escape code",
        );
        both(
            b"[\"\\\xc3\xa9\"]",
            "invalid character 'Ã' in string escape code",
        );
        both(
            b"[\"\\u00g0\"]",
            "invalid character 'g' in \\u hexadecimal character escape",
        );
        both(
            b"[\"\\uZ\"]",
            "invalid character 'Z' in \\u hexadecimal character escape",
        );
        both(
            b"[\"\\u1Z\"]",
            "invalid character 'Z' in \\u hexadecimal character escape",
        );
        both(
            b"[\"\\u12Z\"]",
            "invalid character 'Z' in \\u hexadecimal character escape",
        );
        both(
            b"[\"\\u123Z\"]",
            "invalid character 'Z' in \\u hexadecimal character escape",
        );
        both(
            b"[\"\\u\"\"]",
            "invalid character '\"' in \\u hexadecimal character escape",
        );
        both(
            b"\"\\u12\"",
            "invalid character '\"' in \\u hexadecimal character escape",
        );
        // dockerd: DEL, bytes >= 0x80 and invalid UTF-8 are accepted inside strings.
        assert_eq!(d(b"[\"a\x7f\"]"), Ok(6));
        assert_eq!(d(b"[\"\xff\"]"), Ok(5));
        assert_eq!(d(b"[\"\xed\xa0\x80\"]"), Ok(7));
        assert_eq!(u(b"\"\xff\""), Ok(3));
        // dockerd: every escape Go accepts.
        assert_eq!(d(b"[\"\\/\\b\\f\\n\\r\\t\\\\\\\"\\u00aF\"]"), Ok(26));
    }

    #[test]
    fn literal_errors() {
        // dockerd (both modes)
        both(
            b"[tx]",
            "invalid character 'x' in literal true (expecting 'r')",
        );
        both(
            b"[trx]",
            "invalid character 'x' in literal true (expecting 'u')",
        );
        both(
            b"[trux]",
            "invalid character 'x' in literal true (expecting 'e')",
        );
        both(
            b"[trUe]",
            "invalid character 'U' in literal true (expecting 'u')",
        );
        both(
            b"[fx]",
            "invalid character 'x' in literal false (expecting 'a')",
        );
        both(
            b"[fax]",
            "invalid character 'x' in literal false (expecting 'l')",
        );
        both(
            b"[falx]",
            "invalid character 'x' in literal false (expecting 's')",
        );
        both(
            b"[falsx]",
            "invalid character 'x' in literal false (expecting 'e')",
        );
        both(
            b"[nx]",
            "invalid character 'x' in literal null (expecting 'u')",
        );
        both(
            b"nope",
            "invalid character 'o' in literal null (expecting 'u')",
        );
        both(
            b"[nux]",
            "invalid character 'x' in literal null (expecting 'l')",
        );
        both(
            b"[nulx]",
            "invalid character 'x' in literal null (expecting 'l')",
        );
        both(
            b"nul l",
            "invalid character ' ' in literal null (expecting 'l')",
        );
    }

    #[test]
    fn number_errors() {
        // dockerd (both modes)
        both(b"[-]", "invalid character ']' in numeric literal");
        both(b"[-x]", "invalid character 'x' in numeric literal");
        both(b"- 1", "invalid character ' ' in numeric literal");
        both(
            b"[1.]",
            "invalid character ']' after decimal point in numeric literal",
        );
        both(
            b"[1.x]",
            "invalid character 'x' after decimal point in numeric literal",
        );
        both(
            b"[1e]",
            "invalid character ']' in exponent of numeric literal",
        );
        both(
            b"[1e+]",
            "invalid character ']' in exponent of numeric literal",
        );
        both(
            b"[1e+x]",
            "invalid character 'x' in exponent of numeric literal",
        );
        both(
            b"[1E-x]",
            "invalid character 'x' in exponent of numeric literal",
        );
        both(
            b"[1.5ex]",
            "invalid character 'x' in exponent of numeric literal",
        );
        both(
            b"[1ee]",
            "invalid character 'e' in exponent of numeric literal",
        );
        // dockerd: valid numbers.
        assert_eq!(d(b"-0"), Ok(2));
        assert_eq!(u(b"-0.5e-10"), Ok(8));
        assert_eq!(u(b"1E+2"), Ok(4));
    }

    #[test]
    fn truncated_input() {
        // dockerd: Decoder says `unexpected EOF` for every truncated value; Unmarshal says
        // `unexpected end of JSON input` unless the trailing synthetic space is itself invalid.
        let cases: &[(&[u8], &str)] = &[
            (b"[\"DEBUG=1\"", UNEXPECTED_END),
            (b"[\"DEBUG", UNEXPECTED_END),
            (b"\"", UNEXPECTED_END),
            (b"\"abc", UNEXPECTED_END),
            (b"[", UNEXPECTED_END),
            (b"{", UNEXPECTED_END),
            (b"{\"a\"", UNEXPECTED_END),
            (b"{\"a\":", UNEXPECTED_END),
            (b"{\"a\":1", UNEXPECTED_END),
            (b"[1,", UNEXPECTED_END),
            (b"\"\\", "invalid character ' ' in string escape code"),
            (
                b"\"\\u12",
                "invalid character ' ' in \\u hexadecimal character escape",
            ),
            (b"-", "invalid character ' ' in numeric literal"),
            (b"[-", "invalid character ' ' in numeric literal"),
            (
                b"1.",
                "invalid character ' ' after decimal point in numeric literal",
            ),
            (
                b"[1.",
                "invalid character ' ' after decimal point in numeric literal",
            ),
            (
                b"1e",
                "invalid character ' ' in exponent of numeric literal",
            ),
            (
                b"[1e",
                "invalid character ' ' in exponent of numeric literal",
            ),
            (
                b"1e+",
                "invalid character ' ' in exponent of numeric literal",
            ),
            (
                b"t",
                "invalid character ' ' in literal true (expecting 'r')",
            ),
            (
                b"tr",
                "invalid character ' ' in literal true (expecting 'u')",
            ),
            (
                b"tru",
                "invalid character ' ' in literal true (expecting 'e')",
            ),
            (
                b"[tru",
                "invalid character ' ' in literal true (expecting 'e')",
            ),
            (
                b"f",
                "invalid character ' ' in literal false (expecting 'a')",
            ),
            (
                b"fals",
                "invalid character ' ' in literal false (expecting 'e')",
            ),
            (
                b"n",
                "invalid character ' ' in literal null (expecting 'u')",
            ),
            (
                b"nul",
                "invalid character ' ' in literal null (expecting 'l')",
            ),
        ];
        for &(input, unmarshal) in cases {
            assert_eq!(u(input), Err(unmarshal.to_string()), "Unmarshal {input:?}");
            assert_eq!(
                d(input),
                Err(UNEXPECTED_EOF.to_string()),
                "Decoder {input:?}"
            );
        }
    }

    #[test]
    fn empty_input() {
        // dockerd (Unmarshal via filters); the Decoder's io.EOF is mapped by moby's handler to
        // `got EOF while reading request body`, so "EOF" itself is from Go's documentation.
        for input in [&b""[..], b"   ", b"\t\n", b"\r"] {
            assert_eq!(u(input), Err(UNEXPECTED_END.to_string()), "{input:?}");
            assert_eq!(d(input), Err(EOF.to_string()), "{input:?}");
        }
    }

    #[test]
    fn after_top_level_value() {
        // dockerd: Unmarshal rejects trailing data; the Decoder reads the first value only
        // (these reached the type check there: number, bool, string, object, array).
        let cases: &[(&[u8], &str, usize)] = &[
            (b"{} x", "invalid character 'x' after top-level value", 2),
            (b"1x", "invalid character 'x' after top-level value", 1),
            (b"truex", "invalid character 'x' after top-level value", 4),
            (b"0123", "invalid character '1' after top-level value", 1),
            (b"\"s\"x", "invalid character 'x' after top-level value", 3),
            (b"{}x", "invalid character 'x' after top-level value", 2),
            (b"[1]x", "invalid character 'x' after top-level value", 3),
            (b"1 2", "invalid character '2' after top-level value", 1),
            (b"[] []", "invalid character '[' after top-level value", 2),
            (
                b"{\"a\":1}{",
                "invalid character '{' after top-level value",
                7,
            ),
            (
                b"\"a\"\"b\"",
                "invalid character '\"' after top-level value",
                3,
            ),
            (
                b"[1] \x0b",
                "invalid character '\\v' after top-level value",
                3,
            ),
            (
                b"\"a\"  \xa0",
                "invalid character '\\u00a0' after top-level value",
                3,
            ),
        ];
        for &(input, want, end) in cases {
            assert_eq!(u(input), Err(want.to_string()), "Unmarshal {input:?}");
            assert_eq!(d(input), Ok(end), "Decoder {input:?}");
        }
    }

    #[test]
    fn valid_values_and_offsets() {
        // dockerd: accepted by both (then failed only the type check).
        assert_eq!(u(b"  \t\r\n[1]"), Ok(8));
        assert_eq!(d(b"  \t\r\n[1]"), Ok(8));
        assert_eq!(u(b"[1] "), Ok(3));
        assert_eq!(u(b"[1]\t\r\n"), Ok(3));
        assert_eq!(u(b"{\"a\":1}"), Ok(7));
        assert_eq!(u(b"true"), Ok(4));
        assert_eq!(d(b"null"), Ok(4));
        assert_eq!(d(b"[\"DEBUG=1\"]"), Ok(11));
        // Not sent to dockerd (would succeed and change state) but follow the same grammar.
        assert_eq!(u(b"{\"a\":[1,{\"b\":null}],\"c\":\"d\"}"), Ok(28));
        assert_eq!(d(b"{}{}"), Ok(2));
        assert_eq!(d(b"12 "), Ok(2));
        assert_eq!(u(b"12"), Ok(2));
        assert_eq!(d(b"[]"), Ok(2));
        assert_eq!(u(b"{ }"), Ok(3));
        assert_eq!(u(b"[ ]"), Ok(3));
        assert_eq!(u(b"false"), Ok(5));
    }

    #[test]
    fn max_depth() {
        // dockerd: 10000 levels are fine, the 10001st `[`/`{` is rejected in both modes.
        let open = vec![b'['; MAX_DEPTH];
        assert_eq!(u(&open), Err(UNEXPECTED_END.to_string()));
        assert_eq!(d(&open), Err(UNEXPECTED_EOF.to_string()));
        let mut closed = open.clone();
        closed.extend(vec![b']'; MAX_DEPTH]);
        assert_eq!(u(&closed), Ok(2 * MAX_DEPTH));
        assert_eq!(d(&closed), Ok(2 * MAX_DEPTH));
        let mut mixed = vec![b'['; MAX_DEPTH - 1];
        mixed.push(b'{');
        assert_eq!(d(&mixed), Err(UNEXPECTED_EOF.to_string()));
        let mut too_deep = vec![b'['; MAX_DEPTH + 1];
        both(&too_deep, "invalid character '[' exceeded max depth");
        too_deep.extend(vec![b']'; MAX_DEPTH + 1]);
        both(&too_deep, "invalid character '[' exceeded max depth");
        let mut objects = b"{\"a\":".repeat(MAX_DEPTH);
        objects.push(b'{');
        both(&objects, "invalid character '{' exceeded max depth");
    }

    #[test]
    fn kinds() {
        let v: Value = serde_json::json!(["s", 1, 1.5, {}, [], true, false, null]);
        let names: Vec<&str> = v.as_array().unwrap().iter().map(kind_name).collect();
        assert_eq!(
            names,
            ["string", "number", "number", "object", "array", "bool", "bool", "null"]
        );
        assert_eq!(number_literal_kind("1e100"), "number 1e100");
    }

    #[test]
    fn type_errors() {
        // dockerd: POST /plugins/{name}/set decodes into []string.
        assert_eq!(
            unmarshal_type_error("number", "string"),
            "json: cannot unmarshal number into Go value of type string"
        );
        assert_eq!(
            unmarshal_type_error("bool", "[]string"),
            "json: cannot unmarshal bool into Go value of type []string"
        );
        assert_eq!(
            unmarshal_type_error("object", "[]string"),
            "json: cannot unmarshal object into Go value of type []string"
        );
        // dockerd: GET /plugins?filters= (map[string]map[string]bool).
        assert_eq!(
            unmarshal_type_error("array", "map[string]map[string]bool"),
            "json: cannot unmarshal array into Go value of type map[string]map[string]bool"
        );
        // dockerd: POST /plugins/pull body `{"Value":[1]}` (after its `failed to parse privileges: ` prefix).
        assert_eq!(
            unmarshal_type_error("object", "types.PluginPrivileges"),
            "json: cannot unmarshal object into Go value of type types.PluginPrivileges"
        );
    }

    #[test]
    fn field_type_errors() {
        // dockerd: POST /volumes/create `{"Name":1}`.
        assert_eq!(
            unmarshal_field_type_error("number", "VolumeCreateBody", &["Name"], "string"),
            "json: cannot unmarshal number into Go struct field VolumeCreateBody.Name of type string"
        );
        // dockerd: `{"DriverOpts":{"a":1}}`: map key not in the path, element type reported.
        assert_eq!(
            unmarshal_field_type_error("number", "VolumeCreateBody", &["DriverOpts"], "string"),
            "json: cannot unmarshal number into Go struct field VolumeCreateBody.DriverOpts of type string"
        );
        // dockerd: `{"DriverOpts":[1]}`.
        assert_eq!(
            unmarshal_field_type_error(
                "array",
                "VolumeCreateBody",
                &["DriverOpts"],
                "map[string]string"
            ),
            "json: cannot unmarshal array into Go struct field VolumeCreateBody.DriverOpts of type map[string]string"
        );
        // dockerd: POST /plugins/pull `[{"Name":1}]`: slice index not in the path.
        assert_eq!(
            unmarshal_field_type_error("number", "PluginPrivilege", &["Name"], "string"),
            "json: cannot unmarshal number into Go struct field PluginPrivilege.Name of type string"
        );
        // dockerd: POST /containers/create `{"HostConfig":{"RestartPolicy":{"Name":1}}}`:
        // innermost struct name, full path of JSON field names.
        assert_eq!(
            unmarshal_field_type_error(
                "number",
                "RestartPolicy",
                &["HostConfig", "RestartPolicy", "Name"],
                "string"
            ),
            "json: cannot unmarshal number into Go struct field RestartPolicy.HostConfig.RestartPolicy.Name of type string"
        );
        // dockerd: `{"HostConfig":{"RestartPolicy":{"MaximumRetryCount":1e100}}}`.
        assert_eq!(
            unmarshal_field_type_error(
                &number_literal_kind("1e100"),
                "RestartPolicy",
                &["HostConfig", "RestartPolicy", "MaximumRetryCount"],
                "int"
            ),
            "json: cannot unmarshal number 1e100 into Go struct field RestartPolicy.HostConfig.RestartPolicy.MaximumRetryCount of type int"
        );
        // dockerd: `{"HostConfig":{"Memory":1.5}}`.
        assert_eq!(
            unmarshal_field_type_error(
                &number_literal_kind("1.5"),
                "HostConfig",
                &["HostConfig", "Memory"],
                "int64"
            ),
            "json: cannot unmarshal number 1.5 into Go struct field HostConfig.HostConfig.Memory of type int64"
        );
        // dockerd: `{"Image":1}`: field promoted from an embedded struct.
        assert_eq!(
            unmarshal_field_type_error("number", "ContainerConfigWrapper", &["Image"], "string"),
            "json: cannot unmarshal number into Go struct field ContainerConfigWrapper.Image of type string"
        );
        // dockerd: `{"NetworkingConfig":{"EndpointsConfig":{"n":{"IPAMConfig":{"IPv4Address":1}}}}}`.
        assert_eq!(
            unmarshal_field_type_error(
                "number",
                "EndpointIPAMConfig",
                &["NetworkingConfig", "EndpointsConfig", "IPAMConfig", "IPv4Address"],
                "string"
            ),
            "json: cannot unmarshal number into Go struct field EndpointIPAMConfig.NetworkingConfig.EndpointsConfig.IPAMConfig.IPv4Address of type string"
        );
    }
}
