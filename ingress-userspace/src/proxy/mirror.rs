//! Request mirroring (`mirror-target`, `mirror-host`,
//! `mirror-request-body`), as nginx's `mirror` does it for ingress-nginx:
//! a copy of each request (its method, headers and, unless turned off, its
//! body) goes to the target, whose answer is read and dropped; the client's
//! request never waits for it. Copies in flight are bounded: past the
//! bound a copy is skipped rather than queued.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use ingress_model::policy::Mirror;
use tokio::sync::Semaphore;
use tracing::debug;

use super::{
    auth::{RequestValues, connect, tls_connector},
    headers::remove_hop_by_hop,
};

/// Copies in flight at most, over every route.
const IN_FLIGHT: usize = 256;

/// The bound of copies in flight.
fn in_flight() -> &'static Arc<Semaphore> {
    static IN_FLIGHT_COPIES: OnceLock<Arc<Semaphore>> = OnceLock::new();
    IN_FLIGHT_COPIES.get_or_init(|| Arc::new(Semaphore::new(IN_FLIGHT)))
}

/// Sends a copy of `request` (with `body`, the request's whole body, when
/// `mirror.request_body`) to the mirror, in the background, for at most
/// `timeout`; `values` fill the target's variables.
pub(crate) fn send_copy<B>(
    mirror: &Mirror,
    values: &RequestValues<'_, B>,
    body: Option<Bytes>,
    timeout: Duration,
) {
    let Ok(permit) = Arc::clone(in_flight()).try_acquire_owned() else {
        debug!("mirror: too many copies in flight, this one is skipped");
        return;
    };
    let request = values.request;
    let target = mirror.target.target.render(|v| values.value(v));
    let host = mirror.host.clone().unwrap_or_else(|| {
        let url = &mirror.target;
        let name = if url.host.contains(':') {
            format!("[{}]", url.host)
        } else {
            url.host.clone()
        };
        let default_port = if url.tls { 443 } else { 80 };
        if url.port == default_port {
            name
        } else {
            format!("{name}:{}", url.port)
        }
    });
    let body = match (mirror.request_body, body) {
        (true, Some(body)) => body,
        _ => Bytes::new(),
    };
    let Ok(mut copy) = Request::builder()
        .method(request.method().clone())
        .uri(target.as_str())
        .body(Full::new(body))
    else {
        debug!(target, "mirror: the target is not a request URI");
        return;
    };
    *copy.headers_mut() = request.headers().clone();
    remove_hop_by_hop(copy.headers_mut(), false);
    // The copy's framing is its own body's.
    copy.headers_mut().remove(header::CONTENT_LENGTH);
    copy.headers_mut().remove(header::TRANSFER_ENCODING);
    let Ok(host) = HeaderValue::from_str(&host) else {
        return;
    };
    copy.headers_mut().insert(header::HOST, host);
    let url = mirror.target.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let sent = tokio::time::timeout(timeout, async {
            let stream = connect(&url).await?;
            if url.tls {
                let connector = tls_connector().ok_or("no trusted root certificates")?;
                let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                    .map_err(|e| e.to_string())?;
                let tls = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| e.to_string())?;
                exchange(TokioIo::new(tls), copy).await
            } else {
                exchange(TokioIo::new(stream), copy).await
            }
        })
        .await;
        match sent {
            Ok(Ok(status)) => debug!(status, "mirror answered"),
            Ok(Err(error)) => debug!(%error, "mirror failed"),
            Err(_) => debug!("mirror timed out"),
        }
    });
}

/// Sends `copy` on `io` and reads the answer to its end; its status.
async fn exchange<IO>(io: IO, copy: Request<Full<Bytes>>) -> Result<u16, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let connection = tokio::spawn(connection);
    let answer = sender.send_request(copy).await.map_err(|e| e.to_string());
    let status = match answer {
        Ok(answer) => {
            let status = answer.status().as_u16();
            let _ = answer.into_body().collect().await;
            Ok(status)
        }
        Err(error) => Err(error),
    };
    connection.abort();
    status
}
