//! The volume service behind `/volumes`: metadata store, the built-in `local` driver,
//! driver lookup across built-in, managed and legacy plugins, reference counts.

pub mod local;
pub mod service;
pub mod store;
pub mod types;
