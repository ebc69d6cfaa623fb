//! The client side: accept connections, speak HTTP/1.1 or HTTP/2 (h2c with
//! prior knowledge), route each request and stream it to an endpoint.
//!
//! A request goes through these phases, in order:
//! 1. `resolve`: host and path to an [`Upstream`] (or 404 from the default backend);
//! 2. checks: endpoints present (else 503), declared body size (else 413);
//! 3. `upstream_request`: hop-by-hop headers out, forwarded headers in;
//! 4. `exchange`: connect (one retry on another endpoint when a connect
//!    fails), send, wait for the response head (504 past the read timeout,
//!    502 when the endpoint fails); over the HTTP/1.1 codec, or over
//!    hyper's client (`exchange_client`) when the route's `backend-protocol`
//!    asks for HTTP/2 or TLS;
//! 5. response: hop-by-hop headers out, the edge's `Server` in (and `Date`
//!    when the upstream sent none), body streamed back; a `101` bridges
//!    the two upgraded connections (WebSocket). The edge's own answers
//!    (404, 503, 308, 502, ...) get the same `Server` and `Date`.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Either, Empty, Full, Limited};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
};
use tokio::{net::TcpListener, sync::watch};
use tracing::{debug, info, warn};

use arc_swap::ArcSwap;
use ingress_model::{
    controller_config::ControllerConfig,
    policy::{Cors, LoadBalance, NextUpstream, Redirect, RoutePolicy},
    upstream::{UpstreamProtocol, UpstreamTls},
};

use crate::{
    metrics::{Metrics, RouteMetrics},
    proxy::limits::{ConnectionLimiter, ConnectionSlot, RateLimiter},
    tls::TlsTerminator,
};

use super::{
    access_log::AccessLog,
    affinity,
    auth::RequestValues,
    auth::{AuthCookies, Authenticator},
    balance::{self, RoundRobin},
    body::{BodyTimeout, BodyTooLarge, GuardedBody, Holding, RateLimited},
    canary::{self, CanaryUpstream},
    errors::{self, ErrorPages},
    global::Global,
    headers::{
        ClientContext, ForwardedHeaders, TlsSide, X_FORWARDED_PROTO, mark_response,
        remove_hop_by_hop, rewrite_response_headers, set_cors,
    },
    mirror,
    upstream::{
        BoxError, ExchangeFailure, Exchanged, OutgoingRequest, ProxyBody, UpgradedStream,
        UpstreamPool,
    },
    upstream_client::{ClientPool, SendFailure},
};

/// Where a request goes: one Service port's endpoints.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `namespace/service:port`, for logs and errors.
    pub name: Arc<str>,
    /// The ready endpoints (may be empty: then 503).
    pub endpoints: Arc<[SocketAddr]>,
    /// The round-robin cursor of this upstream.
    pub round_robin: Arc<RoundRobin>,
    /// Plain-HTTP requests get a 308 to HTTPS instead.
    pub https_redirect: bool,
    /// What its Ingress asks of it: source ranges, a redirect, limits.
    pub policy: Option<Arc<RoutePolicy>>,
    /// The request target to send instead of the client's
    /// (`rewrite-target`).
    pub rewrite: Option<String>,
    /// Where its response times go (`/metrics`), when measured.
    pub latency: Option<prometheus_client::metrics::histogram::Histogram>,
    /// The route's canary, if a canary Ingress joined it.
    pub canary: Option<Box<CanaryUpstream>>,
    /// The route's path, for the session cookie's `Path` (cookie affinity
    /// without `session-cookie-path` only).
    pub route_path: Option<Arc<str>>,
    /// Where its error pages come from, when it may have custom ones
    /// (`custom-http-errors`, `default-backend`).
    pub errors: Option<Box<ErrorPages>>,
}

/// The answer of a route lookup.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// Proxy to this upstream.
    Upstream(Upstream),
    /// A rule matches but its backend cannot be served (missing Service or
    /// port, unsupported backend): 503, or the redirect to HTTPS.
    Unavailable {
        /// Plain-HTTP requests get a 308 to HTTPS instead.
        https_redirect: bool,
        /// What its Ingress asks of it (a redirect, source ranges).
        policy: Option<Arc<RoutePolicy>>,
    },
    /// No rule matches and no default backend is configured: 404.
    NoRoute,
}

/// Route lookup as the proxy needs it; implemented over the routing model's
/// current snapshot, which can change between two requests.
pub trait Resolve: Send + Sync + 'static {
    /// The upstream for a request's host (as sent, port included) and path.
    fn resolve(&self, host: &str, path: &str) -> Resolution;

    /// [`Resolve::resolve`], with the request metrics of the route that
    /// matched (`None`: count it as unrouted).
    fn resolve_observed(&self, host: &str, path: &str) -> (Resolution, Option<Arc<RouteMetrics>>) {
        (self.resolve(host, path), None)
    }
}

/// Limits of the client side and of proxying, with ingress-nginx's defaults.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Largest request body (client-max-body-size / proxy-body-size: 1 MiB).
    pub max_body_size: u64,
    /// Wait for the response head, and between two reads of the response body (60 s).
    pub read_timeout: Duration,
    /// Between two reads of the request body while sending it upstream (60 s).
    pub send_timeout: Duration,
    /// Time for a client to send a request head (client-header-timeout: 60 s).
    pub client_header_timeout: Duration,
    /// Whether client connections are kept alive between requests.
    pub keep_alive: bool,
    /// The HTTPS port that redirects point to (omitted from the URL when 443).
    pub https_port: u16,
    /// The `Strict-Transport-Security` value for HTTPS responses, if any.
    pub hsts: Option<HeaderValue>,
    /// Time for a client to finish the TLS handshake.
    pub tls_handshake_timeout: Duration,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            max_body_size: 1024 * 1024,
            read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            client_header_timeout: Duration::from_secs(60),
            keep_alive: true,
            https_port: 443,
            hsts: Some(HeaderValue::from_static(
                "max-age=31536000; includeSubDomains",
            )),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// What every request handler shares.
pub struct ProxyState {
    /// Requests, connections and handshakes, for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Route lookup.
    pub resolver: Arc<dyn Resolve>,
    /// Upstream HTTP/1.1 connections.
    pub pool: Arc<UpstreamPool>,
    /// Upstream HTTP/2 connections, and HTTP/1.1 over TLS.
    pub clients: Arc<ClientPool>,
    /// Limits.
    pub settings: ProxySettings,
    /// The controller ConfigMap's settings (`--configmap`), over `settings`.
    pub global: Arc<ArcSwap<Global>>,
    /// The endpoints' response times, for `load-balance: ewma`.
    pub ewma: balance::Ewma,
    /// The routes' request rates per client (`limit-rps`, `limit-rpm`).
    pub rate_limiter: RateLimiter,
    /// The routes' requests in progress per client (`limit-connections`).
    pub connection_limiter: Arc<ConnectionLimiter>,
    /// The routes' basic and external authentication (`auth-*`).
    pub authenticator: Authenticator,
    /// Where access log lines go (`--access-log`).
    pub access_log: AccessLog,
}

