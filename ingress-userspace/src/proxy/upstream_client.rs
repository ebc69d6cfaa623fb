//! Upstream connections driven by hyper's client, for what the HTTP/1.1
//! codec of [`super::upstream`] does not speak: HTTP/2 (`GRPC`, `H2C`: in
//! clear text with prior knowledge; `GRPCS`: over TLS with ALPN `h2`), one
//! multiplexed connection per endpoint, shared by every request to it and
//! replaced when it closes; and HTTP/1.1 over TLS (`HTTPS`), kept alive per
//! endpoint. Streams, trailers (`grpc-status`) and flow control are
//! hyper's.
//!
//! A connection is keyed by its endpoint and, over TLS, by its client
//! configuration and the server name it verified: a connection verified
//! for one name never carries a request for another.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Request, Response};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use ingress_model::upstream::{UpstreamProtocol, UpstreamTls};
use rustls::{ClientConfig, pki_types::ServerName};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tracing::debug;

use super::{
    upstream::ProxyBody,
    upstream_tls::{self, TlsClientConfigs, UpstreamTlsError},
};

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ClientConnectError {
    /// The TCP connect, the TLS handshake or the HTTP/2 preface took too long.
    #[error("connecting to {0} timed out")]
    Timeout(SocketAddr),
    /// The endpoint refused, or the TLS handshake failed (an unverified
    /// certificate among others).
    #[error("connecting to {endpoint}: {source}")]
    Io {
        /// The endpoint.
        endpoint: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP/2 or HTTP/1.1 handshake failed.
    #[error("handshake with {endpoint}: {source}")]
    Handshake {
        /// The endpoint.
        endpoint: SocketAddr,
        /// The error.
        #[source]
        source: hyper::Error,
    },
    /// The route's TLS settings cannot be used.
    #[error(transparent)]
    Tls(#[from] UpstreamTlsError),
}

/// Why a request sent on a connection got no response.
#[derive(Debug)]
pub enum SendFailure {
    /// The connection could not take it (closed meanwhile): the request
    /// comes back untouched, to go on another connection.
    NotSent(Box<Request<ProxyBody>>),
    /// It failed once sent (the endpoint, or the request body).
    Failed(hyper::Error),
}

/// Where a connection goes and how it is secured.
#[derive(Clone)]
struct ConnectionKey {
    endpoint: SocketAddr,
    /// The client configuration (compared by identity: the cache holds
    /// one per distinct settings) and the server name verified.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl PartialEq for ConnectionKey {
    fn eq(&self, other: &Self) -> bool {
        self.endpoint == other.endpoint
            && match (&self.tls, &other.tls) {
                (None, None) => true,
                (Some((a, name_a)), Some((b, name_b))) => Arc::ptr_eq(a, b) && name_a == name_b,
                _ => false,
            }
    }
}

impl Eq for ConnectionKey {}

impl Hash for ConnectionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.endpoint.hash(state);
        if let Some((config, name)) = &self.tls {
            (Arc::as_ptr(config) as usize).hash(state);
            name.hash(state);
        }
    }
}

/// How often an HTTP/2 connection to an endpoint is pinged.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(10);

type Map<V> = Mutex<HashMap<ConnectionKey, V, foldhash::fast::RandomState>>;

/// The connections hyper drives, with the TLS configurations they use.
pub struct ClientPool {
    connect_timeout: Duration,
    max_idle_per_endpoint: usize,
    tls: TlsClientConfigs,
    http2: Map<http2::SendRequest<ProxyBody>>,
    http1: Map<Vec<http1::SendRequest<ProxyBody>>>,
}

/// A connection ready for one request.
pub enum ClientConnection {
    /// A stream of a shared HTTP/2 connection.
    Http2(http2::SendRequest<ProxyBody>),
    /// An HTTP/1.1 connection over TLS, back to the pool once the response
    /// head came.
    Http1(http1::SendRequest<ProxyBody>, ConnectionHome),
}

/// Where an HTTP/1.1 connection goes back to.
pub struct ConnectionHome {
    pool: Arc<ClientPool>,
    key: ConnectionKey,
}

impl ClientPool {
    /// An empty pool connecting within `connect_timeout` unless a route
    /// says otherwise, keeping at most `max_idle_per_endpoint` HTTP/1.1
    /// connections per endpoint.
    pub fn new(connect_timeout: Duration, max_idle_per_endpoint: usize) -> Arc<Self> {
        Arc::new(Self {
            connect_timeout,
            max_idle_per_endpoint,
            tls: TlsClientConfigs::default(),
            http2: Mutex::default(),
            http1: Mutex::default(),
        })
    }

    /// A connection to `endpoint` speaking `protocol` (HTTP/2, or anything
    /// over TLS) with the route's `tls`: the shared HTTP/2 connection or an
    /// idle HTTP/1.1 one when there is one open, else a new one, connected
    /// within `connect_timeout` (else the pool's). `upstream_host` is the
    /// `Host` going upstream (the name verified without `proxy-ssl-name`).
    pub async fn connection(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        protocol: UpstreamProtocol,
        tls: Option<&UpstreamTls>,
        upstream_host: &str,
        connect_timeout: Option<Duration>,
    ) -> Result<ClientConnection, ClientConnectError> {
        let http2 = protocol.is_http2();
        let key = ConnectionKey {
            endpoint,
            tls: match protocol.uses_tls() {
                true => Some((
                    self.tls.get(tls, http2)?,
                    upstream_tls::server_name(tls, upstream_host, endpoint),
                )),
                false => None,
            },
        };
        if let Some(connection) = self.idle(&key, http2) {
            return Ok(connection);
        }
        let timeout = connect_timeout.unwrap_or(self.connect_timeout);
        let connection = tokio::time::timeout(timeout, self.connect(&key, http2))
            .await
            .map_err(|_| ClientConnectError::Timeout(endpoint))??;
        if let ClientConnection::Http2(sender) = &connection {
            self.http2
                .lock()
                .expect("pool lock")
                .insert(key, sender.clone());
        }
        Ok(connection)
    }

