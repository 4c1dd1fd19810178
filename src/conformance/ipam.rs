//! IpamDriver: pools with and without a requested range, overlapping requests, addresses in CIDR
//! form inside their pool, gateway requests, release, exhaustion; errors in-band as `Error`.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::prelude::*;

const FIELDS: &str = "PoolID Pool Address Data Error RequiresMACAddress RequiresRequestReplay LocalDefaultAddressSpace GlobalDefaultAddressSpace";

/// The most addresses `ipam.address.exhaustion` asks for.
const EXHAUSTION_LIMIT: usize = 64;

/// An address with a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = text.split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    fn bits(addr: IpAddr) -> (u128, u8) {
        match addr {
            IpAddr::V4(a) => (u32::from(a) as u128, 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    /// Whether `addr` lies in this network.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let (net, width) = Cidr::bits(self.addr);
        let (a, w) = Cidr::bits(addr);
        if w != width {
            return false;
        }
        let host_bits = u32::from(width - self.prefix);
        let mask = if host_bits >= 128 {
            0
        } else {
            !0u128 << host_bits
        };
        net & mask == a & mask
    }
}

/// An IPAM answer is an error when non-200 or when `Error` is set.
fn ipam_error(r: &Reply) -> bool {
    r.status != 200
        || r.field("Error")
            .and_then(Value::as_str)
            .is_some_and(|e| !e.is_empty())
}

fn granted(r: &Reply) -> bool {
    r.status == 200 && r.object().is_some() && !ipam_error(r)
}

