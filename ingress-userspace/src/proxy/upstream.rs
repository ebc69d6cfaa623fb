//! Upstream HTTP/1.1 connections: a keep-alive pool per endpoint, and the
//! exchange of one request on one connection, run inline by the request's
//! task with the codec of [`super::http1`]. Connecting is separate from
//! sending, so a failed connect can be retried on another endpoint before
//! the request body has been touched.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    pin::{Pin, pin},
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll, Waker, ready},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, request, response};
use http_body_util::{BodyExt as _, combinators::BoxBody};
use hyper::body::{Body, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};

use super::http1::{
    ChunkedDecoder, Decoded, RequestFraming, ResponseFraming, ResponseHead, UpstreamProtocolError,
    encode_chunk_start, encode_chunked_end, encode_request_head, parse_response_head,
};

/// The error type of bodies the proxy streams.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type the proxy sends and answers with.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// The read buffer grows by this much when it runs low (hyper's first size).
const READ_CHUNK: usize = 8 * 1024;
/// Below this much free space the read buffer grows before a read.
const READ_LOW_WATER: usize = 1024;
/// A body's first read size; it doubles while reads fill it, up to
/// [`BODY_READ_MAX`], so a large body moves in large pieces (as hyper's
/// adaptive buffer did) and a small one costs little.
const BODY_READ_FIRST: usize = 16 * 1024;
/// The largest body read.
const BODY_READ_MAX: usize = 256 * 1024;

/// Limits of the upstream side.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// How long a TCP connect may take (ingress-nginx proxy-connect-timeout: 5 s).
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept (upstream-keepalive-timeout: 60 s).
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint (upstream-keepalive-connections: 320).
    pub max_idle_per_endpoint: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_idle_per_endpoint: 320,
        }
    }
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The endpoint did not answer in time.
    #[error("connecting to {0} timed out")]
    Timeout(SocketAddr),
    /// The endpoint refused or the network failed.
    #[error("connecting to {endpoint}: {source}")]
    Io {
        /// The endpoint.
        endpoint: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// How an endpoint failed an exchange.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Reading or writing the connection failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The endpoint closed the connection before its response head ended.
    #[error("the endpoint closed the connection before it answered")]
    ClosedEarly,
    /// The endpoint's answer is not HTTP/1.1.
    #[error(transparent)]
    Protocol(#[from] UpstreamProtocolError),
}

/// Why an exchange ended without a response.
#[derive(Debug)]
pub enum ExchangeFailure {
    /// A pooled connection turned out closed before anything of an answer
    /// came; the request, which may be sent again, comes back.
    Closed(OutgoingRequest),
    /// The request body failed (too large, too slow, or the client went).
    RequestBody(BoxError),
    /// The endpoint failed.
    Upstream(UpstreamError),
}

/// One TCP connection to an endpoint, with what has been read from it and
/// not used yet.
pub struct UpstreamConnection {
    stream: TcpStream,
    buffer: BytesMut,
    endpoint: SocketAddr,
}

struct IdleConnection {
    connection: UpstreamConnection,
    since: Instant,
}

/// Keep-alive connections to upstream endpoints.
pub struct UpstreamPool {
    settings: UpstreamSettings,
    /// foldhash: two lookups per request, and endpoints are not chosen by clients.
    idle: Mutex<HashMap<SocketAddr, Vec<IdleConnection>, foldhash::fast::RandomState>>,
}

/// A connection for one exchange.
pub struct Checkout {
    /// The connection.
    pub connection: UpstreamConnection,
    /// True when it came from the pool (the endpoint may have closed it
    /// just now: see [`ExchangeFailure::Closed`]).
    pub reused: bool,
}

impl UpstreamPool {
    /// An empty pool.
    pub fn new(settings: UpstreamSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            idle: Mutex::new(HashMap::default()),
        })
    }

    /// An idle connection to `endpoint`, or a new one.
    pub async fn checkout(&self, endpoint: SocketAddr) -> Result<Checkout, ConnectError> {
        self.checkout_within(endpoint, None).await
    }

    /// [`Self::checkout`], connecting within `connect_timeout` (a route's
    /// own) instead of the pool's.
    pub async fn checkout_within(
        &self,
        endpoint: SocketAddr,
        connect_timeout: Option<Duration>,
    ) -> Result<Checkout, ConnectError> {
        if let Some(connection) = self.take_idle(endpoint) {
            return Ok(Checkout {
                connection,
                reused: true,
            });
        }
        Ok(Checkout {
            connection: self.connect_within(endpoint, connect_timeout).await?,
            reused: false,
        })
    }

    fn take_idle(&self, endpoint: SocketAddr) -> Option<UpstreamConnection> {
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.get_mut(&endpoint)?;
        let now = Instant::now();
        while let Some(mut pooled) = list.pop() {
            if now.duration_since(pooled.since) < self.settings.idle_timeout
                && pooled.connection.is_open()
            {
                return Some(pooled.connection);
            }
        }
        None
    }

    /// A new connection, with the connect timeout.
    pub async fn connect(&self, endpoint: SocketAddr) -> Result<UpstreamConnection, ConnectError> {
        self.connect_within(endpoint, None).await
    }

    /// A new connection within `connect_timeout`, else the pool's.
    pub async fn connect_within(
        &self,
        endpoint: SocketAddr,
        connect_timeout: Option<Duration>,
    ) -> Result<UpstreamConnection, ConnectError> {
        let timeout = connect_timeout.unwrap_or(self.settings.connect_timeout);
        let stream = tokio::time::timeout(timeout, TcpStream::connect(endpoint))
            .await
            .map_err(|_| ConnectError::Timeout(endpoint))?
            .map_err(|source| ConnectError::Io { endpoint, source })?;
        let _ = stream.set_nodelay(true);
        Ok(UpstreamConnection {
            stream,
            buffer: BytesMut::new(),
            endpoint,
        })
    }

    /// Keeps a connection whose exchange finished cleanly.
    fn give_back(&self, mut connection: UpstreamConnection) {
        if connection.buffer.capacity() > READ_CHUNK {
            // An idle connection keeps no large body buffer (it is empty).
            connection.buffer = BytesMut::new();
        }
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.entry(connection.endpoint).or_default();
        if list.len() < self.settings.max_idle_per_endpoint {
            list.push(IdleConnection {
                connection,
                since: Instant::now(),
            });
        }
    }

    /// Drops idle connections to endpoints that are no longer wanted, and
    /// those idle for too long.
    pub fn retain_endpoints(&self, keep: impl Fn(&SocketAddr) -> bool) {
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("pool lock");
        idle.retain(|endpoint, _| keep(endpoint));
        for list in idle.values_mut() {
            list.retain(|c| now.duration_since(c.since) < self.settings.idle_timeout);
        }
    }

    /// How many idle connections the pool holds (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .expect("pool lock")
            .values()
            .map(Vec::len)
            .sum()
    }
}

