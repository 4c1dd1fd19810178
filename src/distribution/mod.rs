//! Plugin content: the blob store, safe extraction (also of layers still downloading) and the
//! registry client.

pub mod blobstore;
pub mod extract;
pub mod pipeline;
pub mod registry;
