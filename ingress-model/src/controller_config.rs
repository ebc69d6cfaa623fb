//! The controller's ConfigMap (`--configmap namespace/name`, ingress-nginx's
//! flag): global settings under ingress-nginx's key names, read once per
//! change into typed values. Nothing in it is executed or templated.
//!
//! Every key is sorted: the ones read here take effect; the ones we know
//! but do not implement are reported and ignored, except those that
//! protect something (`global-auth-url`, `block-referers`): they fail
//! closed, every route answering 503; snippets are refused; unknown keys
//! are reported once. Reports are problems of the ConfigMap, so they reach
//! `xdp-ingress routes`, the log and the ConfigMap's Events.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::ConfigMap;

use crate::{
    access::{IngressSourceRanges, IpRange, KernelSourceRanges, SourceRanges, parse_ranges},
    log_format::{LogEscape, LogFormat},
    object::ObjectRef,
    policy::{LoadBalance, parse_load_balance, parse_seconds, parse_size, parse_status_list},
    problem::{Problem, ProblemReason},
};

/// The settings of the ConfigMap; `None` where it does not set a key (the
/// command line's value, or ingress-nginx's default, applies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControllerConfig {
    /// `proxy-body-size`.
    pub proxy_body_size: Option<u64>,
    /// `proxy-connect-timeout`.
    pub proxy_connect_timeout: Option<Duration>,
    /// `proxy-read-timeout`.
    pub proxy_read_timeout: Option<Duration>,
    /// `proxy-send-timeout`.
    pub proxy_send_timeout: Option<Duration>,
    /// `client-header-timeout`.
    pub client_header_timeout: Option<Duration>,
    /// `hsts`.
    pub hsts: Option<bool>,
    /// `hsts-max-age`.
    pub hsts_max_age: Option<u64>,
    /// `hsts-include-subdomains`.
    pub hsts_include_subdomains: Option<bool>,
    /// `hsts-preload`.
    pub hsts_preload: Option<bool>,
    /// `ssl-redirect`: the default of every Ingress's `ssl-redirect`.
    pub ssl_redirect: Option<bool>,
    /// `force-ssl-redirect`: the default of every Ingress's.
    pub force_ssl_redirect: Option<bool>,
    /// `http-redirect-code`: the status of the redirect to HTTPS.
    pub http_redirect_code: Option<u16>,
    /// `whitelist-source-range` (`allowlist-source-range`) and
    /// `denylist-source-range`: every route's, unless its Ingress sets its
    /// own list of the same kind.
    pub source_ranges: SourceRanges,
    /// `block-cidrs`: clients refused everywhere (403; dropped in XDP
    /// when the XDP edge runs).
    pub block_cidrs: Vec<IpRange>,
    /// `xdp-drop-source-range` (ours): clients dropped in XDP on every
    /// listener of the proxy (403 from the proxy when they get through,
    /// without the XDP edge).
    pub xdp_drop_source_range: Vec<IpRange>,
    /// `block-user-agents`: requests refused everywhere (403).
    pub block_user_agents: Vec<UserAgentRule>,
    /// `limit-req-status-code`: the status of a request over a rate.
    pub limit_req_status_code: Option<u16>,
    /// `limit-conn-status-code`: the status of a request over the
    /// connection limit.
    pub limit_conn_status_code: Option<u16>,
    /// `use-forwarded-headers`, `enable-real-ip`, `forwarded-for-header`,
    /// `compute-full-forwarded-for`, `proxy-real-ip-cidr`.
    pub forwarding: Forwarding,
    /// `keep-alive`: seconds an idle client connection is kept (0: closed
    /// after each response).
    pub keep_alive: Option<Duration>,
    /// `load-balance`: every route's, unless its Ingress sets its own.
    pub load_balance: Option<LoadBalance>,
    /// `custom-http-errors`: every route's, unless its Ingress sets its
    /// own; answered by `--default-backend-service`.
    pub custom_http_errors: Vec<u16>,
    /// The access log's settings.
    pub access_log: AccessLogConfig,
    /// `global-auth-url` and its companions: the external auth of every
    /// route whose Ingress has no `auth-url` of its own and does not set
    /// `enable-global-auth: "false"`.
    pub global_auth: Option<crate::auth::ExternalAuth>,
    /// Why every route answers 503 (a key that protects something and is
    /// not applied), if so.
    pub refusal: Option<String>,
}

