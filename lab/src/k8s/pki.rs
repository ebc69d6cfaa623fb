//! The cluster's keys and certificates, made with the openssl CLI: a CA, the
//! API server's serving certificate, the admin's client certificate (group
//! `system:masters`) and the service-account signing key pair. All P-256:
//! quick to generate, and accepted by every component.

use std::{path::Path, process::Command};

use anyhow::{Context, Result};

use crate::process::run_ok;

/// The files of a cluster's PKI, in its directory.
#[derive(Clone, Debug)]
pub(crate) struct Pki {
    /// The CA certificate (clients' trust anchor, and `--client-ca-file`).
    pub ca_cert: std::path::PathBuf,
    /// The API server's serving certificate and key.
    pub serving_cert: std::path::PathBuf,
    pub serving_key: std::path::PathBuf,
    /// The admin's client certificate and key.
    pub admin_cert: std::path::PathBuf,
    pub admin_key: std::path::PathBuf,
    /// The service-account token signing key, and its public half.
    pub service_account_key: std::path::PathBuf,
    pub service_account_pub: std::path::PathBuf,
}

/// How long the certificates are valid: longer than any test or `k8s up`.
const VALID_DAYS: &str = "3650";

fn openssl(dir: &Path, args: &[&str]) -> Result<String> {
    run_ok(Command::new("openssl").current_dir(dir).args(args))
        .context("the openssl CLI is needed for the cluster's certificates")
}

/// A new P-256 key in `file`.
fn new_key(dir: &Path, file: &str) -> Result<()> {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            file,
        ],
    )?;
    Ok(())
}

/// A certificate for `key` signed by the CA, with the given subject and
/// extensions.
fn signed_cert(dir: &Path, name: &str, subject: &str, extensions: &[&str]) -> Result<()> {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let cert = format!("{name}.crt");
    new_key(dir, &key)?;
    openssl(
        dir,
        &["req", "-new", "-key", &key, "-subj", subject, "-out", &csr],
    )?;
    let ext_file = format!("{name}.ext");
    std::fs::write(dir.join(&ext_file), extensions.join("\n") + "\n")
        .with_context(|| format!("writing {ext_file}"))?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            VALID_DAYS,
            "-sha256",
            "-extfile",
            &ext_file,
            "-out",
            &cert,
        ],
    )?;
    let _ = std::fs::remove_file(dir.join(&csr));
    let _ = std::fs::remove_file(dir.join(&ext_file));
    Ok(())
}

impl Pki {
    /// Generates everything into `dir`; `service_ip` is the first address of
    /// the service range (the `kubernetes` Service), which the serving
    /// certificate names with loopback.
    pub(crate) fn generate(dir: &Path, service_ip: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        new_key(dir, "ca.key")?;
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=xdp-ingress-lab-ca",
                "-days",
                VALID_DAYS,
                "-sha256",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                "-out",
                "ca.crt",
            ],
        )?;
        let san = format!(
            "subjectAltName=IP:127.0.0.1,IP:{service_ip},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
        );
        signed_cert(
            dir,
            "apiserver",
            "/CN=kube-apiserver",
            &[
                "basicConstraints=CA:FALSE",
                "keyUsage=critical,digitalSignature,keyEncipherment",
                "extendedKeyUsage=serverAuth",
                &san,
            ],
        )?;
        signed_cert(
            dir,
            "admin",
            "/O=system:masters/CN=xdp-ingress-lab-admin",
            &[
                "basicConstraints=CA:FALSE",
                "keyUsage=critical,digitalSignature,keyEncipherment",
                "extendedKeyUsage=clientAuth",
            ],
        )?;
        new_key(dir, "service-account.key")?;
        openssl(
            dir,
            &[
                "pkey",
                "-in",
                "service-account.key",
                "-pubout",
                "-out",
                "service-account.pub",
            ],
        )?;
        Ok(Self {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            service_account_key: dir.join("service-account.key"),
            service_account_pub: dir.join("service-account.pub"),
        })
    }
}
