//! Hosts: the host of a rule (exact, `*.` wildcard or none) and the host of
//! a request as the lookup sees it.

use std::{borrow::Cow, fmt, net::IpAddr};

/// The host part of an Ingress rule, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPattern {
    /// `foo.example.com`: that host only.
    Exact(String),
    /// `*.example.com`, stored as the suffix `example.com`: any host with
    /// exactly one more DNS label in front.
    Wildcard(String),
    /// No host: every request whose host no other rule names.
    Any,
}

impl HostPattern {
    /// Reads a rule's `host` field: `None` or empty means [`HostPattern::Any`].
    /// The host is lower-cased; it must be a DNS name (not an IP address),
    /// optionally with `*.` as its whole first label.
    pub fn parse(host: Option<&str>) -> Result<HostPattern, String> {
        let host = match host {
            None => return Ok(HostPattern::Any),
            Some("") => return Ok(HostPattern::Any),
            Some(host) => host.to_ascii_lowercase(),
        };
        if host.parse::<IpAddr>().is_ok() {
            return Err(format!(
                "host {host:?} must be a DNS name, not an IP address"
            ));
        }
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(suffix) => (true, suffix),
            None => (false, host.as_str()),
        };
        if let Err(why) = check_dns_subdomain(name) {
            let what = if wildcard { "wildcard host" } else { "host" };
            return Err(format!("{what} {host:?} {why}"));
        }
        Ok(if wildcard {
            HostPattern::Wildcard(name.to_owned())
        } else {
            HostPattern::Exact(host)
        })
    }

    /// Whether a request host (already normalised by [`request_host`])
    /// matches this pattern on its own, ignoring precedence.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(exact) => exact == host,
            HostPattern::Wildcard(suffix) => wildcard_suffix(host) == Some(suffix.as_str()),
            HostPattern::Any => true,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(host) => f.write_str(host),
            HostPattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

/// The suffix a wildcard pattern would need to match `host`: everything
/// after the first label, when that label is not empty.
pub(crate) fn wildcard_suffix(host: &str) -> Option<&str> {
    let (label, suffix) = host.split_once('.')?;
    (!label.is_empty() && !suffix.is_empty()).then_some(suffix)
}

/// An RFC 1123 subdomain as Kubernetes validates it: labels of lower-case
/// letters, digits and `-`, not starting or ending with `-`, at most 63
/// characters each and 253 in all.
fn check_dns_subdomain(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > 253 {
        return Err("is longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("has an empty label");
        }
        if label.len() > 63 {
            return Err("has a label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("may contain only letters, digits, '-' and '.' (and '*.' in front)");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a label starting or ending with '-'");
        }
    }
    Ok(())
}

/// The host of a request as routing sees it: from a `Host` header or an
/// `:authority`, without the port (also after an IPv6 literal such as
/// `[::1]:80`, which becomes `::1`), without a trailing dot, lower-cased.
/// Borrows when nothing changes.
pub fn request_host(host: &str) -> Cow<'_, str> {
    let host = host.trim();
    let host = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal: the port, if any, follows the bracket.
        rest.split_once(']').map_or(rest, |(inside, _)| inside)
    } else {
        match host.rsplit_once(':') {
            // Two or more colons without brackets: a bare IPv6 address.
            Some((name, _)) if name.contains(':') => host,
            Some((name, _)) => name,
            None => host,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_hosts() {
        let cases: &[(Option<&str>, Result<HostPattern, ()>)] = &[
            (None, Ok(HostPattern::Any)),
            (Some(""), Ok(HostPattern::Any)),
            (Some("foo.com"), Ok(HostPattern::Exact("foo.com".into()))),
            (Some("Foo.COM"), Ok(HostPattern::Exact("foo.com".into()))),
            (
                Some("localhost"),
                Ok(HostPattern::Exact("localhost".into())),
            ),
            (
                Some("*.foo.com"),
                Ok(HostPattern::Wildcard("foo.com".into())),
            ),
            (
                Some("*.Foo.com"),
                Ok(HostPattern::Wildcard("foo.com".into())),
            ),
            (Some("*"), Err(())),
            (Some("*.*.foo.com"), Err(())),
            (Some("foo.*.com"), Err(())),
            (Some("*foo.com"), Err(())),
            (Some("foo..com"), Err(())),
            (Some("-foo.com"), Err(())),
            (Some("foo_bar.com"), Err(())),
            (Some("foo.com:80"), Err(())),
            (Some("10.0.0.1"), Err(())),
            (Some("::1"), Err(())),
        ];
        for (host, expected) in cases {
            assert_eq!(
                HostPattern::parse(*host).map_err(|_| ()),
                *expected,
                "{host:?}"
            );
        }
    }

    #[test]
    fn request_hosts() {
        let cases = [
            ("foo.com", "foo.com"),
            ("FOO.com", "foo.com"),
            ("foo.com:8080", "foo.com"),
            ("foo.com:", "foo.com"),
            ("foo.com.", "foo.com"),
            ("Foo.Com.:443", "foo.com"),
            ("[::1]:80", "::1"),
            ("[::1]", "::1"),
            ("[2001:DB8::1]:8443", "2001:db8::1"),
            ("::1", "::1"),
            ("10.0.0.1:80", "10.0.0.1"),
            ("", ""),
            (" foo.com ", "foo.com"),
        ];
        for (input, expected) in cases {
            assert_eq!(request_host(input), expected, "{input:?}");
        }
    }

    #[test]
    fn request_host_borrows_when_nothing_changes() {
        assert!(matches!(
            request_host("foo.com:80"),
            Cow::Borrowed("foo.com")
        ));
    }

    #[test]
    fn wildcards_match_exactly_one_label() {
        let wildcard = HostPattern::parse(Some("*.foo.com")).unwrap();
        let cases = [
            ("bar.foo.com", true),
            ("foo.com", false),
            ("baz.bar.foo.com", false),
            (".foo.com", false),
            ("barfoo.com", false),
            ("bar.foo.com.evil", false),
        ];
        for (host, expected) in cases {
            assert_eq!(wildcard.matches(host), expected, "{host}");
        }
        assert!(HostPattern::Any.matches("anything"));
        assert!(HostPattern::Exact("foo.com".into()).matches("foo.com"));
    }

    #[test]
    fn patterns_display_as_written() {
        for host in ["foo.com", "*.foo.com"] {
            assert_eq!(HostPattern::parse(Some(host)).unwrap().to_string(), host);
        }
        assert_eq!(HostPattern::Any.to_string(), "*");
    }
}
