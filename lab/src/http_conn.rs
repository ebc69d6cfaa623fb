//! An HTTP/1.1 client connection written and read by hand, from inside a
//! namespace: for what curl hides (keep-alive across a reload, chunk arrival
//! times, an upgrade followed by raw bytes, malformed requests).
//!
//! ```no_run
//! # use xdp_ingress_lab::{HttpConnection, Netns};
//! # fn main() -> anyhow::Result<()> {
//! # let client = Netns::new("cli")?;
//! let mut conn = HttpConnection::open(&client, "198.18.0.1:80".parse()?)?;
//! let first = conn.request("GET", "/", "web.example.com", &[], b"")?;
//! let second = conn.request("GET", "/again", "web.example.com", &[], b"")?;
//! println!("{} then {}", first.status, second.status);
//! # Ok(())
//! # }
//! ```

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::{backend::BackendReport, netns::Netns};

/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default bound of one response (head and body), and of each read.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// The status line and headers of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// Headers in order, names lower-case.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> Result<Option<usize>> {
        self.header("content-length")
            .map(|v| v.trim().parse().context("Content-Length"))
            .transpose()
    }

    fn has_no_body(&self) -> bool {
        (100..200).contains(&self.status) || self.status == 204 || self.status == 304
    }
}

/// A whole response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Headers in order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as a `lab-backend` report.
    pub fn report(&self) -> Result<BackendReport> {
        BackendReport::parse(&self.body)
            .with_context(|| format!("status {}, body {:?}", self.status, self.text()))
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client TCP connection, opened inside a namespace; reads are bounded
/// by a timeout (5 s unless set).
#[derive(Debug)]
pub struct HttpConnection {
    stream: TcpStream,
    buf: Vec<u8>,
    timeout: Duration,
}

impl HttpConnection {
    /// Connects to `addr` from inside `ns` (the socket stays in `ns`).
    pub fn open(ns: &Netns, addr: SocketAddr) -> Result<Self> {
        let stream = ns
            .enter(|| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT))?
            .with_context(|| format!("connecting to {addr} from {}", ns.name()))?;
        stream.set_nodelay(true)?;
        let mut conn = Self {
            stream,
            buf: Vec::new(),
            timeout: RESPONSE_TIMEOUT,
        };
        conn.set_timeout(RESPONSE_TIMEOUT)?;
        Ok(conn)
    }

    /// Bounds each read and write, and each response, by `timeout`.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.set_write_timeout(Some(timeout))?;
        self.timeout = timeout;
        Ok(())
    }

    /// The socket, for example to write from another thread (`try_clone`).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).context("sending")
    }

    /// Closes the sending side (the peer reads end of stream).
    pub fn shutdown_write(&self) -> Result<()> {
        self.stream.shutdown(Shutdown::Write).context("shutdown")
    }

    /// Sends `METHOD PATH HTTP/1.1` with `Host: host`, `headers` and `body`
    /// (with its `Content-Length` when not empty), and reads the response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        host: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<RawResponse> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.send(&bytes)?;
        self.read_response()
            .with_context(|| format!("{method} {path} (Host: {host})"))
    }

    /// Reads one response (skipping `100 Continue`); a response to `HEAD`
    /// is not supported (its body would be expected).
    pub fn read_response(&mut self) -> Result<RawResponse> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let head = self.read_head_until(deadline)?;
            if head.status == 100 {
                continue;
            }
            let body = self.read_body_until(&head, deadline, |_| {})?;
            return Ok(RawResponse {
                status: head.status,
                headers: head.headers,
                body,
            });
        }
    }

    /// Reads a response head.
    pub fn read_head(&mut self) -> Result<ResponseHead> {
        self.read_head_until(Instant::now() + self.timeout)
    }

    /// Reads the body that follows `head` (by `Content-Length`, chunked, or
    /// to the end of the connection), calling `on_data` with each piece of
    /// body data as it arrives; returns the whole body.
    pub fn read_body(
        &mut self,
        head: &ResponseHead,
        on_data: impl FnMut(&[u8]),
    ) -> Result<Vec<u8>> {
        self.read_body_until(head, Instant::now() + self.timeout, on_data)
    }

    /// Reads exactly `len` bytes (after an upgrade, for example).
    pub fn read_exact_bytes(&mut self, len: usize) -> Result<Vec<u8>> {
        let deadline = Instant::now() + self.timeout;
        while self.buf.len() < len {
            ensure!(
                self.fill(deadline)? > 0,
                "connection closed after {} of {len} bytes",
                self.buf.len()
            );
        }
        Ok(self.buf.drain(..len).collect())
    }

    /// True when the peer has closed the connection (end of stream or reset)
    /// within `wait`; false when it is still open (bytes that arrive are kept).
    pub fn closed_within(&mut self, wait: Duration) -> Result<bool> {
        let deadline = Instant::now() + wait;
        self.stream.set_read_timeout(Some(wait))?;
        let result = loop {
            match self.fill(deadline) {
                Ok(0) => break Ok(true),
                Ok(_) => continue,
                Err(error) if is_timeout(&error) => break Ok(false),
                Err(_) => break Ok(true),
            }
        };
        self.stream.set_read_timeout(Some(self.timeout))?;
        result
    }

    fn read_head_until(&mut self, deadline: Instant) -> Result<ResponseHead> {
        let end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at;
            }
            ensure!(
                self.buf.len() <= MAX_HEAD,
                "response head over {MAX_HEAD} bytes"
            );
            if self.fill(deadline)? == 0 {
                bail!(
                    "connection closed before a response head ({} bytes: {:?})",
                    self.buf.len(),
                    String::from_utf8_lossy(&self.buf)
                );
            }
        };
        let head: Vec<u8> = self.buf.drain(..end + 4).collect();
        parse_head(&head[..end])
    }

    fn read_body_until(
        &mut self,
        head: &ResponseHead,
        deadline: Instant,
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        if head.has_no_body() {
            return Ok(body);
        }
        if head.is_chunked() {
            loop {
                let line = self.read_line(deadline)?;
                let size = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size, 16)
                    .with_context(|| format!("chunk size line {line:?}"))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    while !self.read_line(deadline)?.is_empty() {}
                    return Ok(body);
                }
                let mut left = size;
                while left > 0 {
                    if self.buf.is_empty() {
                        ensure!(self.fill(deadline)? > 0, "connection closed inside a chunk");
                    }
                    let take = left.min(self.buf.len());
                    let piece: Vec<u8> = self.buf.drain(..take).collect();
                    on_data(&piece);
                    body.extend_from_slice(&piece);
                    left -= take;
                }
                ensure!(
                    self.read_line(deadline)?.is_empty(),
                    "no CRLF after a chunk"
                );
            }
        }
        match head.content_length()? {
            Some(length) => {
                while body.len() < length {
                    if self.buf.is_empty() {
                        ensure!(
                            self.fill(deadline)? > 0,
                            "connection closed after {} of {length} body bytes",
                            body.len()
                        );
                    }
                    let take = (length - body.len()).min(self.buf.len());
                    let piece: Vec<u8> = self.buf.drain(..take).collect();
                    on_data(&piece);
                    body.extend_from_slice(&piece);
                }
            }
            None => loop {
                if !self.buf.is_empty() {
                    let piece: Vec<u8> = std::mem::take(&mut self.buf);
                    on_data(&piece);
                    body.extend_from_slice(&piece);
                }
                if self.fill(deadline)? == 0 {
                    break;
                }
            },
        }
        Ok(body)
    }

    /// A line without its CRLF.
    fn read_line(&mut self, deadline: Instant) -> Result<String> {
        loop {
            if let Some(at) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..at + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..at]).into_owned());
            }
            ensure!(self.buf.len() <= MAX_HEAD, "line over {MAX_HEAD} bytes");
            ensure!(self.fill(deadline)? > 0, "connection closed inside a line");
        }
    }

    /// One read into the buffer; 0 at end of stream. Fails past `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<usize> {
        if Instant::now() >= deadline {
            bail!(std::io::Error::from(ErrorKind::TimedOut));
        }
        let mut chunk = [0u8; 16 * 1024];
        let read = loop {
            match self.stream.read(&mut chunk) {
                Ok(read) => break read,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(error).context("reading the response"),
            }
        };
        self.buf.extend_from_slice(&chunk[..read]);
        Ok(read)
    }
}

