//! Credentials and authentication: the `X-Registry-Auth` header, `WWW-Authenticate` challenges
//! and the token-server exchange (anonymous, basic, or OAuth2 refresh token) for a Bearer
//! challenge, with the plugin scope `repository(plugin):<path>:<actions>`.

use base64::Engine as _;
use reqwest::header::{HeaderMap, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::Url;
use serde::Deserialize;
use tokio::time::Instant;

use super::error::{render_error_body, status_error};
use super::{Access, RegistryError, Result, Session};

/// `client_id` of refresh-token grants.
const CLIENT_ID: &str = "berth";
/// Token answers are read up to this size.
const MAX_TOKEN_BODY: u64 = 1024 * 1024;

/// Registry credentials from the `X-Registry-Auth` header (moby `registry.AuthConfig`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub username: String,
    pub password: String,
    /// base64 of `user:password`; used only when `username` and `password` are both empty.
    pub auth: String,
    pub email: String,
    pub server_address: String,
    /// OAuth2 refresh token (from `docker login` to a token server).
    pub identity_token: String,
    /// A bearer token sent to the registry as is.
    pub registry_token: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &set(&self.password))
            .field("auth", &set(&self.auth))
            .field("email", &self.email)
            .field("server_address", &self.server_address)
            .field("identity_token", &set(&self.identity_token))
            .field("registry_token", &set(&self.registry_token))
            .finish()
    }
}

impl AuthConfig {
    /// Decodes an `X-Registry-Auth` value: base64url (padding optional; the standard alphabet is
    /// accepted too) of a JSON object whose keys match case-insensitively, as Go's
    /// `encoding/json` does. Like moby's plugin routes, anything invalid (bad base64, not JSON,
    /// a non-string field) yields empty credentials, never an error. Only the first JSON value
    /// is read (Go's `json.Decoder`).
    pub fn from_header(value: &str) -> AuthConfig {
        let value = value.trim();
        if value.is_empty() {
            return AuthConfig::default();
        }
        let bytes = match decode_base64_lenient(value) {
            Some(b) => b,
            None => return AuthConfig::default(),
        };
        let mut stream = serde_json::Deserializer::from_slice(&bytes).into_iter::<JsonObject>();
        let object = match stream.next() {
            Some(Ok(JsonObject(entries))) => entries,
            _ => return AuthConfig::default(),
        };
        let mut out = AuthConfig::default();
        for (key, v) in object {
            let field = match key.to_ascii_lowercase().as_str() {
                "username" => &mut out.username,
                "password" => &mut out.password,
                "auth" => &mut out.auth,
                "email" => &mut out.email,
                "serveraddress" => &mut out.server_address,
                "identitytoken" => &mut out.identity_token,
                "registrytoken" => &mut out.registry_token,
                _ => continue,
            };
            match v {
                serde_json::Value::String(s) => *field = s,
                serde_json::Value::Null => {}
                _ => return AuthConfig::default(),
            }
        }
        out
    }

    /// True when no credential of any kind is set.
    pub fn is_anonymous(&self) -> bool {
        self.basic_credentials().is_none()
            && self.identity_token.is_empty()
            && self.registry_token.is_empty()
    }

    /// `username`/`password`, or the decoded `auth` field when both are empty.
    fn basic_credentials(&self) -> Option<(String, String)> {
        if !self.username.is_empty() || !self.password.is_empty() {
            return Some((self.username.clone(), self.password.clone()));
        }
        if self.auth.is_empty() {
            return None;
        }
        let decoded = decode_base64_lenient(&self.auth)?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, pass) = text.split_once(':')?;
        Some((user.to_string(), pass.trim_end_matches('\0').to_string()))
    }
}

