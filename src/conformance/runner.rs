//! One conformance run: activation and the transport checks (they tell which protocols apply),
//! the protocol scenarios in parallel (each creates and removes its own objects, so they do not
//! disturb each other), then the checks that disturb the plugin (restart) and those computed
//! from the whole run (latency).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use super::probe::{quantile, Probe, Reply};
use super::registry::{self, Check, Selection};
use super::report::{Latency, Report};
use super::target::Target;
use super::{CheckResult, Options, Outcome, Protocol};
use crate::rpc::handle::PluginHandle;

/// What a scenario works with.
pub struct Context<'a> {
    pub probe: &'a Probe,
    pub plugin: &'a PluginHandle,
    pub options: &'a Options,
    /// Whether paths the plugin reports can be looked at on this host (not for a plugin
    /// reached over TCP on another machine).
    pub host_visible: bool,
}

impl Context<'_> {
    /// A managed plugin (dockerd never activates those; their protocols are in the config).
    pub fn managed(&self) -> bool {
        self.plugin.managed_id().is_some()
    }

    /// `method` with a JSON `body`; a call that could not be made reads as the report shows it.
    pub async fn call(&self, method: &str, body: serde_json::Value) -> Result<Reply, String> {
        self.probe
            .call(method, &body)
            .await
            .map_err(|e| super::probe::call_failed(method, &e))
    }

    /// A name unique to this run, for volumes, networks and files the checks create.
    pub fn unique(&self, what: &str) -> String {
        format!("berth-conformance-{what}-{}", crate::fsutil::random_hex(6))
    }
}

/// The verdicts of one scenario.
pub struct Recorder<'a> {
    protocol: Protocol,
    selection: &'a Selection,
    results: Vec<CheckResult>,
    last: Instant,
    /// Why the rest of the scenario cannot run (its unrecorded checks are skipped with it).
    blocked: Option<String>,
}

