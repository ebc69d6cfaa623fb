//! TLS termination: certificates from Secrets, chosen by SNI, and the
//! rustls server configuration of the HTTPS listener.

pub mod certs;
pub mod store;

use std::sync::Arc;

use rustls::ServerConfig;

use self::store::CertStore;

/// The server configuration: TLS 1.2 and 1.3 with rustls's safe default
/// suites, ALPN `h2` then `http/1.1`, session resumption by tickets and by
/// a session cache, certificates from `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(Arc::new(config))
}
