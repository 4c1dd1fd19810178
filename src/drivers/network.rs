//! The [`NetworkDriver`] trait the network service sees every network driver through, and the
//! NetworkDriver protocol (libnetwork `drivers/remote`, [`NetworkDriverClient`]):
//! `/NetworkDriver.<Method>` with libnetwork's request shapes, the in-band `Err` turned into
//! `remote: <Err>`, and `GetCapabilities` asked once per adapter. Which calls are made, in which
//! order and how they are rolled back is the network service's business; deadlines are the RPC
//! client's.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{call_object, field, text, CallError};
use crate::error::Result;
use crate::rpc::client::PluginClient;
use crate::rpc::handle::PluginHandle;

/// What `GetCapabilities` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// `local` or `global`.
    pub scope: String,
    /// `local` or `global`; the scope when the driver does not say.
    pub connectivity_scope: String,
}

impl Capabilities {
    /// Local scope and connectivity: the built-in `bridge` driver's, and what libnetwork
    /// assumes of a driver that cannot say.
    pub fn local() -> Capabilities {
        Capabilities {
            scope: "local".into(),
            connectivity_scope: "local".into(),
        }
    }
}

/// One pool as a driver sees it (`IPv4Data` / `IPv6Data`): CIDR strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpamData {
    // Go marshals this type through a map: keys in sorted order, nil ones left out.
    #[serde(rename = "AddressSpace")]
    pub address_space: String,
    #[serde(rename = "AuxAddresses", skip_serializing_if = "Option::is_none")]
    pub aux_addresses: Option<BTreeMap<String, String>>,
    #[serde(rename = "Gateway", skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(rename = "Pool")]
    pub pool: String,
}

/// An endpoint's interface (`CreateEndpoint`'s `Interface`, both ways): CIDR strings, empty
/// when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EndpointInterface {
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "AddressIPv6")]
    pub address_ipv6: String,
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
}

/// A route the driver wants in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    pub destination: String,
    /// 0: through `next_hop`; 1: directly connected.
    pub route_type: i64,
    pub next_hop: String,
}

/// What `Join` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinInfo {
    pub src_name: String,
    pub dst_prefix: String,
    pub gateway: String,
    pub gateway_ipv6: String,
    pub static_routes: Vec<StaticRoute>,
    pub disable_gateway_service: bool,
}

#[derive(Serialize)]
struct CreateNetworkRequest<'a> {
    #[serde(rename = "NetworkID")]
    network_id: &'a str,
    #[serde(rename = "Options")]
    options: &'a Map<String, Value>,
    #[serde(rename = "IPv4Data")]
    ipv4_data: &'a [IpamData],
    #[serde(rename = "IPv6Data")]
    ipv6_data: &'a [IpamData],
}

#[derive(Serialize)]
struct NetworkRequest<'a> {
    #[serde(rename = "NetworkID")]
    network_id: &'a str,
}

#[derive(Serialize)]
struct EndpointRequest<'a> {
    #[serde(rename = "NetworkID")]
    network_id: &'a str,
    #[serde(rename = "EndpointID")]
    endpoint_id: &'a str,
}

#[derive(Serialize)]
struct CreateEndpointRequest<'a> {
    #[serde(rename = "NetworkID")]
    network_id: &'a str,
    #[serde(rename = "EndpointID")]
    endpoint_id: &'a str,
    #[serde(rename = "Interface")]
    interface: &'a EndpointInterface,
    #[serde(rename = "Options")]
    options: &'a Map<String, Value>,
}

#[derive(Serialize)]
struct JoinRequest<'a> {
    #[serde(rename = "NetworkID")]
    network_id: &'a str,
    #[serde(rename = "EndpointID")]
    endpoint_id: &'a str,
    #[serde(rename = "SandboxKey")]
    sandbox_key: &'a str,
    #[serde(rename = "Options")]
    options: &'a Map<String, Value>,
}

#[derive(Serialize)]
struct ExternalConnectivityRequest<'a> {
    #[serde(rename = "NetworkID")]
    network_id: &'a str,
    #[serde(rename = "EndpointID")]
    endpoint_id: &'a str,
    #[serde(rename = "Options")]
    options: &'a Map<String, Value>,
}

/// A network driver: libnetwork's driver calls, made by the network service in libnetwork's
/// order. NetworkDriver plugins ([`NetworkDriverClient`]) are one kind; a built-in driver
/// implements the same calls (endpoint and interface values are CIDR strings, as on the wire).
#[async_trait::async_trait]
pub trait NetworkDriver: Send + Sync {
    /// The driver name users give (`bridge`, a managed plugin's `name:tag`).
    fn name(&self) -> &str;

    /// A built-in driver: no plugin behind it, so no plugin reference to hold.
    fn builtin(&self) -> bool {
        false
    }

