//! The certificate store: which certificate a TLS handshake gets, chosen by
//! SNI (exact host, then `*.` wildcard, then the default certificate), and
//! swapped atomically when Secrets or Ingresses change: new handshakes get
//! the new certificate, open connections keep theirs.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use ingress_model::{
    ClusterObjects, HostPattern, ObjectKey, ObjectKind, ObjectRef, Problem, ProblemReason, TlsPlan,
    host::request_host,
};
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use super::{
    certs::{CertError, LoadedCert, load_secret},
    client_auth::ClientAuthHosts,
};

/// Certificates by host, as one immutable index.
#[derive(Default)]
struct CertIndex {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

/// A Secret's last good certificate, and the Secret's contents it came from.
struct CachedCert {
    fingerprint: u64,
    loaded: Result<LoadedCert, CertError>,
    last_good: Option<LoadedCert>,
}

/// Picks certificates for handshakes; updated from the object snapshots.
pub struct CertStore {
    index: ArcSwap<CertIndex>,
    cache: Mutex<BTreeMap<ObjectKey, CachedCert>>,
    generated_default: Arc<CertifiedKey>,
    default_secret: Option<ObjectKey>,
    /// The hosts asking for client certificates (`auth-tls-*`).
    pub client_auth: ClientAuthHosts,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let index = self.index.load();
        f.debug_struct("CertStore")
            .field("exact_hosts", &index.exact.len())
            .field("wildcard_hosts", &index.wildcard.len())
            .finish()
    }
}

/// What an update found.
#[derive(Debug, Default)]
pub struct CertUpdate {
    /// Certificates that could not be used, against the Ingress that names them.
    pub problems: Vec<Problem>,
    /// Hosts served with a certificate from a Secret.
    pub hosts_with_certificates: usize,
}

impl CertStore {
    /// A store that answers every handshake with `generated_default` until
    /// the first update; `default_secret` (`--default-ssl-certificate`)
    /// replaces it once that Secret holds a good certificate.
    pub fn new(generated_default: Arc<CertifiedKey>, default_secret: Option<ObjectKey>) -> Self {
        Self {
            index: ArcSwap::from_pointee(CertIndex::default()),
            cache: Mutex::new(BTreeMap::new()),
            generated_default,
            default_secret,
            client_auth: ClientAuthHosts::default(),
        }
    }

