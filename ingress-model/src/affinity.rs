//! Cookie session affinity as ingress-nginx has it (`affinity: cookie`):
//! the first response sets a cookie naming the endpoint that served, and
//! later requests with it go to that endpoint while it exists.
//!
//! - `affinity-mode: balanced` (the default): the cookie holds a random
//!   key, hashed consistently onto the endpoints, so a scale-up moves some
//!   sessions (as ingress-nginx's `sticky_balanced`);
//! - `persistent`: the cookie names the endpoint itself; a session moves
//!   only when its endpoint goes (`sticky_persistent`).
//!
//! The value is `<key>|<backend key>`, the second part naming the Service
//! (so a canary's sessions stay with the canary:
//! `affinity-canary-behavior: sticky`, the default).

/// The default `session-cookie-name`.
pub const DEFAULT_COOKIE_NAME: &str = "INGRESSCOOKIE";

/// The annotations (without prefix) that configure affinity.
pub const AFFINITY_ANNOTATIONS: [&str; 12] = [
    "affinity",
    "affinity-mode",
    "affinity-canary-behavior",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-domain",
    "session-cookie-samesite",
    "session-cookie-conditional-samesite-none",
    "session-cookie-expires",
    "session-cookie-max-age",
    "session-cookie-secure",
    "session-cookie-change-on-failure",
];

/// How a session keeps its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AffinityMode {
    /// A random key hashed onto the endpoints.
    #[default]
    Balanced,
    /// The endpoint itself.
    Persistent,
}

