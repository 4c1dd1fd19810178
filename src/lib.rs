//! berth: the plugin and volume slice of the Docker Engine API, served on a unix socket so the
//! stock `docker` CLI and Docker client libraries work against it unchanged.
//!
//! # Module map (dependencies point down this list; nothing reaches back up)
//!
//! | module | owns |
//! | --- | --- |
//! | [`api`] | HTTP surface: routing, `/vX.Y` prefixes and version negotiation, system endpoints, one file per resource, request decoding. Handlers are thin: decode, call a service, encode. |
//! | [`plugin`] | the managed plugin system: config schema, references, settable rules, privileges, the persistent store, the manager. |
//! | [`distribution`] | content-addressed blob store and safe tar extraction. |
//! | [`error`] | the one error type, mapped to Docker's status codes in one place. |
//!
//! # Invariants
//! - Every state change on disk is atomic (temp file, fsync, rename); a plugin directory without
//!   its `config.json` record never counts as a plugin and is swept at start-up.
//! - The plugin store has one owner ([`plugin::manager::Manager`]); its lock is never held across
//!   I/O that may block on a client.
//! - Wire types mirror Docker's JSON (names and field order); the CLI prints some of it verbatim.

#![recursion_limit = "256"]

pub mod api;
pub mod config;
pub mod distribution;
pub mod drivers;
pub mod error;
pub mod fsutil;
pub mod gojson;
pub mod plugin;
pub mod rpc;
pub mod runtime;
pub mod volume;

pub use error::{Error, Result};