/// Serves `listener` until `shutdown` turns true, then lets open connections
/// finish their requests (graceful shutdown) before returning. With `tls`,
/// every connection starts with a TLS handshake (HTTPS).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<TlsTerminator>>,
    state: Arc<ProxyState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    let listener_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let scheme = if tls.is_some() { "https" } else { "http" };
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = crate::shutdown::stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let mut client = ClientContext::new(peer.ip(), scheme, listener_port);
        client.peer_port = peer.port();
        let state = state.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _open = state.metrics.connection_opened(scheme);
            match tls {
                None => serve_connection(TokioIo::new(stream), client, state, watcher).await,
                Some(terminator) => {
                    let handshake = tokio::time::timeout(
                        state.settings.tls_handshake_timeout,
                        terminator.accept(stream),
                    )
                    .await;
                    match handshake {
                        Ok(Ok(accepted)) => {
                            state.metrics.tls_handshake(true);
                            let tls_stream = accepted.stream;
                            let chain = tls_stream.get_ref().1.peer_certificates();
                            client.tls = Some(Arc::new(TlsSide {
                                server_name: accepted.server_name,
                                client_auth: accepted.client_auth,
                                chain: chain
                                    .map(|c| c.iter().map(|d| d.clone().into_owned()).collect()),
                            }));
                            serve_connection(TokioIo::new(tls_stream), client, state, watcher)
                                .await;
                        }
                        Ok(Err(error)) => {
                            state.metrics.tls_handshake(false);
                            debug!(%peer, %error, "TLS handshake failed");
                        }
                        Err(_) => {
                            state.metrics.tls_handshake(false);
                            debug!(%peer, "TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
    // Refuse new connections while draining (as nginx closes its listening
    // sockets), rather than leave them in the backlog until the exit.
    drop(listener);
    info!(
        scheme,
        connections = graceful.count(),
        "draining client connections"
    );
    if let Ok(graceful) = Arc::try_unwrap(graceful) {
        graceful.shutdown().await;
    }
}

/// Serves HTTP/1.1 or HTTP/2 (by the connection preface) on one client
/// connection, watched for graceful shutdown.
async fn serve_connection<IO>(
    io: IO,
    client: ClientContext,
    state: Arc<ProxyState>,
    watcher: Watcher,
) where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (header_timeout, keep_alive) = {
        let global = state.global.load();
        (
            global.client_header_timeout(state.settings.client_header_timeout),
            global.keep_alive(state.settings.keep_alive),
        )
    };
    let peer = client.client_ip;
    // One shared handle per connection: a request clones one `Arc`.
    let connection = Arc::new((client, state));
    let service = service_fn(move |request| {
        let connection = connection.clone();
        async move {
            let (client, state) = &*connection;
            Ok::<_, Infallible>(handle(request, client, state).await)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // `Date` on every response that has none (hyper's default, stated):
    // hyper formats it once a second per thread and copies it.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(keep_alive)
        .auto_date_header(true);
    builder.http2().auto_date_header(true);
    let connection = builder.serve_connection_with_upgrades(io, service);
    if let Err(error) = watcher.watch(connection.into_owned()).await {
        debug!(%peer, %error, "client connection ended with an error");
    }
}

/// Proxies one request; never fails: every problem is an HTTP status.
pub async fn handle(
    mut request: Request<Incoming>,
    client: &ClientContext,
    state: &ProxyState,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let host_value = request_host(&request);
    let host = host_value
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let (resolution, route) = state.resolver.resolve_observed(host, target);
    let global = state.global.load();
    // A trusted proxy's client (use-forwarded-headers, enable-real-ip).
    let forwarded = client.for_request(&global.config.forwarding, request.headers());
    let client = forwarded.as_ref().unwrap_or(client);
    let logged = state.access_log.begin(
        &mut request,
        client,
        &global,
        &resolution,
        route.as_ref(),
        started,
    );
    let mut cookies = AuthCookies::default();
    let mut response = if global.config.refusal.is_some() {
        // A ConfigMap setting that protects everything cannot be applied.
        error_response(StatusCode::SERVICE_UNAVAILABLE)
    } else if global.blocks(client.client_ip, request.headers().get(header::USER_AGENT)) {
        debug!(client = %client.client_ip, host, "blocked by block-cidrs or block-user-agents");
        error_response(StatusCode::FORBIDDEN)
    } else {
        route_request(
            request,
            host,
            resolution,
            client,
            state,
            &global,
            &mut cookies,
        )
        .await
    };
    cookies.apply(&mut response);
    mark_response(response.headers_mut());
    let hsts = match &global.hsts {
        Some(hsts) => hsts.as_ref(),
        None => state.settings.hsts.as_ref(),
    };
    if client.scheme == "https"
        && let Some(hsts) = hsts
    {
        response
            .headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    let route = route.as_ref().unwrap_or(state.metrics.unrouted());
    route.observe(response.status().as_u16(), started.elapsed());
    match logged {
        Some(entry) => state.access_log.attach(entry, response),
        None => response,
    }
}

async fn route_request(
    mut request: Request<Incoming>,
    host: &str,
    resolution: Resolution,
    client: &ClientContext,
    state: &ProxyState,
    global: &Global,
    cookies: &mut AuthCookies,
) -> Response<ProxyBody> {
    // With use-forwarded-headers, a trusted proxy's X-Forwarded-Proto says
    // how the client came (ingress-nginx's `$pass_access_scheme`).
    let plain_http = match request.headers().get(X_FORWARDED_PROTO) {
        Some(proto) if client.trust_forwarded => proto.as_bytes().eq_ignore_ascii_case(b"http"),
        _ => client.scheme == "http",
    };
    // As nginx's phases order them: the redirects (to HTTPS, then the
    // Ingress's own), then the source ranges (403), then the backend.
    let (to_https, policy) = match &resolution {
        Resolution::Upstream(upstream) => (upstream.https_redirect, upstream.policy.clone()),
        Resolution::Unavailable {
            https_redirect,
            policy,
        } => (*https_redirect, policy.clone()),
        Resolution::NoRoute => (false, None),
    };
    // `from-to-www-redirect`'s own server: everything goes to the host,
    // as ingress-nginx's `ngx_srv_redirect.lua` sends it (scheme, port,
    // the target without a trailing `/`).
    if let Some(target) = policy.as_ref().and_then(|p| p.www_redirect_to.as_deref()) {
        let status = global
            .config
            .http_redirect_code
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or(StatusCode::PERMANENT_REDIRECT);
        let scheme = if plain_http { "http" } else { "https" };
        let uri = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let uri = uri.strip_suffix('/').unwrap_or(uri);
        let port = client.listener_port;
        return redirect_to(status, &format!("{scheme}://{target}:{port}{uri}"));
    }
    // Client certificates are checked as nginx reads an HTTPS request:
    // first (plain HTTP on its way to HTTPS is not asked).
    if !(plain_http && to_https)
        && let Some(refused) =
            super::auth::check_client_cert(policy.as_deref(), host, client, &mut request)
    {
        return refused;
    }
    // `app-root` is the server's, before any location: first.
    if let Some(root) = policy.as_ref().and_then(|p| p.app_root.as_deref())
        && request.uri().path() == "/"
    {
        return app_root_redirect(client.scheme, host, root);
    }
    if plain_http && to_https {
        let status = global
            .config
            .http_redirect_code
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or(StatusCode::PERMANENT_REDIRECT);
        let keep_slash = policy.as_ref().is_some_and(|p| p.preserve_trailing_slash);
        return https_redirect(
            &request,
            host,
            state.settings.https_port,
            status,
            keep_slash,
        );
    }
    if let Some(redirect) = policy.as_ref().and_then(|p| p.redirect.as_ref()) {
        return redirect_response(redirect);
    }
    // CORS for an allowed origin: a preflight (any OPTIONS) is answered
    // here, other responses get the headers.
    let cors = policy
        .as_ref()
        .and_then(|p| p.cors.as_ref())
        .and_then(|cors| {
            let origin = request.headers().get(header::ORIGIN);
            let allowed = cors.allow_origin(origin.and_then(|o| o.to_str().ok()))?;
            let allowed = match origin {
                Some(origin) if origin.as_bytes() == allowed.as_bytes() => origin.clone(),
                _ => HeaderValue::from_static("*"),
            };
            Some((cors, allowed))
        });
    if let Some((cors, origin)) = &cors
        && request.method() == Method::OPTIONS
    {
        return cors_preflight(cors, origin);
    }
    // nginx's preaccess phase (limit_req, limit_conn) comes before its
    // access phase; clients in limit-allowlist are not limited.
    let limited = policy.as_ref().filter(|policy| {
        !policy
            .rate_limit_exempt
            .iter()
            .any(|range| range.contains(client.client_ip))
    });
    if let Some(policy) = limited
        && !policy.rate_limits.is_empty()
        && !state.rate_limiter.admit(
            Arc::as_ptr(policy) as usize,
            &policy.rate_limits,
            client.client_ip,
            std::time::Instant::now(),
        )
    {
        debug!(client = %client.client_ip, host, "over the route's request rate");
        return error_response(limit_status(global.config.limit_req_status_code));
    }
    let slot = match limited.and_then(|p| p.max_connections.map(|limit| (p, limit))) {
        Some((policy, limit)) => {
            let id = Arc::as_ptr(policy) as usize;
            match state
                .connection_limiter
                .acquire(id, client.client_ip, limit)
            {
                Some(slot) => Some(slot),
                None => {
                    debug!(client = %client.client_ip, host, "over the route's connections");
                    return error_response(limit_status(global.config.limit_conn_status_code));
                }
            }
        }
        None => None,
    };
    // nginx's access phase: the source ranges (the route's and the
    // ConfigMap's), then authentication; both must pass (`satisfy all`),
    // or either (`satisfy any`).
    let ranges = policy.as_ref().and_then(|p| p.access.as_ref());
    let in_ranges = global
        .has_source_ranges(ranges)
        .then(|| global.admits(ranges, client.client_ip));
    let either = policy
        .as_ref()
        .is_some_and(|p| p.satisfy_any && (p.basic_auth.is_some() || p.external_auth.is_some()));
    if in_ranges == Some(false) && !either {
        debug!(client = %client.client_ip, host, "refused by the route's source ranges");
        return error_response(StatusCode::FORBIDDEN);
    }
    let limits = RequestLimits::of(&state.settings, &global.config, policy.as_deref());
    if either && in_ranges == Some(true) {
        // Let in by address; the password still does not go upstream.
        if policy.as_ref().is_some_and(|p| p.basic_auth.is_some()) {
            request.headers_mut().remove(header::AUTHORIZATION);
        }
    } else if let Some(policy) = policy.as_deref() {
        let timeouts = (
            limits.connect_timeout.unwrap_or(Duration::from_secs(5)),
            limits.read_timeout,
        );
        if let Err(denied) = state
            .authenticator
            .authenticate(policy, &mut request, host, client, timeouts, cookies)
            .await
        {
            return denied;
        }
    }
    // The ConfigMap's `global-auth-url`, for a route without an `auth-url`
    // of its own whose Ingress does not opt out (`enable-global-auth`).
    if let Some(global_auth) = &global.auth_policy
        && !policy
            .as_ref()
            .is_some_and(|p| p.skip_global_auth || p.external_auth.is_some())
    {
        let timeouts = (
            limits.connect_timeout.unwrap_or(Duration::from_secs(5)),
            limits.read_timeout,
        );
        if let Err(denied) = state
            .authenticator
            .authenticate(global_auth, &mut request, host, client, timeouts, cookies)
            .await
        {
            return denied;
        }
    }
    let (mut upstream, to_canary) = match resolution {
        Resolution::Upstream(upstream) => canary::choose(upstream, request.headers()),
        Resolution::Unavailable { .. } => return error_response(StatusCode::SERVICE_UNAVAILABLE),
        Resolution::NoRoute => return error_response(StatusCode::NOT_FOUND),
    };
    let mut errors = upstream.errors.take();
    if upstream.endpoints.is_empty() {
        // The Ingress's `default-backend` serves a route without
        // endpoints, told so (X-Code: 503), as in ingress-nginx.
        match errors.take() {
            Some(pages) if pages.own && pages.upstream.is_some() => {
                pages.mark_unavailable(request.headers_mut());
                upstream = pages.upstream.expect("checked");
            }
            _ => {
                debug!(upstream = %upstream.name, "no ready endpoints");
                return error_response(StatusCode::SERVICE_UNAVAILABLE);
            }
        }
    }
    // The statuses whose answers the errors backend replaces: the
    // Ingress's, else the ConfigMap's.
    let intercepted: &[u16] = match policy.as_ref().map(|p| &p.custom_http_errors) {
        Some(codes) if !codes.is_empty() => codes,
        _ => &global.config.custom_http_errors,
    };
    let original = (errors.is_some() && !intercepted.is_empty())
        .then(|| errors::OriginalRequest::of(&request));
    // Mirroring: a copy of the request goes to the mirror; when it carries
    // the body, the body is read whole first, as nginx does.
    let mut request = request.map(Either::Left);
    if let Some(mirror) = policy.as_ref().and_then(|p| p.mirror.as_ref()) {
        let body = if mirror.request_body && !body_is_empty(request.body()) {
            let (parts, body) = request.into_parts();
            let limit = usize::try_from(limits.max_body_size).unwrap_or(usize::MAX);
            let whole = match Limited::new(body, limit).collect().await {
                Ok(whole) => whole.to_bytes(),
                Err(error) => return error_response(status_for_body_error(&error)),
            };
            request = Request::from_parts(parts, Either::Right(Full::new(whole.clone())));
            Some(whole)
        } else {
            None
        };
        let values = RequestValues {
            request: &request,
            http_host: host,
            client,
        };
        mirror::send_copy(mirror, &values, body, limits.read_timeout);
    }
    // Cookie affinity: the session's endpoint first (a canary's only with
    // `affinity-canary-behavior: sticky`, as ingress-nginx).
    let session = policy
        .as_ref()
        .and_then(|p| p.affinity.as_ref())
        .filter(|affinity| !to_canary || affinity.canary_sticky)
        .and_then(|affinity| {
            let pick = affinity::pick(
                affinity,
                &upstream.name,
                &upstream.endpoints,
                request.headers(),
            )?;
            let user_agent = request.headers().get(header::USER_AGENT).cloned();
            Some((affinity, pick, user_agent))
        });
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.max_body_size) {
        return error_response(StatusCode::PAYLOAD_TOO_LARGE);
    }

    let client_version = request.version();
    let protocol = policy
        .as_ref()
        .map_or(UpstreamProtocol::Http1, |p| p.upstream_protocol)
        .for_client(!plain_http);
    // No upgrade over HTTP/2 (nginx's grpc_pass has none either).
    let upgrade = is_upgrade_request(&request) && !protocol.is_http2();
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let rewrite = upstream.rewrite.as_deref();
    // The session's endpoint (cookie affinity), else the one the route's
    // `upstream-hash-by` key hashes to.
    let preferred = session
        .as_ref()
        .map(|(_, pick, _)| pick.endpoint)
        .or_else(|| {
            let template = policy.as_ref()?.hash_by.as_ref()?;
            let values = RequestValues {
                request: &request,
                http_host: host,
                client,
            };
            let key = template.render(|variable| values.value(variable));
            balance::consistent_order(&upstream.endpoints, key.as_bytes())
                .first()
                .copied()
        });
    // `load-balance: ewma`: the better of two by response time.
    let ewma = policy
        .as_ref()
        .and_then(|p| p.load_balance)
        .or(global.config.load_balance)
        == Some(LoadBalance::Ewma);
    let preferred = match preferred {
        None if ewma => state.ewma.pick(&upstream.endpoints),
        preferred => preferred,
    };
    // The cookie of a new session (or of one moved), for the endpoint that served.
    let session_cookie = |served: SocketAddr| {
        session.and_then(|(affinity, pick, user_agent)| {
            let pick = if served != pick.endpoint && affinity.change_on_failure {
                affinity::moved_to(affinity, &upstream.name, &upstream.endpoints, served)?
            } else {
                pick
            };
            if !pick.new {
                return None;
            }
            affinity::set_cookie(
                affinity,
                &pick.key,
                &upstream.name,
                upstream.route_path.as_deref().unwrap_or("/"),
                !plain_http,
                user_agent.as_ref(),
                std::time::SystemTime::now(),
            )
        })
    };
    if protocol != UpstreamProtocol::Http1 {
        let tls = policy.as_ref().and_then(|p| p.upstream_tls.as_deref());
        let upstream_request = match client_request(
            request,
            host,
            client,
            &limits,
            rewrite,
            policy.as_deref(),
            upgrade,
            protocol,
        ) {
            Ok(request) => request,
            Err(status) => return error_response(status),
        };
        let asked = Instant::now();
        let (mut response, served) = match exchange_client(
            upstream_request,
            &upstream,
            preferred,
            protocol,
            tls,
            &limits,
            state,
        )
        .await
        {
            Ok(exchanged) => exchanged,
            Err(status) => return error_response(status),
        };
        if let Some(latency) = &upstream.latency {
            latency.observe(asked.elapsed().as_secs_f64());
        }
        if ewma {
            state.ewma.record(served, asked.elapsed());
        }
        let canary = to_canary.then_some(&upstream.name);
        let status = response.status();
        let extensions = response.extensions_mut();
        state
            .access_log
            .served(extensions, served, status, asked, canary);
        if intercepted.contains(&response.status().as_u16())
            && let (Some(pages), Some(original)) = (&errors, &original)
        {
            let code = response.status().as_u16();
            drop(response);
            return error_page(pages, original, code, client, &limits, state, slot).await;
        }
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                warn!(upstream = %upstream.name, "101 Switching Protocols to a request that did not ask to upgrade");
                return error_response(StatusCode::BAD_GATEWAY);
            };
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let name = upstream.name.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client_io, upstream_io)) => {
                        let _ = tokio::io::copy_bidirectional(
                            &mut TokioIo::new(client_io),
                            &mut TokioIo::new(upstream_io),
                        )
                        .await;
                    }
                    Err(error) => debug!(upstream = %name, %error, "upgrade failed"),
                }
            });
            let (mut parts, _) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers, true);
            return Response::from_parts(parts, Empty::new().map_err(|e| match e {}).boxed());
        }
        let (mut parts, body) = response.into_parts();
        parts.version = Version::HTTP_11;
        remove_hop_by_hop(&mut parts.headers, false);
        if let Some(policy) = &policy {
            rewrite_response_headers(&mut parts.headers, policy);
        }
        if client_version < Version::HTTP_2 && is_grpc(&parts.headers) {
            // HTTP/1.1 sends only the trailers announced (hyper's rule);
            // HTTP/2 needs no announcement, so gRPC servers make none.
            parts.headers.insert(
                header::TRAILER,
                HeaderValue::from_static("grpc-status, grpc-message, grpc-status-details-bin"),
            );
        }
        if let Some((cors, origin)) = &cors {
            set_cors(&mut parts.headers, cors, origin);
        }
        if let Some(cookie) = session_cookie(served) {
            parts.headers.append(header::SET_COOKIE, cookie);
        }
        let body = paced(
            GuardedBody::new(body, limits.read_timeout, None),
            policy.as_deref(),
        );
        return Response::from_parts(parts, Holding::new(body, slot).boxed());
    }
    let upstream_request = match upstream_request(
        request,
        host,
        client,
        &limits,
        rewrite,
        policy.as_deref(),
        upgrade,
    ) {
        Ok(request) => request,
        Err(status) => return error_response(status),
    };
    let asked = Instant::now();
    let (exchanged, served) =
        match exchange(upstream_request, &upstream, preferred, &limits, state).await {
            Ok(exchanged) => exchanged,
            Err(status) => return error_response(status),
        };
    // A custom error: the errors backend's answer instead.
    if let Exchanged::Response(parts, _) = &exchanged
        && intercepted.contains(&parts.status.as_u16())
        && let (Some(pages), Some(original)) = (&errors, &original)
    {
        let code = parts.status.as_u16();
        drop(exchanged);
        return error_page(pages, original, code, client, &limits, state, slot).await;
    }
    let session_cookie = session_cookie(served);
    if let Some(latency) = &upstream.latency {
        latency.observe(asked.elapsed().as_secs_f64());
    }
    if ewma {
        state.ewma.record(served, asked.elapsed());
    }

    match exchanged {
        Exchanged::Response(mut parts, body) => {
            let canary = to_canary.then_some(&upstream.name);
            let extensions = &mut parts.extensions;
            state
                .access_log
                .served(extensions, served, parts.status, asked, canary);
            remove_hop_by_hop(&mut parts.headers, false);
            if let Some(policy) = &policy {
                rewrite_response_headers(&mut parts.headers, policy);
            }
            if let Some((cors, origin)) = &cors {
                set_cors(&mut parts.headers, cors, origin);
            }
            if let Some(cookie) = session_cookie {
                parts.headers.append(header::SET_COOKIE, cookie);
            }
            let body = paced(
                GuardedBody::new(body, limits.read_timeout, None),
                policy.as_deref(),
            );
            Response::from_parts(parts, Holding::new(body, slot).boxed())
        }
        Exchanged::Upgraded(mut parts, upstream_io) => {
            let Some(client_upgrade) = client_upgrade else {
                warn!(upstream = %upstream.name, "101 Switching Protocols to a request that did not ask to upgrade");
                return error_response(StatusCode::BAD_GATEWAY);
            };
            let name = upstream.name.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match client_upgrade.await {
                    Ok(client_io) => bridge(TokioIo::new(client_io), upstream_io).await,
                    Err(error) => debug!(upstream = %name, %error, "client upgrade failed"),
                }
            });
            remove_hop_by_hop(&mut parts.headers, true);
            Response::from_parts(parts, Empty::new().map_err(|e| match e {}).boxed())
        }
    }
}

