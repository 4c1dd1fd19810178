//! Go 1.19 `encoding/json` decoding into Go-shaped Rust values.
//!
//! The structure mirrors Go's: the input is first validated by [`check_syntax`] (so syntax
//! errors carry Go's texts), then a [`Decoder`] walks the valid bytes into values that behave
//! like the Go ones they stand for: [`GoSlice`] keeps Go's length/capacity behaviour (a later
//! duplicate key decodes over what an earlier one left in the backing array), [`GoPtr`] is a
//! pointer, [`GoMap`] a `map[string]T`, and `go_struct!`
//! declares a struct whose fields are matched by their JSON names the way Go matches them
//! (exactly first, then case-insensitively with Go's folding). Type mismatches are remembered
//! (the first one wins, decoding goes on) while errors from `UnmarshalJSON` methods end it at
//! once. Values under unknown keys are skipped without recursion, so nesting depth is only
//! limited by the scanner's [`MAX_DEPTH`](super::MAX_DEPTH) (Go's `maxNestingDepth`).

use std::collections::BTreeMap;

use super::{check_syntax, is_space, JsonError, Mode};

/// The kind of the next JSON value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

impl Kind {
    /// `UnmarshalTypeError.Value` for this kind.
    pub fn go_name(self) -> &'static str {
        match self {
            Kind::Object => "object",
            Kind::Array => "array",
            Kind::String => "string",
            Kind::Number => "number",
            Kind::Bool => "bool",
            Kind::Null => "null",
        }
    }
}

/// What [`Decoder::expect`] found next.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Next {
    /// A value of the wanted kind, left to read.
    Value,
    /// `null`, skipped: Go leaves a scalar or struct alone and makes a pointer, slice or map
    /// nil.
    Null,
    /// A value of another kind, skipped; the mismatch is remembered as Go's type error.
    Mismatch,
}

/// Walks input already accepted by [`check_syntax`].
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    /// First type mismatch (Go's `savedError`).
    saved: Option<String>,
    /// Go's `errorContext`: innermost struct name and the JSON field names on the path.
    ctx_struct: Option<&'static str>,
    ctx_fields: Vec<&'static str>,
}