/// The access log as the ConfigMap sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// `disable-access-log`: no line at all.
    pub disabled: bool,
    /// `log-format-upstream`, compiled (`None`: ingress-nginx's
    /// `upstreaminfo`).
    pub format: Option<LogFormat>,
    /// `log-format-escape-json`, `log-format-escape-none` (none wins, as
    /// in ingress-nginx's template).
    pub escape: LogEscape,
    /// `skip-access-log-urls`: request URIs (`$request_uri`, query
    /// included) never logged.
    pub skip_urls: Vec<String>,
    escape_json: bool,
    escape_none: bool,
}

impl AccessLogConfig {
    /// Whether a request for `request_uri` is logged.
    pub fn logs(&self, request_uri: &str) -> bool {
        !self.disabled && !self.skip_urls.iter().any(|url| url == request_uri)
    }

    fn set_escape(&mut self) {
        self.escape = if self.escape_none {
            LogEscape::None
        } else if self.escape_json {
            LogEscape::Json
        } else {
            LogEscape::Default
        };
    }
}

/// `Strict-Transport-Security` as ingress-nginx's `hsts*` keys (and our
/// flags of the same names) make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hsts {
    /// `hsts`.
    pub enabled: bool,
    /// `hsts-max-age`.
    pub max_age: u64,
    /// `hsts-include-subdomains`.
    pub include_subdomains: bool,
    /// `hsts-preload`.
    pub preload: bool,
}

impl Default for Hsts {
    fn default() -> Self {
        Self {
            enabled: true,
            max_age: 31_536_000,
            include_subdomains: true,
            preload: false,
        }
    }
}

impl Hsts {
    /// The header's value, `None` when off.
    pub fn value(&self) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let mut value = format!("max-age={}", self.max_age);
        if self.include_subdomains {
            value.push_str("; includeSubDomains");
        }
        if self.preload {
            value.push_str("; preload");
        }
        Some(value)
    }

    /// These settings with what `config` sets over them.
    pub fn overridden_by(self, config: &ControllerConfig) -> Self {
        Self {
            enabled: config.hsts.unwrap_or(self.enabled),
            max_age: config.hsts_max_age.unwrap_or(self.max_age),
            include_subdomains: config
                .hsts_include_subdomains
                .unwrap_or(self.include_subdomains),
            preload: config.hsts_preload.unwrap_or(self.preload),
        }
    }
}

/// Who the client is, and which forwarded headers are believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    /// `use-forwarded-headers`: the `X-Forwarded-*` headers of a trusted
    /// peer are passed on as its (and the client's address read from
    /// `forwarded_for_header`).
    pub use_forwarded_headers: bool,
    /// `enable-real-ip`: the client's address read from
    /// `forwarded_for_header` of a trusted peer, the other headers not
    /// believed.
    pub enable_real_ip: bool,
    /// `forwarded-for-header` (default `X-Forwarded-For`), lower case.
    pub forwarded_for_header: String,
    /// `compute-full-forwarded-for`: the client's address is appended to
    /// the `X-Forwarded-For` it sent, instead of replacing it.
    pub compute_full_forwarded_for: bool,
    /// `proxy-real-ip-cidr` (default `0.0.0.0/0`, every IPv4 peer): the
    /// peers whose forwarded address is believed.
    pub trusted: Vec<IpRange>,
}

impl Default for Forwarding {
    fn default() -> Self {
        Self {
            use_forwarded_headers: false,
            enable_real_ip: false,
            forwarded_for_header: "x-forwarded-for".to_owned(),
            compute_full_forwarded_for: false,
            trusted: vec![IpRange::parse("0.0.0.0/0").expect("a range")],
        }
    }
}

impl Forwarding {
    /// Whether the client's address is read from a header.
    pub fn real_ip(&self) -> bool {
        self.use_forwarded_headers || self.enable_real_ip
    }

    /// The client's address for a request from `peer` whose
    /// `forwarded_for_header` lists `forwarded` (its values in order), as
    /// nginx's `real_ip_recursive on` finds it: from the right, the first
    /// address not in `trusted`; the peer itself when it is not trusted.
    pub fn client_address(&self, peer: std::net::IpAddr, forwarded: &[&str]) -> std::net::IpAddr {
        let trusted = |ip: std::net::IpAddr| self.trusted.iter().any(|range| range.contains(ip));
        if !self.real_ip() || !trusted(peer) {
            return peer;
        }
        let mut client = peer;
        for entry in forwarded.iter().flat_map(|v| v.split(',')).rev() {
            let Ok(ip) = entry.trim().parse::<std::net::IpAddr>() else {
                break;
            };
            client = ip;
            if !trusted(ip) {
                break;
            }
        }
        client
    }
}

