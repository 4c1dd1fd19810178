//! Namespaces as consumers: connecting one to a network (addresses from the network's IPAM, the
//! driver's `CreateEndpoint` and `Join`, the interface moved into the namespace) and taking it
//! apart again, under the service's per-network lock and one deadline per operation.

use super::*;

impl NetworkService {
    /// The namespace file of `name`, if it exists and is a network namespace.
    pub(super) fn namespace(&self, name: &str) -> Option<(PathBuf, netns::NamespaceId)> {
        let path = netns::namespace_path(&self.netns_dir, name)?;
        let id = netns::namespace_id(&path)?;
        Some((path, id))
    }

    /// `POST /networks/{id}/connect` with a namespace name as the container.
    pub async fn connect(&self, term: &str, request: ConnectRequest) -> Result<()> {
        let name = request.consumer.clone();
        let Some((path, namespace)) = self.namespace(&name) else {
            return Err(Error::NotFound(format!("No such container: {name}")));
        };
        let record = self.find(term, Ambiguity::Other)?;
        if record.predefined && record.driver != bridge::DRIVER {
            return Err(Error::InvalidParameter(if record.driver == "host" {
                "container cannot be disconnected from host network or connected to host network"
                    .into()
            } else {
                "container cannot be connected to multiple networks with one of the networks in private (none) mode".into()
            }));
        }
        if record.config_only {
            return Err(Error::Forbidden(format!(
                "cannot connect to configuration network {}",
                record.name
            )));
        }
        let _net = self.lock(format!("net:{}", record.id)).await;
        let _ns = self.lock(format!("ns:{name}")).await;
        if self
            .store
            .endpoints_of(&record.id)
            .iter()
            .any(|e| e.name == name)
        {
            return Err(Error::Forbidden(format!(
                "endpoint with name {name} already exists in network {}",
                record.name
            )));
        }
        let wants_ip = !request.ipv4_address.is_empty() || !request.ipv6_address.is_empty();
        if wants_ip && record.ipam_config.is_empty() {
            return Err(Error::InvalidParameter("user specified IP address is supported only when connecting to networks with user configured subnets".into()));
        }
        let driver = self.driver(&record.driver, Mode::Lookup).await?;
        let ipam = self.ipam(&record.ipam_driver, Mode::Lookup).await?;
        let gateway_endpoint = !record.internal
            && !self
                .store
                .endpoints()
                .iter()
                .any(|e| e.name == name && e.gateway_endpoint);
        let mut endpoint = EndpointRecord {
            id: crate::fsutil::random_hex(32),
            network_id: record.id.clone(),
            name: name.clone(),
            consumer_id: consumer_id(&path),
            sandbox_key: path.display().to_string(),
            namespace: Some(namespace),
            mac_address: String::new(),
            ipv4: None,
            ipv6: None,
            aliases: request.aliases.clone(),
            src_name: String::new(),
            interface: None,
            gateway_endpoint: false,
            gateways: Vec::new(),
            phase: Phase::Creating,
        };
        let budget = driver.call_timeout().unwrap_or(self.budget());
        within(budget, async {
            self.assign_addresses(&ipam, &record, &request, &mut endpoint)
                .await?;
            self.store
                .apply(vec![Change::PutEndpoint(endpoint.clone())])?;
            let joined = self
                .join(
                    driver.as_ref(),
                    &record,
                    &path,
                    gateway_endpoint,
                    &mut endpoint,
                )
                .await;
            if let Err(e) = joined {
                self.release_addresses(&ipam, &endpoint).await;
                self.store
                    .apply(vec![Change::DeleteEndpoint(endpoint.id.clone())])?;
                return Err(e);
            }
            endpoint.phase = Phase::Ready;
            self.store
                .apply(vec![Change::PutEndpoint(endpoint.clone())])
        })
        .await
    }