    /// An open connection of `key`, if any; closed ones are forgotten.
    fn idle(self: &Arc<Self>, key: &ConnectionKey, http2: bool) -> Option<ClientConnection> {
        if http2 {
            let mut shared = self.http2.lock().expect("pool lock");
            let sender = shared.get(key)?;
            if !sender.is_closed() {
                return Some(ClientConnection::Http2(sender.clone()));
            }
            shared.remove(key);
            return None;
        }
        let mut idle = self.http1.lock().expect("pool lock");
        let list = idle.get_mut(key)?;
        // Busy ones (a response body still streaming) stay for later.
        list.retain(|sender| !sender.is_closed());
        let ready = list.iter().position(http1::SendRequest::is_ready)?;
        let sender = list.swap_remove(ready);
        Some(ClientConnection::Http1(
            sender,
            ConnectionHome {
                pool: self.clone(),
                key: key.clone(),
            },
        ))
    }

    async fn connect(
        self: &Arc<Self>,
        key: &ConnectionKey,
        http2: bool,
    ) -> Result<ClientConnection, ClientConnectError> {
        let endpoint = key.endpoint;
        let stream = TcpStream::connect(endpoint)
            .await
            .map_err(|source| ClientConnectError::Io { endpoint, source })?;
        let _ = stream.set_nodelay(true);
        match &key.tls {
            None => self.handshake(stream, key, http2).await,
            Some((config, name)) => {
                let stream = upstream_tls::connect(config.clone(), name.clone(), stream)
                    .await
                    .map_err(|source| ClientConnectError::Io { endpoint, source })?;
                if http2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                    debug!(%endpoint, "the endpoint did not choose h2 by ALPN; speaking HTTP/2 anyway");
                }
                self.handshake(stream, key, http2).await
            }
        }
    }

    async fn handshake<IO>(
        self: &Arc<Self>,
        io: IO,
        key: &ConnectionKey,
        http2: bool,
    ) -> Result<ClientConnection, ClientConnectError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let endpoint = key.endpoint;
        let failed = |source| ClientConnectError::Handshake { endpoint, source };
        if http2 {
            // Pings find a peer gone silent (a node lost) before a request
            // waits on it; idle connections too, as they are shared.
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(HTTP2_PING_INTERVAL)
                .keep_alive_timeout(HTTP2_PING_TIMEOUT)
                .keep_alive_while_idle(true)
                .handshake(TokioIo::new(io))
                .await
                .map_err(failed)?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    debug!(%endpoint, %error, "HTTP/2 upstream connection ended");
                }
            });
            Ok(ClientConnection::Http2(sender))
        } else {
            let (sender, connection) = http1::Builder::new()
                .handshake(TokioIo::new(io))
                .await
                .map_err(failed)?;
            tokio::spawn(async move {
                if let Err(error) = connection.with_upgrades().await {
                    debug!(%endpoint, %error, "HTTP/1.1 upstream connection over TLS ended");
                }
            });
            Ok(ClientConnection::Http1(
                sender,
                ConnectionHome {
                    pool: self.clone(),
                    key: key.clone(),
                },
            ))
        }
    }

    /// Forgets the HTTP/2 connections and idle HTTP/1.1 ones to endpoints
    /// that are not wanted any more.
    pub fn retain_endpoints(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.http2
            .lock()
            .expect("pool lock")
            .retain(|key, sender| keep(&key.endpoint) && !sender.is_closed());
        self.http1
            .lock()
            .expect("pool lock")
            .retain(|key, _| keep(&key.endpoint));
    }

    /// How many connections the pool holds (for tests and metrics).
    pub fn connection_count(&self) -> usize {
        self.http2.lock().expect("pool lock").len()
            + self
                .http1
                .lock()
                .expect("pool lock")
                .values()
                .map(Vec::len)
                .sum::<usize>()
    }
}

impl ClientConnection {
    /// Sends `request` and waits for the response head.
    pub async fn send(
        self,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, SendFailure> {
        let failure = |error: hyper::client::conn::TrySendError<Request<ProxyBody>>| {
            let mut error = error;
            match error.take_message() {
                Some(request) => SendFailure::NotSent(Box::new(request)),
                None => SendFailure::Failed(error.into_error()),
            }
        };
        match self {
            Self::Http2(mut sender) => {
                if sender.ready().await.is_err() {
                    return Err(SendFailure::NotSent(Box::new(request)));
                }
                sender.try_send_request(request).await.map_err(failure)
            }
            Self::Http1(mut sender, home) => {
                if sender.ready().await.is_err() {
                    return Err(SendFailure::NotSent(Box::new(request)));
                }
                let response = sender.try_send_request(request).await.map_err(failure)?;
                home.give_back(sender);
                Ok(response)
            }
        }
    }
}

impl ConnectionHome {
    /// Keeps `sender` for a later request: it takes one once the response
    /// body in progress has been read.
    fn give_back(self, sender: http1::SendRequest<ProxyBody>) {
        let mut idle = self.pool.http1.lock().expect("pool lock");
        let list = idle.entry(self.key).or_default();
        if list.len() < self.pool.max_idle_per_endpoint {
            list.push(sender);
        }
    }
}
