//! Every check: its ID, protocol, rule and source, in the order the report lists them.

use super::Protocol;
use sources::*;

/// One check.
#[derive(Debug, PartialEq, Eq)]
pub struct Check {
    /// `<protocol>.<area>.<what>`.
    pub id: &'static str,
    pub protocol: Protocol,
    /// The rule, in one line.
    pub rule: &'static str,
    /// Where the rule comes from: the protocol documentation, or the daemon code that relies on
    /// it.
    pub source: &'static str,
}

/// Sources the checks cite.
pub mod sources {
    pub const PLUGIN_API: &str = "https://docs.docker.com/engine/extend/plugin_api/";
    pub const PLUGIN_CLIENT: &str =
        "https://github.com/moby/moby/blob/master/pkg/plugins/client.go";
    pub const PLUGIN_ERRORS: &str =
        "https://github.com/moby/moby/blob/master/pkg/plugins/errors.go";
    pub const SDK_HANDLER: &str =
        "https://github.com/docker/go-plugins-helpers/blob/master/sdk/handler.go";
    pub const VOLUME_DOC: &str = "https://docs.docker.com/engine/extend/plugins_volume/";
    pub const VOLUME_ADAPTER: &str =
        "https://github.com/moby/moby/blob/master/volume/drivers/adapter.go";
    pub const VOLUME_PROXY: &str =
        "https://github.com/moby/moby/blob/master/volume/drivers/proxy.go";
    pub const VOLUME_STORE: &str =
        "https://github.com/moby/moby/blob/master/volume/service/store.go";
    pub const VOLUME_CERT: &str = "https://github.com/cloudfoundry/volume_driver_cert";
    pub const NETWORK_DOC: &str =
        "https://github.com/moby/moby/blob/master/libnetwork/docs/remote.md";
    pub const NETWORK_DRIVER: &str =
        "https://github.com/moby/moby/blob/master/libnetwork/drivers/remote/driver.go";
    pub const IPAM_DOC: &str = "https://github.com/moby/moby/blob/master/libnetwork/docs/ipam.md";
    pub const IPAM_REMOTE: &str =
        "https://github.com/moby/moby/blob/master/libnetwork/ipams/remote/remote.go";
    pub const AUTHZ_DOC: &str = "https://docs.docker.com/engine/extend/plugins_authorization/";
    pub const AUTHZ_PLUGIN: &str =
        "https://github.com/moby/moby/blob/master/pkg/authorization/plugin.go";
    pub const AUTHZ_API: &str = "https://github.com/moby/moby/blob/master/pkg/authorization/api.go";
    pub const LOG_DOC: &str = "https://docs.docker.com/engine/extend/plugins_logging/";
    pub const LOG_PLUGIN: &str = "https://github.com/moby/moby/blob/master/daemon/logger/plugin.go";
    pub const LOG_ADAPTER: &str =
        "https://github.com/moby/moby/blob/master/daemon/logger/adapter.go";
    pub const LOG_ENTRY: &str =
        "https://github.com/moby/moby/blob/master/api/types/plugins/logdriver/entry.proto";
}

const T: Protocol = Protocol::Transport;
const V: Protocol = Protocol::Volume;
const N: Protocol = Protocol::Network;
const I: Protocol = Protocol::Ipam;
const A: Protocol = Protocol::Authz;
const L: Protocol = Protocol::Log;