/// A `block-user-agents` entry, as nginx's `map` reads it: `~` a regex,
/// `~*` a case-insensitive one, else the whole agent exactly.
#[derive(Debug, Clone)]
pub struct UserAgentRule {
    source: String,
    matcher: UserAgentMatcher,
}

#[derive(Debug, Clone)]
enum UserAgentMatcher {
    Exact(String),
    Regex(regex::Regex),
}

impl UserAgentRule {
    /// Parses one entry.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let regex = |pattern: &str, insensitive: bool| {
            regex::RegexBuilder::new(pattern)
                .case_insensitive(insensitive)
                .size_limit(1 << 20)
                .build()
                .map_err(|error| format!("{text:?} is not a valid regex: {error}"))
        };
        let matcher = if let Some(pattern) = text.strip_prefix("~*") {
            UserAgentMatcher::Regex(regex(pattern, true)?)
        } else if let Some(pattern) = text.strip_prefix('~') {
            UserAgentMatcher::Regex(regex(pattern, false)?)
        } else {
            UserAgentMatcher::Exact(text.to_owned())
        };
        Ok(Self {
            source: text.to_owned(),
            matcher,
        })
    }

    /// Whether a request with `agent` as its `User-Agent` is refused.
    pub fn matches(&self, agent: &str) -> bool {
        match &self.matcher {
            UserAgentMatcher::Exact(exact) => agent == exact,
            UserAgentMatcher::Regex(regex) => regex.is_match(agent),
        }
    }
}

impl PartialEq for UserAgentRule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for UserAgentRule {}

/// The keys read here.
pub const IMPLEMENTED_KEYS: &[&str] = &[
    "proxy-body-size",
    "proxy-connect-timeout",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "client-header-timeout",
    "hsts",
    "hsts-max-age",
    "hsts-include-subdomains",
    "hsts-preload",
    "ssl-redirect",
    "force-ssl-redirect",
    "http-redirect-code",
    "whitelist-source-range",
    "allowlist-source-range",
    "denylist-source-range",
    "block-cidrs",
    "block-user-agents",
    "limit-req-status-code",
    "limit-conn-status-code",
    "use-forwarded-headers",
    "enable-real-ip",
    "forwarded-for-header",
    "compute-full-forwarded-for",
    "proxy-real-ip-cidr",
    "keep-alive",
    "custom-http-errors",
    "log-format-upstream",
    "log-format-escape-json",
    "log-format-escape-none",
    "disable-access-log",
    "skip-access-log-urls",
    "load-balance",
    "xdp-drop-source-range",
];

/// Keys that protect something and are not applied yet: every route
/// answers 503 while one is set.
const FAIL_CLOSED_KEYS: &[&str] = &["block-referers", "global-rate-limit-memcached-host"];

/// Keys of ingress-nginx's that we know and do not implement (yet):
/// reported and ignored. Anything else is unknown, also reported.
const KNOWN_KEYS: &[&str] = &[
    "use-proxy-protocol",
    "use-http2",
    "proxy-protocol-header-timeout",
    "ssl-protocols",
    "ssl-ciphers",
    "ssl-prefer-server-ciphers",
    "ssl-session-cache",
    "ssl-session-timeout",
    "ssl-session-tickets",
    "ssl-ecdh-curve",
    "ssl-dh-param",
    "ssl-buffer-size",
    "keep-alive-requests",
    "upstream-keepalive-connections",
    "upstream-keepalive-timeout",
    "upstream-keepalive-requests",
    "log-format-stream",
    "access-log-path",
    "error-log-path",
    "error-log-level",
    "enable-access-log-for-default-backend",
    "worker-processes",
    "worker-connections",
    "max-worker-connections",
    "server-tokens",
    "client-body-buffer-size",
    "client-body-timeout",
    "client-header-buffer-size",
    "large-client-header-buffers",
    "proxy-buffering",
    "proxy-buffer-size",
    "proxy-buffers-number",
    "proxy-request-buffering",
    "proxy-next-upstream",
    "proxy-next-upstream-tries",
    "proxy-next-upstream-timeout",
    "proxy-http-version",
    "upstream-hash-by",
    "enable-opentelemetry",
    "enable-brotli",
    "use-gzip",
    "gzip-level",
    "gzip-types",
    "enable-ocsp",
    "hide-headers",
    "add-headers",
];

/// The ConfigMap's external auth keys, ingress-nginx's `global-auth-*`.
const GLOBAL_AUTH_KEYS: [&str; 9] = [
    "global-auth-url",
    "global-auth-method",
    "global-auth-signin",
    "global-auth-signin-redirect-param",
    "global-auth-response-headers",
    "global-auth-request-redirect",
    "global-auth-cache-key",
    "global-auth-cache-duration",
    "global-auth-always-set-cookie",
];

