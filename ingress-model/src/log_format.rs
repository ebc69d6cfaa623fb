//! Access log lines as ingress-nginx writes them: `log-format-upstream`
//! (a template of nginx `$variables`) compiled once, when the ConfigMap
//! changes, into literal text and variables; the proxy fills the variables
//! of each request. Nothing in a format is executed or interpolated into
//! anything but the line.

/// ingress-nginx's default `log-format-upstream` (its `upstreaminfo`).
pub const UPSTREAMINFO: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status \
     $body_bytes_sent \"$http_referer\" \"$http_user_agent\" $request_length $request_time \
     [$proxy_upstream_name] [$proxy_alternative_upstream_name] $upstream_addr \
     $upstream_response_length $upstream_response_time $upstream_status $req_id";

/// A variable of a log format: what one request fills in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogVariable {
    /// `$remote_addr`: the client's address.
    RemoteAddr,
    /// `$remote_port`: the client's port.
    RemotePort,
    /// `$remote_user`: the user of basic authentication.
    RemoteUser,
    /// `$time_local`: `08/Dec/2026:02:12:42 +0000`.
    TimeLocal,
    /// `$time_iso8601`: `2026-12-08T02:12:42+00:00`.
    TimeIso8601,
    /// `$msec`: seconds since the epoch, with milliseconds.
    Msec,
    /// `$request`: `GET /path?query HTTP/1.1`.
    Request,
    /// `$request_method`.
    RequestMethod,
    /// `$request_uri`: the target as sent, query included.
    RequestUri,
    /// `$uri`: the path.
    Uri,
    /// `$args`, `$query_string`: the query, without `?`.
    Args,
    /// `$server_protocol`: `HTTP/1.1`.
    ServerProtocol,
    /// `$scheme`: `http` or `https`.
    Scheme,
    /// `$host`: the request's host, without a port.
    Host,
    /// `$server_name`: the host rule that matched, else `$host`.
    ServerName,
    /// `$status`: the status sent to the client.
    Status,
    /// `$body_bytes_sent`: bytes of the response body sent.
    BodyBytesSent,
    /// `$bytes_sent`: bytes sent, head (estimated) and body.
    BytesSent,
    /// `$request_length`: bytes of the request, head (estimated) and body.
    RequestLength,
    /// `$request_time`: seconds from the request's head to the response's
    /// last byte, with milliseconds.
    RequestTime,
    /// `$proxy_upstream_name`: `namespace-service-port`.
    ProxyUpstreamName,
    /// `$proxy_alternative_upstream_name`: the canary's, when it served.
    ProxyAlternativeUpstreamName,
    /// `$upstream_addr`: the endpoint that answered.
    UpstreamAddr,
    /// `$upstream_status`.
    UpstreamStatus,
    /// `$upstream_response_time`: seconds to the upstream's response head.
    UpstreamResponseTime,
    /// `$upstream_response_length`: bytes of the upstream's body.
    UpstreamResponseLength,
    /// `$req_id`: the request id sent upstream (`X-Request-ID`).
    ReqId,
    /// `$namespace`: the Ingress's namespace.
    Namespace,
    /// `$ingress_name`.
    IngressName,
    /// `$service_name`.
    ServiceName,
    /// `$service_port`.
    ServicePort,
    /// `$http_<name>`: a request header, its name lower case with `-` for
    /// `_`.
    RequestHeader(String),
    /// A variable xdp-ingress does not know: written as `-`.
    Unknown(String),
}

impl LogVariable {
    /// The variable named `name` (without `$`).
    pub fn named(name: &str) -> Self {
        match name {
            "remote_addr" => Self::RemoteAddr,
            "remote_port" => Self::RemotePort,
            "remote_user" => Self::RemoteUser,
            "time_local" => Self::TimeLocal,
            "time_iso8601" => Self::TimeIso8601,
            "msec" => Self::Msec,
            "request" => Self::Request,
            "request_method" => Self::RequestMethod,
            "request_uri" => Self::RequestUri,
            "uri" | "document_uri" => Self::Uri,
            "args" | "query_string" => Self::Args,
            "server_protocol" => Self::ServerProtocol,
            "scheme" => Self::Scheme,
            "host" => Self::Host,
            "server_name" => Self::ServerName,
            "status" => Self::Status,
            "body_bytes_sent" => Self::BodyBytesSent,
            "bytes_sent" => Self::BytesSent,
            "request_length" => Self::RequestLength,
            "request_time" => Self::RequestTime,
            "proxy_upstream_name" => Self::ProxyUpstreamName,
            "proxy_alternative_upstream_name" => Self::ProxyAlternativeUpstreamName,
            "upstream_addr" => Self::UpstreamAddr,
            "upstream_status" => Self::UpstreamStatus,
            "upstream_response_time" => Self::UpstreamResponseTime,
            "upstream_response_length" => Self::UpstreamResponseLength,
            "req_id" => Self::ReqId,
            "namespace" => Self::Namespace,
            "ingress_name" => Self::IngressName,
            "service_name" => Self::ServiceName,
            "service_port" => Self::ServicePort,
            _ => match name.strip_prefix("http_") {
                Some(header) if !header.is_empty() => {
                    Self::RequestHeader(header.to_ascii_lowercase().replace('_', "-"))
                }
                _ => Self::Unknown(name.to_owned()),
            },
        }
    }
}