/// The limits of one request: the proxy's settings, with what the route's
/// policy sets over them.
#[derive(Debug, Clone, Copy)]
struct RequestLimits {
    /// Largest request body (`u64::MAX`: none).
    max_body_size: u64,
    read_timeout: Duration,
    send_timeout: Duration,
    /// `None`: the pool's.
    connect_timeout: Option<Duration>,
}

impl RequestLimits {
    fn of(
        settings: &ProxySettings,
        global: &ControllerConfig,
        policy: Option<&RoutePolicy>,
    ) -> Self {
        // Read in place: a request never copies its route's policy. The
        // route's Ingress first, then the ConfigMap, then the flags.
        let field = |get: fn(&RoutePolicy) -> Option<Duration>| policy.and_then(get);
        Self {
            // nginx's `client_max_body_size 0` is no limit.
            max_body_size: match policy
                .and_then(|p| p.max_body_size)
                .or(global.proxy_body_size)
            {
                Some(0) => u64::MAX,
                Some(bytes) => bytes,
                None => settings.max_body_size,
            },
            read_timeout: field(|p| p.read_timeout)
                .or(global.proxy_read_timeout)
                .unwrap_or(settings.read_timeout),
            send_timeout: field(|p| p.send_timeout)
                .or(global.proxy_send_timeout)
                .unwrap_or(settings.send_timeout),
            connect_timeout: field(|p| p.connect_timeout).or(global.proxy_connect_timeout),
        }
    }
}

