//! Canary releases as ingress-nginx has them: a second Ingress with
//! `canary: "true"` for the same host, path and path type as a main
//! Ingress sends some of that route's requests to its own backend instead.
//! Which ones is decided per request, in ingress-nginx's order (its
//! `balancer.lua`, `route_to_alternative_balancer`):
//!
//! 1. `canary-by-header`: when the request has that header, a
//!    `canary-by-header-value` equal to it, or a `canary-by-header-pattern`
//!    matching it, selects the canary; without either, the value `always`
//!    selects it and `never` the main backend; anything else goes on;
//! 2. `canary-by-cookie`: the value `always` selects the canary, `never`
//!    the main backend, anything else goes on;
//! 3. `canary-weight` out of `canary-weight-total` (default 100) requests
//!    at random go to the canary.
//!
//! The canary Ingress's other annotations are not applied: the main
//! route's policy applies to both, as in ingress-nginx. The pattern is
//! compiled once, when the configuration is applied.

use std::fmt;

use regex::Regex;

use crate::{backend::Backend, object::ObjectKey};

/// The requests a canary takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryRule {
    /// `canary-by-header` and what its value must be.
    pub header: Option<CanaryHeader>,
    /// `canary-by-cookie`: the cookie whose `always` or `never` decides.
    pub cookie: Option<String>,
    /// `canary-weight`: requests out of `weight_total` sent to the canary.
    pub weight: u32,
    /// `canary-weight-total` (at least 100, as ingress-nginx uses it).
    pub weight_total: u32,
}

/// `canary-by-header` with what decides on its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryHeader {
    /// The header's name, lower case.
    pub name: String,
    /// How its value is read.
    pub value: HeaderCondition,
}

/// How a `canary-by-header` value selects the canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderCondition {
    /// `always` selects the canary, `never` the main backend.
    AlwaysNever,
    /// `canary-by-header-value`: exactly this value selects the canary.
    Equals(String),
    /// `canary-by-header-pattern`: a value the regex finds a match in.
    Pattern(CanaryPattern),
}

/// A `canary-by-header-pattern`, compiled.
#[derive(Clone)]
pub struct CanaryPattern {
    source: String,
    regex: Regex,
}

impl CanaryPattern {
    /// Compiles `source` (not anchored, as nginx's `ngx.re.match`).
    pub fn compile(source: &str) -> Result<Self, String> {
        let regex = regex::RegexBuilder::new(source)
            .size_limit(1 << 20)
            .build()
            .map_err(|error| format!("{source:?} is not a valid regex: {error}"))?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }

    /// Whether the pattern matches somewhere in `value`.
    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

impl PartialEq for CanaryPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for CanaryPattern {}

impl fmt::Debug for CanaryPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CanaryPattern({:?})", self.source)
    }
}

/// What a request brings to the decision.
pub trait CanaryRequest {
    /// The first value of the header `name` (lower case), if it is text.
    fn header(&self, name: &str) -> Option<&str>;
    /// The value of the cookie `name`, if the request sends it.
    fn cookie(&self, name: &str) -> Option<&str>;
}

impl CanaryRule {
    /// Whether `request` goes to the canary; `draw` gives a number from 1
    /// to its argument, uniformly (nginx's `math.random(n)`).
    pub fn selects(&self, request: &impl CanaryRequest, draw: impl FnOnce(u32) -> u32) -> bool {
        if let Some(header) = &self.header
            && let Some(value) = request.header(&header.name)
        {
            match &header.value {
                HeaderCondition::Equals(expected) if value == expected => return true,
                HeaderCondition::Pattern(pattern) if pattern.is_match(value) => return true,
                HeaderCondition::AlwaysNever if value == "always" => return true,
                HeaderCondition::AlwaysNever if value == "never" => return false,
                _ => {}
            }
        }
        if let Some(cookie) = &self.cookie
            && let Some(value) = request.cookie(cookie)
        {
            match value {
                "always" => return true,
                "never" => return false,
                _ => {}
            }
        }
        self.weight > 0 && draw(self.weight_total) <= self.weight
    }

    /// The rule for a person: `header X-Canary=always, weight 10/100`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(header) = &self.header {
            parts.push(match &header.value {
                HeaderCondition::AlwaysNever => format!("header {}: always|never", header.name),
                HeaderCondition::Equals(value) => format!("header {}={value}", header.name),
                HeaderCondition::Pattern(pattern) => {
                    format!("header {}~{}", header.name, pattern.source)
                }
            });
        }
        if let Some(cookie) = &self.cookie {
            parts.push(format!("cookie {cookie}: always|never"));
        }
        parts.push(format!("weight {}/{}", self.weight, self.weight_total));
        parts.join(", ")
    }
}

/// The canary of one route: which Ingress it comes from, the requests it
/// takes and where they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryRoute {
    /// The canary Ingress.
    pub ingress: ObjectKey,
    /// Which requests it takes.
    pub rule: std::sync::Arc<CanaryRule>,
    /// Where they go.
    pub backend: Backend,
}

