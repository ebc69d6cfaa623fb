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

/// A response body sent no faster than `rate` bytes a second once
/// `unlimited` bytes have gone (nginx's `limit_rate` and
/// `limit_rate_after`, per request). Frames are cut into pieces of a tenth
/// of a second's bytes, each sent when the pace allows it.
pub struct RateLimited<B> {
    inner: B,
    rate: u64,
    unlimited: u64,
    sent: u64,
    /// When the limited part began (its first byte).
    since: Option<Instant>,
    /// The rest of a frame cut into pieces.
    rest: Option<Bytes>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> RateLimited<B> {
    /// Wraps `inner` at `rate` bytes a second (at least 1) after
    /// `unlimited` bytes.
    pub fn new(inner: B, rate: u64, unlimited: u64) -> Self {
        Self {
            inner,
            rate: rate.max(1),
            unlimited,
            sent: 0,
            since: None,
            rest: None,
            sleep: None,
        }
    }

    /// The next piece of `data` to send now (the rest kept), or how long
    /// to wait before the pace allows one.
    fn piece(&mut self, mut data: Bytes) -> Result<Bytes, Duration> {
        if self.sent < self.unlimited {
            let free = (self.unlimited - self.sent).min(data.len() as u64) as usize;
            let piece = data.split_to(free);
            self.sent += piece.len() as u64;
            if !data.is_empty() {
                self.rest = Some(data);
            }
            return Ok(piece);
        }
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        let limited = self.sent - self.unlimited;
        // The time at which `limited` bytes are due.
        let due = since + Duration::from_secs_f64(limited as f64 / self.rate as f64);
        if due > now {
            self.rest = Some(data);
            return Err(due - now);
        }
        let size = ((self.rate / 10).max(1) as usize).min(data.len());
        let piece = data.split_to(size);
        self.sent += piece.len() as u64;
        if !data.is_empty() {
            self.rest = Some(data);
        }
        Ok(piece)
    }
}

impl<B> Body for RateLimited<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(sleep) = &mut this.sleep {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
            }
            let data = match this.rest.take() {
                Some(data) => data,
                None => match Pin::new(&mut this.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => data,
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    },
                    other => return other,
                },
            };
            match this.piece(data) {
                Ok(piece) => return Poll::Ready(Some(Ok(Frame::data(piece)))),
                Err(wait) => this.sleep = Some(Box::pin(tokio::time::sleep(wait))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some(rest) = &self.rest {
            let rest = rest.len() as u64;
            hint.set_lower(hint.lower() + rest);
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + rest);
            }
        }
        hint
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

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_body_keeps_its_pace_after_the_free_bytes() {
        // 10 KiB: the first 2 KiB at once, the other 8 KiB at 4 KiB/s.
        let body = RateLimited::new(Full::new(Bytes::from(vec![b'x'; 10 * 1024])), 4096, 2048);
        let started = Instant::now();
        let mut body = std::pin::pin!(body);
        let mut received = 0usize;
        let mut first_free = None;
        while let Some(frame) = body.frame().await {
            received += frame.unwrap().into_data().unwrap().len();
            if received == 2048 {
                first_free = Some(started.elapsed());
            }
        }
        assert_eq!(received, 10 * 1024);
        assert_eq!(first_free, Some(Duration::ZERO));
        let took = started.elapsed();
        // The last 409-byte piece is due at (8192 - 409) / 4096 s.
        assert!(
            took >= Duration::from_millis(1850) && took <= Duration::from_millis(2000),
            "{took:?}"
        );
    }
}
