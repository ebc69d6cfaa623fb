//! Paths: the path types of the Ingress spec, the checks a rule's path must
//! pass, and the key a path is stored under for lookup.

use std::{borrow::Cow, fmt, str::FromStr};

/// How a rule's path is compared with the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathType {
    /// The request path equals the rule's path, case-sensitively.
    Exact,
    /// The rule's path, split on `/`, is an element-wise prefix of the
    /// request path (a trailing `/` in the rule is ignored).
    Prefix,
    /// Up to the implementation: here the same as [`PathType::Prefix`].
    ImplementationSpecific,
}

impl PathType {
    /// The `pathType` value.
    pub fn as_str(self) -> &'static str {
        match self {
            PathType::Exact => "Exact",
            PathType::Prefix => "Prefix",
            PathType::ImplementationSpecific => "ImplementationSpecific",
        }
    }

    /// Whether this type matches by element-wise prefix.
    pub fn is_prefix(self) -> bool {
        self != PathType::Exact
    }
}

impl fmt::Display for PathType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PathType {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "Exact" => Ok(PathType::Exact),
            "Prefix" => Ok(PathType::Prefix),
            "ImplementationSpecific" => Ok(PathType::ImplementationSpecific),
            "" => Err("pathType is missing".to_owned()),
            other => Err(format!(
                "pathType {other:?} is not Exact, Prefix or ImplementationSpecific"
            )),
        }
    }
}

/// A rule's path that passed the checks, with the key it is looked up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathRule {
    /// The path as written (`/` for an empty ImplementationSpecific path).
    pub path: String,
    /// The path type.
    pub path_type: PathType,
    /// The lookup key: the path itself for Exact; for the prefix types the
    /// path without one trailing `/`, so `/` becomes the empty key.
    pub key: String,
}

/// Sequences the API server rejects in Exact and Prefix paths.
const INVALID_SEQUENCES: [&str; 5] = ["//", "/./", "/../", "%2f", "%2F"];
/// Suffixes the API server rejects in Exact and Prefix paths.
const INVALID_SUFFIXES: [&str; 2] = ["/..", "/."];
/// Characters that mean a regular expression (or a query) to other
/// controllers; we match literally, so such a path would never do what its
/// author meant.
const REGEX_CHARACTERS: &[char] = &[
    '^', '$', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '\\', '#',
];

impl PathRule {
    /// Checks a rule's `path` and `pathType`. Exact and Prefix paths must be
    /// absolute and must not contain `//`, `/./`, `/../`, `%2f`, end in
    /// `/.` or `/..` (the API server's rules), nor regex characters,
    /// whitespace or control characters. ImplementationSpecific paths, being
    /// Prefix here, pass the same checks, except that an empty one means `/`.
    pub fn parse(path: Option<&str>, path_type: &str) -> Result<PathRule, String> {
        Self::parse_as(path, path_type, false)
    }

    /// [`PathRule::parse`] for an Ingress whose paths may be regexes
    /// (`use-regex`, `rewrite-target`): the regex characters are allowed.
    pub fn parse_as(path: Option<&str>, path_type: &str, regex: bool) -> Result<PathRule, String> {
        let path_type: PathType = path_type
            .parse()
            .map_err(|why| format!("path {:?}: {why}", path.unwrap_or_default()))?;
        let path = match (path.unwrap_or_default(), path_type) {
            ("", PathType::ImplementationSpecific) => "/",
            ("", _) => return Err(format!("a {path_type} path must not be empty")),
            (path, _) => path,
        };
        check_path(path, regex).map_err(|why| format!("{path_type} path {path:?} {why}"))?;
        let key = if path_type.is_prefix() {
            path.strip_suffix('/').unwrap_or(path)
        } else {
            path
        };
        Ok(PathRule {
            path: path.to_owned(),
            path_type,
            key: key.to_owned(),
        })
    }

    /// Whether a request path (without the query) matches this rule on its
    /// own, ignoring precedence.
    pub fn matches(&self, request_path: &str) -> bool {
        if self.path_type.is_prefix() {
            prefix_key_matches(&self.key, request_path)
        } else {
            self.key == request_path
        }
    }

    /// How specific the rule is: longer keys win, and Exact beats a prefix
    /// type with the same key length.
    pub fn specificity(&self) -> (usize, bool) {
        (self.key.len(), self.path_type == PathType::Exact)
    }
}

fn check_path(path: &str, regex: bool) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must be an absolute path (start with '/')".to_owned());
    }
    if let Some(sequence) = INVALID_SEQUENCES.iter().find(|s| path.contains(*s)) {
        return Err(format!("must not contain {sequence:?}"));
    }
    if let Some(suffix) = INVALID_SUFFIXES.iter().find(|s| path.ends_with(*s)) {
        return Err(format!("must not end with {suffix:?}"));
    }
    if let Some(c) = path
        .chars()
        .find(|c| !regex && REGEX_CHARACTERS.contains(c))
    {
        return Err(format!(
            "must not contain {c:?}: paths match literally, not as regular expressions"
        ));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".to_owned());
    }
    Ok(())
}

