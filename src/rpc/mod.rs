//! The plugin RPC client: JSON over HTTP POST to a plugin's unix socket or TCP/TLS address,
//! with Docker's `Accept` header, deadlines and the retry policy; and legacy plugin discovery.

pub mod client;
pub mod discovery;
