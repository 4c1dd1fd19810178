//! The built-in `default` IPAM (libnetwork's `ipam` allocator as dockerd 20.10 runs it): pools
//! from the daemon's default address pools or as asked for, refused when they overlap another
//! pool of the address space; addresses handed out lowest first (inside the `--ip-range` when
//! there is one), the network address and (IPv4) the broadcast address never.
//!
//! Its state is not stored of its own: the network service records every pool and address it
//! got in the network and endpoint records, and gives them back with [`DefaultIpam::restore_pool`]
//! and [`DefaultIpam::restore_address`] at start-up, so nothing allocated can outlive its record.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Mutex;

use crate::cidr::Prefix;
pub use crate::cidr::{address_pool_from_json, parse_address_pool, AddressPool};
use crate::drivers::ipam::{Ipam, Pool, PoolRequest};
use crate::error::{Error, Result};

pub const DEFAULT_IPAM: &str = "default";
pub const LOCAL_ADDRESS_SPACE: &str = "LocalDefault";
pub const GLOBAL_ADDRESS_SPACE: &str = "GlobalDefault";

/// dockerd 20.10's local default pools: 172.17–172.31 as /16s, then 192.168.0.0/16 as /20s.
pub fn default_address_pools() -> Vec<AddressPool> {
    [
        ("172.17.0.0/16", 16),
        ("172.18.0.0/16", 16),
        ("172.19.0.0/16", 16),
        ("172.20.0.0/14", 16),
        ("172.24.0.0/14", 16),
        ("172.28.0.0/14", 16),
        ("192.168.0.0/16", 20),
    ]
    .iter()
    .map(|(base, size)| AddressPool {
        base: Prefix::parse(base).expect("valid default pool"),
        size: *size,
    })
    .collect()
}

/// One allocated pool.
#[derive(Debug)]
struct PoolState {
    pool: Prefix,
    range: Option<Prefix>,
    /// Offsets from the pool's network address that are taken.
    taken: BTreeSet<u128>,
}

impl PoolState {
    fn new(pool: Prefix, range: Option<Prefix>) -> PoolState {
        let mut taken = BTreeSet::new();
        taken.insert(0);
        if !pool.is_v6() && pool.size() > 2 {
            taken.insert(pool.size() - 1);
        }
        PoolState { pool, range, taken }
    }

    fn allocate(&mut self, wanted: Option<IpAddr>) -> Result<IpAddr> {
        match wanted {
            Some(ip) => {
                if !self.pool.contains(&ip) {
                    return Err(Error::InvalidParameter(
                        "Requested address is out of range".into(),
                    ));
                }
                let offset = self.pool.offset_of(&ip);
                if !self.taken.insert(offset) {
                    return Err(Error::Forbidden("Address already in use".into()));
                }
                Ok(ip)
            }
            None => {
                let (first, end) = match &self.range {
                    Some(r) => {
                        let start = self.pool.offset_of(&r.network().addr);
                        (start, start.saturating_add(r.size()))
                    }
                    None => (0, self.pool.size()),
                };
                let mut candidate = first;
                for taken in self.taken.range(first..) {
                    if *taken != candidate {
                        break;
                    }
                    candidate += 1;
                }
                if candidate >= end || candidate >= self.pool.size() {
                    return Err(Error::Unavailable(
                        "No available addresses on this pool".into(),
                    ));
                }
                self.taken.insert(candidate);
                Ok(self.pool.nth(candidate))
            }
        }
    }
}

/// The built-in IPAM. Pools are keyed by libnetwork's pool IDs
/// (`LocalDefault/10.20.0.0/24[/10.20.0.128/25]`).
pub struct DefaultIpam {
    predefined: Vec<AddressPool>,
    pools: Mutex<BTreeMap<String, PoolState>>,
    /// Where the search for a default pool starts, per IP version: past the last one handed
    /// out, as libnetwork's allocator goes round (a released pool is not the next one given).
    next: Mutex<[u128; 2]>,
}

impl DefaultIpam {
    pub fn new(predefined: Vec<AddressPool>) -> DefaultIpam {
        DefaultIpam {
            predefined,
            pools: Mutex::new(BTreeMap::new()),
            next: Mutex::new([0, 0]),
        }
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PoolState>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start-up: a pool a stored network holds.
    pub fn restore_pool(&self, id: &str) {
        if let Some((_, pool, range)) = parse_pool_id(id) {
            self.pools()
                .entry(id.to_string())
                .or_insert_with(|| PoolState::new(pool, range));
        }
    }

    /// Start-up: an address a stored network or endpoint holds.
    pub fn restore_address(&self, pool_id: &str, ip: IpAddr) {
        if let Some(state) = self.pools().get_mut(pool_id) {
            if state.pool.contains(&ip) {
                let offset = state.pool.offset_of(&ip);
                state.taken.insert(offset);
            }
        }
    }

    /// The default pools of one IP version, in order (lazily: a large base has many).
    fn candidates(&self, v6: bool) -> impl Iterator<Item = Prefix> + '_ {
        self.predefined
            .iter()
            .filter(move |c| c.base.is_v6() == v6)
            .flat_map(move |configured| {
                let width = if v6 { 128 } else { 32 };
                let step = 1u128
                    .checked_shl(u32::from(width - configured.size))
                    .unwrap_or(0);
                let count = configured.base.size().checked_div(step).unwrap_or(1);
                (0..count).map(move |i| {
                    Prefix::new(configured.base.nth(i.saturating_mul(step)), configured.size)
                })
            })
    }

