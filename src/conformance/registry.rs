//! Every check: its ID, protocol, rule and source, in the order the report lists them.

use super::Protocol;

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

/// Every check, protocol by protocol.
pub fn all() -> impl Iterator<Item = &'static Check> {
    super::transport::CHECKS
        .iter()
        .chain(super::volume::CHECKS)
        .chain(super::network::CHECKS)
        .chain(super::ipam::CHECKS)
        .chain(super::authz::CHECKS)
        .chain(super::log::CHECKS)
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