/// A JSON object's members in document order, duplicates kept (Go assigns them in order, so the
/// last one wins); `null` reads as no members.
struct JsonObject(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = JsonObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_unit<E>(self) -> std::result::Result<JsonObject, E> {
                Ok(JsonObject(Vec::new()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<JsonObject, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    entries.push(entry);
                }
                Ok(JsonObject(entries))
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn decode_base64_lenient(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let s = s.trim();
    URL_SAFE
        .decode(s)
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .or_else(|_| STANDARD.decode(s))
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .ok()
}

impl Session {
    /// The `Authorization` value answering `challenges`; `None` when nothing can be sent
    /// (a Basic challenge without credentials: the request goes out anonymously and the
    /// registry's own 401 is reported).
    pub(super) async fn authorize(
        &self,
        index: usize,
        challenges: &[Challenge],
    ) -> Result<Option<String>> {
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let token = self.fetch_token(index, bearer).await?;
            return Ok(Some(format!("Bearer {token}")));
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            if let Some((user, pass)) = self.auth.basic_credentials() {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                return Ok(Some(format!("Basic {encoded}")));
            }
        }
        Ok(None)
    }

    /// The token-server exchange for a Bearer challenge.
    async fn fetch_token(&self, index: usize, challenge: &Challenge) -> Result<String> {
        let realm = challenge.param("realm").ok_or_else(|| {
            RegistryError::Protocol("bearer challenge without a realm".to_string())
        })?;
        let mut url = Url::parse(realm)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| RegistryError::Protocol(format!("invalid token realm {realm:?}")))?;
        let mut scopes = match self.access {
            Access::Repository { push } => {
                let actions = if push { "pull,push" } else { "pull" };
                vec![format!(
                    "repository(plugin):{}:{actions}",
                    self.reference.path
                )]
            }
            Access::Login => Vec::new(),
        };
        // A login asks for a refresh token to hand back as the client's identity token.
        let offline = self.access == Access::Login;
        if let Some(extra) = challenge.param("scope") {
            for s in extra.split(' ').filter(|s| !s.is_empty()) {
                if !scopes.iter().any(|have| have == s) {
                    scopes.push(s.to_string());
                }
            }
        }
        let service = challenge.param("service").unwrap_or("");
        let endpoint = &self.endpoints[index];
        let client = self.shared.client(endpoint.skip_verify);
        let request = if !self.auth.identity_token.is_empty() {
            let mut form = vec![
                ("grant_type", "refresh_token".to_string()),
                ("service", service.to_string()),
                ("client_id", CLIENT_ID.to_string()),
                ("refresh_token", self.auth.identity_token.clone()),
            ];
            if !scopes.is_empty() {
                form.push(("scope", scopes.join(" ")));
            }
            if offline {
                form.push(("access_type", "offline".to_string()));
            }
            let body = form
                .iter()
                .map(|(k, v)| format!("{k}={}", form_encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            client
                .post(url.as_str())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body)
        } else {
            let creds = self.auth.basic_credentials();
            {
                let mut q = url.query_pairs_mut();
                if !service.is_empty() {
                    q.append_pair("service", service);
                }
                for s in &scopes {
                    q.append_pair("scope", s);
                }
                if let Some((user, _)) = &creds {
                    if !user.is_empty() {
                        q.append_pair("account", user);
                    }
                }
                if offline {
                    q.append_pair("offline_token", "true");
                    q.append_pair("client_id", CLIENT_ID);
                }
            }
            let mut r = client.get(url.as_str());
            if let Some((user, pass)) = creds {
                r = r.basic_auth(user, Some(pass));
            }
            r
        };
        let method = if self.auth.identity_token.is_empty() {
            "GET"
        } else {
            "POST"
        };
        let url_text = url.to_string();
        let deadline = Instant::now() + self.shared.options.request_timeout;
        let mut resp = self.execute(request, method, &url_text).await?;
        let status = resp.status();
        let body = self
            .read_bounded(
                &mut resp,
                &url_text,
                MAX_TOKEN_BODY,
                "token answer",
                deadline,
            )
            .await?;
        if !status.is_success() {
            let rendered = render_error_body(&body).or_else(|| {
                let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
                let details = v.get("details")?.as_str()?;
                Some(format!("unauthorized: {details}"))
            });
            return Err(status_error(status, method, &url_text, None, rendered));
        }
        #[derive(Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            refresh_token: String,
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::Protocol(format!("unable to decode token response: {e}"))
        })?;
        let token = if answer.token.is_empty() {
            answer.access_token
        } else {
            answer.token
        };
        if token.is_empty() {
            return Err(RegistryError::Protocol(
                "authorization server did not include a token in the response".into(),
            ));
        }
        if !answer.refresh_token.is_empty() {
            self.state.lock().unwrap().refresh_token = Some(answer.refresh_token);
        }
        Ok(token)
    }
}

// ---- WWW-Authenticate -----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Challenge {
    /// Lower-cased.
    scheme: String,
    /// Names lower-cased.
    params: Vec<(String, String)>,
}

