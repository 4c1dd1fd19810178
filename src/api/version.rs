//! API versions: parsing `/vX.Y` prefixes, the served range, and the per-version behaviour
//! switches that moby applies.

use crate::error::Error;
use std::cmp::Ordering;
use std::fmt;

/// An API version such as `1.41`, compared numerically per component like moby's `versions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersion(Vec<u32>);

impl ApiVersion {
    /// Parses the version text of a `/vX.Y/` prefix. moby's route pattern admits `[0-9.]+`,
    /// so components may be empty (`1..2`); they count as 0, as Go's `strconv.Atoi` failure does.
    pub fn parse(text: &str) -> ApiVersion {
        ApiVersion(text.split('.').map(|p| p.parse().unwrap_or(0)).collect())
    }

    pub fn at_least(&self, other: &str) -> bool {
        self.cmp(&ApiVersion::parse(other)) != Ordering::Less
    }

    pub fn less_than(&self, other: &str) -> bool {
        self.cmp(&ApiVersion::parse(other)) == Ordering::Less
    }
}

impl Ord for ApiVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let len = self.0.len().max(other.0.len());
        for i in 0..len {
            let a = self.0.get(i).copied().unwrap_or(0);
            let b = other.0.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => continue,
                unequal => return unequal,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for ApiVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|p| p.to_string()).collect();
        f.write_str(&parts.join("."))
    }
}

/// Oldest version served. Below 1.24 Docker clients expect plain-text errors and the plugin
/// API did not exist (plugins arrived in 1.25).
pub const MIN_API_VERSION: &str = "1.24";
/// Newest version served: the stock CLI 28.x negotiates at most 1.50.
pub const MAX_API_VERSION: &str = "1.50";
/// What `Api-Version` advertises, and what a request without a `/vX.Y` prefix gets: the newest
/// version served, as moby does, so today's clients (CLI 28.x, docker-py and bollard on
/// `auto`) negotiate current behaviour. A client that asks for 1.41 gets dockerd 20.10's.
pub const DEFAULT_API_VERSION: &str = MAX_API_VERSION;

/// Behaviour switches that depend on the version a request was made with.
#[derive(Debug, Clone)]
pub struct Compat {
    pub version: ApiVersion,
}

impl Compat {
    pub fn new(version: ApiVersion) -> Self {
        Compat { version }
    }

    /// Before 1.42 (dockerd ≤ 20.10) several errors had other texts and classes: filter errors
    /// start with a capital `Invalid`, JSON bodies are decoded ad hoc.
    pub fn legacy(&self) -> bool {
        self.version.less_than("1.42")
    }

    /// An error in what the client sent that 20.10 left untyped (a 500) and current moby
    /// classes as invalid input (a 400).
    pub fn request_error(&self, message: impl Into<String>) -> Error {
        if self.legacy() {
            Error::System(message.into())
        } else {
            Error::InvalidParameter(message.into())
        }
    }

    /// Below 1.24 errors are written as plain text rather than JSON.
    pub fn plain_text_errors(&self) -> bool {
        self.version.less_than("1.24")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_numerically_per_component() {
        assert!(ApiVersion::parse("1.9") < ApiVersion::parse("1.10"));
        assert!(ApiVersion::parse("1.41") < ApiVersion::parse("1.50"));
        assert_eq!(ApiVersion::parse("1.40"), ApiVersion::parse("1.40"));
        assert_eq!(
            ApiVersion::parse("1.40").cmp(&ApiVersion::parse("1.40.0")),
            Ordering::Equal
        );
        assert!(ApiVersion::parse("2").at_least("1.50"));
        assert!(ApiVersion::parse("1.23").less_than(MIN_API_VERSION));
    }

    #[test]
    fn displays_as_given() {
        assert_eq!(ApiVersion::parse("1.41").to_string(), "1.41");
    }

    #[test]
    fn legacy_switch_follows_request_version() {
        assert!(Compat::new(ApiVersion::parse("1.41")).legacy());
        assert!(!Compat::new(ApiVersion::parse("1.42")).legacy());
        assert!(Compat::new(ApiVersion::parse("1.11")).plain_text_errors());
    }
}