/// Why `value` is not a status code of a redirect or a refusal.
fn parse_status(value: &str, allowed: std::ops::RangeInclusive<u16>) -> Result<u16, String> {
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|code| allowed.contains(code))
        .ok_or_else(|| {
            format!(
                "{value:?} is not a status code from {} to {}",
                allowed.start(),
                allowed.end()
            )
        })
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{value:?} is neither true nor false")),
    }
}

/// Reads the ConfigMap `object` (whose data is `data`).
pub fn read_controller_config(
    object: &ObjectRef,
    data: &BTreeMap<String, String>,
) -> (ControllerConfig, Vec<Problem>) {
    let mut config = ControllerConfig::default();
    let mut problems = Vec::new();
    let mut report = |reason, message: String| {
        problems.push(Problem::new(object.clone(), reason, message));
    };
    let mut refused = Vec::new();
    // The global external auth: read as the Ingress annotations it
    // mirrors (`global-auth-X` as `auth-X`), by the same reader.
    let global: BTreeMap<String, String> = data
        .iter()
        .filter(|(key, _)| GLOBAL_AUTH_KEYS.contains(&key.as_str()))
        .map(|(key, value)| {
            let name = key.trim_start_matches("global-");
            (
                format!("{}{name}", crate::tls::ANNOTATION_PREFIXES[0]),
                value.clone(),
            )
        })
        .collect();
    if !global.is_empty() {
        let url = format!("{}auth-url", crate::tls::ANNOTATION_PREFIXES[0]);
        if global.contains_key(&url) {
            match crate::annotations::auth::external_auth(Some(&global)) {
                Ok(auth) => config.global_auth = Some(auth),
                Err((name, why)) => {
                    let key = name.replacen(crate::tls::ANNOTATION_PREFIXES[0], "global-", 1);
                    report(
                        ProblemReason::InvalidAnnotation,
                        format!(
                            "key {key}: {why}: every route answers 503 rather than serve \
                             unprotected"
                        ),
                    );
                    refused.push(key);
                }
            }
        } else {
            report(
                ProblemReason::InvalidAnnotation,
                "the global-auth-* keys are set without global-auth-url: ignored".to_owned(),
            );
        }
    }
    for (key, value) in data {
        if GLOBAL_AUTH_KEYS.contains(&key.as_str()) {
            continue;
        }
        let key = key.as_str();
        if key.ends_with("-snippet") || key == "main-snippet" {
            report(
                ProblemReason::SnippetRefused,
                format!(
                    "key {key}: free-form nginx configuration is never executed (CVE-2021-25742, \
                     CVE-2025-1974): ignored"
                ),
            );
            continue;
        }
        if key == "allow-snippet-annotations" {
            if parse_bool(value).unwrap_or(true) {
                report(
                    ProblemReason::SnippetRefused,
                    format!(
                        "key {key}: {value:?}: snippet annotations are always refused by \
                         xdp-ingress"
                    ),
                );
            }
            continue;
        }
        if IMPLEMENTED_KEYS.contains(&key) {
            if let Err(why) = read_key(&mut config, key, value) {
                let protects = matches!(
                    key,
                    "whitelist-source-range"
                        | "allowlist-source-range"
                        | "denylist-source-range"
                        | "block-cidrs"
                        | "xdp-drop-source-range"
                        | "block-user-agents"
                );
                if protects {
                    refused.push(key.to_owned());
                }
                let effect = if protects {
                    "every route answers 503 rather than serve unprotected"
                } else {
                    "ignored"
                };
                report(
                    ProblemReason::InvalidAnnotation,
                    format!("key {key}: {why}: {effect}"),
                );
            } else if key == "log-format-upstream"
                && let Some(format) = config.access_log.format.as_ref()
            {
                for name in format.unknown() {
                    report(
                        ProblemReason::InvalidAnnotation,
                        format!(
                            "key {key}: ${name} is not a variable xdp-ingress knows: written as -"
                        ),
                    );
                }
            }
        } else if FAIL_CLOSED_KEYS.contains(&key) {
            refused.push(key.to_owned());
            report(
                ProblemReason::UnsupportedAnnotation,
                format!(
                    "key {key} is access control that xdp-ingress does not apply yet: every \
                     route answers 503 rather than serve unprotected"
                ),
            );
        } else if KNOWN_KEYS.contains(&key) {
            report(
                ProblemReason::UnsupportedAnnotation,
                format!("key {key} is not implemented by xdp-ingress: ignored"),
            );
        } else {
            report(
                ProblemReason::UnsupportedAnnotation,
                format!("key {key} is not a setting xdp-ingress knows: ignored"),
            );
        }
    }
    if !refused.is_empty() {
        config.refusal = Some(format!(
            "ConfigMap {}: {} cannot be applied",
            object.key,
            refused.join(", ")
        ));
    }
    (config, problems)
}

