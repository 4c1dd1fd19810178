//! Go's JSON scanner (`encoding/json/scanner.go`): the syntax of the first value in the
//! input, with Go's error texts, in both of Go's reading styles.

use super::{quote_char, JsonError};

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
pub fn check_syntax(input: &[u8], mode: Mode) -> Result<usize, JsonError> {
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
            return Err(JsonError::Syntax(err));
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
        Mode::Unmarshal => Err(JsonError::Syntax(
            sc.err.unwrap_or_else(|| UNEXPECTED_END.to_string()),
        )),
        Mode::Decoder if input.iter().any(|&c| !is_space(c)) => {
            Err(JsonError::Syntax(UNEXPECTED_EOF.to_string()))
        }
        Mode::Decoder => Err(JsonError::Syntax(EOF.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(input: &[u8]) -> Result<usize, String> {
        check_syntax(input, Mode::Unmarshal).map_err(|e| e.to_string())
    }

    fn d(input: &[u8]) -> Result<usize, String> {
        check_syntax(input, Mode::Decoder).map_err(|e| e.to_string())
    }

    /// Both modes give the same error.
    fn both(input: &[u8], want: &str) {
        assert_eq!(u(input), Err(want.to_string()), "Unmarshal {input:?}");
        assert_eq!(d(input), Err(want.to_string()), "Decoder {input:?}");
    }

    /// Both modes report `invalid character <quoted> <context>` for each input, `quoted` being
    /// the offending byte as Go quotes it.
    fn each_invalid(context: &str, cases: &[(&[u8], &str)]) {
        for (input, quoted) in cases {
            both(input, &format!("invalid character {quoted} {context}"));
        }
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
    fn beginning_of_value() {
        // dockerd (both modes)
        each_invalid(
            "looking for beginning of value",
            &[
                (b"xx", "'x'"),
                (b"'", "'\\''"),
                (b"]", "']'"),
                (b",", "','"),
                (b":", "':'"),
                (b"\\", "'\\\\'"),
                (b"[1,]", "']'"),
                (b"[,]", "','"),
                (b"{\"a\":}", "'}'"),
                (b"[.5]", "'.'"),
                (b"[+1]", "'+'"),
                (b"[Infinity]", "'I'"),
                (b"[NaN]", "'N'"),
                (b"[True]", "'T'"),
                (b"[1,\n2 ,]", "']'"),
            ],
        );
        // A UTF-8 BOM and non-JSON whitespace are not skipped.
        each_invalid(
            "looking for beginning of value",
            &[
                (b"\xef\xbb\xbf[]", "'\u{ef}'"),
                (b"\x0b[]", "'\\v'"),
                (b"\x0c[]", "'\\f'"),
                (b"\xa0[]", "'\\u00a0'"),
            ],
        );
    }

    #[test]
    fn object_errors() {
        // dockerd (both modes)
        each_invalid(
            "looking for beginning of object key string",
            &[
                (b"{x", "'x'"),
                (b"{'a'", "'\\''"),
                (b"{,}", "','"),
                (b"{\"a\":1,}", "'}'"),
            ],
        );
        each_invalid(
            "after object key",
            &[
                (b"{\"a\" 1}", "'1'"),
                (b"{\"a\",", "','"),
                (b"{\"a\"}", "'}'"),
                (b"{\"a\"\n:\n1\n,\n\"b\"\t}", "'}'"),
            ],
        );
        each_invalid(
            "after object key:value pair",
            &[
                (b"{\"a\":1 2}", "'2'"),
                (b"{\"a\":1;", "';'"),
                (b"{\"a\":1]", "']'"),
            ],
        );
    }

    #[test]
    fn array_errors() {
        // dockerd (both modes)
        each_invalid(
            "after array element",
            &[
                (b"[1 2]", "'2'"),
                (b"[1:2]", "':'"),
                (b"[1}", "'}'"),
                (b"[\"a\" \"b\"]", "'\"'"),
                (b"[01]", "'1'"),
                (b"[-01]", "'1'"),
                (b"[1.0.0]", "'.'"),
                (b"[0x10]", "'x'"),
                (b"[truex]", "'x'"),
                (b"[nullx]", "'x'"),
            ],
        );
    }

    #[test]
    fn string_errors() {
        // dockerd (both modes)
        each_invalid(
            "in string literal",
            &[
                (b"[\"a\x01\"]", "'\\x01'"),
                (b"[\"a\x00\"]", "'\\x00'"),
                (b"[\"a\n\"]", "'\\n'"),
                (b"[\"a\t\"]", "'\\t'"),
                (b"\"\t\"", "'\\t'"),
                (b"[\"a\x1f\"]", "'\\x1f'"),
            ],
        );
        each_invalid(
            "in string escape code",
            &[
                (b"[\"\\x\"]", "'x'"),
                (b"[\"\\'\"]", "'\\''"),
                (b"[\"\\a\"]", "'a'"),
                (b"[\"\\U0041\"]", "'U'"),
                (b"[\"\\\x01\"]", "'\\x01'"),
                (b"[\"\\\xc3\xa9\"]", "'Ã'"),
            ],
        );
        each_invalid(
            "in \\u hexadecimal character escape",
            &[
                (b"[\"\\u00g0\"]", "'g'"),
                (b"[\"\\uZ\"]", "'Z'"),
                (b"[\"\\u1Z\"]", "'Z'"),
                (b"[\"\\u12Z\"]", "'Z'"),
                (b"[\"\\u123Z\"]", "'Z'"),
                (b"[\"\\u\"\"]", "'\"'"),
                (b"\"\\u12\"", "'\"'"),
            ],
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
        each_invalid("in literal true (expecting 'r')", &[(b"[tx]", "'x'")]);
        each_invalid("in literal true (expecting 'u')", &[(b"[trx]", "'x'")]);
        each_invalid("in literal true (expecting 'e')", &[(b"[trux]", "'x'")]);
        each_invalid("in literal true (expecting 'u')", &[(b"[trUe]", "'U'")]);
        each_invalid("in literal false (expecting 'a')", &[(b"[fx]", "'x'")]);
        each_invalid("in literal false (expecting 'l')", &[(b"[fax]", "'x'")]);
        each_invalid("in literal false (expecting 's')", &[(b"[falx]", "'x'")]);
        each_invalid("in literal false (expecting 'e')", &[(b"[falsx]", "'x'")]);
        each_invalid(
            "in literal null (expecting 'u')",
            &[(b"[nx]", "'x'"), (b"nope", "'o'")],
        );
        each_invalid(
            "in literal null (expecting 'l')",
            &[(b"[nux]", "'x'"), (b"[nulx]", "'x'"), (b"nul l", "' '")],
        );
    }

    #[test]
    fn number_errors() {
        // dockerd (both modes)
        each_invalid(
            "in numeric literal",
            &[(b"[-]", "']'"), (b"[-x]", "'x'"), (b"- 1", "' '")],
        );
        each_invalid(
            "after decimal point in numeric literal",
            &[(b"[1.]", "']'"), (b"[1.x]", "'x'")],
        );
        each_invalid(
            "in exponent of numeric literal",
            &[
                (b"[1e]", "']'"),
                (b"[1e+]", "']'"),
                (b"[1e+x]", "'x'"),
                (b"[1E-x]", "'x'"),
                (b"[1.5ex]", "'x'"),
                (b"[1ee]", "'e'"),
            ],
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
}