    /// libnetwork's `assignAddress`: the requested address from the pool that holds it, else
    /// the first pool with a free address; IPv6 only on IPv6 networks.
    async fn assign_addresses(
        &self,
        ipam: &IpamRef,
        record: &NetworkRecord,
        request: &ConnectRequest,
        endpoint: &mut EndpointRecord,
    ) -> Result<()> {
        for v6 in [false, true] {
            if v6 && !record.enable_ipv6 {
                break;
            }
            let wanted_text = if v6 {
                &request.ipv6_address
            } else {
                &request.ipv4_address
            };
            let wanted = match wanted_text.as_str() {
                "" => None,
                text => Some(text.parse::<IpAddr>().map_err(|_| {
                    Error::InvalidParameter(format!(
                        "invalid IPv{} address: {text}",
                        if v6 { 6 } else { 4 }
                    ))
                })?),
            };
            let mut got = None;
            for pool in record.pools.iter().filter(|p| p.v6 == v6) {
                let Some(prefix) = Prefix::parse(&pool.pool) else {
                    continue;
                };
                if wanted.is_some_and(|w| !prefix.contains(&w)) {
                    continue;
                }
                match ipam
                    .request_address(&pool.pool_id, wanted, &BTreeMap::new())
                    .await
                {
                    Ok(address) => {
                        got = Some((address.to_string(), pool.pool_id.clone()));
                        break;
                    }
                    Err(e) if wanted.is_none() && e.message().starts_with("No available") => {}
                    Err(e) => return Err(e),
                }
            }
            match (got, wanted) {
                (Some(got), _) => {
                    if v6 {
                        endpoint.ipv6 = Some(got);
                    } else {
                        endpoint.ipv4 = Some(got);
                    }
                }
                (None, Some(w)) => {
                    return Err(Error::InvalidParameter(format!(
                        "Invalid address {w}: It does not belong to any of this network's subnets"
                    )))
                }
                (None, None) if record.pools.iter().any(|p| p.v6 == v6) => {
                    return Err(Error::System(format!(
                        "no available IPv{} addresses on this network's address pools: {} ({})",
                        if v6 { 6 } else { 4 },
                        record.name,
                        record.id
                    )))
                }
                (None, None) => {}
            }
        }
        Ok(())
    }

    async fn release_addresses(&self, ipam: &IpamRef, endpoint: &EndpointRecord) {
        for (address, pool_id) in endpoint.ipv4.iter().chain(&endpoint.ipv6) {
            if let Some(p) = Prefix::parse(address) {
                if let Err(e) = ipam.release_address(pool_id, p.addr).await {
                    log::warn!("releasing address {address}: {e}");
                }
            }
        }
    }