/// A piece of a log format.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogPart {
    /// Text written as it is.
    Literal(String),
    /// A request's value.
    Variable(LogVariable),
}

/// How variable values are escaped (`log-format-escape-json`,
/// `log-format-escape-none`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum LogEscape {
    /// nginx's default: `"`, `\`, control characters and bytes over 0x7e
    /// as `\xHH`.
    #[default]
    Default,
    /// As the inside of a JSON string.
    Json,
    /// As they are.
    None,
}

impl LogEscape {
    /// Appends `value` to `out`, escaped.
    pub fn push(self, out: &mut String, value: &str) {
        match self {
            Self::None => out.push_str(value),
            Self::Default => {
                for c in value.chars() {
                    if c == '"' || c == '\\' || (c as u32) < 0x20 || (c as u32) > 0x7e {
                        let mut bytes = [0u8; 4];
                        for byte in c.encode_utf8(&mut bytes).bytes() {
                            push_hex(out, "\\x", byte);
                        }
                    } else {
                        out.push(c);
                    }
                }
            }
            Self::Json => {
                for c in value.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        c if (c as u32) < 0x20 => {
                            out.push_str("\\u00");
                            push_hex(out, "", c as u8);
                        }
                        c => out.push(c),
                    }
                }
            }
        }
    }
}

fn push_hex(out: &mut String, prefix: &str, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push_str(prefix);
    out.push(HEX[usize::from(byte >> 4)] as char);
    out.push(HEX[usize::from(byte & 0xf)] as char);
}

/// A compiled log format: its parts in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogFormat {
    /// Literal text and variables.
    pub parts: Vec<LogPart>,
}

impl Default for LogFormat {
    fn default() -> Self {
        Self::parse(UPSTREAMINFO)
    }
}

impl LogFormat {
    /// Compiles `template`: `$name` (letters, digits, `_`) or `${name}`
    /// is a variable, anything else literal text (a `$` not followed by a
    /// name too).
    pub fn parse(template: &str) -> Self {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = template;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, next) = if let Some(braced) = after.strip_prefix('{') {
                match braced.find('}') {
                    Some(end) if is_name(&braced[..end]) => (&braced[..end], &braced[end + 1..]),
                    _ => ("", after),
                }
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            if name.is_empty() {
                literal.push('$');
            } else {
                if !literal.is_empty() {
                    parts.push(LogPart::Literal(std::mem::take(&mut literal)));
                }
                parts.push(LogPart::Variable(LogVariable::named(name)));
            }
            rest = next;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(LogPart::Literal(literal));
        }
        Self { parts }
    }

    /// The names of the variables xdp-ingress does not know, in order.
    pub fn unknown(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            LogPart::Variable(LogVariable::Unknown(name)) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Writes one line (without its newline) into `out`: `value` appends
    /// a variable's value and returns false when it has none (then `-`,
    /// as nginx writes a variable not found; one found empty is empty).
    pub fn render(
        &self,
        escape: LogEscape,
        out: &mut String,
        mut value: impl FnMut(&LogVariable, &mut ValueSink<'_>) -> bool,
    ) {
        for part in &self.parts {
            match part {
                LogPart::Literal(text) => out.push_str(text),
                LogPart::Variable(variable) => {
                    let start = out.len();
                    if !value(variable, &mut ValueSink { out, escape }) {
                        out.truncate(start);
                        out.push('-');
                    }
                }
            }
        }
    }
}

/// Where a variable's value goes, escaped as the format asks.
pub struct ValueSink<'a> {
    out: &'a mut String,
    escape: LogEscape,
}

impl ValueSink<'_> {
    /// Appends text that may need escaping (from the request).
    pub fn text(&mut self, value: &str) {
        self.escape.push(self.out, value);
    }

    /// Appends text that never needs escaping (numbers, addresses).
    pub fn plain(&mut self, value: std::fmt::Arguments<'_>) {
        use std::fmt::Write;
        let _ = self.out.write_fmt(value);
    }
}

