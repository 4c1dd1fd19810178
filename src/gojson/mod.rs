//! Go `encoding/json` error texts and string handling, reproduced byte for byte.
//!
//! The stock `docker` CLI prints the daemon's error message verbatim, and moby hands the errors
//! of Go's `encoding/json` straight back to the client. This module reproduces those texts:
//!
//! - [`check_syntax`] ([`scanner`]) scans the first JSON value the way Go's scanner does and
//!   reports the first syntax error exactly as Go words it, in either of Go's two reading
//!   styles ([`Mode::Unmarshal`] for `json.Unmarshal`, [`Mode::Decoder`] for
//!   `json.NewDecoder(r).Decode`).
//! - [`decode`] walks a syntax-checked value into Go-shaped Rust values the way Go's decoder
//!   fills a Go struct: keys matched case-insensitively, unknown keys skipped, `null` leaving
//!   values alone, type mismatches reported (the first one) with Go's struct-field path. Every
//!   Go-JSON request body and the plugin config are decoded with it.
//! - [`kind_name`], [`unmarshal_type_error`] and [`unmarshal_field_type_error`] build Go's
//!   `*json.UnmarshalTypeError` texts for a well-formed value of the wrong shape.
//! - [`quote_char`], [`quote_bytes`] and [`go_quote`] quote like Go's scanner and `%q`;
//!   [`unquote`], [`lossy`] and [`go_escape_json`] turn raw bytes into strings and back the
//!   way Go's decoder and encoder do.
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

pub mod decode;
pub mod scanner;

pub use scanner::{check_syntax, is_space, Mode, EOF, MAX_DEPTH, UNEXPECTED_END, UNEXPECTED_EOF};

/// What Go's `encoding/json` reports, worded as Go words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// `invalid character ...`, `unexpected end of JSON input`, `unexpected EOF`, or `EOF` for
    /// no value at all (see [`check_syntax`]).
    #[error("{0}")]
    Syntax(String),
    /// `json: cannot unmarshal ...`: Go's `*json.UnmarshalTypeError` (see
    /// [`unmarshal_type_error`], [`unmarshal_field_type_error`]).
    #[error("{0}")]
    Type(String),
    /// The error of a type's own `UnmarshalJSON` method, which ends decoding at once.
    #[error("{0}")]
    Unmarshaler(String),
}

/// A malformed request body: 400, with Go's text as the message.
impl From<JsonError> for crate::error::Error {
    fn from(e: JsonError) -> Self {
        crate::error::Error::InvalidParameter(e.to_string())
    }
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
        i += push_rune(&mut out, &b[i..]);
    }
    out
}

/// Appends the code point `b` starts with, or U+FFFD for an invalid byte (Go's decoding of
/// bad UTF-8); returns how many bytes it took.
fn push_rune(out: &mut String, b: &[u8]) -> usize {
    match decode_rune(b) {
        Some((r, n)) => {
            out.push(r);
            n
        }
        None => {
            out.push('\u{FFFD}');
            1
        }
    }
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
        i += push_rune(&mut out, &b[i..]);
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