/// `app-root`: a 302 from `/` to the application's root on the same
/// scheme and host, as ingress-nginx answers it.
fn app_root_redirect(scheme: &str, host: &str, root: &str) -> Response<ProxyBody> {
    redirect_to(StatusCode::FOUND, &format!("{scheme}://{host}{root}"))
}

/// The errors backend's answer for an upstream answer with `code` to
/// `original` (the edge's own page for `code` without an errors backend).
async fn error_page(
    pages: &ErrorPages,
    original: &errors::OriginalRequest,
    code: u16,
    client: &ClientContext,
    limits: &RequestLimits,
    state: &ProxyState,
    slot: Option<ConnectionSlot>,
) -> Response<ProxyBody> {
    let Some(target) = &pages.upstream else {
        return error_response(parts_status(code));
    };
    let request = pages.request(original, code, &client.client_ip_header());
    match exchange(request, target, None, limits, state).await {
        Ok((Exchanged::Response(mut parts, body), _)) => {
            remove_hop_by_hop(&mut parts.headers, false);
            let body = GuardedBody::new(body, limits.read_timeout, None);
            Response::from_parts(parts, Holding::new(body, slot).boxed())
        }
        Ok((Exchanged::Upgraded(..), _)) => error_response(StatusCode::BAD_GATEWAY),
        Err(status) => error_response(status),
    }
}

/// A response `body` at the pace the route's `limit-rate` asks, if any.
fn paced<B>(body: B, policy: Option<&RoutePolicy>) -> ProxyBody
where
    B: hyper::body::Body<Data = Bytes, Error = BoxError> + Send + Sync + Unpin + 'static,
{
    match policy.and_then(|p| p.response_rate) {
        Some(rate) => RateLimited::new(body, rate.bytes_per_second, rate.after).boxed(),
        None => body.boxed(),
    }
}

/// `code` as a status (it came from one).
fn parts_status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY)
}

/// The status of a request over a limit: `limit-req-status-code` or
/// `limit-conn-status-code` of the ConfigMap, else 503 as ingress-nginx.
fn limit_status(code: Option<u16>) -> StatusCode {
    code.and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// The edge's own redirect page with `status` to `location`; a location
/// that cannot be a header (from a client's `Host`) is a 400.
fn redirect_to(status: StatusCode, location: &str) -> Response<ProxyBody> {
    let Ok(location) = HeaderValue::from_str(location) else {
        return error_response(StatusCode::BAD_REQUEST);
    };
    let mut response = error_response(status);
    response.headers_mut().insert(header::LOCATION, location);
    response
}

/// A CORS preflight answered by the edge, as ingress-nginx does: 204 with
/// the CORS headers and an empty plain-text body.
fn cors_preflight(cors: &Cors, origin: &HeaderValue) -> Response<ProxyBody> {
    let mut response = Response::new(Empty::new().map_err(|e| match e {}).boxed());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    set_cors(headers, cors, origin);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain charset=UTF-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

/// The redirect a route's Ingress asks for (`permanent-redirect`,
/// `temporal-redirect`); the location was checked to be a valid header
/// when the configuration was applied.
fn redirect_response(redirect: &Redirect) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    redirect_to(status, &redirect.location)
}

/// Carries an upgraded connection's bytes both ways until either side
/// closes; the bytes that came with the upstream's `101` go first.
async fn bridge<C>(mut client_io: C, mut upstream: UpgradedStream)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt as _;
    if !upstream.already_read.is_empty()
        && client_io
            .write_all_buf(&mut upstream.already_read)
            .await
            .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client_io, &mut upstream.stream).await;
}