fn is_timeout(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| matches!(io.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn parse_head(bytes: &[u8]) -> Result<ResponseHead> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    ensure!(
        version.starts_with("HTTP/1."),
        "not an HTTP/1 status line: {status_line:?}"
    );
    let status = parts
        .next()
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(ResponseHead { status, headers })
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A connection to a one-shot local server that answers `reply` to
    /// whatever arrives first.
    fn answered_by(reply: &'static [u8]) -> HttpConnection {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            stream.write_all(reply).unwrap();
        });
        let stream = TcpStream::connect(addr).unwrap();
        let mut conn = HttpConnection {
            stream,
            buf: Vec::new(),
            timeout: RESPONSE_TIMEOUT,
        };
        conn.set_timeout(Duration::from_secs(5)).unwrap();
        conn
    }

    #[test]
    fn reads_chunked_bodies_piece_by_piece() {
        let mut conn = answered_by(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
        );
        let response = conn.request("GET", "/", "h", &[], b"").unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-a"), Some("b"));
        assert_eq!(response.body, b"abcde");
    }

    #[test]
    fn reads_bodies_by_length_or_to_the_end() {
        let mut conn = answered_by(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno");
        let response = conn.request("GET", "/", "h", &[], b"").unwrap();
        assert_eq!((response.status, response.text().as_str()), (404, "no"));
        let mut conn = answered_by(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it");
        let response = conn.request("GET", "/", "h", &[], b"").unwrap();
        assert_eq!(response.text(), "all of it");
        assert!(conn.closed_within(Duration::from_secs(1)).unwrap());
    }

    #[test]
    fn a_closed_connection_is_an_error() {
        let mut conn = answered_by(b"");
        assert!(conn.request("GET", "/", "h", &[], b"").is_err());
    }
}
