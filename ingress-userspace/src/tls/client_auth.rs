//! Client certificates (`auth-tls-*`), per host as ingress-nginx applies
//! them: the handshake of a host whose Ingress names `auth-tls-secret`
//! asks for a certificate (hinting the CAs' names) but completes without
//! one or with one no CA signed, as nginx's `ssl_verify_client` does; the
//! proxy then checks the chain per request ([`HostClientAuth::check`]) and
//! answers 400, 403 or a redirect as nginx would.

use std::{collections::HashMap, fmt, sync::Arc};

use arc_swap::ArcSwap;
use ingress_model::{
    HostPattern, RouteTable,
    auth::{ClientCertAuth, VerifyClient},
    host::request_host,
};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use tracing::warn;

/// A host's client certificate authentication, ready for handshakes and
/// requests.
pub struct HostClientAuth {
    /// What the annotations ask.
    pub auth: ClientCertAuth,
    /// The CAs' names, hinted in the handshake.
    hints: Vec<DistinguishedName>,
    /// Checks a chain against the CAs; `None`: `ca.crt` holds no usable CA
    /// (every certificate then fails).
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl fmt::Debug for HostClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostClientAuth")
            .field("secret", &self.auth.secret)
            .field("verify", &self.auth.verify)
            .finish_non_exhaustive()
    }
}

/// What a client certificate check found, as nginx's `$ssl_client_verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertVerdict {
    /// No certificate was sent.
    None,
    /// The chain leads to one of the CAs.
    Success,
    /// It does not; why.
    Failed(String),
}

impl CertVerdict {
    /// The `ssl-client-verify` value.
    pub fn header_value(&self) -> String {
        match self {
            Self::None => "NONE".to_owned(),
            Self::Success => "SUCCESS".to_owned(),
            Self::Failed(why) => format!("FAILED:{why}"),
        }
    }
}

impl HostClientAuth {
    fn new(auth: ClientCertAuth, provider: &Arc<CryptoProvider>) -> Self {
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(
            auth.ca_certificates
                .iter()
                .map(|der| CertificateDer::from(der.clone())),
        );
        let verifier = if added == 0 {
            warn!(secret = %auth.secret, "ca.crt holds no usable CA: every client certificate fails");
            None
        } else {
            let hints = roots.subjects();
            let crls = auth
                .revocation_lists
                .iter()
                .map(|der| CertificateRevocationListDer::from(der.clone()));
            match WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .with_crls(crls)
                .build()
            {
                Ok(verifier) => {
                    return Self {
                        auth,
                        hints,
                        verifier: Some(verifier),
                    };
                }
                Err(error) => {
                    warn!(secret = %auth.secret, %error, "ca.crt cannot verify clients");
                    None
                }
            }
        };
        Self {
            auth,
            hints: Vec::new(),
            verifier,
        }
    }

    /// Checks the chain a client sent (leaf first); at most
    /// `auth-tls-verify-depth - 1` intermediates of the client count.
    pub fn check(&self, chain: Option<&[CertificateDer<'static>]>) -> CertVerdict {
        let Some((leaf, intermediates)) = chain.and_then(|chain| chain.split_first()) else {
            return CertVerdict::None;
        };
        let Some(verifier) = &self.verifier else {
            return CertVerdict::Failed("no usable CA".to_owned());
        };
        let allowed = (self.auth.depth as usize)
            .saturating_sub(1)
            .min(intermediates.len());
        match verifier.verify_client_cert(leaf, &intermediates[..allowed], UnixTime::now()) {
            Ok(_) => CertVerdict::Success,
            Err(error) => CertVerdict::Failed(error.to_string()),
        }
    }
}

/// Asks for a client certificate without requiring or judging it: the
/// proxy judges per request. The handshake signature is still checked
/// (the client holds the certificate's key).
#[derive(Debug)]
pub struct RequestClientCert {
    hints: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
}

impl RequestClientCert {
    /// For a host; `optional_no_ca` hints no CA.
    pub fn for_host(host: &HostClientAuth, provider: Arc<CryptoProvider>) -> Self {
        let hints = match host.auth.verify {
            VerifyClient::OptionalNoCa => Vec::new(),
            _ => host.hints.clone(),
        };
        Self { hints, provider }
    }
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Judged per request (HostClientAuth::check), as nginx answers 400
        // rather than fail the handshake.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Default)]
struct HostIndex {
    exact: HashMap<String, Arc<HostClientAuth>>,
    wildcard: HashMap<String, Arc<HostClientAuth>>,
}

/// The hosts with client certificate authentication, by host name as the
/// certificates are (exact, then one `*.` label); swapped whole when the
/// configuration changes.
pub struct ClientAuthHosts {
    index: ArcSwap<HostIndex>,
    provider: Arc<CryptoProvider>,
}

impl Default for ClientAuthHosts {
    fn default() -> Self {
        Self {
            index: ArcSwap::from_pointee(HostIndex::default()),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        }
    }
}

impl fmt::Debug for ClientAuthHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let index = self.index.load();
        f.debug_struct("ClientAuthHosts")
            .field("exact", &index.exact.len())
            .field("wildcard", &index.wildcard.len())
            .finish()
    }
}

impl ClientAuthHosts {
    /// Reads the hosts of `table` whose routes ask for client certificates
    /// (the first route found of a host counts: ingress-nginx applies it
    /// per host).
    pub fn update(&self, table: &RouteTable) {
        let mut index = HostIndex::default();
        let mut compiled: Vec<Arc<HostClientAuth>> = Vec::new();
        for route in table.routes() {
            let (Some(host), Some(auth)) = (
                route.host(),
                route.policy().and_then(|p| p.client_cert.as_ref()),
            ) else {
                continue;
            };
            let slot = match host {
                HostPattern::Exact(name) => index.exact.entry(name.clone()),
                HostPattern::Wildcard(suffix) => index.wildcard.entry(suffix.clone()),
                HostPattern::Any => continue,
            };
            slot.or_insert_with(|| {
                // Routes of one Ingress share one compiled check.
                if let Some(done) = compiled.iter().find(|c| c.auth == *auth) {
                    return done.clone();
                }
                let host = Arc::new(HostClientAuth::new(auth.clone(), &self.provider));
                compiled.push(host.clone());
                host
            });
        }
        self.index.store(Arc::new(index));
    }

    /// The client certificate authentication of a server name (SNI or
    /// `Host`), if any.
    pub fn for_name(&self, name: Option<&str>) -> Option<Arc<HostClientAuth>> {
        let name = request_host(name?).to_ascii_lowercase();
        let index = self.index.load();
        index.exact.get(name.as_str()).cloned().or_else(|| {
            let suffix = name.split_once('.').map(|(_, rest)| rest)?;
            index.wildcard.get(suffix).cloned()
        })
    }

    /// The crypto provider of the verifiers.
    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }
}
