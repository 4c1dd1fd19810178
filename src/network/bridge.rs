//! The built-in `bridge` network driver, as dockerd 20.10 runs it with `--iptables=false`: a
//! Linux bridge per network (`br-<first 12 of the ID>` unless
//! `com.docker.network.bridge.name` is given) holding the gateway addresses, and a veth pair
//! per endpoint, one end on the bridge, the other handed to the network service as the
//! `Join`'s `SrcName` (which moves it into the namespace as `eth<n>`). No NAT, no
//! masquerading, no iptables rules: `enable_icc` and `enable_ip_masquerade` are checked and
//! echoed as dockerd does without iptables, and change nothing.
//!
//! The driver keeps no state of its own on disk: the network service gives it back its
//! networks at start-up ([`BridgeDriver::restore`]) from the records, and veth names derive
//! from endpoint IDs, so what a crash left behind is found by name ([`BridgeDriver::reconcile`]).
//! A bridge berth made carries an interface alias naming its network, so `network rm` deletes
//! only bridges berth made (a bridge that existed before is used and left in place).

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoKind, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkBridge, LinkVeth};
use serde_json::{Map, Value};

use super::netns;
use crate::cidr::Prefix;
use crate::drivers::network::{Capabilities, EndpointInterface, IpamData, JoinInfo, NetworkDriver};
use crate::error::{Error, Result};

pub const DRIVER: &str = "bridge";

// The driver's options (`-o`), as dockerd names them.
const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
const MTU: &str = "com.docker.network.driver.mtu";
const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
const ENABLE_IP_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
const HOST_BINDING_IPV4: &str = "com.docker.network.bridge.host_binding_ipv4";

/// The alias of a bridge berth made: `berth:<network ID>`.
const ALIAS_PREFIX: &str = "berth:";
/// The host end of an endpoint's veth pair is `veth` + the first 7 of the endpoint ID (15
/// characters at most, as interface names are); the other end starts as `vb` + the next 10.
const VETH_PREFIX: &str = "veth";

/// One network as the driver knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BridgeNetwork {
    id: String,
    bridge: String,
    /// 0: the kernel's default.
    mtu: u32,
    internal: bool,
    /// Gateway addresses with their pool's prefix length, IPv4 first.
    gateways: Vec<Prefix>,
    pools: Vec<Prefix>,
    enable_ipv6: bool,
}

impl BridgeNetwork {
    fn gateway(&self, v6: bool) -> String {
        self.gateways
            .iter()
            .find(|g| g.is_v6() == v6)
            .map(|g| g.addr.to_string())
            .unwrap_or_default()
    }
}

#[derive(Default)]
pub struct BridgeDriver {
    networks: Mutex<HashMap<String, BridgeNetwork>>,
}

/// The host and namespace-bound ends of an endpoint's veth pair.
fn veth_names(endpoint_id: &str) -> (String, String) {
    let id: String = endpoint_id
        .chars()
        .chain(std::iter::repeat('0'))
        .take(17)
        .collect();
    (
        format!("{VETH_PREFIX}{}", &id[..7]),
        format!("vb{}", &id[7..17]),
    )
}

/// Go's `strconv.ParseBool`.
fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(Error::System(format!(
            "failed to parse {key} value: {value} (strconv.ParseBool: parsing \"{value}\": invalid syntax)"
        ))),
    }
}

/// Go's `strconv.Atoi`.
fn parse_int(key: &str, value: &str) -> Result<i64> {
    value.parse::<i64>().map_err(|_| {
        let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
        let why = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            "value out of range"
        } else {
            "invalid syntax"
        };
        Error::System(format!(
            "failed to parse {key} value: {value} (strconv.Atoi: parsing \"{value}\": {why})"
        ))
    })
}

