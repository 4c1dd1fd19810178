//! The AuthZ mode of the test plugin: `AuthZPlugin.AuthZReq` and `AuthZPlugin.AuthZRes` decided
//! by rules (`TEST_AUTHZ_RULES`), every call written to a log (`TEST_AUTHZ_LOG`) field by field
//! so tests can compare what berth and dockerd sent.
//!
//! Rules are separated by `;`; each is `<phase> <action> <method> <uri> [body=<text>]
//! [msg=<rest of the rule>]`:
//! * phase: `req`, `res` or `both`;
//! * action: `allow`, `deny` (`{"Allow":false,"Msg":msg}`), `error` (500 `{"Err":msg}`),
//!   `garbage` (200 with a body that is not JSON), `hang` (never answer), `slow=<ms>` (wait,
//!   then allow), `hostile=<mode>` (a hostile answer, see hostile.rs);
//! * method: an HTTP method or `*`; uri: a substring of `RequestUri` (`*` for any);
//! * body: a substring of the decoded `RequestBody`.
//!
//! The first rule that matches decides; without one the request is allowed.

use std::fmt::Write as _;

use base64::Engine as _;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Request,
    Response,
    Both,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Allow,
    Deny,
    Error,
    Garbage,
    Hang,
    Slow(Duration),
    Hostile(super::hostile::Mode),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rule {
    phase: Phase,
    action: Action,
    method: String,
    uri: String,
    body: Option<String>,
    msg: String,
}

/// Parses `TEST_AUTHZ_RULES`; a rule that cannot be read is reported and skipped.
pub(super) fn parse_rules(text: &str) -> Vec<Rule> {
    text.split(';')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .filter_map(|r| match parse_rule(r) {
            Ok(rule) => Some(rule),
            Err(why) => {
                eprintln!("berth-test-plugin: ignoring authz rule {r:?}: {why}");
                None
            }
        })
        .collect()
}

fn parse_rule(text: &str) -> Result<Rule, String> {
    let (head, msg) = match text.split_once("msg=") {
        Some((head, msg)) => (head, msg.trim().to_string()),
        None => (text, String::new()),
    };
    let words: Vec<&str> = head.split_whitespace().collect();
    let [phase, action, method, uri, rest @ ..] = words.as_slice() else {
        return Err("expected <phase> <action> <method> <uri>".into());
    };
    let phase = match *phase {
        "req" => Phase::Request,
        "res" => Phase::Response,
        "both" => Phase::Both,
        other => return Err(format!("unknown phase {other:?}")),
    };
    let action = match *action {
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        "error" => Action::Error,
        "garbage" => Action::Garbage,
        "hang" => Action::Hang,
        other => match (other.strip_prefix("slow="), other.strip_prefix("hostile=")) {
            (Some(ms), _) => Action::Slow(Duration::from_millis(
                ms.parse().map_err(|_| format!("bad delay {ms:?}"))?,
            )),
            (_, Some(mode)) => Action::Hostile(mode.parse()?),
            _ => return Err(format!("unknown action {other:?}")),
        },
    };
    let mut body = None;
    for word in rest {
        match word.strip_prefix("body=") {
            Some(b) => body = Some(b.to_string()),
            None => return Err(format!("unknown word {word:?}")),
        }
    }
    Ok(Rule {
        phase,
        action,
        method: method.to_string(),
        uri: uri.to_string(),
        body,
        msg,
    })
}

impl Rule {
    fn matches(&self, response_phase: bool, request: &Value) -> bool {
        let phase = match self.phase {
            Phase::Both => true,
            Phase::Request => !response_phase,
            Phase::Response => response_phase,
        };
        let method = self.method == "*" || self.method == str_field(request, "RequestMethod");
        let uri = self.uri == "*" || str_field(request, "RequestUri").contains(&self.uri);
        let body = match &self.body {
            None => true,
            Some(text) => String::from_utf8_lossy(&decoded(request, "RequestBody")).contains(text),
        };
        phase && method && uri && body
    }
}

/// A base64 `[]byte` field, decoded (empty when absent or not base64).
fn decoded(request: &Value, name: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(str_field(request, name))
        .unwrap_or_default()
}

/// The fields of an AuthZ request in the order moby declares them.
const FIELDS: &[&str] = &[
    "User",
    "UserAuthNMethod",
    "RequestMethod",
    "RequestUri",
    "RequestBody",
    "RequestHeaders",
    "RequestPeerCertificates",
    "ResponseStatusCode",
    "ResponseBody",
    "ResponseHeaders",
];

/// How much of a decoded body the log shows.
const LOGGED_BODY_BYTES: usize = 300;