pub async fn run(ctx: &Context<'_>, rec: &mut Recorder<'_>) {
    let mut answers: Vec<Reply> = Vec::new();
    match ctx.call("IpamDriver.GetCapabilities", Value::Null).await {
        Ok(r) => {
            if rec.expect(
                "ipam.capabilities.answers",
                granted(&r),
                Outcome::Warn,
                "200 with a JSON object",
                r.summary(),
            ) {
                let ok = ["RequiresMACAddress", "RequiresRequestReplay"]
                    .iter()
                    .all(|k| matches!(r.field(k), None | Some(Value::Null | Value::Bool(_))));
                rec.check("ipam.capabilities.shape", ok, "booleans", r.summary());
            } else {
                rec.skip("ipam.capabilities.shape", "GetCapabilities failed");
            }
            answers.push(r);
        }
        Err(e) => {
            rec.check("ipam.capabilities.answers", false, "an answer", e);
        }
    }
    let space = match ctx
        .call("IpamDriver.GetDefaultAddressSpaces", Value::Null)
        .await
    {
        Ok(r) => {
            let local = r.text("LocalDefaultAddressSpace").to_string();
            let global = r.text("GlobalDefaultAddressSpace");
            rec.check(
                "ipam.address-spaces",
                granted(&r) && !local.is_empty() && !global.is_empty(),
                "both address spaces named",
                r.summary(),
            );
            answers.push(r);
            if local.is_empty() {
                "local".to_string()
            } else {
                local
            }
        }
        Err(e) => {
            rec.check("ipam.address-spaces", false, "an answer", e);
            "local".to_string()
        }
    };

    // A pool of the plugin's choice.
    let any = ctx
        .call(
            "IpamDriver.RequestPool",
            json!({"AddressSpace": space, "Pool": "", "SubPool": "", "Options": {}, "V6": false}),
        )
        .await;
    if let Ok(r) = &any {
        let pool = Cidr::parse(&str_field(r.json.as_ref().unwrap_or(&Value::Null), "Pool"));
        rec.check(
            "ipam.pool.any",
            granted(r)
                && !str_field(r.json.as_ref().unwrap_or(&Value::Null), "PoolID").is_empty()
                && pool.is_some(),
            "PoolID and a CIDR Pool",
            r.summary(),
        );
        if granted(r) {
            let id = str_field(r.json.as_ref().unwrap_or(&Value::Null), "PoolID");
            let _ = ctx
                .call("IpamDriver.ReleasePool", json!({"PoolID": id}))
                .await;
        }
        answers.push(r.clone());
    } else if let Err(e) = &any {
        rec.check("ipam.pool.any", false, "an answer", e);
    }

    // The requested pool the address checks work in: a /29 of the benchmarking range.
    let subnet = ctx.options.ipam_subnet.clone();
    let requested = ctx.call("IpamDriver.RequestPool",
        json!({"AddressSpace": space, "Pool": subnet, "SubPool": "", "Options": {}, "V6": false}),
    )
    .await;
    let pool_id = match &requested {
        Ok(r) => {
            let got = str_field(r.json.as_ref().unwrap_or(&Value::Null), "Pool");
            let ok = granted(r) && Cidr::parse(&got) == Cidr::parse(&subnet);
            rec.check(
                "ipam.pool.requested",
                ok,
                format!("Pool {subnet}"),
                r.summary(),
            );
            answers.push(r.clone());
            if !granted(r) {
                rec.block(format!("RequestPool {subnet} failed: {}", r.summary()));
                return;
            }
            str_field(r.json.as_ref().unwrap_or(&Value::Null), "PoolID")
        }
        Err(e) => {
            rec.check("ipam.pool.requested", false, "an answer", e);
            rec.block(e.clone());
            return;
        }
    };
    let pool = Cidr::parse(&subnet).expect("--ipam-subnet is checked when parsed");

    match ctx.call("IpamDriver.RequestPool",
        json!({"AddressSpace": space, "Pool": subnet, "SubPool": "", "Options": {}, "V6": false}),
    )
    .await
    {
        Ok(r) => {
            let refused = ipam_error(&r);
            rec.check(
                "ipam.pool.overlap",
                refused,
                "an error: the range is taken",
                r.summary(),
            );
            if !refused {
                let id = str_field(r.json.as_ref().unwrap_or(&Value::Null), "PoolID");
                if id != pool_id {
                    let _ = ctx.call("IpamDriver.ReleasePool", json!({"PoolID": id})).await;
                }
            }
            answers.push(r);
        }
        Err(e) => {
            rec.check("ipam.pool.overlap", false, "an answer", e);
        }
    }

    addresses(ctx, rec, &pool_id, pool, &mut answers).await;

    match ctx
        .call(
            "IpamDriver.RequestPool",
            json!({"AddressSpace": space, "Pool": "", "SubPool": "", "Options": {}, "V6": true}),
        )
        .await
    {
        Ok(r) => {
            let pool = Cidr::parse(&str_field(r.json.as_ref().unwrap_or(&Value::Null), "Pool"));
            rec.expect(
                "ipam.pool.v6",
                granted(&r) && pool.is_some_and(|p| p.addr.is_ipv6()),
                Outcome::Warn,
                "an IPv6 Pool",
                r.summary(),
            );
            if granted(&r) {
                let id = str_field(r.json.as_ref().unwrap_or(&Value::Null), "PoolID");
                let _ = ctx
                    .call("IpamDriver.ReleasePool", json!({"PoolID": id}))
                    .await;
            }
        }
        Err(e) => {
            rec.check("ipam.pool.v6", false, "an answer", e);
        }
    }

    match ctx.call("IpamDriver.RequestAddress", json!({"PoolID": format!("berth-conformance-unknown-{}", crate::fsutil::random_hex(4)), "Address": "", "Options": {}})).await {
        Ok(r) => {
            rec.check("ipam.address.unknown-pool", ipam_error(&r), "an error", r.summary());
            let err_only = r.status == 200
                && r.field("Err").and_then(Value::as_str).is_some_and(|e| !e.is_empty())
                && !ipam_error(&r);
            rec.check("ipam.error-field", !err_only, "errors in Error (or a non-200 answer)", r.summary());
            answers.push(r);
        }
        Err(e) => {
            rec.check("ipam.address.unknown-pool", false, "an answer", e);
        }
    }

    rec.answered(
        "ipam.pool.release",
        &ctx.call("IpamDriver.ReleasePool", json!({"PoolID": pool_id}))
            .await,
        granted,
        "success",
    );

    rec.spelling(
        "ipam.field-case",
        answers
            .iter()
            .flat_map(|r| r.misspelled_keys(FIELDS))
            .collect(),
        "as Docker writes them",
    );
}

