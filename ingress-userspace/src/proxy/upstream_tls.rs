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

#[cfg(test)]
mod tests {
    use ingress_model::upstream::ClientCert;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, Issuer, KeyPair, SigningKey,
    };
    use rustls::server::WebPkiClientVerifier;
    use tokio::net::TcpListener;

    use super::*;

    fn ca_params() -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
    }

    /// A CA under `issuer`.
    fn intermediate(issuer: &Issuer<'_, impl SigningKey>) -> CertifiedIssuer<'static, KeyPair> {
        CertifiedIssuer::signed_by(ca_params(), KeyPair::generate().unwrap(), issuer).unwrap()
    }

    /// A leaf for `name` signed by `issuer`, and its key.
    fn leaf(
        name: &str,
        issuer: &Issuer<'_, impl SigningKey>,
    ) -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        (cert.der().clone(), key)
    }

    #[test]
    fn the_verification_depth_counts_intermediates_as_openssl_does() {
        let root = CertifiedIssuer::self_signed(ca_params(), KeyPair::generate().unwrap()).unwrap();
        let first = intermediate(&root);
        let second = intermediate(&first);
        let (end_entity, _) = leaf("backend.test", &second);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let name = ServerName::try_from("backend.test").unwrap();
        let chain = [second.der().clone(), first.der().clone()];
        for (depth, sent, ok) in [
            (1, &chain[..], false),
            (2, &chain[..], true),
            // A copy of the CA sent along does not count.
            (
                2,
                &[chain[0].clone(), chain[1].clone(), root.der().clone()][..],
                true,
            ),
        ] {
            let verifier = DepthLimited::new(root.pem().as_bytes(), depth, &provider).unwrap();
            let verified =
                verifier.verify_server_cert(&end_entity, sent, &name, &[], UnixTime::now());
            assert_eq!(verified.is_ok(), ok, "depth {depth}, {} sent", sent.len());
        }
        // Another name is refused whatever the depth.
        let verifier = DepthLimited::new(root.pem().as_bytes(), 5, &provider).unwrap();
        let other = ServerName::try_from("other.test").unwrap();
        assert!(
            verifier
                .verify_server_cert(&end_entity, &chain, &other, &[], UnixTime::now())
                .is_err()
        );
        assert!(DepthLimited::new(b"not PEM", 1, &provider).is_err());
    }

    #[test]
    fn protocols_and_tls12_suites_restrict_the_configuration() {
        let tls = UpstreamTls {
            tls13: false,
            cipher_suites: Some(vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_owned()]),
            ..UpstreamTls::default()
        };
        let config = build(&tls, true).unwrap();
        let suites: Vec<_> = config
            .crypto_provider()
            .cipher_suites
            .iter()
            .filter(|suite| suite.version() == &rustls::version::TLS12)
            .map(|suite| suite.suite().as_str().unwrap())
            .collect();
        assert_eq!(suites, ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]);
        assert_eq!(config.alpn_protocols, [b"h2".to_vec()]);
        assert!(!config.enable_sni);
        // One configuration per distinct settings, reused.
        let configs = TlsClientConfigs::default();
        let first = configs.get(Some(&tls), true).unwrap();
        assert!(Arc::ptr_eq(&first, &configs.get(Some(&tls), true).unwrap()));
        assert!(!Arc::ptr_eq(
            &first,
            &configs.get(Some(&tls), false).unwrap()
        ));
        let broken = UpstreamTls {
            client_cert: Some(ClientCert {
                cert_pem: Arc::from(&b"nothing"[..]),
                key_pem: Arc::from(&b"nothing"[..]),
            }),
            ..UpstreamTls::default()
        };
        assert!(matches!(
            build(&broken, false),
            Err(UpstreamTlsError::BadClientCert(_))
        ));
    }

    #[tokio::test]
    async fn the_client_certificate_is_presented() {
        let root = CertifiedIssuer::self_signed(ca_params(), KeyPair::generate().unwrap()).unwrap();
        let (server_cert, server_key) = leaf("backend.test", &root);
        let client_key = KeyPair::generate().unwrap();
        let client_cert = CertificateParams::new(vec!["edge.test".to_owned()])
            .unwrap()
            .signed_by(&client_key, &root)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(root.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(
                vec![server_cert],
                PrivateKeyDer::from_pem_slice(server_key.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..2 {
                let (stream, _) = listener.accept().await.unwrap();
                results.push(acceptor.accept(stream).await.is_ok());
            }
            results
        });
        let with_cert = UpstreamTls {
            verify: Some(Arc::from(root.pem().as_bytes())),
            client_cert: Some(ClientCert {
                cert_pem: Arc::from(client_cert.pem().as_bytes()),
                key_pem: Arc::from(client_key.serialize_pem().as_bytes()),
            }),
            ..UpstreamTls::default()
        };
        let without = UpstreamTls {
            client_cert: None,
            ..with_cert.clone()
        };
        for tls in [&with_cert, &without] {
            let name = server_name(Some(tls), "backend.test:443", addr);
            let stream = TcpStream::connect(addr).await.unwrap();
            // TLS 1.3: the server's refusal may come after the client's
            // handshake; the server's side tells.
            let _ = connect(build(tls, false).unwrap(), name, stream).await;
        }
        let results = tokio::time::timeout(std::time::Duration::from_secs(5), accepted)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(results, [true, false]);
    }
}
