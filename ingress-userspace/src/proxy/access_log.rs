//! The access log: one line per request on stdout, in the ConfigMap's
//! `log-format-upstream` (ingress-nginx's `upstreaminfo` by default).
//!
//! The request path only records: [`AccessLog::begin`] copies what the
//! line needs from the request, [`AccessLog::attach`] wraps the response
//! body, which counts the bytes sent and, when it ends or is dropped,
//! hands the record to the writer thread through a bounded channel
//! (`try_send`: no lock, no system call; a full channel drops the line
//! and counts it in `xdp_ingress_access_log_dropped_total`). The writer
//! thread polls the channel, formats the lines and writes them to stdout
//! in batches, one write per batch.

use std::{
    io::Write,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, LazyLock,
        mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel},
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Version, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use ingress_model::log_format::{LogFormat, LogPart, LogVariable, ValueSink};
use prometheus_client::metrics::counter::Counter;

use crate::metrics::RouteMetrics;

use super::{
    global::Global,
    headers::{ClientContext, X_REQUEST_ID, new_request_id},
    server::Resolution,
    upstream::{BoxError, ProxyBody},
};

/// Lines waiting for the writer at most; past that they are dropped.
const CAPACITY: usize = 16 * 1024;
/// How long the writer sleeps when the channel is empty: senders never
/// wake it (that would be a system call per request).
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// The bytes of a batch that make the writer write before it is drained.
const BATCH_BYTES: usize = 64 * 1024;

static UPSTREAMINFO: LazyLock<LogFormat> = LazyLock::new(LogFormat::default);

/// Where access log lines go (`--access-log`); cheap to clone.
#[derive(Clone, Default)]
pub struct AccessLog {
    sink: Option<Arc<Sink>>,
}

struct Sink {
    sender: SyncSender<Box<Entry>>,
    dropped: Counter,
}

impl AccessLog {
    /// No access log.
    pub fn off() -> Self {
        Self::default()
    }

    /// Lines on stdout, counting those dropped in `dropped`.
    pub fn stdout(dropped: Counter) -> Self {
        Self::to(std::io::stdout(), CAPACITY, dropped)
    }