/// Reads one implemented key into `config`.
fn read_key(config: &mut ControllerConfig, key: &str, value: &str) -> Result<(), String> {
    let list = |value: &str| -> Vec<String> {
        value
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match key {
        "proxy-body-size" => config.proxy_body_size = Some(parse_size(value)?),
        "proxy-connect-timeout" => config.proxy_connect_timeout = Some(parse_seconds(value)?),
        "proxy-read-timeout" => config.proxy_read_timeout = Some(parse_seconds(value)?),
        "proxy-send-timeout" => config.proxy_send_timeout = Some(parse_seconds(value)?),
        "client-header-timeout" => config.client_header_timeout = Some(parse_seconds(value)?),
        "hsts" => config.hsts = Some(parse_bool(value)?),
        "hsts-max-age" => {
            config.hsts_max_age = Some(
                value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{value:?} is not whole seconds"))?,
            )
        }
        "hsts-include-subdomains" => config.hsts_include_subdomains = Some(parse_bool(value)?),
        "hsts-preload" => config.hsts_preload = Some(parse_bool(value)?),
        "ssl-redirect" => config.ssl_redirect = Some(parse_bool(value)?),
        "force-ssl-redirect" => config.force_ssl_redirect = Some(parse_bool(value)?),
        "http-redirect-code" => {
            // ingress-nginx accepts 301, 302, 307 and 308.
            let code = parse_status(value, 301..=308)?;
            if ![301, 302, 307, 308].contains(&code) {
                return Err(format!("{code} is not 301, 302, 307 or 308"));
            }
            config.http_redirect_code = Some(code);
        }
        "whitelist-source-range" | "allowlist-source-range" => {
            // The allow list's own name wins over its alias.
            if key == "allowlist-source-range" || config.source_ranges.allow.is_empty() {
                config.source_ranges.allow = parse_ranges(value)?;
            }
        }
        "denylist-source-range" => config.source_ranges.deny = parse_ranges(value)?,
        "block-cidrs" => config.block_cidrs = parse_ranges(value)?,
        "xdp-drop-source-range" => config.xdp_drop_source_range = parse_ranges(value)?,
        "block-user-agents" => {
            config.block_user_agents = list(value)
                .iter()
                .map(|entry| UserAgentRule::parse(entry))
                .collect::<Result<_, _>>()?
        }
        "limit-req-status-code" => {
            config.limit_req_status_code = Some(parse_status(value, 200..=599)?)
        }
        "limit-conn-status-code" => {
            config.limit_conn_status_code = Some(parse_status(value, 200..=599)?)
        }
        "use-forwarded-headers" => config.forwarding.use_forwarded_headers = parse_bool(value)?,
        "enable-real-ip" => config.forwarding.enable_real_ip = parse_bool(value)?,
        "forwarded-for-header" => {
            let name = value.trim().to_ascii_lowercase();
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(format!("{value:?} is not a header name"));
            }
            config.forwarding.forwarded_for_header = name;
        }
        "compute-full-forwarded-for" => {
            config.forwarding.compute_full_forwarded_for = parse_bool(value)?
        }
        "proxy-real-ip-cidr" => config.forwarding.trusted = parse_ranges(value)?,
        "keep-alive" => config.keep_alive = Some(parse_seconds(value)?),
        "custom-http-errors" => config.custom_http_errors = parse_status_list(value)?,
        "log-format-upstream" => config.access_log.format = Some(LogFormat::parse(value)),
        "log-format-escape-json" => {
            config.access_log.escape_json = parse_bool(value)?;
            config.access_log.set_escape();
        }
        "log-format-escape-none" => {
            config.access_log.escape_none = parse_bool(value)?;
            config.access_log.set_escape();
        }
        "disable-access-log" => config.access_log.disabled = parse_bool(value)?,
        "skip-access-log-urls" => config.access_log.skip_urls = list(value),
        "load-balance" => config.load_balance = Some(parse_load_balance(value)?),
        _ => unreachable!("{key} is in IMPLEMENTED_KEYS"),
    }
    Ok(())
}