    /// The next default pool of the IP version that overlaps no pool in use, searching on
    /// from the last one handed out and coming round once.
    fn pick(&self, pools: &BTreeMap<String, PoolState>, v6: bool) -> Option<Prefix> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let start = next[usize::from(v6)];
        let free = |p: &Prefix| !pools.values().any(|held| held.pool.overlaps(p));
        let found = self
            .candidates(v6)
            .enumerate()
            .skip(start as usize)
            .find(|(_, p)| free(p))
            .or_else(|| {
                self.candidates(v6)
                    .enumerate()
                    .take(start as usize)
                    .find(|(_, p)| free(p))
            });
        let (index, pool) = found?;
        next[usize::from(v6)] = index as u128 + 1;
        Some(pool)
    }
}

fn pool_id(space: &str, pool: &Prefix, range: Option<&Prefix>) -> String {
    match range {
        Some(r) => format!("{space}/{pool}/{r}"),
        None => format!("{space}/{pool}"),
    }
}

/// `(space, pool, range)` of a pool ID.
fn parse_pool_id(id: &str) -> Option<(String, Prefix, Option<Prefix>)> {
    let parts: Vec<&str> = id.split('/').collect();
    match parts.as_slice() {
        [space, addr, len] => Some((
            space.to_string(),
            Prefix::parse(&format!("{addr}/{len}"))?,
            None,
        )),
        [space, addr, len, raddr, rlen] => Some((
            space.to_string(),
            Prefix::parse(&format!("{addr}/{len}"))?,
            Some(Prefix::parse(&format!("{raddr}/{rlen}"))?),
        )),
        _ => None,
    }
}

#[async_trait::async_trait]
impl Ipam for DefaultIpam {
    fn name(&self) -> &str {
        DEFAULT_IPAM
    }

    async fn default_address_spaces(&self) -> Result<(String, String)> {
        Ok((LOCAL_ADDRESS_SPACE.into(), GLOBAL_ADDRESS_SPACE.into()))
    }

    async fn request_pool(&self, request: &PoolRequest) -> Result<Pool> {
        let mut pools = self.pools();
        let range = match request.sub_pool.as_str() {
            "" => None,
            text => Some(
                Prefix::parse(text)
                    .ok_or_else(|| Error::InvalidParameter(format!("invalid sub-pool {text}")))?,
            ),
        };
        let pool = if request.pool.is_empty() {
            self.pick(&pools, request.v6).ok_or_else(|| {
                Error::NotFound(format!(
                    "could not find an available, non-overlapping IPv{} address pool among the defaults to assign to the network",
                    if request.v6 { 6 } else { 4 }
                ))
            })?
        } else {
            let given = Prefix::parse(&request.pool)
                .ok_or_else(|| Error::InvalidParameter(format!("invalid pool {}", request.pool)))?;
            let given = given.network();
            if pools.values().any(|p| p.pool.overlaps(&given)) {
                return Err(Error::Forbidden(
                    "Pool overlaps with other one on this address space".into(),
                ));
            }
            given
        };
        let id = pool_id(&request.address_space, &pool, range.as_ref());
        pools.insert(id.clone(), PoolState::new(pool, range));
        Ok(Pool {
            id,
            pool,
            data: BTreeMap::new(),
        })
    }

    async fn release_pool(&self, pool_id: &str) -> Result<()> {
        self.pools().remove(pool_id);
        Ok(())
    }

    async fn request_address(
        &self,
        pool_id: &str,
        address: Option<IpAddr>,
        _options: &BTreeMap<String, String>,
    ) -> Result<Prefix> {
        let mut pools = self.pools();
        let state = pools.get_mut(pool_id).ok_or_else(|| {
            Error::NotFound(format!("cannot find address pool for poolID:{pool_id}"))
        })?;
        let ip = state.allocate(address)?;
        Ok(state.pool.with_addr(ip))
    }

