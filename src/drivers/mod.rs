//! Typed adapters over the plugin RPC client, one per plugin protocol.

pub mod volume;
