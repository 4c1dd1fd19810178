//! Plugin content: the image-reference grammar, the registry client, the blob store and safe
//! extraction (also of layers still downloading).

pub mod blobstore;
pub mod extract;
pub mod pipeline;
pub mod reference;
pub mod registry;