/// A request as it goes upstream: its head encoded once (so that it can be
/// written again to a new connection), and its body.
pub struct OutgoingRequest {
    head: Vec<u8>,
    method: Method,
    framing: RequestFraming,
    /// `None` when there is no body.
    body: Option<ProxyBody>,
}

impl std::fmt::Debug for OutgoingRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingRequest")
            .field("method", &self.method)
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl OutgoingRequest {
    /// The request of `parts` (origin-form URI, hop-by-hop headers gone)
    /// with the header lines `headers` (the request's own, rewritten) and
    /// `body`.
    pub fn new<'a>(
        parts: &request::Parts,
        headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
        body: ProxyBody,
    ) -> Self {
        let hint = body.size_hint();
        let (framing, add_framing) =
            RequestFraming::of(&parts.headers, body.is_end_stream(), hint.exact());
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut head = Vec::with_capacity(512);
        encode_request_head(
            &parts.method,
            target,
            headers,
            framing,
            add_framing,
            &mut head,
        );
        Self {
            head,
            method: parts.method.clone(),
            framing,
            body: (framing != RequestFraming::Empty).then_some(body),
        }
    }

    /// A copy to send again to another endpoint, when it has no body (a
    /// streamed body cannot be sent twice) and, unless `non_idempotent`,
    /// its method is idempotent.
    pub fn copy_for_retry(&self, non_idempotent: bool) -> Option<Self> {
        (self.body.is_none() && (non_idempotent || self.method.is_idempotent())).then(|| Self {
            head: self.head.clone(),
            method: self.method.clone(),
            framing: self.framing,
            body: None,
        })
    }

    /// Whether it may be sent again after a connection failed under it: no
    /// body was taken, and the method is idempotent (RFC 9110 9.2.2).
    fn is_replayable(&self) -> bool {
        self.body.is_none() && self.method.is_idempotent()
    }

    /// The encoded head (for tests).
    #[cfg(test)]
    pub fn head(&self) -> &[u8] {
        &self.head
    }
}