impl<'a> Decoder<'a> {
    fn new(data: &'a [u8]) -> Decoder<'a> {
        Decoder {
            data,
            pos: 0,
            saved: None,
            ctx_struct: None,
            ctx_fields: Vec::new(),
        }
    }

    fn skip_ws(&mut self) {
        while self.pos < self.data.len() && is_space(self.data[self.pos]) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> u8 {
        self.skip_ws();
        self.data.get(self.pos).copied().unwrap_or(b' ')
    }

    /// The kind of the next value.
    pub fn kind(&mut self) -> Kind {
        match self.peek() {
            b'{' => Kind::Object,
            b'[' => Kind::Array,
            b'"' => Kind::String,
            b't' | b'f' => Kind::Bool,
            b'n' => Kind::Null,
            _ => Kind::Number,
        }
    }

    /// Consumes `c` if it is next (after whitespace).
    pub fn eat(&mut self, c: u8) -> bool {
        if self.peek() == c {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Skips a string token whose opening quote is at `pos`; returns the inner bytes' range.
    fn string_token(&mut self) -> (usize, usize) {
        let start = self.pos + 1;
        let mut i = start;
        while i < self.data.len() {
            match self.data[i] {
                b'\\' => i += 2,
                b'"' => break,
                _ => i += 1,
            }
        }
        let end = i.min(self.data.len());
        self.pos = (end + 1).min(self.data.len());
        (start, end)
    }

    /// Skips a number or literal token.
    fn scalar_token(&mut self) -> &'a [u8] {
        let start = self.pos;
        while self.pos < self.data.len()
            && matches!(self.data[self.pos], b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'.' | b'+' | b'-')
        {
            self.pos += 1;
        }
        &self.data[start..self.pos]
    }

    /// Skips one value of any shape without recursion; returns its raw bytes.
    pub fn skip_value(&mut self) -> &'a [u8] {
        self.skip_ws();
        let start = self.pos;
        let mut depth = 0usize;
        loop {
            self.skip_ws();
            let Some(&c) = self.data.get(self.pos) else {
                break;
            };
            match c {
                b'{' | b'[' => {
                    depth += 1;
                    self.pos += 1;
                }
                b'}' | b']' => {
                    depth = depth.saturating_sub(1);
                    self.pos += 1;
                }
                b',' | b':' => self.pos += 1,
                b'"' => {
                    self.string_token();
                }
                _ => {
                    if self.scalar_token().is_empty() {
                        self.pos += 1; // not reachable on valid input
                    }
                }
            }
            if depth == 0 {
                break;
            }
        }
        &self.data[start..self.pos]
    }

    /// Skips the next value like [`Decoder::skip_value`] and also returns the input from that
    /// value's first byte to the end of the document, for `UnmarshalJSON` methods that (like
    /// moby's `PluginInterfaceType`) read past their own value.
    pub fn skip_value_and_rest(&mut self) -> (&'a [u8], &'a [u8]) {
        self.skip_ws();
        let rest = &self.data[self.pos..];
        (self.skip_value(), rest)
    }

    /// Reads a string token and unquotes it as Go does.
    pub fn read_string(&mut self) -> String {
        self.skip_ws();
        let (s, e) = self.string_token();
        super::unquote(&self.data[s..e])
    }

    /// Go `saveError` with `addErrorContext` for a mismatched value; skips the value.
    pub fn mismatch(&mut self, value: &str, go_type: &str) {
        self.skip_value();
        self.mismatch_described(value, go_type);
    }

    /// [`Decoder::mismatch`] for a value already consumed (`value` is Go's description of it,
    /// such as `number -1`).
    pub fn mismatch_described(&mut self, value: &str, go_type: &str) {
        if self.saved.is_some() {
            return;
        }
        self.saved = Some(match self.ctx_struct {
            Some(st) => super::unmarshal_field_type_error(value, st, &self.ctx_fields, go_type),
            None => super::unmarshal_type_error(value, go_type),
        });
    }

    /// Go's handling of the next value for a target that takes values of kind `want`
    /// (`go_type` names the target in a type error).
    pub fn expect(&mut self, want: Kind, go_type: &str) -> Next {
        match self.kind() {
            k if k == want => Next::Value,
            Kind::Null => {
                self.skip_value();
                Next::Null
            }
            k => {
                self.mismatch(k.go_name(), go_type);
                Next::Mismatch
            }
        }
    }

    /// Decodes the members of an object into a struct; `field` is called with the index of
    /// the matching field name (exact match first, then Go's case folding).
    pub fn object(
        &mut self,
        struct_name: &'static str,
        names: &[&'static str],
        mut field: impl FnMut(&mut Decoder<'a>, usize) -> Result<(), JsonError>,
    ) -> Result<(), JsonError> {
        self.eat(b'{');
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            let key = self.read_string();
            self.eat(b':');
            let idx = names
                .iter()
                .position(|n| *n == key)
                .or_else(|| names.iter().position(|n| fold_eq(n, &key)));
            match idx {
                Some(i) => {
                    let (old_struct, old_len) = (self.ctx_struct, self.ctx_fields.len());
                    self.ctx_struct = Some(struct_name);
                    self.ctx_fields.push(names[i]);
                    let r = field(self, i);
                    self.ctx_fields.truncate(old_len);
                    self.ctx_struct = old_struct;
                    r?;
                }
                None => {
                    self.skip_value();
                }
            }
            if self.eat(b',') {
                continue;
            }
            self.eat(b'}');
            return Ok(());
        }
    }
}

/// Go's key matching for a field name (all ASCII): ASCII case folding, plus `ſ` (U+017F)
/// folding to `s` and the Kelvin sign (U+212A) to `k`.
fn fold_eq(name: &str, key: &str) -> bool {
    let mut k = key.chars();
    for n in name.chars() {
        let Some(c) = k.next() else {
            return false;
        };
        let c = match c {
            '\u{017F}' => 's',
            '\u{212A}' => 'k',
            c => c,
        };
        if !c.eq_ignore_ascii_case(&n) {
            return false;
        }
    }
    k.next().is_none()
}

/// A Rust value that decodes as the Go value it stands for.
pub trait GoDecode: Default + Clone {
    /// Go's `reflect.Type.String()` of the target, as printed in `UnmarshalTypeError`.
    fn go_type() -> String;
    fn decode(&mut self, d: &mut Decoder<'_>) -> Result<(), JsonError>;
}

/// `json.Unmarshal(data, &value)`: the whole input is one value.
pub fn unmarshal<T: GoDecode>(data: &[u8]) -> Result<T, JsonError> {
    check_syntax(data, Mode::Unmarshal)?;
    decode_valid(data)
}

/// `json.NewDecoder(r).Decode(&value)`: the first value; returns it and where it ended.
pub fn decode_first<T: GoDecode>(data: &[u8]) -> Result<(T, usize), JsonError> {
    let end = check_syntax(data, Mode::Decoder)?;
    Ok((decode_valid(&data[..end])?, end))
}

/// Decodes one value [`check_syntax`] accepted (a request body already read that way).
pub fn decode_valid<T: GoDecode>(data: &[u8]) -> Result<T, JsonError> {
    let mut d = Decoder::new(data);
    let mut value = T::default();
    value.decode(&mut d)?;
    match d.saved {
        Some(e) => Err(JsonError::Type(e)),
        None => Ok(value),
    }
}

impl GoDecode for String {
    fn go_type() -> String {
        "string".into()
    }
    fn decode(&mut self, d: &mut Decoder<'_>) -> Result<(), JsonError> {
        if d.expect(Kind::String, "string") == Next::Value {
            *self = d.read_string();
        }
        Ok(())
    }
}

impl GoDecode for bool {
    fn go_type() -> String {
        "bool".into()
    }
    fn decode(&mut self, d: &mut Decoder<'_>) -> Result<(), JsonError> {
        if d.expect(Kind::Bool, "bool") == Next::Value {
            *self = d.skip_value() == b"true";
        }
        Ok(())
    }
}

impl GoDecode for u32 {
    fn go_type() -> String {
        "uint32".into()
    }
    fn decode(&mut self, d: &mut Decoder<'_>) -> Result<(), JsonError> {
        if d.expect(Kind::Number, "uint32") != Next::Value {
            return Ok(());
        }
        let lit = d.skip_value();
        // strconv.ParseUint(lit, 10, 64) then an overflow check against uint32.
        let parsed = std::str::from_utf8(lit)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .and_then(|n| u32::try_from(n).ok());
        match parsed {
            Some(n) => *self = n,
            None => {
                let value = super::number_literal_kind(&String::from_utf8_lossy(lit));
                d.mismatch_described(&value, "uint32");
            }
        }
        Ok(())
    }
}

/// A Go pointer: `null` makes it nil, anything else allocates (if nil) and decodes into the
/// pointee (errors name the pointee's type).
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct GoPtr<T>(pub Option<T>);

impl<T: GoDecode> GoDecode for GoPtr<T> {
    fn go_type() -> String {
        T::go_type()
    }
    fn decode(&mut self, d: &mut Decoder<'_>) -> Result<(), JsonError> {
        if d.kind() == Kind::Null {
            d.skip_value();
            self.0 = None;
            return Ok(());
        }
        self.0.get_or_insert_with(T::default).decode(d)
    }
}

/// A Go slice: `backing` is the whole capacity (elements past `len` keep whatever an earlier
/// decode left there, as in Go).
#[derive(Clone, Debug)]
pub struct GoSlice<T> {
    nil: bool,
    len: usize,
    backing: Vec<T>,
}

impl<T> Default for GoSlice<T> {
    fn default() -> Self {
        GoSlice {
            nil: true,
            len: 0,
            backing: Vec::new(),
        }
    }
}

impl<T> GoSlice<T> {
    /// `None` for a nil slice, else its elements.
    pub fn into_option(self) -> Option<Vec<T>> {
        if self.nil {
            None
        } else {
            let mut v = self.backing;
            v.truncate(self.len);
            Some(v)
        }
    }
}

impl<T: GoDecode> GoDecode for GoSlice<T> {
    fn go_type() -> String {
        format!("[]{}", T::go_type())
    }
    fn decode(&mut self, d: &mut Decoder<'_>) -> Result<(), JsonError> {
        match d.expect(Kind::Array, &Self::go_type()) {
            Next::Value => {}
            Next::Null => {
                *self = GoSlice::default();
                return Ok(());
            }
            Next::Mismatch => return Ok(()),
        }
        d.eat(b'[');
        let mut i = 0;
        if !d.eat(b']') {
            loop {
                if i >= self.backing.len() {
                    // Go grows to cap*1.5 (at least 4), copying only the first len elements.
                    let cap = self.backing.len();
                    let new_cap = (cap + cap / 2).max(4);
                    self.backing.truncate(self.len);
                    self.backing.resize(new_cap, T::default());
                }
                if i >= self.len {
                    self.len = i + 1;
                }
                self.backing[i].decode(d)?;
                i += 1;
                if d.eat(b',') {
                    continue;
                }
                d.eat(b']');
                break;
            }
        }
        if i < self.len {
            self.len = i;
        }
        if i == 0 {
            self.backing = Vec::new();
            self.len = 0;
        }
        self.nil = false;
        Ok(())
    }
}

/// A Go `map[string]T`: `null` makes it nil; an object adds its members to the map (making it
/// if nil), each decoded into a fresh zero value. A mismatch inside names the map's field and
/// the element type, not the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoMap<T>(pub Option<BTreeMap<String, T>>);

impl<T> Default for GoMap<T> {
    fn default() -> Self {
        GoMap(None)
    }
}

impl<T: GoDecode> GoDecode for GoMap<T> {
    fn go_type() -> String {
        format!("map[string]{}", T::go_type())
    }
    fn decode(&mut self, d: &mut Decoder<'_>) -> Result<(), JsonError> {
        match d.expect(Kind::Object, &Self::go_type()) {
            Next::Value => {}
            Next::Null => {
                self.0 = None;
                return Ok(());
            }
            Next::Mismatch => return Ok(()),
        }
        let map = self.0.get_or_insert_with(BTreeMap::new);
        d.eat(b'{');
        if d.eat(b'}') {
            return Ok(());
        }
        loop {
            let key = d.read_string();
            d.eat(b':');
            let mut element = T::default();
            element.decode(d)?;
            map.insert(key, element);
            if d.eat(b',') {
                continue;
            }
            d.eat(b'}');
            return Ok(());
        }
    }
}

/// Declares Go-shaped structs and their decoding: fields keyed by their JSON names, type
/// errors naming the struct as Go does (`package.Name` for the value, `Name` for a field).
/// Several Go types with the same fields can share one declaration.
///
/// ```ignore
/// go_struct!(pub(super) GoEnv = types.PluginEnv {
///     name: String = "Name",
///     value: GoPtr<String> = "Value",
/// });
/// go_struct!([GoA = pkg.A, GoB = pkg.B] { name: String = "Name" });
/// ```
macro_rules! go_struct {
    (@one $vis:vis $name:ident = $package:ident . $go_name:ident
        { $($field:ident : $ty:ty = $key:literal),* $(,)? }) => {
        #[derive(Clone, Default, Debug)]
        $vis struct $name {
            $($vis $field: $ty,)*
        }

        impl $crate::gojson::decode::GoDecode for $name {
            fn go_type() -> String {
                concat!(stringify!($package), ".", stringify!($go_name)).to_string()
            }
            fn decode(
                &mut self,
                d: &mut $crate::gojson::decode::Decoder<'_>,
            ) -> Result<(), $crate::gojson::JsonError> {
                use $crate::gojson::decode::{Kind, Next};
                let go_type = <Self as $crate::gojson::decode::GoDecode>::go_type();
                if d.expect(Kind::Object, &go_type) != Next::Value {
                    return Ok(());
                }
                const NAMES: &[&str] = &[$($key),*];
                d.object(stringify!($go_name), NAMES, |d, i| {
                    let mut n = 0usize;
                    $(
                        if i == n {
                            return $crate::gojson::decode::GoDecode::decode(&mut self.$field, d);
                        }
                        n += 1;
                    )*
                    let _ = n;
                    Ok(())
                })
            }
        }
    };
    ($vis:vis $name:ident = $package:ident . $go_name:ident $fields:tt) => {
        $crate::gojson::decode::go_struct!(@one $vis $name = $package . $go_name $fields);
    };
    ($vis:vis [$($name:ident = $package:ident . $go_name:ident),+] $fields:tt) => {
        $($crate::gojson::decode::go_struct!(@one $vis $name = $package . $go_name $fields);)+
    };
}
pub(crate) use go_struct;

#[cfg(test)]
mod tests {
    use super::*;

    go_struct!(Inner = pkg.Inner { n: u32 = "N" });
    go_struct!([Outer = pkg.Outer, Other = other.Shape] {
        name: String = "Name",
        opts: GoMap<String> = "Opts",
        inner: GoPtr<Inner> = "Inner",
        list: GoSlice<String> = "List",
    });

    fn outer(json: &str) -> Result<Outer, String> {
        unmarshal(json.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn structs_maps_and_pointers() {
        let o = outer(r#"{"name":"a","OPTS":{"k":"v","n":null},"Inner":{"n":7},"List":["x"]}"#)
            .unwrap();
        assert_eq!(o.name, "a");
        assert_eq!(
            o.opts.0.unwrap(),
            BTreeMap::from([("k".into(), "v".into()), ("n".into(), String::new())])
        );
        assert_eq!(o.inner.0.unwrap().n, 7);
        assert_eq!(o.list.into_option(), Some(vec!["x".to_string()]));
        // maps merge over duplicate keys; null makes them nil
        let o = outer(r#"{"Opts":{"a":"1"},"Opts":{"b":"2"}}"#).unwrap();
        assert_eq!(o.opts.0.unwrap().len(), 2);
        assert_eq!(
            outer(r#"{"Opts":{"a":"1"},"Opts":null}"#).unwrap().opts.0,
            None
        );
        // Go's folding: long s matches `s`
        assert_eq!(
            outer("{\"Opt\u{17f}\":{}}").unwrap().opts.0,
            Some(BTreeMap::new())
        );
    }

    #[test]
    fn type_errors_name_the_struct_and_field() {
        assert_eq!(
            outer("[]").unwrap_err(),
            "json: cannot unmarshal array into Go value of type pkg.Outer"
        );
        assert_eq!(
            unmarshal::<Other>(b"1").unwrap_err().to_string(),
            "json: cannot unmarshal number into Go value of type other.Shape"
        );
        assert_eq!(
            outer(r#"{"Opts":{"a":1}}"#).unwrap_err(),
            "json: cannot unmarshal number into Go struct field Outer.Opts of type string"
        );
        assert_eq!(
            outer(r#"{"Opts":[]}"#).unwrap_err(),
            "json: cannot unmarshal array into Go struct field Outer.Opts of type map[string]string"
        );
        assert_eq!(
            outer(r#"{"Inner":{"N":-1}}"#).unwrap_err(),
            "json: cannot unmarshal number -1 into Go struct field Inner.Inner.N of type uint32"
        );
        // the first mismatch in document order wins; syntax errors come first
        assert_eq!(
            outer(r#"{"Name":1,"List":2}"#).unwrap_err(),
            "json: cannot unmarshal number into Go struct field Outer.Name of type string"
        );
        assert_eq!(
            outer(r#"{"Name":1,}"#).unwrap_err(),
            "invalid character '}' looking for beginning of object key string"
        );
        let (value, end) = decode_first::<GoSlice<String>>(b"[\"a\",null] x").unwrap();
        assert_eq!(value.into_option(), Some(vec!["a".into(), String::new()]));
        assert_eq!(end, 10);
    }
}