    /// Lines written to `out` by a thread of their own, at most
    /// `capacity` waiting.
    pub fn to<W: Write + Send + 'static>(out: W, capacity: usize, dropped: Counter) -> Self {
        Self::start(out, capacity, dropped).0
    }

    /// [`AccessLog::to`], with the writer thread, which ends once every
    /// clone is dropped and the lines are written.
    fn start<W: Write + Send + 'static>(
        out: W,
        capacity: usize,
        dropped: Counter,
    ) -> (Self, std::thread::JoinHandle<()>) {
        let (sender, receiver) = sync_channel(capacity);
        let writer = std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || write_lines(receiver, out))
            .expect("spawning the access log writer");
        let log = Self {
            sink: Some(Arc::new(Sink { sender, dropped })),
        };
        (log, writer)
    }

    /// Whether lines are written at all.
    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Starts the record of `request`, when it is logged: not with
    /// `disable-access-log`, a URI in `skip-access-log-urls` or an
    /// Ingress's `enable-access-log: "false"`. A logged request without an
    /// `X-Request-ID` gets the id that goes upstream now, to log it.
    pub fn begin<B>(
        &self,
        request: &mut Request<B>,
        client: &ClientContext,
        global: &Arc<Global>,
        resolution: &Resolution,
        route: Option<&Arc<RouteMetrics>>,
        started: Instant,
    ) -> Option<Box<Entry>> {
        self.sink.as_ref()?;
        let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let policy = match resolution {
            Resolution::Upstream(upstream) => upstream.policy.as_deref(),
            Resolution::Unavailable { policy, .. } => policy.as_deref(),
            Resolution::NoRoute => None,
        };
        if !global.config.access_log.logs(target) || policy.is_some_and(|p| p.no_access_log) {
            return None;
        }
        if !matches!(request.headers().get(&X_REQUEST_ID), Some(id) if !id.is_empty()) {
            request.headers_mut().insert(X_REQUEST_ID, new_request_id());
        }
        let (uri, headers) = (request.uri(), request.headers());
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        // The text the line needs, copied into one buffer: holding the
        // request's own (shared) bytes would keep the connection's read
        // buffer from being reused, and free it on the writer's thread.
        let mut text = Text::default();
        text.push(Some(target.as_bytes()));
        let host = uri.host().map(str::as_bytes);
        text.push(host.or_else(|| headers.get(header::HOST).map(HeaderValue::as_bytes)));
        text.push(headers.get(&X_REQUEST_ID).map(HeaderValue::as_bytes));
        text.push(
            headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        );
        for part in &format_of(global).parts {
            if let LogPart::Variable(LogVariable::RequestHeader(name)) = part {
                text.push(headers.get(name.as_str()).map(HeaderValue::as_bytes));
            }
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let method = request.method();
        let request_length =
            (method.as_str().len() + target.len() + 12) as u64 + head_length(headers) + declared;
        Some(Box::new(Entry {
            global: Arc::clone(global),
            route: route.cloned(),
            started,
            remote_addr: client.client_ip.to_canonical(),
            remote_port: client.peer_port,
            scheme: client.scheme,
            method: method.clone(),
            version: request.version(),
            text,
            request_length,
            status: 0,
            upstream: None,
            response_head: 0,
            body_bytes: 0,
            request_time: Duration::ZERO,
            at: SystemTime::UNIX_EPOCH,
        }))
    }

    /// Records what the upstream that answered said, for
    /// [`AccessLog::attach`]: nothing when no line is written.
    pub fn served(
        &self,
        extensions: &mut http::Extensions,
        served: SocketAddr,
        status: http::StatusCode,
        asked: Instant,
        canary: Option<&Arc<str>>,
    ) {
        if self.enabled() {
            extensions.insert(UpstreamServed {
                addr: served,
                status: status.as_u16(),
                elapsed: asked.elapsed(),
                canary: canary.cloned(),
            });
        }
    }

    /// `response` with its body counted: the line of `entry` is handed to
    /// the writer when the body ends or is dropped.
    pub fn attach(
        &self,
        mut entry: Box<Entry>,
        response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let Some(sink) = &self.sink else {
            return response;
        };
        let (mut parts, body) = response.into_parts();
        entry.status = parts.status.as_u16();
        entry.upstream = parts.extensions.remove::<UpstreamServed>();
        entry.response_head = 17 + head_length(&parts.headers);
        let body = LoggedBody {
            inner: body,
            entry: Some(entry),
            sink: Arc::clone(sink),
        };
        Response::from_parts(parts, body.boxed())
    }
}

/// The format of `global`'s ConfigMap, else `upstreaminfo`.
fn format_of(global: &Global) -> &LogFormat {
    global
        .config
        .access_log
        .format
        .as_ref()
        .unwrap_or(&UPSTREAMINFO)
}

/// The bytes of header lines (`name: value\r\n`) and the empty line.
fn head_length(headers: &HeaderMap) -> u64 {
    let lines: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (lines + 2) as u64
}

fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(ip, _)| &ip[1..]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// What the upstream that answered said.
#[derive(Debug, Clone)]
struct UpstreamServed {
    addr: SocketAddr,
    status: u16,
    elapsed: Duration,
    /// The canary's upstream name, when the canary served.
    canary: Option<Arc<str>>,
}

/// One request's record, until its line is written.
pub struct Entry {
    global: Arc<Global>,
    route: Option<Arc<RouteMetrics>>,
    started: Instant,
    remote_addr: IpAddr,
    remote_port: u16,
    scheme: &'static str,
    method: Method,
    version: Version,
    /// The target, the host, the request id, `Authorization`, then the
    /// values of the format's `$http_*` variables, in order.
    text: Text,
    request_length: u64,
    status: u16,
    upstream: Option<UpstreamServed>,
    response_head: u64,
    body_bytes: u64,
    request_time: Duration,
    at: SystemTime,
}

impl Entry {
    /// Appends the line (without its newline) to `out`.
    fn render(&self, out: &mut String) {
        let format = format_of(&self.global);
        let escape = self.global.config.access_log.escape;
        let mut header: usize = 0;
        format.render(escape, out, |variable, sink| {
            if matches!(variable, LogVariable::RequestHeader(_)) {
                header += 1;
            }
            self.value(variable, header.wrapping_sub(1), sink)
        });
    }

    /// The request target, query included.
    fn target(&self) -> &str {
        self.text.get(0).unwrap_or("/")
    }

    /// The request's host, without a port, lower case.
    fn host(&self) -> String {
        without_port(self.text.get(1).unwrap_or_default()).to_ascii_lowercase()
    }

