//! berth: the plugin and volume slice of the Docker Engine API, served on a unix socket so the
//! stock `docker` CLI and Docker client libraries work against it unchanged.
//!
//! # Module map (dependencies point down this list; nothing reaches back up)
//!
//! | module | owns |
//! | --- | --- |
//! | [`daemon`] | `berth daemon` wired together: the API's sockets (created, or passed by systemd), start-up order, readiness, SIGHUP reload with its hooks, the side sockets (metrics; each enabled volume plugin served to other engines), shutdown. |
//! | [`api`] | HTTP surface: routing, `/vX.Y` prefixes and version negotiation, system endpoints, one file per resource, request decoding, filter parsing. Handlers are thin: decode, call a service, encode. |
//! | [`volume`] | the volume service: metadata store (redb), the `local` driver, driver lookup, deadlines, mount references; the gateway answering the VolumeDriver protocol for other engines (Podman) through the service. |
//! | [`plugin`] | the managed plugin system: config schema, settable rules, privileges, the persistent store, the manager (create, set, rm, enable, disable, restore). |
//! | [`drivers`] | typed protocol adapters over the RPC client (VolumeDriver, MetricsCollector). |
//! | [`runtime`] | running plugins: run specs, the `Executor` trait, the Linux namespaces executor, supervision, plugin logs. |
//! | [`rpc`] | the plugin RPC client (unix, tcp, TLS), retries and deadlines; legacy plugin discovery. |
//! | [`distribution`] | the image-reference grammar, the registry client, content-addressed blob store, safe tar extraction (layers are unpacked while they download, into a staging rootfs discarded unless every digest matched). |
//! | [`error`], [`gojson`], [`goerr`], [`fsutil`], [`config`], [`tls`], [`progress`] | the one error type (mapped to Docker's status codes in one place), Go's JSON error texts, Go's wording of OS and HTTP errors, durable file steps, daemon configuration (flags, file, defaults), the TLS provider, JSON-message progress streams. |
//! | [`metrics`], [`systemd`] | the process-wide Prometheus registry (off unless `--metrics-addr`; fed by the API dispatcher, the RPC call path, the supervisor, the manager and the volume service); systemd's socket-passing and notification protocols. |
//!
//! The volume service uses the plugin manager only to find managed volume drivers and to count
//! references; the manager knows nothing of volumes.
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
//! - Volume records are committed durably before a create is acknowledged; plugin reference
//!   counts are derived from them at start-up.

#![recursion_limit = "256"]

pub mod api;
pub mod config;
pub mod daemon;
pub mod distribution;
pub mod drivers;
pub mod error;
pub mod fsutil;
pub mod goerr;
pub mod gojson;
pub mod metrics;
pub mod plugin;
pub mod progress;
pub mod rpc;
pub mod runtime;
pub mod systemd;
pub mod tls;
pub mod volume;

pub use error::{Error, Result};