/// The annotations (without prefix) that configure a canary.
pub const CANARY_ANNOTATIONS: [&str; 7] = [
    "canary",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "canary-weight",
    "canary-weight-total",
];

/// Reads the canary annotations through `get` (an annotation's value by
/// its name without prefix). `Ok(None)`: not a canary. Values that cannot
/// be read go to `invalid(name, why, effect)` with what is done instead,
/// as ingress-nginx falls back on each one's default; canary-* without
/// `canary: "true"` is no canary at all (ingress-nginx's "configured but
/// not enabled"), reported on `canary`.
pub fn read_canary<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
    invalid: &mut dyn FnMut(&str, String, &str),
) -> Option<CanaryRule> {
    let enabled = match get("canary").map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(value) if value == "true" => true,
        Some(value) if value == "false" => false,
        Some(value) => {
            invalid(
                "canary",
                format!("{value:?} is neither true nor false"),
                "not a canary",
            );
            false
        }
    };
    let number = |name: &str, default: u32, invalid: &mut dyn FnMut(&str, String, &str)| {
        let value = get(name)?;
        match value.trim().parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                invalid(
                    name,
                    format!("{value:?} is not a whole number"),
                    &format!("{default} is used"),
                );
                None
            }
        }
    };
    let weight = number("canary-weight", 0, invalid);
    let weight_total = number("canary-weight-total", 100, invalid);
    let text = |name: &str| get(name).map(str::trim).filter(|v| !v.is_empty());
    let header_name = text("canary-by-header");
    let header_value = text("canary-by-header-value");
    let header_pattern = text("canary-by-header-pattern");
    let cookie = text("canary-by-cookie");
    if !enabled {
        let configured = weight.is_some_and(|w| w > 0)
            || header_name.is_some()
            || header_value.is_some()
            || header_pattern.is_some()
            || cookie.is_some();
        if configured && get("canary").is_none_or(|v| v.trim().eq_ignore_ascii_case("false")) {
            invalid(
                "canary",
                "canary-* annotations are set but canary is not \"true\"".to_owned(),
                "not a canary (the Ingress is served as any other)",
            );
        }
        return None;
    }
    let header = match header_name {
        None => {
            for (name, set) in [
                ("canary-by-header-value", header_value),
                ("canary-by-header-pattern", header_pattern),
            ] {
                if set.is_some() {
                    invalid(name, "canary-by-header is not set".to_owned(), "ignored");
                }
            }
            None
        }
        Some(name) => {
            let name = name.to_ascii_lowercase();
            let valid = http_token(&name);
            if !valid {
                invalid(
                    "canary-by-header",
                    format!("{name:?} is not a header name"),
                    "ignored",
                );
            }
            let value = match (header_value, header_pattern) {
                (Some(value), pattern) => {
                    if pattern.is_some() {
                        invalid(
                            "canary-by-header-pattern",
                            "canary-by-header-value is set too and wins".to_owned(),
                            "ignored",
                        );
                    }
                    HeaderCondition::Equals(value.to_owned())
                }
                (None, Some(pattern)) => match CanaryPattern::compile(pattern) {
                    Ok(pattern) => HeaderCondition::Pattern(pattern),
                    Err(why) => {
                        // nginx fails the match at request time and sends
                        // the request to the main backend: a pattern that
                        // never matches, then always/never.
                        invalid(
                            "canary-by-header-pattern",
                            why,
                            "the header selects the canary only by always/never",
                        );
                        HeaderCondition::AlwaysNever
                    }
                },
                (None, None) => HeaderCondition::AlwaysNever,
            };
            valid.then_some(CanaryHeader { name, value })
        }
    };
    let cookie = cookie.filter(|name| {
        let valid = http_token(name);
        if !valid {
            invalid(
                "canary-by-cookie",
                format!("{name:?} is not a cookie name"),
                "ignored",
            );
        }
        valid
    });
    let weight_total = match weight_total {
        Some(total) if total < 100 => {
            invalid(
                "canary-weight-total",
                format!("{total} is below 100"),
                "100 is used, as ingress-nginx does",
            );
            100
        }
        Some(total) => total,
        None => 100,
    };
    Some(CanaryRule {
        header,
        cookie: cookie.map(str::to_owned),
        weight: weight.unwrap_or(0),
        weight_total,
    })
}

