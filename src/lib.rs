//! berth: the plugin and volume slice of the Docker Engine API, served on a unix socket so the
//! stock `docker` CLI and Docker client libraries work against it unchanged.
//!
//! # Module map (dependencies point down this list; nothing reaches back up)
//!
//! | module | owns |
//! | --- | --- |
//! | [`api`] | HTTP surface: routing, `/vX.Y` prefixes and version negotiation, system endpoints, one file per resource, request decoding, filter parsing. Handlers are thin: decode, call a service, encode. |
//! | [`volume`] | the volume service: metadata store (redb), the `local` driver, driver lookup, deadlines, mount references. |
//! | [`network`] | the network service: networks and endpoints in redb, the built-in `default` IPAM, libnetwork's call order towards NetworkDriver/IpamDriver plugins, network namespaces as consumers (netlink plumbing behind a seam). |
//! | [`plugin`] | the managed plugin system: config schema, references, settable rules, privileges, the persistent store, the manager (create, set, rm, enable, disable, restore). |
//! | [`drivers`] | typed protocol adapters over the RPC client (VolumeDriver, NetworkDriver, IpamDriver and the `Ipam` trait). |
//! | [`runtime`] | running plugins: run specs, the `Executor` trait, the Linux namespaces executor, supervision, plugin logs. |
//! | [`rpc`] | the plugin RPC client (unix, tcp, TLS), retries and deadlines; legacy plugin discovery. |
//! | [`distribution`] | content-addressed blob store, safe tar extraction (layers are unpacked while they download, into a staging rootfs discarded unless every digest matched). |
//! | [`error`], [`gojson`], [`goerr`], [`fsutil`], [`config`], [`tls`], [`progress`], [`cidr`] | the one error type (mapped to Docker's status codes in one place), Go's JSON error texts, Go's wording of OS and HTTP errors, durable file steps, daemon configuration, the TLS provider, JSON-message progress streams, IP prefixes and address pools. |
//!
//! The volume and network services reach plugins only through the plugin getter
//! ([`plugin::getter`]); the manager knows nothing of volumes or networks.
//!
//! # Invariants
//! - Every state change on disk is atomic (temp file, fsync, rename); a plugin directory without
//!   its `config.json` record never counts as a plugin and is swept at start-up.
//! - The plugin store has one owner ([`plugin::manager::Manager`]); its lock is never held across
//!   I/O that may block on a client.
//! - Wire types mirror Docker's JSON (names and field order); the CLI prints some of it verbatim.
//! - Plugin processes are spawned only from the supervisor thread (PDEATHSIG is per thread) and
//!   set up in a fresh `berth plugin-init` process, never in a fork of the threaded daemon.
//! - Every call to a plugin has a deadline; a hung plugin costs a request at most that long.
//! - Volume, network and endpoint records are committed durably before a create or connect is
//!   acknowledged; plugin reference counts and the built-in IPAM's allocations are derived from
//!   them at start-up. A network or endpoint record names what it holds before plugins are
//!   asked, so a crash in between is finished or undone at the next start.
//! - No daemon thread is ever left in another network namespace: namespace work runs on a
//!   thread of its own that ends with it.

#![recursion_limit = "256"]

pub mod api;
pub mod cidr;
pub mod config;
pub mod distribution;
pub mod drivers;
pub mod error;
pub mod fsutil;
pub mod goerr;
pub mod gojson;
pub mod network;
pub mod plugin;
pub mod progress;
pub mod rpc;
pub mod runtime;
pub mod tls;
pub mod volume;

pub use error::{Error, Result};
