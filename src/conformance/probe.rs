//! The calls of a conformance run: through the plugin's RPC client, answers kept as they came
//! (checks judge status, content type and body themselves), every call's latency journaled.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::rpc::client::{PluginClient, RawReply, RpcError, DEFAULT_REPLY_LIMIT};

/// A plugin's answer, with its JSON when it is JSON.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: bytes::Bytes,
    /// The body as JSON (Go's decoder reads the first value; trailing whitespace is fine).
    pub json: Option<Value>,
    pub elapsed: Duration,
}

impl Reply {
    fn new(raw: RawReply, elapsed: Duration) -> Reply {
        let json = serde_json::from_slice(&raw.body).ok();
        Reply {
            status: raw.status,
            content_type: raw.content_type,
            body: raw.body,
            json,
            elapsed,
        }
    }

    /// A 200 answer whose body is a JSON object with no (or an empty) string `Err`: what
    /// dockerd takes as success.
    pub fn succeeded(&self) -> bool {
        self.status == 200 && self.object().is_some() && self.in_band_error().is_none()
    }

    /// The answer as a JSON object.
    pub fn object(&self) -> Option<&serde_json::Map<String, Value>> {
        self.json.as_ref().and_then(Value::as_object)
    }

    /// A field of the answer, matched case-insensitively as Go's decoder does.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.json.as_ref().and_then(|v| field(v, name))
    }

    /// A string field of the answer (missing or not a string: empty).
    pub fn text(&self, name: &str) -> &str {
        self.field(name).and_then(Value::as_str).unwrap_or("")
    }

    /// A non-empty in-band error (`Err`; IPAM answers use `Error`) of a 200 answer.
    pub fn in_band_error(&self) -> Option<String> {
        ["Err", "Error"]
            .into_iter()
            .filter_map(|k| self.field(k).and_then(Value::as_str))
            .find(|e| !e.is_empty())
            .map(str::to_string)
    }

    /// Whether the answer reports an error, in either way dockerd reads one: a non-200 status,
    /// or a 200 with an in-band error.
    pub fn is_error(&self) -> bool {
        self.status != 200 || self.in_band_error().is_some()
    }

    /// The message of an error answer, if it has one: a JSON answer's non-empty `Err` (or
    /// IPAM's `Error`), a plain-text answer's text. `{"Err":""}` has none (dockerd would show
    /// the raw JSON).
    pub fn message(&self) -> Option<String> {
        if self.json.is_some() {
            return self.in_band_error();
        }
        let text = String::from_utf8_lossy(&self.body).trim().to_string();
        (!text.is_empty()).then_some(text)
    }

    /// The message a user would see for an error answer.
    pub fn error_text(&self) -> String {
        if self.status == 200 {
            return self.in_band_error().unwrap_or_default();
        }
        crate::rpc::client::shorten(&crate::rpc::client::status_message(&self.body))
    }

    /// A short description for the report: `200 {"Err":""}`.
    pub fn summary(&self) -> String {
        const MAX: usize = 160;
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        let mut shown: String = text.chars().take(MAX).collect();
        if text.chars().count() > MAX {
            shown.push('…');
        }
        if shown.is_empty() {
            shown = "(empty body)".into();
        }
        format!("{} {shown}", self.status)
    }

    /// Object keys of the answer (recursively below `path`) not spelled as Docker writes them
    /// (`expected`: the spellings, space-separated), though equal to one case-insensitively:
    /// `MountPoint` for `Mountpoint`.
    pub fn misspelled_keys(&self, expected: &str) -> Vec<String> {
        let expected: Vec<&str> = expected.split_whitespace().collect();
        let mut found = Vec::new();
        if let Some(v) = &self.json {
            misspelled(v, &expected, &mut found);
        }
        found
    }
}