/// Whether a prefix key (a Prefix path without its trailing `/`) matches a
/// request path element-wise: the path equals the key or continues it with
/// `/`.
pub(crate) fn prefix_key_matches(key: &str, request_path: &str) -> bool {
    request_path
        .strip_prefix(key)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The path routing sees: the request target without the query string (and
/// fragment), normalised as nginx does before it matches locations: `%XX`
/// escapes of unreserved characters decoded, `//` merged, `.` and `..`
/// segments resolved (never above `/`). So `/foo/../admin` is routed as
/// `/admin`, as ingress-nginx routes it, and cannot reach `/foo`'s backend.
/// An empty path is `/`. Paths that need none of this are borrowed.
pub fn request_path(target: &str) -> Cow<'_, str> {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    let path = &target[..end];
    if path.is_empty() {
        return Cow::Borrowed("/");
    }
    let needs_work = path.contains('%')
        || path.contains("//")
        || path.contains("/./")
        || path.contains("/../")
        || path.ends_with("/.")
        || path.ends_with("/..");
    // Only origin-form paths are normalised (`*` of `OPTIONS *` stays).
    if !needs_work || !path.starts_with('/') {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut normalised = String::with_capacity(decoded.len());
    for segment in &segments {
        normalised.push('/');
        normalised.push_str(segment);
    }
    // A trailing slash (or dot segment) of the request is kept.
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if normalised.is_empty() || trailing {
        normalised.push('/');
    }
    Cow::Owned(normalised)
}

/// Decodes `%XX` escapes of unreserved characters (RFC 3986: letters,
/// digits, `-._~`); other escapes (`%2F` among them) stay as they are.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = path
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            && (byte.is_ascii_alphanumeric() || b"-._~".contains(&byte))
        {
            out.push(byte as char);
            i += 3;
            continue;
        }
        let ch = path[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The Prefix rule as the spec words it: split both on `/`, drop the
    /// empty element a trailing `/` of the rule leaves, then every rule
    /// element must equal the request element at the same place.
    fn reference_prefix_match(rule: &str, request: &str) -> bool {
        let mut rule: Vec<&str> = rule.split('/').collect();
        if rule.len() > 1 && rule.last() == Some(&"") {
            rule.pop();
        }
        let request: Vec<&str> = request.split('/').collect();
        rule.len() <= request.len() && rule.iter().zip(&request).all(|(a, b)| a == b)
    }

    fn rule(path: &str, path_type: &str) -> PathRule {
        PathRule::parse(Some(path), path_type).unwrap()
    }

    /// The examples table of the Kubernetes Ingress documentation, plus a
    /// few of ours.
    #[test]
    fn matching_examples_from_the_spec() {
        let cases = [
            ("Prefix", "/", "/aaa/bbb", true),
            ("Prefix", "/", "/", true),
            ("Prefix", "/foo", "/foo", true),
            ("Prefix", "/foo", "/foo/", true),
            ("Prefix", "/foo", "/foo/bar", true),
            ("Prefix", "/foo", "/foobar", false),
            ("Prefix", "/aaa/bb", "/aaa/bbb", false),
            ("Prefix", "/aaa/bbb", "/aaa/bbb", true),
            ("Prefix", "/aaa/bbb/", "/aaa/bbb", true),
            ("Prefix", "/aaa/bbb", "/aaa/bbb/", true),
            ("Prefix", "/aaa/bbb", "/aaa/bbb/ccc", true),
            ("Prefix", "/aaa/bbb", "/aaa/bbbxyz", false),
            ("Prefix", "/aaa", "/ccc", false),
            ("Prefix", "/Foo", "/foo", false),
            ("Exact", "/foo", "/foo", true),
            ("Exact", "/foo", "/bar", false),
            ("Exact", "/foo", "/foo/", false),
            ("Exact", "/foo/", "/foo", false),
            ("Exact", "/foo", "/Foo", false),
            ("ImplementationSpecific", "/foo", "/foo/bar", true),
            ("ImplementationSpecific", "/foo", "/foobar", false),
        ];
        for (path_type, path, request, expected) in cases {
            assert_eq!(
                rule(path, path_type).matches(request),
                expected,
                "{path_type} {path} vs {request}"
            );
        }
    }

    #[test]
    fn path_checks() {
        /// (path, pathType, expected (path as kept, lookup key) or `Err`)
        type Case<'a> = (Option<&'a str>, &'a str, Result<(&'a str, &'a str), ()>);
        let cases: &[Case] = &[
            (Some("/"), "Prefix", Ok(("/", ""))),
            (Some("/foo/"), "Prefix", Ok(("/foo/", "/foo"))),
            (Some("/foo/"), "Exact", Ok(("/foo/", "/foo/"))),
            (
                Some("/a-b_c.d~e/%20"),
                "Exact",
                Ok(("/a-b_c.d~e/%20", "/a-b_c.d~e/%20")),
            ),
            (None, "ImplementationSpecific", Ok(("/", ""))),
            (Some(""), "ImplementationSpecific", Ok(("/", ""))),
            (
                Some("/api/"),
                "ImplementationSpecific",
                Ok(("/api/", "/api")),
            ),
            (None, "Prefix", Err(())),
            (Some(""), "Exact", Err(())),
            (Some("foo"), "Prefix", Err(())),
            (Some("foo"), "ImplementationSpecific", Err(())),
            (Some("/foo"), "", Err(())),
            (Some("/foo"), "prefix", Err(())),
            (Some("/foo//bar"), "Prefix", Err(())),
            (Some("/foo/./bar"), "Exact", Err(())),
            (Some("/foo/../bar"), "Prefix", Err(())),
            (Some("/foo%2fbar"), "Prefix", Err(())),
            (Some("/foo%2Fbar"), "Prefix", Err(())),
            (Some("/foo/.."), "Prefix", Err(())),
            (Some("/foo/."), "Exact", Err(())),
            (Some("/foo/.*"), "Prefix", Err(())),
            (Some("/api/v[0-9]+"), "ImplementationSpecific", Err(())),
            (Some("/(a|b)"), "Exact", Err(())),
            (Some("/^foo$"), "Prefix", Err(())),
            (Some("/foo?x=1"), "Exact", Err(())),
            (Some("/foo bar"), "Prefix", Err(())),
        ];
        for (path, path_type, expected) in cases {
            let parsed = PathRule::parse(*path, path_type);
            match (parsed, expected) {
                (Ok(rule), Ok((written, key))) => {
                    assert_eq!((rule.path.as_str(), rule.key.as_str()), (*written, *key));
                }
                (Err(_), Err(())) => {}
                (got, _) => panic!("{path:?} {path_type}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn specificity_prefers_longer_then_exact() {
        assert!(rule("/foo", "Exact").specificity() > rule("/foo", "Prefix").specificity());
        assert!(rule("/foo/bar", "Prefix").specificity() > rule("/foo", "Exact").specificity());
        assert_eq!(
            rule("/foo/", "Prefix").specificity(),
            rule("/foo", "Prefix").specificity()
        );
    }

    #[test]
    fn request_paths_are_normalised_like_nginx() {
        for (target, expected) in [
            ("/foo/../admin", "/admin"),
            ("/foo/%2e%2e/admin", "/admin"),
            ("/foo/%2E%2E/admin?x=1", "/admin"),
            ("//foo///bar", "/foo/bar"),
            ("/foo/./bar/", "/foo/bar/"),
            ("/../../etc", "/etc"),
            ("/a/b/..", "/a/"),
            ("/a/%7Euser", "/a/~user"),
            ("/a%2Fb", "/a%2Fb"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/plain/path", "/plain/path"),
        ] {
            assert_eq!(request_path(target), expected, "{target}");
        }
        assert!(matches!(request_path("/plain/path?q"), Cow::Borrowed(_)));
    }

    #[test]
    fn request_paths_lose_the_query() {
        let cases = [
            ("/foo?a=b", "/foo"),
            ("/foo#x", "/foo"),
            ("/foo", "/foo"),
            ("", "/"),
            ("?a", "/"),
            ("/a/b/?c?d", "/a/b/"),
        ];
        for (target, expected) in cases {
            assert_eq!(request_path(target), expected, "{target}");
        }
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        // A small alphabet makes shared elements, trailing slashes and
        // near-misses (`/a` against `/ab`) likely.
        proptest::collection::vec(prop_oneof!["/", "a", "b", "ab"], 0..8)
            .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn prefix_matching_agrees_with_the_element_wise_reference(
            rule_path in path_strategy(),
            request in path_strategy(),
        ) {
            let rule_path = format!("/{rule_path}");
            let request = format!("/{request}");
            // The double-slash check would reject most generated rules; the
            // matcher itself must still agree on them.
            let key = rule_path.strip_suffix('/').unwrap_or(&rule_path);
            prop_assert_eq!(
                prefix_key_matches(key, &request),
                reference_prefix_match(&rule_path, &request),
                "rule {} request {}", rule_path, request
            );
        }

        #[test]
        fn parsing_any_path_never_panics(path in any::<String>(), kind in "[A-Za-z]{0,24}") {
            let _ = PathRule::parse(Some(&path), &kind);
            let _ = request_path(&path);
        }
    }
}
