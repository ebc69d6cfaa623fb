//! What an Ingress's annotations ask of each of its routes, compiled once
//! when the configuration is applied and shared by the routes
//! (`Arc<RoutePolicy>`): who may use them, a redirect instead of the
//! backend, the body size and the upstream timeouts. The proxy only reads
//! it; nothing here is text interpreted at request time.

use std::time::Duration;

use crate::access::SourceRanges;

/// A route's policy; the default asks for nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RoutePolicy {
    /// Only these clients (else 403).
    pub access: Option<SourceRanges>,
    /// Answer with this redirect instead of proxying.
    pub redirect: Option<Redirect>,
    /// Largest request body in bytes (`proxy-body-size`; 0: no limit),
    /// instead of `--proxy-body-size`.
    pub max_body_size: Option<u64>,
    /// `proxy-connect-timeout`, instead of `--proxy-connect-timeout`.
    pub connect_timeout: Option<Duration>,
    /// `proxy-read-timeout`, instead of `--proxy-read-timeout`.
    pub read_timeout: Option<Duration>,
    /// `proxy-send-timeout`, instead of `--proxy-send-timeout`.
    pub send_timeout: Option<Duration>,
}

impl RoutePolicy {
    /// Whether it asks for nothing (routes then carry none).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// A redirect a route answers with (`permanent-redirect`,
/// `temporal-redirect`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Redirect {
    /// The `Location`, an absolute http(s) URL, as written.
    pub location: String,
    /// 300 to 308.
    pub status: u16,
}

impl Redirect {
    /// A redirect to `location`, which must be an absolute `http://` or
    /// `https://` URL with a host and only visible ASCII (it becomes a
    /// header as it is); `status` outside 300-308 becomes `default_status`,
    /// as ingress-nginx does.
    pub fn new(location: &str, status: Option<u16>, default_status: u16) -> Result<Self, String> {
        let location = location.trim();
        let rest = location
            .strip_prefix("https://")
            .or_else(|| location.strip_prefix("http://"))
            .ok_or_else(|| format!("{location:?} is not an http:// or https:// URL"))?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() {
            return Err(format!("{location:?} has no host"));
        }
        if !location.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{location:?} has spaces, control or non-ASCII characters"
            ));
        }
        let status = status
            .filter(|code| (300..=308).contains(code))
            .unwrap_or(default_status);
        Ok(Self {
            location: location.to_owned(),
            status,
        })
    }
}

/// An nginx size (`proxy-body-size`): bytes, or with `k`, `m` or `g`
/// (either case) for KiB, MiB, GiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((at, last)) if last.is_ascii_alphabetic() => (&text[..at], Some(last)),
        _ => (text, None),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (bytes, or a number with k, m or g)"))?;
    let factor: u64 = match unit.map(|u| u.to_ascii_lowercase()) {
        None => 1,
        Some('k') => 1 << 10,
        Some('m') => 1 << 20,
        Some('g') => 1 << 30,
        Some(_) => return Err(format!("{text:?} has an unknown unit (k, m or g)")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A timeout annotation: whole seconds, as ingress-nginx reads them.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{text:?} is not a whole number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_nginx_reads_them() {
        let cases = [
            ("0", 0),
            ("1024", 1024),
            ("8k", 8 << 10),
            ("50m", 50 << 20),
            ("50M", 50 << 20),
            (" 1g ", 1 << 30),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in ["", "m", "-1", "1.5m", "10t", "10mb", "99999999999999g"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seconds_are_whole() {
        assert_eq!(parse_seconds("3600"), Ok(Duration::from_secs(3600)));
        for bad in ["", "1.5", "10s", "-3"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirects_need_an_http_url_and_a_3xx_code() {
        let redirect = Redirect::new("https://www.example.com/new?x=1", None, 301).unwrap();
        assert_eq!(
            (redirect.location.as_str(), redirect.status),
            ("https://www.example.com/new?x=1", 301)
        );
        assert_eq!(
            Redirect::new("http://a.example", Some(308), 301)
                .unwrap()
                .status,
            308
        );
        // Out of range: the default, as ingress-nginx does.
        assert_eq!(
            Redirect::new("http://a.example", Some(200), 301)
                .unwrap()
                .status,
            301
        );
        assert_eq!(
            Redirect::new("http://a.example", Some(309), 302)
                .unwrap()
                .status,
            302
        );
        for bad in [
            "ftp://a.example/",
            "/relative",
            "https://",
            "https:///path",
            "https://a.example/with space",
            "https://a.example/\r\nX-Injected: 1",
            "https://ä.example/",
        ] {
            assert!(Redirect::new(bad, None, 301).is_err(), "{bad:?}");
        }
    }
}