    /// Rebuilds the index from the TLS plan and the Secrets in `objects`,
    /// checked at `now` (Unix seconds). A Secret that turns bad keeps
    /// serving its last good certificate; one never good gets the default.
    pub fn update(&self, plan: &TlsPlan, objects: &ClusterObjects, now: i64) -> CertUpdate {
        let mut update = CertUpdate::default();
        let mut cache = self.cache.lock().expect("certificate cache lock");
        let mut wanted: Vec<ObjectKey> = plan.secret_per_host().into_values().flatten().collect();
        wanted.extend(self.default_secret.iter().cloned());
        wanted.sort();
        wanted.dedup();
        cache.retain(|key, _| wanted.contains(key));
        for key in &wanted {
            let Some(secret) = objects.secrets.get(key) else {
                // Deleted: its hosts get the default (the model reports it).
                cache.remove(key);
                continue;
            };
            let fingerprint = fingerprint(secret);
            let entry = cache.entry(key.clone()).or_insert_with(|| CachedCert {
                fingerprint: fingerprint.wrapping_add(1),
                loaded: Err(CertError::NoCertificate),
                last_good: None,
            });
            if entry.fingerprint != fingerprint
                || entry.loaded.as_ref().is_ok_and(|c| c.not_after < now)
            {
                entry.fingerprint = fingerprint;
                entry.loaded = load_secret(secret, now);
                if let Ok(loaded) = &entry.loaded {
                    entry.last_good = Some(loaded.clone());
                }
            }
        }
        let usable = |key: &ObjectKey| -> Option<Arc<CertifiedKey>> {
            let entry = cache.get(key)?;
            match &entry.loaded {
                Ok(loaded) => Some(loaded.key.clone()),
                Err(_) => entry.last_good.as_ref().map(|good| good.key.clone()),
            }
        };

        let mut index = CertIndex {
            default: self.default_secret.as_ref().and_then(usable),
            ..CertIndex::default()
        };
        for (host, secret) in plan.secret_per_host() {
            let Some(key) = secret.as_ref().and_then(usable) else {
                continue;
            };
            update.hosts_with_certificates += 1;
            match host {
                HostPattern::Exact(name) => {
                    index.exact.insert(name, key);
                }
                HostPattern::Wildcard(suffix) => {
                    index.wildcard.insert(suffix, key);
                }
                HostPattern::Any => {}
            }
        }
        for binding in &plan.bindings {
            let Some(secret) = &binding.secret else {
                continue;
            };
            if let Some(CachedCert {
                loaded: Err(error),
                last_good,
                ..
            }) = cache.get(secret)
            {
                let fallback = if last_good.is_some() {
                    "its hosts keep the last good certificate"
                } else {
                    "its hosts get the default certificate"
                };
                update.problems.push(Problem::new(
                    ObjectRef::new(ObjectKind::Ingress, binding.ingress.clone()),
                    ProblemReason::InvalidCertificate,
                    format!("TLS Secret {secret}: {error}; {fallback}"),
                ));
            }
        }
        if let Some(secret) = &self.default_secret {
            let problem = match cache.get(secret) {
                None => Some("not found".to_owned()),
                Some(CachedCert {
                    loaded: Err(error), ..
                }) => Some(error.to_string()),
                Some(_) => None,
            };
            if let Some(problem) = problem {
                update.problems.push(Problem::new(
                    ObjectRef::new(ObjectKind::Secret, secret.clone()),
                    ProblemReason::InvalidCertificate,
                    format!("--default-ssl-certificate {secret}: {problem}; using the generated self-signed certificate"),
                ));
            }
        }
        update.problems.sort();
        update.problems.dedup();
        self.index.store(Arc::new(index));
        update
    }

    /// The certificate for a server name (SNI); `None` for no SNI.
    pub fn certificate_for(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let index = self.index.load();
        let by_name = server_name.and_then(|name| {
            let name = request_host(name);
            index.exact.get(name.as_ref()).cloned().or_else(|| {
                let suffix = name.split_once('.').map(|(_, rest)| rest)?;
                index.wildcard.get(suffix).cloned()
            })
        });
        by_name
            .or_else(|| index.default.clone())
            .unwrap_or_else(|| self.generated_default.clone())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certificate_for(client_hello.server_name()))
    }
}

