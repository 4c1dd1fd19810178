//! What an authorization plugin is shown of an API request and its response: the rules that
//! decide which parts go into the `AuthZReq`/`AuthZRes` body (moby `pkg/authorization/authz.go`,
//! `response.go`), kept free of any HTTP server type so they can be checked on their own.

use std::collections::BTreeMap;

/// Request bodies up to this size are shown to plugins; a larger one refuses the request
/// (current moby; dockerd 20.10 let bodies of 1 MiB and more through unseen).
pub const MAX_BODY_SIZE: usize = 4 * 1024 * 1024;

/// How much of a response is held back for the response phase (moby `maxBufferSize`): a
/// response larger than this is on its way to the client before the plugins see it.
pub const RESPONSE_BUFFER: usize = 64 * 1024;

/// Request headers plugins never see (compared case-insensitively): credentials.
const HIDDEN_HEADERS: &[&str] = &["authorization", "x-registry-auth", "x-registry-config"];

/// Headers Go's server takes out of `Request.Header` before a handler sees it: `Host`, and the
/// framing headers it interprets (`Transfer-Encoding`, `Trailer`).
const FRAMING_HEADERS: &[&str] = &["host", "transfer-encoding", "trailer"];

/// The media type of a `Content-Type` value, lower-cased, without parameters.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether a body goes to the plugins (moby `sendBody`): only a JSON body (by its declared
/// `Content-Type`), and never on an `/auth` path, whose body holds credentials.
pub fn shows_body(path: &str, content_type: Option<&str>) -> bool {
    !is_auth_endpoint(path) && content_type.is_some_and(|ct| media_type(ct) == "application/json")
}

/// moby `isAuthEndpoint`: `^[^/]*/(v\d[\d.]*/)?auth.*` on the request path.
pub fn is_auth_endpoint(path: &str) -> bool {
    let Some(slash) = path.find('/') else {
        return false;
    };
    let rest = &path[slash + 1..];
    let rest = match rest.strip_prefix('v') {
        Some(version)
            if version.starts_with(|c: char| c.is_ascii_digit())
                && version.find('/').is_some_and(|end| {
                    version[..end]
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'.')
                }) =>
        {
            &version[version.find('/').unwrap_or_default() + 1..]
        }
        _ => rest,
    };
    rest.starts_with("auth")
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: `x-registry-auth` → `X-Registry-Auth`. A name
/// holding anything but token characters is left as it is.
pub fn canonical_header_name(name: &str) -> String {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return name.to_string();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// The request headers plugins see: one value per name (the last one), names as Go
/// canonicalises them, credentials and Go's framing headers left out.
pub fn request_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, String)>,
) -> BTreeMap<String, String> {
    let mut shown = BTreeMap::new();
    for (name, value) in headers {
        let hidden = HIDDEN_HEADERS
            .iter()
            .chain(FRAMING_HEADERS)
            .any(|h| h.eq_ignore_ascii_case(name));
        if !hidden {
            shown.insert(canonical_header_name(name), value);
        }
    }
    shown
}

/// The response headers plugins see: as the handler set them, names canonicalised.
pub fn response_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, String)>,
) -> BTreeMap<String, String> {
    headers
        .into_iter()
        .map(|(name, value)| (canonical_header_name(name), value))
        .collect()
}

/// Whether a response of this `Content-Type` has its body shown (moby: JSON only).
pub fn shows_response_body(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| media_type(ct) == "application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_bodies_off_auth_paths_are_shown() {
        assert!(shows_body(
            "/v1.41/volumes/create",
            Some("application/json")
        ));
        assert!(shows_body(
            "/volumes/create",
            Some("Application/JSON; charset=utf-8")
        ));
        assert!(!shows_body("/volumes/create", Some("application/x-tar")));
        assert!(!shows_body("/volumes/create", Some("text/plain")));
        assert!(!shows_body("/volumes/create", None));
        assert!(!shows_body("/v1.41/auth", Some("application/json")));
        assert!(!shows_body("/auth/x", Some("application/json")));
        assert!(shows_body(
            "/v1.41/plugins/auth/set",
            Some("application/json")
        ));
    }

    #[test]
    fn auth_endpoints_match_mobys_pattern() {
        for path in ["/auth", "/v1.41/auth", "/v1/authorize", "/v1.41.2/auth?x"] {
            assert!(is_auth_endpoint(path), "{path}");
        }
        for path in [
            "/volumes/auth",
            "/v/auth",
            "/vx/auth",
            "/v1.41/v1.41/auth",
            "auth",
        ] {
            assert!(!is_auth_endpoint(path), "{path}");
        }
    }

    #[test]
    fn header_names_are_canonical_and_credentials_hidden() {
        assert_eq!(canonical_header_name("x-registry-auth"), "X-Registry-Auth");
        assert_eq!(canonical_header_name("ostype"), "Ostype");
        assert_eq!(canonical_header_name("API-VERSION"), "Api-Version");
        assert_eq!(canonical_header_name("bad name"), "bad name");
        let shown = request_headers([
            ("content-type", "application/json".to_string()),
            ("authorization", "Bearer t".to_string()),
            ("X-Registry-Auth", "e30=".to_string()),
            ("x-registry-config", "e30=".to_string()),
            ("host", "api".to_string()),
            ("transfer-encoding", "chunked".to_string()),
            ("x-dup", "first".to_string()),
            ("x-dup", "last".to_string()),
        ]);
        assert_eq!(
            shown.into_iter().collect::<Vec<_>>(),
            vec![
                ("Content-Type".to_string(), "application/json".to_string()),
                ("X-Dup".to_string(), "last".to_string()),
            ]
        );
    }
}
