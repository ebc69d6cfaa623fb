//! The controller ConfigMap's settings as the proxy applies them
//! (`--configmap`): swapped in whole when the ConfigMap changes, read once
//! per request. What it does not set stays as the flags say.

use std::{net::IpAddr, time::Duration};

use http::HeaderValue;
use ingress_model::{
    access::{IpRange, SourceRanges},
    controller_config::{ControllerConfig, Hsts},
    policy::RoutePolicy,
};

/// The ConfigMap's settings, with what the proxy derives from them.
#[derive(Debug, Default)]
pub struct Global {
    /// The settings as read.
    pub config: ControllerConfig,
    /// `Strict-Transport-Security`: the flags with the ConfigMap's keys
    /// over them; `None` when the ConfigMap sets no `hsts*` key (the
    /// flags' value applies).
    pub hsts: Option<Option<HeaderValue>>,
    /// The Ingresses' `xdp-ingress.io/xdp-drop-source-range` ranges: the
    /// XDP edge drops them on every listener; refused here too (403),
    /// for what gets past it (or when there is no XDP edge).
    pub listener_drop: Vec<IpRange>,
    /// `global-auth-url` as a route policy the authenticator runs.
    pub auth_policy: Option<RoutePolicy>,
}

impl Global {
    /// The settings of `config` over the `--hsts*` flags `hsts`.
    pub fn new(config: ControllerConfig, hsts: Hsts) -> Self {
        let sets_hsts = config.hsts.is_some()
            || config.hsts_max_age.is_some()
            || config.hsts_include_subdomains.is_some()
            || config.hsts_preload.is_some();
        let hsts = sets_hsts.then(|| {
            hsts.overridden_by(&config)
                .value()
                .map(|value| HeaderValue::from_str(&value).expect("an HSTS value is ASCII"))
        });
        let auth_policy = config.global_auth.clone().map(|auth| RoutePolicy {
            external_auth: Some(auth),
            ..RoutePolicy::default()
        });
        Self {
            config,
            hsts,
            listener_drop: Vec::new(),
            auth_policy,
        }
    }

    /// These settings with `listener_drop` refused everywhere.
    pub fn with_listener_drop(&self, listener_drop: Vec<IpRange>) -> Self {
        Self {
            config: self.config.clone(),
            hsts: self.hsts.clone(),
            listener_drop,
            auth_policy: self.auth_policy.clone(),
        }
    }

    /// Whether a client at `ip` sending `user_agent` is refused
    /// everywhere (`block-cidrs` and `xdp-drop-source-range`, the key and
    /// the annotation, which the XDP edge drops before they get here;
    /// `block-user-agents`).
    pub fn blocks(&self, ip: IpAddr, user_agent: Option<&HeaderValue>) -> bool {
        if self
            .config
            .block_cidrs
            .iter()
            .chain(&self.config.xdp_drop_source_range)
            .chain(&self.listener_drop)
            .any(|range| range.contains(ip))
        {
            return true;
        }
        let agent = user_agent.and_then(|agent| agent.to_str().ok());
        agent.is_some_and(|agent| {
            self.config
                .block_user_agents
                .iter()
                .any(|rule| rule.matches(agent))
        })
    }

    /// Whether a client at `ip` may use a route whose Ingress asks for
    /// `route` source ranges: each list of the route's replaces the
    /// ConfigMap's list of the same kind, as an annotation replaces the
    /// global setting in ingress-nginx.
    pub fn admits(&self, route: Option<&SourceRanges>, ip: IpAddr) -> bool {
        let global = &self.config.source_ranges;
        fn pick<'a>(own: Option<&'a Vec<IpRange>>, global: &'a Vec<IpRange>) -> &'a Vec<IpRange> {
            match own {
                Some(own) if !own.is_empty() => own,
                _ => global,
            }
        }
        let allow = pick(route.map(|r| &r.allow), &global.allow);
        let deny = pick(route.map(|r| &r.deny), &global.deny);
        !deny.iter().any(|range| range.contains(ip))
            && (allow.is_empty() || allow.iter().any(|range| range.contains(ip)))
    }

    /// Whether any source range applies (the route's or the ConfigMap's).
    pub fn has_source_ranges(&self, route: Option<&SourceRanges>) -> bool {
        route.is_some() || self.config.source_ranges != SourceRanges::default()
    }

    /// `client-header-timeout`, else `flag`.
    pub fn client_header_timeout(&self, flag: Duration) -> Duration {
        self.config.client_header_timeout.unwrap_or(flag)
    }

    /// Whether client connections are kept alive (`keep-alive: 0` closes
    /// them after each response).
    pub fn keep_alive(&self, flag: bool) -> bool {
        flag && self.config.keep_alive != Some(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ingress_model::{
        ObjectKey, ObjectKind, ObjectRef, access::parse_ranges,
        controller_config::read_controller_config,
    };

    use super::*;

    fn global(pairs: &[(&str, &str)]) -> Global {
        let object = ObjectRef::new(ObjectKind::ConfigMap, ObjectKey::new("ns", "config"));
        let data: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (config, problems) = read_controller_config(&object, &data);
        assert!(problems.is_empty(), "{problems:?}");
        Global::new(config, Hsts::default())
    }

    #[test]
    fn a_route_list_replaces_the_global_list_of_its_kind() {
        let global = global(&[
            ("whitelist-source-range", "198.18.0.0/24"),
            ("denylist-source-range", "198.18.0.66"),
        ]);
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(global.admits(None, ip("198.18.0.2")));
        assert!(!global.admits(None, ip("198.18.0.66")));
        assert!(!global.admits(None, ip("198.18.1.2")));
        let own = SourceRanges {
            allow: parse_ranges("198.18.1.0/24").unwrap(),
            deny: Vec::new(),
        };
        assert!(global.admits(Some(&own), ip("198.18.1.2")));
        assert!(!global.admits(Some(&own), ip("198.18.0.2")));
    }

    #[test]
    fn blocks_and_hsts() {
        let global = global(&[
            ("block-cidrs", "198.18.9.0/24"),
            ("block-user-agents", "~*scanner"),
            ("hsts-max-age", "60"),
        ]);
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(global.blocks(ip("198.18.9.9"), None));
        let agent = HeaderValue::from_static("Evil-Scanner/1.0");
        assert!(global.blocks(ip("198.18.0.2"), Some(&agent)));
        assert!(!global.blocks(ip("198.18.0.2"), None));
        assert_eq!(
            global.hsts,
            Some(Some(HeaderValue::from_static(
                "max-age=60; includeSubDomains"
            )))
        );
        assert_eq!(Global::default().hsts, None);
        let dropping = Global::default().with_listener_drop(parse_ranges("198.18.7.0/24").unwrap());
        assert!(dropping.blocks(ip("198.18.7.7"), None));
        assert!(!dropping.blocks(ip("198.18.8.7"), None));
    }
}
