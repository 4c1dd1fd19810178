//! Network namespaces as network consumers: the plumbing of `docker network connect NET NAME`
//! where NAME is a namespace made with `ip netns add NAME` (`/run/netns/NAME`).
//!
//! After a driver's `Join`, the interface it made (`SrcName`, in berth's own namespace) is
//! [`attach`]ed: set down, moved into the namespace, renamed `<DstPrefix><n>` (the lowest `n`
//! free there), given the endpoint's MAC and addresses, brought up, and routed (default routes
//! through the join's gateways, then the driver's static routes). [`detach`] is libnetwork's
//! reverse: down, back to `SrcName`, back into berth's namespace, where the driver's `Leave` /
//! `DeleteEndpoint` expect to find it. A failed attach detaches what it had moved, so a failed
//! connect leaves no interface in the namespace.
//!
//! Kernel calls go through the [`Links`] seam (the runtime's `Syscall` idea), so the sequence is
//! unit-tested with a recording double. [`RtLinks`] is the real one: two rtnetlink sockets,
//! one opened in berth's namespace and one in the target's, on a thread of its own that enters
//! the target namespace ([`in_namespace`]) and ends afterwards, so no thread of the daemon is
//! ever left in another namespace.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::cidr::Prefix;

/// Where `ip netns add NAME` binds namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// `statfs` magic of the nsfs file system namespace files live on.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Which namespace a call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// berth's own namespace, where drivers create interfaces.
    Host,
    /// The consumer's namespace.
    Namespace,
}

/// A route the namespace gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `None`: the default route.
    pub destination: Option<Prefix>,
    /// `None`: directly connected (the driver's `RouteType` 1).
    pub via: Option<IpAddr>,
}

/// What to do with a driver's interface once it joined.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attachment {
    /// The interface's name in berth's namespace (`InterfaceName.SrcName`).
    pub src_name: String,
    /// `InterfaceName.DstPrefix` (libnetwork's default `eth` when empty).
    pub dst_prefix: String,
    pub mac: Option<[u8; 6]>,
    /// Interface addresses with their prefix lengths.
    pub addresses: Vec<Prefix>,
    /// Default routes first, then the driver's static routes.
    pub routes: Vec<Route>,
}

/// The kernel calls of [`attach`] and [`detach`].
#[async_trait::async_trait(?Send)]
pub trait Links {
    /// Index of the interface `name`, if there is one.
    async fn index(&self, side: Side, name: &str) -> io::Result<Option<u32>>;
    /// Every interface name.
    async fn names(&self, side: Side) -> io::Result<Vec<String>>;
    async fn set_up(&self, side: Side, index: u32, up: bool) -> io::Result<()>;
    /// Moves the interface into the other namespace.
    async fn move_out(&self, side: Side, index: u32) -> io::Result<()>;
    async fn rename(&self, side: Side, index: u32, name: &str) -> io::Result<()>;
    async fn set_mac(&self, side: Side, index: u32, mac: [u8; 6]) -> io::Result<()>;
    async fn add_address(&self, side: Side, index: u32, address: Prefix) -> io::Result<()>;
    async fn add_route(&self, side: Side, index: u32, route: &Route) -> io::Result<()>;
    async fn delete(&self, side: Side, index: u32) -> io::Result<()>;
}

/// Why an attach or detach failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("could not find interface {0} to move into the namespace")]
    NoInterface(String),
    #[error("{step}: {}", os_text(source))]
    Step {
        step: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Namespace(String),
}

/// An OS error as Go words it (`network is unreachable`).
fn os_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => crate::goerr::errno_text(code),
        None => e.to_string(),
    }
}

fn step(what: impl Into<String>) -> impl FnOnce(io::Error) -> NetnsError {
    let what = what.into();
    move |source| NetnsError::Step { step: what, source }
}