/// The driver's view of a network from libnetwork's `CreateNetwork` arguments, checked as
/// dockerd's bridge driver checks them (every failure a 500, in its words).
fn network_config(
    network_id: &str,
    options: &Map<String, Value>,
    ipv4_data: &[IpamData],
    ipv6_data: &[IpamData],
) -> Result<BridgeNetwork> {
    let generic = options
        .get("com.docker.network.generic")
        .and_then(Value::as_object);
    let option = |key: &str| generic.and_then(|g| g.get(key)).and_then(Value::as_str);
    let mut mtu = 0;
    if let Some(value) = option(MTU) {
        let given = parse_int(MTU, value)?;
        if given < 0 {
            return Err(Error::System(format!("invalid MTU number: {given}")));
        }
        mtu = u32::try_from(given).unwrap_or(u32::MAX);
    }
    for key in [ENABLE_ICC, ENABLE_IP_MASQUERADE] {
        if let Some(value) = option(key) {
            parse_bool(key, value)?;
        }
    }
    if let Some(value) = option(HOST_BINDING_IPV4) {
        if value.parse::<IpAddr>().is_err() {
            return Err(Error::System(format!(
                "failed to parse {HOST_BINDING_IPV4} value: {value} (nil ip)"
            )));
        }
    }
    let bridge = match option(BRIDGE_NAME) {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => format!("br-{}", &network_id[..network_id.len().min(12)]),
    };
    let flag = |key: &str| options.get(key).and_then(Value::as_bool).unwrap_or(false);
    let mut gateways = Vec::new();
    let mut pools = Vec::new();
    for data in ipv4_data.iter().chain(ipv6_data) {
        pools.extend(Prefix::parse(&data.pool));
        gateways.extend(data.gateway.as_deref().and_then(Prefix::parse));
    }
    Ok(BridgeNetwork {
        id: network_id.to_string(),
        bridge,
        mtu,
        internal: flag("com.docker.network.internal"),
        gateways,
        pools,
        enable_ipv6: flag("com.docker.network.enable_ipv6"),
    })
}

/// dockerd's `checkConflict` between two bridge networks.
fn conflict(new: &BridgeNetwork, old: &BridgeNetwork) -> Option<String> {
    let why = if new.bridge == old.bridge {
        "networks have same bridge name"
    } else if new
        .pools
        .iter()
        .filter(|p| !p.is_v6())
        .any(|p| old.pools.iter().any(|o| !o.is_v6() && o.overlaps(p)))
    {
        "networks have overlapping IPv4"
    } else {
        return None;
    };
    Some(format!(
        "cannot create network {} ({}): conflicts with network {} ({}): {why}",
        new.id, new.bridge, old.id, old.bridge
    ))
}

/// The MAC dockerd derives from an IPv4 address (`02:42:` + the address).
fn mac_of(address: &str) -> String {
    let ip = Prefix::parse(address).map(|p| p.addr);
    let bytes = match ip {
        Some(IpAddr::V4(v4)) => v4.octets(),
        _ => {
            let random = crate::fsutil::random_hex(4);
            let b = hex::decode(random).unwrap_or_else(|_| vec![0; 4]);
            [b[0], b[1], b[2], b[3]]
        }
    };
    format!(
        "02:42:{:02x}:{:02x}:{:02x}:{:02x}",
        bytes[0], bytes[1], bytes[2], bytes[3]
    )
}

fn kernel(what: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| {
        let text = crate::goerr::io_error_text(&e);
        Error::System(if what.is_empty() {
            text
        } else {
            format!("{what}: {text}")
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Netlink, in berth's own namespace: one socket per operation, driven by the caller's runtime.

async fn link(handle: &Handle, name: &str) -> io::Result<Option<LinkMessage>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(found) => Ok(found),
        Err(rtnetlink::Error::NetlinkError(m))
            if m.code.map(|c| c.get()) == Some(-nix::libc::ENODEV) =>
        {
            Ok(None)
        }
        Err(e) => Err(netns::nl(e)),
    }
}

fn is_bridge(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))),
        _ => false,
    })
}

fn alias(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(alias) => Some(alias.as_str()),
        _ => None,
    })
}

fn controller(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(index) => Some(*index),
        _ => None,
    })
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

async fn delete(handle: &Handle, name: &str) -> io::Result<()> {
    if let Some(found) = link(handle, name).await? {
        handle
            .link()
            .del(found.header.index)
            .execute()
            .await
            .map_err(netns::nl)?;
    }
    Ok(())
}