/// What an exchange brought back.
pub enum Exchanged {
    /// A response; its body is read from the connection as it is polled.
    Response(response::Parts, UpstreamBody),
    /// `101 Switching Protocols`: the connection now carries the upgraded
    /// protocol.
    Upgraded(response::Parts, UpgradedStream),
}

/// A connection after `101 Switching Protocols`, with the bytes of the new
/// protocol that came with the response head.
pub struct UpgradedStream {
    /// The connection.
    pub stream: TcpStream,
    /// Bytes read past the response head.
    pub already_read: Bytes,
}

impl UpstreamConnection {
    /// Whether an idle connection can take a request: nothing has arrived
    /// on it, neither data nor the endpoint's close. Readiness that the
    /// runtime already knows is enough in the common case, without a
    /// system call.
    fn is_open(&mut self) -> bool {
        let mut context = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut context) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends `request` and reads the response head. With a body, the body
    /// streams up while the head is awaited, so an endpoint that answers
    /// early (413, 401) is heard at once; the connection is then not reused.
    pub async fn exchange(
        mut self,
        mut request: OutgoingRequest,
        reused: bool,
        pool: &Arc<UpstreamPool>,
    ) -> Result<Exchanged, ExchangeFailure> {
        let method = request.method.clone();
        let (head, body_complete) = match request.body.take() {
            None => {
                let result = match self.stream.write_all(&request.head).await {
                    Ok(()) => read_head(&mut self.stream, &mut self.buffer, &method).await,
                    Err(error) => Err(UpstreamError::Io(error)),
                };
                match result {
                    Ok(head) => (head, true),
                    Err(UpstreamError::Io(_) | UpstreamError::ClosedEarly)
                        if reused && self.buffer.is_empty() && request.is_replayable() =>
                    {
                        return Err(ExchangeFailure::Closed(request));
                    }
                    Err(error) => return Err(ExchangeFailure::Upstream(error)),
                }
            }
            Some(body) => {
                let mut sender = BodySender::new(body, request.framing);
                let mut first = std::mem::take(&mut request.head);
                sender.append_ready(&mut first)?;
                self.stream
                    .write_all(&first)
                    .await
                    .map_err(|error| ExchangeFailure::Upstream(error.into()))?;
                let mut sent = sender.is_finished();
                let (mut reader, mut writer) = self.stream.split();
                let mut send = pin!(sender.send_rest(&mut writer));
                let mut receive = pin!(read_head(&mut reader, &mut self.buffer, &method));
                loop {
                    tokio::select! {
                        biased;
                        head = &mut receive => break (head.map_err(ExchangeFailure::Upstream)?, sent),
                        result = &mut send, if !sent => {
                            result?;
                            sent = true;
                        }
                    }
                }
            }
        };
        if head.parts.status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(Exchanged::Upgraded(
                head.parts,
                UpgradedStream {
                    stream: self.stream,
                    already_read: self.buffer.freeze(),
                },
            ));
        }
        let ResponseHead {
            parts,
            framing,
            keep_alive,
        } = head;
        Ok(Exchanged::Response(
            parts,
            UpstreamBody::new(self, framing, keep_alive && body_complete, pool),
        ))
    }
}

/// Reads until a final response head is complete (1xx heads but 101 are
/// skipped, as a proxy that did not ask for them must).
async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
    method: &Method,
) -> Result<ResponseHead, UpstreamError> {
    loop {
        if !buffer.is_empty()
            && let Some(head) = parse_response_head(buffer, method)?
        {
            let status = head.parts.status;
            if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                continue;
            }
            return Ok(head);
        }
        make_room(buffer);
        if reader.read_buf(buffer).await? == 0 {
            return Err(UpstreamError::ClosedEarly);
        }
    }
}

