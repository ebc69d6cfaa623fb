//! The authentication annotations: `auth-type: basic` with `auth-secret`
//! (`auth-secret-type`, `auth-realm`), and external authentication
//! (`auth-url` and its companions), read as ingress-nginx reads them into
//! [`BasicAuth`] and [`ExternalAuth`].
//!
//! What cannot be applied exactly as written (a missing or unreadable
//! Secret, no usable htpasswd line, a Secret of another namespace, an
//! unparseable URL, a variable we do not fill in, `auth-type: digest`)
//! makes the Ingress fail closed: its paths answer 503, never serve
//! unprotected.

use std::{borrow::Cow, collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::Secret;

use super::{Report, lookup, parse_bool};
use crate::{
    auth::{
        AuthCache, AuthUrl, BasicAuth, ClientCertAuth, DEFAULT_CACHE_DURATION, ExternalAuth,
        Htpasswd, SubjectPattern, UrlTemplate, VerifyClient, parse_cache_durations,
        parse_error_page, parse_header_names, parse_method, parse_realm, parse_redirect_param,
        parse_request_redirect, parse_signin, pem_blocks, pem_certificates,
    },
    object::{ObjectKey, ObjectRef},
    snapshot::ClusterObjects,
};

/// The authentication annotations (without prefix) that take effect.
pub const IMPLEMENTED: [&str; 20] = [
    "auth-type",
    "auth-secret",
    "auth-secret-type",
    "auth-realm",
    "auth-url",
    "auth-method",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-response-headers",
    "auth-request-redirect",
    "auth-always-set-cookie",
    "auth-cache-key",
    "auth-cache-duration",
    "auth-tls-secret",
    "auth-tls-verify-client",
    "auth-tls-verify-depth",
    "auth-tls-error-page",
    "auth-tls-pass-certificate-to-upstream",
    "auth-tls-match-cn",
    "satisfy",
];

/// Tuning of ingress-nginx's connections to the auth service: they change
/// no answer, so they are reported and ignored (we open one connection per
/// sub-request).
pub const CONNECTION_TUNING: [&str; 4] = [
    "auth-keepalive",
    "auth-keepalive-share-vars",
    "auth-keepalive-requests",
    "auth-keepalive-timeout",
];

/// What the authentication annotations ask for.
#[derive(Debug, Default)]
pub struct AuthAnnotations {
    /// `auth-type: basic`.
    pub basic: Option<BasicAuth>,
    /// `auth-url`.
    pub external: Option<ExternalAuth>,
    /// `auth-tls-secret`.
    pub client_cert: Option<ClientCertAuth>,
    /// `satisfy: any`.
    pub satisfy_any: bool,
}

/// Reads the authentication annotations of the Ingress `object`. Values
/// that cannot be applied are reported and added to `unreadable` (the
/// Ingress fails closed); the Secrets named go to `secrets`.
pub fn read(
    annotations: Option<&BTreeMap<String, String>>,
    object: &ObjectRef,
    objects: &ClusterObjects,
    report: &mut Report<'_>,
    unreadable: &mut Vec<String>,
    secrets: &mut Vec<ObjectKey>,
) -> AuthAnnotations {
    let fail = "the Ingress's paths answer 503 rather than serve unprotected";
    let mut refuse = |report: &mut Report<'_>, full: &str, why: String| {
        report(full, why, fail);
        unreadable.push(full.to_owned());
    };
    let mut read = AuthAnnotations::default();

    // Basic authentication.
    match lookup(annotations, "auth-type") {
        Some((_, kind)) if kind.trim() == "basic" => {
            match basic_auth(annotations, object, objects, report, secrets) {
                Ok(basic) => read.basic = Some(basic),
                Err((name, why)) => refuse(report, &name, why),
            }
        }
        Some((full, kind)) if kind.trim() == "digest" => refuse(
            report,
            &full,
            "digest authentication is not supported by xdp-ingress".to_owned(),
        ),
        Some((full, kind)) => refuse(report, &full, format!("{kind:?} is not basic or digest")),
        None => {
            // ingress-nginx serves unprotected here; a Secret of users
            // without a type is taken as a wish to protect.
            if let Some((full, _)) = lookup(annotations, "auth-secret") {
                refuse(
                    report,
                    &full,
                    "there is no auth-type (ingress-nginx would serve unprotected)".to_owned(),
                );
            }
            for name in ["auth-secret-type", "auth-realm"] {
                if let Some((full, _)) = lookup(annotations, name) {
                    report(&full, "there is no auth-type".to_owned(), "ignored");
                }
            }
        }
    }

    // External authentication.
    if lookup(annotations, "auth-url").is_some() {
        match external_auth(annotations) {
            Ok(external) => read.external = Some(external),
            Err((name, why)) => refuse(report, &name, why),
        }
    } else {
        // The companions of auth-url: the list from auth-method on.
        for name in IMPLEMENTED[5..]
            .iter()
            .filter(|n| n.starts_with("auth-") && !n.starts_with("auth-tls-"))
        {
            if let Some((full, _)) = lookup(annotations, name) {
                report(&full, "there is no auth-url".to_owned(), "ignored");
            }
        }
    }
    // Client certificates.
    if lookup(annotations, "auth-tls-secret").is_some() {
        match client_cert(annotations, object, objects, secrets) {
            Ok(auth) => read.client_cert = Some(auth),
            Err((name, why)) => refuse(report, &name, why),
        }
    } else {
        for name in IMPLEMENTED.iter().filter(|n| n.starts_with("auth-tls-")) {
            if let Some((full, _)) = lookup(annotations, name) {
                report(&full, "there is no auth-tls-secret".to_owned(), "ignored");
            }
        }
    }
    // satisfy: nginx's directive, all (the default) or any.
    if let Some((full, value)) = lookup(annotations, "satisfy") {
        match value.trim() {
            "all" => {}
            "any" => read.satisfy_any = true,
            other => refuse(report, &full, format!("{other:?} is neither all nor any")),
        }
    }
    for name in CONNECTION_TUNING {
        if let Some((full, _)) = lookup(annotations, name) {
            report(
                &full,
                "connections to the auth service are not kept alive by xdp-ingress (one per \
                 sub-request)"
                    .to_owned(),
                "ignored",
            );
        }
    }
    read
}

