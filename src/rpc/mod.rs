//! The plugin RPC client: JSON over HTTP POST to a plugin's unix socket or TCP/TLS address,
//! with Docker's `Accept` header, deadlines and the retry policy; legacy plugin discovery; and
//! the handle through which every protocol adapter reaches a plugin.

pub mod client;
pub mod discovery;
pub mod handle;
