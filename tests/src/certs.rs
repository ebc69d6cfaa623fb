//! Certificates for the end-to-end tests: a test CA (rcgen) writing its
//! certificate to a scratch directory, and leaves it signs (openssl for the
//! legacy key formats), with what a Secret's YAML needs (base64).

use std::{path::PathBuf, time::Duration};

use anyhow::{Result, bail, ensure};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use xdp_ingress_lab::{self as lab, ScratchDir};

/// The test CA and the files it writes.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate (PEM).
    pub cert_pem: String,
    /// Where its files are (`ca.pem`, `ca.key`, and what tests add).
    pub dir: ScratchDir,
}

/// A leaf certificate and key in PEM.
pub struct Leaf {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its key (PEM).
    pub key_pem: String,
}

impl TestCa {
    /// A new CA (ECDSA P-256), its files in a new scratch directory.
    pub fn new() -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "xdp-ingress test CA");
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let dir = ScratchDir::new("tls-ca")?;
        dir.write("ca.pem", cert.pem())?;
        dir.write("ca.key", key.serialize_pem())?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            dir,
        })
    }

    /// The file of its certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A P-256 leaf for `names` (the first is also the CN), valid from
    /// `not_before` to `not_after` (days from now).
    pub fn leaf_valid(&self, names: &[&str], not_before: i64, not_after: i64) -> Result<Leaf> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(not_before);
        params.not_after = now + time::Duration::days(not_after);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A leaf for `names`, valid from yesterday for 30 days.
    pub fn leaf(&self, names: &[&str]) -> Result<Leaf> {
        self.leaf_valid(names, -1, 30)
    }

    /// A leaf whose key openssl writes in a legacy format: `rsa` gives an
    /// RSA key in PKCS#1 (`BEGIN RSA PRIVATE KEY`), `ec` a P-384 key in SEC1
    /// (`BEGIN EC PRIVATE KEY`); the certificate is signed by this CA.
    pub fn leaf_with_openssl_key(&self, name: &str, kind: &str) -> Result<Leaf> {
        let key = self.dir.join(format!("{name}.key"));
        let csr = self.dir.join(format!("{name}.csr"));
        let crt = self.dir.join(format!("{name}.crt"));
        let key_s = key.display().to_string();
        match kind {
            "rsa" => openssl(&["genrsa", "-traditional", "-out", &key_s, "2048"])?,
            "ec" => openssl(&[
                "ecparam",
                "-name",
                "secp384r1",
                "-genkey",
                "-noout",
                "-out",
                &key_s,
            ])?,
            other => bail!("unknown key kind {other}"),
        }
        openssl(&[
            "req",
            "-new",
            "-key",
            &key_s,
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
            "-out",
            &csr.display().to_string(),
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr.display().to_string(),
            "-CA",
            &self.ca_file().display().to_string(),
            "-CAkey",
            &self.dir.join("ca.key").display().to_string(),
            "-CAcreateserial",
            "-days",
            "2",
            "-copy_extensions",
            "copy",
            "-out",
            &crt.display().to_string(),
        ])?;
        Ok(Leaf {
            cert_pem: std::fs::read_to_string(&crt)?,
            key_pem: std::fs::read_to_string(&key)?,
        })
    }
}

/// Runs `openssl ARGS` (bounded), failing with its stderr.
pub fn openssl(args: &[&str]) -> Result<()> {
    let out = lab::run_with_timeout(
        std::process::Command::new("openssl").args(args),
        Duration::from_secs(30),
    )?;
    ensure!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Standard base64 with padding (a Secret's `data`).
pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