    /// `CreateEndpoint`, `Join`, the interface into the namespace, external connectivity;
    /// undone in reverse on failure (the caller releases the addresses).
    async fn join(
        &self,
        driver: &dyn NetworkDriver,
        record: &NetworkRecord,
        path: &Path,
        gateway_endpoint: bool,
        endpoint: &mut EndpointRecord,
    ) -> Result<()> {
        let ours = EndpointInterface {
            address: endpoint
                .ipv4
                .as_ref()
                .map(|a| a.0.clone())
                .unwrap_or_default(),
            address_ipv6: endpoint
                .ipv6
                .as_ref()
                .map(|a| a.0.clone())
                .unwrap_or_default(),
            mac_address: String::new(),
        };
        let empty = Map::new();
        let (nid, eid) = (record.id.as_str(), endpoint.id.clone());
        let eid = eid.as_str();
        let filled = driver.create_endpoint(nid, eid, &ours, &empty).await?;
        let rollback_endpoint = |message: String| async move {
            let outcome = match driver.delete_endpoint(nid, eid).await {
                Ok(()) => "rolled back".to_string(),
                Err(e) => format!("failed to roll back: {e}"),
            };
            Error::System(format!("{message} ({outcome})"))
        };
        if let Some(filled) = filled {
            if !filled.mac_address.is_empty() {
                endpoint.mac_address = filled.mac_address.clone();
            }
            for (given, mine, family) in [
                (&filled.address, &ours.address, "IPv4"),
                (&filled.address_ipv6, &ours.address_ipv6, "IPv6"),
            ] {
                if !given.is_empty() && !mine.is_empty() {
                    return Err(rollback_endpoint(format!(
                        "driver modified interface address: endpoint interface {family} present ({mine}). Cannot be modified with ({given})."
                    ))
                    .await);
                }
            }
        }
        let info = match driver
            .join(&record.id, &endpoint.id, &endpoint.sandbox_key, &empty)
            .await
        {
            Ok(info) => info,
            Err(e) => {
                let _ = driver.delete_endpoint(&record.id, &endpoint.id).await;
                return Err(e);
            }
        };
        let undo_join = |e: Error| async move {
            if let Err(l) = driver.leave(nid, eid).await {
                log::warn!("rolling back a join: {l}");
            }
            if let Err(d) = driver.delete_endpoint(nid, eid).await {
                log::warn!("rolling back an endpoint: {d}");
            }
            e
        };
        let plan = match attachment(endpoint, &info, gateway_endpoint) {
            Ok(plan) => plan,
            Err(e) => return Err(undo_join(e).await),
        };
        let gateway_endpoint = gateway_endpoint && !info.disable_gateway_service;
        if !info.disable_gateway_service && !record.internal {
            endpoint.gateways = [&info.gateway, &info.gateway_ipv6]
                .into_iter()
                .filter(|g| !g.is_empty())
                .cloned()
                .collect();
        }
        if !plan.src_name.is_empty() {
            let attached = netns::in_namespace(path, move |links| async move {
                netns::attach(&links, &plan).await
            })
            .await
            .and_then(|r| r);
            match attached {
                Ok(interface) => {
                    endpoint.src_name = info.src_name.clone();
                    endpoint.interface = Some(interface);
                }
                Err(e) => {
                    let e = Error::System(format!(
                        "failed to add interface {} to sandbox: {e}",
                        info.src_name
                    ));
                    return Err(undo_join(e).await);
                }
            }
        }
        if gateway_endpoint {
            if let Err(e) = driver
                .program_external_connectivity(&record.id, &endpoint.id, &empty)
                .await
            {
                self.detach(endpoint).await;
                return Err(undo_join(e).await);
            }
            endpoint.gateway_endpoint = true;
        }
        // dockerd reads the driver's view of a joined endpoint (port mappings, MAC) right away.
        if let Err(e) = driver.endpoint_oper_info(&record.id, &endpoint.id).await {
            log::warn!("EndpointOperInfo of {}: {e}", endpoint.id);
        }
        Ok(())
    }

    /// Takes the endpoint's interface out of its namespace (if it is still the namespace it
    /// joined); errors are logged.
    async fn detach(&self, endpoint: &EndpointRecord) {
        let Some(interface) = endpoint.interface.clone() else {
            return;
        };
        let Some((path, id)) = self.namespace(&endpoint.name) else {
            return;
        };
        if endpoint.namespace != Some(id) {
            return;
        }
        let src = endpoint.src_name.clone();
        let detached = netns::in_namespace(&path, move |links| async move {
            netns::detach(&links, &interface, &src).await
        })
        .await
        .and_then(|r| r);
        if let Err(e) = detached {
            log::warn!(
                "Failed to clean up network resources on {} disconnect: {e}",
                endpoint.name
            );
        }
    }

    /// `POST /networks/{id}/disconnect`.
    pub async fn disconnect(&self, term: &str, name: &str, force: bool) -> Result<()> {
        let present = self.namespace(name).is_some();
        if !present && !force {
            return Err(Error::NotFound(format!("No such container: {name}")));
        }
        let record = self.find(term, Ambiguity::Other)?;
        let _net = self.lock(format!("net:{}", record.id)).await;
        let _ns = self.lock(format!("ns:{name}")).await;
        let endpoint = self
            .store
            .endpoints_of(&record.id)
            .into_iter()
            .find(|e| e.name == name);
        let Some(endpoint) = endpoint else {
            if !present {
                return Err(Error::NotFound(format!("endpoint {name} not found")));
            }
            let path = netns::namespace_path(&self.netns_dir, name).unwrap_or_default();
            return Err(Error::System(format!(
                "container {} is not connected to network {}",
                consumer_id(&path),
                record.name
            )));
        };
        self.leave(&record, &endpoint).await
    }

