//! HTTP requests from inside a namespace, made with curl.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{backend::BackendReport, netns::Netns};

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A response that curl received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The body as a `lab-backend` report.
    pub fn report(&self) -> Result<BackendReport> {
        BackendReport::parse(&self.body)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Netns {
    /// GETs `url` with curl from inside the namespace, with extra `headers`
    /// (`"Host: example.com"`), bounded by a few seconds. Any status is a
    /// reply; no reply at all (refused, reset, timed out) is an error that
    /// carries curl's message.
    pub fn http_get(&self, url: &str, headers: &[&str]) -> Result<HttpReply> {
        let timeout = REQUEST_TIMEOUT.as_secs().to_string();
        let mut args = vec![
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "-m",
            &timeout,
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ];
        for header in headers {
            args.extend(["-H", header]);
        }
        args.push(url);
        let out = self.exec_timeout(&args, REQUEST_TIMEOUT + Duration::from_secs(5))?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        // `-w` appended "\n<code>" to the body.
        let split = out
            .stdout
            .iter()
            .rposition(|&b| b == b'\n')
            .context("curl printed no status")?;
        let (body, status) = (&out.stdout[..split], &out.stdout[split + 1..]);
        let status = std::str::from_utf8(status)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .with_context(|| format!("curl's status {:?}", String::from_utf8_lossy(status)))?;
        Ok(HttpReply {
            status,
            body: body.to_vec(),
        })
    }
}

/// A response that [`Netns::curl`] received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurlReply {
    /// The status code.
    pub status: u16,
    /// The HTTP version curl spoke (`1.1`, `2`).
    pub http_version: String,
    /// The body.
    pub body: Vec<u8>,
}

impl CurlReply {
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

impl Netns {
    /// Runs curl from inside the namespace with `args` (options and the
    /// URL: `["--http2-prior-knowledge", "-H", "Host: a", "http://..."]`),
    /// bounded by a few seconds. Any status is a reply; no reply at all is
    /// an error that carries curl's message.
    pub fn curl(&self, args: &[&str]) -> Result<CurlReply> {
        let timeout = REQUEST_TIMEOUT.as_secs().to_string();
        let mut command = vec![
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "-m",
            &timeout,
            "-o",
            "-",
            "-w",
            "\n%{http_version} %{http_code}",
        ];
        command.extend_from_slice(args);
        let out = self.exec_timeout(&command, REQUEST_TIMEOUT + Duration::from_secs(5))?;
        if !out.status.success() {
            bail!(
                "curl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // `-w` appended "\n<version> <code>" to the body.
        let split = out
            .stdout
            .iter()
            .rposition(|&b| b == b'\n')
            .context("curl printed no status")?;
        let (body, trailer) = (&out.stdout[..split], &out.stdout[split + 1..]);
        let trailer = String::from_utf8_lossy(trailer);
        let (http_version, status) = trailer
            .trim()
            .split_once(' ')
            .and_then(|(version, code)| Some((version.to_owned(), code.parse().ok()?)))
            .with_context(|| format!("curl's version and status {trailer:?}"))?;
        Ok(CurlReply {
            status,
            http_version,
            body: body.to_vec(),
        })
    }
}
