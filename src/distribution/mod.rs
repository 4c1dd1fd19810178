//! Plugin content: the blob store and safe extraction.

pub mod blobstore;
pub mod extract;