/// The address checks inside pool `pool_id` (`pool`).
async fn addresses(
    ctx: &Context<'_>,
    rec: &mut Recorder<'_>,
    pool_id: &str,
    pool: Cidr,
    answers: &mut Vec<Reply>,
) {
    let request = |address: String, options: Value| {
        let body = json!({"PoolID": pool_id, "Address": address, "Options": options});
        async move { ctx.call("IpamDriver.RequestAddress", body).await }
    };
    let release = |address: String| {
        let body = json!({"PoolID": pool_id, "Address": address});
        async move { ctx.call("IpamDriver.ReleaseAddress", body).await }
    };
    let address_of = |r: &Reply| str_field(r.json.as_ref().unwrap_or(&Value::Null), "Address");

    let gateway = match request(
        String::new(),
        json!({"RequestAddressType": "com.docker.network.gateway"}),
    )
    .await
    {
        Ok(r) => {
            let a = Cidr::parse(&address_of(&r));
            rec.check(
                "ipam.address.gateway",
                granted(&r) && a.is_some_and(|a| pool.contains(a.addr)),
                format!("an address in {}", fmt_cidr(pool)),
                r.summary(),
            );
            answers.push(r.clone());
            a
        }
        Err(e) => {
            rec.check("ipam.address.gateway", false, "an answer", e);
            None
        }
    };

    let first = match request(String::new(), json!({})).await {
        Ok(r) => {
            answers.push(r.clone());
            if !rec.check(
                "ipam.address.any",
                granted(&r) && !address_of(&r).is_empty(),
                "an Address",
                r.summary(),
            ) {
                rec.block(format!("RequestAddress failed: {}", r.summary()));
                return;
            }
            let text = address_of(&r);
            let parsed = Cidr::parse(&text);
            rec.check(
                "ipam.address.cidr",
                parsed.is_some(),
                "an address with a prefix (10.0.0.2/24)",
                &text,
            );
            rec.check(
                "ipam.address.in-pool",
                parsed.is_some_and(|a| pool.contains(a.addr)),
                format!("inside {}", fmt_cidr(pool)),
                &text,
            );
            parsed
        }
        Err(e) => {
            rec.check("ipam.address.any", false, "an answer", &e);
            rec.block(e);
            return;
        }
    };
    let second = match request(String::new(), json!({})).await {
        Ok(r) => {
            let a = Cidr::parse(&address_of(&r));
            rec.check(
                "ipam.address.distinct",
                granted(&r) && a.map(|a| a.addr) != first.map(|f| f.addr),
                "another address",
                r.summary(),
            );
            a
        }
        Err(e) => {
            rec.check("ipam.address.distinct", false, "an answer", e);
            None
        }
    };

    // A specific free address: the last usable one of the pool.
    let specific = last_host(pool);
    let taken: Vec<IpAddr> = [gateway, first, second]
        .iter()
        .flatten()
        .map(|c| c.addr)
        .collect();
    let specific = (!taken.contains(&specific)).then_some(specific);
    if let Some(addr) = specific {
        match request(addr.to_string(), json!({})).await {
            Ok(r) => {
                let got = Cidr::parse(&address_of(&r)).map(|c| c.addr);
                rec.check(
                    "ipam.address.specific",
                    granted(&r) && got == Some(addr),
                    format!("Address {addr}/{}", pool.prefix),
                    r.summary(),
                );
            }
            Err(e) => {
                rec.check("ipam.address.specific", false, "an answer", e);
            }
        }
        rec.answered(
            "ipam.address.taken",
            &request(addr.to_string(), json!({})).await,
            ipam_error,
            "an error: the address is taken",
        );
        let released = release(addr.to_string()).await;
        let again = request(addr.to_string(), json!({})).await;
        let ok = matches!(&released, Ok(r) if granted(r)) && matches!(&again, Ok(r) if granted(r));
        rec.check(
            "ipam.address.release",
            ok,
            "ReleaseAddress succeeds, the address is given again",
            match (&released, &again) {
                (Err(e), _) | (_, Err(e)) => e.clone(),
                (Ok(a), Ok(b)) => format!("release: {}; again: {}", a.summary(), b.summary()),
            },
        );
    } else {
        rec.skip("ipam.address.specific", "no free address left to ask for");
        rec.skip("ipam.address.taken", "no free address left to ask for");
        rec.skip("ipam.address.release", "no free address left to ask for");
    }

    // Exhaustion.
    let mut seen: Vec<IpAddr> = taken.clone();
    seen.extend(specific);
    let mut verdict: Option<Result<String, String>> = None;
    for _ in 0..EXHAUSTION_LIMIT {
        match request(String::new(), json!({})).await {
            Ok(r) if ipam_error(&r) => {
                verdict = Some(Ok(format!(
                    "refused after {} addresses: {}",
                    seen.len(),
                    r.summary()
                )));
                break;
            }
            Ok(r) => match Cidr::parse(&address_of(&r)) {
                Some(a) if !pool.contains(a.addr) => {
                    verdict = Some(Err(format!("{} is outside the pool", fmt_cidr(a))));
                    break;
                }
                Some(a) if seen.contains(&a.addr) => {
                    verdict = Some(Err(format!("{} given twice", a.addr)));
                    break;
                }
                Some(a) => seen.push(a.addr),
                None => {
                    verdict = Some(Err(format!("not an address: {}", r.summary())));
                    break;
                }
            },
            Err(e) => {
                verdict = Some(Err(e));
                break;
            }
        }
    }
    let verdict = verdict.unwrap_or_else(|| {
        Err(format!(
            "{EXHAUSTION_LIMIT} more addresses given from {}",
            fmt_cidr(pool)
        ))
    });
    let ok = verdict.is_ok();
    rec.check(
        "ipam.address.exhaustion",
        ok,
        "an error once the pool is full",
        match verdict {
            Ok(t) | Err(t) => t,
        },
    );
    for addr in seen {
        let _ = release(addr.to_string()).await;
    }
}