impl<'a> Recorder<'a> {
    pub fn new(protocol: Protocol, selection: &'a Selection) -> Recorder<'a> {
        Recorder {
            protocol,
            selection,
            results: Vec::new(),
            last: Instant::now(),
            blocked: None,
        }
    }

    /// Records a verdict; the time since the previous one is the check's.
    pub fn record(
        &mut self,
        id: &str,
        outcome: Outcome,
        expected: impl Into<String>,
        got: impl Into<String>,
    ) {
        let check = registry::find(id);
        debug_assert_eq!(
            check.protocol, self.protocol,
            "{id} recorded in another scenario"
        );
        let now = Instant::now();
        let duration = now - self.last;
        self.last = now;
        if !self.selection.selects(id) || self.results.iter().any(|r| r.check.id == id) {
            return;
        }
        self.results.push(CheckResult {
            check,
            outcome,
            expected: expected.into(),
            got: got.into(),
            duration,
        });
    }

    pub fn pass(&mut self, id: &str, got: impl Into<String>) {
        self.record(id, Outcome::Pass, "", got);
    }

    pub fn skip(&mut self, id: &str, why: impl Into<String>) {
        self.record(id, Outcome::Skip, "", why);
    }

    /// Pass when `ok`, else `severity` (fail or warn).
    pub fn expect(
        &mut self,
        id: &str,
        ok: bool,
        severity: Outcome,
        expected: impl Into<String>,
        got: impl Into<String>,
    ) -> bool {
        let expected = expected.into();
        if ok {
            self.record(id, Outcome::Pass, expected, got);
        } else {
            self.record(id, severity, expected, got);
        }
        ok
    }

    /// Pass when `ok`, else fail.
    pub fn check(
        &mut self,
        id: &str,
        ok: bool,
        expected: impl Into<String>,
        got: impl Into<String>,
    ) -> bool {
        self.expect(id, ok, Outcome::Fail, expected, got)
    }

    /// Pass when the call got an answer saying it succeeded, else fail with the answer or
    /// with why none came.
    pub fn succeeded(&mut self, id: &str, answer: &Result<Reply, String>) -> bool {
        self.answered(id, answer, Reply::succeeded, "success")
    }

    /// Pass when the call got an answer that is `ok`, else fail with the answer or with why
    /// none came.
    pub fn answered(
        &mut self,
        id: &str,
        answer: &Result<Reply, String>,
        ok: impl FnOnce(&Reply) -> bool,
        expected: impl Into<String>,
    ) -> bool {
        match answer {
            Ok(r) => self.check(id, ok(r), expected, r.summary()),
            Err(e) => self.check(id, false, "an answer", e),
        }
    }

    /// A field-case check: warns with the `misspelled` keys, passes with `spelled_right` when
    /// there are none (a wrong case only works in dockerd through Go's case-blind decoder).
    pub fn spelling(
        &mut self,
        id: &str,
        misspelled: Vec<String>,
        spelled_right: impl Into<String>,
    ) {
        let ok = misspelled.is_empty();
        let got = if ok {
            spelled_right.into()
        } else {
            misspelled.join(", ")
        };
        self.expect(id, ok, Outcome::Warn, "Docker's spelling", got);
    }

    /// The rest of the scenario cannot run: every check not yet recorded is skipped with `why`.
    pub fn block(&mut self, why: impl Into<String>) {
        if self.blocked.is_none() {
            self.blocked = Some(why.into());
        }
    }

    /// Starts timing the next check from now (after a pause in which other scenarios ran).
    pub fn restart_clock(&mut self) {
        self.last = Instant::now();
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked.is_some()
    }

    /// Whether any check whose ID starts with `prefix` is selected (so a costly step can be
    /// left out when none is).
    pub fn wants(&self, prefix: &str) -> bool {
        registry::all().any(|c| c.id.starts_with(prefix) && self.selection.selects(c.id))
    }

    /// The verdicts, every selected check of the protocol included: unrecorded ones skipped.
    pub fn finish(mut self, unreached: &str) -> Vec<CheckResult> {
        let recorded: HashSet<&str> = self.results.iter().map(|r| r.check.id).collect();
        let why = self
            .blocked
            .clone()
            .unwrap_or_else(|| unreached.to_string());
        let missing: Vec<&'static Check> = registry::all()
            .filter(|c| c.protocol == self.protocol)
            .filter(|c| self.selection.selects(c.id) && !recorded.contains(c.id))
            .collect();
        for check in missing {
            self.results.push(CheckResult {
                check,
                outcome: Outcome::Skip,
                expected: String::new(),
                got: why.clone(),
                duration: Duration::ZERO,
            });
        }
        self.results
    }
}

/// Runs the selected checks against `target`.
pub async fn run(target: &Target, options: &Options) -> Report {
    let started = chrono::Utc::now();
    let clock = Instant::now();
    let selection = Selection::new(&options.checks);
    let probe = Probe::new(target.plugin.client.clone());
    let ctx = Context {
        probe: &probe,
        plugin: &target.plugin,
        options,
        host_visible: target.host_visible,
    };

    let mut transport_rec = Recorder::new(Protocol::Transport, &selection);
    let implements = super::transport::activation(&ctx, &mut transport_rec).await;
    let declared: Vec<Protocol> = match &target.declared {
        Some(from_config) => from_config.clone(),
        None => implements
            .iter()
            .filter_map(|i| Protocol::from_implements(i))
            .collect(),
    };
    let chosen: Vec<Protocol> = match &options.protocols {
        Some(asked) => asked.clone(),
        None => declared.clone(),
    };
    if selection.any_of(Protocol::Transport) {
        super::transport::run(
            &ctx,
            &mut transport_rec,
            &declared,
            &implements,
            target.declared.as_deref(),
        )
        .await;
    }

    let scenarios = [
        Protocol::Volume,
        Protocol::Network,
        Protocol::Ipam,
        Protocol::Authz,
        Protocol::Log,
    ]
    .into_iter()
    .filter(|p| chosen.contains(p) && selection.any_of(*p))
    .map(|protocol| {
        let ctx = &ctx;
        let selection = &selection;
        let declared = &declared;
        async move {
            let mut rec = Recorder::new(protocol, selection);
            if !declared.contains(&protocol) {
                rec.block(format!(
                    "the plugin does not declare {}",
                    protocol.implements().unwrap_or_default()
                ));
            } else {
                match protocol {
                    Protocol::Volume => super::volume::run(ctx, &mut rec).await,
                    Protocol::Network => super::network::run(ctx, &mut rec).await,
                    Protocol::Ipam => super::ipam::run(ctx, &mut rec).await,
                    Protocol::Authz => super::authz::run(ctx, &mut rec).await,
                    Protocol::Log => super::log::run(ctx, &mut rec).await,
                    Protocol::Transport => {}
                }
            }
            rec.finish("not reached")
        }
    });
    let scenario_results = futures_util::future::join_all(scenarios).await;

    transport_rec.restart_clock();
    super::transport::after_scenarios(&ctx, &mut transport_rec, target, &declared).await;
    let mut results = transport_rec.finish("not reached");
    results.extend(scenario_results.into_iter().flatten());
    // Registry order.
    let order: BTreeMap<&str, usize> = registry::all()
        .enumerate()
        .map(|(i, c)| (c.id, i))
        .collect();
    results.sort_by_key(|r| order.get(r.check.id).copied().unwrap_or(usize::MAX));

    let latency = probe
        .latencies()
        .into_iter()
        .map(|(method, samples)| Latency {
            calls: samples.len(),
            p50: quantile(&samples, 0.5),
            p99: quantile(&samples, 0.99),
            max: samples.iter().max().copied().unwrap_or_default(),
            method,
        })
        .collect();
    Report {
        plugin: target.plugin.name.clone(),
        target: target.description.clone(),
        protocols: chosen,
        started,
        duration: clock.elapsed(),
        results,
        latency,
    }
}