/// Moves the driver's interface into the namespace and configures it; the name it got there.
/// On failure nothing stays in the namespace (the interface goes back as it came).
pub async fn attach(links: &dyn Links, plan: &Attachment) -> Result<String, NetnsError> {
    let src = plan.src_name.as_str();
    let index = links
        .index(Side::Host, src)
        .await
        .map_err(step(format!("looking up {src}")))?
        .ok_or_else(|| NetnsError::NoInterface(src.to_string()))?;
    links
        .set_up(Side::Host, index, false)
        .await
        .map_err(step(format!("setting {src} down")))?;
    links
        .move_out(Side::Host, index)
        .await
        .map_err(step(format!("moving {src} into the namespace")))?;
    let mut current = src.to_string();
    match configure(links, plan, &mut current).await {
        Ok(name) => Ok(name),
        Err(e) => {
            if let Err(undo) = detach_named(links, &current, src).await {
                log::warn!("moving {src} back after a failed attach: {undo}");
            }
            Err(e)
        }
    }
}

/// Names, addresses and routes the moved interface; `current` follows its name.
async fn configure(
    links: &dyn Links,
    plan: &Attachment,
    current: &mut String,
) -> Result<String, NetnsError> {
    let src = plan.src_name.as_str();
    let index = links
        .index(Side::Namespace, src)
        .await
        .map_err(step(format!("looking up {src} in the namespace")))?
        .ok_or_else(|| NetnsError::NoInterface(src.to_string()))?;
    let taken = links
        .names(Side::Namespace)
        .await
        .map_err(step("listing the namespace's interfaces"))?;
    let prefix = if plan.dst_prefix.is_empty() {
        "eth"
    } else {
        plan.dst_prefix.as_str()
    };
    let name = (0..)
        .map(|n| format!("{prefix}{n}"))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or_default();
    let ns = Side::Namespace;
    links
        .rename(ns, index, &name)
        .await
        .map_err(step(format!("renaming {src} to {name}")))?;
    current.clone_from(&name);
    if let Some(mac) = plan.mac {
        links
            .set_mac(ns, index, mac)
            .await
            .map_err(step(format!("setting the MAC address of {name}")))?;
    }
    for address in &plan.addresses {
        links
            .add_address(ns, index, *address)
            .await
            .map_err(step(format!("adding address {address} to {name}")))?;
    }
    links
        .set_up(ns, index, true)
        .await
        .map_err(step(format!("setting {name} up")))?;
    for route in &plan.routes {
        links
            .add_route(ns, index, route)
            .await
            .map_err(step(format!("adding route {} on {name}", describe(route))))?;
    }
    Ok(name)
}

fn describe(route: &Route) -> String {
    let dest = route
        .destination
        .map(|d| d.to_string())
        .unwrap_or_else(|| "default".into());
    match route.via {
        Some(via) => format!("{dest} via {via}"),
        None => dest,
    }
}

/// Adds `routes` through the namespace's interface `name` (the default routes of an endpoint
/// that became the namespace's gateway endpoint).
pub async fn add_routes(links: &dyn Links, name: &str, routes: &[Route]) -> Result<(), NetnsError> {
    let index = links
        .index(Side::Namespace, name)
        .await
        .map_err(step(format!("looking up {name}")))?
        .ok_or_else(|| NetnsError::NoInterface(name.to_string()))?;
    for route in routes {
        links
            .add_route(Side::Namespace, index, route)
            .await
            .map_err(step(format!("adding route {} on {name}", describe(route))))?;
    }
    Ok(())
}

/// Takes the interface `name` out of the namespace: down, renamed back to `src_name`, moved to
/// berth's namespace for the driver to clean up. An interface that is already gone is fine.
pub async fn detach(links: &dyn Links, name: &str, src_name: &str) -> Result<(), NetnsError> {
    detach_named(links, name, src_name).await
}

