//! Plugin content: the blob store, safe extraction and the registry client.

pub mod blobstore;
pub mod extract;
pub mod registry;
