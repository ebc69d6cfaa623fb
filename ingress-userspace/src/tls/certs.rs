//! Certificates from `kubernetes.io/tls` Secrets: parse the PEM chain and
//! key (RSA, ECDSA P-256/P-384, Ed25519; PKCS#1, PKCS#8, SEC1), check that
//! the key matches the certificate and that the certificate is valid now.
//! Key material never reaches an error message or a log.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use k8s_openapi::api::core::v1::Secret;
use rustls::{
    crypto::aws_lc_rs::sign::any_supported_type,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    sign::CertifiedKey,
};

/// Why a Secret's certificate cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The Secret is not of type `kubernetes.io/tls`.
    #[error("the Secret has type {0:?}, not kubernetes.io/tls")]
    NotATlsSecret(String),
    /// `tls.crt` or `tls.key` is missing.
    #[error("the Secret has no {0}")]
    MissingField(&'static str),
    /// `tls.crt` holds no PEM certificate.
    #[error("tls.crt holds no PEM certificate")]
    NoCertificate,
    /// `tls.crt` is not valid PEM or DER.
    #[error("tls.crt cannot be parsed: {0}")]
    BadCertificate(String),
    /// `tls.key` holds no private key we can read.
    #[error("tls.key holds no PEM private key (PKCS#1, PKCS#8 or SEC1)")]
    NoKey,
    /// The key's algorithm is not supported.
    #[error("tls.key uses an unsupported key type")]
    UnsupportedKey,
    /// The key does not belong to the certificate.
    #[error("tls.key does not match the certificate in tls.crt")]
    KeyMismatch,
    /// The certificate expired.
    #[error("the certificate expired at {0} (Unix time)")]
    Expired(i64),
    /// The certificate is not valid yet.
    #[error("the certificate is not valid before {0} (Unix time)")]
    NotYetValid(i64),
}

/// A certificate ready to serve, with what is worth logging about it.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// The chain and signing key for rustls.
    pub key: Arc<CertifiedKey>,
    /// The leaf's notAfter, Unix seconds.
    pub not_after: i64,
}

fn field<'a>(secret: &'a Secret, name: &'static str) -> Result<&'a [u8], CertError> {
    if let Some(value) = secret.data.as_ref().and_then(|data| data.get(name)) {
        return Ok(&value.0);
    }
    secret
        .string_data
        .as_ref()
        .and_then(|data| data.get(name))
        .map(|value| value.as_bytes())
        .ok_or(CertError::MissingField(name))
}

/// Loads the certificate of a TLS Secret, checked at `now` (Unix seconds).
pub fn load_secret(secret: &Secret, now: i64) -> Result<LoadedCert, CertError> {
    if let Some(type_) = &secret.type_
        && type_ != ingress_model::TLS_SECRET_TYPE
    {
        return Err(CertError::NotATlsSecret(type_.clone()));
    }
    load_pem(field(secret, "tls.crt")?, field(secret, "tls.key")?, now)
}

/// Loads a PEM chain and key, checked at `now` (Unix seconds).
pub fn load_pem(cert_pem: &[u8], key_pem: &[u8], now: i64) -> Result<LoadedCert, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|error| CertError::BadCertificate(error.to_string()))?;
    let leaf = chain.first().ok_or(CertError::NoCertificate)?;
    let (not_before, not_after) = validity(leaf)?;
    if now < not_before {
        return Err(CertError::NotYetValid(not_before));
    }
    if now > not_after {
        return Err(CertError::Expired(not_after));
    }
    // Parse errors of the key are not passed on: they could quote key bytes.
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| CertError::NoKey)?;
    let signing_key = any_supported_type(&key_der).map_err(|_| CertError::UnsupportedKey)?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| CertError::KeyMismatch)?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        not_after,
    })
}