/// Whether `name` is an HTTP token (a header or cookie name).
fn http_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Header or cookie names and values.
    type Pairs<'a> = &'a [(&'a str, &'a str)];

    struct Request {
        headers: BTreeMap<&'static str, &'static str>,
        cookies: BTreeMap<&'static str, &'static str>,
    }

    impl CanaryRequest for Request {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).copied()
        }
        fn cookie(&self, name: &str) -> Option<&str> {
            self.cookies.get(name).copied()
        }
    }

    fn request(
        headers: &[(&'static str, &'static str)],
        cookies: &[(&'static str, &'static str)],
    ) -> Request {
        Request {
            headers: headers.iter().copied().collect(),
            cookies: cookies.iter().copied().collect(),
        }
    }

    fn rule(annotations: &[(&str, &str)]) -> (Option<CanaryRule>, Vec<String>) {
        let map: BTreeMap<&str, &str> = annotations.iter().copied().collect();
        let mut problems = Vec::new();
        let rule = read_canary(|name| map.get(name).copied(), &mut |name, why, effect| {
            problems.push(format!("{name}: {why}: {effect}"))
        });
        (rule, problems)
    }

    /// Whether `request` picks the canary when the draw is `draw`.
    fn picks(rule: &CanaryRule, request: &Request, draw: u32) -> bool {
        rule.selects(request, |total| draw.min(total))
    }

    #[test]
    fn ingress_nginx_order_header_then_cookie_then_weight() {
        let (rule, problems) = rule(&[
            ("canary", "true"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-cookie", "canary"),
            ("canary-weight", "10"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        let rule = rule.unwrap();
        // (headers, cookies, draw, canary?)
        let table: [(Pairs, Pairs, u32, bool); 9] = [
            (&[("x-canary", "always")], &[("canary", "never")], 100, true),
            (&[("x-canary", "never")], &[("canary", "always")], 1, false),
            // Another header value goes on to the cookie, then the weight.
            (&[("x-canary", "yes")], &[("canary", "always")], 100, true),
            (&[("x-canary", "yes")], &[], 10, true),
            (&[("x-canary", "yes")], &[], 11, false),
            (&[], &[("canary", "never")], 1, false),
            (&[], &[("canary", "other")], 1, true),
            (&[], &[], 10, true),
            (&[], &[], 11, false),
        ];
        for (headers, cookies, draw, expected) in table {
            let request = request(headers, cookies);
            assert_eq!(
                picks(&rule, &request, draw),
                expected,
                "{headers:?} {cookies:?} {draw}"
            );
        }
    }

    #[test]
    fn a_header_value_or_pattern_selects_and_anything_else_goes_on() {
        let (value, _) = rule(&[
            ("canary", "true"),
            ("canary-by-header", "Region"),
            ("canary-by-header-value", "us-east"),
        ]);
        let value = value.unwrap();
        assert!(picks(&value, &request(&[("region", "us-east")], &[]), 100));
        // A mismatch is not "never": the weight (0 here) decides.
        assert!(!picks(&value, &request(&[("region", "always")], &[]), 1));
        let (pattern, problems) = rule(&[
            ("canary", "true"),
            ("canary-by-header", "Region"),
            ("canary-by-header-pattern", "^us-.*"),
            ("canary-weight", "100"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        let pattern = pattern.unwrap();
        assert!(picks(
            &pattern,
            &request(&[("region", "us-west")], &[]),
            100
        ));
        assert!(
            picks(&pattern, &request(&[("region", "eu")], &[]), 100),
            "weight 100 of 100"
        );
    }

    #[test]
    fn weight_zero_never_and_full_weight_always() {
        let (zero, _) = rule(&[("canary", "true")]);
        let zero = zero.unwrap();
        assert!(!picks(&zero, &request(&[], &[]), 1));
        let (all, _) = rule(&[
            ("canary", "true"),
            ("canary-weight", "5"),
            ("canary-weight-total", "5"),
        ]);
        let all = all.unwrap();
        // ingress-nginx takes a total below 100 as 100.
        assert_eq!(all.weight_total, 100);
        assert!(!picks(&all, &request(&[], &[]), 6));
        let (thousand, _) = rule(&[
            ("canary", "true"),
            ("canary-weight", "1"),
            ("canary-weight-total", "1000"),
        ]);
        let thousand = thousand.unwrap();
        assert!(picks(&thousand, &request(&[], &[]), 1));
        assert!(!picks(&thousand, &request(&[], &[]), 2));
    }

    #[test]
    fn canary_settings_without_canary_true_are_no_canary_and_reported() {
        let (rule_, problems) = rule(&[("canary-weight", "50")]);
        assert_eq!(rule_, None);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("canary:"), "{problems:?}");
        let (none, problems) = rule(&[]);
        assert_eq!(none, None);
        assert!(problems.is_empty());
    }

    #[test]
    fn unreadable_values_fall_back_as_ingress_nginx_does_and_are_reported() {
        let (rule_, problems) = rule(&[
            ("canary", "true"),
            ("canary-weight", "ten"),
            ("canary-by-header", "X Bad"),
            ("canary-by-header-value", "v"),
            ("canary-by-cookie", "ok"),
        ]);
        let rule_ = rule_.unwrap();
        assert_eq!(rule_.weight, 0);
        assert_eq!(rule_.header, None);
        assert_eq!(rule_.cookie.as_deref(), Some("ok"));
        assert_eq!(problems.len(), 2, "{problems:?}");
        let (broken, problems) = rule(&[
            ("canary", "true"),
            ("canary-by-header", "x"),
            ("canary-by-header-pattern", "(unclosed"),
        ]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let broken = broken.unwrap();
        assert!(!picks(&broken, &request(&[("x", "(unclosed")], &[]), 1));
        assert!(picks(&broken, &request(&[("x", "always")], &[]), 1));
        assert_eq!(broken.describe(), "header x: always|never, weight 0/100");
    }
}
