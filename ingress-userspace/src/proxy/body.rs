//! Body adapters for streaming: an idle timeout between frames and a size
//! limit, both without buffering the body.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::upstream::BoxError;

/// The body went quiet for longer than its timeout.
#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?}")]
pub struct BodyTimeout(pub Duration);

/// The body grew past its limit.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// A body that fails with [`BodyTimeout`] when no frame arrives for `timeout`
/// (nginx's proxy_read_timeout / client_body_timeout: between two reads, not
/// for the whole body), and with [`BodyTooLarge`] past `limit` bytes.
pub struct GuardedBody<B> {
    inner: B,
    timeout: Duration,
    /// Armed the first time the body has to wait; most bodies never do.
    sleep: Option<Pin<Box<Sleep>>>,
    /// A frame came since the sleep was last set: move its deadline before
    /// the next wait.
    progressed: bool,
    limit: Option<u64>,
    seen: u64,
}

impl<B> GuardedBody<B> {
    /// Wraps `inner`; `limit` of `None` means unlimited.
    pub fn new(inner: B, timeout: Duration, limit: Option<u64>) -> Self {
        Self {
            inner,
            timeout,
            sleep: None,
            progressed: false,
            limit,
            seen: 0,
        }
    }
}

impl<B> GuardedBody<B> {
    /// The timer of the current wait: `timeout` from now if the body
    /// progressed since it was set (or it was never set).
    fn waiting(&mut self) -> Pin<&mut Sleep> {
        let timeout = self.timeout;
        let progressed = std::mem::take(&mut self.progressed);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if progressed {
            sleep.as_mut().reset(Instant::now() + timeout);
        }
        sleep.as_mut()
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(limit) = this.limit
                        && this.seen > limit
                    {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(limit)))));
                    }
                }
                this.progressed = true;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.waiting().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body that holds `T` (a request's connection slot) until it is sent
/// whole or dropped.
pub struct Holding<B, T> {
    inner: B,
    _held: T,
}

impl<B, T> Holding<B, T> {
    /// Wraps `inner`, holding `held` as long as the body lives.
    pub fn new(inner: B, held: T) -> Self {
        Self { inner, _held: held }
    }
}

impl<B: Body + Unpin, T: Unpin> Body for Holding<B, T> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    #[tokio::test]
    async fn small_bodies_pass_through() {
        let body = GuardedBody::new(
            Full::new(Bytes::from_static(b"hello")),
            Duration::from_secs(1),
            Some(5),
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
    }

    #[tokio::test]
    async fn bodies_over_the_limit_fail() {
        let body = GuardedBody::new(
            Full::new(Bytes::from_static(b"hello!")),
            Duration::from_secs(1),
            Some(5),
        );
        let error = body.collect().await.expect_err("over the limit");
        assert!(error.downcast_ref::<BodyTooLarge>().is_some(), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out() {
        let stream =
            futures_util::stream::pending::<Result<Frame<Bytes>, std::convert::Infallible>>();
        let body = GuardedBody::new(StreamBody::new(stream), Duration::from_secs(60), None);
        let error = body.collect().await.expect_err("timed out");
        assert!(error.downcast_ref::<BodyTimeout>().is_some(), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_coming_does_not_time_out() {
        // Three frames 40 s apart: 120 s in all, never 60 s without data.
        let stream = futures_util::stream::unfold(0, |sent| async move {
            if sent == 3 {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(40)).await;
            let frame = Frame::data(Bytes::from_static(b"chunk"));
            Some((Ok::<_, std::convert::Infallible>(frame), sent + 1))
        });
        let body = GuardedBody::new(
            StreamBody::new(Box::pin(stream)),
            Duration::from_secs(60),
            None,
        );
        let bytes = body.collect().await.expect("no timeout").to_bytes();
        assert_eq!(&bytes[..], b"chunkchunkchunk");
    }
}