fn validity(leaf: &CertificateDer<'_>) -> Result<(i64, i64), CertError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|error| CertError::BadCertificate(error.to_string()))?;
    let validity = parsed.validity();
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A self-signed certificate for when no default certificate is configured,
/// as ingress-nginx's "Fake Certificate".
pub fn self_signed_default() -> Result<LoadedCert, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(vec!["ingress.local".to_owned()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "xdp-ingress default certificate");
    let key_pair = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key_pair)?;
    let key_der = PrivateKeyDer::try_from(key_pair.serialize_der())
        .map_err(|_| rcgen::Error::CouldNotParseKeyPair)?;
    let signing_key =
        any_supported_type(&key_der).map_err(|_| rcgen::Error::CouldNotParseKeyPair)?;
    let (_, not_after) =
        validity(cert.der()).map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
    Ok(LoadedCert {
        key: Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing_key)),
        not_after,
    })
}

#[cfg(test)]
pub(crate) mod test_certs {
    //! Certificates generated for the tests (rcgen), of every key type.

    use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};

    /// A certificate and key in PEM for `names`, with the given key algorithm
    /// and validity (Unix seconds).
    pub fn pem_for(
        names: &[&str],
        algorithm: &'static rcgen::SignatureAlgorithm,
        not_before: i64,
        not_after: i64,
    ) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = time_of(not_before);
        params.not_after = time_of(not_after);
        let key = KeyPair::generate_for(algorithm).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn time_of(unix: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    /// A valid P-256 certificate for `names`, good from an hour ago for a year.
    pub fn p256(names: &[&str]) -> (String, String) {
        let now = super::unix_now();
        pem_for(
            names,
            &PKCS_ECDSA_P256_SHA256,
            now - 3600,
            now + 365 * 86400,
        )
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519};

    use super::{test_certs::*, *};

    #[test]
    fn every_key_type_loads() {
        let now = unix_now();
        for algorithm in [
            &PKCS_ECDSA_P256_SHA256,
            &PKCS_ECDSA_P384_SHA384,
            &PKCS_ED25519,
        ] {
            let (cert, key) = pem_for(&["a.example.com"], algorithm, now - 10, now + 1000);
            let loaded = load_pem(cert.as_bytes(), key.as_bytes(), now).unwrap();
            assert_eq!(loaded.not_after, now + 1000);
        }
    }

    #[test]
    fn a_foreign_key_is_refused() {
        let (cert, _) = p256(&["a.example.com"]);
        let (_, other_key) = p256(&["a.example.com"]);
        assert_eq!(
            load_pem(cert.as_bytes(), other_key.as_bytes(), unix_now()).unwrap_err(),
            CertError::KeyMismatch
        );
    }

    #[test]
    fn expired_and_future_certificates_are_refused() {
        let now = unix_now();
        let (cert, key) = pem_for(&["a"], &PKCS_ECDSA_P256_SHA256, now - 1000, now - 10);
        assert!(matches!(
            load_pem(cert.as_bytes(), key.as_bytes(), now),
            Err(CertError::Expired(_))
        ));
        let (cert, key) = pem_for(&["a"], &PKCS_ECDSA_P256_SHA256, now + 1000, now + 2000);
        assert!(matches!(
            load_pem(cert.as_bytes(), key.as_bytes(), now),
            Err(CertError::NotYetValid(_))
        ));
    }

    #[test]
    fn garbage_is_refused_without_quoting_the_key() {
        let (cert, _) = p256(&["a"]);
        assert_eq!(
            load_pem(b"not pem", b"nope", unix_now()).unwrap_err(),
            CertError::NoCertificate
        );
        let error = load_pem(
            cert.as_bytes(),
            b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
            unix_now(),
        )
        .unwrap_err();
        assert!(!error.to_string().contains("c2VjcmV0"));
    }

    #[test]
    fn the_default_certificate_is_generated() {
        let loaded = self_signed_default().unwrap();
        assert!(loaded.not_after > unix_now());
        assert!(loaded.key.keys_match().is_ok());
    }
}
