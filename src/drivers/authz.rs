//! The AuthZPlugin protocol (moby `pkg/authorization/api.go`, `plugin.go`):
//! `AuthZPlugin.AuthZReq` before a request reaches its handler and `AuthZPlugin.AuthZRes`
//! after it, both with the [`AuthzRequest`] body, each answered with `{"Allow","Msg","Err"}`.
//!
//! Only `Allow` and `Msg` of a 200 answer count (a missing `Allow` is a deny); `Err` is read
//! from non-200 answers, by the RPC client. Calls are not retried: a plugin that cannot be
//! reached fails the call at once, so the request is refused without waiting.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Serialize, Serializer};
use serde_json::Value;

use super::field;
use crate::gojson;
use crate::rpc::client::{Retry, RpcError};
use crate::rpc::handle::PluginHandle;

/// The `Implements` / capability name of authorization plugins.
pub const AUTHZ: &str = "authz";

/// Which of the two calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the handler: `AuthZPlugin.AuthZReq`.
    Request,
    /// After it: `AuthZPlugin.AuthZRes`.
    Response,
}

impl Phase {
    pub fn method(self) -> &'static str {
        match self {
            Phase::Request => "AuthZPlugin.AuthZReq",
            Phase::Response => "AuthZPlugin.AuthZRes",
        }
    }
}

/// The body of `AuthZPlugin.AuthZReq` and `AuthZPlugin.AuthZRes`, fields in moby's order and
/// spelling (`RequestUri`), each left out when empty. The response phase sends the same
/// request fields again with the response's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuthzRequest {
    #[serde(rename = "User", skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(rename = "UserAuthNMethod", skip_serializing_if = "String::is_empty")]
    pub user_authn_method: String,
    #[serde(rename = "RequestMethod", skip_serializing_if = "String::is_empty")]
    pub request_method: String,
    /// The request target exactly as the client sent it (path with its version prefix, and
    /// the query).
    #[serde(rename = "RequestUri", skip_serializing_if = "String::is_empty")]
    pub request_uri: String,
    #[serde(rename = "RequestBody", skip_serializing_if = "GoBytes::is_empty")]
    pub request_body: GoBytes,
    #[serde(rename = "RequestHeaders", skip_serializing_if = "BTreeMap::is_empty")]
    pub request_headers: BTreeMap<String, String>,
    /// 0 when the handler never set a status (an implicit 200), or the response was already
    /// on its way.
    #[serde(rename = "ResponseStatusCode", skip_serializing_if = "is_zero")]
    pub response_status_code: u16,
    #[serde(rename = "ResponseBody", skip_serializing_if = "GoBytes::is_empty")]
    pub response_body: GoBytes,
    #[serde(rename = "ResponseHeaders", skip_serializing_if = "BTreeMap::is_empty")]
    pub response_headers: BTreeMap<String, String>,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

/// A Go `[]byte` field: marshalled as standard base64 with padding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoBytes(pub bytes::Bytes);

impl GoBytes {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for GoBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

/// A plugin's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allow: bool,
    pub msg: String,
}

/// One authorization plugin, as the chain calls it.
#[derive(Debug, Clone)]
pub struct AuthzPlugin {
    handle: PluginHandle,
}

impl AuthzPlugin {
    pub fn new(handle: PluginHandle) -> AuthzPlugin {
        AuthzPlugin { handle }
    }

    /// The name in messages: a managed plugin's `name:tag`, a legacy plugin's name.
    pub fn name(&self) -> &str {
        &self.handle.name
    }

    pub fn handle(&self) -> &PluginHandle {
        &self.handle
    }

    pub async fn authorize(
        &self,
        phase: Phase,
        request: &AuthzRequest,
    ) -> Result<Verdict, RpcError> {
        let answer: Value = self
            .handle
            .client
            .call(phase.method(), request, Retry::Never)
            .await?;
        verdict(&answer)
    }
}

/// An answer read as Go decodes it into `authorization.Response`: keys case-insensitive,
/// `null` or missing fields zero (so no `Allow` denies), wrong types an error.
fn verdict(answer: &Value) -> Result<Verdict, RpcError> {
    let mismatch = |value: &Value, field: &str, go_type: &str| {
        RpcError::Decode(gojson::unmarshal_field_type_error(
            gojson::kind_name(value),
            "Response",
            &[field],
            go_type,
        ))
    };
    if !answer.is_object() {
        return Err(RpcError::Decode(gojson::unmarshal_type_error(
            gojson::kind_name(answer),
            "authorization.Response",
        )));
    }
    let allow = match field(answer, "Allow") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(allow)) => *allow,
        Some(other) => return Err(mismatch(other, "Allow", "bool")),
    };
    let msg = match field(answer, "Msg") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(msg)) => msg.clone(),
        Some(other) => return Err(mismatch(other, "Msg", "string")),
    };
    Ok(Verdict { allow, msg })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_keep_moby_order_and_spelling_and_leave_out_empty_ones() {
        let mut request = AuthzRequest {
            request_method: "POST".into(),
            request_uri: "/v1.41/volumes/create?x=1".into(),
            request_body: GoBytes(bytes::Bytes::from_static(b"{\"Name\":\"v1\"}\n")),
            ..Default::default()
        };
        request
            .request_headers
            .insert("Content-Type".into(), "application/json".into());
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"RequestMethod":"POST","RequestUri":"/v1.41/volumes/create?x=1","RequestBody":"eyJOYW1lIjoidjEifQo=","RequestHeaders":{"Content-Type":"application/json"}}"#
        );
        request.user = "alice".into();
        request.user_authn_method = "peercred".into();
        request.response_status_code = 201;
        request.response_body = GoBytes(bytes::Bytes::from_static(b"{}"));
        request
            .response_headers
            .insert("Api-Version".into(), "1.41".into());
        let json = serde_json::to_string(&request).unwrap();
        assert!(
            json.starts_with(r#"{"User":"alice","UserAuthNMethod":"peercred","RequestMethod""#),
            "{json}"
        );
        assert!(json.ends_with(r#""ResponseStatusCode":201,"ResponseBody":"e30=","ResponseHeaders":{"Api-Version":"1.41"}}"#), "{json}");
        assert_eq!(
            serde_json::to_string(&AuthzRequest::default()).unwrap(),
            "{}"
        );
    }

    #[test]
    fn answers_are_read_as_go_reads_them() {
        let v = verdict(&json!({"Allow": true})).unwrap();
        assert!(v.allow && v.msg.is_empty());
        let v = verdict(&json!({"allow": false, "msg": "nope", "Err": "ignored"})).unwrap();
        assert_eq!(
            v,
            Verdict {
                allow: false,
                msg: "nope".into()
            }
        );
        assert!(!verdict(&json!({})).unwrap().allow, "no Allow denies");
        assert!(!verdict(&json!({"Allow": null})).unwrap().allow);
        let e = verdict(&json!({"Allow": "yes"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "json: cannot unmarshal string into Go struct field Response.Allow of type bool"
        );
        let e = verdict(&json!([true])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "json: cannot unmarshal array into Go value of type authorization.Response"
        );
    }
}