/// A 308 to the same host and request target over HTTPS, as ingress-nginx
/// answers plain HTTP for hosts with TLS.
fn https_redirect<B>(
    request: &Request<B>,
    host: &str,
    https_port: u16,
    status: StatusCode,
    keep_trailing_slash: bool,
) -> Response<ProxyBody> {
    let name = ingress_model::host::request_host(host);
    let name = if name.contains(':') {
        format!("[{name}]")
    } else {
        name.into_owned()
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    // As ingress-nginx: a trailing `/` of the request target goes, unless
    // `preserve-trailing-slash` (`/` itself becomes the bare origin).
    let target = match target.strip_suffix('/') {
        Some(trimmed) if !keep_trailing_slash => trimmed,
        _ => target,
    };
    redirect_to(status, &format!("https://{name}{port}{target}"))
}

/// The host a request names: `Host`, else the URI's authority (HTTP/2).
/// A header value shares the request's buffer: no copy for HTTP/1.
fn request_host<B>(request: &Request<B>) -> Option<HeaderValue> {
    match request.headers().get(header::HOST) {
        Some(host) => Some(host.clone()),
        None => request
            .uri()
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok()),
    }
}

/// Whether a response is gRPC's (`application/grpc`, `application/grpc+proto`...).
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn is_upgrade_request<B>(request: &Request<B>) -> bool {
    request.version() == Version::HTTP_11
        && request.headers().contains_key(header::UPGRADE)
        && request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// The request as it goes upstream: HTTP/1.1, origin-form URI, rewritten headers.
fn upstream_request(
    request: Request<RequestBody>,
    host: &str,
    client: &ClientContext,
    limits: &RequestLimits,
    rewrite: Option<&str>,
    policy: Option<&RoutePolicy>,
    upgrade: bool,
) -> Result<OutgoingRequest, StatusCode> {
    let (PreparedHead { head, forwarded }, body) =
        prepare_upstream(request, host, client, limits, rewrite, policy, upgrade)?;
    Ok(OutgoingRequest::new(
        &head,
        forwarded.outgoing(&head.headers),
        body,
    ))
}

/// What goes upstream whatever the protocol: the target (rewritten,
/// origin-form), hop-by-hop headers out, `Host` (`upstream-vhost`),
/// `X-Forwarded-*`, and the body with its limits.
fn prepare_upstream(
    request: Request<RequestBody>,
    host: &str,
    client: &ClientContext,
    limits: &RequestLimits,
    rewrite: Option<&str>,
    policy: Option<&RoutePolicy>,
    upgrade: bool,
) -> Result<(PreparedHead, ProxyBody), StatusCode> {
    let (mut parts, body) = request.into_parts();
    if let Some(target) = rewrite {
        parts.uri = Uri::try_from(target).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    }
    // HTTP/1.1 requests are origin-form already; HTTP/2's and absolute-form
    // ones lose their scheme and authority.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        parts.uri = Uri::try_from(path_and_query).map_err(|_| StatusCode::BAD_REQUEST)?;
    }
    parts.version = Version::HTTP_11;
    remove_hop_by_hop(&mut parts.headers, upgrade);
    if !parts.headers.contains_key(header::HOST) && !host.is_empty() {
        let value = HeaderValue::from_str(host).map_err(|_| StatusCode::BAD_REQUEST)?;
        parts.headers.insert(header::HOST, value);
    }
    if let Some(prefix) = policy.and_then(|p| p.forwarded_prefix.as_deref())
        && let Ok(value) = HeaderValue::from_str(prefix)
    {
        parts
            .headers
            .insert(HeaderName::from_static("x-forwarded-prefix"), value);
    }
    // X-Forwarded-Host is the client's Host, whatever goes upstream.
    let forwarded = ForwardedHeaders::new(&parts.headers, client);
    if let Some(vhost) = policy.and_then(|p| p.upstream_vhost.as_deref())
        && let Ok(value) = HeaderValue::from_str(vhost)
    {
        parts.headers.insert(header::HOST, value);
    }
    // An upgrade request may carry a body (curl's `Upgrade: h2c` POST) that
    // a backend declining the upgrade reads: it goes up like any other.
    let body: ProxyBody = if body_is_empty(&body) {
        Empty::new().map_err(|e| match e {}).boxed()
    } else {
        GuardedBody::new(body, limits.send_timeout, Some(limits.max_body_size)).boxed()
    };
    Ok((
        PreparedHead {
            head: parts,
            forwarded,
        },
        body,
    ))
}

/// The request as it goes upstream over hyper's client (HTTP/2, or
/// HTTP/1.1 over TLS): the headers of [`upstream_request`]; for HTTP/2 an
/// absolute URI whose authority is the `Host` that would go upstream, and
/// `TE: trailers` kept when the client sent it (gRPC servers ask for it).
#[allow(clippy::too_many_arguments)]
fn client_request(
    request: Request<RequestBody>,
    host: &str,
    client: &ClientContext,
    limits: &RequestLimits,
    rewrite: Option<&str>,
    policy: Option<&RoutePolicy>,
    upgrade: bool,
    protocol: UpstreamProtocol,
) -> Result<Request<ProxyBody>, StatusCode> {
    let te_trailers = request
        .headers()
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("trailers"));
    let (mut parts, body) =
        prepare_upstream(request, host, client, limits, rewrite, policy, upgrade)?;
    let headers: http::HeaderMap = parts
        .forwarded
        .outgoing(&parts.head.headers)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    parts.head.headers = headers;
    if protocol.is_http2() {
        let authority = parts
            .head
            .headers
            .remove(header::HOST)
            .and_then(|host| http::uri::Authority::try_from(host.as_bytes()).ok())
            .ok_or(StatusCode::BAD_REQUEST)?;
        let scheme = if protocol.uses_tls() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        };
        let mut uri = http::uri::Parts::from(parts.head.uri);
        uri.scheme = Some(scheme);
        uri.authority = Some(authority);
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        parts.head.uri = Uri::from_parts(uri).map_err(|_| StatusCode::BAD_REQUEST)?;
        parts.head.version = Version::HTTP_2;
        if te_trailers {
            parts
                .head
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
    Ok(Request::from_parts(parts.head, body))
}

/// A request's head as it goes upstream, before it is encoded.
struct PreparedHead {
    head: http::request::Parts,
    forwarded: ForwardedHeaders,
}

/// Sends `request` over hyper's client to one of the upstream's endpoints,
/// as [`exchange`] does: a failed connect moves on to the next endpoint,
/// once; a connection that closed under a request not yet sent is
/// replaced, once.
async fn exchange_client(
    mut request: Request<ProxyBody>,
    upstream: &Upstream,
    preferred: Option<SocketAddr>,
    protocol: UpstreamProtocol,
    tls: Option<&UpstreamTls>,
    limits: &RequestLimits,
    state: &ProxyState,
) -> Result<(Response<Incoming>, SocketAddr), StatusCode> {
    const ATTEMPTS: usize = 2;
    let upstream_host = match request.uri().authority() {
        Some(authority) => authority.as_str().to_owned(),
        None => request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    };
    // The session's endpoint first (cookie affinity), then round-robin.
    let candidates = preferred
        .into_iter()
        .chain(
            upstream
                .round_robin
                .order(&upstream.endpoints)
                .copied()
                .filter(move |endpoint| Some(*endpoint) != preferred),
        )
        .take(ATTEMPTS);
    for endpoint in candidates {
        for _ in 0..2 {
            let connection = match state
                .clients
                .connection(
                    endpoint,
                    protocol,
                    tls,
                    &upstream_host,
                    limits.connect_timeout,
                )
                .await
            {
                Ok(connection) => connection,
                Err(error) => {
                    warn!(upstream = %upstream.name, %error, "upstream connect failed");
                    break;
                }
            };
            let deadline = tokio::time::Instant::now() + limits.read_timeout;
            match tokio::time::timeout_at(deadline, connection.send(request)).await {
                Err(_) => {
                    warn!(upstream = %upstream.name, %endpoint, "upstream timed out");
                    return Err(StatusCode::GATEWAY_TIMEOUT);
                }
                Ok(Ok(response)) => return Ok((response, endpoint)),
                Ok(Err(SendFailure::NotSent(unsent))) => {
                    debug!(%endpoint, "upstream connection closed; sending on a new one");
                    request = *unsent;
                }
                Ok(Err(SendFailure::Failed(error))) => {
                    if let Some(status) = client_body_fault(&error) {
                        return Err(status);
                    }
                    warn!(upstream = %upstream.name, %endpoint, %error, "upstream failed");
                    return Err(StatusCode::BAD_GATEWAY);
                }
            }
        }
    }
    Err(StatusCode::BAD_GATEWAY)
}