fn misspelled(v: &Value, expected: &[&str], found: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, inner) in map {
                if let Some(want) = expected
                    .iter()
                    .find(|e| e.eq_ignore_ascii_case(k) && **e != k)
                {
                    found.push(format!("{k} (Docker writes {want})"));
                }
                // Free-form maps (Status, Options, Data) are the plugin's own business.
                if !matches!(k.as_str(), "Status" | "Options" | "Data" | "Value") {
                    misspelled(inner, expected, found);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| misspelled(i, expected, found)),
        _ => {}
    }
}

/// A JSON object field, matched case-insensitively (exact spelling first), as Go does.
pub fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    crate::drivers::field(v, name)
}

/// A string field (missing or not a string: empty).
pub fn str_field(v: &Value, name: &str) -> String {
    field(v, name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Calls to one plugin, journaled.
#[derive(Debug)]
pub struct Probe {
    client: Mutex<PluginClient>,
    journal: Mutex<Vec<(String, Duration)>>,
}

impl Probe {
    pub fn new(client: PluginClient) -> Probe {
        Probe {
            client: Mutex::new(client),
            journal: Mutex::new(Vec::new()),
        }
    }

    pub fn client(&self) -> PluginClient {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// After a restart: the plugin's new client.
    pub fn replace_client(&self, client: PluginClient) {
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = client;
    }

    /// `method` with `body` as dockerd sends it (compact JSON and a newline; `null`: empty).
    pub async fn call(&self, method: &str, body: &Value) -> Result<Reply, RpcError> {
        let mut payload = Vec::new();
        if !body.is_null() {
            payload = serde_json::to_vec(body).expect("a JSON value serializes");
            payload.push(b'\n');
        }
        self.raw(method, &payload, &[]).await
    }

    /// `method` with a raw body and extra headers (an empty value leaves a header out).
    pub async fn raw(
        &self,
        method: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<Reply, RpcError> {
        let client = self.client();
        let start = Instant::now();
        let raw = client
            .exchange(method, body, headers, DEFAULT_REPLY_LIMIT)
            .await?;
        let elapsed = start.elapsed();
        self.journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((method.to_string(), elapsed));
        Ok(Reply::new(raw, elapsed))
    }

    /// Latency of every call so far, by method.
    pub fn latencies(&self) -> BTreeMap<String, Vec<Duration>> {
        let mut by_method: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
        for (method, d) in self
            .journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            by_method.entry(method.clone()).or_default().push(*d);
        }
        by_method
    }

    /// Every call's latency so far.
    pub fn all_latencies(&self) -> Vec<Duration> {
        self.journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, d)| *d)
            .collect()
    }
}

/// The `q`-quantile (0..=1) of `samples` (nearest rank).
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// How a call that could not be made reads in the report.
pub fn call_failed(method: &str, e: &RpcError) -> String {
    format!("{method} could not be called: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply::new(
            RawReply {
                status,
                content_type: None,
                body: bytes::Bytes::from(body.to_string()),
            },
            Duration::ZERO,
        )
    }

    #[test]
    fn success_and_errors_read_as_dockerd_reads_them() {
        assert!(reply(200, "{}").succeeded());
        assert!(reply(200, r#"{"Err":""}"#).succeeded());
        assert!(!reply(200, r#"{"Err":"no"}"#).succeeded());
        assert!(!reply(200, "").succeeded());
        assert!(!reply(500, "{}").succeeded());
        assert_eq!(reply(500, r#"{"Err":"boom"}"#).error_text(), "boom");
        assert_eq!(reply(200, r#"{"Error":"ipam"}"#).error_text(), "ipam");
        assert_eq!(
            reply(404, "404 page not found\n").error_text(),
            "404 page not found"
        );
    }

    #[test]
    fn misspelled_keys_are_found_below_the_top() {
        let r = reply(
            200,
            r#"{"Volume":{"MountPoint":"/x","Status":{"mountpoint":1}}}"#,
        );
        assert_eq!(
            r.misspelled_keys("Volume Mountpoint"),
            vec!["MountPoint (Docker writes Mountpoint)"]
        );
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&ms, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&ms, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
