//! The network service behind `/networks`: the metadata store (redb), the built-in `default`
//! IPAM, network namespaces as consumers (netlink plumbing), and libnetwork's call patterns
//! towards NetworkDriver and IpamDriver plugins reached through the plugin getter.

pub mod ipam;
pub mod netns;
pub mod service;
pub mod store;
pub mod types;
