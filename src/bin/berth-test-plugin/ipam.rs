//! The IpamDriver mode of the test plugin: pools as asked for, or `10.90.<n>.0/24` in turn;
//! addresses lowest first (`.1` is the first), remembered with the network mode's state.

use super::*;

impl Driver {
    /// `IpamDriver.<method>`. Errors are 500 answers with `Err`, as go-plugins-helpers sends.
    pub(super) fn ipam_call(&self, method: &str, args: &Value) -> Reply {
        if let Some(reply) = self.injected_failure(method) {
            return reply;
        }
        match method {
            "IpamDriver.GetCapabilities" => {
                Reply::ok(json!({ "RequiresMACAddress": false, "RequiresRequestReplay": false }))
            }
            "IpamDriver.GetDefaultAddressSpaces" => Reply::ok(json!({
                "LocalDefaultAddressSpace": "testlocal",
                "GlobalDefaultAddressSpace": "testglobal"
            })),
            "IpamDriver.RequestPool" => {
                let mut state = self.net_state();
                let mut pool = str_field(args, "Pool");
                if pool.is_empty() {
                    pool = format!("10.90.{}.0/24", state.next_pool);
                    state.next_pool += 1;
                }
                let id = format!("{}/{pool}", str_field(args, "AddressSpace"));
                if state.pools.contains_key(&id) {
                    return Reply::err(format!("pool {pool} is in use"));
                }
                state.pools.insert(id.clone(), (pool.clone(), Vec::new()));
                self.save_net_state(&state);
                Reply::ok(json!({ "PoolID": id, "Pool": pool, "Data": {} }))
            }
            "IpamDriver.ReleasePool" => {
                let mut state = self.net_state();
                if state.pools.remove(&str_field(args, "PoolID")).is_none() {
                    return Reply::err("no such pool");
                }
                self.save_net_state(&state);
                Reply::ok(json!({}))
            }
            "IpamDriver.RequestAddress" => self.request_address(args),
            "IpamDriver.ReleaseAddress" => {
                let mut state = self.net_state();
                let id = str_field(args, "PoolID");
                let address = str_field(args, "Address");
                let Some((pool, taken)) = state.pools.get_mut(&id) else {
                    return Reply::err("no such pool");
                };
                if let Some(offset) = offset_in(pool, &address) {
                    taken.retain(|o| *o != offset);
                }
                self.save_net_state(&state);
                Reply::ok(json!({}))
            }
            _ => Reply::not_found(),
        }
    }

    fn request_address(&self, args: &Value) -> Reply {
        let mut state = self.net_state();
        let id = str_field(args, "PoolID");
        let wanted = str_field(args, "Address");
        let Some((pool, taken)) = state.pools.get_mut(&id) else {
            return Reply::err("no such pool");
        };
        let (base, len) = match pool.split_once('/') {
            Some((b, l)) => (b.parse::<std::net::Ipv4Addr>().ok(), l.parse::<u32>().ok()),
            None => (None, None),
        };
        let (Some(base), Some(len)) = (base, len) else {
            return Reply::err(format!("cannot allocate in {pool}"));
        };
        let size = 1u32 << (32 - len);
        let offset = if wanted.is_empty() {
            match (1..size - 1).find(|o| !taken.contains(o)) {
                Some(o) => o,
                None => return Reply::err("no addresses left"),
            }
        } else {
            match offset_in(pool, &wanted) {
                Some(o) if !taken.contains(&o) => o,
                Some(_) => return Reply::err(format!("{wanted} is in use")),
                None => return Reply::err(format!("{wanted} is not in {pool}")),
            }
        };
        taken.push(offset);
        let address = std::net::Ipv4Addr::from(u32::from(base) + offset);
        let answer = json!({ "Address": format!("{address}/{len}"), "Data": {} });
        self.save_net_state(&state);
        Reply::ok(answer)
    }
}

/// The host offset of `address` in the IPv4 `pool`.
fn offset_in(pool: &str, address: &str) -> Option<u32> {
    let (base, len) = pool.split_once('/')?;
    let base = u32::from(base.parse::<std::net::Ipv4Addr>().ok()?);
    let len: u32 = len.parse().ok()?;
    let ip = u32::from(
        address
            .split('/')
            .next()?
            .parse::<std::net::Ipv4Addr>()
            .ok()?,
    );
    let size = 1u32 << (32 - len);
    (ip >= base && ip - base < size).then(|| ip - base)
}
