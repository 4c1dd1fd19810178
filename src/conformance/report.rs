//! The report of a run: a table for people, JSON for tools (its schema is
//! `report.schema.json`, served by `berth conformance --schema`), JUnit XML for CI systems.

use std::fmt::Write;
use std::time::Duration;

use serde_json::{json, Value};

use super::{CheckResult, Outcome, Protocol};

/// The JSON schema of [`Report::to_json`].
pub const SCHEMA: &str = include_str!("report.schema.json");

/// Latency of one method over the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    pub method: String,
    pub calls: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone)]
pub struct Report {
    /// The plugin's name (managed: `name:tag`).
    pub plugin: String,
    /// How it was reached (`unix:///…`, a directory, a reference).
    pub target: String,
    pub protocols: Vec<Protocol>,
    pub started: chrono::DateTime<chrono::Utc>,
    pub duration: Duration,
    pub results: Vec<CheckResult>,
    pub latency: Vec<Latency>,
}

impl Report {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.results.iter().filter(|r| r.outcome == outcome).count()
    }

    /// Whether any check failed (the command then exits non-zero).
    pub fn failed(&self) -> bool {
        self.count(Outcome::Fail) > 0
    }

    pub fn summary(&self) -> String {
        format!(
            "{} checks: {} passed, {} failed, {} warnings, {} skipped in {:.2}s",
            self.results.len(),
            self.count(Outcome::Pass),
            self.count(Outcome::Fail),
            self.count(Outcome::Warn),
            self.count(Outcome::Skip),
            self.duration.as_secs_f64()
        )
    }

    /// One line per check (ID, result, time, what came back and, unless it passed, what was
    /// expected), the latency per method, and the summary.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "plugin {} ({})", self.plugin, self.target);
        let width = self
            .results
            .iter()
            .map(|r| r.check.id.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(out, "{:width$}  RESULT  {:>8}  DETAIL", "CHECK", "TIME");
        for r in &self.results {
            let detail = match (r.outcome, r.expected.is_empty()) {
                (Outcome::Pass | Outcome::Skip, _) | (_, true) => one_line(&r.got),
                _ => format!(
                    "expected {}; got {}",
                    one_line(&r.expected),
                    one_line(&r.got)
                ),
            };
            let _ = writeln!(
                out,
                "{:width$}  {:6}  {:>8}  {}",
                r.check.id,
                r.outcome.name(),
                millis(r.duration),
                detail
            );
        }
        if !self.latency.is_empty() {
            let width = self
                .latency
                .iter()
                .map(|l| l.method.len())
                .max()
                .unwrap_or(6)
                .max(6);
            let _ = writeln!(
                out,
                "\n{:width$}  {:>5}  {:>8}  {:>8}  {:>8}",
                "METHOD", "CALLS", "P50", "P99", "MAX"
            );
            for l in &self.latency {
                let _ = writeln!(
                    out,
                    "{:width$}  {:>5}  {:>8}  {:>8}  {:>8}",
                    l.method,
                    l.calls,
                    millis(l.p50),
                    millis(l.p99),
                    millis(l.max)
                );
            }
        }
        let _ = writeln!(out, "\n{}", self.summary());
        out
    }

    /// The report as JSON (see [`SCHEMA`]).
    pub fn to_json(&self) -> Value {
        json!({
            "plugin": self.plugin,
            "target": self.target,
            "protocols": self.protocols.iter().map(|p| p.name()).collect::<Vec<_>>(),
            "started": self.started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "duration_ms": ms(self.duration),
            "summary": {
                "pass": self.count(Outcome::Pass),
                "fail": self.count(Outcome::Fail),
                "warn": self.count(Outcome::Warn),
                "skip": self.count(Outcome::Skip),
            },
            "checks": self.results.iter().map(|r| json!({
                "id": r.check.id,
                "protocol": r.check.protocol.name(),
                "rule": r.check.rule,
                "source": r.check.source,
                "result": r.outcome.name(),
                "expected": r.expected,
                "got": r.got,
                "duration_ms": ms(r.duration),
            })).collect::<Vec<_>>(),
            "latency": self.latency.iter().map(|l| json!({
                "method": l.method,
                "calls": l.calls,
                "p50_ms": ms(l.p50),
                "p99_ms": ms(l.p99),
                "max_ms": ms(l.max),
            })).collect::<Vec<_>>(),
        })
    }

    /// JUnit XML: a test suite per protocol, a test case per check; failures as `<failure>`,
    /// skips as `<skipped>`, warnings as passing cases with the warning in `<system-out>`.
    pub fn to_junit(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"berth conformance {}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            xml(&self.plugin),
            self.results.len(),
            self.count(Outcome::Fail),
            self.count(Outcome::Skip),
            self.duration.as_secs_f64()
        );
        for protocol in Protocol::ALL {
            let cases: Vec<&CheckResult> = self
                .results
                .iter()
                .filter(|r| r.check.protocol == protocol)
                .collect();
            if cases.is_empty() {
                continue;
            }
            let count = |o: Outcome| cases.iter().filter(|r| r.outcome == o).count();
            let time: Duration = cases.iter().map(|r| r.duration).sum();
            let _ = writeln!(
                out,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\" timestamp=\"{}\">",
                protocol.name(),
                cases.len(),
                count(Outcome::Fail),
                count(Outcome::Skip),
                time.as_secs_f64(),
                self.started.format("%Y-%m-%dT%H:%M:%S")
            );
            for r in cases {
                let _ = write!(
                    out,
                    "    <testcase name=\"{}\" classname=\"{}.{}\" time=\"{:.3}\"",
                    xml(r.check.id),
                    xml(&self.plugin),
                    protocol.name(),
                    r.duration.as_secs_f64()
                );
                let body = match r.outcome {
                    Outcome::Pass => String::new(),
                    Outcome::Fail => format!(
                        "      <failure message=\"{}\" type=\"conformance\">{}\n{}\nexpected: {}\ngot: {}</failure>\n",
                        xml(&one_line(&r.got)),
                        xml(r.check.rule),
                        xml(r.check.source),
                        xml(&r.expected),
                        xml(&r.got)
                    ),
                    Outcome::Skip => format!("      <skipped message=\"{}\"/>\n", xml(&one_line(&r.got))),
                    Outcome::Warn => format!(
                        "      <system-out>warning: {}\nexpected: {}\ngot: {}</system-out>\n",
                        xml(r.check.rule),
                        xml(&r.expected),
                        xml(&r.got)
                    ),
                };
                if body.is_empty() {
                    out.push_str("/>\n");
                } else {
                    let _ = write!(out, ">\n{body}    </testcase>\n");
                }
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn millis(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1e3)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Text for XML attributes and content: markup escaped, characters XML 1.0 forbids dropped.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::registry;

    pub(crate) fn sample() -> Report {
        let result = |id: &str, outcome, got: &str| CheckResult {
            check: registry::find(id),
            outcome,
            expected: "a JSON object".into(),
            got: got.into(),
            duration: Duration::from_micros(1500),
        };
        Report {
            plugin: "acme/<weird>&\"name\"".into(),
            target: "unix:///tmp/x.sock".into(),
            protocols: vec![Protocol::Volume],
            started: chrono::Utc::now(),
            duration: Duration::from_millis(42),
            results: vec![
                result("transport.activate.status", Outcome::Pass, "200"),
                result("volume.create.basic", Outcome::Fail, "500 <html>\u{1}&"),
                result("volume.get.field-case", Outcome::Warn, "MountPoint"),
                result("volume.mount.host-visible", Outcome::Skip, "not reached"),
            ],
            latency: vec![Latency {
                method: "VolumeDriver.List".into(),
                calls: 3,
                p50: Duration::from_millis(1),
                p99: Duration::from_millis(2),
                max: Duration::from_millis(2),
            }],
        }
    }

    /// Checks `value` against the subset of JSON Schema `report.schema.json` uses.
    pub(crate) fn validate(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
        if let Some(t) = schema.get("type").and_then(Value::as_str) {
            let ok = match t {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_u64() || value.is_i64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                other => return Err(format!("schema type {other} not supported")),
            };
            if !ok {
                return Err(format!("{path}: not a {t}: {value}"));
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                return Err(format!("{path}: {value} not in {allowed:?}"));
            }
        }
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if value.as_f64().is_some_and(|v| v < min) {
                return Err(format!("{path}: {value} below {min}"));
            }
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for key in required.iter().filter_map(Value::as_str) {
                if value.get(key).is_none() {
                    return Err(format!("{path}: missing {key}"));
                }
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            let extra_allowed = schema.get("additionalProperties") != Some(&Value::Bool(false));
            for (key, v) in value.as_object().into_iter().flatten() {
                match props.get(key) {
                    Some(s) => validate(s, v, &format!("{path}.{key}"))?,
                    None if !extra_allowed => return Err(format!("{path}: unexpected {key}")),
                    None => {}
                }
            }
        }
        if let Some(items) = schema.get("items") {
            for (i, v) in value.as_array().into_iter().flatten().enumerate() {
                validate(items, v, &format!("{path}[{i}]"))?;
            }
        }
        Ok(())
    }

    #[test]
    fn json_report_follows_its_schema() {
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        let report = sample().to_json();
        validate(&schema, &report, "$").unwrap();
        assert_eq!(report["summary"]["fail"], 1);
        assert_eq!(report["checks"][1]["result"], "fail");
        let mut broken = report.clone();
        broken["checks"][0]["result"] = "maybe".into();
        assert!(validate(&schema, &broken, "$").is_err());
    }

    #[test]
    fn junit_is_escaped_and_counts_add_up() {
        let xml = sample().to_junit();
        assert!(xml.starts_with("<?xml"));
        assert!(xml.contains("tests=\"4\" failures=\"1\" skipped=\"1\""));
        assert!(xml.contains("acme/&lt;weird&gt;&amp;&quot;name&quot;"));
        assert!(!xml.contains('\u{1}'));
        assert!(xml.contains("<skipped message=\"not reached\"/>"));
        assert_eq!(xml.matches("<testcase ").count(), 4);
        assert_eq!(
            xml.matches("<testsuite ").count(),
            xml.matches("</testsuite>").count()
        );
    }

    #[test]
    fn table_names_every_check_and_the_summary() {
        let report = sample();
        let table = report.to_table();
        for r in &report.results {
            assert!(table.contains(r.check.id));
        }
        assert!(table.contains("expected a JSON object; got 500 <html>"));
        assert!(table.contains("VolumeDriver.List"));
        assert!(table.contains("4 checks: 1 passed, 1 failed, 1 warnings, 1 skipped"));
        assert!(report.failed());
    }
}
