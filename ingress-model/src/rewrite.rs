//! Regex paths and `rewrite-target`, as ingress-nginx has them: when any
//! Ingress of a host sets `use-regex: "true"` or `rewrite-target`, every
//! Prefix path of that host is a case-insensitive regex anchored at the
//! start of the path (`location ~* "^<path>"`), tried longest path first;
//! Exact paths stay exact and are tried before. `rewrite-target` replaces
//! the whole path with its template, `$1`-`$9` being the path regex's
//! captures, and the query string is kept. Regexes and templates are
//! compiled when the configuration is applied, never at request time.

use std::fmt;

use regex::Regex;

/// A path compiled as ingress-nginx compiles it on a regex host.
#[derive(Clone)]
pub struct PathRegex {
    source: String,
    regex: Regex,
}

impl PathRegex {
    /// `(?i)^<path>`; an error for a path that is not a valid regex.
    pub fn compile(path: &str) -> Result<Self, String> {
        let source = format!("(?i)^{path}");
        let regex = regex::RegexBuilder::new(&source)
            .size_limit(1 << 20)
            .build()
            .map_err(|error| format!("path {path:?} is not a valid regex: {error}"))?;
        Ok(Self {
            source: path.to_owned(),
            regex,
        })
    }

    /// Whether the request path matches.
    pub fn is_match(&self, path: &str) -> bool {
        self.regex.is_match(path)
    }

    /// The path as written.
    pub fn path(&self) -> &str {
        &self.source
    }
}

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for PathRegex {}

impl fmt::Debug for PathRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathRegex({:?})", self.source)
    }
}

/// One piece of a `rewrite-target`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Piece {
    Text(String),
    Capture(usize),
}

/// A compiled `rewrite-target`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RewriteTarget {
    pieces: Vec<Piece>,
}

impl RewriteTarget {
    /// Parses a target such as `/$2` or `/api/$1/x`: visible ASCII only
    /// (it becomes a request target), `$1` to `$9` for captures.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{text:?} is empty or has spaces, control or non-ASCII characters"
            ));
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek().and_then(|d| d.to_digit(10))) {
                ('$', Some(digit)) if digit > 0 => {
                    chars.next();
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Capture(digit as usize));
                }
                _ => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Self { pieces })
    }

    /// The new request target for `path` (matched by `regex`) and the
    /// request's `query`: the template with the captures filled in (a
    /// capture that did not take part is empty), then the query, after `&`
    /// when the template has one of its own, as nginx's `rewrite` does.
    /// `None` when `regex` does not match `path`.
    pub fn apply(&self, regex: &PathRegex, path: &str, query: Option<&str>) -> Option<String> {
        let captures = regex.regex.captures(path)?;
        let mut target = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => target.push_str(text),
                Piece::Capture(index) => {
                    target.push_str(captures.get(*index).map_or("", |m| m.as_str()))
                }
            }
        }
        if !target.starts_with('/') {
            target.insert(0, '/');
        }
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str(query);
        }
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(path_regex: &str, target: &str, path: &str, query: Option<&str>) -> Option<String> {
        let regex = PathRegex::compile(path_regex).unwrap();
        RewriteTarget::parse(target)
            .unwrap()
            .apply(&regex, path, query)
    }

    #[test]
    fn ingress_nginx_rewrite_examples() {
        // The user guide's: /something(/|$)(.*) with /$2.
        let cases = [
            ("/something", None, Some("/")),
            ("/something/", None, Some("/")),
            ("/something/new", None, Some("/new")),
            ("/something/new", Some("a=1"), Some("/new?a=1")),
            ("/SOMETHING/new", None, Some("/new")),
            ("/somethingelse", None, None),
            ("/other", None, None),
        ];
        for (path, query, expected) in cases {
            assert_eq!(
                rewrite("/something(/|$)(.*)", "/$2", path, query).as_deref(),
                expected,
                "{path}"
            );
        }
        // A plain prefix with a fixed target: everything under it to /.
        assert_eq!(
            rewrite("/app", "/", "/app/x/y", Some("q")).as_deref(),
            Some("/?q")
        );
        // A target with its own query gets the request's after `&`.
        assert_eq!(
            rewrite("/api/(.*)", "/v2/$1?src=edge", "/api/users", Some("page=2")).as_deref(),
            Some("/v2/users?src=edge&page=2")
        );
        // A capture that does not exist is empty; a relative result gets its `/`.
        assert_eq!(rewrite("/x", "$3", "/x", None).as_deref(), Some("/"));
    }

    #[test]
    fn bad_regexes_and_targets_are_refused() {
        assert!(PathRegex::compile("/a(").is_err());
        assert!(PathRegex::compile("/(a{100000})").is_err());
        for bad in ["", "/a b", "/a\r\nX: 1", "/é"] {
            assert!(RewriteTarget::parse(bad).is_err(), "{bad:?}");
        }
        // `$` not followed by 1-9 is text.
        let target = RewriteTarget::parse("/$0/$$/$x").unwrap();
        let regex = PathRegex::compile("/(.*)").unwrap();
        assert_eq!(
            target.apply(&regex, "/q", None).as_deref(),
            Some("/$0/$$/$x")
        );
    }
}
