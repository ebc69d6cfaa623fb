//! Timing a route change: from the moment the configuration was changed to
//! the first `200` for the new host, polled from the client namespace with a
//! new connection each time (a kept-alive connection could stay with an
//! old nginx worker).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use xdp_ingress_lab::Netns;

/// Time between two polls.
const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// Bound of one poll (connect, and the response's status line).
const POLL_TIMEOUT: Duration = Duration::from_millis(500);

/// Polls `GET http://addr/` with `Host: host` from `client` until it
/// answers 200, at most `timeout` after `since` (and a bounded number of
/// polls); returns the time from `since` to that answer.
pub fn time_to_serve(
    client: &Netns,
    addr: SocketAddr,
    host: &str,
    since: Instant,
    timeout: Duration,
) -> Result<Duration> {
    let max_polls = (timeout.as_millis() / POLL_INTERVAL.as_millis()).max(1) + 1;
    client.enter(|| {
        let mut last = String::from("no answer yet");
        for _ in 0..max_polls {
            match status_of(addr, host) {
                Ok(200) => return Ok(since.elapsed()),
                Ok(status) => last = format!("status {status}"),
                Err(error) => last = error.to_string(),
            }
            if since.elapsed() >= timeout {
                break;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        bail!("{host} was not served within {timeout:?} ({last})")
    })?
}

/// The status of one `GET /` for `host` on a new connection.
pub fn status_of(addr: SocketAddr, host: &str) -> Result<u16> {
    let mut stream = send_get(addr, host)?;
    // "HTTP/1.1 200 OK": enough bytes for the status code.
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    status_in(&head)
}

/// The status and body of one `GET /` for `host` on a new connection (read
/// until the proxy closes it; bounded by the poll timeout).
pub fn response_of(addr: SocketAddr, host: &str) -> Result<(u16, Vec<u8>)> {
    let mut stream = send_get(addr, host)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let status = status_in(&response)?;
    let body = match response.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => response.split_off(end + 4),
        None => Vec::new(),
    };
    Ok((status, body))
}

/// Connects and sends `GET /` for `host` with `Connection: close`.
fn send_get(addr: SocketAddr, host: &str) -> Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, POLL_TIMEOUT)?;
    stream.set_read_timeout(Some(POLL_TIMEOUT))?;
    stream.set_write_timeout(Some(POLL_TIMEOUT))?;
    stream.set_nodelay(true)?;
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    Ok(stream)
}

/// The status code of a response that starts with `head`.
fn status_in(head: &[u8]) -> Result<u16> {
    let text = String::from_utf8_lossy(&head[..head.len().min(12)]);
    match text.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
        Some(status) => Ok(status),
        None => bail!("not an HTTP status line: {text:?}"),
    }
}

/// Checks from `client` that every host of `hosts` answers 200 (one try
/// each, a few hosts out of many are enough to catch a broken setup).
pub fn check_serving(client: &Netns, addr: SocketAddr, hosts: &[String]) -> Result<()> {
    client.enter(|| {
        for host in hosts {
            let status = status_of(addr, host)?;
            if status != 200 {
                bail!("{host} answered {status} instead of 200");
            }
        }
        Ok(())
    })?
}
