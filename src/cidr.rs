//! IP prefixes (`10.20.0.0/24`, `fd00::/64`) as the network service needs them: parsing as Go's
//! `net.ParseCIDR` does, containment and overlap, and addresses by offset, for IPv4 and IPv6
//! alike (addresses are handled as 128-bit numbers); and the daemon's address pools
//! (`--default-address-pool base=<cidr>,size=<n>`) that IPAM cuts networks from.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address with a prefix length. [`Prefix::network`] is the prefix itself; the address may
/// have host bits (an interface address such as `10.20.0.2/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// `addr/len` as Go's `net.ParseCIDR` reads it (an IPv4-mapped form is not accepted).
    pub fn parse(text: &str) -> Option<Prefix> {
        let (addr, len) = text.split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        // Go accepts only decimal digits, no sign, no leading `+`.
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let len: u8 = len.parse().ok()?;
        if len > max_len(&addr) {
            return None;
        }
        Some(Prefix { addr, len })
    }

    pub fn new(addr: IpAddr, len: u8) -> Prefix {
        Prefix { addr, len }
    }

    pub fn is_v6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// The prefix with its host bits cleared.
    pub fn network(&self) -> Prefix {
        Prefix {
            addr: from_bits(&self.addr, bits(&self.addr) & self.mask()),
            len: self.len,
        }
    }

    fn host_bits(&self) -> u32 {
        u32::from(max_len(&self.addr) - self.len)
    }

    fn mask(&self) -> u128 {
        let width = u32::from(max_len(&self.addr));
        let host = self.host_bits();
        let all = if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        if host >= 128 {
            0
        } else {
            all & !((1u128 << host) - 1)
        }
    }

    /// Number of addresses in the prefix, saturating (an IPv6 /0 does not fit).
    pub fn size(&self) -> u128 {
        let host = self.host_bits();
        if host >= 128 {
            u128::MAX
        } else {
            1u128 << host
        }
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && bits(ip) & self.mask() == bits(&self.addr) & self.mask()
    }

    /// Whether the two prefixes share an address.
    pub fn overlaps(&self, other: &Prefix) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4()
            && (self.contains(&other.network().addr) || other.contains(&self.network().addr))
    }

    /// Whether all of `other` lies inside this prefix.
    pub fn covers(&self, other: &Prefix) -> bool {
        other.len >= self.len && self.contains(&other.addr)
    }

    /// The address `offset` addresses after the network address.
    pub fn nth(&self, offset: u128) -> IpAddr {
        from_bits(
            &self.addr,
            (bits(&self.addr) & self.mask()).wrapping_add(offset),
        )
    }

    /// How far `ip` lies after the network address (`ip` must be inside).
    pub fn offset_of(&self, ip: &IpAddr) -> u128 {
        bits(ip) - (bits(&self.addr) & self.mask())
    }

    /// `ip` with this prefix's length (an interface address: `10.20.0.2/24`).
    pub fn with_addr(&self, ip: IpAddr) -> Prefix {
        Prefix {
            addr: ip,
            len: self.len,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn max_len(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn bits(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

fn from_bits(like: &IpAddr, value: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(value as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// A default address pool: `base` is cut into prefixes of length `size`
/// (`--default-address-pool base=10.10.0.0/16,size=24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool {
    pub base: Prefix,
    pub size: u8,
}

/// `base=<cidr>,size=<n>` as dockerd's `--default-address-pool` reads it.
pub fn parse_address_pool(text: &str) -> std::result::Result<AddressPool, String> {
    let (mut base, mut size) = (None, None);
    for field in text.split(',') {
        match field.split_once('=') {
            Some(("base", v)) => {
                base = Some(Prefix::parse(v).ok_or_else(|| format!("invalid base {v:?}"))?)
            }
            Some(("size", v)) => {
                size = Some(v.parse::<u8>().map_err(|_| format!("invalid size {v:?}"))?)
            }
            _ => {
                return Err(format!(
                    "unexpected field {field:?}: want base=<cidr>,size=<n>"
                ))
            }
        }
    }
    let (Some(base), Some(size)) = (base, size) else {
        return Err("both base and size are needed".into());
    };
    from_parts(base, size)
}

/// A pool from daemon.json's `{"base": "...", "size": n}`.
pub fn address_pool_from_json(
    value: &serde_json::Value,
) -> std::result::Result<AddressPool, String> {
    let base = value
        .get("base")
        .and_then(|v| v.as_str())
        .and_then(Prefix::parse)
        .ok_or("default-address-pools: each entry needs a base CIDR")?;
    let size = value
        .get("size")
        .and_then(|v| v.as_u64())
        .and_then(|v| u8::try_from(v).ok())
        .ok_or("default-address-pools: each entry needs a size")?;
    from_parts(base, size)
}

fn from_parts(base: Prefix, size: u8) -> std::result::Result<AddressPool, String> {
    let max = if base.is_v6() { 128 } else { 32 };
    if size < base.len || size > max {
        return Err(format!(
            "invalid pool size {size} for base {base}: must be between {} and {max}",
            base.len
        ));
    }
    Ok(AddressPool {
        base: base.network(),
        size,
    })
}

/// An address as Go's `net.ParseIP` reads it (plain, no prefix).
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        Prefix::parse(s).unwrap()
    }

    #[test]
    fn parses_like_go() {
        assert_eq!(p("10.20.0.1/24").to_string(), "10.20.0.1/24");
        assert_eq!(p("10.20.0.1/24").network().to_string(), "10.20.0.0/24");
        assert_eq!(p("fd00:1::5/64").network().to_string(), "fd00:1::/64");
        for bad in [
            "10.20.0.0/33",
            "nonsense",
            "10.20.0.0",
            "10.0.0.0/+8",
            "::/129",
            "1.2.3.4/",
        ] {
            assert!(Prefix::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(p("0.0.0.0/0").size(), 1 << 32);
        assert_eq!(p("::/0").size(), u128::MAX);
    }

    #[test]
    fn containment_and_overlap() {
        let a = p("10.20.0.0/24");
        assert!(a.contains(&"10.20.0.255".parse().unwrap()));
        assert!(!a.contains(&"10.20.1.0".parse().unwrap()));
        assert!(a.overlaps(&p("10.20.0.0/16")));
        assert!(p("10.20.0.0/16").overlaps(&a));
        assert!(!a.overlaps(&p("10.21.0.0/16")));
        assert!(!a.overlaps(&p("fd00::/8")));
        assert!(a.covers(&p("10.20.0.128/25")));
        assert!(!a.covers(&p("10.20.0.0/16")));
        assert_eq!(a.nth(5).to_string(), "10.20.0.5");
        assert_eq!(a.offset_of(&"10.20.0.130".parse().unwrap()), 130);
        assert_eq!(p("fd00::/64").nth(1).to_string(), "fd00::1");
    }
}