    /// Writes `variable`'s value (`header`: the index of a `$http_*`).
    fn value(&self, variable: &LogVariable, header: usize, sink: &mut ValueSink<'_>) -> bool {
        use LogVariable as V;
        let labels = self.route.as_ref().map(|route| route.labels());
        let (ingress, server_name, service) = labels.unwrap_or(("", "", ""));
        match variable {
            V::RemoteAddr => sink.plain(format_args!("{}", self.remote_addr)),
            V::RemotePort if self.remote_port != 0 => {
                sink.plain(format_args!("{}", self.remote_port))
            }
            V::RemoteUser => match self.remote_user() {
                Some(user) => sink.text(&user),
                None => return false,
            },
            V::TimeLocal | V::TimeIso8601 | V::Msec => {
                let since = self.at.duration_since(SystemTime::UNIX_EPOCH);
                let since = since.unwrap_or_default();
                let mut text = String::new();
                match variable {
                    V::TimeLocal => {
                        ingress_model::log_format::time_local(since.as_secs(), &mut text)
                    }
                    V::TimeIso8601 => {
                        ingress_model::log_format::time_iso8601(since.as_secs(), &mut text)
                    }
                    _ => text = Seconds(since).to_string(),
                }
                sink.plain(format_args!("{text}"));
            }
            V::Request => {
                sink.text(self.method.as_str());
                sink.plain(format_args!(" "));
                sink.text(self.target());
                sink.plain(format_args!(" {:?}", self.version));
            }
            V::RequestMethod => sink.text(self.method.as_str()),
            V::RequestUri => sink.text(self.target()),
            V::Uri => sink.text(self.target().split('?').next().unwrap_or_default()),
            V::Args => match self.target().split_once('?').map(|(_, args)| args) {
                Some(args) => sink.text(args),
                None => return false,
            },
            V::ServerProtocol => sink.plain(format_args!("{:?}", self.version)),
            V::Scheme => sink.plain(format_args!("{}", self.scheme)),
            V::Host => sink.text(&self.host()),
            V::ServerName if !server_name.is_empty() => sink.text(server_name),
            V::ServerName => sink.text(&self.host()),
            V::Status => sink.plain(format_args!("{}", self.status)),
            V::BodyBytesSent => sink.plain(format_args!("{}", self.body_bytes)),
            V::BytesSent => sink.plain(format_args!("{}", self.response_head + self.body_bytes)),
            V::RequestLength => sink.plain(format_args!("{}", self.request_length)),
            V::RequestTime => sink.plain(format_args!("{}", Seconds(self.request_time))),
            V::ProxyUpstreamName if service.is_empty() => {
                sink.plain(format_args!("upstream-default-backend"))
            }
            V::ProxyUpstreamName => nginx_upstream_name(service, sink),
            // Empty, not `-`, when no canary served (ingress-nginx sets it
            // to "").
            V::ProxyAlternativeUpstreamName => {
                if let Some(canary) = self.upstream.as_ref().and_then(|u| u.canary.as_deref()) {
                    nginx_upstream_name(canary, sink);
                }
            }
            V::UpstreamAddr
            | V::UpstreamStatus
            | V::UpstreamResponseTime
            | V::UpstreamResponseLength => {
                let Some(upstream) = &self.upstream else {
                    return false;
                };
                match variable {
                    V::UpstreamAddr => sink.plain(format_args!("{}", upstream.addr)),
                    V::UpstreamStatus => sink.plain(format_args!("{}", upstream.status)),
                    V::UpstreamResponseTime => {
                        sink.plain(format_args!("{}", Seconds(upstream.elapsed)))
                    }
                    _ => sink.plain(format_args!("{}", self.body_bytes)),
                }
            }
            V::ReqId => match self.text.get(2) {
                Some(id) => sink.text(id),
                None => return false,
            },
            V::Namespace | V::IngressName => {
                let Some((namespace, name)) = ingress.split_once('/') else {
                    return false;
                };
                sink.text(if *variable == V::Namespace {
                    namespace
                } else {
                    name
                });
            }
            V::ServiceName | V::ServicePort => {
                let Some((name, port)) = service_parts(service) else {
                    return false;
                };
                sink.text(if *variable == V::ServiceName {
                    name
                } else {
                    port
                });
            }
            V::RequestHeader(_) => match self.text.get(4 + header) {
                Some(value) => sink.text(value),
                None => return false,
            },
            V::RemotePort | V::Unknown(_) => return false,
        }
        true
    }

