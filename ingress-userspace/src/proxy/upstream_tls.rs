//! TLS to upstream endpoints (`backend-protocol: HTTPS` or `GRPCS`, the
//! `proxy-ssl-*` annotations): a rustls client configuration per distinct
//! [`UpstreamTls`] of the routes, built the first time a request needs it
//! and kept, never built per request; and the handshake.
//!
//! Without `proxy-ssl-verify: "on"` the endpoint's certificate is not
//! verified, as in ingress-nginx (its handshake signatures still are).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use ingress_model::upstream::UpstreamTls;
use rustls::{
    ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

/// Why no client configuration could be built from a route's settings.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    /// `ca.crt` holds no certificate rustls accepts as a trust anchor.
    #[error("ca.crt of proxy-ssl-secret: {0}")]
    BadCa(String),
    /// `tls.crt` or `tls.key` cannot be used.
    #[error("tls.crt/tls.key of proxy-ssl-secret: {0}")]
    BadClientCert(String),
    /// The protocols or cipher suites leave nothing to speak.
    #[error("{0}")]
    Config(#[from] TlsError),
}

/// The client configurations of the routes' distinct TLS settings, each
/// in two kinds: ALPN `h2` (HTTP/2) or `http/1.1`.
#[derive(Default)]
pub struct TlsClientConfigs {
    /// foldhash: the key is the settings (PEM included), hashed once per
    /// request over TLS.
    built: Mutex<HashMap<(UpstreamTls, bool), Arc<ClientConfig>, foldhash::fast::RandomState>>,
}

/// Distinct settings kept at most; past it the cache starts again (only
/// a cluster that churns through certificates gets there).
const MAX_CONFIGS: usize = 1024;

impl TlsClientConfigs {
    /// The configuration for `tls` (`None`: the defaults, unverified),
    /// offering ALPN `h2` when `http2`, else `http/1.1`; built once.
    pub fn get(
        &self,
        tls: Option<&UpstreamTls>,
        http2: bool,
    ) -> Result<Arc<ClientConfig>, UpstreamTlsError> {
        let default = UpstreamTls::default();
        let tls = tls.unwrap_or(&default);
        let key = (tls.clone(), http2);
        if let Some(config) = self.built.lock().expect("TLS configs lock").get(&key) {
            return Ok(config.clone());
        }
        let config = build(tls, http2)?;
        let mut built = self.built.lock().expect("TLS configs lock");
        if built.len() >= MAX_CONFIGS {
            built.clear();
        }
        Ok(built.entry(key).or_insert(config).clone())
    }
}

/// A client configuration for `tls`.
pub fn build(tls: &UpstreamTls, http2: bool) -> Result<Arc<ClientConfig>, UpstreamTlsError> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(allowed) = &tls.cipher_suites {
        // TLS 1.3's suites stay: OpenSSL cipher lists do not name them.
        provider.cipher_suites.retain(|suite| {
            suite.version() == &rustls::version::TLS13
                || suite
                    .suite()
                    .as_str()
                    .is_some_and(|name| allowed.iter().any(|a| a == name))
        });
    }
    let provider = Arc::new(provider);
    let mut versions = Vec::new();
    if tls.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if tls.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    let verifier: Arc<dyn ServerCertVerifier> = match &tls.verify {
        Some(ca_pem) => Arc::new(DepthLimited::new(ca_pem, tls.verify_depth, &provider)?),
        None => Arc::new(Unverified(provider.signature_verification_algorithms)),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some(cert) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(&cert.cert_pem)
                    .collect::<Result<_, _>>()
                    .map_err(|error| UpstreamTlsError::BadClientCert(error.to_string()))?;
            // The key's parse error is not passed on: it could quote key bytes.
            let key = PrivateKeyDer::from_pem_slice(&cert.key_pem)
                .map_err(|_| UpstreamTlsError::BadClientCert("no private key".to_owned()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| UpstreamTlsError::BadClientCert(error.to_string()))?
        }
    };
    config.enable_sni = tls.send_sni;
    config.alpn_protocols = vec![if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(Arc::new(config))
}

/// The name an endpoint's certificate is verified for (and sent as SNI
/// when asked): `proxy-ssl-name`, else the host sent upstream without its
/// port, else the endpoint's address.
pub fn server_name(
    tls: Option<&UpstreamTls>,
    upstream_host: &str,
    endpoint: SocketAddr,
) -> ServerName<'static> {
    let host = match tls.and_then(|tls| tls.server_name.as_deref()) {
        Some(name) => std::borrow::Cow::Borrowed(name),
        None => ingress_model::host::request_host(upstream_host),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return ServerName::IpAddress(ip.into());
    }
    ServerName::try_from(host.into_owned()).unwrap_or(ServerName::IpAddress(endpoint.ip().into()))
}

/// The TLS handshake on `stream` with `config`, for `name`.
pub async fn connect(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    stream: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    TlsConnector::from(config).connect(name, stream).await
}

/// `proxy-ssl-verify: "off"`: any certificate; the handshake's signatures
/// are still checked (they prove nothing without the chain, but a broken
/// handshake stays broken).
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `proxy-ssl-verify: "on"`: the chain to a CA of `ca.crt` and the name,
/// by webpki, with at most `depth` intermediate certificates
/// (`proxy-ssl-verify-depth`, as OpenSSL counts them). The path webpki
/// built is not exposed, so the intermediates the endpoint sent count,
/// less copies of the CAs.
#[derive(Debug)]
struct DepthLimited {
    inner: Arc<WebPkiServerVerifier>,
    anchors: Vec<CertificateDer<'static>>,
    depth: usize,
}

impl DepthLimited {
    fn new(
        ca_pem: &[u8],
        depth: u32,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, UpstreamTlsError> {
        let anchors: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem)
            .collect::<Result<_, _>>()
            .map_err(|error| UpstreamTlsError::BadCa(error.to_string()))?;
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(anchors.iter().cloned());
        if added == 0 {
            return Err(UpstreamTlsError::BadCa(
                "no usable CA certificate".to_owned(),
            ));
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|error| UpstreamTlsError::BadCa(error.to_string()))?;
        Ok(Self {
            inner,
            anchors,
            depth: depth as usize,
        })
    }
}

impl ServerCertVerifier for DepthLimited {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        let between = intermediates
            .iter()
            .filter(|cert| {
                !self
                    .anchors
                    .iter()
                    .any(|anchor| anchor.as_ref() == cert.as_ref())
            })
            .count();
        if between > self.depth {
            return Err(TlsError::General(format!(
                "the certificate chain has {between} intermediate certificates, over \
                 proxy-ssl-verify-depth {}",
                self.depth
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