async fn detach_named(links: &dyn Links, name: &str, src_name: &str) -> Result<(), NetnsError> {
    let ns = Side::Namespace;
    let Some(index) = links
        .index(ns, name)
        .await
        .map_err(step(format!("looking up {name}")))?
    else {
        return Ok(());
    };
    links
        .set_up(ns, index, false)
        .await
        .map_err(step(format!("setting {name} down")))?;
    if name != src_name {
        links
            .rename(ns, index, src_name)
            .await
            .map_err(step(format!("renaming {name} back to {src_name}")))?;
    }
    if let Err(e) = links.move_out(ns, index).await {
        // Its name is taken in berth's namespace (or it cannot move): it must not stay
        // behind in the consumer's namespace, so it goes (a veth takes its peer with it).
        log::warn!("moving {src_name} back to berth's namespace: {e}; deleting it");
        links
            .delete(ns, index)
            .await
            .map_err(step(format!("deleting {src_name}")))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Namespaces by name

/// The identity of a namespace file: a name re-created with `ip netns del` + `add` is another
/// namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NamespaceId {
    pub dev: u64,
    pub ino: u64,
}

/// The file of namespace `name`, if `name` is a plain name (no `/`, not `.` or `..`).
pub fn namespace_path(dir: &Path, name: &str) -> Option<PathBuf> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return None;
    }
    Some(dir.join(name))
}

/// The identity of the network namespace bound at `path`; `None` when there is none (no
/// file, or a file that is not a namespace, as `ip netns del` can leave behind).
pub fn namespace_id(path: &Path) -> Option<NamespaceId> {
    use std::os::unix::fs::MetadataExt;
    let file = File::open(path).ok()?;
    let fs = nix::sys::statfs::fstatfs(file.as_fd()).ok()?;
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return None;
    }
    let meta = file.metadata().ok()?;
    Some(NamespaceId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// Runs `work` with [`RtLinks`] for berth's namespace and the namespace at `path`, on a thread
/// of its own that enters that namespace and ends with the work.
pub async fn in_namespace<T, F, Fut>(path: &Path, work: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce(RtLinks) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let path = path.to_path_buf();
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || {
            let _ = done.send(run_in(&path, work));
        })
        .map_err(|e| NetnsError::Namespace(format!("starting a namespace thread: {e}")))?;
    result
        .await
        .map_err(|_| NetnsError::Namespace("the namespace thread died".into()))?
}

fn run_in<T, F, Fut>(path: &Path, work: F) -> Result<T, NetnsError>
where
    F: FnOnce(RtLinks) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        NetnsError::Namespace(format!("{what} {}: {e}", path.display()))
    };
    let target = File::open(path).map_err(|e| fail("opening namespace", &e))?;
    let home = File::open("/proc/thread-self/ns/net").map_err(|e| fail("before entering", &e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| fail("runtime for", &e))?;
    runtime.block_on(async move {
        let host = connect().map_err(|e| fail("netlink before entering", &e))?;
        nix::sched::setns(target.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| fail("entering namespace", &e))?;
        let inner = connect().map_err(|e| fail("netlink in namespace", &e))?;
        Ok(work(RtLinks {
            host,
            inner,
            host_ns: home,
            target_ns: target,
        })
        .await)
    })
}

/// An rtnetlink socket in the calling thread's namespace, driven by the current runtime.
pub(crate) fn connect() -> io::Result<Handle> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(connection);
    Ok(handle)
}

/// The IPv4 destinations of the main routing table of berth's namespace, default routes left
/// out: libnetwork passes over a default pool that one of them overlaps.
pub(crate) async fn host_routes_v4() -> io::Result<Vec<Prefix>> {
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
    const MAIN_TABLE: u32 = 254;
    let handle = connect()?;
    let request = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let mut routes = handle.route().get(request).execute();
    let mut out = Vec::new();
    while let Some(route) = routes.try_next().await.map_err(nl)? {
        let len = route.header.destination_prefix_length;
        // The table attribute holds ids above 255, the header only the low ones.
        let table = route
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(route.header.table));
        if len == 0 || table != MAIN_TABLE {
            continue;
        }
        out.extend(route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(addr)) => {
                Some(Prefix::new(IpAddr::V4(*addr), len))
            }
            _ => None,
        }));
    }
    Ok(out)
}

/// [`Links`] over rtnetlink: one socket per namespace.
pub struct RtLinks {
    host: Handle,
    inner: Handle,
    host_ns: File,
    target_ns: File,
}