    /// The user of a `Basic` `Authorization`, as nginx's `$remote_user`.
    fn remote_user(&self) -> Option<String> {
        let value = self.text.get(3)?;
        let (scheme, credentials) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, _) = decoded.split_once(':')?;
        Some(user.to_owned())
    }
}

/// Seconds with milliseconds, as nginx writes times.
struct Seconds(Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}", self.0.as_secs(), self.0.subsec_millis())
    }
}

/// Pieces of text in one buffer.
#[derive(Default)]
struct Text {
    buffer: String,
    /// Where each piece lies in `buffer`; `None`: absent.
    spans: Vec<Option<(u32, u32)>>,
}

impl Text {
    /// Appends a piece (bytes that are not UTF-8 replaced).
    fn push(&mut self, value: Option<&[u8]>) {
        let span = value.map(|value| {
            let start = self.buffer.len() as u32;
            self.buffer.push_str(&String::from_utf8_lossy(value));
            (start, self.buffer.len() as u32)
        });
        self.spans.push(span);
    }

    /// The piece at `index`, if present.
    fn get(&self, index: usize) -> Option<&str> {
        let (start, end) = (*self.spans.get(index)?)?;
        self.buffer.get(start as usize..end as usize)
    }
}

/// `namespace/service:port` as ingress-nginx names it:
/// `namespace-service-port`.
fn nginx_upstream_name(name: &str, sink: &mut ValueSink<'_>) {
    for (index, piece) in name.split(['/', ':']).enumerate() {
        if index > 0 {
            sink.plain(format_args!("-"));
        }
        sink.text(piece);
    }
}

/// The service name and port of `namespace/service:port`.
fn service_parts(service: &str) -> Option<(&str, &str)> {
    let (_, service) = service.split_once('/')?;
    service.rsplit_once(':')
}