    /// The deadline its calls have of their own (a plugin's `enable --timeout`).
    fn call_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// Its scope; a driver that cannot say is used with local scope, as libnetwork does.
    async fn capabilities(&self) -> Result<Capabilities>;

    async fn create_network(
        &self,
        network_id: &str,
        options: &Map<String, Value>,
        ipv4_data: &[IpamData],
        ipv6_data: &[IpamData],
    ) -> Result<()>;

    async fn delete_network(&self, network_id: &str) -> Result<()>;

    /// The interface fields the driver filled in (`None`: it left them).
    async fn create_endpoint(
        &self,
        network_id: &str,
        endpoint_id: &str,
        interface: &EndpointInterface,
        options: &Map<String, Value>,
    ) -> Result<Option<EndpointInterface>>;

    /// The driver's free-form information on an endpoint.
    async fn endpoint_oper_info(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<Map<String, Value>>;

    async fn delete_endpoint(&self, network_id: &str, endpoint_id: &str) -> Result<()>;

    /// The endpoint joins the sandbox `sandbox_key` (a network namespace path).
    async fn join(
        &self,
        network_id: &str,
        endpoint_id: &str,
        sandbox_key: &str,
        options: &Map<String, Value>,
    ) -> Result<JoinInfo>;

    async fn leave(&self, network_id: &str, endpoint_id: &str) -> Result<()>;

    async fn program_external_connectivity(
        &self,
        network_id: &str,
        endpoint_id: &str,
        options: &Map<String, Value>,
    ) -> Result<()>;

    async fn revoke_external_connectivity(&self, network_id: &str, endpoint_id: &str)
        -> Result<()>;
}

/// A NetworkDriver plugin.
#[derive(Debug)]
pub struct NetworkDriverClient {
    name: String,
    client: PluginClient,
    capabilities: Mutex<Option<Capabilities>>,
}

impl NetworkDriverClient {
    pub fn for_plugin(plugin: &PluginHandle) -> NetworkDriverClient {
        NetworkDriverClient {
            name: plugin.name.clone(),
            client: plugin.client.clone(),
            capabilities: Mutex::new(None),
        }
    }

    async fn call(&self, method: &str, body: &impl Serialize) -> Result<Value, CallError> {
        call_object(&self.client, method, body, "Err").await
    }

    /// `GetCapabilities` (empty body), once per adapter: libnetwork registers a remote driver
    /// only when this answers with a valid scope.
    async fn ask_capabilities(&self) -> Result<Capabilities, CallError> {
        if let Some(known) = self
            .capabilities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(known);
        }
        let answer = self
            .call("NetworkDriver.GetCapabilities", &Value::Null)
            .await?;
        let scope = check_scope(&text(&answer, "Scope"))?;
        let connectivity_scope = match text(&answer, "ConnectivityScope").as_str() {
            "" => scope.clone(),
            other => check_scope(other)?,
        };
        let caps = Capabilities {
            scope,
            connectivity_scope,
        };
        *self.capabilities.lock().unwrap_or_else(|p| p.into_inner()) = Some(caps.clone());
        Ok(caps)
    }

    /// A call about one endpoint (`{"NetworkID","EndpointID"}`).
    async fn endpoint_call(
        &self,
        method: &str,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<Value, CallError> {
        let request = EndpointRequest {
            network_id,
            endpoint_id,
        };
        self.call(method, &request).await
    }
}

#[async_trait::async_trait]
impl NetworkDriver for NetworkDriverClient {
    fn name(&self) -> &str {
        &self.name
    }

    fn call_timeout(&self) -> Option<std::time::Duration> {
        self.client.timeout()
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        match self.ask_capabilities().await {
            Ok(caps) => Ok(caps),
            Err(e) if e.to_string().starts_with(INVALID_CAPABILITY) => Err(e.into()),
            // dockerd keeps using a driver whose GetCapabilities failed, with local scope.
            Err(e) => {
                log::warn!("network driver {}: GetCapabilities: {e}", self.name);
                Ok(Capabilities::local())
            }
        }
    }

    async fn create_network(
        &self,
        network_id: &str,
        options: &Map<String, Value>,
        ipv4_data: &[IpamData],
        ipv6_data: &[IpamData],
    ) -> Result<()> {
        let request = CreateNetworkRequest {
            network_id,
            options,
            ipv4_data,
            ipv6_data,
        };
        ignore_answer(self.call("NetworkDriver.CreateNetwork", &request).await)
    }

    async fn delete_network(&self, network_id: &str) -> Result<()> {
        let request = NetworkRequest { network_id };
        ignore_answer(self.call("NetworkDriver.DeleteNetwork", &request).await)
    }