/// One logged call: the method, then every received field on its own line (moby's fields in
/// their order, then any others), bodies decoded.
fn log_entry(method: &str, request: &Value) -> String {
    let mut out = format!("{method}\n");
    let Some(fields) = request.as_object() else {
        let _ = writeln!(out, "  (not an object) {request}");
        return out;
    };
    let mut names: Vec<&str> = FIELDS
        .iter()
        .copied()
        .filter(|f| fields.contains_key(*f))
        .collect();
    names.extend(
        fields
            .keys()
            .map(String::as_str)
            .filter(|k| !FIELDS.contains(k)),
    );
    for name in names {
        if name.ends_with("Body") {
            let body = decoded(request, name);
            let shown = String::from_utf8_lossy(&body[..body.len().min(LOGGED_BODY_BYTES)]);
            let _ = writeln!(
                out,
                "  {name}: {} bytes {}{}",
                body.len(),
                Value::from(shown.as_ref()),
                if body.len() > LOGGED_BODY_BYTES {
                    "…"
                } else {
                    ""
                }
            );
        } else {
            let _ = writeln!(out, "  {name}: {}", fields[name]);
        }
    }
    out
}

impl Driver {
    /// The rule deciding `method` (`AuthZReq`/`AuthZRes`) for `request`, if one matches.
    fn authz_rule(&self, method: &str, request: &Value) -> Option<&Rule> {
        let response_phase = method == "AuthZPlugin.AuthZRes";
        self.cfg
            .authz_rules
            .iter()
            .find(|r| r.matches(response_phase, request))
    }

    /// The hostile mode a `hostile=<mode>` rule answers this call with.
    pub(super) fn authz_hostile_mode(
        &self,
        method: &str,
        request: &Value,
    ) -> Option<super::hostile::Mode> {
        match self.authz_rule(method, request)?.action {
            Action::Hostile(mode) => {
                self.log_authz(method, request);
                Some(mode)
            }
            _ => None,
        }
    }

    fn log_authz(&self, method: &str, request: &Value) {
        if let Some(path) = &self.cfg.authz_log {
            let _guard = self.fs_lock.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(path) {
                let _ = f.write_all(log_entry(method, request).as_bytes());
            }
        }
    }

    /// `AuthZPlugin.AuthZReq` / `AuthZPlugin.AuthZRes`.
    pub(super) fn authz_call(&self, method: &str, request: &Value) -> Reply {
        if !matches!(method, "AuthZPlugin.AuthZReq" | "AuthZPlugin.AuthZRes") {
            return Reply::not_found();
        }
        self.log_authz(method, request);
        let Some(rule) = self.authz_rule(method, request) else {
            return Reply::ok(json!({ "Allow": true }));
        };
        match &rule.action {
            Action::Allow => Reply::ok(json!({ "Allow": true })),
            Action::Deny => Reply::ok(json!({ "Allow": false, "Msg": rule.msg })),
            Action::Error => Reply::err(rule.msg.clone()),
            Action::Garbage => Reply {
                status: 200,
                content_type: CONTENT_TYPE,
                body: b"this is not JSON\n".to_vec(),
                stream: None,
            },
            Action::Hang => loop {
                thread::park();
            },
            Action::Slow(delay) => {
                thread::sleep(*delay);
                Reply::ok(json!({ "Allow": true }))
            }
            // Answered before the call reaches here (`Driver::hostile_mode`).
            Action::Hostile(_) => Reply::ok(json!({ "Allow": true })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_phase_action_method_uri_body_and_message() {
        let rules = parse_rules(
            "req deny POST /volumes/create body=secret msg=no secrets, please; \
             res error * /info msg=boom;both slow=20 GET *; nonsense",
        );
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].msg, "no secrets, please");
        assert_eq!(rules[0].body.as_deref(), Some("secret"));
        assert_eq!(rules[2].action, Action::Slow(Duration::from_millis(20)));
        let create = json!({
            "RequestMethod": "POST",
            "RequestUri": "/v1.41/volumes/create",
            "RequestBody": base64::engine::general_purpose::STANDARD.encode("{\"Name\":\"secret-vol\"}"),
        });
        assert!(rules[0].matches(false, &create));
        assert!(!rules[0].matches(true, &create));
        let info = json!({"RequestMethod": "GET", "RequestUri": "/info"});
        assert!(rules[1].matches(true, &info) && !rules[1].matches(false, &info));
        assert!(rules[2].matches(false, &info) && rules[2].matches(true, &info));
    }

    #[test]
    fn the_log_shows_every_field_with_bodies_decoded() {
        let entry = log_entry(
            "AuthZPlugin.AuthZRes",
            &json!({
                "RequestUri": "/_ping",
                "RequestMethod": "GET",
                "ResponseBody": base64::engine::general_purpose::STANDARD.encode("OK"),
                "Extra": 1,
            }),
        );
        assert_eq!(
            entry,
            "AuthZPlugin.AuthZRes\n  RequestMethod: \"GET\"\n  RequestUri: \"/_ping\"\n  \
             ResponseBody: 2 bytes \"OK\"\n  Extra: 1\n"
        );
    }
}