impl RtLinks {
    fn handle(&self, side: Side) -> &Handle {
        match side {
            Side::Host => &self.host,
            Side::Namespace => &self.inner,
        }
    }

    async fn set_link(
        &self,
        side: Side,
        index: u32,
        build: impl FnOnce(
            rtnetlink::LinkMessageBuilder<LinkUnspec>,
        ) -> rtnetlink::LinkMessageBuilder<LinkUnspec>,
    ) -> io::Result<()> {
        set_link(self.handle(side), index, build).await
    }
}

/// `RTM_SETLINK` of a message built for the interface `index`.
pub(crate) async fn set_link(
    handle: &Handle,
    index: u32,
    build: impl FnOnce(
        rtnetlink::LinkMessageBuilder<LinkUnspec>,
    ) -> rtnetlink::LinkMessageBuilder<LinkUnspec>,
) -> io::Result<()> {
    let message = build(LinkUnspec::new_with_index(index)).build();
    handle.link().set(message).execute().await.map_err(nl)
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

pub(crate) fn nl(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

#[async_trait::async_trait(?Send)]
impl Links for RtLinks {
    async fn index(&self, side: Side, name: &str) -> io::Result<Option<u32>> {
        let mut links = self
            .handle(side)
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(found) => Ok(found.map(|l| l.header.index)),
            Err(rtnetlink::Error::NetlinkError(m))
                if m.code.map(|c| c.get()) == Some(-nix::libc::ENODEV) =>
            {
                Ok(None)
            }
            Err(e) => Err(nl(e)),
        }
    }

    async fn names(&self, side: Side) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        let mut links = self.handle(side).link().get().execute();
        while let Some(link) = links.try_next().await.map_err(nl)? {
            for attribute in link.attributes {
                if let LinkAttribute::IfName(name) = attribute {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }

    async fn set_up(&self, side: Side, index: u32, up: bool) -> io::Result<()> {
        self.set_link(side, index, |b| if up { b.up() } else { b.down() })
            .await
    }

    async fn move_out(&self, side: Side, index: u32) -> io::Result<()> {
        let to = match side {
            Side::Host => &self.target_ns,
            Side::Namespace => &self.host_ns,
        };
        let fd = to.as_raw_fd();
        self.set_link(side, index, |b| b.setns_by_fd(fd)).await
    }

    async fn rename(&self, side: Side, index: u32, name: &str) -> io::Result<()> {
        self.set_link(side, index, |b| b.name(name)).await
    }

    async fn set_mac(&self, side: Side, index: u32, mac: [u8; 6]) -> io::Result<()> {
        self.set_link(side, index, |b| b.address(mac.to_vec()))
            .await
    }

    async fn add_address(&self, side: Side, index: u32, address: Prefix) -> io::Result<()> {
        self.handle(side)
            .address()
            .add(index, address.addr, address.len)
            .execute()
            .await
            .map_err(nl)
    }

    async fn add_route(&self, side: Side, index: u32, route: &Route) -> io::Result<()> {
        let v6 = match (route.destination, route.via) {
            (Some(d), _) => d.is_v6(),
            (None, Some(via)) => via.is_ipv6(),
            (None, None) => false,
        };
        let mut builder = RouteMessageBuilder::<IpAddr>::new();
        let destination = route.destination.unwrap_or_else(|| {
            Prefix::new(
                if v6 {
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                },
                0,
            )
        });
        builder = builder
            .destination_prefix(destination.network().addr, destination.len)
            .map_err(invalid)?;
        builder = match route.via {
            Some(via) => builder.gateway(via).map_err(invalid)?,
            None => builder.scope(RouteScope::Link),
        };
        let message = builder.output_interface(index).build();
        self.handle(side)
            .route()
            .add(message)
            .execute()
            .await
            .map_err(nl)
    }

    async fn delete(&self, side: Side, index: u32) -> io::Result<()> {
        self.handle(side)
            .link()
            .del(index)
            .execute()
            .await
            .map_err(nl)
    }
}

// ---------------------------------------------------------------------------------------------
// Interfaces in the caller's own namespace (the test plugin's Join and Leave; tests)

/// Runs `work` on a current-thread runtime of its own with a netlink handle for the calling
/// thread's namespace. Not for use inside an async runtime.
fn with_handle<T>(
    work: impl FnOnce(Handle) -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<T>>>>,
) -> io::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move { work(connect()?).await })
}

/// Creates the veth pair `name` ⇄ `peer` in the calling thread's namespace.
pub fn create_veth(name: &str, peer: &str) -> io::Result<()> {
    let message = rtnetlink::LinkVeth::new(name, peer).build();
    with_handle(move |handle| {
        Box::pin(async move { handle.link().add(message).execute().await.map_err(nl) })
    })
}

/// Deletes the interface `name` of the calling thread's namespace; false when there is none.
pub fn delete_link(name: &str) -> io::Result<bool> {
    let name = name.to_string();
    with_handle(move |handle| {
        Box::pin(async move {
            let mut found = handle.link().get().match_name(name).execute();
            let index = match found.try_next().await {
                Ok(Some(link)) => link.header.index,
                Ok(None) => return Ok(false),
                Err(rtnetlink::Error::NetlinkError(m))
                    if m.code.map(|c| c.get()) == Some(-nix::libc::ENODEV) =>
                {
                    return Ok(false)
                }
                Err(e) => return Err(nl(e)),
            };
            handle.link().del(index).execute().await.map_err(nl)?;
            Ok(true)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Interfaces by side, and a transcript of every changing call.
    struct Recording {
        host: RefCell<Vec<(u32, String)>>,
        ns: RefCell<Vec<(u32, String)>>,
        calls: RefCell<Vec<String>>,
        fail_on: Option<&'static str>,
    }

    impl Recording {
        fn new(host: &[(u32, &str)], ns: &[(u32, &str)]) -> Recording {
            let own = |l: &[(u32, &str)]| l.iter().map(|(i, n)| (*i, n.to_string())).collect();
            Recording {
                host: RefCell::new(own(host)),
                ns: RefCell::new(own(ns)),
                calls: RefCell::new(Vec::new()),
                fail_on: None,
            }
        }
        fn side(&self, side: Side) -> &RefCell<Vec<(u32, String)>> {
            match side {
                Side::Host => &self.host,
                Side::Namespace => &self.ns,
            }
        }
        fn record(&self, line: String) -> io::Result<()> {
            let fail = self.fail_on.is_some_and(|f| line.starts_with(f));
            self.calls.borrow_mut().push(line);
            if fail {
                return Err(io::Error::from_raw_os_error(nix::libc::EEXIST));
            }
            Ok(())
        }
    }

    #[async_trait::async_trait(?Send)]
    impl Links for Recording {
        async fn index(&self, side: Side, name: &str) -> io::Result<Option<u32>> {
            Ok(self
                .side(side)
                .borrow()
                .iter()
                .find(|(_, n)| n == name)
                .map(|(i, _)| *i))
        }
        async fn names(&self, side: Side) -> io::Result<Vec<String>> {
            Ok(self
                .side(side)
                .borrow()
                .iter()
                .map(|(_, n)| n.clone())
                .collect())
        }
        async fn set_up(&self, side: Side, index: u32, up: bool) -> io::Result<()> {
            self.record(format!(
                "{side:?} set {index} {}",
                if up { "up" } else { "down" }
            ))
        }
        async fn move_out(&self, side: Side, index: u32) -> io::Result<()> {
            self.record(format!("{side:?} move {index}"))?;
            let (from, to) = match side {
                Side::Host => (&self.host, &self.ns),
                Side::Namespace => (&self.ns, &self.host),
            };
            let pos = from.borrow().iter().position(|(i, _)| *i == index).unwrap();
            let link = from.borrow_mut().remove(pos);
            to.borrow_mut().push(link);
            Ok(())
        }
        async fn rename(&self, side: Side, index: u32, name: &str) -> io::Result<()> {
            self.record(format!("{side:?} rename {index} {name}"))?;
            for link in self.side(side).borrow_mut().iter_mut() {
                if link.0 == index {
                    link.1 = name.to_string();
                }
            }
            Ok(())
        }
        async fn set_mac(&self, side: Side, index: u32, mac: [u8; 6]) -> io::Result<()> {
            self.record(format!("{side:?} mac {index} {mac:02x?}"))
        }
        async fn add_address(&self, side: Side, index: u32, address: Prefix) -> io::Result<()> {
            self.record(format!("{side:?} addr {index} {address}"))
        }
        async fn add_route(&self, side: Side, index: u32, route: &Route) -> io::Result<()> {
            self.record(format!("{side:?} route {index} {}", describe(route)))
        }
        async fn delete(&self, side: Side, index: u32) -> io::Result<()> {
            self.record(format!("{side:?} delete {index}"))
        }
    }

    fn plan() -> Attachment {
        Attachment {
            src_name: "veth7".into(),
            dst_prefix: "eth".into(),
            mac: Some([2, 0, 0, 0, 0, 1]),
            addresses: vec![Prefix::parse("10.20.0.130/24").unwrap()],
            routes: vec![
                Route {
                    destination: None,
                    via: Some("10.20.0.1".parse().unwrap()),
                },
                Route {
                    destination: Prefix::parse("10.99.0.0/16"),
                    via: None,
                },
            ],
        }
    }

    #[tokio::test]
    async fn attach_moves_names_addresses_and_routes_in_order() {
        let links = Recording::new(&[(1, "lo"), (7, "veth7")], &[(1, "lo"), (2, "eth0")]);
        let name = attach(&links, &plan()).await.unwrap();
        assert_eq!(name, "eth1");
        assert_eq!(
            links.calls.borrow().join("\n"),
            "Host set 7 down\nHost move 7\nNamespace rename 7 eth1\n\
             Namespace mac 7 [02, 00, 00, 00, 00, 01]\nNamespace addr 7 10.20.0.130/24\n\
             Namespace set 7 up\nNamespace route 7 default via 10.20.0.1\n\
             Namespace route 7 10.99.0.0/16"
        );
    }

    #[tokio::test]
    async fn a_failed_attach_moves_the_interface_back() {
        let mut links = Recording::new(&[(7, "veth7")], &[(1, "lo")]);
        links.fail_on = Some("Namespace route 7 default");
        let err = attach(&links, &plan()).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("adding route default via 10.20.0.1 on eth0:"),
            "{err}"
        );
        let calls = links.calls.borrow();
        assert_eq!(
            calls[calls.len() - 3..].join("\n"),
            "Namespace set 7 down\nNamespace rename 7 veth7\nNamespace move 7"
        );
        assert_eq!(links.host.borrow()[0].1, "veth7");
    }

    #[tokio::test]
    async fn detach_renames_back_and_tolerates_a_missing_interface() {
        let links = Recording::new(&[], &[(1, "lo"), (9, "eth0")]);
        detach(&links, "eth0", "veth9").await.unwrap();
        assert_eq!(
            links.calls.borrow().join("\n"),
            "Namespace set 9 down\nNamespace rename 9 veth9\nNamespace move 9"
        );
        let empty = Recording::new(&[], &[(1, "lo")]);
        detach(&empty, "eth0", "veth9").await.unwrap();
        assert!(empty.calls.borrow().is_empty());
        let mut stuck = Recording::new(&[], &[(9, "eth0")]);
        stuck.fail_on = Some("Namespace move");
        detach(&stuck, "eth0", "veth9").await.unwrap();
        assert_eq!(stuck.calls.borrow().last().unwrap(), "Namespace delete 9");
    }

    #[test]
    fn namespace_names_are_plain() {
        let dir = Path::new(NETNS_DIR);
        assert_eq!(namespace_path(dir, "demo"), Some(dir.join("demo")));
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert_eq!(namespace_path(dir, bad), None, "{bad}");
        }
        assert_eq!(namespace_id(Path::new("/nonexistent/ns")), None);
        assert_eq!(namespace_id(Path::new("/etc/hostname")), None);
    }
}
