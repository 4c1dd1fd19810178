//! The IpamDriver protocol (libnetwork `ipams/remote`) and the [`Ipam`] trait the network
//! service sees every address manager through: the built-in `default` one
//! (`network::ipam`) and plugins ([`IpamDriverClient`]) alike.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use super::{call_object, field, text, CallError};
use crate::cidr::Prefix;
use crate::error::{Error, Result};
use crate::rpc::client::{PluginClient, RpcError};
use crate::rpc::handle::PluginHandle;

/// The gateway request's option (`RequestAddress` `Options`).
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
pub const GATEWAY_ADDRESS: &str = "com.docker.network.gateway";

/// A pool as asked for (`RequestPool`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolRequest {
    #[serde(rename = "AddressSpace")]
    pub address_space: String,
    #[serde(rename = "Pool")]
    pub pool: String,
    #[serde(rename = "SubPool")]
    pub sub_pool: String,
    /// `null` when the network has no IPAM options.
    #[serde(rename = "Options")]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(rename = "V6")]
    pub v6: bool,
}

/// A pool as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub id: String,
    pub pool: Prefix,
    pub data: BTreeMap<String, String>,
}

/// An address manager.
#[async_trait::async_trait]
pub trait Ipam: Send + Sync {
    /// The name networks record (`default`, a plugin's `name:tag`).
    fn name(&self) -> &str;

    /// `(local, global)` default address spaces.
    async fn default_address_spaces(&self) -> Result<(String, String)>;

    async fn request_pool(&self, request: &PoolRequest) -> Result<Pool>;

    async fn release_pool(&self, pool_id: &str) -> Result<()>;

    /// An address of the pool (`address` when given), with the pool's prefix length.
    async fn request_address(
        &self,
        pool_id: &str,
        address: Option<IpAddr>,
        options: &BTreeMap<String, String>,
    ) -> Result<Prefix>;

    async fn release_address(&self, pool_id: &str, address: IpAddr) -> Result<()>;

    /// The deadline its calls have of their own (a plugin's `enable --timeout`).
    fn call_timeout(&self) -> Option<std::time::Duration> {
        None
    }
}

#[derive(Serialize)]
struct PoolIdRequest<'a> {
    #[serde(rename = "PoolID")]
    pool_id: &'a str,
}

#[derive(Serialize)]
struct AddressRequest<'a> {
    #[serde(rename = "PoolID")]
    pool_id: &'a str,
    #[serde(rename = "Address")]
    address: String,
    #[serde(rename = "Options")]
    options: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ReleaseAddressRequest<'a> {
    #[serde(rename = "PoolID")]
    pool_id: &'a str,
    #[serde(rename = "Address")]
    address: String,
}

/// An IpamDriver plugin.
#[derive(Debug)]
pub struct IpamDriverClient {
    name: String,
    client: PluginClient,
    /// `GetDefaultAddressSpaces`, asked once (libnetwork asks when it registers the driver).
    spaces: tokio::sync::OnceCell<(String, String)>,
}

impl IpamDriverClient {
    pub fn for_plugin(plugin: &PluginHandle) -> IpamDriverClient {
        IpamDriverClient {
            name: plugin.name.clone(),
            client: plugin.client.clone(),
            spaces: tokio::sync::OnceCell::new(),
        }
    }

    async fn call(&self, method: &str, body: &(impl Serialize + ?Sized)) -> Result<Value> {
        call_object(&self.client, method, body, "Error")
            .await
            .map_err(Error::from)
    }

    /// `GetCapabilities`; a failing call gives the defaults, as libnetwork registers the driver
    /// anyway. (`RequiresMACAddress` matters only for containers with MAC addresses.)
    pub async fn capabilities(&self) -> (bool, bool) {
        match self.call("IpamDriver.GetCapabilities", &Value::Null).await {
            Ok(answer) => {
                let flag = |name| {
                    field(&answer, name)
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                };
                (flag("RequiresMACAddress"), flag("RequiresRequestReplay"))
            }
            Err(_) => (false, false),
        }
    }
}

fn decode_error(method: &str, what: &str, value: &str) -> Error {
    Error::from(CallError::Rpc(RpcError::Decode(format!(
        "{method}: invalid {what} {value:?} in the answer"
    ))))
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    match v {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
            .collect(),
        _ => BTreeMap::new(),
    }
}

#[async_trait::async_trait]
impl Ipam for IpamDriverClient {
    fn name(&self) -> &str {
        &self.name
    }

    async fn default_address_spaces(&self) -> Result<(String, String)> {
        self.spaces
            .get_or_try_init(|| async {
                let answer = self
                    .call("IpamDriver.GetDefaultAddressSpaces", &Value::Null)
                    .await?;
                Ok((
                    text(&answer, "LocalDefaultAddressSpace"),
                    text(&answer, "GlobalDefaultAddressSpace"),
                ))
            })
            .await
            .cloned()
    }

    async fn request_pool(&self, request: &PoolRequest) -> Result<Pool> {
        const M: &str = "IpamDriver.RequestPool";
        let answer = self.call(M, request).await?;
        let pool = text(&answer, "Pool");
        Ok(Pool {
            id: text(&answer, "PoolID"),
            pool: Prefix::parse(&pool).ok_or_else(|| decode_error(M, "Pool", &pool))?,
            data: string_map(field(&answer, "Data")),
        })
    }

    async fn release_pool(&self, pool_id: &str) -> Result<()> {
        self.call("IpamDriver.ReleasePool", &PoolIdRequest { pool_id })
            .await
            .map(drop)
    }

    async fn request_address(
        &self,
        pool_id: &str,
        address: Option<IpAddr>,
        options: &BTreeMap<String, String>,
    ) -> Result<Prefix> {
        const M: &str = "IpamDriver.RequestAddress";
        let request = AddressRequest {
            pool_id,
            address: address.map(|a| a.to_string()).unwrap_or_default(),
            options,
        };
        let answer = self.call(M, &request).await?;
        let given = text(&answer, "Address");
        Prefix::parse(&given).ok_or_else(|| decode_error(M, "Address", &given))
    }

    async fn release_address(&self, pool_id: &str, address: IpAddr) -> Result<()> {
        let request = ReleaseAddressRequest {
            pool_id,
            address: address.to_string(),
        };
        self.call("IpamDriver.ReleaseAddress", &request)
            .await
            .map(drop)
    }

    fn call_timeout(&self) -> Option<std::time::Duration> {
        self.client.timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_requests_keep_libnetworks_field_order() {
        let request = PoolRequest {
            address_space: "local".into(),
            v6: false,
            ..PoolRequest::default()
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"AddressSpace":"local","Pool":"","SubPool":"","Options":null,"V6":false}"#
        );
    }
}