impl Challenge {
    /// The scheme, lower-cased (`basic`, `bearer`).
    pub(super) fn scheme(&self) -> &str {
        &self.scheme
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(super) fn parse_challenges(headers: &HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenge_header)
        .collect()
}

/// RFC 7235 challenges: `scheme [param=value|"quoted"] [, …]`, several per header allowed.
fn parse_challenge_header(s: &str) -> Vec<Challenge> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let is_tchar = |c: u8| !c.is_ascii_whitespace() && c != b',' && c != b'=' && c != b'"';
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
            i += 1;
        }
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        if start == i {
            break;
        }
        let mut challenge = Challenge {
            scheme: s[start..i].to_ascii_lowercase(),
            params: Vec::new(),
        };
        loop {
            let save = i;
            skip_ws(&mut i);
            let name_start = i;
            while i < b.len() && is_tchar(b[i]) {
                i += 1;
            }
            let name = &s[name_start..i];
            skip_ws(&mut i);
            if name.is_empty() || i >= b.len() || b[i] != b'=' {
                i = save;
                break;
            }
            i += 1;
            skip_ws(&mut i);
            let mut value = String::new();
            if i < b.len() && b[i] == b'"' {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
                    value.push(ch);
                    i += ch.len_utf8();
                }
                i = (i + 1).min(b.len());
            } else {
                let v_start = i;
                while i < b.len() && b[i] != b',' && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                value.push_str(&s[v_start..i]);
            }
            challenge.params.push((name.to_ascii_lowercase(), value));
            skip_ws(&mut i);
            if i < b.len() && b[i] == b',' {
                i += 1;
            }
        }
        out.push(challenge);
    }
    out
}

/// `application/x-www-form-urlencoded` value encoding.
fn form_encode(v: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const FORM: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'*')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_');
    utf8_percent_encode(v, FORM).to_string().replace("%20", "+")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64url(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE.encode(s)
    }

    #[test]
    fn auth_header_decodes_like_moby() {
        let a = AuthConfig::from_header(&b64url(
            r#"{"username":"alice","password":"s3cret","serveraddress":"localhost:5000"}"#,
        ));
        assert_eq!(a.username, "alice");
        assert_eq!(a.password, "s3cret");
        assert_eq!(a.server_address, "localhost:5000");
        assert!(!a.is_anonymous());
        // Keys match case-insensitively; the last occurrence wins.
        let a = AuthConfig::from_header(&b64url(
            r#"{"Username":"x","USERNAME":"bob","IdentityToken":"tok"}"#,
        ));
        assert_eq!(a.username, "bob");
        assert_eq!(a.identity_token, "tok");
        // Unpadded and standard-alphabet values are accepted.
        let a = AuthConfig::from_header(b64url(r#"{"registrytoken":"rt"}"#).trim_end_matches('='));
        assert_eq!(a.registry_token, "rt");
        // `{}` (what the CLI sends without credentials), empty, garbage, non-objects and
        // wrongly typed fields are all "no credentials".
        for v in ["e30=", "", "!!!", &b64url("not json"), &b64url("[1]")] {
            assert_eq!(AuthConfig::from_header(v), AuthConfig::default(), "{v:?}");
        }
        assert_eq!(
            AuthConfig::from_header(&b64url(r#"{"username":5}"#)),
            AuthConfig::default()
        );
        // Trailing data after the first JSON value is ignored (Go's json.Decoder).
        let a = AuthConfig::from_header(&b64url(r#"{"username":"u"} trailing"#));
        assert_eq!(a.username, "u");
        assert!(AuthConfig::default().is_anonymous());
    }

    #[test]
    fn auth_field_is_a_fallback_for_basic_credentials() {
        let a = AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("carol:pa:ss"),
            ..Default::default()
        };
        assert_eq!(
            a.basic_credentials(),
            Some(("carol".to_string(), "pa:ss".to_string()))
        );
        let a = AuthConfig {
            username: "dave".into(),
            password: "pw".into(),
            auth: base64::engine::general_purpose::STANDARD.encode("carol:x"),
            ..Default::default()
        };
        assert_eq!(a.basic_credentials().unwrap().0, "dave");
        assert!(!format!("{a:?}").contains("pw"), "secrets are redacted");
    }

    #[test]
    fn challenges_parse() {
        let c = parse_challenge_header(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:samalba/my-app:pull,push")
        );
        let c =
            parse_challenge_header(r#"Basic realm="Registry Realm", Bearer realm=x,error="a\"b""#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("x"));
        assert_eq!(c[1].param("error"), Some("a\"b"));
        assert!(parse_challenge_header("").is_empty());
        assert_eq!(parse_challenge_header("Negotiate")[0].scheme, "negotiate");
    }

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(
            form_encode("repository(plugin):a/b:pull,push x"),
            "repository%28plugin%29%3Aa%2Fb%3Apull%2Cpush+x"
        );
    }
}