/// Every check, protocol by protocol, in the order the report lists them.
const CHECKS: &[Check] = &[
    // Transport and activation
    Check { id: "transport.activate.status", protocol: T, rule: "Plugin.Activate with an empty body answers 200 (managed plugins: dockerd does not call it, so only a warning)", source: PLUGIN_API },
    Check { id: "transport.activate.json", protocol: T, rule: "the Plugin.Activate answer is a JSON object", source: PLUGIN_API },
    Check { id: "transport.activate.implements", protocol: T, rule: "Implements is a non-empty list of strings", source: PLUGIN_API },
    Check { id: "transport.activate.known-names", protocol: T, rule: "every Implements entry is a protocol name spelled as Docker compares it (case-sensitive: VolumeDriver, NetworkDriver, IpamDriver, authz, LogDriver, MetricsCollector)", source: PLUGIN_CLIENT },
    Check { id: "transport.activate.matches-config", protocol: T, rule: "a managed plugin's Implements names the protocols of its config's Interface.Types", source: PLUGIN_API },
    Check { id: "transport.accept.v1-2", protocol: T, rule: "a call with Docker's Accept: application/vnd.docker.plugins.v1.2+json is answered", source: PLUGIN_CLIENT },
    Check { id: "transport.accept.other", protocol: T, rule: "calls without Accept or with Accept: application/json are answered too (plugins must not validate Accept)", source: PLUGIN_API },
    Check { id: "transport.content-type.absent", protocol: T, rule: "a call without Content-Type (as dockerd sends every call) is answered", source: PLUGIN_CLIENT },
    Check { id: "transport.content-type.json", protocol: T, rule: "a call with Content-Type: application/json is answered as without it", source: PLUGIN_API },
    Check { id: "transport.host.any", protocol: T, rule: "the Host header is not validated (docker 20.10 sent the socket path, current moby plugin.moby.localhost)", source: PLUGIN_CLIENT },
    Check { id: "transport.unknown-method.404", protocol: T, rule: "an unknown method of a known interface answers 404 (dockerd takes 404 as \"not implemented\" for optional network methods)", source: NETWORK_DRIVER },
    Check { id: "transport.unknown-interface.404", protocol: T, rule: "a method of an interface the plugin does not implement answers 404", source: SDK_HANDLER },
    Check { id: "transport.reply.nonempty", protocol: T, rule: "a 200 answer has a body (an empty one reads as EOF in dockerd: always send at least {})", source: PLUGIN_CLIENT },
    Check { id: "transport.reply.json", protocol: T, rule: "a 200 answer is one JSON object", source: PLUGIN_CLIENT },
    Check { id: "transport.reply.content-type", protocol: T, rule: "answers say they are JSON (Content-Type application/json or application/vnd.docker.plugins.v1.x+json)", source: SDK_HANDLER },
    Check { id: "transport.error.message", protocol: T, rule: "an error answer carries a message (users see \"<Method>: <message>\")", source: PLUGIN_ERRORS },
    Check { id: "transport.error.json", protocol: T, rule: "a non-200 error answer is JSON {\"Err\":\"<message>\"} (dockerd shows anything else raw)", source: PLUGIN_CLIENT },
    Check { id: "transport.malformed.refused", protocol: T, rule: "a request body that is not JSON is refused with an error answer, not taken as success", source: SDK_HANDLER },
    Check { id: "transport.malformed.survives", protocol: T, rule: "the plugin still answers after malformed and empty requests", source: SDK_HANDLER },
    Check { id: "transport.empty-body", protocol: T, rule: "a method that needs arguments, sent an empty body, answers an error rather than acting on nothing", source: SDK_HANDLER },
    Check { id: "transport.parallel", protocol: T, rule: "parallel calls are all answered (dockerd calls plugins from many goroutines at once)", source: VOLUME_STORE },
    Check { id: "transport.latency.p50", protocol: T, rule: "the median call is answered within the p50 budget (--latency-p50)", source: VOLUME_PROXY },
    Check { id: "transport.latency.p99", protocol: T, rule: "99% of calls are answered within the p99 budget (--latency-p99)", source: VOLUME_PROXY },
    Check { id: "transport.restart", protocol: T, rule: "after the harness restarts the plugin, it answers again on its socket", source: PLUGIN_API },
    // VolumeDriver
    Check { id: "volume.capabilities.answers", protocol: V, rule: "VolumeDriver.Capabilities {} answers 200 (else dockerd assumes local scope)", source: VOLUME_ADAPTER },
    Check { id: "volume.capabilities.scope", protocol: V, rule: "Capabilities.Scope is \"local\" or \"global\"", source: VOLUME_DOC },
    Check { id: "volume.create.basic", protocol: V, rule: "Create {Name, Opts} of a new name succeeds", source: VOLUME_DOC },
    Check { id: "volume.create.bad-opts", protocol: V, rule: "Create with an option the driver does not know is refused with a message (dockerd's local driver refuses unknown options)", source: VOLUME_DOC },
    Check { id: "volume.create.parallel", protocol: V, rule: "volumes created by parallel calls all exist afterwards", source: VOLUME_STORE },
    Check { id: "volume.get.created", protocol: V, rule: "Get of a created volume answers Volume with its Name", source: VOLUME_DOC },
    Check { id: "volume.get.created-at", protocol: V, rule: "Volume.CreatedAt, when given, is RFC 3339 (dockerd fails the call otherwise)", source: VOLUME_ADAPTER },
    Check { id: "volume.get.status", protocol: V, rule: "Volume.Status, when given, is a JSON object", source: VOLUME_DOC },
    Check { id: "volume.get.field-case", protocol: V, rule: "fields are spelled as Docker writes them (Volume, Name, Mountpoint, CreatedAt, Status, Err); dockerd takes MountPoint only because Go's decoder ignores case", source: VOLUME_PROXY },
    Check { id: "volume.get.adapter", protocol: V, rule: "berth's VolumeDriver adapter (as dockerd's) reads the Get answer", source: VOLUME_ADAPTER },
    Check { id: "volume.get.unknown", protocol: V, rule: "Get of an unknown volume answers an error or Volume: null, never a volume", source: VOLUME_STORE },
    Check { id: "volume.list.contains", protocol: V, rule: "List includes a created volume", source: VOLUME_DOC },
    Check { id: "volume.list.shape", protocol: V, rule: "List answers Volumes: a list of objects with a string Name", source: VOLUME_DOC },
    Check { id: "volume.list.field-case", protocol: V, rule: "List fields are spelled as Docker writes them (Volumes, Name, Mountpoint)", source: VOLUME_PROXY },
    Check { id: "volume.list.adapter", protocol: V, rule: "berth's VolumeDriver adapter reads the List answer", source: VOLUME_ADAPTER },
    Check { id: "volume.path.before-mount", protocol: V, rule: "Path of an unmounted volume answers (an empty Mountpoint is fine); dockerd asks it for docker cp and inspect", source: VOLUME_DOC },
    Check { id: "volume.mount.answers", protocol: V, rule: "Mount {Name, ID} answers a non-empty Mountpoint", source: VOLUME_DOC },
    Check { id: "volume.mount.absolute", protocol: V, rule: "the Mountpoint is an absolute path", source: VOLUME_DOC },
    Check { id: "volume.mount.host-visible", protocol: V, rule: "the Mountpoint is a directory on the host (managed plugins: through the rootfs or the propagated mount)", source: VOLUME_ADAPTER },
    Check { id: "volume.mount.write-read", protocol: V, rule: "a file written in the mounted directory reads back", source: VOLUME_CERT },
    Check { id: "volume.path.after-mount", protocol: V, rule: "Path of a mounted volume answers Mount's Mountpoint", source: VOLUME_DOC },
    Check { id: "volume.mount.second-id", protocol: V, rule: "a second Mount with another ID answers the same Mountpoint", source: VOLUME_DOC },
    Check { id: "volume.unmount.first-id", protocol: V, rule: "Unmount with the first ID succeeds", source: VOLUME_DOC },
    Check { id: "volume.unmount.keeps-other", protocol: V, rule: "after one of two IDs unmounted, the data is still there for the other (mounts are counted per ID)", source: VOLUME_CERT },
    Check { id: "volume.unmount.last-id", protocol: V, rule: "Unmount with the last ID succeeds", source: VOLUME_DOC },
    Check { id: "volume.mount.remount-data", protocol: V, rule: "data written before the last Unmount is there after the next Mount", source: VOLUME_CERT },
    Check { id: "volume.mount.unknown", protocol: V, rule: "Mount of an unknown volume answers an error (dockerd then does not start the container)", source: VOLUME_DOC },
    Check { id: "volume.remove.mounted", protocol: V, rule: "Remove of a mounted volume is refused", source: VOLUME_CERT },
    Check { id: "volume.remove.unmounted", protocol: V, rule: "Remove of an unmounted volume succeeds", source: VOLUME_DOC },
    Check { id: "volume.remove.gone", protocol: V, rule: "a removed volume is gone: Get answers no volume and List lacks it", source: VOLUME_STORE },
    Check { id: "volume.remove.unknown", protocol: V, rule: "Remove of an unknown volume answers an error", source: VOLUME_DOC },
    // NetworkDriver
    Check { id: "network.capabilities.answers", protocol: N, rule: "NetworkDriver.GetCapabilities (empty body) answers 200 (dockerd refuses to register the driver otherwise)", source: NETWORK_DRIVER },
    Check { id: "network.capabilities.scope", protocol: N, rule: "Scope is \"local\" or \"global\"", source: NETWORK_DRIVER },
    Check { id: "network.capabilities.connectivity-scope", protocol: N, rule: "ConnectivityScope, when given, is \"local\" or \"global\"", source: NETWORK_DRIVER },
    Check { id: "network.field-case", protocol: N, rule: "fields are spelled as Docker writes them (Scope, Interface, InterfaceName, SrcName, DstPrefix, Gateway, StaticRoutes, Err)", source: NETWORK_DOC },
    Check { id: "network.create.ipv4", protocol: N, rule: "CreateNetwork with IPv4Data (Pool, Gateway, AuxAddresses in CIDR form) succeeds", source: NETWORK_DOC },
    Check { id: "network.create.ipv6", protocol: N, rule: "CreateNetwork with IPv4Data and IPv6Data succeeds", source: NETWORK_DOC },
    Check { id: "network.endpoint.create", protocol: N, rule: "CreateEndpoint with an Address and MacAddress given succeeds", source: NETWORK_DOC },
    Check { id: "network.endpoint.keeps-address", protocol: N, rule: "the answer does not change a given Address or MacAddress (dockerd fails with \"driver modified interface address\")", source: NETWORK_DRIVER },
    Check { id: "network.endpoint.no-address", protocol: N, rule: "CreateEndpoint without a MacAddress succeeds; a MacAddress the driver fills in is valid", source: NETWORK_DOC },
    Check { id: "network.endpoint.unknown-network", protocol: N, rule: "CreateEndpoint in an unknown network answers an error", source: NETWORK_DOC },
    Check { id: "network.endpoint.oper-info", protocol: N, rule: "EndpointOperInfo answers 200 with Value an object (or nothing)", source: NETWORK_DOC },
    Check { id: "network.join.answers", protocol: N, rule: "Join answers InterfaceName {SrcName, DstPrefix}", source: NETWORK_DOC },
    Check { id: "network.join.interface-exists", protocol: N, rule: "the SrcName interface exists on the host, for dockerd to move into the sandbox", source: NETWORK_DOC },
    Check { id: "network.join.gateway", protocol: N, rule: "Gateway and GatewayIPv6, when given, are plain IP addresses", source: NETWORK_DOC },
    Check { id: "network.join.routes", protocol: N, rule: "StaticRoutes have a CIDR Destination, RouteType 0 (with a NextHop) or 1", source: NETWORK_DOC },
    Check { id: "network.external.program", protocol: N, rule: "ProgramExternalConnectivity answers 200, or 404 when not implemented", source: NETWORK_DRIVER },
    Check { id: "network.external.revoke", protocol: N, rule: "RevokeExternalConnectivity answers 200, or 404 when not implemented", source: NETWORK_DRIVER },
    Check { id: "network.leave", protocol: N, rule: "Leave succeeds", source: NETWORK_DOC },
    Check { id: "network.endpoint.delete", protocol: N, rule: "DeleteEndpoint succeeds", source: NETWORK_DOC },
    Check { id: "network.delete", protocol: N, rule: "DeleteNetwork succeeds", source: NETWORK_DOC },
    // IpamDriver
    Check { id: "ipam.capabilities.answers", protocol: I, rule: "IpamDriver.GetCapabilities (empty body) answers 200 (else dockerd registers default capabilities)", source: IPAM_REMOTE },
    Check { id: "ipam.capabilities.shape", protocol: I, rule: "RequiresMACAddress and RequiresRequestReplay, when given, are booleans", source: IPAM_DOC },
    Check { id: "ipam.address-spaces", protocol: I, rule: "GetDefaultAddressSpaces answers non-empty LocalDefaultAddressSpace and GlobalDefaultAddressSpace", source: IPAM_DOC },
    Check { id: "ipam.field-case", protocol: I, rule: "fields are spelled as Docker writes them (PoolID, Pool, Address, Data, Error)", source: IPAM_DOC },
    Check { id: "ipam.pool.any", protocol: I, rule: "RequestPool without a Pool answers a PoolID and a Pool in CIDR form", source: IPAM_DOC },
    Check { id: "ipam.pool.requested", protocol: I, rule: "RequestPool of a given Pool answers that Pool", source: IPAM_DOC },
    Check { id: "ipam.pool.overlap", protocol: I, rule: "a second RequestPool of a Pool already given out is refused (two networks on one range would collide)", source: IPAM_DOC },
    Check { id: "ipam.pool.v6", protocol: I, rule: "RequestPool with V6 answers an IPv6 Pool", source: IPAM_DOC },
    Check { id: "ipam.address.any", protocol: I, rule: "RequestAddress without an Address answers one", source: IPAM_DOC },
    Check { id: "ipam.address.cidr", protocol: I, rule: "addresses come in CIDR form (10.0.0.2/24), as dockerd parses them", source: IPAM_REMOTE },
    Check { id: "ipam.address.in-pool", protocol: I, rule: "addresses lie inside their pool", source: IPAM_DOC },
    Check { id: "ipam.address.distinct", protocol: I, rule: "two requests answer two different addresses", source: IPAM_DOC },
    Check { id: "ipam.address.specific", protocol: I, rule: "RequestAddress of a given free Address answers that address", source: IPAM_DOC },
    Check { id: "ipam.address.taken", protocol: I, rule: "RequestAddress of an address already given out is refused", source: IPAM_DOC },
    Check { id: "ipam.address.gateway", protocol: I, rule: "RequestAddress with RequestAddressType com.docker.network.gateway answers an address in the pool", source: IPAM_DOC },
    Check { id: "ipam.address.release", protocol: I, rule: "ReleaseAddress succeeds and the address can be requested again", source: IPAM_DOC },
    Check { id: "ipam.address.exhaustion", protocol: I, rule: "a full pool refuses further requests with an error, never repeating or straying outside the pool", source: IPAM_DOC },
    Check { id: "ipam.address.unknown-pool", protocol: I, rule: "RequestAddress in an unknown PoolID answers an error", source: IPAM_DOC },
    Check { id: "ipam.error-field", protocol: I, rule: "in-band errors use Error (IPAM's field), not Err: dockerd takes a 200 with only Err set as success", source: IPAM_REMOTE },
    Check { id: "ipam.pool.release", protocol: I, rule: "ReleasePool of a pool succeeds", source: IPAM_DOC },
    // AuthZPlugin
    Check { id: "authz.req.answers", protocol: A, rule: "AuthZPlugin.AuthZReq for GET /_ping answers 200", source: AUTHZ_DOC },
    Check { id: "authz.req.shape", protocol: A, rule: "the answer is {\"Allow\":<bool>,\"Msg\":<string>} (Allow a JSON boolean)", source: AUTHZ_API },
    Check { id: "authz.req.field-case", protocol: A, rule: "fields are spelled as Docker writes them (Allow, Msg, Err)", source: AUTHZ_API },
    Check { id: "authz.req.minimal", protocol: A, rule: "a request with only RequestMethod and RequestUri (no user, headers or body: the daemon omits empty fields) is answered", source: AUTHZ_PLUGIN },
    Check { id: "authz.req.body", protocol: A, rule: "a request with a base64 RequestBody and RequestHeaders is answered", source: AUTHZ_API },
    Check { id: "authz.req.large-body", protocol: A, rule: "a request with a body near the daemon's 4 MiB limit is answered within the call deadline", source: AUTHZ_PLUGIN },
    Check { id: "authz.req.tls-user", protocol: A, rule: "a request with User, UserAuthNMethod and RequestPeerCertificates is answered", source: AUTHZ_API },
    Check { id: "authz.req.deny-message", protocol: A, rule: "a denial says why in Msg (users see \"authorization denied by plugin <name>: <Msg>\")", source: AUTHZ_PLUGIN },
    Check { id: "authz.req.consistent", protocol: A, rule: "the same request gets the same decision twice", source: AUTHZ_DOC },
    Check { id: "authz.res.answers", protocol: A, rule: "AuthZPlugin.AuthZRes with ResponseStatusCode, headers and a base64 body answers {\"Allow\":<bool>}", source: AUTHZ_DOC },
    Check { id: "authz.res.no-status", protocol: A, rule: "AuthZRes without ResponseStatusCode (an implicit 200) is answered", source: AUTHZ_PLUGIN },
    Check { id: "authz.err.not-in-200", protocol: A, rule: "errors come as non-200 answers: dockerd ignores Err in a 200 answer", source: AUTHZ_PLUGIN },
    Check { id: "authz.deadline", protocol: A, rule: "decisions come within the p99 budget: every API request waits for them", source: AUTHZ_PLUGIN },
    // LogDriver
    Check { id: "log.capabilities.answers", protocol: L, rule: "LogDriver.Capabilities (empty body) answers 200 (else dockerd assumes no capabilities)", source: LOG_PLUGIN },
    Check { id: "log.capabilities.shape", protocol: L, rule: "the answer is {\"Cap\":{\"ReadLogs\":<bool>}}", source: LOG_DOC },
    Check { id: "log.field-case", protocol: L, rule: "fields are spelled as Docker writes them (Cap, ReadLogs, Err)", source: LOG_PLUGIN },
    Check { id: "log.start.answers", protocol: L, rule: "StartLogging {File, Info} on a FIFO the daemon made answers success", source: LOG_DOC },
    Check { id: "log.start.opens-fifo", protocol: L, rule: "after StartLogging the plugin holds the FIFO open for reading", source: LOG_DOC },
    Check { id: "log.start.consumes", protocol: L, rule: "the plugin drains the FIFO: more entries than a pipe holds are all written in time", source: LOG_ADAPTER },
    Check { id: "log.start.bad-file", protocol: L, rule: "StartLogging of a path that is no FIFO answers an error", source: LOG_DOC },
    Check { id: "log.readlogs.round-trip", protocol: L, rule: "ReadLogs (Tail -1) answers every entry written, in order, with source and time", source: LOG_DOC },
    Check { id: "log.readlogs.framing", protocol: L, rule: "ReadLogs answers [4-byte big-endian length][protobuf LogEntry] frames, ending at a frame boundary", source: LOG_ENTRY },
    Check { id: "log.readlogs.tail", protocol: L, rule: "ReadLogs with Tail N answers the last N entries", source: LOG_DOC },
    Check { id: "log.readlogs.since", protocol: L, rule: "ReadLogs with Since answers no entry before it", source: LOG_DOC },
    Check { id: "log.readlogs.until", protocol: L, rule: "ReadLogs with Until answers no entry after it", source: LOG_DOC },
    Check { id: "log.readlogs.follow", protocol: L, rule: "ReadLogs with Follow keeps the stream open and sends entries written later", source: LOG_DOC },
    Check { id: "log.stop.answers", protocol: L, rule: "StopLogging {File} answers success", source: LOG_DOC },
    Check { id: "log.fifo-close.survives", protocol: L, rule: "the plugin keeps answering, and starts new streams, after a FIFO's writer closes without StopLogging", source: LOG_PLUGIN },
];

