//! The NetworkDriver mode of the test plugin: networks and endpoints are remembered in
//! `<TEST_ROOT>/.berth-test-plugin/network.json` (so they survive a plugin restart); `Join`
//! answers with a real veth pair when `TEST_NET_VETH=1` (host side `tp<id>h`, the side the
//! daemon moves into the sandbox `tp<id>c`), and `Leave` / `DeleteEndpoint` delete it.

use super::*;

/// What the plugin remembers (networks, endpoints, and the IPAM mode's pools).
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub(super) struct NetState {
    /// Network ID → the `CreateNetwork` request.
    pub networks: std::collections::BTreeMap<String, Value>,
    /// Endpoint ID → network ID.
    pub endpoints: std::collections::BTreeMap<String, String>,
    /// Pool ID → (pool CIDR, allocated host offsets).
    pub pools: std::collections::BTreeMap<String, (String, Vec<u32>)>,
    /// How many default pools were handed out.
    pub next_pool: u32,
}

/// The knobs of the network and IPAM modes.
pub(super) struct NetConfig {
    pub scope: String,
    pub veth: bool,
    pub prefix: String,
    /// `dest>nexthop` or `dest` (connected), comma separated.
    pub routes: Vec<String>,
    pub mac: Option<String>,
    pub address: Option<String>,
    pub no_external: bool,
    pub fail_on: Vec<String>,
}

impl NetConfig {
    pub fn from(knobs: &Knobs) -> NetConfig {
        NetConfig {
            scope: knobs
                .get("TEST_NET_SCOPE")
                .unwrap_or_else(|| "local".into()),
            veth: knobs.flag("TEST_NET_VETH"),
            prefix: knobs.get("TEST_NET_PREFIX").unwrap_or_else(|| "eth".into()),
            routes: split_list(knobs.get("TEST_NET_ROUTES")),
            mac: knobs.get("TEST_NET_MAC"),
            address: knobs.get("TEST_NET_ADDRESS"),
            no_external: knobs.flag("TEST_NET_NO_EXT"),
            fail_on: split_list(knobs.get("TEST_FAIL_ON")),
        }
    }
}

fn veth_names(endpoint: &str) -> (String, String) {
    let short: String = endpoint.chars().take(7).collect();
    (format!("tp{short}h"), format!("tp{short}c"))
}

impl Driver {
    pub(super) fn net_state(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.net.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state_path(root: &Path) -> PathBuf {
        root.join(META_DIR).join("network.json")
    }

    pub(super) fn load_net_state(root: &Path) -> NetState {
        fs::read(Self::state_path(root))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub(super) fn save_net_state(&self, state: &NetState) {
        let path = Self::state_path(&self.cfg.root);
        let _ = fs::create_dir_all(self.cfg.root.join(META_DIR));
        let tmp = path.with_extension("tmp");
        if fs::write(&tmp, serde_json::to_vec(state).unwrap_or_default()).is_ok() {
            let _ = fs::rename(tmp, path);
        }
    }

    /// `TEST_FAIL_ON`: the error reply for `method`, if it is to fail.
    pub(super) fn injected_failure(&self, method: &str) -> Option<Reply> {
        let short = method.rsplit('.').next().unwrap_or("");
        self.cfg
            .net
            .fail_on
            .iter()
            .any(|m| m == method || m == short)
            .then(|| Reply::err(format!("{method} failed (TEST_FAIL_ON)")))
    }

    /// `NetworkDriver.<method>`.
    pub(super) fn network_call(&self, method: &str, args: &Value) -> Reply {
        if let Some(reply) = self.injected_failure(method) {
            return reply;
        }
        let net = &self.cfg.net;
        let network = str_field(args, "NetworkID");
        let endpoint = str_field(args, "EndpointID");
        match method {
            "NetworkDriver.GetCapabilities" => {
                Reply::ok(json!({ "Scope": net.scope, "ConnectivityScope": net.scope }))
            }
            "NetworkDriver.CreateNetwork" => {
                let mut state = self.net_state();
                if state.networks.contains_key(&network) {
                    return Reply::err(format!("network {network} exists"));
                }
                state.networks.insert(network, args.clone());
                self.save_net_state(&state);
                Reply::ok(json!({}))
            }
            "NetworkDriver.DeleteNetwork" => {
                let mut state = self.net_state();
                if state.networks.remove(&network).is_none() {
                    return Reply::err(format!("network {network} not found"));
                }
                self.save_net_state(&state);
                Reply::ok(json!({}))
            }
            "NetworkDriver.CreateEndpoint" => {
                let mut state = self.net_state();
                if !state.networks.contains_key(&network) {
                    return Reply::err(format!("network {network} not found"));
                }
                state.endpoints.insert(endpoint, network);
                self.save_net_state(&state);
                let mut interface = Map::new();
                if let Some(mac) = &net.mac {
                    interface.insert("MacAddress".into(), json!(mac));
                }
                if let Some(address) = &net.address {
                    interface.insert("Address".into(), json!(address));
                }
                if interface.is_empty() {
                    Reply::ok(json!({ "Interface": null }))
                } else {
                    Reply::ok(json!({ "Interface": interface }))
                }
            }
            "NetworkDriver.DeleteEndpoint" => {
                let mut state = self.net_state();
                if state.endpoints.remove(&endpoint).is_none() {
                    return Reply::err(format!("endpoint {endpoint} not found"));
                }
                self.save_net_state(&state);
                if net.veth {
                    let _ = berth::network::netns::delete_link(&veth_names(&endpoint).0);
                }
                Reply::ok(json!({}))
            }
            "NetworkDriver.EndpointOperInfo" => Reply::ok(json!({ "Value": { "test": "plugin" } })),
            "NetworkDriver.Join" => self.join(&network, &endpoint),
            "NetworkDriver.Leave" => {
                if net.veth {
                    let _ = berth::network::netns::delete_link(&veth_names(&endpoint).0);
                }
                Reply::ok(json!({}))
            }
            "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity" => {
                if net.no_external {
                    Reply::not_found()
                } else {
                    Reply::ok(json!({}))
                }
            }
            "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => Reply::ok(json!({})),
            _ => Reply::not_found(),
        }
    }

    fn join(&self, network: &str, endpoint: &str) -> Reply {
        let net = &self.cfg.net;
        let gateway = {
            let state = self.net_state();
            if !state.endpoints.contains_key(endpoint) {
                return Reply::err(format!("endpoint {endpoint} not found"));
            }
            state
                .networks
                .get(network)
                .and_then(|n| field(n, "IPv4Data"))
                .and_then(|d| d.get(0))
                .map(|d| str_field(d, "Gateway"))
                .unwrap_or_default()
        };
        let gateway = gateway.split('/').next().unwrap_or("").to_string();
        let routes: Vec<Value> = net
            .routes
            .iter()
            .map(|r| match r.split_once('>') {
                Some((dest, hop)) => json!({"Destination": dest, "RouteType": 0, "NextHop": hop}),
                None => json!({"Destination": r, "RouteType": 1, "NextHop": ""}),
            })
            .collect();
        let mut answer = json!({ "Gateway": gateway, "StaticRoutes": routes });
        if net.veth {
            let (host, moved) = veth_names(endpoint);
            if let Err(e) = berth::network::netns::create_veth(&host, &moved) {
                return Reply::err(format!("creating veth {host}: {e}"));
            }
            answer["InterfaceName"] = json!({ "SrcName": moved, "DstPrefix": net.prefix });
        }
        Reply::ok(answer)
    }
}
