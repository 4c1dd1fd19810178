//! Which events a stream wants: dockerd's event filter (`daemon/events/filter.go`) over the
//! `filters` a client sent. Every key is optional and keys are ANDed; the values of one key
//! are ORed. Unknown keys filter nothing, as in dockerd.

use std::collections::BTreeMap;

use super::Message;
use crate::distribution::reference::Reference;

/// Object-name keys: each matches events whose actor ID or `name` attribute equals a value or
/// starts with it (dockerd's `fuzzyMatchName`), whatever the event's type.
const NAME_KEYS: [&str; 9] = [
    "daemon",
    "container",
    "plugin",
    "volume",
    "network",
    "node",
    "service",
    "secret",
    "config",
];

/// Events whose `event` filter values are prefixes (their actions carry a suffix).
const PREFIX_ACTIONS: [&str; 3] = ["health_status", "exec_create", "exec_start"];

/// The parsed `filters` (`map[key]map[value]bool`, as the API sends it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    fields: BTreeMap<String, BTreeMap<String, bool>>,
}

impl EventFilter {
    pub fn new(fields: BTreeMap<String, BTreeMap<String, bool>>) -> EventFilter {
        EventFilter { fields }
    }

    pub fn includes(&self, m: &Message) -> bool {
        let attributes = &m.actor.attributes;
        let name = attributes.get("name").map(String::as_str).unwrap_or("");
        self.matches_action(&m.action)
            && self.exact("type", m.kind.as_str())
            && (!self.fields.contains_key("scope") || self.exact("scope", &m.scope))
            && NAME_KEYS
                .iter()
                .all(|key| self.fuzzy(key, &m.actor.id) || self.fuzzy(key, name))
            && self.matches_image(m)
            && self.matches_labels(attributes)
    }

    fn values(&self, key: &str) -> Option<&BTreeMap<String, bool>> {
        self.fields.get(key).filter(|values| !values.is_empty())
    }

    /// moby `ExactMatch`: no values, or `source` among them (set to true).
    fn exact(&self, key: &str, source: &str) -> bool {
        self.values(key)
            .is_none_or(|values| values.get(source).copied().unwrap_or(false))
    }

    /// moby `FuzzyMatch`: an exact match, or a value `source` starts with.
    fn fuzzy(&self, key: &str, source: &str) -> bool {
        self.exact(key, source)
            || self
                .values(key)
                .is_some_and(|values| values.keys().any(|prefix| source.starts_with(prefix)))
    }

    fn matches_action(&self, action: &str) -> bool {
        let prefixed = self
            .values("event")
            .is_some_and(|values| values.keys().any(|v| PREFIX_ACTIONS.contains(&v.as_str())));
        if prefixed {
            self.fuzzy("event", action)
        } else {
            self.exact("event", action)
        }
    }

    /// The actor ID, or the `image` attribute (`name` for image events), with or without tag.
    fn matches_image(&self, m: &Message) -> bool {
        if self.values("image").is_none() {
            return true;
        }
        let attribute = if m.kind.as_str() == "image" {
            "name"
        } else {
            "image"
        };
        let image = m.actor.attributes.get(attribute).map(String::as_str);
        let image = image.unwrap_or("");
        [m.actor.id.as_str(), image]
            .into_iter()
            .any(|s| self.exact("image", s) || self.exact("image", &strip_tag(s)))
    }

    /// moby `MatchKVList`: every `key` or `key=value` holds among the attributes.
    fn matches_labels(&self, attributes: &BTreeMap<String, String>) -> bool {
        let Some(values) = self.values("label") else {
            return true;
        };
        !attributes.is_empty()
            && values.keys().all(|wanted| match wanted.split_once('=') {
                Some((k, v)) => attributes.get(k).is_some_and(|have| have == v),
                None => attributes.contains_key(wanted),
            })
    }
}

/// The familiar repository name of a reference (`docker.io/library/a:1` → `a`); text that is
/// no reference stays as it is.
fn strip_tag(text: &str) -> String {
    Reference::parse_normalized(text)
        .map(|r| r.familiar_name())
        .unwrap_or_else(|_| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;

    fn filter(json: &str) -> EventFilter {
        EventFilter::new(serde_json::from_str(json).unwrap())
    }

    fn plugin_pull() -> Message {
        Event::plugin("127.0.0.1:5000/t/td:1", "myalias:latest", "pull").message
    }

    fn volume_create() -> Message {
        Event::volume("v1", "create", [("driver", "local")]).message
    }

    #[test]
    fn no_filters_include_everything() {
        assert!(filter("{}").includes(&plugin_pull()));
        assert!(filter(r#"{"type":{}}"#).includes(&volume_create()));
    }

    #[test]
    fn type_event_and_scope_are_exact() {
        let f = filter(r#"{"type":{"volume":true},"event":{"create":true}}"#);
        assert!(f.includes(&volume_create()));
        assert!(!f.includes(&plugin_pull()));
        assert!(!filter(r#"{"event":{"creat":true}}"#).includes(&volume_create()));
        assert!(!filter(r#"{"type":{"volume":false}}"#).includes(&volume_create()));
        assert!(filter(r#"{"scope":{"local":true}}"#).includes(&volume_create()));
        assert!(!filter(r#"{"scope":{"swarm":true}}"#).includes(&volume_create()));
    }

    #[test]
    fn object_names_match_id_or_name_by_prefix_whatever_the_type() {
        assert!(filter(r#"{"plugin":{"myal":true}}"#).includes(&plugin_pull()));
        assert!(filter(r#"{"plugin":{"127.0.0.1:5000/t":true}}"#).includes(&plugin_pull()));
        assert!(!filter(r#"{"plugin":{"other":true}}"#).includes(&plugin_pull()));
        assert!(filter(r#"{"volume":{"v":true}}"#).includes(&volume_create()));
        // A volume filter leaves out plugin events (their IDs and names do not match).
        assert!(!filter(r#"{"volume":{"v1":true}}"#).includes(&plugin_pull()));
    }

    #[test]
    fn labels_match_attributes_and_images_match_without_tags() {
        assert!(filter(r#"{"label":{"driver=local":true}}"#).includes(&volume_create()));
        assert!(filter(r#"{"label":{"driver":true}}"#).includes(&volume_create()));
        assert!(!filter(r#"{"label":{"driver=x":true}}"#).includes(&volume_create()));
        assert!(filter(r#"{"image":{"127.0.0.1:5000/t/td":true}}"#).includes(&plugin_pull()));
        assert!(!filter(r#"{"image":{"t/td":true}}"#).includes(&plugin_pull()));
    }

    #[test]
    fn prefix_actions_switch_event_matching_to_prefixes() {
        let m = Event::volume("v", "exec_start: sh", Vec::<(String, String)>::new()).message;
        assert!(filter(r#"{"event":{"exec_start":true}}"#).includes(&m));
        assert!(!filter(r#"{"event":{"exec":true}}"#).includes(&m));
    }
}