    async fn release_address(&self, pool_id: &str, address: IpAddr) -> Result<()> {
        if let Some(state) = self.pools().get_mut(pool_id) {
            if state.pool.contains(&address) {
                let offset = state.pool.offset_of(&address);
                if offset != 0 {
                    state.taken.remove(&offset);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pool: &str, range: &str) -> PoolRequest {
        PoolRequest {
            address_space: LOCAL_ADDRESS_SPACE.into(),
            pool: pool.into(),
            sub_pool: range.into(),
            ..PoolRequest::default()
        }
    }

    fn opts() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[tokio::test]
    async fn default_pools_are_handed_out_in_order_without_overlap() {
        let ipam = DefaultIpam::new(default_address_pools());
        let a = ipam.request_pool(&request("", "")).await.unwrap();
        assert_eq!(a.pool.to_string(), "172.17.0.0/16");
        assert_eq!(a.id, "LocalDefault/172.17.0.0/16");
        ipam.request_pool(&request("172.18.5.0/24", ""))
            .await
            .unwrap();
        let c = ipam.request_pool(&request("", "")).await.unwrap();
        assert_eq!(c.pool.to_string(), "172.19.0.0/16");
        let err = ipam
            .request_pool(&request("172.17.0.0/24", ""))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            Error::Forbidden("Pool overlaps with other one on this address space".into())
        );
        ipam.release_pool(&a.id).await.unwrap();
        // The search goes on past the last pool handed out, then comes round.
        let next = ipam.request_pool(&request("", "")).await.unwrap();
        assert_eq!(next.pool.to_string(), "172.20.0.0/16");
        let v6 = PoolRequest {
            v6: true,
            ..request("", "")
        };
        assert_eq!(ipam.request_pool(&v6).await.unwrap_err().status(), 404);
    }

    #[tokio::test]
    async fn addresses_skip_network_and_broadcast_and_honour_the_range() {
        let ipam = DefaultIpam::new(Vec::new());
        let p = ipam
            .request_pool(&request("10.20.0.0/24", "10.20.0.128/25"))
            .await
            .unwrap();
        assert_eq!(p.id, "LocalDefault/10.20.0.0/24/10.20.0.128/25");
        let gw = ipam
            .request_address(&p.id, Some("10.20.0.1".parse().unwrap()), &opts())
            .await
            .unwrap();
        assert_eq!(gw.to_string(), "10.20.0.1/24");
        let next = ipam.request_address(&p.id, None, &opts()).await.unwrap();
        assert_eq!(next.to_string(), "10.20.0.128/24");
        let taken = ipam
            .request_address(&p.id, Some("10.20.0.128".parse().unwrap()), &opts())
            .await
            .unwrap_err();
        assert_eq!(taken.message(), "Address already in use");
        let out = ipam
            .request_address(&p.id, Some("10.21.0.1".parse().unwrap()), &opts())
            .await
            .unwrap_err();
        assert_eq!(out.message(), "Requested address is out of range");
        assert_eq!(
            ipam.request_address(&p.id, Some("10.20.0.255".parse().unwrap()), &opts())
                .await
                .unwrap_err()
                .message(),
            "Address already in use"
        );
        ipam.release_address(&p.id, "10.20.0.128".parse().unwrap())
            .await
            .unwrap();
        let reused = ipam.request_address(&p.id, None, &opts()).await.unwrap();
        assert_eq!(reused.to_string(), "10.20.0.128/24");

        let small = ipam
            .request_pool(&request("10.30.0.0/30", ""))
            .await
            .unwrap();
        ipam.request_address(&small.id, None, &opts())
            .await
            .unwrap();
        ipam.request_address(&small.id, None, &opts())
            .await
            .unwrap();
        let full = ipam
            .request_address(&small.id, None, &opts())
            .await
            .unwrap_err();
        assert_eq!(full.message(), "No available addresses on this pool");
    }

    #[tokio::test]
    async fn restored_state_counts() {
        let ipam = DefaultIpam::new(default_address_pools());
        ipam.restore_pool("LocalDefault/172.17.0.0/16");
        ipam.restore_address("LocalDefault/172.17.0.0/16", "172.17.0.1".parse().unwrap());
        let next = ipam
            .request_address("LocalDefault/172.17.0.0/16", None, &opts())
            .await
            .unwrap();
        assert_eq!(next.to_string(), "172.17.0.2/16");
        let fresh = ipam.request_pool(&request("", "")).await.unwrap();
        assert_eq!(fresh.pool.to_string(), "172.18.0.0/16");
        let small = DefaultIpam::new(vec![
            parse_address_pool("base=10.10.0.0/23,size=24").unwrap()
        ]);
        let first = small.request_pool(&request("", "")).await.unwrap();
        let second = small.request_pool(&request("", "")).await.unwrap();
        assert!(small.request_pool(&request("", "")).await.is_err());
        small.release_pool(&first.id).await.unwrap();
        let round = small.request_pool(&request("", "")).await.unwrap();
        assert_eq!(
            (second.pool.to_string(), round.pool.to_string()),
            ("10.10.1.0/24".into(), "10.10.0.0/24".into())
        );
        let v6 = ipam
            .request_pool(&request("fd00:1::/64", ""))
            .await
            .unwrap();
        let first = ipam.request_address(&v6.id, None, &opts()).await.unwrap();
        assert_eq!(first.to_string(), "fd00:1::1/64");
    }

    #[test]
    fn pool_flags_parse() {
        let p = parse_address_pool("base=10.10.0.0/16,size=24").unwrap();
        assert_eq!((p.base.to_string(), p.size), ("10.10.0.0/16".into(), 24));
        assert!(parse_address_pool("base=10.10.0.0/16,size=8").is_err());
        assert!(parse_address_pool("base=10.10.0.0/16").is_err());
        let j = address_pool_from_json(&serde_json::json!({"base": "172.80.0.0/16", "size": 24}))
            .unwrap();
        assert_eq!(j.size, 24);
    }
}