    async fn create_endpoint(
        &self,
        network_id: &str,
        endpoint_id: &str,
        interface: &EndpointInterface,
        options: &Map<String, Value>,
    ) -> Result<Option<EndpointInterface>> {
        let request = CreateEndpointRequest {
            network_id,
            endpoint_id,
            interface,
            options,
        };
        let answer = self.call("NetworkDriver.CreateEndpoint", &request).await?;
        Ok(match field(&answer, "Interface") {
            Some(i @ Value::Object(_)) => Some(EndpointInterface {
                address: text(i, "Address"),
                address_ipv6: text(i, "AddressIPv6"),
                mac_address: text(i, "MacAddress"),
            }),
            _ => None,
        })
    }

    async fn endpoint_oper_info(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<Map<String, Value>> {
        let answer = self
            .endpoint_call("NetworkDriver.EndpointOperInfo", network_id, endpoint_id)
            .await?;
        Ok(match field(&answer, "Value") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        })
    }

    async fn delete_endpoint(&self, network_id: &str, endpoint_id: &str) -> Result<()> {
        ignore_answer(
            self.endpoint_call("NetworkDriver.DeleteEndpoint", network_id, endpoint_id)
                .await,
        )
    }

    async fn join(
        &self,
        network_id: &str,
        endpoint_id: &str,
        sandbox_key: &str,
        options: &Map<String, Value>,
    ) -> Result<JoinInfo> {
        let request = JoinRequest {
            network_id,
            endpoint_id,
            sandbox_key,
            options,
        };
        let answer = self.call("NetworkDriver.Join", &request).await?;
        let mut info = JoinInfo {
            gateway: text(&answer, "Gateway"),
            gateway_ipv6: text(&answer, "GatewayIPv6"),
            disable_gateway_service: field(&answer, "DisableGatewayService")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            ..JoinInfo::default()
        };
        if let Some(names) = field(&answer, "InterfaceName") {
            info.src_name = text(names, "SrcName");
            info.dst_prefix = text(names, "DstPrefix");
        }
        if let Some(Value::Array(routes)) = field(&answer, "StaticRoutes") {
            info.static_routes = routes
                .iter()
                .map(|r| StaticRoute {
                    destination: text(r, "Destination"),
                    route_type: field(r, "RouteType").and_then(Value::as_i64).unwrap_or(0),
                    next_hop: text(r, "NextHop"),
                })
                .collect();
        }
        Ok(info)
    }

    async fn leave(&self, network_id: &str, endpoint_id: &str) -> Result<()> {
        ignore_answer(
            self.endpoint_call("NetworkDriver.Leave", network_id, endpoint_id)
                .await,
        )
    }

    /// A 404 (not implemented) is fine.
    async fn program_external_connectivity(
        &self,
        network_id: &str,
        endpoint_id: &str,
        options: &Map<String, Value>,
    ) -> Result<()> {
        let request = ExternalConnectivityRequest {
            network_id,
            endpoint_id,
            options,
        };
        optional(
            self.call("NetworkDriver.ProgramExternalConnectivity", &request)
                .await,
        )
    }

    /// A 404 (not implemented) is fine.
    async fn revoke_external_connectivity(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<()> {
        optional(
            self.endpoint_call(
                "NetworkDriver.RevokeExternalConnectivity",
                network_id,
                endpoint_id,
            )
            .await,
        )
    }
}

/// For the calls whose success answer carries nothing the daemon uses.
fn ignore_answer(result: Result<Value, CallError>) -> Result<()> {
    result.map(drop).map_err(Into::into)
}

fn optional(result: Result<Value, CallError>) -> Result<()> {
    match result {
        Err(e) if e.not_implemented() => Ok(()),
        other => ignore_answer(other),
    }
}

const INVALID_CAPABILITY: &str = "invalid capability";

fn check_scope(scope: &str) -> Result<String, CallError> {
    match scope {
        "local" | "global" => Ok(scope.to_string()),
        other => Err(CallError::Rpc(crate::rpc::client::RpcError::Decode(
            format!("{INVALID_CAPABILITY}: expecting 'local' or 'global', got {other}"),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_data_marshals_as_a_go_map() {
        let data = IpamData {
            address_space: "LocalDefault".into(),
            aux_addresses: Some(BTreeMap::from([("host1".into(), "10.20.0.5/24".into())])),
            gateway: Some("10.20.0.1/24".into()),
            pool: "10.20.0.0/24".into(),
        };
        assert_eq!(
            serde_json::to_string(&data).unwrap(),
            r#"{"AddressSpace":"LocalDefault","AuxAddresses":{"host1":"10.20.0.5/24"},"Gateway":"10.20.0.1/24","Pool":"10.20.0.0/24"}"#
        );
        let bare = IpamData {
            aux_addresses: None,
            gateway: None,
            ..data
        };
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            r#"{"AddressSpace":"LocalDefault","Pool":"10.20.0.0/24"}"#
        );
    }

    #[test]
    fn scopes_are_checked() {
        assert_eq!(check_scope("global").unwrap(), "global");
        assert_eq!(
            check_scope("swarm").unwrap_err().to_string(),
            "invalid capability: expecting 'local' or 'global', got swarm"
        );
    }
}
