//! berth: the plugin and volume slice of the Docker Engine API, served on a unix socket so the
//! stock `docker` CLI and Docker client libraries work against it unchanged.
//!
//! # Module map (dependencies point down this list; nothing reaches back up)
//!
//! | module | owns | uses |
//! | --- | --- | --- |
//! | [`daemon`] | `berth daemon` wired together: the data and exec roots locked, the API's sockets (created, or passed by systemd), start-up order (the plugin runtime chosen, network recovery before the API answers), readiness, SIGHUP reload with its hooks, the side sockets (metrics; each enabled volume plugin served to other engines), shutdown. | api, services, logforward, events, runtime, rootlock, systemd |
//! | [`cli`] | the client commands `berth plugin ps` and `berth plugin exec`: the daemon's socket (`-H`, a unix `DOCKER_HOST`, the default), one HTTP request to a berth extension endpoint, the table or the command run in the plugin ([`runtime::exec`]). | api (over its socket), runtime |
//! | [`conformance`] | `berth conformance`: the protocol checks (one file per protocol; every check, with its ID, rule and source, in one table in `registry.rs`), the runner, the report (table, JSON, JUnit), and the targets (a socket, a spec file, a plugin directory or reference run in a private plugin store, a managed plugin of a running berth). | plugin getter and manager (private stores), drivers, rpc |
//! | [`api`] | HTTP surface: routing, `/vX.Y` prefixes and version negotiation (1.50 advertised, 1.41 exactly dockerd 20.10's), system endpoints (`/events`, `/system/df`, `/auth` among them), one file per resource, request decoding, filter parsing, the authorization middleware around every routed request, noticing clients that hung up (an idle event stream, a `system df` still measuring). Handlers are thin: decode, make one service call, encode. | services, authz |
//! | [`authz`] | the authorization chain: which plugins, in which order, asked how (fail-closed, no retries), reloaded on SIGHUP; the rules for what plugins are shown of a request and its response. | plugin getter, drivers |
//! | [`logforward`] | `--plugin-log-driver`: managed plugins' output lines shipped to a LogDriver plugin (one FIFO and `StartLogging` per plugin, a bounded queue fed by the output readers through the [`runtime::logs::LogSink`] seam). | plugin getter, drivers, runtime logs |
//! | [`volume`] | the volume service: metadata store (redb), the built-in `local` driver, mount references; the gateway answering the VolumeDriver protocol for other engines (Podman) through the service. Every driver, built-in or plugin, is a [`drivers::volume::VolumeDriver`]. | plugin getter, drivers, events |
//! | [`network`] | the network service: networks and endpoints in redb, the built-in `default` IPAM (an [`drivers::ipam::Ipam`] like IPAM plugins), the built-in `bridge` driver (Linux bridges and veth pairs over netlink; a [`drivers::network::NetworkDriver`] like driver plugins) and the predefined `bridge` network of `--bridge`/`--bip`, libnetwork's call order towards network drivers (every one a [`drivers::network::NetworkDriver`], as NetworkDriver plugins are) and IpamDriver plugins, network namespaces as consumers (netlink plumbing behind the `netns::Links` seam). | plugin getter, drivers, kernel (netlink) |
//! | [`plugin`] | the managed plugin system: config schema and its Go decoding, settable rules, privileges, the run spec built from a plugin's record, the persistent store, the manager (create, set, rm, enable, disable, restore, pull, push, upgrade; it owns the registry client), and the **plugin getter**: the one way any user of a plugin protocol reaches a plugin, managed or legacy. | distribution, runtime, rpc, events |
//! | [`drivers`] | typed protocol adapters over a plugin handle (VolumeDriver, NetworkDriver, IpamDriver, cached per plugin activation; AuthZPlugin; MetricsCollector; LogDriver with protobuf `LogEntry` framing), and the traits the services see drivers through (`VolumeDriver`, `NetworkDriver`, `Ipam`). | rpc |
//! | [`runtime`] | running plugins: the run spec (types and moby's defaults; it knows nothing of plugins), the `Executor` trait and its two implementations chosen by `--plugin-runtime` (the built-in Linux namespaces executor with `plugin-init`, one function per setup step, every kernel call behind the `Syscall` seam; the OCI executor writing a bundle with `oci-spec` for runc or crun, behind `runtime-shim`), the host side and the helper-process start both share, supervision, plugin logs (and the `LogSink` seam they are also sent through), and joining a running plugin for `berth plugin exec`. | kernel, runc/crun |
//! | [`rpc`] | the plugin RPC client (unix, tcp, TLS) with the one deadline per call, retries, plugin handles (client, host-path mapper, identity), legacy plugin discovery. | plugin sockets |
//! | [`events`] | the event bus: services publish (plugin manager, volume service, networks), `/events` streams subscribe; bounded history for `since`, bounded per-subscriber queues, dockerd's event filters. | distribution (the reference grammar, for the `image` filter) |
//! | [`distribution`] | the image-reference grammar, the registry client (endpoints, auth, manifests, transfer, login), content-addressed blob store, safe tar extraction (layers are unpacked while they download, into a staging rootfs discarded unless every digest matched). | disk, network |
//! | [`error`], [`gojson`], [`goerr`], [`fsutil`], [`rootlock`], [`mounts`], [`config`], [`tls`], [`progress`], [`cidr`] | the one error type (mapped to Docker's status codes in one place; every area's typed error converts into it), Go's `encoding/json` (its syntax and type-error texts and the one decoder every Go-JSON body and plugin config goes through), Go's wording of OS and HTTP errors, durable file steps, the mount table and unmounting, daemon configuration, the TLS provider, JSON-message progress streams (and the spawning of streamed operations), IP prefixes and address pools. | — |
//! | [`metrics`], [`systemd`] | the process-wide Prometheus registry (off unless `--metrics-addr`; fed by the API dispatcher, the RPC call path, the supervisor, the manager and the volume service); systemd's socket-passing and notification protocols. | — |
//!
//! Services reach plugins only through [`plugin::getter::PluginGetter`] (`get(name, capability,
//! mode)`, `all(capability)`); the manager knows nothing of volumes, networks or of what its
//! plugins are used for. A `docker volume create -d X` is api → volume service → getter (managed store or
//! legacy discovery) → drivers adapter → rpc client → plugin. The manager and the volume
//! service report what they change to the event bus they are given; neither knows who listens.
//!
//! # Invariants
//! - Every state change on disk is atomic (temp file, fsync, rename); a plugin directory without
//!   its `config.json` record never counts as a plugin and is swept at start-up.
//! - The plugin store has one owner ([`plugin::manager::Manager`]); its lock is never held across
//!   I/O that may block on a client.
//! - Wire types mirror Docker's JSON (names and field order); the CLI prints some of it verbatim.
//! - Plugin processes are spawned only from the supervisor thread (PDEATHSIG is per thread) and
//!   set up in a fresh `berth plugin-init` (built-in) or `berth runtime-shim` (runc, crun)
//!   process, never in a fork of the threaded daemon. `berth plugin exec` joins a plugin from
//!   the calling client process; the daemon only names the target.
//! - Whatever the executor, a plugin gets exactly its run spec's capabilities and device rules
//!   (the OCI executor rewrites what runc adds), and so does a command exec'd into it.
//! - Every call to a plugin has one deadline, decided in the RPC client: the plugin's own
//!   (`enable --timeout`), else `--plugin-call-timeout`, cut short by the operation it belongs to
//!   (`rpc::client::within`); a hung plugin costs a request at most that long.
//! - Volume, network and endpoint records are committed durably before a create or connect is
//!   acknowledged; plugin reference counts and the built-in IPAM's allocations are derived from
//!   them at start-up. A network or endpoint record names what it holds before plugins are
//!   asked, so a crash in between is finished or undone at the next start.
//! - No daemon thread is ever left in another network namespace: namespace work runs on a
//!   thread of its own that ends with it.
//! - With an authorization chain, no handler runs unless every plugin allowed the request as
//!   the handler will see it: the body it reads is the body the plugins were shown, and its path
//!   is the one they were shown (undecoded).
//! - Publishing an event never waits for a subscriber: one that falls behind is dropped.

#![recursion_limit = "256"]

pub mod api;
pub mod authz;
pub mod cidr;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod daemon;
pub mod distribution;
pub mod drivers;
pub mod error;
pub mod events;
pub mod fsutil;
pub mod goerr;
pub mod gojson;
pub mod logforward;
pub mod metrics;
pub mod mounts;
pub mod network;
pub mod plugin;
pub mod progress;
pub mod rootlock;
pub mod rpc;
pub mod runtime;
pub mod systemd;
pub mod tls;
pub mod volume;

pub use error::{Error, Result};
