//! Writes to the API server at a steady rate without a process per write:
//! `kubectl proxy` (as the cluster's admin) on a loopback port, and plain
//! HTTP/1.0 requests to it, one connection each (no chunked responses to
//! decode). Every request still goes through the real API server.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use xdp_ingress_lab::{Background, k8s::TestCluster, poll_until};

/// How long `kubectl proxy` may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound of one request through the proxy.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `kubectl proxy` on 127.0.0.1, stopped on drop.
#[derive(Debug)]
pub struct ApiProxy {
    addr: SocketAddr,
    _process: Background,
}

impl ApiProxy {
    /// Starts `kubectl proxy` with the admin kubeconfig of `cluster` on a
    /// free loopback port; returns once it accepts connections.
    pub fn start(cluster: &TestCluster) -> Result<Self> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let process = Background::start(
            Command::new(cluster.assets_dir().join("kubectl"))
                .arg("--kubeconfig")
                .arg(cluster.kubeconfig())
                .args(["proxy", "--address=127.0.0.1", &format!("--port={port}")]),
        )?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        poll_until("kubectl proxy to listen", START_TIMEOUT, || {
            Ok(
                TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                    .is_ok()
                    .then_some(()),
            )
        })?;
        Ok(Self {
            addr,
            _process: process,
        })
    }

    /// A JSON merge patch of the object at `path` (`/apis/...`); returns
    /// the patched object's `metadata.resourceVersion`.
    pub fn merge_patch(&self, path: &str, patch: &str) -> Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr, REQUEST_TIMEOUT)?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_nodelay(true)?;
        write!(
            stream,
            "PATCH {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/merge-patch+json\r\nContent-Length: {}\r\n\r\n{patch}",
            patch.len()
        )?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .with_context(|| format!("reading the answer to PATCH {path}"))?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).unwrap_or("?");
        if status != "200" {
            bail!("PATCH {path} answered {status}: {}", body.trim());
        }
        let object: Value = serde_json::from_str(body)
            .with_context(|| format!("the answer to PATCH {path} is no JSON"))?;
        object["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the answer to PATCH {path} has no resourceVersion"))
    }
}
