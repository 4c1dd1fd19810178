//! The network service behind `/networks`: the metadata store (redb), the built-in `default`
//! IPAM, the built-in `bridge` driver, network namespaces as consumers (netlink plumbing), and libnetwork's call patterns
//! towards NetworkDriver and IpamDriver plugins reached through the plugin getter.

pub mod bridge;
pub mod ipam;
pub mod netns;
pub mod service;
pub mod store;
pub mod types;
