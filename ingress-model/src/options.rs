//! The controller's settings that change how objects become routes.

use std::{fmt, str::FromStr};

use crate::{backend::ServicePortRef, object::ObjectKey};

/// Our controller name: IngressClasses whose `spec.controller` is this are
/// ours.
pub const CONTROLLER_NAME: &str = "xdp-ingress.io/controller";

/// ingress-nginx's annotation prefix, its `--annotations-prefix` default.
pub const DEFAULT_ANNOTATIONS_PREFIX: &str = "nginx.ingress.kubernetes.io";

/// Our ingress class name unless `--ingress-class` says otherwise.
pub const DEFAULT_INGRESS_CLASS: &str = "xdp";

/// The settings the route table is built with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOptions {
    /// The `spec.controller` of our IngressClasses.
    pub controller_name: String,
    /// Our class name: a legacy `kubernetes.io/ingress.class` annotation
    /// with this value selects us even without an IngressClass object.
    pub ingress_class: String,
    /// Take Ingresses that name no class at all, even when none of our
    /// IngressClasses is the default class.
    pub watch_ingress_without_class: bool,
    /// The Service answering requests no rule matches, instead of the
    /// built-in 404 (an Ingress without rules but with a `defaultBackend`
    /// still takes precedence).
    pub default_backend_service: Option<DefaultBackendService>,
    /// The default of every Ingress's `ssl-redirect` (the ConfigMap's
    /// `ssl-redirect`, true unless it says otherwise).
    pub ssl_redirect: bool,
    /// The default of every Ingress's `force-ssl-redirect`.
    pub force_ssl_redirect: bool,
    /// `--annotations-prefix`: where ingress-nginx's annotations are read
    /// (`nginx.ingress.kubernetes.io` unless the flag says otherwise, as in
    /// ingress-nginx); `xdp-ingress.io/` is read too, and wins.
    pub annotations_prefix: String,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            controller_name: CONTROLLER_NAME.to_owned(),
            ingress_class: DEFAULT_INGRESS_CLASS.to_owned(),
            watch_ingress_without_class: false,
            default_backend_service: None,
            ssl_redirect: true,
            force_ssl_redirect: false,
            annotations_prefix: DEFAULT_ANNOTATIONS_PREFIX.to_owned(),
        }
    }
}

/// The `--default-backend-service` setting: `namespace/name`, optionally
/// `:port` (a number or a port name); without a port the Service's first
/// port is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultBackendService {
    /// The Service.
    pub service: ObjectKey,
    /// The port, or `None` for the Service's first port.
    pub port: Option<ServicePortRef>,
}

/// Why a `--default-backend-service` value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("default backend service {value:?} must be namespace/name or namespace/name:port")]
pub struct DefaultBackendServiceError {
    /// The value as given.
    pub value: String,
}

impl FromStr for DefaultBackendService {
    type Err = DefaultBackendServiceError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let error = || DefaultBackendServiceError {
            value: value.to_owned(),
        };
        let (namespace, rest) = value.split_once('/').ok_or_else(error)?;
        let (name, port) = match rest.split_once(':') {
            Some((name, port)) if !port.is_empty() => (name, Some(port)),
            Some(_) => return Err(error()),
            None => (rest, None),
        };
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return Err(error());
        }
        let port = port.map(|port| match port.parse::<i32>() {
            Ok(number) => ServicePortRef::Number(number),
            Err(_) => ServicePortRef::Name(port.to_owned()),
        });
        Ok(Self {
            service: ObjectKey::new(namespace, name),
            port,
        })
    }
}

impl fmt::Display for DefaultBackendService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.service)?;
        if let Some(port) = &self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_backend_service_values() {
        /// (value, expected (namespace, name, port) or `None` for an error)
        type Case<'a> = (&'a str, Option<(&'a str, &'a str, Option<ServicePortRef>)>);
        let cases: &[Case] = &[
            ("ns/svc", Some(("ns", "svc", None))),
            (
                "ns/svc:8080",
                Some(("ns", "svc", Some(ServicePortRef::Number(8080)))),
            ),
            (
                "ns/svc:http",
                Some(("ns", "svc", Some(ServicePortRef::Name("http".into())))),
            ),
            ("svc", None),
            ("/svc", None),
            ("ns/", None),
            ("ns/svc:", None),
            ("ns/a/b", None),
        ];
        for (value, expected) in cases {
            let parsed = value.parse::<DefaultBackendService>().ok();
            let expected = expected
                .clone()
                .map(|(ns, name, port)| DefaultBackendService {
                    service: ObjectKey::new(ns, name),
                    port,
                });
            assert_eq!(parsed, expected, "{value}");
            if let Some(parsed) = parsed {
                assert_eq!(parsed.to_string(), *value);
            }
        }
    }

    #[test]
    fn defaults_are_ours() {
        let options = ModelOptions::default();
        assert_eq!(options.controller_name, "xdp-ingress.io/controller");
        assert_eq!(options.ingress_class, "xdp");
        assert!(!options.watch_ingress_without_class);
        assert!(options.default_backend_service.is_none());
    }
}