/// Room for the next read.
fn make_room(buffer: &mut BytesMut) {
    if buffer.capacity() - buffer.len() < READ_LOW_WATER {
        buffer.reserve(READ_CHUNK);
    }
}

/// Streams a request body in its framing.
struct BodySender {
    body: ProxyBody,
    framing: RequestFraming,
    finished: bool,
    /// Chunk lines, reused.
    scratch: Vec<u8>,
}

impl BodySender {
    fn new(body: ProxyBody, framing: RequestFraming) -> Self {
        Self {
            body,
            framing,
            finished: false,
            scratch: Vec::new(),
        }
    }

    fn is_finished(&self) -> bool {
        self.finished
    }

    /// Appends to `out` what the body has ready without waiting (a small
    /// body is usually all there), so that it leaves with the head.
    fn append_ready(&mut self, out: &mut Vec<u8>) -> Result<(), ExchangeFailure> {
        let mut context = Context::from_waker(Waker::noop());
        for _ in 0..4 {
            match Pin::new(&mut self.body).poll_frame(&mut context) {
                Poll::Pending => return Ok(()),
                Poll::Ready(None) => {
                    self.finish(None, out);
                    return Ok(());
                }
                Poll::Ready(Some(Err(error))) => return Err(ExchangeFailure::RequestBody(error)),
                Poll::Ready(Some(Ok(frame))) => {
                    if self.frame(frame, out) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Encodes one frame into `out`; true when it ended the body.
    fn frame(&mut self, frame: Frame<Bytes>, out: &mut Vec<u8>) -> bool {
        match frame.into_data() {
            Ok(data) => {
                if self.framing == RequestFraming::Chunked {
                    if !data.is_empty() {
                        encode_chunk_start(data.len(), out);
                        out.extend_from_slice(&data);
                        out.extend_from_slice(b"\r\n");
                    }
                } else {
                    out.extend_from_slice(&data);
                }
                if self.body.is_end_stream() {
                    self.finish(None, out);
                    return true;
                }
                false
            }
            Err(frame) => {
                let trailers = frame.into_trailers().ok();
                self.finish(trailers.as_ref(), out);
                true
            }
        }
    }

    fn finish(&mut self, trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
        if !self.finished && self.framing == RequestFraming::Chunked {
            encode_chunked_end(trailers, out);
        }
        self.finished = true;
    }

    /// Sends the rest of the body, a frame at a time as it comes.
    async fn send_rest<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
    ) -> Result<(), ExchangeFailure> {
        let mut out = std::mem::take(&mut self.scratch);
        while !self.finished {
            out.clear();
            match self.body.frame().await {
                None => self.finish(None, &mut out),
                Some(Err(error)) => return Err(ExchangeFailure::RequestBody(error)),
                Some(Ok(frame)) => {
                    if self.framing != RequestFraming::Chunked
                        && let Some(data) = frame.data_ref()
                    {
                        // Unframed data goes as it is, without a copy.
                        let mut data = data.clone();
                        writer
                            .write_all_buf(&mut data)
                            .await
                            .map_err(|error| ExchangeFailure::Upstream(error.into()))?;
                        if self.body.is_end_stream() {
                            self.finish(None, &mut out);
                        }
                    } else {
                        self.frame(frame, &mut out);
                    }
                }
            }
            if !out.is_empty() {
                writer
                    .write_all(&out)
                    .await
                    .map_err(|error| ExchangeFailure::Upstream(error.into()))?;
            }
        }
        writer
            .flush()
            .await
            .map_err(|error| ExchangeFailure::Upstream(error.into()))
    }
}

#[derive(Debug)]
enum BodyState {
    /// This many bytes left.
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// An upstream response body, read from its connection as it is polled.
/// At its end the connection goes back to the pool (when the response
/// allows it); dropped early, the connection is closed instead, since it
/// may still carry unread bytes.
pub struct UpstreamBody {
    connection: Option<UpstreamConnection>,
    state: BodyState,
    keep_alive: bool,
    pool: Weak<UpstreamPool>,
    /// The size of the next read (see [`BODY_READ_FIRST`]).
    read_size: usize,
}

impl UpstreamBody {
    fn new(
        connection: UpstreamConnection,
        framing: ResponseFraming,
        keep_alive: bool,
        pool: &Arc<UpstreamPool>,
    ) -> Self {
        let state = match framing {
            ResponseFraming::Empty => BodyState::Done,
            ResponseFraming::Length(length) => BodyState::Length(length),
            ResponseFraming::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
            ResponseFraming::UntilClose => BodyState::UntilClose,
        };
        let mut body = Self {
            connection: Some(connection),
            state,
            keep_alive,
            pool: Arc::downgrade(pool),
            read_size: BODY_READ_FIRST,
        };
        if matches!(body.state, BodyState::Done) {
            body.finish();
        }
        body
    }

    /// The body is over: the connection goes back to the pool if nothing
    /// more came on it and the response keeps it alive.
    fn finish(&mut self) {
        self.state = BodyState::Done;
        if let Some(connection) = self.connection.take()
            && self.keep_alive
            && connection.buffer.is_empty()
            && let Some(pool) = self.pool.upgrade()
        {
            pool.give_back(connection);
        }
    }

    /// Reads more from the connection into its buffer: the number of bytes
    /// (0 at the endpoint's close).
    fn poll_fill(&mut self, context: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(connection) = self.connection.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let buffer = &mut connection.buffer;
        if buffer.capacity() - buffer.len() < self.read_size / 2 {
            buffer.reserve(self.read_size);
        }
        let room = buffer.capacity() - buffer.len();
        let read = ready!(pin!(connection.stream.read_buf(buffer)).poll(context))?;
        if read == room {
            self.read_size = (self.read_size * 2).min(BODY_READ_MAX);
        }
        Poll::Ready(Ok(read))
    }

    /// The body cannot go on: the connection is closed (dropped).
    fn fail(&mut self, error: UpstreamError) -> BoxError {
        self.connection = None;
        self.state = BodyState::Done;
        Box::new(error)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        // Each turn either returns or has read more bytes: bounded by the
        // body's length and the endpoint's pace.
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            let buffer = &mut connection.buffer;
            match &mut this.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(left) if !buffer.is_empty() => {
                    let take = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(buffer.len());
                    let data = buffer.split_to(take).freeze();
                    *left -= take as u64;
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                BodyState::Chunked(decoder) => match decoder.decode(buffer) {
                    Err(error) => return Poll::Ready(Some(Err(this.fail(error.into())))),
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        // The trailers end the body.
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                },
                BodyState::UntilClose if !buffer.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(buffer.split().freeze()))));
                }
                BodyState::Length(_) | BodyState::UntilClose => {}
            }
            match ready!(this.poll_fill(context)) {
                Ok(0) if matches!(this.state, BodyState::UntilClose) => {
                    // The close is this body's end; the connection goes with it.
                    this.connection = None;
                    this.state = BodyState::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(this.fail(UpstreamError::ClosedEarly)))),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(this.fail(error.into())))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Done => SizeHint::with_exact(0),
            BodyState::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
    use tokio::{io::AsyncBufReadExt as _, net::TcpListener};