/// The failing annotation's full name and why.
type Refused = (String, String);

fn basic_auth(
    annotations: Option<&BTreeMap<String, String>>,
    object: &ObjectRef,
    objects: &ClusterObjects,
    report: &mut Report<'_>,
    secrets: &mut Vec<ObjectKey>,
) -> Result<BasicAuth, Refused> {
    let realm = match lookup(annotations, "auth-realm") {
        Some((full, realm)) => parse_realm(realm).map_err(|why| (full, why))?,
        None => String::new(),
    };
    let by_map = match lookup(annotations, "auth-secret-type") {
        None => false,
        Some((full, kind)) => match kind.trim() {
            "auth-file" => false,
            "auth-map" => true,
            other => return Err((full, format!("{other:?} is not auth-file or auth-map"))),
        },
    };
    let Some((full, name)) = lookup(annotations, "auth-secret") else {
        let type_name = lookup(annotations, "auth-type")
            .map(|(f, _)| f)
            .unwrap_or_default();
        return Err((type_name, "there is no auth-secret".to_owned()));
    };
    let key = secret_key(name, object.namespace()).map_err(|why| (full.clone(), why))?;
    secrets.push(key.clone());
    let secret = objects
        .secrets
        .get(&key)
        .ok_or_else(|| (full.clone(), format!("Secret {key} not found")))?;
    let (credentials, problems) = if by_map {
        let entries = secret_fields(secret);
        let mut text = Vec::with_capacity(entries.len());
        for (user, value) in &entries {
            let value = std::str::from_utf8(value).map_err(|_| {
                (
                    full.clone(),
                    format!("Secret {key}: key {user:?} is not text"),
                )
            })?;
            text.push((user.as_str(), value));
        }
        Htpasswd::from_map(text)
    } else {
        let entries = secret_fields(secret);
        let value = entries
            .iter()
            .find(|(field, _)| field == "auth")
            .map(|(_, value)| value)
            .ok_or_else(|| (full.clone(), format!("Secret {key} has no key auth")))?;
        let text = std::str::from_utf8(value)
            .map_err(|_| (full.clone(), format!("Secret {key}: key auth is not text")))?;
        Htpasswd::parse(text)
    };
    for problem in problems {
        report(
            &full,
            format!("Secret {key}: {problem}"),
            "the others still work",
        );
    }
    if credentials.is_unusable() {
        return Err((full, format!("Secret {key} has no usable user:hash line")));
    }
    Ok(BasicAuth {
        realm,
        credentials: Arc::new(credentials),
    })
}

