//! The `filters` query parameter (moby `filters.Args`): parsing, key validation, matching.

use std::collections::BTreeMap;

use crate::api::version::Compat;
use crate::error::{Error, Result};

/// `map[key]map[value]bool`, as the Docker API sends it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filters {
    fields: BTreeMap<String, BTreeMap<String, bool>>,
}

impl Filters {
    /// Parses the JSON text; the legacy `{"key":["v"]}` form is accepted too. An empty string
    /// means no filters. `invalid` renders a decode error for this endpoint and API version.
    /// The `filters` of routes whose parse errors 20.10 left untyped (a 500 with the JSON
    /// error) and current moby answers with a 400 `invalid filter`.
    pub fn parse_request(text: &str, compat: &Compat) -> Result<Filters> {
        Filters::parse(text, |message| {
            compat.request_error(if compat.legacy() {
                message
            } else {
                "invalid filter".into()
            })
        })
    }

    pub fn parse(text: &str, invalid: impl Fn(String) -> Error) -> Result<Filters> {
        if text.is_empty() {
            return Ok(Filters::default());
        }
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => {
                let message =
                    crate::gojson::check_syntax(text.as_bytes(), crate::gojson::Mode::Unmarshal)
                        .err()
                        .map_or_else(|| "invalid filter".into(), |e| e.to_string());
                return Err(invalid(message));
            }
        };
        let mut fields = BTreeMap::new();
        let serde_json::Value::Object(map) = value else {
            return match value {
                serde_json::Value::Null => Ok(Filters::default()),
                other => Err(invalid(crate::gojson::unmarshal_type_error(
                    crate::gojson::kind_name(&other),
                    "map[string]map[string]bool",
                ))),
            };
        };
        for (key, values) in map {
            let mut set = BTreeMap::new();
            match values {
                serde_json::Value::Object(inner) => {
                    for (v, flag) in inner {
                        set.insert(v, flag.as_bool().unwrap_or(false));
                    }
                }
                serde_json::Value::Array(items) => {
                    for item in items {
                        if let serde_json::Value::String(v) = item {
                            set.insert(v, true);
                        }
                    }
                }
                serde_json::Value::Null => {}
                other => {
                    return Err(invalid(crate::gojson::unmarshal_type_error(
                        crate::gojson::kind_name(&other),
                        "map[string]bool",
                    )))
                }
            }
            fields.insert(key, set);
        }
        Ok(Filters { fields })
    }

    /// Refuses keys the endpoint does not know: `invalid filter '<key>'` (capitalised before
    /// API 1.42, as dockerd 20.10 wrote it).
    pub fn validate(&self, allowed: &[&str], compat: &Compat) -> Result<()> {
        match self.fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(key) => Err(invalid_filter(compat, key)),
            None => Ok(()),
        }
    }

    /// The parsed map, for matchers that live below the API (events).
    pub fn into_fields(self) -> BTreeMap<String, BTreeMap<String, bool>> {
        self.fields
    }

    pub fn contains(&self, key: &str) -> bool {
        self.fields.contains_key(key)
    }

    /// Values given for `key`, in sorted order (Go prints them from a map; tests rely on one).
    pub fn values(&self, key: &str) -> Vec<String> {
        self.fields
            .get(key)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// moby `ExactMatch`: true when no values are given or `source` is one of them (set true).
    pub fn exact_match(&self, key: &str, source: &str) -> bool {
        match self.fields.get(key) {
            None => true,
            Some(m) if m.is_empty() => true,
            Some(m) => m.get(source).copied().unwrap_or(false),
        }
    }

    /// moby `Match`: any value equal to `source`, or a regexp that matches somewhere in it.
    pub fn matches(&self, key: &str, source: &str) -> bool {
        let Some(values) = self.fields.get(key) else {
            return true;
        };
        if values.is_empty() {
            return true;
        }
        values.keys().any(|pattern| {
            pattern == source
                || regex::Regex::new(pattern)
                    .map(|re| re.is_match(source))
                    .unwrap_or(false)
        })
    }

    /// `invalid filter '<key>=[v1 v2]'`, with the values as Go prints a slice.
    pub fn invalid_value(&self, compat: &Compat, key: &str) -> Error {
        let values = self.values(key).join(" ");
        invalid_filter(compat, &format!("{key}=[{values}]"))
    }
}

pub fn invalid_filter(compat: &Compat, what: &str) -> Error {
    let word = if compat.legacy() {
        "Invalid"
    } else {
        "invalid"
    };
    Error::InvalidParameter(format!("{word} filter '{what}'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::version::ApiVersion;

    fn compat(v: &str) -> Compat {
        Compat::new(ApiVersion::parse(v))
    }

    fn parse(text: &str) -> Filters {
        Filters::parse(text, Error::InvalidParameter).unwrap()
    }

    #[test]
    fn parses_both_wire_forms() {
        let modern = parse(r#"{"enabled":{"true":true}}"#);
        let legacy = parse(r#"{"enabled":["true"]}"#);
        assert_eq!(modern, legacy);
        assert!(parse("").fields.is_empty());
    }

    #[test]
    fn refuses_unknown_keys_with_versioned_text() {
        let f = parse(r#"{"enable":{"true":true}}"#);
        let old = f.validate(&["enabled"], &compat("1.41")).unwrap_err();
        assert_eq!(
            old,
            Error::InvalidParameter("Invalid filter 'enable'".into())
        );
        let new = f.validate(&["enabled"], &compat("1.44")).unwrap_err();
        assert_eq!(
            new,
            Error::InvalidParameter("invalid filter 'enable'".into())
        );
    }

    #[test]
    fn match_is_exact_or_regexp_anywhere() {
        let f = parse(r#"{"capability":{"volume":true}}"#);
        assert!(f.matches("capability", "volumedriver"));
        assert!(!f.matches("capability", "networkdriver"));
        let f = parse(r#"{"capability":{"VolumeDriver":true}}"#);
        assert!(!f.matches("capability", "volumedriver"));
        let f = parse(r#"{"name":{"[":true}}"#);
        assert!(f.matches("name", "["));
        assert!(!f.matches("name", "x"));
    }

    #[test]
    fn exact_match_requires_a_true_flag() {
        let f = parse(r#"{"enabled":{"true":false}}"#);
        assert!(!f.exact_match("enabled", "true"));
        assert_eq!(
            f.invalid_value(&compat("1.41"), "enabled"),
            Error::InvalidParameter("Invalid filter 'enabled=[true]'".into())
        );
    }

    #[test]
    fn decode_errors_go_through_the_callers_renderer() {
        let err = Filters::parse("nope", Error::System).unwrap_err();
        assert!(matches!(err, Error::System(_)));
    }
}
