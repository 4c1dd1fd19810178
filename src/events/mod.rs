//! Events: one bounded bus from the services that change state (publishers: the plugin
//! manager, the volume service, networks) to whoever watches (subscribers: `GET /events`
//! streams, later metrics).
//!
//! Like dockerd's, the bus keeps the last [`HISTORY_LIMIT`] events in memory so a subscriber can
//! ask for the recent past (`since`); nothing survives a restart. Unlike dockerd's, a publisher
//! never waits for a subscriber: each subscriber has a buffer of [`SUBSCRIBER_BUFFER`] events,
//! and one that falls that far behind is dropped (its stream ends with [`Lagged`]) instead of
//! slowing the daemon or growing memory.
//!
//! Events are encoded once, when published, in the field order dockerd writes
//! (`Type, Action, Actor{ID, Attributes}, scope, time, timeNano`; attributes sorted by key as
//! Go encodes a map), so a hundred streams cost one encoding.

mod bus;
pub mod filter;

pub use bus::{Canceller, EventBus, Lagged, Subscription, HISTORY_LIMIT, SUBSCRIBER_BUFFER};
pub use filter::EventFilter;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// `events.Type`: what kind of object an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Plugin,
    Volume,
    Network,
    Daemon,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Plugin => "plugin",
            EventType::Volume => "volume",
            EventType::Network => "network",
            EventType::Daemon => "daemon",
        }
    }
}

/// Which API versions see an event. dockerd's volume events changed with API 1.42 (moby 23):
/// 20.10 reports `create` for every successful create, even of a volume that already existed,
/// and no `destroy` for pruned volumes; current daemons report `create` only for a volume
/// actually created and `destroy` for each pruned one. The bus carries both; each stream
/// shows what a daemon of its API version would have sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    All,
    /// Only streams opened with an API version below 1.42.
    BeforeApi142,
    /// Only streams opened with API 1.42 or newer.
    FromApi142,
}

/// `events.Actor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// `events.Message` as dockerd sends it for plugins, volumes and networks (the deprecated
/// `status`/`id`/`from` fields exist only for containers and images).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    #[serde(rename = "Type")]
    pub kind: EventType,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: String,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

/// One published event: the message, who may see it, and its encoding (a JSON line).
#[derive(Debug, Clone)]
pub struct Event {
    pub message: Message,
    pub audience: Audience,
    line: bytes::Bytes,
}

impl Event {
    /// An event of `kind` happening now (local scope: berth has no swarm).
    pub fn new<K, V>(
        kind: EventType,
        action: &str,
        id: &str,
        attributes: impl IntoIterator<Item = (K, V)>,
    ) -> Event
    where
        K: Into<String>,
        V: Into<String>,
    {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        Event::at(kind, action, id, attributes, nanos)
    }

    fn at<K, V>(
        kind: EventType,
        action: &str,
        id: &str,
        attributes: impl IntoIterator<Item = (K, V)>,
        time_nano: i64,
    ) -> Event
    where
        K: Into<String>,
        V: Into<String>,
    {
        let message = Message {
            kind,
            action: action.to_string(),
            actor: Actor {
                id: id.to_string(),
                attributes: attributes
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            },
            scope: "local".to_string(),
            time: time_nano.div_euclid(1_000_000_000),
            time_nano,
        };
        let mut line = crate::gojson::escape_html(serde_json::to_vec(&message).unwrap_or_default());
        line.push(b'\n');
        Event {
            message,
            audience: Audience::All,
            line: line.into(),
        }
    }

    /// A plugin event as dockerd's `LogPluginEvent`: the actor is the plugin ID (or, for
    /// `pull`, the remote reference) and its one attribute the name the client used.
    pub fn plugin(id: &str, name: &str, action: &str) -> Event {
        Event::new(EventType::Plugin, action, id, [("name", name)])
    }

    /// A volume event as dockerd's `LogVolumeEvent`: the actor is the volume name.
    pub fn volume<K, V>(
        name: &str,
        action: &str,
        attributes: impl IntoIterator<Item = (K, V)>,
    ) -> Event
    where
        K: Into<String>,
        V: Into<String>,
    {
        Event::new(EventType::Volume, action, name, attributes)
    }

    /// A network event as dockerd's `LogNetworkEventWithAttributes`: the actor is the network
    /// ID, with its `name` and driver `type` plus `extra` (`container` for connect and
    /// disconnect).
    pub fn network<K, V>(
        id: &str,
        name: &str,
        driver: &str,
        action: &str,
        extra: impl IntoIterator<Item = (K, V)>,
    ) -> Event
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut attributes: BTreeMap<String, String> = extra
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        attributes.insert("name".into(), name.into());
        attributes.insert("type".into(), driver.into());
        Event::new(EventType::Network, action, id, attributes)
    }

    /// Restricts who sees the event (see [`Audience`]).
    pub fn for_audience(mut self, audience: Audience) -> Event {
        self.audience = audience;
        self
    }

    /// The JSON line a stream writes (encoded once, at publication).
    pub fn json_line(&self) -> &bytes::Bytes {
        &self.line
    }

    /// Whether a stream of this API generation shows the event.
    pub fn visible_to(&self, legacy_api: bool) -> bool {
        match self.audience {
            Audience::All => true,
            Audience::BeforeApi142 => legacy_api,
            Audience::FromApi142 => !legacy_api,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_in_dockerds_field_order_with_sorted_attributes() {
        let event = Event::at(
            EventType::Volume,
            "mount",
            "v1",
            [
                ("read/write", "true"),
                ("driver", "local"),
                ("container", "c1"),
            ],
            1_796_285_133_869_415_563,
        );
        assert_eq!(
            std::str::from_utf8(event.json_line()).unwrap(),
            "{\"Type\":\"volume\",\"Action\":\"mount\",\"Actor\":{\"ID\":\"v1\",\"Attributes\":\
             {\"container\":\"c1\",\"driver\":\"local\",\"read/write\":\"true\"}},\"scope\":\
             \"local\",\"time\":1796285133,\"timeNano\":1796285133869415563}\n"
        );
    }

    #[test]
    fn plugin_and_network_events_carry_dockerds_attributes() {
        let p = Event::plugin("abc", "test/td:latest", "enable");
        assert_eq!(p.message.actor.attributes["name"], "test/td:latest");
        assert_eq!(p.message.kind.as_str(), "plugin");
        let n = Event::network("n1", "front", "bridge", "connect", [("container", "c")]);
        let keys: Vec<_> = n.message.actor.attributes.keys().cloned().collect();
        assert_eq!(keys, ["container", "name", "type"]);
    }

    #[test]
    fn audiences_split_by_api_generation() {
        let e = Event::volume("v", "create", [("driver", "local")]);
        assert!(e.visible_to(true) && e.visible_to(false));
        let old = e.clone().for_audience(Audience::BeforeApi142);
        assert!(old.visible_to(true) && !old.visible_to(false));
        let new = e.for_audience(Audience::FromApi142);
        assert!(!new.visible_to(true) && new.visible_to(false));
    }
}