    use super::*;

    /// A backend that answers each request head on each connection with
    /// `answer` (raw bytes), counting connections; `close_after` closes a
    /// connection after that many answers.
    pub(crate) async fn raw_backend(
        answer: &'static [u8],
        close_after: usize,
    ) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut stream = tokio::io::BufStream::new(stream);
                    for _ in 0..close_after {
                        let mut line = String::new();
                        // The head ends at its empty line.
                        loop {
                            line.clear();
                            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        if stream.write_all(answer).await.is_err() || stream.flush().await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        (address, connections)
    }

    fn get(target: &str) -> OutgoingRequest {
        let parts = http::Request::get(target)
            .header("host", "example.com")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        OutgoingRequest::new(
            &parts,
            parts.headers.iter(),
            Empty::new().map_err(|e| match e {}).boxed(),
        )
    }

    async fn round_trip(
        pool: &Arc<UpstreamPool>,
        endpoint: SocketAddr,
        request: OutgoingRequest,
    ) -> Result<(response::Parts, Vec<u8>, Option<HeaderMap>), String> {
        let checkout = pool.checkout(endpoint).await.map_err(|e| e.to_string())?;
        let exchanged = tokio::time::timeout(
            Duration::from_secs(5),
            checkout.connection.exchange(request, checkout.reused, pool),
        )
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|failure| format!("{failure:?}"))?;
        let Exchanged::Response(parts, body) = exchanged else {
            return Err("upgraded".to_owned());
        };
        let collected = tokio::time::timeout(Duration::from_secs(5), body.collect())
            .await
            .map_err(|_| "body timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let trailers = collected.trailers().cloned();
        Ok((parts, collected.to_bytes().to_vec(), trailers))
    }

    #[tokio::test]
    async fn kept_alive_connections_carry_the_next_request() {
        let (backend, connections) =
            raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 100).await;
        let pool = UpstreamPool::new(UpstreamSettings::default());
        for _ in 0..3 {
            let (parts, body, _) = round_trip(&pool, backend, get("/")).await.unwrap();
            assert_eq!(parts.status, StatusCode::OK);
            assert_eq!(body, b"hello");
            assert_eq!(pool.idle_count(), 1, "the connection went back to the pool");
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            1,
            "one connection for three requests"
        );
    }