fn fmt_cidr(c: Cidr) -> String {
    format!("{}/{}", c.addr, c.prefix)
}

/// The last address of `pool` below its broadcast address.
fn last_host(pool: Cidr) -> IpAddr {
    match pool.addr {
        IpAddr::V4(a) => {
            let host_bits = 32 - u32::from(pool.prefix);
            let net = u32::from(a) & (!0u32).checked_shl(host_bits).unwrap_or(0);
            let broadcast = net | (!0u32).checked_shr(u32::from(pool.prefix)).unwrap_or(0);
            IpAddr::V4((broadcast.saturating_sub(1)).into())
        }
        IpAddr::V6(a) => {
            let host_bits = 128 - u32::from(pool.prefix);
            let net = u128::from(a) & (!0u128).checked_shl(host_bits).unwrap_or(0);
            IpAddr::V6((net | 0xfffe).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_contain() {
        let pool = Cidr::parse("198.18.77.0/29").unwrap();
        assert!(pool.contains("198.18.77.6".parse().unwrap()));
        assert!(!pool.contains("198.18.77.8".parse().unwrap()));
        assert!(!pool.contains("::1".parse().unwrap()));
        assert!(Cidr::parse("198.18.77.2").is_none());
        assert!(Cidr::parse("198.18.77.2/33").is_none());
        assert_eq!(last_host(pool), "198.18.77.6".parse::<IpAddr>().unwrap());
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6 = Cidr::parse("fd42:b3e7::/64").unwrap();
        assert!(v6.contains("fd42:b3e7::5".parse().unwrap()));
    }
}

#[cfg(test)]
mod model_tests {
    use std::collections::{HashMap, HashSet};

    use serde_json::json;

    use super::*;
    use crate::conformance::scripted::{self, arg, edit, err, ok, spoiled, Handler};

    #[derive(Default)]
    struct Pools {
        /// PoolID → (pool, given addresses).
        pools: HashMap<String, (Cidr, HashSet<IpAddr>)>,
    }

    fn nth(pool: Cidr, n: u32) -> IpAddr {
        match pool.addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) + n).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) + u128::from(n)).into()),
        }
    }

    /// A well-behaved IPAM driver; `quirks` turn behaviours off.
    fn ipam(quirks: &'static [&'static str]) -> Handler {
        let state = scripted::state::<Pools>();
        scripted::model("IpamDriver", move |method, args| {
            let q = |k: &str| quirks.contains(&k);
            let mut s = state.lock().unwrap();
            Some(match method {
                "IpamDriver.GetCapabilities" => {
                    ok(json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}))
                }
                "IpamDriver.GetDefaultAddressSpaces" => ok(
                    json!({"LocalDefaultAddressSpace": "local", "GlobalDefaultAddressSpace": "global"}),
                ),
                "IpamDriver.RequestPool" => {
                    let wanted = arg(args, "Pool");
                    let v6 = args.get("V6").and_then(Value::as_bool).unwrap_or(false);
                    let text = if !wanted.is_empty() {
                        wanted
                    } else if v6 {
                        "fd00:1::/64".into()
                    } else {
                        "10.99.0.0/24".into()
                    };
                    if v6 && q("no-v6") {
                        return Some(ok(json!({"Error": "no IPv6"})));
                    }
                    let pool = Cidr::parse(&text)?;
                    if s.pools.values().any(|(p, _)| *p == pool) && !q("allow-overlap") {
                        return Some(ok(json!({"Error": "pool overlaps"})));
                    }
                    let id = format!("pool-{}", s.pools.len());
                    s.pools.insert(id.clone(), (pool, HashSet::new()));
                    ok(json!({"PoolID": id, "Pool": text, "Data": {}}))
                }
                "IpamDriver.ReleasePool" => {
                    s.pools.remove(&arg(args, "PoolID"));
                    ok(json!({}))
                }
                "IpamDriver.RequestAddress" => {
                    let Some((pool, given)) = s.pools.get_mut(&arg(args, "PoolID")) else {
                        if q("unknown-pool-ok") {
                            return Some(ok(json!({"Address": "10.0.0.2/24"})));
                        }
                        if q("err-field") {
                            return Some(ok(json!({"Err": "no such pool"})));
                        }
                        return Some(ok(json!({"Error": "no such pool"})));
                    };
                    let wanted = arg(args, "Address");
                    let addr = if !wanted.is_empty() && !q("ignore-specific") {
                        let a: IpAddr = wanted.parse().ok()?;
                        if given.contains(&a) && !q("allow-taken") {
                            return Some(ok(json!({"Error": "address in use"})));
                        }
                        a
                    } else if q("same-address") {
                        nth(*pool, 1)
                    } else {
                        let size = 1u32 << (32 - u32::from(pool.prefix)).min(16);
                        let free = (1..size.saturating_sub(1))
                            .map(|n| nth(*pool, n))
                            .find(|a| !given.contains(a));
                        match free {
                            Some(a) => a,
                            None if q("never-full") => nth(*pool, size + 3),
                            None => return Some(ok(json!({"Error": "pool is full"}))),
                        }
                    };
                    given.insert(addr);
                    ok(json!({"Address": format!("{addr}/{}", pool.prefix), "Data": {}}))
                }
                "IpamDriver.ReleaseAddress" => {
                    if let Some((_, given)) = s.pools.get_mut(&arg(args, "PoolID")) {
                        if let Ok(a) = arg(args, "Address").parse() {
                            given.remove(&a);
                        }
                    }
                    ok(json!({}))
                }
                _ => return None,
            })
        })
    }

    fn strip_prefix(v: &mut Value) {
        if let Some(a) = v
            .get("Address")
            .and_then(Value::as_str)
            .map(|a| a.split('/').next().unwrap().to_string())
        {
            v["Address"] = a.into();
        }
    }

    #[tokio::test]
    async fn every_ipam_check_passes_against_a_good_driver_and_fails_against_a_spoiled_one() {
        scripted::prove_good(ipam(&[]), Protocol::Ipam).await;

        let cases: Vec<(&str, Outcome, Handler)> = vec![
            (
                "ipam.capabilities.answers",
                Outcome::Warn,
                spoiled(ipam(&[]), "IpamDriver.GetCapabilities", |_, _| {
                    err(500, "no")
                }),
            ),
            (
                "ipam.capabilities.shape",
                Outcome::Fail,
                spoiled(ipam(&[]), "IpamDriver.GetCapabilities", |_, _| {
                    ok(json!({"RequiresMACAddress": "no"}))
                }),
            ),
            (
                "ipam.address-spaces",
                Outcome::Fail,
                spoiled(ipam(&[]), "IpamDriver.GetDefaultAddressSpaces", |_, _| {
                    ok(json!({}))
                }),
            ),
            (
                "ipam.field-case",
                Outcome::Warn,
                spoiled(ipam(&[]), "IpamDriver.GetDefaultAddressSpaces", |_, _| {
                    ok(
                        json!({"localDefaultAddressSpace": "local", "GlobalDefaultAddressSpace": "global"}),
                    )
                }),
            ),
            (
                "ipam.pool.any",
                Outcome::Fail,
                spoiled(ipam(&[]), "IpamDriver.RequestPool", |args, a| {
                    if arg(args, "Pool").is_empty() {
                        edit(a, |v| v["Pool"] = "10.99.0.0".into())
                    } else {
                        a
                    }
                }),
            ),
            (
                "ipam.pool.requested",
                Outcome::Fail,
                spoiled(ipam(&[]), "IpamDriver.RequestPool", |_, a| {
                    edit(a, |v| v["Pool"] = "10.1.0.0/16".into())
                }),
            ),
            ("ipam.pool.overlap", Outcome::Fail, ipam(&["allow-overlap"])),
            ("ipam.pool.v6", Outcome::Warn, ipam(&["no-v6"])),
            (
                "ipam.address.any",
                Outcome::Fail,
                spoiled(ipam(&[]), "IpamDriver.RequestAddress", |args, a| {
                    if arg(args, "Address").is_empty() {
                        ok(json!({"Address": ""}))
                    } else {
                        a
                    }
                }),
            ),
            (
                "ipam.address.cidr",
                Outcome::Fail,
                spoiled(ipam(&[]), "IpamDriver.RequestAddress", |_, a| {
                    edit(a, strip_prefix)
                }),
            ),
            (
                "ipam.address.in-pool",
                Outcome::Fail,
                spoiled(ipam(&[]), "IpamDriver.RequestAddress", |_, a| {
                    edit(a, |v| {
                        if v.get("Address").is_some() {
                            v["Address"] = "192.0.2.7/24".into()
                        }
                    })
                }),
            ),
            (
                "ipam.address.distinct",
                Outcome::Fail,
                ipam(&["same-address"]),
            ),
            (
                "ipam.address.specific",
                Outcome::Fail,
                ipam(&["ignore-specific"]),
            ),
            ("ipam.address.taken", Outcome::Fail, ipam(&["allow-taken"])),
            (
                "ipam.address.gateway",
                Outcome::Fail,
                spoiled(ipam(&[]), "IpamDriver.RequestAddress", |args, a| {
                    if args["Options"].get("RequestAddressType").is_some() {
                        ok(json!({"Error": "no gateway"}))
                    } else {
                        a
                    }
                }),
            ),
            (
                "ipam.address.release",
                Outcome::Fail,
                spoiled(ipam(&[]), "IpamDriver.ReleaseAddress", |_, _| {
                    err(500, "cannot release")
                }),
            ),
            (
                "ipam.address.exhaustion",
                Outcome::Fail,
                ipam(&["never-full"]),
            ),
            (
                "ipam.address.unknown-pool",
                Outcome::Fail,
                ipam(&["unknown-pool-ok"]),
            ),
            ("ipam.error-field", Outcome::Fail, ipam(&["err-field"])),
            (
                "ipam.pool.release",
                Outcome::Fail,
                spoiled(ipam(&[]), "IpamDriver.ReleasePool", |_, _| err(500, "busy")),
            ),
        ];
        scripted::prove_cases(cases, Protocol::Ipam).await;
    }
}
