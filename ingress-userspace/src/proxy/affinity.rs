//! Cookie session affinity (the model's [`SessionAffinity`]): which
//! endpoint a request's session cookie names, and the cookie a new session
//! gets. Keys are stable across replicas (no per-process seed): every
//! replica sends a session to the same endpoint.

use std::{net::SocketAddr, time::SystemTime};

use http::{HeaderMap, HeaderValue};
use ingress_model::affinity::{
    AffinityMode, SameSite, SessionAffinity, same_site_none_incompatible, split_cookie_value,
};

use super::{balance::consistent_order, headers::request_cookie};

/// Where a request with affinity goes, and the cookie to set when its
/// session is new (or moved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    /// The session's endpoint.
    pub endpoint: SocketAddr,
    /// The session's key (the cookie's first part).
    pub key: String,
    /// Whether the response sets the cookie.
    pub new: bool,
}

/// FNV-1a, 64 bits: stable across processes and replicas.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain([0u8].iter()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// The cookie's second part for the Service port `upstream` (its name).
pub fn backend_key(upstream: &str) -> String {
    format!("{:016x}", fnv(&[b"backend", upstream.as_bytes()]))
}

/// The persistent mode's key of `endpoint` of `upstream`.
fn endpoint_key(upstream: &str, endpoint: &SocketAddr) -> String {
    let endpoint = endpoint.to_string();
    format!("{:016x}", fnv(&[upstream.as_bytes(), endpoint.as_bytes()]))
}

/// The backend key the request's session cookie names, if any.
pub fn session_backend<'a>(affinity: &SessionAffinity, headers: &'a HeaderMap) -> Option<&'a str> {
    let value = request_cookie(headers, &affinity.cookie_name)?;
    split_cookie_value(value).1
}

/// The endpoint of `upstream` (its name and endpoints) for a request with
/// `headers`: the one its cookie names, else a new session's.
pub fn pick(
    affinity: &SessionAffinity,
    upstream: &str,
    endpoints: &[SocketAddr],
    headers: &HeaderMap,
) -> Option<Pick> {
    if endpoints.is_empty() {
        return None;
    }
    let from_cookie = request_cookie(headers, &affinity.cookie_name)
        .map(split_cookie_value)
        .and_then(|(key, _)| {
            let endpoint = find(affinity.mode, upstream, endpoints, key)?;
            Some(Pick {
                endpoint,
                key: key.to_owned(),
                new: false,
            })
        });
    from_cookie.or_else(|| new_session(affinity.mode, upstream, endpoints, |_| true))
}

/// The endpoint `key` names now, if any.
fn find(
    mode: AffinityMode,
    upstream: &str,
    endpoints: &[SocketAddr],
    key: &str,
) -> Option<SocketAddr> {
    match mode {
        AffinityMode::Balanced => consistent_order(endpoints, key.as_bytes()).first().copied(),
        AffinityMode::Persistent => endpoints
            .iter()
            .find(|endpoint| endpoint_key(upstream, endpoint) == key)
            .copied(),
    }
}

/// A new session on an endpoint `allowed` admits: a random key (balanced;
/// ingress-nginx tries 20) or a random endpoint (persistent).
fn new_session(
    mode: AffinityMode,
    upstream: &str,
    endpoints: &[SocketAddr],
    allowed: impl Fn(&SocketAddr) -> bool,
) -> Option<Pick> {
    match mode {
        AffinityMode::Balanced => (0..20).find_map(|_| {
            let key = format!("{:016x}", fastrand::u64(..));
            let endpoint = find(mode, upstream, endpoints, &key)?;
            allowed(&endpoint).then_some(Pick {
                endpoint,
                key,
                new: true,
            })
        }),
        AffinityMode::Persistent => {
            let candidates: Vec<&SocketAddr> = endpoints.iter().filter(|e| allowed(e)).collect();
            let endpoint = **candidates.get(fastrand::usize(..candidates.len().max(1)))?;
            Some(Pick {
                endpoint,
                key: endpoint_key(upstream, &endpoint),
                new: true,
            })
        }
    }
}

/// `session-cookie-change-on-failure`: the session of a request whose
/// endpoint failed, moved to `served`, the one that answered.
pub fn moved_to(
    affinity: &SessionAffinity,
    upstream: &str,
    endpoints: &[SocketAddr],
    served: SocketAddr,
) -> Option<Pick> {
    new_session(affinity.mode, upstream, endpoints, |e| *e == served)
}

/// The `Set-Cookie` of a session `key` of `upstream`, as lua-resty-cookie
/// writes ingress-nginx's: the route's `path` unless the annotation sets
/// one, `HttpOnly` always, `Secure` as set or on HTTPS, `SameSite=None`
/// left out for the agents that mishandle it when asked.
pub fn set_cookie(
    affinity: &SessionAffinity,
    key: &str,
    upstream: &str,
    path: &str,
    https: bool,
    user_agent: Option<&HeaderValue>,
    now: SystemTime,
) -> Option<HeaderValue> {
    let mut cookie = format!("{}={key}|{}", affinity.cookie_name, backend_key(upstream));
    if let Some(seconds) = affinity.expires {
        let at = if seconds >= 0 {
            now + std::time::Duration::from_secs(seconds.unsigned_abs())
        } else {
            now - std::time::Duration::from_secs(seconds.unsigned_abs())
        };
        cookie.push_str("; Expires=");
        cookie.push_str(&httpdate::fmt_http_date(at));
    }
    if let Some(seconds) = affinity.max_age {
        cookie.push_str(&format!("; Max-Age={seconds}"));
    }
    if let Some(domain) = &affinity.domain {
        cookie.push_str(&format!("; Domain={domain}"));
    }
    cookie.push_str("; Path=");
    cookie.push_str(affinity.path.as_deref().unwrap_or(path));
    if affinity.secure.unwrap_or(https) {
        cookie.push_str("; Secure");
    }
    cookie.push_str("; HttpOnly");
    let same_site = affinity.same_site.filter(|same_site| {
        !(affinity.conditional_same_site_none
            && *same_site == SameSite::None
            && user_agent
                .and_then(|agent| agent.to_str().ok())
                .is_some_and(same_site_none_incompatible))
    });
    if let Some(same_site) = same_site {
        cookie.push_str("; SameSite=");
        cookie.push_str(same_site.as_str());
    }
    HeaderValue::from_str(&cookie).ok()
}