    #[tokio::test]
    async fn chunked_bodies_and_trailers_come_through_and_keep_the_connection() {
        let (backend, connections) = raw_backend(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n",
            100,
        )
        .await;
        let pool = UpstreamPool::new(UpstreamSettings::default());
        for _ in 0..2 {
            let (_, body, trailers) = round_trip(&pool, backend, get("/")).await.unwrap();
            assert_eq!(body, b"hello world");
            assert_eq!(trailers.expect("trailers")["x-sum"], "11");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn bodies_that_end_at_the_close_end_there_and_are_not_pooled() {
        let (backend, _) = raw_backend(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it",
            1,
        )
        .await;
        let pool = UpstreamPool::new(UpstreamSettings::default());
        let (_, body, _) = round_trip(&pool, backend, get("/")).await.unwrap();
        assert_eq!(body, b"all of it");
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn informational_heads_are_skipped() {
        let (backend, _) = raw_backend(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            100,
        )
        .await;
        let pool = UpstreamPool::new(UpstreamSettings::default());
        let (parts, body, _) = round_trip(&pool, backend, get("/")).await.unwrap();
        assert_eq!((parts.status, &body[..]), (StatusCode::CREATED, &b"ok"[..]));
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_and_a_malformed_head_a_failure() {
        let (short, _) = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 1).await;
        let pool = UpstreamPool::new(UpstreamSettings::default());
        let error = round_trip(&pool, short, get("/")).await.unwrap_err();
        assert!(error.contains("closed"), "{error}");
        assert_eq!(pool.idle_count(), 0);

        let (garbage, _) = raw_backend(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", 1).await;
        let error = round_trip(&pool, garbage, get("/")).await.unwrap_err();
        assert!(error.contains("Upstream(Protocol"), "{error}");
    }

    #[tokio::test]
    async fn a_pooled_connection_the_endpoint_closed_is_not_used_again() {
        // The backend answers once per connection and closes it.
        let (backend, connections) =
            raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1).await;
        let pool = UpstreamPool::new(UpstreamSettings::default());
        round_trip(&pool, backend, get("/")).await.unwrap();
        assert_eq!(pool.idle_count(), 1);
        // Let the close arrive and the runtime see it.
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let mut idle = pool.idle.lock().unwrap();
            if let Some(connection) = idle.get_mut(&backend).and_then(|list| list.last_mut())
                && !connection.connection.is_open()
            {
                break;
            }
        }
        let checkout = pool.checkout(backend).await.unwrap();
        assert!(!checkout.reused, "the closed connection was handed out");
        drop(checkout);
        for _ in 0..100 {
            if connections.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            2,
            "a new connection was made"
        );
    }

    #[tokio::test]
    async fn a_request_on_a_connection_closed_under_it_comes_back_when_it_can_be_sent_again() {
        // A connection that looks open but is closed as the request arrives:
        // the backend reads the head and closes without an answer.
        let (backend, _) = raw_backend(b"", 1).await;
        let pool = UpstreamPool::new(UpstreamSettings::default());
        let connection = pool.connect(backend).await.unwrap();
        match connection.exchange(get("/"), true, &pool).await {
            Err(ExchangeFailure::Closed(request)) => {
                assert!(request.head().starts_with(b"GET / HTTP/1.1\r\n"));
            }
            other => panic!("expected the request back, got {:?}", other.err()),
        }
        // A POST is not sent twice.
        let parts = http::Request::post("/order")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let post = OutgoingRequest::new(
            &parts,
            parts.headers.iter(),
            Empty::new().map_err(|e| match e {}).boxed(),
        );
        let connection = pool.connect(backend).await.unwrap();
        assert!(matches!(
            connection.exchange(post, true, &pool).await,
            Err(ExchangeFailure::Upstream(UpstreamError::ClosedEarly))
        ));
    }

    #[tokio::test]
    async fn an_early_answer_is_heard_while_the_body_still_streams() {
        let (backend, _) = raw_backend(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n",
            1,
        )
        .await;
        let pool = UpstreamPool::new(UpstreamSettings::default());
        // A body whose end never comes.
        let (_keep_open, frames) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let body = StreamBody::new(tokio_stream_of(frames)).boxed();
        let parts = http::Request::post("/upload")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let request = OutgoingRequest::new(&parts, parts.headers.iter(), body);
        let connection = pool.connect(backend).await.unwrap();
        let exchanged = tokio::time::timeout(
            Duration::from_secs(5),
            connection.exchange(request, false, &pool),
        )
        .await
        .expect("the answer came before the body ended")
        .unwrap();
        let Exchanged::Response(parts, body) = exchanged else {
            panic!("upgraded");
        };
        assert_eq!(parts.status, StatusCode::PAYLOAD_TOO_LARGE);
        drop(body);
        assert_eq!(
            pool.idle_count(),
            0,
            "a connection with half a request is not reused"
        );
    }

    /// The receiver as a stream of frames.
    fn tokio_stream_of(
        mut frames: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    ) -> impl futures::Stream<Item = Result<Frame<Bytes>, BoxError>> {
        futures::stream::poll_fn(move |context| frames.poll_recv(context))
    }

    /// A backend that takes one connection, reads until what it got ends
    /// with `end`, answers `answer` and hands back what it got.
    async fn capturing_backend(
        end: &'static [u8],
        answer: &'static [u8],
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = listener.local_addr().unwrap();
        let received = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut chunk = [0u8; 4096];
            while !seen.ends_with(end) {
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(
                    n > 0,
                    "closed before the body ended: {:?}",
                    String::from_utf8_lossy(&seen)
                );
                seen.extend_from_slice(&chunk[..n]);
            }
            stream.write_all(answer).await.unwrap();
            seen
        });
        (backend, received)
    }