/// `SameSite` of the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SameSite {
    /// `SameSite=None`.
    None,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=Strict`.
    Strict,
}

impl SameSite {
    /// The attribute's value.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::None => "None",
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
        }
    }
}

/// Cookie affinity of a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionAffinity {
    /// `session-cookie-name`.
    pub cookie_name: String,
    /// `affinity-mode`.
    pub mode: AffinityMode,
    /// `affinity-canary-behavior` other than `legacy`: a canary's sessions
    /// stick to the canary as the main route's stick to it.
    pub canary_sticky: bool,
    /// `session-cookie-path` (else the route's path).
    pub path: Option<String>,
    /// `session-cookie-domain`.
    pub domain: Option<String>,
    /// `session-cookie-samesite`.
    pub same_site: Option<SameSite>,
    /// `session-cookie-conditional-samesite-none`: no `SameSite=None` for
    /// the browsers that mishandle it.
    pub conditional_same_site_none: bool,
    /// `session-cookie-expires`: seconds from the response.
    pub expires: Option<i64>,
    /// `session-cookie-max-age`.
    pub max_age: Option<i64>,
    /// `session-cookie-secure` (else: on HTTPS only).
    pub secure: Option<bool>,
    /// `session-cookie-change-on-failure`: a session whose endpoint failed
    /// moves to the one that answered.
    pub change_on_failure: bool,
}

/// Reads the affinity annotations through `get`; values that cannot be
/// read go to `invalid(name, why, effect)` and are ignored, as
/// ingress-nginx ignores them.
pub fn read_affinity<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
    invalid: &mut dyn FnMut(&str, String, &str),
) -> Option<SessionAffinity> {
    let kind = get("affinity")?.trim();
    if kind != "cookie" {
        invalid(
            "affinity",
            format!("{kind:?} is not \"cookie\", the one affinity there is"),
            "no affinity",
        );
        return None;
    }
    let text = |name: &str| get(name).map(str::trim).filter(|v| !v.is_empty());
    let flag = |name: &str, invalid: &mut dyn FnMut(&str, String, &str)| {
        let value = text(name)?;
        match value.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                invalid(
                    name,
                    format!("{value:?} is neither true nor false"),
                    "ignored",
                );
                None
            }
        }
    };
    let mode = match text("affinity-mode") {
        None | Some("balanced") => AffinityMode::Balanced,
        Some("persistent") => AffinityMode::Persistent,
        Some(other) => {
            invalid(
                "affinity-mode",
                format!("{other:?} is neither balanced nor persistent"),
                "balanced is used",
            );
            AffinityMode::Balanced
        }
    };
    let cookie_name = match text("session-cookie-name") {
        Some(name) if is_cookie_name(name) => name.to_owned(),
        Some(name) => {
            invalid(
                "session-cookie-name",
                format!("{name:?} is not a cookie name"),
                "INGRESSCOOKIE is used",
            );
            DEFAULT_COOKIE_NAME.to_owned()
        }
        None => DEFAULT_COOKIE_NAME.to_owned(),
    };
    // Attribute values go into a Set-Cookie header: no `;`, no controls.
    let attribute = |name: &str, invalid: &mut dyn FnMut(&str, String, &str)| {
        let value = text(name)?;
        if value
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b';')
        {
            Some(value.to_owned())
        } else {
            invalid(
                name,
                format!("{value:?} cannot be a cookie attribute"),
                "ignored",
            );
            None
        }
    };
    let path = attribute("session-cookie-path", invalid);
    let domain = attribute("session-cookie-domain", invalid);
    let same_site = text("session-cookie-samesite").and_then(|value| {
        match value.to_ascii_lowercase().as_str() {
            "none" => Some(SameSite::None),
            "lax" => Some(SameSite::Lax),
            "strict" => Some(SameSite::Strict),
            _ => {
                invalid(
                    "session-cookie-samesite",
                    format!("{value:?} is not None, Lax or Strict"),
                    "ignored",
                );
                None
            }
        }
    });
    // ingress-nginx's `(^0|-?[1-9]\d*$)`: whole seconds.
    let seconds = |name: &str, invalid: &mut dyn FnMut(&str, String, &str)| {
        let value = text(name)?;
        match value.parse::<i64>() {
            Ok(seconds) => Some(seconds),
            Err(_) => {
                invalid(name, format!("{value:?} is not whole seconds"), "ignored");
                None
            }
        }
    };
    let expires = seconds("session-cookie-expires", invalid);
    let max_age = seconds("session-cookie-max-age", invalid);
    let canary_sticky = match text("affinity-canary-behavior") {
        None | Some("sticky") => true,
        Some("legacy") => false,
        Some(other) => {
            invalid(
                "affinity-canary-behavior",
                format!("{other:?} is neither sticky nor legacy"),
                "sticky is used",
            );
            true
        }
    };
    Some(SessionAffinity {
        cookie_name,
        mode,
        canary_sticky,
        path,
        domain,
        same_site,
        conditional_same_site_none: flag("session-cookie-conditional-samesite-none", invalid)
            .unwrap_or(false),
        expires,
        max_age,
        secure: flag("session-cookie-secure", invalid),
        change_on_failure: flag("session-cookie-change-on-failure", invalid).unwrap_or(false),
    })
}

/// Whether `name` can be a cookie's name (an HTTP token).
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The parts of an affinity cookie's value: the endpoint key and, when
/// present, the backend key.
pub fn split_cookie_value(value: &str) -> (&str, Option<&str>) {
    match value.split_once('|') {
        Some((key, backend)) => (key, Some(backend)),
        None => (value, None),
    }
}

/// Whether a browser with `user_agent` mishandles `SameSite=None` (it
/// takes it as Strict, or drops the cookie): the agents Chromium's
/// "SameSite=None: Known Incompatible Clients" lists, as ingress-nginx's
/// `same_site.lua` tells them apart.
pub fn same_site_none_incompatible(user_agent: &str) -> bool {
    // iOS 12 (every browser there uses WebKit).
    let ios12 = user_agent.contains("(iPhone; CPU iPhone OS 12_")
        || user_agent.contains("(iPad; CPU OS 12_");
    // Safari, and embedded browsers, on macOS 10.14.
    let macos_1014 = user_agent.contains("Macintosh; Intel Mac OS X 10_14")
        && (user_agent.contains("Version/") && user_agent.contains("Safari")
            || user_agent.ends_with("(KHTML, like Gecko)"));
    // Chrome and Chromium 51 to 66.
    let old_chrome = ["Chrome/", "Chromium/"].iter().any(|browser| {
        user_agent
            .split(browser)
            .nth(1)
            .and_then(|rest| rest.split('.').next())
            .and_then(|major| major.parse::<u32>().ok())
            .is_some_and(|major| (51..=66).contains(&major))
    });
    // UC Browser before 12.13.2.
    let old_uc = user_agent
        .split("UCBrowser/")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .map(|version| {
            let parts: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
            parts.as_slice() < [12, 13, 2].as_slice()
        })
        .unwrap_or(false);
    ios12 || macos_1014 || old_chrome || old_uc
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn read(annotations: &[(&str, &str)]) -> (Option<SessionAffinity>, Vec<String>) {
        let map: BTreeMap<&str, &str> = annotations.iter().copied().collect();
        let mut problems = Vec::new();
        let affinity = read_affinity(|name| map.get(name).copied(), &mut |name, why, effect| {
            problems.push(format!("{name}: {why}: {effect}"))
        });
        (affinity, problems)
    }

    #[test]
    fn ingress_nginx_defaults() {
        let (affinity, problems) = read(&[("affinity", "cookie")]);
        assert!(problems.is_empty());
        assert_eq!(
            affinity,
            Some(SessionAffinity {
                cookie_name: "INGRESSCOOKIE".into(),
                mode: AffinityMode::Balanced,
                canary_sticky: true,
                path: None,
                domain: None,
                same_site: None,
                conditional_same_site_none: false,
                expires: None,
                max_age: None,
                secure: None,
                change_on_failure: false,
            })
        );
        assert_eq!(read(&[("session-cookie-name", "x")]).0, None);
    }

    #[test]
    fn the_user_guide_example_and_bad_values() {
        let (affinity, problems) = read(&[
            ("affinity", "cookie"),
            ("affinity-mode", "persistent"),
            ("session-cookie-name", "route"),
            ("session-cookie-expires", "172800"),
            ("session-cookie-max-age", "172800"),
            ("session-cookie-samesite", "None"),
            ("session-cookie-conditional-samesite-none", "true"),
            ("session-cookie-path", "/app"),
            ("session-cookie-secure", "yes"),
        ]);
        let affinity = affinity.unwrap();
        assert_eq!(affinity.mode, AffinityMode::Persistent);
        assert_eq!(affinity.cookie_name, "route");
        assert_eq!(
            (affinity.expires, affinity.max_age),
            (Some(172800), Some(172800))
        );
        assert_eq!(affinity.same_site, Some(SameSite::None));
        assert!(affinity.conditional_same_site_none);
        assert_eq!(affinity.path.as_deref(), Some("/app"));
        assert_eq!(affinity.secure, None);
        assert_eq!(
            problems,
            ["session-cookie-secure: \"yes\" is neither true nor false: ignored"]
        );
        let (_, problems) = read(&[
            ("affinity", "cookie"),
            ("session-cookie-path", "/a; Domain=evil"),
            ("session-cookie-expires", "1d"),
            ("affinity-mode", "sticky"),
        ]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        let (none, problems) = read(&[("affinity", "ip")]);
        assert_eq!(none, None);
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn cookie_values_and_incompatible_agents() {
        assert_eq!(split_cookie_value("abc|def"), ("abc", Some("def")));
        assert_eq!(split_cookie_value("abc"), ("abc", None));
        for agent in [
            "Mozilla/5.0 (iPhone; CPU iPhone OS 12_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.0 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/64.0.3282.140 Safari/537.36",
            "Mozilla/5.0 (Linux; U; Android 8.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 UCBrowser/12.10.8.1172 Mobile Safari/537.36",
        ] {
            assert!(same_site_none_incompatible(agent), "{agent}");
        }
        for agent in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "curl/7.88.1",
        ] {
            assert!(!same_site_none_incompatible(agent), "{agent}");
        }
    }
}
