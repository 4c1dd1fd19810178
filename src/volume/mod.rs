//! The volume service behind `/volumes`: metadata store, the built-in `local` driver,
//! driver lookup across built-in, managed and legacy plugins, reference counts; and the
//! gateway that serves managed volume plugins to other engines through the same service.

pub mod gateway;
pub mod local;
pub mod service;
pub mod store;
pub mod types;

/// Test input: a map of strings (driver options, labels) from pairs.
#[cfg(test)]
pub(crate) fn string_map(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
