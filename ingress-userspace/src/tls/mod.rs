//! TLS termination: certificates from Secrets, chosen by SNI, and the
//! rustls server configuration of the HTTPS listener.

pub mod certs;
pub mod client_auth;
pub mod store;

use std::sync::Arc;

use ingress_model::auth::VerifyClient;
use rustls::{ServerConfig, server::Acceptor};
use tokio::net::TcpStream;
use tokio_rustls::{LazyConfigAcceptor, server::TlsStream};

use self::{
    client_auth::{HostClientAuth, RequestClientCert},
    store::CertStore,
};

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

/// A connection after its TLS handshake.
pub struct Accepted {
    /// The decrypted stream.
    pub stream: TlsStream<TcpStream>,
    /// The client's SNI.
    pub server_name: Option<String>,
    /// The client certificate authentication of the SNI's host.
    pub client_auth: Option<Arc<HostClientAuth>>,
}

/// Terminates TLS with the server configuration of the client's SNI: the
/// common one, or for a host with client certificate authentication one
/// that asks for a certificate.
pub struct TlsTerminator {
    store: Arc<CertStore>,
    common: Arc<ServerConfig>,
}

impl TlsTerminator {
    /// Terminates with the certificates of `store`.
    pub fn new(store: Arc<CertStore>) -> Result<Self, rustls::Error> {
        Ok(Self {
            common: server_config(store.clone())?,
            store,
        })
    }

    /// The handshake of one connection: the stream, its SNI and the
    /// client certificate authentication of that host, if any.
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<Accepted> {
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
        let server_name = start.client_hello().server_name().map(str::to_owned);
        let host = self.store.client_auth.for_name(server_name.as_deref());
        let config = match &host {
            Some(host) if host.auth.verify != VerifyClient::Off => self
                .asking_config(host)
                .map_err(|error| std::io::Error::other(error.to_string()))?,
            _ => self.common.clone(),
        };
        let stream = start.into_stream(config).await?;
        Ok(Accepted {
            stream,
            server_name,
            client_auth: host,
        })
    }

    /// The common configuration, asking for a client certificate.
    fn asking_config(&self, host: &HostClientAuth) -> Result<Arc<ServerConfig>, rustls::Error> {
        let provider = self.store.client_auth.provider().clone();
        let verifier = RequestClientCert::for_host(host, provider.clone());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(self.store.clone());
        config.alpn_protocols = self.common.alpn_protocols.clone();
        config.ticketer = self.common.ticketer.clone();
        config.session_storage = self.common.session_storage.clone();
        Ok(Arc::new(config))
    }
}
