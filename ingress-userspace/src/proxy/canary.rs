//! The canary choice per request: the model's [`CanaryRule`] read against
//! the request's headers and cookies, with nginx's `math.random(n)` as the
//! draw.

use std::sync::Arc;

use http::HeaderMap;
use ingress_model::canary::{CanaryRequest, CanaryRule};

use super::{affinity, headers::request_cookie, server::Upstream};

/// A route's canary: which requests it takes and where they go.
#[derive(Debug, Clone)]
pub struct CanaryUpstream {
    /// Which requests it takes.
    pub rule: Arc<CanaryRule>,
    /// Where they go (with the main route's policy and rewrite).
    pub upstream: Upstream,
}

/// A request's headers as the canary rule reads them.
struct Headers<'a>(&'a HeaderMap);

impl CanaryRequest for Headers<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.get(name)?.to_str().ok()
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        request_cookie(self.0, name)
    }
}

/// `upstream`, or its canary's when the canary's rule takes a request
/// with `headers`, and whether it is the canary. A session cookie (cookie
/// affinity) naming either keeps the request there first, as
/// ingress-nginx's balancer does; the canary's only with
/// `affinity-canary-behavior: sticky`.
pub fn choose(mut upstream: Upstream, headers: &HeaderMap) -> (Upstream, bool) {
    let Some(canary) = upstream.canary.take() else {
        return (upstream, false);
    };
    if let Some(affinity) = upstream.policy.as_ref().and_then(|p| p.affinity.as_ref())
        && let Some(backend) = affinity::session_backend(affinity, headers)
    {
        if backend == affinity::backend_key(&upstream.name) {
            return (upstream, false);
        }
        if affinity.canary_sticky && backend == affinity::backend_key(&canary.upstream.name) {
            return (canary.upstream, true);
        }
    }
    if canary
        .rule
        .selects(&Headers(headers), |total| fastrand::u32(1..=total))
    {
        (canary.upstream, true)
    } else {
        (upstream, false)
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, header};
    use ingress_model::canary::read_canary;

    use super::*;

    fn rule(annotations: &[(&str, &str)]) -> CanaryRule {
        let map: std::collections::BTreeMap<&str, &str> = annotations.iter().copied().collect();
        read_canary(|name| map.get(name).copied(), &mut |name, why, _| {
            panic!("{name}: {why}")
        })
        .expect("a canary")
    }

    #[test]
    fn headers_and_cookies_are_read_as_nginx_reads_them() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; canary=always"),
        );
        headers.append("x-canary", HeaderValue::from_static("never"));
        let view = Headers(&headers);
        assert_eq!(view.cookie("canary"), Some("always"));
        assert_eq!(view.cookie("a"), Some("1"));
        assert_eq!(view.cookie("missing"), None);
        assert_eq!(view.header("x-canary"), Some("never"));
        let by_cookie = rule(&[("canary", "true"), ("canary-by-cookie", "canary")]);
        assert!(by_cookie.selects(&view, |_| 100));
        let header_first = rule(&[
            ("canary", "true"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-cookie", "canary"),
        ]);
        assert!(!header_first.selects(&view, |_| 1));
    }

    #[test]
    fn the_draw_is_uniform_over_the_total() {
        // 10 of 100 at random: 20,000 draws land within 6 standard
        // deviations (sqrt(20000 * 0.1 * 0.9) = 42) of 2,000.
        let ten = rule(&[("canary", "true"), ("canary-weight", "10")]);
        let headers = HeaderMap::new();
        let picked = (0..20_000)
            .filter(|_| ten.selects(&Headers(&headers), |total| fastrand::u32(1..=total)))
            .count();
        assert!((2_000 - 255..=2_000 + 255).contains(&picked), "{picked}");
    }
}