/// Adds an address; one already there is fine (a bridge found again after a restart).
async fn add_address(handle: &Handle, index: u32, address: Prefix) -> io::Result<()> {
    match handle
        .address()
        .add(index, address.addr, address.len)
        .execute()
        .await
    {
        Err(rtnetlink::Error::NetlinkError(m))
            if m.code.map(|c| c.get()) == Some(-nix::libc::EEXIST) =>
        {
            Ok(())
        }
        other => other.map_err(netns::nl),
    }
}

/// The bridge of `network`, made (with its addresses, up) unless it exists; whether berth made
/// it now.
async fn ensure_bridge(handle: &Handle, network: &BridgeNetwork) -> Result<bool> {
    let name = network.bridge.as_str();
    let existing = link(handle, name)
        .await
        .map_err(kernel("failed to check bridge interface existence"))?;
    let (index, made) = match existing {
        Some(found) if !is_bridge(&found) => {
            return Err(Error::System(format!(
                "existing interface {name} is not a bridge"
            )))
        }
        Some(found) => (found.header.index, false),
        None => {
            let message = rtnetlink::LinkMessageBuilder::<LinkBridge>::new(name).build();
            handle
                .link()
                .add(message)
                .execute()
                .await
                .map_err(|e| kernel("")(netns::nl(e)))?;
            let found = link(handle, name)
                .await
                .map_err(kernel("failed to check bridge interface existence"))?
                .ok_or_else(|| Error::System(format!("bridge {name} vanished")))?;
            let tag = format!("{ALIAS_PREFIX}{}", network.id);
            netns::set_link(handle, found.header.index, |b| b.alias(tag))
                .await
                .map_err(kernel("could not mark the bridge"))?;
            (found.header.index, true)
        }
    };
    let configured = async {
        let mut addresses = network.gateways.clone();
        if network.enable_ipv6 {
            addresses.push(Prefix::new(IpAddr::V6(link_local_gateway()), 64));
        }
        for address in addresses {
            add_address(handle, index, address)
                .await
                .map_err(kernel("failed to set bridge address"))?;
        }
        if made && network.enable_ipv6 {
            // dockerd's IPv6 bridges carry fe80::1 and no address of the kernel's own making.
            let none = LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![
                AfSpecInet6::AddrGenMode(In6AddrGenMode::None),
            ])]);
            if let Err(e) = netns::set_link(handle, index, |b| b.append_extra_attribute(none)).await
            {
                log::warn!("bridge {name}: no IPv6 address generation: {e}");
            }
        }
        netns::set_link(handle, index, |b| b.up())
            .await
            .map_err(kernel("could not set the bridge up"))
    };
    if let Err(e) = configured.await {
        if made {
            let _ = delete(handle, name).await;
        }
        return Err(e);
    }
    Ok(made)
}

/// The IPv4 addresses of the bridge `name` in berth's namespace, `None` when no such interface
/// exists (what the predefined `bridge` network of `--bridge NAME` takes its subnet from).
pub async fn bridge_addresses(name: &str) -> Result<Option<Vec<Prefix>>> {
    use rtnetlink::packet_route::address::AddressAttribute;
    let handle = netns::connect().map_err(kernel("netlink"))?;
    let Some(found) = link(&handle, name)
        .await
        .map_err(kernel("failed to check bridge interface existence"))?
    else {
        return Ok(None);
    };
    if !is_bridge(&found) {
        return Err(Error::System(format!(
            "existing interface {name} is not a bridge"
        )));
    }
    let mut messages = handle
        .address()
        .get()
        .set_link_index_filter(found.header.index)
        .execute();
    let mut addresses = Vec::new();
    while let Some(message) = messages
        .try_next()
        .await
        .map_err(|e| kernel("failed to read the bridge's addresses")(netns::nl(e)))?
    {
        let len = message.header.prefix_len;
        addresses.extend(message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip @ IpAddr::V4(_)) => Some(Prefix::new(*ip, len)),
            _ => None,
        }));
    }
    Ok(Some(addresses))
}

/// `fe80::1`, the link-local address dockerd gives IPv6 bridges.
fn link_local_gateway() -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)
}