/// A hash of the Secret's certificate and key, to parse only what changed.
fn fingerprint(secret: &k8s_openapi::api::core::v1::Secret) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for name in ["tls.crt", "tls.key"] {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(name))
            .map(|v| &v.0[..])
            .hash(&mut hasher);
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(name))
            .hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use ingress_model::{
        KubeObject, ModelOptions, RouteTable,
        fixtures::{ingress, tls_secret_pem, world},
    };
    use k8s_openapi::api::core::v1::Secret;

    use super::*;
    use crate::tls::certs::{self_signed_default, test_certs::p256, unix_now};

    fn tls_secret(name: &str, cert: &str, key: &str) -> Secret {
        tls_secret_pem("default", name, cert, key)
    }

    /// Ingress `default/web` with TLS for `web.example.com` (Secret
    /// `web-tls`) and `*.apps.example.com` (`apps-tls`), and `secrets`.
    fn snapshot(secrets: Vec<Secret>) -> (ClusterObjects, TlsPlan) {
        let web = ingress("default", "web")
            .ours()
            .tls(&["web.example.com"], Some("web-tls"))
            .tls(&["*.apps.example.com"], Some("apps-tls"))
            .host_only("web.example.com");
        let objects = world(
            [web.object()]
                .into_iter()
                .chain(secrets.into_iter().map(KubeObject::Secret)),
        );
        let (table, _) = RouteTable::build(&objects, &ModelOptions::default());
        (objects, table.tls().clone())
    }

    fn same(a: &Arc<CertifiedKey>, b: &Arc<CertifiedKey>) -> bool {
        a.cert == b.cert
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let (web_cert, web_key) = p256(&["web.example.com"]);
        let (apps_cert, apps_key) = p256(&["*.apps.example.com"]);
        let (objects, plan) = snapshot(vec![
            tls_secret("web-tls", &web_cert, &web_key),
            tls_secret("apps-tls", &apps_cert, &apps_key),
        ]);
        let default = self_signed_default().unwrap().key;
        let store = CertStore::new(default.clone(), None);
        let update = store.update(&plan, &objects, unix_now());
        assert!(update.problems.is_empty(), "{:?}", update.problems);
        assert_eq!(update.hosts_with_certificates, 2);
        let web = store.certificate_for(Some("WEB.example.com"));
        let apps = store.certificate_for(Some("a.apps.example.com"));
        assert!(!same(&web, &apps));
        assert!(same(
            &store.certificate_for(Some("b.apps.example.com")),
            &apps
        ));
        // One label only, as for routing.
        assert!(same(
            &store.certificate_for(Some("x.y.apps.example.com")),
            &default
        ));
        assert!(same(&store.certificate_for(None), &default));
        assert!(same(
            &store.certificate_for(Some("other.example.com")),
            &default
        ));
    }

    #[test]
    fn a_secret_turning_bad_keeps_its_last_good_certificate() {
        let (cert, key) = p256(&["web.example.com"]);
        let (objects, plan) = snapshot(vec![tls_secret("web-tls", &cert, &key)]);
        let store = CertStore::new(self_signed_default().unwrap().key, None);
        store.update(&plan, &objects, unix_now());
        let good = store.certificate_for(Some("web.example.com"));

        let (_, foreign_key) = p256(&["web.example.com"]);
        let (objects, plan) = snapshot(vec![tls_secret("web-tls", &cert, &foreign_key)]);
        let update = store.update(&plan, &objects, unix_now());
        assert_eq!(update.problems.len(), 1, "{:?}", update.problems);
        assert_eq!(update.problems[0].reason, ProblemReason::InvalidCertificate);
        assert!(
            update.problems[0].message.contains("last good"),
            "{}",
            update.problems[0].message
        );
        assert!(same(&store.certificate_for(Some("web.example.com")), &good));

        // A new good certificate replaces it (rotation).
        let (new_cert, new_key) = p256(&["web.example.com"]);
        let (objects, plan) = snapshot(vec![tls_secret("web-tls", &new_cert, &new_key)]);
        assert!(
            store
                .update(&plan, &objects, unix_now())
                .problems
                .is_empty()
        );
        assert!(!same(
            &store.certificate_for(Some("web.example.com")),
            &good
        ));
    }

    #[test]
    fn a_never_good_secret_gets_the_default_and_a_problem() {
        let (cert, _) = p256(&["web.example.com"]);
        let (objects, plan) = snapshot(vec![tls_secret("web-tls", &cert, "garbage")]);
        let default = self_signed_default().unwrap().key;
        let store = CertStore::new(default.clone(), None);
        let update = store.update(&plan, &objects, unix_now());
        assert_eq!(update.problems.len(), 1);
        assert!(update.problems[0].message.contains("default certificate"));
        assert!(!update.problems[0].message.contains("garbage"));
        assert!(same(
            &store.certificate_for(Some("web.example.com")),
            &default
        ));
    }

    #[test]
    fn the_configured_default_certificate_replaces_the_generated_one() {
        let (cert, key) = p256(&["fallback.example.com"]);
        let (objects, plan) = snapshot(vec![tls_secret("fallback", &cert, &key)]);
        let generated = self_signed_default().unwrap().key;
        let store = CertStore::new(
            generated.clone(),
            Some(ObjectKey::new("default", "fallback")),
        );
        assert!(
            store
                .update(&plan, &objects, unix_now())
                .problems
                .is_empty()
        );
        assert!(!same(&store.certificate_for(None), &generated));
        let (objects, plan) = snapshot(vec![]);
        let update = store.update(&plan, &objects, unix_now());
        assert!(
            update
                .problems
                .iter()
                .any(|p| p.message.contains("--default-ssl-certificate"))
        );
        assert!(same(&store.certificate_for(None), &generated));
    }
}
