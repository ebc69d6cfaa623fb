//! The lab of xdp-ingress's end-to-end tests, demo and benchmarks.
//!
//! `lab-backend` (src/bin) is the backend process: it reports which backend
//! and endpoint served a request and what it received.

/// What `lab-backend` answers (JSON), for the tests to decode.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct BackendReport {
    /// The backend's name (`--name`, usually the Service's).
    pub backend: String,
    /// The local address that accepted the connection: the endpoint.
    pub endpoint: String,
    /// The client as the backend saw it (the proxy's address).
    pub peer: String,
    /// The request method.
    pub method: String,
    /// The request path with its query.
    pub path: String,
    /// The `Host` header.
    pub host: String,
    /// Every header, lower-case names, in order; repeated names repeat.
    pub headers: Vec<(String, String)>,
    /// The number of body bytes received.
    pub body_bytes: u64,
}

impl BackendReport {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