fn client_cert(
    annotations: Option<&BTreeMap<String, String>>,
    object: &ObjectRef,
    objects: &ClusterObjects,
    secrets: &mut Vec<ObjectKey>,
) -> Result<ClientCertAuth, Refused> {
    let (full, name) = lookup(annotations, "auth-tls-secret").expect("auth-tls-secret is there");
    let key = secret_key(name, object.namespace()).map_err(|why| (full.clone(), why))?;
    secrets.push(key.clone());
    let secret = objects
        .secrets
        .get(&key)
        .ok_or_else(|| (full.clone(), format!("Secret {key} not found")))?;
    let fields = secret_fields(secret);
    let ca = fields
        .iter()
        .find(|(field, _)| field == "ca.crt")
        .map(|(_, value)| value)
        .ok_or_else(|| (full.clone(), format!("Secret {key} has no key ca.crt")))?;
    let ca = std::str::from_utf8(ca)
        .map_err(|_| (full.clone(), format!("Secret {key}: ca.crt is not text")))
        .and_then(|text| {
            pem_certificates(text)
                .map_err(|why| (full.clone(), format!("Secret {key}: ca.crt: {why}")))
        })?;
    // ingress-nginx checks revocation when the Secret has `ca.crl`.
    let revocation_lists = match fields.iter().find(|(field, _)| field == "ca.crl") {
        None => Vec::new(),
        Some((_, value)) => {
            let text = std::str::from_utf8(value)
                .map_err(|_| (full.clone(), format!("Secret {key}: ca.crl is not text")))?;
            let lists = pem_blocks(text, "X509 CRL")
                .map_err(|why| (full.clone(), format!("Secret {key}: ca.crl: {why}")))?;
            if lists.is_empty() {
                return Err((full, format!("Secret {key}: ca.crl holds no PEM X509 CRL")));
            }
            lists
        }
    };
    let read = |name: &str| lookup(annotations, name);
    let verify = match read("auth-tls-verify-client") {
        None => VerifyClient::On,
        Some((full, value)) => VerifyClient::parse(value).map_err(|why| (full, why))?,
    };
    let depth = match read("auth-tls-verify-depth") {
        None => 1,
        Some((full, value)) => match value.trim().parse::<u32>() {
            // 0 is the default, as ingress-nginx reads it.
            Ok(0) => 1,
            Ok(depth) => depth,
            Err(_) => return Err((full, format!("{value:?} is not a whole number"))),
        },
    };
    let error_page = match read("auth-tls-error-page") {
        None => None,
        Some((full, value)) => Some(parse_error_page(value).map_err(|why| (full, why))?),
    };
    let pass_certificate = match read("auth-tls-pass-certificate-to-upstream") {
        None => false,
        Some((full, value)) => parse_bool(value).map_err(|why| (full, why))?,
    };
    let match_cn = match read("auth-tls-match-cn") {
        None => None,
        Some((full, value)) => Some(SubjectPattern::parse(value).map_err(|why| (full, why))?),
    };
    Ok(ClientCertAuth {
        secret: key,
        ca_certificates: Arc::new(ca),
        revocation_lists: Arc::new(revocation_lists),
        verify,
        depth,
        error_page,
        pass_certificate,
        match_cn,
    })
}