fn is_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `$time_local` of `unix` seconds, in UTC: `08/Dec/2026:02:12:42 +0000`.
pub fn time_local(unix: u64, out: &mut String) {
    use std::fmt::Write;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day) = civil(unix / 86_400);
    let seconds = unix % 86_400;
    let _ = write!(
        out,
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[usize::from(month - 1)],
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
}

/// `$time_iso8601` of `unix` seconds, in UTC: `2026-12-08T02:12:42+00:00`.
pub fn time_iso8601(unix: u64, out: &mut String) {
    use std::fmt::Write;
    let (year, month, day) = civil(unix / 86_400);
    let seconds = unix % 86_400;
    let _ = write!(
        out,
        "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
}

/// The date of a day since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil(days: u64) -> (u64, u8, u8) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(format: &LogFormat) -> Vec<String> {
        format
            .parts
            .iter()
            .map(|part| match part {
                LogPart::Literal(text) => format!("'{text}'"),
                LogPart::Variable(variable) => format!("{variable:?}"),
            })
            .collect()
    }

    #[test]
    fn templates_compile_into_parts() {
        // (template, parts)
        let cases: [(&str, &[&str]); 7] = [
            ("$status", &["Status"]),
            (
                "[$time_local] $status",
                &["'['", "TimeLocal", "'] '", "Status"],
            ),
            ("${status}ms$msec", &["Status", "'ms'", "Msec"]),
            (
                "$http_user_agent $http_X_Forwarded_For",
                &[
                    "RequestHeader(\"user-agent\")",
                    "' '",
                    "RequestHeader(\"x-forwarded-for\")",
                ],
            ),
            ("cost $ 5 and ${ nope }$", &["'cost $ 5 and ${ nope }$'"]),
            ("$geoip_city!", &["Unknown(\"geoip_city\")", "'!'"]),
            ("", &[]),
        ];
        for (template, parts) in cases {
            assert_eq!(names(&LogFormat::parse(template)), parts, "{template}");
        }
    }

    #[test]
    fn the_default_format_knows_every_variable() {
        let format = LogFormat::default();
        assert_eq!(format.unknown().count(), 0);
        assert_eq!(
            format
                .parts
                .iter()
                .filter(|p| matches!(p, LogPart::Variable(_)))
                .count(),
            17
        );
        let unknown = LogFormat::parse("$a $status $b_c");
        assert_eq!(unknown.unknown().collect::<Vec<_>>(), ["a", "b_c"]);
    }

    #[test]
    fn empty_values_are_a_dash_and_values_are_escaped() {
        let format = LogFormat::parse("$remote_user \"$http_user_agent\" $status");
        let line = |escape: LogEscape| {
            let mut out = String::new();
            format.render(escape, &mut out, |variable, sink| match variable {
                LogVariable::RequestHeader(_) => {
                    sink.text("a \"b\"\\\n\u{e9}");
                    true
                }
                LogVariable::Status => {
                    sink.plain(format_args!("{}", 200));
                    true
                }
                _ => false,
            });
            out
        };
        assert_eq!(
            line(LogEscape::Default),
            r#"- "a \x22b\x22\x5C\x0A\xC3\xA9" 200"#
        );
        assert_eq!(line(LogEscape::Json), "- \"a \\\"b\\\"\\\\\\n\u{e9}\" 200");
        assert_eq!(line(LogEscape::None), "- \"a \"b\"\\\n\u{e9}\" 200");
    }

    #[test]
    fn a_json_format_makes_json() {
        let format = LogFormat::parse(r#"{"status": $status, "agent": "$http_user_agent"}"#);
        let mut out = String::new();
        format.render(LogEscape::Json, &mut out, |variable, sink| {
            match variable {
                LogVariable::Status => sink.plain(format_args!("404")),
                _ => sink.text("x\"\u{1}"),
            }
            true
        });
        let value: serde_json::Value = serde_json::from_str(&out).expect(&out);
        assert_eq!(value["status"], 404);
        assert_eq!(value["agent"], "x\"\u{1}");
    }

    #[test]
    fn times_as_nginx_writes_them() {
        // (unix seconds, $time_local, $time_iso8601)
        let cases = [
            (0, "01/Jan/1970:00:00:00 +0000", "1970-01-01T00:00:00+00:00"),
            (
                1_796_695_962,
                "08/Dec/2026:02:12:42 +0000",
                "2026-12-08T02:12:42+00:00",
            ),
            (
                951_782_400,
                "29/Feb/2000:00:00:00 +0000",
                "2000-02-29T00:00:00+00:00",
            ),
        ];
        for (unix, local, iso) in cases {
            let (mut a, mut b) = (String::new(), String::new());
            time_local(unix, &mut a);
            time_iso8601(unix, &mut b);
            assert_eq!((a.as_str(), b.as_str()), (local, iso), "{unix}");
        }
    }
}
