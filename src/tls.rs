//! The process-wide TLS crypto provider (rustls with ring), installed once before the first
//! client that may speak TLS is built: plugin clients and registry clients share it.

use std::sync::Once;

pub fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}
