//! The managed plugin system.

pub mod config;
pub mod getter;
pub mod lifecycle;
pub mod manager;
pub mod names;
pub mod privileges;
pub mod processes;
pub mod remote;
pub mod settable;
pub mod spec;
pub mod store;