/// The veth pair of an endpoint, its host end on the bridge and up.
async fn make_veth(handle: &Handle, network: &BridgeNetwork, endpoint_id: &str) -> Result<()> {
    let (host, peer) = veth_names(endpoint_id);
    let bridge = link(handle, &network.bridge)
        .await
        .map_err(kernel("failed to find bridge"))?
        .ok_or_else(|| {
            Error::System(format!(
                "failed to find bridge {}: link not found",
                network.bridge
            ))
        })?;
    handle
        .link()
        .add(LinkVeth::new(&host, &peer).build())
        .execute()
        .await
        .map_err(|e| kernel("failed to add the host and sandbox veth pair")(netns::nl(e)))?;
    let configured = async {
        let found = |name: String| async move {
            link(handle, &name)
                .await?
                .map(|l| l.header.index)
                .ok_or_else(|| io::Error::from_raw_os_error(nix::libc::ENODEV))
        };
        let host_index = found(host.clone()).await?;
        let peer_index = found(peer.clone()).await?;
        if network.mtu > 0 {
            netns::set_link(handle, host_index, |b| b.mtu(network.mtu)).await?;
            netns::set_link(handle, peer_index, |b| b.mtu(network.mtu)).await?;
        }
        netns::set_link(handle, host_index, |b| b.controller(bridge.header.index)).await?;
        netns::set_link(handle, host_index, |b| b.up()).await
    };
    if let Err(e) = configured.await {
        let _ = delete(handle, &host).await;
        return Err(kernel("failed to set up the veth pair")(e));
    }
    Ok(())
}

impl BridgeDriver {
    pub fn new() -> BridgeDriver {
        BridgeDriver::default()
    }

    fn networks(&self) -> std::sync::MutexGuard<'_, HashMap<String, BridgeNetwork>> {
        self.networks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn network(&self, network_id: &str) -> Result<BridgeNetwork> {
        self.networks()
            .get(network_id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("network {network_id} does not exist")))
    }

    /// A network the service recorded, known again without touching the kernel (its bridge is
    /// made again by [`BridgeDriver::reconcile`] if it is gone).
    pub fn restore(
        &self,
        network_id: &str,
        options: &Map<String, Value>,
        ipv4_data: &[IpamData],
        ipv6_data: &[IpamData],
    ) {
        match network_config(network_id, options, ipv4_data, ipv6_data) {
            Ok(network) => {
                self.networks().insert(network_id.to_string(), network);
            }
            Err(e) => log::warn!("bridge network {network_id}: {e}"),
        }
    }

    /// After a restart: every ready network's bridge exists (a reboot takes them), the veths
    /// of live endpoints are on it, and no veth on it outlives its endpoint. `live` holds the
    /// (endpoint ID, network ID) pairs the service still has.
    pub async fn reconcile(&self, ready: &BTreeSet<String>, live: &[(String, String)]) {
        let networks: Vec<BridgeNetwork> = self
            .networks()
            .values()
            .filter(|n| ready.contains(&n.id))
            .cloned()
            .collect();
        if networks.is_empty() {
            return;
        }
        let handle = match netns::connect() {
            Ok(handle) => handle,
            Err(e) => {
                log::warn!("bridge driver: netlink: {e}");
                return;
            }
        };
        let mut bridges = HashMap::new();
        for network in &networks {
            match ensure_bridge(&handle, network).await {
                Ok(true) => log::info!("made bridge {} again", network.bridge),
                Ok(false) => {}
                Err(e) => log::warn!("bridge {}: {e}", network.bridge),
            }
            if let Ok(Some(found)) = link(&handle, &network.bridge).await {
                bridges.insert(network.id.clone(), found.header.index);
            }
        }
        let owners: HashMap<String, u32> = live
            .iter()
            .filter_map(|(endpoint, network)| {
                Some((veth_names(endpoint).0, *bridges.get(network)?))
            })
            .collect();
        let mut stale = Vec::new();
        let mut loose = Vec::new();
        let mut links = handle.link().get().execute();
        while let Ok(Some(found)) = links.try_next().await {
            let Some(name) = link_name(&found).filter(|n| n.starts_with(VETH_PREFIX)) else {
                continue;
            };
            let master = controller(&found);
            match owners.get(name) {
                Some(bridge) if master != Some(*bridge) => {
                    loose.push((found.header.index, *bridge, name.to_string()))
                }
                Some(_) => {}
                None if master.is_some_and(|m| bridges.values().any(|b| *b == m)) => {
                    stale.push(name.to_string())
                }
                None => {}
            }
        }
        for (index, bridge, name) in loose {
            log::info!("putting veth {name} back on its bridge");
            let attached = async {
                netns::set_link(&handle, index, |b| b.controller(bridge)).await?;
                netns::set_link(&handle, index, |b| b.up()).await
            };
            if let Err(e) = attached.await {
                log::warn!("putting veth {name} back on its bridge: {e}");
            }
        }
        for name in stale {
            log::info!("removing veth {name} left behind");
            if let Err(e) = delete(&handle, &name).await {
                log::warn!("removing veth {name}: {e}");
            }
        }
    }
}