/// The Secret an annotation names: `name` in the Ingress's namespace, or
/// `namespace/name`, which must be the Ingress's own namespace.
fn secret_key(text: &str, namespace: &str) -> Result<ObjectKey, String> {
    let text = text.trim();
    let valid = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
    };
    let (secret_namespace, name) = match text.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (namespace, text),
    };
    if !valid(secret_namespace) || !valid(name) {
        return Err(format!("{text:?} is not a Secret name or namespace/name"));
    }
    if secret_namespace != namespace {
        return Err(format!(
            "Secret {text} is in another namespace than the Ingress ({namespace}); xdp-ingress \
             reads only the Ingress's own namespace"
        ));
    }
    Ok(ObjectKey::new(secret_namespace, name))
}

/// The Secret's keys and values: `data`, then `stringData` (as a manifest
/// may carry it).
fn secret_fields(secret: &Secret) -> Vec<(String, Cow<'_, [u8]>)> {
    let mut fields: Vec<(String, Cow<'_, [u8]>)> = secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| (key.clone(), Cow::Borrowed(value.0.as_slice())))
        .collect();
    for (key, value) in secret.string_data.iter().flatten() {
        if !fields.iter().any(|(existing, _)| existing == key) {
            fields.push((key.clone(), Cow::Borrowed(value.as_bytes())));
        }
    }
    fields
}

pub(crate) fn external_auth(
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<ExternalAuth, Refused> {
    fn read<T>(
        annotations: Option<&BTreeMap<String, String>>,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, Refused> {
        match lookup(annotations, name) {
            None => Ok(None),
            Some((full, value)) => parse(value).map(Some).map_err(|why| (full, why)),
        }
    }
    let url = read(annotations, "auth-url", AuthUrl::parse)?.expect("auth-url is there");
    let redirect_param = read(
        annotations,
        "auth-signin-redirect-param",
        parse_redirect_param,
    )?;
    let signin = read(annotations, "auth-signin", |text| {
        parse_signin(text, redirect_param.as_deref())
    })?;
    let cache = match read(annotations, "auth-cache-key", |text| {
        UrlTemplate::parse(text.trim(), false)
    })? {
        None => None,
        Some(key) => {
            let durations = read(annotations, "auth-cache-duration", parse_cache_durations)?;
            let durations = match durations {
                Some(durations) => durations,
                None => parse_cache_durations(DEFAULT_CACHE_DURATION).expect("the default parses"),
            };
            Some(AuthCache { key, durations })
        }
    };
    if cache.is_none() {
        // Checked even without a key, as ingress-nginx does.
        read(annotations, "auth-cache-duration", parse_cache_durations)?;
    }
    Ok(ExternalAuth {
        url,
        method: read(annotations, "auth-method", parse_method)?,
        signin,
        response_headers: read(annotations, "auth-response-headers", parse_header_names)?
            .unwrap_or_default(),
        request_redirect: read(annotations, "auth-request-redirect", parse_request_redirect)?,
        always_set_cookie: read(annotations, "auth-always-set-cookie", parse_bool)?
            .unwrap_or(false),
        cache,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{ByteString, apimachinery::pkg::apis::meta::v1::ObjectMeta};

    use super::*;
    use crate::{
        annotations::{AnnotationVerdict, read as read_annotations},
        auth::VerifyClient,
        object::ObjectKind,
        problem::ProblemReason,
    };

    /// ingress-nginx's docs/examples/auth/basic Secret (user foo, password bar).
    const EXAMPLE_AUTH: &str = "foo:$apr1$OFG3Xybp$ckL0FHDAkoXYIlH9.cysT0\n";

    fn secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            type_: Some("Opaque".to_owned()),
            ..Secret::default()
        }
    }

    fn verdict(annotations: &[(&str, &str)], secrets: Vec<Secret>) -> AnnotationVerdict {
        let object = ObjectRef::new(ObjectKind::Ingress, ObjectKey::new("default", "web"));
        let annotations = annotations
            .iter()
            .map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), v.to_string()))
            .collect();
        let mut objects = ClusterObjects::default();
        for secret in secrets {
            objects
                .secrets
                .insert(ObjectKey::of_namespaced(&secret.metadata), secret.into());
        }
        read_annotations(&object, Some(&annotations), &objects)
    }

    fn example_secret() -> Secret {
        secret("default", "basic-auth", &[("auth", EXAMPLE_AUTH)])
    }

    /// The refusal's reason and the problems' messages.
    fn refused(verdict: &AnnotationVerdict) -> Option<ProblemReason> {
        verdict.refusal.as_ref().map(|r| r.reason)
    }

    #[test]
    fn ingress_nginx_basic_auth_example_reads_as_written() {
        let read = verdict(
            &[
                ("auth-type", "basic"),
                ("auth-secret", "basic-auth"),
                ("auth-realm", "Authentication Required - foo"),
            ],
            vec![example_secret()],
        );
        assert_eq!(
            (read.refusal.clone(), read.problems.clone()),
            (None, vec![])
        );
        let basic = read.policy.basic_auth.unwrap();
        assert_eq!(basic.realm, "Authentication Required - foo");
        assert!(basic.credentials.verify("foo", b"bar"));
        assert!(!basic.credentials.verify("foo", b"baz"));
        assert_eq!(read.secrets, [ObjectKey::new("default", "basic-auth")]);
        // The namespace may be written; the realm defaults to empty.
        let read = verdict(
            &[
                ("auth-type", "basic"),
                ("auth-secret", "default/basic-auth"),
            ],
            vec![example_secret()],
        );
        assert_eq!(read.policy.basic_auth.unwrap().realm, "");
    }

    #[test]
    fn auth_maps_take_each_key_as_a_user() {
        let read = verdict(
            &[
                ("auth-type", "basic"),
                ("auth-secret", "users"),
                ("auth-secret-type", "auth-map"),
            ],
            vec![secret(
                "default",
                "users",
                &[
                    ("foo", "$apr1$OFG3Xybp$ckL0FHDAkoXYIlH9.cysT0"),
                    ("bob", "clear"),
                ],
            )],
        );
        assert_eq!(read.refusal, None);
        // bob's clear-text value is reported; foo still signs in.
        assert_eq!(read.problems.len(), 1);
        assert!(read.problems[0].message.contains("bob"));
        assert!(
            read.policy
                .basic_auth
                .unwrap()
                .credentials
                .verify("foo", b"bar")
        );
    }

    /// Annotations, Secrets, and a word the problem must hold.
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<Secret>, &'a str);

    #[test]
    fn what_cannot_be_applied_fails_closed() {
        let good = || vec![example_secret()];
        let cases: Vec<Case<'_>> = vec![
            (
                vec![("auth-type", "basic"), ("auth-secret", "missing")],
                good(),
                "not found",
            ),
            (vec![("auth-type", "basic")], good(), "no auth-secret"),
            (vec![("auth-secret", "basic-auth")], good(), "no auth-type"),
            (
                vec![("auth-type", "digest"), ("auth-secret", "basic-auth")],
                good(),
                "digest",
            ),
            (
                vec![("auth-type", "ntlm"), ("auth-secret", "basic-auth")],
                good(),
                "ntlm",
            ),
            (
                vec![("auth-type", "basic"), ("auth-secret", "other/basic-auth")],
                vec![secret("other", "basic-auth", &[("auth", EXAMPLE_AUTH)])],
                "another namespace",
            ),
            (
                vec![("auth-type", "basic"), ("auth-secret", "basic-auth")],
                vec![secret("default", "basic-auth", &[("users", EXAMPLE_AUTH)])],
                "no key auth",
            ),
            (
                vec![("auth-type", "basic"), ("auth-secret", "basic-auth")],
                vec![secret("default", "basic-auth", &[("auth", "foo:bar\n")])],
                "no usable",
            ),
            (
                vec![
                    ("auth-type", "basic"),
                    ("auth-secret", "basic-auth"),
                    ("auth-realm", "say \"hi\""),
                ],
                good(),
                "quotes",
            ),
            (
                vec![
                    ("auth-type", "basic"),
                    ("auth-secret", "basic-auth"),
                    ("auth-secret-type", "auth-list"),
                ],
                good(),
                "auth-file or auth-map",
            ),
            (vec![("auth-url", "ftp://auth.example/")], vec![], "http"),
            (vec![("auth-url", "http://$host/auth")], vec![], "variables"),
            (
                vec![
                    ("auth-url", "http://auth.example/"),
                    ("auth-method", "FETCH"),
                ],
                vec![],
                "FETCH",
            ),
            (
                vec![
                    ("auth-url", "http://auth.example/"),
                    ("auth-response-headers", "X-User: 1"),
                ],
                vec![],
                "header names",
            ),
            (
                vec![
                    ("auth-url", "http://auth.example/"),
                    ("auth-signin", "https://x/$nope"),
                ],
                vec![],
                "$nope",
            ),
            (
                vec![
                    ("auth-url", "http://auth.example/"),
                    ("auth-cache-key", "$http_authorization"),
                    ("auth-cache-duration", "forever"),
                ],
                vec![],
                "duration",
            ),
            (
                vec![
                    ("auth-url", "http://auth.example/"),
                    ("auth-always-set-cookie", "yes"),
                ],
                vec![],
                "true nor false",
            ),
        ];
        let ca = || vec![secret("default", "ca", &[("ca.crt", CA_PEM)])];
        let tls = |more: (&'static str, &'static str)| vec![("auth-tls-secret", "ca"), more];
        let tls_cases: Vec<Case<'_>> = vec![
            (vec![("auth-tls-secret", "nope")], ca(), "not found"),
            (
                vec![("auth-tls-secret", "ca")],
                vec![secret("default", "ca", &[("tls.crt", CA_PEM)])],
                "no key ca.crt",
            ),
            (
                vec![("auth-tls-secret", "ca")],
                vec![secret("default", "ca", &[("ca.crt", "not pem")])],
                "no PEM",
            ),
            (
                tls(("auth-tls-verify-client", "sometimes")),
                ca(),
                "optional_no_ca",
            ),
            (tls(("auth-tls-verify-depth", "deep")), ca(), "whole number"),
            (tls(("auth-tls-match-cn", "client")), ca(), "CN="),
            (tls(("auth-tls-match-cn", "CN=(")), ca(), "regex"),
            (
                tls(("auth-tls-error-page", "javascript:x")),
                ca(),
                "absolute path",
            ),
            (
                tls(("auth-tls-pass-certificate-to-upstream", "1")),
                ca(),
                "true nor false",
            ),
        ];
        for (annotations, secrets, why) in cases.into_iter().chain(tls_cases) {
            let read = verdict(&annotations, secrets);
            assert_eq!(
                refused(&read),
                Some(ProblemReason::InvalidAnnotation),
                "{annotations:?}"
            );
            assert!(
                read.problems
                    .iter()
                    .any(|p| p.message.contains(why) && p.message.contains("503")),
                "{annotations:?}: {:?}",
                read.problems
            );
            assert_eq!(read.policy.basic_auth, None, "{annotations:?}");
        }
    }

    #[test]
    fn external_auth_reads_its_companions() {
        let read = verdict(
            &[
                (
                    "auth-url",
                    "http://auth.example:9090/verify?u=$escaped_request_uri",
                ),
                ("auth-method", "POST"),
                ("auth-signin", "https://login.example/start"),
                ("auth-signin-redirect-param", "return_to"),
                ("auth-response-headers", "X-Auth-User, X-Auth-Email"),
                ("auth-request-redirect", "https://app.example/home"),
                ("auth-always-set-cookie", "true"),
                ("auth-cache-key", "$remote_user$http_authorization"),
                ("auth-cache-duration", "200 202 10m, 401 1m"),
                ("auth-keepalive", "10"),
                ("satisfy", "all"),
            ],
            vec![],
        );
        assert_eq!(read.refusal, None);
        // Only auth-keepalive is reported (ignored).
        assert_eq!(read.problems.len(), 1, "{:?}", read.problems);
        assert!(read.problems[0].message.contains("auth-keepalive"));
        let external = read.policy.external_auth.unwrap();
        assert_eq!(
            (external.url.host.as_str(), external.url.port),
            ("auth.example", 9090)
        );
        assert_eq!(external.method.as_deref(), Some("POST"));
        assert_eq!(external.response_headers, ["x-auth-user", "x-auth-email"]);
        assert!(external.always_set_cookie);
        assert_eq!(
            external.request_redirect.as_deref(),
            Some("https://app.example/home")
        );
        let signin = external.signin.unwrap().render(|_| "v".into());
        assert_eq!(signin, "https://login.example/start?return_to=v://vv");
        let cache = external.cache.unwrap();
        assert_eq!(
            cache.duration_for(202),
            Some(std::time::Duration::from_secs(600))
        );
        assert_eq!(cache.duration_for(403), None);
        // ingress-nginx's external-auth example, unchanged.
        let read = verdict(
            &[("auth-url", "https://httpbin.org/basic-auth/user/passwd")],
            vec![],
        );
        assert_eq!((read.refusal.clone(), read.problems.len()), (None, 0));
        let external = read.policy.external_auth.unwrap();
        assert!(external.url.tls);
        assert_eq!(external.cache, None);
        // Companions without auth-url do nothing, and say so.
        let read = verdict(&[("auth-signin", "https://login.example/")], vec![]);
        assert_eq!(read.refusal, None);
        assert_eq!(read.problems.len(), 1);
        assert!(read.policy.is_default());
    }

    /// Not a real CA: the model only checks PEM and DER's first byte.
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";

    #[test]
    fn client_certificate_annotations_read_with_ingress_nginx_defaults() {
        let ca = || vec![secret("default", "ca", &[("ca.crt", CA_PEM)])];
        let read = verdict(&[("auth-tls-secret", "default/ca")], ca());
        assert_eq!(
            (read.refusal.clone(), read.problems.clone()),
            (None, vec![])
        );
        let auth = read.policy.client_cert.unwrap();
        assert_eq!(auth.verify, VerifyClient::On);
        assert_eq!(auth.depth, 1);
        assert_eq!(auth.ca_certificates.as_slice(), [vec![0x30, 0x00]]);
        assert!(!auth.pass_certificate);
        assert_eq!(read.secrets, [ObjectKey::new("default", "ca")]);
        let read = verdict(
            &[
                ("auth-tls-secret", "ca"),
                ("auth-tls-verify-client", "optional_no_ca"),
                ("auth-tls-verify-depth", "0"),
                ("auth-tls-error-page", "https://errors.example.com/cert"),
                ("auth-tls-pass-certificate-to-upstream", "true"),
                ("auth-tls-match-cn", "CN=(alice|bob)"),
            ],
            ca(),
        );
        assert_eq!(read.problems, vec![]);
        let auth = read.policy.client_cert.unwrap();
        assert_eq!(auth.verify, VerifyClient::OptionalNoCa);
        assert_eq!(auth.depth, 1);
        assert!(auth.pass_certificate);
        let cn = auth.match_cn.unwrap();
        assert!(cn.matches("CN=bob,O=Example"));
        assert!(!cn.matches("CN=carol,O=Example"));
        // Companions without the Secret are reported and ignored.
        let read = verdict(&[("auth-tls-verify-client", "on")], vec![]);
        assert_eq!((read.refusal.clone(), read.problems.len()), (None, 1));
    }

    #[test]
    fn satisfy_is_all_or_any() {
        let read = verdict(&[("satisfy", "any")], vec![]);
        assert_eq!((read.refusal.clone(), read.problems.len()), (None, 0));
        assert!(read.policy.satisfy_any);
        let read = verdict(&[("satisfy", "all")], vec![]);
        assert!(read.policy.is_default());
        let read = verdict(&[("satisfy", "some")], vec![]);
        assert_eq!(refused(&read), Some(ProblemReason::InvalidAnnotation));
    }
}
