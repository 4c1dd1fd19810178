//! The predefined `bridge` network of `--bridge NAME` / `--bip CIDR`, as dockerd 20.10 makes
//! its default network with `--iptables=false`: driver `bridge` on the Linux bridge docker0
//! (made when missing) or NAME (which must exist), the subnet and gateway of `--bip`, else of
//! the bridge's own IPv4 address, else a default pool clear of the host's routes, and the
//! options dockerd shows for it. Without either flag there is no such network (dockerd's
//! `--bridge=none`), so berth and dockerd can share a host.
//!
//! dockerd makes the network again at every start (a new ID each time); berth keeps the one
//! it has while the setup is the same, so namespaces stay connected across restarts, and
//! replaces it (disconnecting what was connected) when the setup changed or went away.

use std::collections::BTreeMap;

use super::{bridge, NetworkService};
use crate::cidr::Prefix;
use crate::config::{DefaultBridge, DEFAULT_BRIDGE_NAME};
use crate::drivers::ipam::{Ipam, PoolRequest};
use crate::error::{Error, Result};
use crate::network::netns;
use crate::network::store::NetworkRecord;
use crate::network::types::IpamConfig;
use crate::plugin::getter::Mode;

/// The predefined network's name.
pub const NAME: &str = "bridge";

/// The driver options dockerd 20.10 shows for its default network with `--iptables=false`.
fn options(bridge_name: &str) -> BTreeMap<String, String> {
    [
        ("com.docker.network.bridge.default_bridge", "true"),
        ("com.docker.network.bridge.enable_icc", "true"),
        ("com.docker.network.bridge.enable_ip_masquerade", "false"),
        ("com.docker.network.bridge.host_binding_ipv4", "0.0.0.0"),
        ("com.docker.network.bridge.name", bridge_name),
        ("com.docker.network.driver.mtu", "1500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The IPAM configuration of an address given (`--bip`, or the bridge's own): its subnet and
/// the address itself as the gateway.
fn addressed(address: Prefix) -> IpamConfig {
    IpamConfig {
        subnet: address.network().to_string(),
        gateway: address.addr.to_string(),
        ..IpamConfig::default()
    }
}

/// Whether `old` was made for the setup `wanted` describes.
fn same_setup(old: &NetworkRecord, wanted: &NetworkRecord) -> bool {
    old.options == wanted.options && old.ipam_config == wanted.ipam_config
}

impl NetworkService {
    /// Start-up, after [`NetworkService::recover`]: the predefined `bridge` network as the
    /// flags ask (made, kept, replaced or removed). An error stops the daemon, as it stops
    /// dockerd.
    pub async fn ensure_default_bridge(&self) -> Result<()> {
        let existing = self
            .store
            .networks()
            .into_iter()
            .find(|n| n.predefined && n.name == NAME);
        let wanted = match self.default_bridge.clone() {
            Some(setup) => Some(self.default_bridge_record(&setup).await?),
            None => None,
        };
        if let Some(old) = existing {
            if wanted.as_ref().is_some_and(|w| same_setup(&old, w)) {
                return Ok(());
            }
            log::info!(
                "removing the predefined bridge network {} (its setup changed)",
                old.id
            );
            self.remove_default_bridge(&old).await?;
        }
        let Some(record) = wanted else {
            return Ok(());
        };
        log::info!(
            "making the predefined bridge network on {}",
            record.options["com.docker.network.bridge.name"]
        );
        self.create_with_plugins(record).await
    }

    /// The record `setup` asks for (not yet allocated).
    async fn default_bridge_record(&self, setup: &DefaultBridge) -> Result<NetworkRecord> {
        let found = bridge::bridge_addresses(&setup.name).await?;
        if found.is_none() && setup.name != DEFAULT_BRIDGE_NAME {
            return Err(Error::System(format!(
                "bridge device with non default name {} must be created manually",
                setup.name
            )));
        }
        let own = found.and_then(|addresses| addresses.first().copied());
        let config = match setup.address.or(own) {
            Some(address) => addressed(address),
            None => IpamConfig {
                subnet: self.free_default_pool().await?.to_string(),
                ..IpamConfig::default()
            },
        };
        Ok(NetworkRecord {
            predefined: true,
            options: options(&setup.name),
            ipam_config: vec![config],
            ..NetworkRecord::new(NAME, bridge::DRIVER)
        })
    }

    /// A default pool that no network and no route of the host overlaps (dockerd's
    /// `FindAvailableNetwork` for a bridge without an address); not held.
    async fn free_default_pool(&self) -> Result<Prefix> {
        let routes = netns::host_routes_v4().await.unwrap_or_else(|e| {
            log::warn!("listing the host's routes: {e}");
            Vec::new()
        });
        let request = PoolRequest {
            address_space: crate::network::ipam::LOCAL_ADDRESS_SPACE.into(),
            ..PoolRequest::default()
        };
        let pool =
            super::pool_clear_of_routes(self.default_ipam.as_ref(), &request, &routes).await?;
        self.default_ipam.release_pool(&pool.id).await?;
        Ok(pool.pool)
    }

    /// The predefined network goes: its namespaces are disconnected, its pools given back,
    /// its bridge deleted if berth made it.
    async fn remove_default_bridge(&self, old: &NetworkRecord) -> Result<()> {
        for endpoint in self.store.endpoints_of(&old.id) {
            if let Err(e) = self.leave(old, &endpoint).await {
                log::warn!("disconnecting {}: {e}", endpoint.name);
            }
        }
        let driver = self.driver(bridge::DRIVER, Mode::Lookup).await?;
        self.take_apart(driver.as_ref(), old).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setup_is_dockerds() {
        let config = addressed(Prefix::parse("10.99.0.1/24").unwrap());
        assert_eq!(
            (config.subnet.as_str(), config.gateway.as_str()),
            ("10.99.0.0/24", "10.99.0.1")
        );
        let opts = options("brt0");
        assert_eq!(opts["com.docker.network.bridge.name"], "brt0");
        assert_eq!(opts["com.docker.network.bridge.default_bridge"], "true");
        assert_eq!(opts.len(), 6);
    }
}