/// A request's body as it goes upstream: the client's, streamed, or read
/// whole (for a mirror).
type RequestBody = Either<Incoming, Full<Bytes>>;

fn body_is_empty(body: &RequestBody) -> bool {
    use hyper::body::Body as _;
    body.is_end_stream()
}

/// Sends `request` to one of the upstream's endpoints: a failed connect
/// moves on to the next endpoint, once; a pooled connection that the
/// endpoint had closed is replaced by a new one to the same endpoint.
async fn exchange(
    mut request: OutgoingRequest,
    upstream: &Upstream,
    preferred: Option<SocketAddr>,
    limits: &RequestLimits,
    state: &ProxyState,
) -> Result<(Exchanged, SocketAddr), StatusCode> {
    // `proxy-next-upstream`: ingress-nginx's `error timeout`, 3 tries,
    // unless the route says otherwise.
    let default_next = NextUpstream::default();
    let next = upstream
        .policy
        .as_ref()
        .and_then(|p| p.next_upstream.as_ref())
        .unwrap_or(&default_next);
    let tries = match next.tries {
        0 => usize::MAX,
        tries => tries as usize,
    };
    let started = tokio::time::Instant::now();
    let in_time = || next.timeout.is_none_or(|limit| started.elapsed() < limit);
    // The session's endpoint first (cookie affinity), then round-robin.
    let mut candidates = preferred
        .into_iter()
        .chain(
            upstream
                .round_robin
                .order(&upstream.endpoints)
                .copied()
                .filter(move |endpoint| Some(*endpoint) != preferred),
        )
        .take(tries)
        .peekable();
    // What failed last, if every endpoint does.
    let mut failed = StatusCode::BAD_GATEWAY;
    while let Some(endpoint) = candidates.next() {
        let more = candidates.peek().is_some() && in_time();
        // A copy to try again with, when trying again is allowed.
        let retry = more
            .then(|| request.copy_for_retry(next.non_idempotent))
            .flatten();
        let mut checkout = match state
            .pool
            .checkout_within(endpoint, limits.connect_timeout)
            .await
        {
            Ok(checkout) => checkout,
            Err(error) => {
                warn!(upstream = %upstream.name, %error, "upstream connect failed");
                // Nothing was sent: any method may go to the next one.
                if next.on_error {
                    continue;
                }
                return Err(StatusCode::BAD_GATEWAY);
            }
        };
        let deadline = tokio::time::Instant::now() + limits.read_timeout;
        loop {
            let exchanged = tokio::time::timeout_at(
                deadline,
                checkout
                    .connection
                    .exchange(request, checkout.reused, &state.pool),
            )
            .await;
            let failure = match exchanged {
                Err(_) => {
                    warn!(upstream = %upstream.name, %endpoint, "upstream timed out");
                    match retry {
                        Some(copy) if next.on_timeout => {
                            request = copy;
                            failed = StatusCode::GATEWAY_TIMEOUT;
                            break;
                        }
                        _ => return Err(StatusCode::GATEWAY_TIMEOUT),
                    }
                }
                Ok(Ok(Exchanged::Response(parts, _)))
                    if next.on_status.contains(&parts.status.as_u16()) && retry.is_some() =>
                {
                    debug!(upstream = %upstream.name, %endpoint, status = %parts.status, "trying the next endpoint");
                    request = retry.expect("checked");
                    failed = parts.status;
                    break;
                }
                Ok(Ok(exchanged)) => return Ok((exchanged, endpoint)),
                Ok(Err(failure)) => failure,
            };
            match failure {
                ExchangeFailure::Closed(unsent) => {
                    debug!(%endpoint, "pooled connection closed by the endpoint; sending on a new one");
                    request = unsent;
                    match state
                        .pool
                        .connect_within(endpoint, limits.connect_timeout)
                        .await
                    {
                        Ok(connection) => {
                            checkout.connection = connection;
                            checkout.reused = false;
                        }
                        Err(error) => {
                            warn!(upstream = %upstream.name, %error, "upstream connect failed");
                            break;
                        }
                    }
                }
                ExchangeFailure::RequestBody(error) => return Err(status_for_body_error(&error)),
                ExchangeFailure::Upstream(error) => {
                    warn!(upstream = %upstream.name, %endpoint, %error, "upstream failed");
                    match retry {
                        Some(copy) if next.on_error => {
                            request = copy;
                            failed = StatusCode::BAD_GATEWAY;
                            break;
                        }
                        _ => return Err(StatusCode::BAD_GATEWAY),
                    }
                }
            }
        }
        if !in_time() {
            break;
        }
    }
    Err(failed)
}

/// The status for a request body that could not be sent: too large (413),
/// too slow (408), or broken by the client (400).
fn status_for_body_error(error: &BoxError) -> StatusCode {
    if let Some(status) = client_body_fault(error.as_ref()) {
        return status;
    }
    debug!(%error, "request body failed");
    StatusCode::BAD_REQUEST
}