impl ControllerConfig {
    /// The source ranges the kernel enforces exactly on every listener of
    /// the proxy, given what our Ingresses say (`ingresses`):
    /// `xdp-drop-source-range` (the key and the annotations: the peer's
    /// address, always), `block-cidrs`, and the global deny and allow lists
    /// while no Ingress of ours replaces them with its own (then they stay
    /// in the proxy, which applies them per route, and `proxy_only` says
    /// why). With `use-forwarded-headers` or `enable-real-ip` the client of
    /// ingress-nginx's lists is the forwarded address: they stay in the
    /// proxy. Nothing while the ConfigMap refuses to serve (every route
    /// answers 503).
    pub fn kernel_source_ranges(&self, ingresses: &IngressSourceRanges) -> KernelSourceRanges {
        let mut kernel = KernelSourceRanges::default();
        if self.refusal.is_some() {
            return kernel;
        }
        let mut deny: Vec<IpRange> = self
            .xdp_drop_source_range
            .iter()
            .chain(&ingresses.xdp_drop)
            .copied()
            .collect();
        // Behind a trusted proxy the client is the forwarded address, which
        // XDP cannot see: ingress-nginx's lists then stay in the proxy.
        let forwarded = self.forwarding.use_forwarded_headers || self.forwarding.enable_real_ip;
        if forwarded {
            let set: Vec<&str> = [
                ("block-cidrs", !self.block_cidrs.is_empty()),
                ("denylist-source-range", !self.source_ranges.deny.is_empty()),
                (
                    "whitelist-source-range",
                    !self.source_ranges.allow.is_empty(),
                ),
            ]
            .into_iter()
            .filter_map(|(key, set)| set.then_some(key))
            .collect();
            if !set.is_empty() {
                kernel.proxy_only.push(format!(
                    "{} stay in the proxy (403): with use-forwarded-headers or enable-real-ip the \
                     client is the forwarded address",
                    set.join(", ")
                ));
            }
            deny.sort();
            deny.dedup();
            kernel.deny = deny;
            return kernel;
        }
        deny.extend(&self.block_cidrs);
        let names = |keys: &[crate::object::ObjectKey]| {
            keys.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !ingresses.satisfy_any.is_empty() {
            let set: Vec<&str> = [
                ("denylist-source-range", !self.source_ranges.deny.is_empty()),
                (
                    "whitelist-source-range",
                    !self.source_ranges.allow.is_empty(),
                ),
            ]
            .into_iter()
            .filter_map(|(key, set)| set.then_some(key))
            .collect();
            if !set.is_empty() {
                kernel.proxy_only.push(format!(
                    "{} stay in the proxy (403): Ingress {} lets a client outside them in by \
                     authenticating (satisfy: any)",
                    set.join(", "),
                    names(&ingresses.satisfy_any)
                ));
            }
        } else if !self.source_ranges.deny.is_empty() {
            if ingresses.own_deny.is_empty() {
                deny.extend(&self.source_ranges.deny);
            } else {
                kernel.proxy_only.push(format!(
                    "denylist-source-range stays in the proxy (403): Ingress {} sets its own",
                    names(&ingresses.own_deny)
                ));
            }
        }
        if !self.source_ranges.allow.is_empty() && ingresses.satisfy_any.is_empty() {
            if ingresses.own_allow.is_empty() {
                kernel.allow = self.source_ranges.allow.clone();
                kernel.allow.sort();
                kernel.allow.dedup();
            } else {
                kernel.proxy_only.push(format!(
                    "whitelist-source-range stays in the proxy (403): Ingress {} sets its own",
                    names(&ingresses.own_allow)
                ));
            }
        }
        deny.sort();
        deny.dedup();
        kernel.deny = deny;
        kernel
    }
}

/// Reads the ConfigMap of `config_map`, empty when there is none.
pub fn controller_config(
    object: &ObjectRef,
    config_map: Option<&ConfigMap>,
) -> (ControllerConfig, Vec<Problem>) {
    match config_map.and_then(|c| c.data.as_ref()) {
        Some(data) => read_controller_config(object, data),
        None => (ControllerConfig::default(), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{ObjectKey, ObjectKind};

    #[test]
    fn kernel_source_ranges_take_what_is_exact_for_every_host() {
        use crate::access::IngressSourceRanges;
        let texts = |ranges: &[IpRange]| ranges.iter().map(ToString::to_string).collect::<Vec<_>>();
        let (config, problems) = read(&[
            ("block-cidrs", "198.18.1.0/24"),
            ("xdp-drop-source-range", "198.18.2.0/24, 2001:db8:2::/48"),
            ("denylist-source-range", "198.18.3.3"),
            ("whitelist-source-range", "198.18.0.0/15"),
        ]);
        assert_eq!(problems, []);
        let none = IngressSourceRanges::default();
        let kernel = config.kernel_source_ranges(&none);
        assert_eq!(
            texts(&kernel.deny),
            [
                "198.18.1.0/24",
                "198.18.2.0/24",
                "198.18.3.3/32",
                "2001:db8:2::/48"
            ]
        );
        assert_eq!(texts(&kernel.allow), ["198.18.0.0/15"]);
        assert!(kernel.proxy_only.is_empty());
        // An Ingress with its own lists keeps the global ones in the proxy.
        let own = IngressSourceRanges {
            xdp_drop: vec![IpRange::parse("198.18.4.0/24").unwrap()],
            own_allow: vec![ObjectKey::new("ns", "a")],
            own_deny: vec![ObjectKey::new("ns", "d")],
            satisfy_any: Vec::new(),
        };
        let kernel = config.kernel_source_ranges(&own);
        assert_eq!(
            texts(&kernel.deny),
            [
                "198.18.1.0/24",
                "198.18.2.0/24",
                "198.18.4.0/24",
                "2001:db8:2::/48"
            ]
        );
        assert!(kernel.allow.is_empty());
        assert_eq!(kernel.proxy_only.len(), 2, "{:?}", kernel.proxy_only);
        assert!(kernel.proxy_only[0].contains("ns/d"));
        assert!(kernel.proxy_only[1].contains("ns/a"));
        // An Ingress that lets clients in by authenticating (satisfy: any)
        // keeps both global lists in the proxy; block-cidrs stays exact.
        let any = IngressSourceRanges {
            satisfy_any: vec![ObjectKey::new("ns", "s")],
            ..IngressSourceRanges::default()
        };
        let kernel = config.kernel_source_ranges(&any);
        assert_eq!(
            texts(&kernel.deny),
            ["198.18.1.0/24", "198.18.2.0/24", "2001:db8:2::/48"]
        );
        assert!(kernel.allow.is_empty());
        assert_eq!(kernel.proxy_only.len(), 1, "{:?}", kernel.proxy_only);
        assert!(kernel.proxy_only[0].contains("satisfy: any"));
        // Unreadable, it fails closed (503 everywhere) and drops nothing more.
        let (config, problems) = read(&[("xdp-drop-source-range", "198.18.0.0/33")]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, ProblemReason::InvalidAnnotation);
        assert!(config.refusal.is_some());
        assert_eq!(
            config.kernel_source_ranges(&none),
            KernelSourceRanges::default()
        );
    }

    fn read(pairs: &[(&str, &str)]) -> (ControllerConfig, Vec<(ProblemReason, String)>) {
        let object = ObjectRef::new(ObjectKind::ConfigMap, ObjectKey::new("ingress", "config"));
        let data = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (config, problems) = read_controller_config(&object, &data);
        (
            config,
            problems
                .into_iter()
                .map(|p| (p.reason, p.message))
                .collect(),
        )
    }

    #[test]
    fn the_keys_users_set_most() {
        let (config, problems) = read(&[
            ("proxy-body-size", "50m"),
            ("proxy-read-timeout", "120"),
            ("hsts", "false"),
            ("ssl-redirect", "false"),
            ("http-redirect-code", "301"),
            ("whitelist-source-range", "198.18.0.0/15, 2001:db8::/32"),
            ("block-user-agents", "~*bot, curl/7.0"),
            ("limit-req-status-code", "429"),
            ("use-forwarded-headers", "true"),
            ("proxy-real-ip-cidr", "198.18.0.0/24"),
            ("keep-alive", "0"),
            ("load-balance", "ewma"),
            ("allow-snippet-annotations", "false"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.proxy_body_size, Some(50 * 1024 * 1024));
        assert_eq!(config.proxy_read_timeout, Some(Duration::from_secs(120)));
        assert_eq!(
            (config.hsts, config.ssl_redirect),
            (Some(false), Some(false))
        );
        assert_eq!(config.http_redirect_code, Some(301));
        assert_eq!(config.source_ranges.allow.len(), 2);
        assert!(config.block_user_agents[0].matches("GoogleBot/2.1"));
        assert!(config.block_user_agents[1].matches("curl/7.0"));
        assert!(!config.block_user_agents[1].matches("curl/7.01"));
        assert_eq!(config.limit_req_status_code, Some(429));
        assert_eq!(config.keep_alive, Some(Duration::ZERO));
        assert_eq!(config.load_balance, Some(LoadBalance::Ewma));
        assert_eq!(config.refusal, None);
    }

    #[test]
    fn every_other_key_is_reported_and_protections_fail_closed() {
        let (config, problems) = read(&[
            ("use-proxy-protocol", "true"),
            ("no-such-key", "1"),
            ("server-snippet", "return 200;"),
            ("allow-snippet-annotations", "true"),
            ("proxy-body-size", "big"),
            ("block-referers", "~*spam"),
            ("denylist-source-range", "198.18.0.0/33"),
        ]);
        let reasons: Vec<ProblemReason> = problems.iter().map(|p| p.0).collect();
        assert_eq!(
            reasons,
            [
                ProblemReason::SnippetRefused,
                ProblemReason::UnsupportedAnnotation,
                ProblemReason::InvalidAnnotation,
                ProblemReason::UnsupportedAnnotation,
                ProblemReason::InvalidAnnotation,
                ProblemReason::SnippetRefused,
                ProblemReason::UnsupportedAnnotation,
            ],
            "{problems:#?}"
        );
        assert_eq!(config.proxy_body_size, None);
        let refusal = config.refusal.expect("fails closed");
        assert!(
            refusal.contains("denylist-source-range") && refusal.contains("block-referers"),
            "{refusal}"
        );
    }

    #[test]
    fn global_auth_is_read_as_the_auth_annotations_and_fails_closed_unread() {
        let (config, problems) = read(&[
            ("global-auth-url", "http://198.18.9.9:9000/check"),
            ("global-auth-signin", "https://login.example.com/start"),
            ("global-auth-response-headers", "X-User"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        let auth = config.global_auth.expect("global auth");
        assert_eq!(
            (auth.url.host.as_str(), auth.url.port),
            ("198.18.9.9", 9000)
        );
        assert!(auth.signin.is_some());
        assert_eq!(auth.response_headers, ["x-user"]);
        assert_eq!(config.refusal, None);
        // A URL whose host would come from the request: refused, 503.
        let (config, problems) = read(&[("global-auth-url", "http://$host/check")]);
        assert_eq!(config.global_auth, None);
        assert!(problems[0].1.contains("global-auth-url"), "{problems:?}");
        assert!(
            config
                .refusal
                .is_some_and(|r| r.contains("global-auth-url"))
        );
    }

    #[test]
    fn access_log_keys() {
        let (config, problems) = read(&[
            (
                "log-format-upstream",
                r#"{"status": $status, "city": "$geoip_city"}"#,
            ),
            ("log-format-escape-json", "true"),
            ("skip-access-log-urls", "/healthz, /ready?x=1"),
        ]);
        assert_eq!(
            problems,
            [(
                ProblemReason::InvalidAnnotation,
                "key log-format-upstream: $geoip_city is not a variable xdp-ingress knows: \
                 written as -"
                    .to_owned()
            )]
        );
        let log = &config.access_log;
        assert_eq!(log.escape, LogEscape::Json);
        assert!(log.format.is_some() && !log.disabled);
        assert!(!log.logs("/healthz") && !log.logs("/ready?x=1"));
        assert!(log.logs("/ready") && log.logs("/healthz/x"));
        let (config, problems) = read(&[
            ("log-format-escape-json", "true"),
            ("log-format-escape-none", "true"),
            ("disable-access-log", "true"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.access_log.escape, LogEscape::None);
        assert!(!config.access_log.logs("/"));
    }

    #[test]
    fn the_real_client_address_as_real_ip_recursive_finds_it() {
        let forwarding = Forwarding {
            use_forwarded_headers: true,
            trusted: parse_ranges("198.18.0.0/24, 198.18.1.1").unwrap(),
            ..Forwarding::default()
        };
        let ip = |text: &str| text.parse::<std::net::IpAddr>().unwrap();
        // (peer, X-Forwarded-For lines, client)
        let cases: [(&str, &[&str], &str); 5] = [
            ("198.18.0.5", &["198.19.9.9"], "198.19.9.9"),
            // Trusted proxies on the right are skipped.
            ("198.18.0.5", &["198.19.9.9, 198.18.1.1"], "198.19.9.9"),
            (
                "198.18.0.5",
                &["203.0.113.7", "198.19.9.9, 198.18.0.7"],
                "198.19.9.9",
            ),
            // An untrusted peer is the client, whatever it says.
            ("198.19.0.1", &["198.19.9.9"], "198.19.0.1"),
            // No header: the peer.
            ("198.18.0.5", &[], "198.18.0.5"),
        ];
        for (peer, lines, client) in cases {
            assert_eq!(
                forwarding.client_address(ip(peer), lines),
                ip(client),
                "{peer} {lines:?}"
            );
        }
        let off = Forwarding::default();
        assert_eq!(
            off.client_address(ip("198.18.0.5"), &["198.19.9.9"]),
            ip("198.18.0.5")
        );
    }
}