/// Every check, in report order.
pub fn all() -> impl Iterator<Item = &'static Check> {
    CHECKS.iter()
}

/// The checks of `protocol`, in report order.
pub fn of(protocol: Protocol) -> impl Iterator<Item = &'static Check> {
    all().filter(move |c| c.protocol == protocol)
}

/// The check `id`. Scenarios name only registered checks (a unit test holds them to it).
pub fn find(id: &str) -> &'static Check {
    all()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("conformance check {id} is not registered"))
}

/// `--check` globs (`*` any run of characters, `?` one character); a check is selected when
/// any glob matches its whole ID, or when there are none.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    patterns: Vec<regex::Regex>,
}

impl Selection {
    pub fn new(globs: &[String]) -> Selection {
        let patterns = globs
            .iter()
            .flat_map(|g| g.split(','))
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(|g| {
                let mut re = String::from("^");
                for c in g.chars() {
                    match c {
                        '*' => re.push_str(".*"),
                        '?' => re.push('.'),
                        c => re.push_str(&regex::escape(&c.to_string())),
                    }
                }
                re.push('$');
                regex::Regex::new(&re).expect("an escaped glob is a valid regex")
            })
            .collect();
        Selection { patterns }
    }

    pub fn selects(&self, id: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.is_match(id))
    }

    /// Whether any check of `protocol` is selected.
    pub fn any_of(&self, protocol: Protocol) -> bool {
        all().any(|c| c.protocol == protocol && self.selects(c.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_well_formed_and_under_their_protocol() {
        let mut seen = HashSet::new();
        for c in all() {
            assert!(seen.insert(c.id), "{} twice", c.id);
            assert!(
                c.id.starts_with(&format!("{}.", c.protocol.name())),
                "{} not under {}",
                c.id,
                c.protocol.name()
            );
            assert!(c
                .id
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ".-".contains(ch)));
            assert!(!c.rule.is_empty() && !c.rule.contains('\n'), "{}", c.id);
            assert!(c.source.starts_with("https://"), "{}", c.id);
        }
        assert!(seen.len() >= 60, "only {} checks", seen.len());
    }

    #[test]
    fn globs_select_whole_ids() {
        let s = Selection::new(&["volume.mount.*".into(), "log.start".into()]);
        assert!(s.selects("volume.mount.answers"));
        assert!(!s.selects("volume.create.basic"));
        assert!(s.selects("log.start"));
        assert!(!s.selects("log.start.opens-fifo"));
        assert!(s.any_of(Protocol::Volume));
        assert!(!s.any_of(Protocol::Network));
        assert!(Selection::new(&[]).selects("anything"));
        let comma = Selection::new(&["transport.*,ipam.pool.?ny".into()]);
        assert!(comma.selects("ipam.pool.any"));
    }
}