#[async_trait::async_trait]
impl NetworkDriver for BridgeDriver {
    fn name(&self) -> &str {
        DRIVER
    }

    fn builtin(&self) -> bool {
        true
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::local())
    }

    async fn create_network(
        &self,
        network_id: &str,
        options: &Map<String, Value>,
        ipv4_data: &[IpamData],
        ipv6_data: &[IpamData],
    ) -> Result<()> {
        let network = network_config(network_id, options, ipv4_data, ipv6_data)?;
        {
            let mut networks = self.networks();
            if let Some(clash) = networks.values().find_map(|old| conflict(&network, old)) {
                return Err(Error::System(clash));
            }
            // Held while the bridge is made, so a concurrent create sees the name taken.
            networks.insert(network_id.to_string(), network.clone());
        }
        let made = async {
            let handle = netns::connect().map_err(kernel("netlink"))?;
            ensure_bridge(&handle, &network).await
        }
        .await;
        if let Err(e) = made {
            self.networks().remove(network_id);
            return Err(e);
        }
        Ok(())
    }

    async fn delete_network(&self, network_id: &str) -> Result<()> {
        let Some(network) = self.networks().get(network_id).cloned() else {
            return Ok(());
        };
        let handle = netns::connect().map_err(kernel("netlink"))?;
        let ours = format!("{ALIAS_PREFIX}{network_id}");
        if let Some(found) = link(&handle, &network.bridge)
            .await
            .map_err(kernel("failed to find bridge"))?
        {
            if alias(&found) == Some(ours.as_str()) {
                handle
                    .link()
                    .del(found.header.index)
                    .execute()
                    .await
                    .map_err(|e| kernel("failed to remove bridge")(netns::nl(e)))?;
            }
        }
        self.networks().remove(network_id);
        Ok(())
    }

    async fn create_endpoint(
        &self,
        network_id: &str,
        endpoint_id: &str,
        interface: &EndpointInterface,
        _options: &Map<String, Value>,
    ) -> Result<Option<EndpointInterface>> {
        let network = self.network(network_id)?;
        let handle = netns::connect().map_err(kernel("netlink"))?;
        make_veth(&handle, &network, endpoint_id).await?;
        let mac_address = if interface.mac_address.is_empty() {
            mac_of(&interface.address)
        } else {
            interface.mac_address.clone()
        };
        Ok(Some(EndpointInterface {
            mac_address,
            ..EndpointInterface::default()
        }))
    }

    async fn endpoint_oper_info(
        &self,
        _network_id: &str,
        _endpoint_id: &str,
    ) -> Result<Map<String, Value>> {
        Ok(Map::new())
    }

    async fn delete_endpoint(&self, _network_id: &str, endpoint_id: &str) -> Result<()> {
        let handle = netns::connect().map_err(kernel("netlink"))?;
        let (host, peer) = veth_names(endpoint_id);
        // Deleting one end deletes both; the other end is here when the namespace gave it back.
        delete(&handle, &host)
            .await
            .and(delete(&handle, &peer).await)
            .map_err(kernel("failed to delete the veth pair"))
    }

    async fn join(
        &self,
        network_id: &str,
        endpoint_id: &str,
        _sandbox_key: &str,
        _options: &Map<String, Value>,
    ) -> Result<JoinInfo> {
        let network = self.network(network_id)?;
        let (_, peer) = veth_names(endpoint_id);
        let (gateway, gateway_ipv6) = if network.internal {
            (String::new(), String::new())
        } else {
            (network.gateway(false), network.gateway(true))
        };
        Ok(JoinInfo {
            src_name: peer,
            dst_prefix: "eth".into(),
            gateway,
            gateway_ipv6,
            static_routes: Vec::new(),
            disable_gateway_service: network.internal,
        })
    }

    async fn leave(&self, _network_id: &str, _endpoint_id: &str) -> Result<()> {
        Ok(())
    }

    async fn program_external_connectivity(
        &self,
        _network_id: &str,
        _endpoint_id: &str,
        _options: &Map<String, Value>,
    ) -> Result<()> {
        Ok(())
    }

    async fn revoke_external_connectivity(
        &self,
        _network_id: &str,
        _endpoint_id: &str,
    ) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(generic: &[(&str, &str)]) -> Map<String, Value> {
        let generic: Map<String, Value> = generic
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let mut options = Map::new();
        options.insert("com.docker.network.generic".into(), Value::Object(generic));
        options
    }

    fn ipv4_network(
        id: &str,
        generic: &[(&str, &str)],
        pool: &str,
        gateway: &str,
    ) -> BridgeNetwork {
        network_config(id, &options(generic), &[data(pool, gateway)], &[]).unwrap()
    }

    fn data(pool: &str, gateway: &str) -> IpamData {
        IpamData {
            address_space: "LocalDefault".into(),
            aux_addresses: None,
            gateway: Some(gateway.into()),
            pool: pool.into(),
        }
    }

    #[test]
    fn options_are_checked_in_dockerds_words() {
        let id = "0123456789abcdef0123";
        let bad = |o: &[(&str, &str)]| {
            network_config(id, &options(o), &[], &[])
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            bad(&[(MTU, "abc")]),
            "failed to parse com.docker.network.driver.mtu value: abc (strconv.Atoi: parsing \"abc\": invalid syntax)"
        );
        assert_eq!(bad(&[(MTU, "-5")]), "invalid MTU number: -5");
        assert_eq!(
            bad(&[(ENABLE_ICC, "maybe")]),
            "failed to parse com.docker.network.bridge.enable_icc value: maybe (strconv.ParseBool: parsing \"maybe\": invalid syntax)"
        );
        assert_eq!(
            bad(&[(HOST_BINDING_IPV4, "x")]),
            "failed to parse com.docker.network.bridge.host_binding_ipv4 value: x (nil ip)"
        );
        let n = ipv4_network(
            id,
            &[(MTU, "1400"), (ENABLE_ICC, "false")],
            "10.30.0.0/24",
            "10.30.0.1/24",
        );
        assert_eq!(n.bridge, "br-0123456789ab");
        assert_eq!(n.mtu, 1400);
        assert_eq!(n.gateway(false), "10.30.0.1");
        assert_eq!(n.gateway(true), "");
    }

    #[test]
    fn conflicts_are_named_as_dockerd_names_them() {
        let a = ipv4_network("a", &[], "10.31.0.0/24", "10.31.0.1/24");
        let b = ipv4_network(
            "b",
            &[(BRIDGE_NAME, "br-a")],
            "10.32.0.0/24",
            "10.32.0.1/24",
        );
        assert_eq!(
            conflict(&b, &a).unwrap(),
            "cannot create network b (br-a): conflicts with network a (br-a): networks have same bridge name"
        );
        let c = ipv4_network("c", &[], "10.31.0.0/16", "10.31.0.1/16");
        assert!(conflict(&c, &a)
            .unwrap()
            .ends_with("networks have overlapping IPv4"));
    }

    #[test]
    fn names_and_macs() {
        let (host, peer) = veth_names("abcdef0123456789ffff");
        assert_eq!(
            (host.as_str(), peer.as_str()),
            ("vethabcdef0", "vb123456789f")
        );
        assert!(host.len() <= 15 && peer.len() <= 15);
        assert_eq!(mac_of("10.30.0.50/24"), "02:42:0a:1e:00:32");
    }
}