    #[tokio::test]
    async fn request_bodies_go_up_in_their_framing() {
        let (backend, received) = capturing_backend(
            b"0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        let (frames_in, frames) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let body = StreamBody::new(tokio_stream_of(frames)).boxed();
        let parts = http::Request::post("/stream")
            .header("host", "h")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let request = OutgoingRequest::new(&parts, parts.headers.iter(), body);
        let pool = UpstreamPool::new(UpstreamSettings::default());
        let connection = pool.connect(backend).await.unwrap();
        let feeder = tokio::spawn(async move {
            for piece in ["hello", ", ", "world"] {
                frames_in
                    .send(Ok(Frame::data(Bytes::from_static(piece.as_bytes()))))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let exchanged = tokio::time::timeout(
            Duration::from_secs(5),
            connection.exchange(request, false, &pool),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(
            matches!(exchanged, Exchanged::Response(ref parts, _) if parts.status == StatusCode::OK)
        );
        feeder.await.unwrap();
        let seen = received.await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&seen),
            "POST /stream HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n2\r\n, \r\n5\r\nworld\r\n0\r\n\r\n"
        );

        // A body of known length goes with the head, unframed.
        let (backend, received) =
            capturing_backend(b"{\"a\":1}", b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let request = OutgoingRequest::new(
            &parts,
            parts.headers.iter(),
            Full::new(Bytes::from_static(b"{\"a\":1}"))
                .map_err(|e| match e {})
                .boxed(),
        );
        let connection = pool.connect(backend).await.unwrap();
        let exchanged = connection.exchange(request, false, &pool).await.unwrap();
        assert!(
            matches!(exchanged, Exchanged::Response(ref parts, _) if parts.status == StatusCode::NO_CONTENT)
        );
        assert_eq!(
            String::from_utf8_lossy(&received.await.unwrap()),
            "POST /stream HTTP/1.1\r\nhost: h\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
        );
    }
}