/// The writer thread: drains the channel into one buffer, writes it, sleeps
/// when there is nothing; returns once every sender is gone.
fn write_lines(receiver: Receiver<Box<Entry>>, mut out: impl Write) {
    let mut line = String::new();
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    loop {
        let open = loop {
            match receiver.try_recv() {
                Ok(entry) => {
                    line.clear();
                    entry.render(&mut line);
                    batch.extend_from_slice(line.as_bytes());
                    batch.push(b'\n');
                    if batch.len() >= BATCH_BYTES {
                        let _ = out.write_all(&batch);
                        batch.clear();
                    }
                }
                Err(TryRecvError::Empty) => break true,
                Err(TryRecvError::Disconnected) => break false,
            }
        };
        if !batch.is_empty() {
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
        }
        if !open {
            return;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A response body that counts its bytes and hands its request's record
/// to the writer when it ends or is dropped.
struct LoggedBody {
    inner: ProxyBody,
    entry: Option<Box<Entry>>,
    sink: Arc<Sink>,
}

impl LoggedBody {
    fn finish(&mut self) {
        let Some(mut entry) = self.entry.take() else {
            return;
        };
        entry.request_time = entry.started.elapsed();
        entry.at = SystemTime::now();
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.sink.sender.try_send(entry)
        {
            self.sink.dropped.inc();
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(entry)) = (frame.data_ref(), this.entry.as_mut()) {
                    entry.body_bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        sync::{Arc, Mutex},
    };

    use http_body_util::{BodyExt, Full};
    use ingress_model::{
        ObjectKey, ObjectKind, ObjectRef,
        controller_config::{Hsts, read_controller_config},
    };

    use super::*;

    /// A `Write` the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn global(pairs: &[(&str, &str)]) -> Arc<Global> {
        let object = ObjectRef::new(ObjectKind::ConfigMap, ObjectKey::new("ns", "config"));
        let data: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (config, _) = read_controller_config(&object, &data);
        Arc::new(Global::new(config, Hsts::default()))
    }

    /// The lines written for one request per `(request, status, body)`.
    async fn lines(global: Arc<Global>, requests: Vec<(Request<()>, u16, &'static str)>) -> String {
        let out = Shared::default();
        let (log, writer) = AccessLog::start(out.clone(), 16, Counter::default());
        let mut client = ClientContext::new("198.18.0.2".parse().unwrap(), "http", 80);
        client.peer_port = 40_000;
        for (mut request, status, body) in requests {
            let Some(entry) = log.begin(
                &mut request,
                &client,
                &global,
                &Resolution::NoRoute,
                None,
                Instant::now(),
            ) else {
                continue;
            };
            let mut response =
                Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
            let status = http::StatusCode::from_u16(status).unwrap();
            *response.status_mut() = status;
            log.served(
                response.extensions_mut(),
                "198.18.1.1:8080".parse().unwrap(),
                status,
                Instant::now(),
                None,
            );
            let response = log.attach(entry, response);
            let _ = response.into_body().collect().await.unwrap();
        }
        drop(log);
        writer.join().unwrap();
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    fn get(target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get(target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[tokio::test]
    async fn a_line_in_upstreaminfo() {
        let written = lines(
            global(&[]),
            vec![(
                get(
                    "/a?b=1",
                    &[
                        ("host", "Web.Example.com:8080"),
                        ("user-agent", "curl \"8\""),
                        ("x-request-id", "abc123"),
                        ("authorization", "Basic dXNlcjpwYXNz"),
                    ],
                ),
                200,
                "hello",
            )],
        )
        .await;
        let line = written.lines().next().expect(&written);
        assert!(
            line.starts_with("198.18.0.2 - user [")
                && line
                    .contains(" +0000] \"GET /a?b=1 HTTP/1.1\" 200 5 \"-\" \"curl \\x228\\x22\" ")
                && line
                    .ends_with(" [upstream-default-backend] [] 198.18.1.1:8080 5 0.000 200 abc123"),
            "{line}"
        );
    }

    #[tokio::test]
    async fn json_skip_and_disable() {
        let global = global(&[
            (
                "log-format-upstream",
                r#"{"status": $status, "uri": "$request_uri", "host": "$host", "id": "$req_id", "agent": "$http_user_agent", "nope": "$nope"}"#,
            ),
            ("log-format-escape-json", "true"),
            ("skip-access-log-urls", "/healthz"),
        ]);
        let written = lines(
            global,
            vec![
                (get("/healthz", &[]), 200, ""),
                (
                    get("/x", &[("host", "a.example.com"), ("user-agent", "q\"\\")]),
                    404,
                    "",
                ),
            ],
        )
        .await;
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 1, "{written}");
        let value: serde_json::Value = serde_json::from_str(lines[0]).expect(lines[0]);
        assert_eq!(value["status"], 404);
        assert_eq!(value["uri"], "/x");
        assert_eq!(value["host"], "a.example.com");
        assert_eq!(value["agent"], "q\"\\");
        assert_eq!(value["nope"], "-");
        assert_eq!(value["id"].as_str().unwrap().len(), 32);
        let off = lines_with(&[("disable-access-log", "true")]).await;
        assert_eq!(off, "");
    }

    async fn lines_with(pairs: &[(&str, &str)]) -> String {
        lines(global(pairs), vec![(get("/", &[]), 200, "")]).await
    }

    #[test]
    fn a_full_channel_drops_and_counts() {
        let dropped = Counter::default();
        let (sender, _receiver) = sync_channel(1);
        let sink = Arc::new(Sink {
            sender,
            dropped: dropped.clone(),
        });
        let log = AccessLog { sink: Some(sink) };
        let global = global(&[]);
        let client = ClientContext::new("198.18.0.2".parse().unwrap(), "http", 80);
        for _ in 0..3 {
            let mut request = get("/", &[]);
            let entry = log
                .begin(
                    &mut request,
                    &client,
                    &global,
                    &Resolution::NoRoute,
                    None,
                    Instant::now(),
                )
                .unwrap();
            let response =
                Response::new(http_body_util::Empty::new().map_err(|e| match e {}).boxed());
            drop(log.attach(entry, response));
        }
        assert_eq!(dropped.get(), 2);
    }

    #[test]
    fn upstream_names_as_ingress_nginx_spells_them() {
        let format = LogFormat::parse("$proxy_upstream_name");
        let mut line = String::new();
        format.render(Default::default(), &mut line, |_, sink| {
            nginx_upstream_name("shop/web:http", sink);
            true
        });
        assert_eq!(line, "shop-web-http");
        assert_eq!(service_parts("shop/web:8080"), Some(("web", "8080")));
        assert_eq!(without_port("[2001:db8::1]:80"), "2001:db8::1");
        assert_eq!(without_port("a.example.com:80"), "a.example.com");
    }
}