    /// libnetwork's `sbLeave` + `Delete`: external connectivity revoked, `Leave`, the interface
    /// out of the namespace, `DeleteEndpoint`, the addresses released; driver errors are
    /// logged, the endpoint goes.
    pub(super) async fn leave(
        &self,
        record: &NetworkRecord,
        endpoint: &EndpointRecord,
    ) -> Result<()> {
        let mut leaving = endpoint.clone();
        leaving.phase = Phase::Removing;
        self.store.apply(vec![Change::PutEndpoint(leaving)])?;
        let driver = self.driver(&record.driver, Mode::Lookup).await;
        let ipam = self.ipam(&record.ipam_driver, Mode::Lookup).await;
        let budget = match &driver {
            Ok(d) => d.call_timeout().unwrap_or(self.budget()),
            Err(_) => self.budget(),
        };
        within(budget, async {
            match &driver {
                Ok(driver) => {
                    if endpoint.gateway_endpoint {
                        if let Err(e) = driver
                            .revoke_external_connectivity(&record.id, &endpoint.id)
                            .await
                        {
                            log::warn!("revoking external connectivity of {}: {e}", endpoint.id);
                        }
                    }
                    if let Err(e) = driver.leave(&record.id, &endpoint.id).await {
                        log::warn!("driver error disconnecting {} : {e}", endpoint.name);
                    }
                    self.detach(endpoint).await;
                    if let Err(e) = driver.delete_endpoint(&record.id, &endpoint.id).await {
                        log::warn!("driver error deleting endpoint {} : {e}", endpoint.name);
                    }
                }
                Err(e) => {
                    log::warn!("disconnecting {} without its driver: {e}", endpoint.name);
                    self.detach(endpoint).await;
                }
            }
            match &ipam {
                Ok(ipam) => self.release_addresses(ipam, endpoint).await,
                Err(e) => log::warn!("releasing the addresses of {}: {e}", endpoint.name),
            }
        })
        .await;
        self.store
            .apply(vec![Change::DeleteEndpoint(endpoint.id.clone())])?;
        if endpoint.gateway_endpoint {
            self.hand_over_gateway(&endpoint.name).await;
        }
        Ok(())
    }

    /// libnetwork moves a sandbox's external connectivity to another endpoint when its gateway
    /// endpoint leaves: the namespace's next endpoint on a network that is not internal gets
    /// `ProgramExternalConnectivity` and its default routes. Failures are logged.
    async fn hand_over_gateway(&self, namespace: &str) {
        let next = self.store.endpoints().into_iter().find(|e| {
            e.name == namespace
                && e.phase == Phase::Ready
                && !e.gateway_endpoint
                && self
                    .store
                    .network(&e.network_id)
                    .is_some_and(|n| !n.internal)
        });
        let Some(next) = next else {
            return;
        };
        let Some(network) = self.store.network(&next.network_id) else {
            return;
        };
        let driver = match self.driver(&network.driver, Mode::Lookup).await {
            Ok(driver) => driver,
            Err(e) => {
                log::warn!("moving external connectivity to {}: {e}", next.id);
                return;
            }
        };
        let budget = driver.call_timeout().unwrap_or(self.budget());
        let programmed = within(
            budget,
            driver.program_external_connectivity(&network.id, &next.id, &Map::new()),
        )
        .await;
        if let Err(e) = programmed {
            log::warn!("moving external connectivity to {}: {e}", next.id);
            return;
        }
        if let (Some(interface), Some((path, id))) =
            (next.interface.clone(), self.namespace(namespace))
        {
            let routes: Vec<Route> = next
                .gateways
                .iter()
                .filter_map(|g| g.parse().ok())
                .map(|via| Route {
                    destination: None,
                    via: Some(via),
                })
                .collect();
            if next.namespace == Some(id) && !routes.is_empty() {
                let name = interface.clone();
                let routed = netns::in_namespace(&path, move |links| async move {
                    netns::add_routes(&links, &name, &routes).await
                })
                .await
                .and_then(|r| r);
                if let Err(e) = routed {
                    log::warn!("default route through {interface} of {namespace}: {e}");
                }
            }
        }
        let mut promoted = (*next).clone();
        promoted.gateway_endpoint = true;
        if let Err(e) = self.store.apply(vec![Change::PutEndpoint(promoted)]) {
            log::warn!("recording the gateway endpoint of {namespace}: {e}");
        }
    }
}