/// 413 or 408 when `error` comes from a request body too large or too
/// slow (anywhere in its chain of causes).
fn client_body_fault(error: &(dyn std::error::Error + 'static)) -> Option<StatusCode> {
    let mut source = Some(error);
    while let Some(cause) = source {
        if cause.downcast_ref::<BodyTooLarge>().is_some()
            || cause
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
        {
            return Some(StatusCode::PAYLOAD_TOO_LARGE);
        }
        if cause.downcast_ref::<BodyTimeout>().is_some() {
            return Some(StatusCode::REQUEST_TIMEOUT);
        }
        source = cause.source();
    }
    None
}

/// A small HTML error page, as nginx answers.
pub fn error_response(status: StatusCode) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("");
    let html = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>xdp-ingress</center>\r\n</body>\r\n</html>\r\n",
        code = status.as_u16()
    );
    let mut response = Response::new(Full::new(Bytes::from(html)).map_err(|e| match e {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;
    use hyper::{client::conn::http1 as client_http1, server::conn::http1 as server_http1};

    use ingress_model::access::{SourceRanges, parse_ranges};

    use super::*;
    use crate::proxy::upstream::{UpstreamSettings, tests::raw_backend};
    use ingress_model::upstream::{UpstreamProtocol, UpstreamTls};

    /// Every request goes to one endpoint.
    struct Fixed(SocketAddr);

    impl Resolve for Fixed {
        fn resolve(&self, _host: &str, _path: &str) -> Resolution {
            Resolution::Upstream(upstream(self.0))
        }
    }

    /// Routes by path: `/none` matches nothing (404), `/down` an unavailable
    /// backend (503), `/empty` a Service without endpoints (503), the rest
    /// goes to one endpoint.
    struct ByPath(SocketAddr);

    impl Resolve for ByPath {
        fn resolve(&self, host: &str, path: &str) -> Resolution {
            match path {
                "/none" => Resolution::NoRoute,
                "/down" => Resolution::Unavailable {
                    https_redirect: false,
                    policy: None,
                },
                // Only for clients the test does not have (it is on loopback).
                "/guarded" => Resolution::Upstream(Upstream {
                    policy: Some(Arc::new(RoutePolicy {
                        access: Some(SourceRanges {
                            allow: parse_ranges("198.18.0.0/15").unwrap(),
                            deny: Vec::new(),
                        }),
                        ..RoutePolicy::default()
                    })),
                    ..upstream(self.0)
                }),
                "/guarded-down" => Resolution::Unavailable {
                    https_redirect: false,
                    policy: Some(Arc::new(RoutePolicy {
                        access: Some(SourceRanges {
                            allow: Vec::new(),
                            deny: parse_ranges("127.0.0.0/8").unwrap(),
                        }),
                        ..RoutePolicy::default()
                    })),
                },
                // A redirect wins over the backend and the source ranges.
                "/moved" => Resolution::Unavailable {
                    https_redirect: false,
                    policy: Some(Arc::new(RoutePolicy {
                        redirect: Some(
                            Redirect::new("https://new.example/x", Some(308), 301).unwrap(),
                        ),
                        access: Some(SourceRanges {
                            allow: Vec::new(),
                            deny: parse_ranges("127.0.0.0/8").unwrap(),
                        }),
                        ..RoutePolicy::default()
                    })),
                },
                "/empty" => Resolution::Upstream(Upstream {
                    endpoints: Arc::from([]),
                    ..upstream(self.0)
                }),
                _ => Fixed(self.0).resolve(host, path),
            }
        }
    }

    fn upstream(endpoint: SocketAddr) -> Upstream {
        Upstream {
            name: Arc::from("test/fixed:80"),
            endpoints: Arc::from([endpoint]),
            round_robin: Arc::default(),
            https_redirect: false,
            policy: None,
            rewrite: None,
            latency: None,
            canary: None,
            route_path: None,
            errors: None,
        }
    }

    /// A backend that ignores `Upgrade` and answers how many body bytes came
    /// (after 1 s for `/slow`).
    async fn counting_backend() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = service_fn(|request: Request<Incoming>| async move {
                    if request.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    let body = request.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(
                        body.len().to_string(),
                    ))))
                });
                tokio::spawn(
                    server_http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    /// A plain-HTTP proxy in front of a [`counting_backend`]: its address,
    /// the switch that stops it, and its task.
    async fn proxy() -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        proxy_to(counting_backend().await).await
    }

    /// A plain-HTTP proxy in front of `backend`.
    async fn proxy_to(
        backend: SocketAddr,
    ) -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        proxy_with(Arc::new(Fixed(backend))).await
    }

    /// A plain-HTTP proxy routing with `resolver`.
    async fn proxy_with(
        resolver: Arc<dyn Resolve>,
    ) -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            metrics: Metrics::new(None),
            resolver,
            pool: UpstreamPool::new(UpstreamSettings::default()),
            clients: ClientPool::new(Duration::from_secs(5), 32),
            settings: ProxySettings {
                read_timeout: Duration::from_secs(5),
                ..ProxySettings::default()
            },
            global: Arc::default(),
            ewma: balance::Ewma::default(),
            rate_limiter: RateLimiter::default(),
            connection_limiter: Arc::default(),
            authenticator: Authenticator::default(),
            access_log: AccessLog::off(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(serve(listener, None, state, stop_rx));
        (proxy, stop, task)
    }

    #[test]
    fn the_https_redirect_drops_a_trailing_slash_unless_asked_as_ingress_nginx() {
        let request = |target: &str| Request::get(target).body(()).unwrap();
        let location = |target: &str, port: u16, keep: bool| {
            let response = https_redirect(
                &request(target),
                "shop.example.com:80",
                port,
                StatusCode::PERMANENT_REDIRECT,
                keep,
            );
            response.headers()[header::LOCATION]
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            location("/cart/", 443, false),
            "https://shop.example.com/cart"
        );
        assert_eq!(location("/", 443, false), "https://shop.example.com");
        assert_eq!(
            location("/cart/?q=1", 443, false),
            "https://shop.example.com/cart/?q=1"
        );
        assert_eq!(
            location("/cart/", 443, true),
            "https://shop.example.com/cart/"
        );
        assert_eq!(
            location("/x", 8443, false),
            "https://shop.example.com:8443/x"
        );
    }

    #[tokio::test]
    async fn draining_refuses_new_connections_and_finishes_open_requests() {
        let (proxy, stop, task) = proxy().await;
        let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (mut sender, connection) = client_http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let request = Request::get("/slow")
            .header(header::HOST, "example.com")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let in_flight = tokio::spawn(sender.send_request(request));
        tokio::time::sleep(Duration::from_millis(50)).await;

        stop.send(true).unwrap();
        let mut refused = false;
        for _ in 0..30 {
            if tokio::net::TcpStream::connect(proxy).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            refused && !in_flight.is_finished(),
            "new connections are still accepted while a request drains"
        );
        let response = tokio::time::timeout(Duration::from_secs(5), in_flight)
            .await
            .expect("the open request finished in time")
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the server finished draining")
            .unwrap();
    }

    #[tokio::test]
    async fn a_declined_upgrade_still_sends_the_request_body() {
        let (proxy, _stop, _task) = proxy().await;
        let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (mut sender, connection) = client_http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection.with_upgrades());
        // What `curl --http2 -d hello http://...` sends.
        let request = Request::post("/submit")
            .header(header::HOST, "example.com")
            .header(header::CONNECTION, "Upgrade, HTTP2-Settings")
            .header(header::UPGRADE, "h2c")
            .header("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA")
            .header(header::CONTENT_LENGTH, "5")
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
            .await
            .expect("the proxy answered in time")
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"5", "the backend got the whole body");
    }

    #[tokio::test]
    async fn an_upstream_that_is_not_http_gets_a_502_and_the_client_connection_goes_on() {
        for answer in [
            &b"SSH-2.0-OpenSSH_9.2\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nX-Bad: a\x7fb\r\n\r\n",
            b"",
        ] {
            // One answer per connection, then the backend closes it.
            let (backend, _) = raw_backend(answer, 1).await;
            let (proxy, _stop, _task) = proxy_to(backend).await;
            let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
            let (mut sender, connection) =
                client_http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(connection);
            for _ in 0..2 {
                let request = Request::get("/")
                    .header(header::HOST, "example.com")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let response =
                    tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
                        .await
                        .expect("the proxy answered in time")
                        .expect("the client connection is still open");
                assert_eq!(
                    response.status(),
                    StatusCode::BAD_GATEWAY,
                    "{}",
                    String::from_utf8_lossy(answer)
                );
                response.into_body().collect().await.unwrap();
            }
        }
    }

    /// The `Server` and `Date` lines of a GET for `path` through `proxy`,
    /// over HTTP/1.1 or HTTP/2 (h2c), with the status.
    async fn server_and_date(
        proxy: SocketAddr,
        path: &str,
        http2: bool,
    ) -> (StatusCode, Vec<String>, Vec<String>) {
        let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let request = Request::get(format!("http://example.com{path}"))
            .header(header::HOST, "example.com")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let send = async {
            if http2 {
                let (mut sender, connection) = hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    TokioIo::new(stream),
                )
                .await
                .unwrap();
                tokio::spawn(connection);
                sender.send_request(request).await
            } else {
                let (mut sender, connection) =
                    client_http1::handshake(TokioIo::new(stream)).await.unwrap();
                tokio::spawn(connection);
                sender.send_request(request).await
            }
        };
        let response = tokio::time::timeout(Duration::from_secs(5), send)
            .await
            .expect("the proxy answered in time")
            .unwrap();
        let values = |name| {
            response
                .headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        (
            response.status(),
            values(header::SERVER),
            values(header::DATE),
        )
    }

    #[tokio::test]
    async fn every_answer_names_the_edge_and_carries_a_date() {
        let (bare, _) = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 100).await;
        let (own, _) = raw_backend(
            b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\n\r\nok",
            100,
        )
        .await;
        let (bare_proxy, _stop_bare, _bare_task) = proxy_with(Arc::new(ByPath(bare))).await;
        let (own_proxy, _stop_own, _own_task) = proxy_to(own).await;
        // Nothing listens on the port of a closed listener: 502.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let (refused_proxy, _stop_refused, _refused_task) = proxy_to(closed).await;
        let http_date = |dates: &[String]| {
            assert_eq!(dates.len(), 1, "{dates:?}");
            httpdate_like(&dates[0])
        };
        for http2 in [false, true] {
            let (status, server, date) = server_and_date(bare_proxy, "/", http2).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(server, ["xdp-ingress"], "http2 {http2}");
            assert!(http_date(&date), "{date:?}");

            let (status, server, date) = server_and_date(own_proxy, "/", http2).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(server, ["xdp-ingress"], "the upstream's Server is replaced");
            assert_eq!(
                date,
                ["Sun, 06 Nov 1994 08:49:37 GMT"],
                "the upstream's Date is kept"
            );

            for (path, expected) in [
                ("/none", StatusCode::NOT_FOUND),
                ("/down", StatusCode::SERVICE_UNAVAILABLE),
                ("/empty", StatusCode::SERVICE_UNAVAILABLE),
                ("/guarded", StatusCode::FORBIDDEN),
                ("/guarded-down", StatusCode::FORBIDDEN),
                ("/moved", StatusCode::PERMANENT_REDIRECT),
            ] {
                let (status, server, date) = server_and_date(bare_proxy, path, http2).await;
                assert_eq!(status, expected, "{path}");
                assert_eq!(server, ["xdp-ingress"], "{path}");
                assert!(http_date(&date), "{path}: {date:?}");
            }
            let (status, server, date) = server_and_date(refused_proxy, "/", http2).await;
            assert_eq!(status, StatusCode::BAD_GATEWAY);
            assert_eq!(server, ["xdp-ingress"]);
            assert!(http_date(&date), "{date:?}");
        }
    }

    /// Every request goes to one endpoint with one policy.
    struct WithPolicy(SocketAddr, Arc<RoutePolicy>);

    impl Resolve for WithPolicy {
        fn resolve(&self, _host: &str, _path: &str) -> Resolution {
            Resolution::Upstream(Upstream {
                policy: Some(self.1.clone()),
                ..upstream(self.0)
            })
        }
    }

    fn policy_of(protocol: UpstreamProtocol, tls: Option<UpstreamTls>) -> Arc<RoutePolicy> {
        Arc::new(RoutePolicy {
            upstream_protocol: protocol,
            upstream_tls: tls.map(Arc::new),
            ..RoutePolicy::default()
        })
    }

    /// A gRPC-like backend over HTTP/2, cleartext or over TLS with
    /// `tls`: two data frames (the first names the request's version, its
    /// `te` and `:authority`), then the trailers `grpc-status: 7`; it
    /// counts the connections it accepted. Over TLS it also speaks
    /// HTTP/1.1 (ALPN).
    async fn h2_backend(
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(|request: Request<Incoming>| async move {
                    let first = format!(
                        "{:?} te={:?} authority={:?};",
                        request.version(),
                        request.headers().get(header::TE),
                        request.uri().authority().map(|a| a.to_string()),
                    );
                    let mut trailers = http::HeaderMap::new();
                    let grpc = HeaderValue::from_static("application/grpc");
                    trailers.insert("grpc-status", HeaderValue::from_static("7"));
                    trailers.insert("grpc-message", HeaderValue::from_static("denied"));
                    let frames = vec![
                        Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(first))),
                        Ok(hyper::body::Frame::data(Bytes::from_static(b"second"))),
                        Ok(hyper::body::Frame::trailers(trailers)),
                    ];
                    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
                    let mut response = Response::new(body);
                    response.headers_mut().insert(header::CONTENT_TYPE, grpc);
                    Ok::<_, Infallible>(response)
                });
                let tls = tls.clone();
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .http2_only()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(config) => {
                            let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                            else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    /// A CA and a certificate it signed for `name` (PEM): CA, chain, key.
    fn ca_and_leaf(name: &str) -> (String, String, String) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (ca.pem(), leaf.pem(), key.serialize_pem())
    }

    fn tls_server(chain: &str, key: &str) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// The status, body and trailers of a request to `proxy` over HTTP/2
    /// (h2c) or HTTP/1.1 (with `TE: trailers`).
    async fn get_with_trailers(
        proxy: SocketAddr,
        http2: bool,
    ) -> (StatusCode, String, Option<http::HeaderMap>) {
        let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let request = Request::post("http://grpc.example.com/pkg.Service/Method")
            .header(header::HOST, "grpc.example.com")
            .header(header::TE, "trailers")
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap();
        let send = async {
            if http2 {
                let (mut sender, connection) = hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    TokioIo::new(stream),
                )
                .await
                .unwrap();
                tokio::spawn(connection);
                sender.send_request(request).await
            } else {
                let (mut sender, connection) =
                    client_http1::handshake(TokioIo::new(stream)).await.unwrap();
                tokio::spawn(connection);
                sender.send_request(request).await
            }
        };
        let response = tokio::time::timeout(Duration::from_secs(5), send)
            .await
            .expect("the proxy answered in time")
            .unwrap();
        let status = response.status();
        let collected =
            tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
                .await
                .expect("the body came in time")
                .unwrap();
        let trailers = collected.trailers().cloned();
        (
            status,
            String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            trailers,
        )
    }

    #[tokio::test]
    async fn grpc_over_h2c_streams_and_passes_the_trailers_on_one_connection() {
        let (backend, accepted) = h2_backend(None).await;
        let policy = policy_of(UpstreamProtocol::H2c, None);
        let (proxy, _stop, _task) = proxy_with(Arc::new(WithPolicy(backend, policy))).await;
        for _ in 0..3 {
            let (status, body, trailers) = get_with_trailers(proxy, true).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(
                body,
                "HTTP/2.0 te=Some(\"trailers\") authority=Some(\"grpc.example.com\");second"
            );
            let trailers = trailers.expect("the trailers came through");
            assert_eq!(trailers["grpc-status"], "7");
            assert_eq!(trailers["grpc-message"], "denied");
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one multiplexed connection serves every request"
        );
        // An HTTP/1.1 client is proxied over HTTP/2 as well (nginx's
        // grpc_pass does the same); its trailers come with chunked encoding.
        let (status, body, trailers) = get_with_trailers(proxy, false).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("HTTP/2.0"), "{body}");
        assert_eq!(trailers.unwrap()["grpc-status"], "7");
    }

    /// An HTTP/2 backend that closes each connection (GOAWAY) after its
    /// first response; it counts the connections it accepted.
    async fn one_request_h2_backend() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (served, mut done) = tokio::sync::mpsc::channel::<()>(1);
                let service = service_fn(move |_request: Request<Incoming>| {
                    let served = served.clone();
                    async move {
                        let _ = served.try_send(());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                tokio::spawn(async move {
                    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service);
                    let mut connection = std::pin::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => return,
                        _ = done.recv() => connection.as_mut().graceful_shutdown(),
                    }
                    let _ = connection.await;
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn a_closed_h2_connection_is_replaced() {
        let (backend, accepted) = one_request_h2_backend().await;
        let policy = policy_of(UpstreamProtocol::H2c, None);
        let (proxy, _stop, _task) = proxy_with(Arc::new(WithPolicy(backend, policy))).await;
        for round in 1..=3 {
            let (status, body, _) = get_with_trailers(proxy, true).await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"), "{round}");
            // The backend's GOAWAY reaches the proxy.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn upstream_tls_verifies_as_the_route_asks() {
        let (ca, chain, key) = ca_and_leaf("backend.test");
        let (other_ca, _, _) = ca_and_leaf("backend.test");
        let (backend, _) = h2_backend(Some(tls_server(&chain, &key))).await;
        let verified = |ca: &str, name: &str| UpstreamTls {
            verify: Some(Arc::from(ca.as_bytes())),
            server_name: Some(name.to_owned()),
            send_sni: true,
            ..UpstreamTls::default()
        };
        let cases = [
            // proxy-ssl-verify off: any certificate, as in ingress-nginx.
            (
                UpstreamProtocol::Http1OverTls,
                None,
                StatusCode::OK,
                "HTTP/1.1",
            ),
            (
                UpstreamProtocol::Http2OverTls,
                None,
                StatusCode::OK,
                "HTTP/2.0",
            ),
            (
                UpstreamProtocol::Http2OverTls,
                Some(verified(&ca, "backend.test")),
                StatusCode::OK,
                "HTTP/2.0",
            ),
            (
                UpstreamProtocol::Http1OverTls,
                Some(verified(&ca, "backend.test")),
                StatusCode::OK,
                "HTTP/1.1",
            ),
            (
                UpstreamProtocol::Http1OverTls,
                Some(verified(&other_ca, "backend.test")),
                StatusCode::BAD_GATEWAY,
                "",
            ),
            (
                UpstreamProtocol::Http2OverTls,
                Some(verified(&ca, "other.test")),
                StatusCode::BAD_GATEWAY,
                "",
            ),
            // Verified without proxy-ssl-name: the Host going upstream.
            (
                UpstreamProtocol::Http2OverTls,
                Some(UpstreamTls {
                    server_name: None,
                    ..verified(&ca, "unused")
                }),
                StatusCode::BAD_GATEWAY,
                "",
            ),
        ];
        for (protocol, tls, expected, version) in cases {
            let described = format!("{protocol:?} {:?}", tls.as_ref().map(|t| &t.server_name));
            let policy = policy_of(protocol, tls);
            let (proxy, _stop, _task) = proxy_with(Arc::new(WithPolicy(backend, policy))).await;
            let (status, body, trailers) = get_with_trailers(proxy, true).await;
            assert_eq!(status, expected, "{described}: {body}");
            if expected == StatusCode::OK {
                assert!(body.starts_with(version), "{described}: {body}");
                if protocol.is_http2() {
                    assert_eq!(trailers.unwrap()["grpc-status"], "7", "{described}");
                }
            }
        }
    }

    /// Whether `value` has the shape of an IMF-fixdate
    /// (`Sun, 06 Nov 1994 08:49:37 GMT`).
    fn httpdate_like(value: &str) -> bool {
        let parts: Vec<&str> = value.split(' ').collect();
        value.len() == 29
            && parts.len() == 6
            && parts[0].ends_with(',')
            && parts[3].len() == 4
            && parts[4].len() == 8
            && parts[5] == "GMT"
    }
}