#[cfg(test)]
mod tests {
    use http::header;
    use ingress_model::affinity::read_affinity;

    use super::*;

    fn affinity(annotations: &[(&str, &str)]) -> SessionAffinity {
        let map: std::collections::BTreeMap<&str, &str> = annotations.iter().copied().collect();
        read_affinity(|name| map.get(name).copied(), &mut |name, why, _| {
            panic!("{name}: {why}")
        })
        .expect("affinity")
    }

    fn endpoints(count: u8) -> Vec<SocketAddr> {
        (1..=count)
            .map(|i| SocketAddr::from(([198, 19, 0, i], 8080)))
            .collect()
    }

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_session_keeps_its_endpoint_in_both_modes() {
        for mode in ["balanced", "persistent"] {
            let affinity = affinity(&[("affinity", "cookie"), ("affinity-mode", mode)]);
            let endpoints = endpoints(5);
            let first = pick(&affinity, "ns/web:80", &endpoints, &HeaderMap::new()).unwrap();
            assert!(first.new);
            let cookie = format!("INGRESSCOOKIE={}|{}", first.key, backend_key("ns/web:80"));
            for _ in 0..20 {
                let again =
                    pick(&affinity, "ns/web:80", &endpoints, &with_cookie(&cookie)).unwrap();
                assert_eq!(
                    (again.endpoint, again.new),
                    (first.endpoint, false),
                    "{mode}"
                );
            }
        }
    }

    #[test]
    fn persistent_sessions_move_only_when_their_endpoint_goes() {
        let affinity = affinity(&[("affinity", "cookie"), ("affinity-mode", "persistent")]);
        let all = endpoints(4);
        let cookies: Vec<(SocketAddr, String)> = all
            .iter()
            .map(|e| (*e, format!("INGRESSCOOKIE={}", endpoint_key("u", e))))
            .collect();
        // Scaled up: every session stays.
        let more = endpoints(8);
        for (endpoint, cookie) in &cookies {
            let again = pick(&affinity, "u", &more, &with_cookie(cookie)).unwrap();
            assert_eq!(again.endpoint, *endpoint);
        }
        // Its endpoint gone: a new session elsewhere.
        let fewer = &all[1..];
        let moved = pick(&affinity, "u", fewer, &with_cookie(&cookies[0].1)).unwrap();
        assert!(moved.new && moved.endpoint != all[0]);
    }

    #[test]
    fn balanced_sessions_spread_and_a_scale_up_moves_some() {
        let affinity = affinity(&[("affinity", "cookie")]);
        let four = endpoints(4);
        let picks: Vec<Pick> = (0..400)
            .map(|_| pick(&affinity, "u", &four, &HeaderMap::new()).unwrap())
            .collect();
        for endpoint in &four {
            let count = picks.iter().filter(|p| p.endpoint == *endpoint).count();
            // Binomial(400, 1/4): mean 100, sd 8.7; six of them either side.
            assert!((48..=152).contains(&count), "{endpoint}: {count}");
        }
        let five = endpoints(5);
        let moved = picks
            .iter()
            .filter(|p| find(AffinityMode::Balanced, "u", &five, &p.key) != Some(p.endpoint))
            .count();
        // About a fifth move, each to the new endpoint.
        assert!((40..=130).contains(&moved), "{moved}");
    }

    #[test]
    fn the_cookie_as_ingress_nginx_sets_it() {
        let affinity = affinity(&[
            ("affinity", "cookie"),
            ("session-cookie-name", "route"),
            ("session-cookie-max-age", "172800"),
            ("session-cookie-expires", "172800"),
            ("session-cookie-samesite", "None"),
            ("session-cookie-conditional-samesite-none", "true"),
        ]);
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let cookie = set_cookie(&affinity, "k", "ns/web:80", "/app", true, None, now).unwrap();
        assert_eq!(
            cookie,
            format!(
                "route=k|{}; Expires=Thu, 16 Nov 2023 22:13:20 GMT; Max-Age=172800; Path=/app; Secure; HttpOnly; SameSite=None",
                backend_key("ns/web:80")
            )
        );
        let old_chrome = HeaderValue::from_static(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.113 Safari/537.36",
        );
        let plain = set_cookie(
            &affinity,
            "k",
            "ns/web:80",
            "/",
            false,
            Some(&old_chrome),
            now,
        )
        .unwrap();
        let plain = plain.to_str().unwrap();
        assert!(
            !plain.contains("SameSite") && !plain.contains("Secure"),
            "{plain}"
        );
    }
}
