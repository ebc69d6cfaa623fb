//! Custom error pages as ingress-nginx makes them (`custom-http-errors`
//! with `default-backend`, or the ConfigMap's with
//! `--default-backend-service`): an upstream answer with one of the
//! statuses is replaced by the errors backend's answer to a request for
//! `/` that says what happened (`X-Code`, `X-Format`, `X-Original-URI`,
//! `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`, `X-Service-Port`,
//! `X-Request-ID`); a route whose Service has no endpoint is served by its
//! Ingress's `default-backend` with `X-Code: 503`.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Empty};

use super::{
    headers::{X_FORWARDED_FOR, X_REQUEST_ID, new_request_id},
    server::Upstream,
    upstream::{OutgoingRequest, ProxyBody},
};

/// Where a route's error pages come from, and what they are told of it.
#[derive(Debug, Clone)]
pub struct ErrorPages {
    /// The errors backend: the route's Ingress's `default-backend`, else
    /// `--default-backend-service`; `None`: the edge's own page.
    pub upstream: Option<Upstream>,
    /// Whether `upstream` is the route's own `default-backend` (which also
    /// serves the route while its Service has no endpoint).
    pub own: bool,
    /// `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`, `X-Service-Port`.
    pub labels: Arc<[HeaderValue; 4]>,
}

/// The header names of [`ErrorPages::labels`], in order.
static LABEL_NAMES: [HeaderName; 4] = [
    HeaderName::from_static("x-namespace"),
    HeaderName::from_static("x-ingress-name"),
    HeaderName::from_static("x-service-name"),
    HeaderName::from_static("x-service-port"),
];

/// `X-Code`.
const X_CODE: HeaderName = HeaderName::from_static("x-code");
/// `X-Format`.
const X_FORMAT: HeaderName = HeaderName::from_static("x-format");
/// `X-Original-URI`.
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");

/// What an error page request needs of the client's request, kept before
/// the request goes upstream.
#[derive(Debug, Clone)]
pub struct OriginalRequest {
    method: Method,
    target: HeaderValue,
    host: Option<HeaderValue>,
    accept: Option<HeaderValue>,
    request_id: HeaderValue,
}

impl OriginalRequest {
    /// What `request` says of itself.
    pub fn of<B>(request: &Request<B>) -> Self {
        let headers = request.headers();
        let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        Self {
            method: request.method().clone(),
            target: HeaderValue::from_str(target).unwrap_or(HeaderValue::from_static("/")),
            host: headers.get(header::HOST).cloned(),
            accept: headers.get(header::ACCEPT).cloned(),
            request_id: match headers.get(&X_REQUEST_ID) {
                Some(id) if !id.is_empty() => id.clone(),
                _ => new_request_id(),
            },
        }
    }
}

impl ErrorPages {
    /// Adds what a `default-backend` serving a route without endpoints is
    /// told (`X-Code: 503` and the labels) to the request's `headers`.
    pub fn mark_unavailable(&self, headers: &mut HeaderMap) {
        headers.insert(X_CODE, HeaderValue::from_static("503"));
        if let Some(accept) = headers.get(header::ACCEPT).cloned() {
            headers.insert(X_FORMAT, accept);
        }
        for (name, value) in LABEL_NAMES.iter().zip(self.labels.iter()) {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// The request for the error page of an upstream answer with `code` to
    /// `original` from `client_ip`: `/`, the client's method and `Host`.
    pub fn request(
        &self,
        original: &OriginalRequest,
        code: u16,
        client_ip: &HeaderValue,
    ) -> OutgoingRequest {
        let mut parts = Request::builder()
            .method(original.method.clone())
            .uri("/")
            .body(())
            .expect("a request for /")
            .into_parts()
            .0;
        let headers = &mut parts.headers;
        if let Some(host) = &original.host {
            headers.insert(header::HOST, host.clone());
        }
        headers.insert(X_CODE, HeaderValue::from(code));
        if let Some(accept) = &original.accept {
            headers.insert(X_FORMAT, accept.clone());
        }
        headers.insert(X_ORIGINAL_URI, original.target.clone());
        for (name, value) in LABEL_NAMES.iter().zip(self.labels.iter()) {
            headers.insert(name.clone(), value.clone());
        }
        headers.insert(X_REQUEST_ID, original.request_id.clone());
        headers.insert(X_FORWARDED_FOR, client_ip.clone());
        let body: ProxyBody = Empty::new().map_err(|e| match e {}).boxed();
        OutgoingRequest::new(&parts, parts.headers.iter(), body)
    }
}

/// The labels of a route of Ingress `namespace/ingress` to Service port
/// `service:port`.
pub fn labels(namespace: &str, ingress: &str, service: &str, port: u16) -> Arc<[HeaderValue; 4]> {
    let value = |text: &str| HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static(""));
    Arc::new([
        value(namespace),
        value(ingress),
        value(service),
        HeaderValue::from(port),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_page_request_says_what_happened() {
        let pages = ErrorPages {
            upstream: None,
            own: true,
            labels: labels("shop", "web", "web-svc", 80),
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri("/cart?id=1")
            .header(header::HOST, "shop.example.com")
            .header(header::ACCEPT, "application/json")
            .header("x-request-id", "abc")
            .body(())
            .unwrap();
        let original = OriginalRequest::of(&request);
        let outgoing = pages.request(&original, 404, &HeaderValue::from_static("198.18.0.2"));
        let head = String::from_utf8(outgoing.head().to_vec()).unwrap();
        for line in [
            "POST / HTTP/1.1",
            "host: shop.example.com",
            "x-code: 404",
            "x-format: application/json",
            "x-original-uri: /cart?id=1",
            "x-namespace: shop",
            "x-ingress-name: web",
            "x-service-name: web-svc",
            "x-service-port: 80",
            "x-request-id: abc",
            "x-forwarded-for: 198.18.0.2",
        ] {
            assert!(
                head.lines().any(|l| l.eq_ignore_ascii_case(line)),
                "{line} in {head}"
            );
        }
        let mut headers = HeaderMap::new();
        pages.mark_unavailable(&mut headers);
        assert_eq!(headers["x-code"], "503");
        assert_eq!(headers["x-service-name"], "web-svc");
    }
}
