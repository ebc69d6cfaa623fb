//! Upstream HTTP/1.1 connections: a keep-alive pool per endpoint. Connecting
//! is separate from sending, so a failed connect can be retried on another
//! endpoint before the request body has been touched.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    client::conn::http1::{self, SendRequest},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

/// The error type of bodies the proxy streams.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type the proxy sends and answers with.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

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
        source: std::io::Error,
    },
    /// The HTTP/1 handshake failed.
    #[error("HTTP handshake with {endpoint}: {source}")]
    Handshake {
        /// The endpoint.
        endpoint: SocketAddr,
        /// The error.
        #[source]
        source: hyper::Error,
    },
}

struct IdleConnection {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

/// Keep-alive connections to upstream endpoints.
pub struct UpstreamPool {
    settings: UpstreamSettings,
    /// foldhash: two lookups per request, and endpoints are not chosen by clients.
    idle: Mutex<HashMap<SocketAddr, Vec<IdleConnection>, foldhash::fast::RandomState>>,
}

/// A connection checked out of the pool; it goes back when its response body
/// has been read to the end (see [`PooledBody`]).
pub struct PooledConnection {
    /// The endpoint it is connected to.
    pub endpoint: SocketAddr,
    /// The request sender.
    pub sender: SendRequest<ProxyBody>,
    /// True when it came from the pool (a stale one may fail on first use).
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
    pub async fn checkout(&self, endpoint: SocketAddr) -> Result<PooledConnection, ConnectError> {
        if let Some(sender) = self.take_idle(endpoint) {
            return Ok(PooledConnection {
                endpoint,
                sender,
                reused: true,
            });
        }
        let sender = self.connect(endpoint).await?;
        Ok(PooledConnection {
            endpoint,
            sender,
            reused: false,
        })
    }

    fn take_idle(&self, endpoint: SocketAddr) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.get_mut(&endpoint)?;
        let now = Instant::now();
        while let Some(connection) = list.pop() {
            if connection.sender.is_ready()
                && now.duration_since(connection.since) < self.settings.idle_timeout
            {
                return Some(connection.sender);
            }
        }
        None
    }

    /// A new connection, with the connect timeout.
    pub async fn connect(
        &self,
        endpoint: SocketAddr,
    ) -> Result<SendRequest<ProxyBody>, ConnectError> {
        let stream =
            tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(endpoint))
                .await
                .map_err(|_| ConnectError::Timeout(endpoint))?
                .map_err(|source| ConnectError::Io { endpoint, source })?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake { endpoint, source })?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                debug!(%endpoint, %error, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// Returns a connection whose exchange finished cleanly.
    fn give_back(&self, endpoint: SocketAddr, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.entry(endpoint).or_default();
        if list.len() < self.settings.max_idle_per_endpoint {
            list.push(IdleConnection {
                sender,
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

/// An upstream response body that hands its connection back to the pool
/// once the body has been read to its end. Dropped early, the connection
/// is closed instead, since it may still carry unread bytes.
pub struct PooledBody {
    inner: Incoming,
    connection: Option<(SendRequest<ProxyBody>, SocketAddr)>,
    pool: Weak<UpstreamPool>,
}

impl PooledBody {
    /// Wraps `inner`, which arrived over `connection`.
    pub fn new(inner: Incoming, connection: PooledConnection, pool: &Arc<UpstreamPool>) -> Self {
        let done = inner.is_end_stream();
        let mut body = Self {
            inner,
            connection: Some((connection.sender, connection.endpoint)),
            pool: Arc::downgrade(pool),
        };
        if done {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let (Some((sender, endpoint)), Some(pool)) =
            (self.connection.take(), self.pool.upgrade())
        {
            pool.give_back(endpoint, sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => {
                self.connection = None;
            }
            _ => {}
        }
        polled.map(|frame| frame.map(|result| result.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
