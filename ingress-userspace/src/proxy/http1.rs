//! HTTP/1.1 toward upstream endpoints, without I/O (RFC 9112): the request
//! head as it is written, the response head as it is read, and the framing
//! of both bodies. The request's own task drives these over its pooled
//! connection (see `upstream`): no connection task, no channel and no wake-up
//! between the two, which a general-purpose client needs and a proxy does not.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};

/// Largest response head taken from an endpoint (nginx's proxy_buffer_size
/// is 4-8 KiB; larger heads are an upstream error there too).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most header lines in a response head or a trailer section.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// What an endpoint sent that is not HTTP/1.1 as RFC 9112 writes it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamProtocolError {
    /// The response head does not parse.
    #[error("malformed response head: {0}")]
    MalformedHead(httparse::Error),
    /// The response head is larger than [`MAX_RESPONSE_HEAD`].
    #[error("response head larger than {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLarge,
    /// A header name or value that HTTP does not allow.
    #[error("invalid response header")]
    InvalidHeader,
    /// `Content-Length` is not one number.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// A chunk's size line does not parse.
    #[error("malformed chunk size")]
    MalformedChunk,
    /// The trailer section does not parse.
    #[error("malformed trailers")]
    MalformedTrailers,
}

/// How a request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

impl RequestFraming {
    /// The framing of a request body that `headers` describe (hop-by-hop
    /// headers, `Transfer-Encoding` among them, already removed) and of
    /// which the body knows `exact_length` (or not) and whether it is over.
    /// A declared `Content-Length` is kept: the client's body has been held
    /// to it. Returns the framing and whether a framing header must be added.
    pub fn of(headers: &HeaderMap, body_is_empty: bool, exact_length: Option<u64>) -> (Self, bool) {
        if body_is_empty {
            return (Self::Empty, false);
        }
        if let Some(length) = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
        {
            return (Self::Length(length), false);
        }
        match exact_length {
            Some(length) => (Self::Length(length), true),
            None => (Self::Chunked, true),
        }
    }
}

/// Writes the head of a request going upstream: request line (origin form,
/// `target` its path and query), the header lines as given, and the framing
/// header when `add_framing`.
pub fn encode_request_head<'a>(
    method: &Method,
    target: &str,
    headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    framing: RequestFraming,
    add_framing: bool,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if add_framing {
        match framing {
            RequestFraming::Empty => {}
            RequestFraming::Length(length) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa_u64(length, &mut [0; 20]));
                out.extend_from_slice(b"\r\n");
            }
            RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The line that opens a chunk of `length` bytes.
pub fn encode_chunk_start(length: usize, out: &mut Vec<u8>) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut rest = length;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[rest & 0xf];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk, with the trailer section (empty or not).
pub fn encode_chunked_end(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn itoa_u64(mut value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &digits[at..];
        }
    }
}

/// How a response body is delimited (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (`HEAD`, 1xx, 204, 304, or `Content-Length: 0`).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the endpoint closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status, version and headers (framing headers included, as sent).
    pub parts: http::response::Parts,
    /// How the body is delimited.
    pub framing: ResponseFraming,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
}

/// Takes one response head off the front of `buffer` once it is complete
/// (`None`: more bytes needed). Header values share the head's bytes.
/// `request_method` decides whether a body follows (`HEAD`: never).
/// Informational responses (1xx but 101) come back like any other; the
/// caller skips them.
pub fn parse_response_head(
    buffer: &mut BytesMut,
    request_method: &Method,
) -> Result<Option<ResponseHead>, UpstreamProtocolError> {
    // Uninitialised slots: zeroing 100 of them costs more than the parse.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buffer,
        &mut slots,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buffer.len() > MAX_RESPONSE_HEAD => {
            return Err(UpstreamProtocolError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(UpstreamProtocolError::HeadTooLarge),
        Err(error) => return Err(UpstreamProtocolError::MalformedHead(error)),
    };
    if length > MAX_RESPONSE_HEAD {
        return Err(UpstreamProtocolError::HeadTooLarge);
    }
    let status = StatusCode::from_u16(response.code.unwrap_or(0))
        .map_err(|_| UpstreamProtocolError::MalformedHead(httparse::Error::Status))?;
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Where each name and value lies in the head, so that the head can be
    // split off and frozen before the values are made from it.
    let base = buffer.as_ptr() as usize;
    let spans: Vec<(usize, usize, usize, usize)> = response
        .headers
        .iter()
        .map(|line| {
            let name_at = line.name.as_ptr() as usize - base;
            let value_at = line.value.as_ptr() as usize - base;
            (
                name_at,
                name_at + line.name.len(),
                value_at,
                value_at + line.value.len(),
            )
        })
        .collect();
    let head = buffer.split_to(length).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for &(name_start, name_end, value_start, value_end) in &spans {
        let name = HeaderName::from_bytes(&head[name_start..name_end])
            .map_err(|_| UpstreamProtocolError::InvalidHeader)?;
        // SAFETY: httparse accepted these bytes as a header value, by the
        // same rule as `HeaderValue` (HTAB, or 0x20-0xFF but DEL), so the
        // check that `from_maybe_shared` would make again cannot fail.
        let value =
            unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice(value_start..value_end)) };
        headers.append(name, value);
    }
    let (framing, framing_keeps_alive) = response_framing(status, &headers, request_method)?;
    if framing == ResponseFraming::Chunked || framing == ResponseFraming::UntilClose {
        // Transfer-Encoding overrides Content-Length, which a proxy must
        // not pass on next to the decoded body (RFC 9112 6.3 item 3).
        headers.remove(header::CONTENT_LENGTH);
    }
    let keep_alive = framing_keeps_alive
        && version == Version::HTTP_11
        && !has_token(&headers, header::CONNECTION, "close");
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(ResponseHead {
        parts,
        framing,
        keep_alive,
    }))
}

/// The body's framing, and whether it leaves the connection reusable.
fn response_framing(
    status: StatusCode,
    headers: &HeaderMap,
    request_method: &Method,
) -> Result<(ResponseFraming, bool), UpstreamProtocolError> {
    if request_method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((ResponseFraming::Empty, true));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let chunked = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        // With Content-Length as well, the message may be smuggled: read it
        // by Transfer-Encoding and close afterwards (RFC 9112 6.3 item 3).
        let keep_alive = chunked && !headers.contains_key(header::CONTENT_LENGTH);
        return Ok(if chunked {
            (ResponseFraming::Chunked, keep_alive)
        } else {
            (ResponseFraming::UntilClose, false)
        });
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value
            .to_str()
            .map_err(|_| UpstreamProtocolError::InvalidContentLength)?;
        // A list of equal values is one value (RFC 9110 8.6).
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UpstreamProtocolError::InvalidContentLength);
            }
            let parsed = item
                .parse::<u64>()
                .map_err(|_| UpstreamProtocolError::InvalidContentLength)?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err(UpstreamProtocolError::InvalidContentLength);
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        Some(0) => (ResponseFraming::Empty, true),
        Some(length) => (ResponseFraming::Length(length), true),
        None => (ResponseFraming::UntilClose, false),
    })
}

/// Whether a comma-separated header lists `token` (case-insensitively).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// What the chunked decoder has for its caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The trailer section (only when it is not empty).
    Trailers(HeaderMap),
    /// The body is over; the connection is at the next message.
    End,
    /// The buffer holds no complete piece: read more.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes left.
    Data(u64),
    /// At the CRLF that closes a chunk's data.
    DataEnd,
    /// After the last chunk, at the trailer section.
    Trailers,
    /// The body is over.
    Done,
}

/// Decodes the chunked transfer coding (RFC 9112 7.1) from a buffer that the
/// caller fills; data is handed out without copying.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self {
            state: ChunkState::Size,
        }
    }
}

impl ChunkedDecoder {
    /// The next piece of the body from the front of `buffer`.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Decoded, UpstreamProtocolError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(line_end) = find_crlf(buffer, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_chunk_size(&buffer[..line_end])?;
                    buffer.advance(line_end + 2);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buffer.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(buffer.len());
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded::Data(buffer.split_to(take).freeze()));
                }
                ChunkState::DataEnd => {
                    if buffer.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buffer[..2] != b"\r\n" {
                        return Err(UpstreamProtocolError::MalformedChunk);
                    }
                    buffer.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    if buffer.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if buffer.starts_with(b"\r\n") {
                        buffer.advance(2);
                        self.state = ChunkState::Done;
                        return Ok(Decoded::End);
                    }
                    return self.trailers(buffer);
                }
                ChunkState::Done => return Ok(Decoded::End),
            }
        }
    }

    fn trailers(&mut self, buffer: &mut BytesMut) -> Result<Decoded, UpstreamProtocolError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (length, lines) = match httparse::parse_headers(buffer, &mut slots) {
            Ok(httparse::Status::Complete(parsed)) => parsed,
            Ok(httparse::Status::Partial) if buffer.len() > MAX_RESPONSE_HEAD => {
                return Err(UpstreamProtocolError::MalformedTrailers);
            }
            Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
            Err(_) => return Err(UpstreamProtocolError::MalformedTrailers),
        };
        let mut trailers = HeaderMap::with_capacity(lines.len());
        for line in lines.iter() {
            let name = HeaderName::from_bytes(line.name.as_bytes())
                .map_err(|_| UpstreamProtocolError::MalformedTrailers)?;
            let value = HeaderValue::from_bytes(line.value)
                .map_err(|_| UpstreamProtocolError::MalformedTrailers)?;
            trailers.append(name, value);
        }
        buffer.advance(length);
        self.state = ChunkState::Done;
        Ok(Decoded::Trailers(trailers))
    }

    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// Where the first CRLF of `buffer` is, looking at most `limit` bytes.
fn find_crlf(buffer: &[u8], limit: usize) -> Result<Option<usize>, UpstreamProtocolError> {
    let window = &buffer[..buffer.len().min(limit)];
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(at) => Ok(Some(at)),
        None if buffer.len() >= limit => Err(UpstreamProtocolError::MalformedChunk),
        None => Ok(None),
    }
}

/// The size on a chunk-size line: hex digits, then optional extensions.
fn parse_chunk_size(line: &[u8]) -> Result<u64, UpstreamProtocolError> {
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    // Extensions may follow, after optional whitespace (RFC 9112 7.1.1).
    let rest = line[digits_end..].trim_ascii_start();
    let rest_ok = rest.is_empty() || rest[0] == b';';
    if digits_end == 0 || digits_end > 16 || !rest_ok {
        return Err(UpstreamProtocolError::MalformedChunk);
    }
    let digits = std::str::from_utf8(&line[..digits_end]).expect("hex digits are ASCII");
    u64::from_str_radix(digits, 16).map_err(|_| UpstreamProtocolError::MalformedChunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, target: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().method(method).uri(target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn encode(parts: &http::request::Parts, framing: RequestFraming, add: bool, out: &mut Vec<u8>) {
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        encode_request_head(
            &parts.method,
            target,
            parts.headers.iter(),
            framing,
            add,
            out,
        );
    }

    fn head_of(
        bytes: &[u8],
        method: &Method,
    ) -> Result<Option<ResponseHead>, UpstreamProtocolError> {
        parse_response_head(&mut BytesMut::from(bytes), method)
    }

    #[test]
    fn request_heads_are_written_in_origin_form_with_their_framing() {
        let get = parts(Method::GET, "/a/b?c=d", &[("host", "web.example.com")]);
        let mut out = Vec::new();
        let (framing, add) = RequestFraming::of(&get.headers, true, Some(0));
        encode(&get, framing, add, &mut out);
        assert_eq!(
            out,
            b"GET /a/b?c=d HTTP/1.1\r\nhost: web.example.com\r\n\r\n"
        );

        let post = parts(Method::POST, "/submit", &[("host", "h")]);
        let mut out = Vec::new();
        let (framing, add) = RequestFraming::of(&post.headers, false, Some(1234));
        assert_eq!((framing, add), (RequestFraming::Length(1234), true));
        encode(&post, framing, add, &mut out);
        assert_eq!(
            out,
            b"POST /submit HTTP/1.1\r\nhost: h\r\ncontent-length: 1234\r\n\r\n"
        );

        let mut out = Vec::new();
        let (framing, add) = RequestFraming::of(&post.headers, false, None);
        encode(&post, framing, add, &mut out);
        assert_eq!(
            out,
            b"POST /submit HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"
        );

        let declared = parts(Method::PUT, "/x", &[("content-length", "5")]);
        assert_eq!(
            RequestFraming::of(&declared.headers, false, None),
            (RequestFraming::Length(5), false),
            "the client's Content-Length is kept, not repeated"
        );
    }

    #[test]
    fn chunks_are_written_in_hex_and_closed_with_trailers() {
        let mut out = Vec::new();
        encode_chunk_start(0x1f40, &mut out);
        encode_chunk_start(1, &mut out);
        assert_eq!(out, b"1f40\r\n1\r\n");
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc"));
        let mut out = Vec::new();
        encode_chunked_end(Some(&trailers), &mut out);
        assert_eq!(out, b"0\r\nx-checksum: abc\r\n\r\n");
        let mut out = Vec::new();
        encode_chunked_end(None, &mut out);
        assert_eq!(out, b"0\r\n\r\n");
    }

    #[test]
    fn a_head_waits_for_its_end_and_leaves_the_body_in_the_buffer() {
        let mut buffer = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n"[..]);
        assert!(
            parse_response_head(&mut buffer, &Method::GET)
                .unwrap()
                .is_none()
        );
        buffer.extend_from_slice(b"x-a: 2\r\n\r\nhelloNEXT");
        let head = parse_response_head(&mut buffer, &Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!(head.parts.status, StatusCode::OK);
        assert_eq!(head.framing, ResponseFraming::Length(5));
        assert!(head.keep_alive);
        let values: Vec<_> = head.parts.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"], "repeated headers are kept in order");
        assert_eq!(&buffer[..], b"helloNEXT");
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        let cases: &[(&[u8], Method, ResponseFraming, bool)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
                Method::HEAD,
                ResponseFraming::Empty,
                true,
            ),
            (
                b"HTTP/1.1 204 No Content\r\n\r\n",
                Method::GET,
                ResponseFraming::Empty,
                true,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
                Method::GET,
                ResponseFraming::Empty,
                true,
            ),
            (
                b"HTTP/1.1 100 Continue\r\n\r\n",
                Method::POST,
                ResponseFraming::Empty,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::GET,
                ResponseFraming::Chunked,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Method::GET,
                ResponseFraming::Chunked,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Method::GET,
                ResponseFraming::UntilClose,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                Method::GET,
                ResponseFraming::Chunked,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
                Method::GET,
                ResponseFraming::Length(3),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                Method::GET,
                ResponseFraming::Empty,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\n",
                Method::GET,
                ResponseFraming::UntilClose,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: Close\r\n\r\n",
                Method::GET,
                ResponseFraming::Length(3),
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n",
                Method::GET,
                ResponseFraming::Length(3),
                false,
            ),
        ];
        for (bytes, method, framing, keep_alive) in cases {
            let head = head_of(bytes, method).unwrap().unwrap();
            assert_eq!(
                (head.framing, head.keep_alive),
                (*framing, *keep_alive),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn content_length_next_to_transfer_encoding_is_dropped() {
        let head = head_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.framing, ResponseFraming::Chunked);
        assert!(!head.parts.headers.contains_key(header::CONTENT_LENGTH));
        assert!(
            !head.keep_alive,
            "a message that may be smuggled closes its connection"
        );
    }

    #[test]
    fn bad_heads_are_errors_not_guesses() {
        let cases: &[(&[u8], UpstreamProtocolError)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n",
                UpstreamProtocolError::InvalidContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                UpstreamProtocolError::InvalidContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                UpstreamProtocolError::InvalidContentLength,
            ),
            (
                b"SSH-2.0-OpenSSH\r\n\r\n",
                UpstreamProtocolError::MalformedHead(httparse::Error::Version),
            ),
            (
                b"HTTP/1.1 20 OK\r\n\r\n",
                UpstreamProtocolError::MalformedHead(httparse::Error::Status),
            ),
        ];
        for (bytes, error) in cases {
            assert_eq!(
                head_of(bytes, &Method::GET).unwrap_err(),
                *error,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        // Control bytes in a value (DEL, NUL) are refused by the parse,
        // which is what lets the values skip `HeaderValue`'s own check.
        for value in [&b"a\x7fb"[..], b"a\x00b", b"a\x1bb"] {
            let mut head = b"HTTP/1.1 200 OK\r\nX-A: ".to_vec();
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n\r\n");
            assert!(head_of(&head, &Method::GET).is_err(), "{value:?} was taken");
        }
        let head = head_of(
            b"HTTP/1.1 200 OK\r\nX-A: caf\xc3\xa9\tok\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.parts.headers["x-a"].as_bytes(), b"caf\xc3\xa9\tok");
        let mut huge = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        huge.resize(MAX_RESPONSE_HEAD + 10, b'a');
        assert_eq!(
            head_of(&huge, &Method::GET).unwrap_err(),
            UpstreamProtocolError::HeadTooLarge
        );
    }

    /// Feeds `wire` to a decoder in pieces of `step` bytes; returns the
    /// body, the trailers and what is left after the end.
    fn decode_in_steps(wire: &[u8], step: usize) -> (Vec<u8>, Option<HeaderMap>, Vec<u8>) {
        let mut decoder = ChunkedDecoder::default();
        let mut buffer = BytesMut::new();
        let mut fed = 0;
        let (mut body, mut trailers) = (Vec::new(), None);
        for _ in 0..10 * wire.len() + 10 {
            match decoder.decode(&mut buffer).unwrap() {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::Trailers(map) => trailers = Some(map),
                Decoded::End => return (body, trailers, buffer.to_vec()),
                Decoded::NeedMore => {
                    assert!(fed < wire.len(), "the decoder wants more than the message");
                    let next = (fed + step).min(wire.len());
                    buffer.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
            }
        }
        panic!("the decoder did not finish");
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, wire.len()] {
            let (body, trailers, rest) = decode_in_steps(wire, step);
            assert_eq!(body, b"hello, world", "step {step}");
            assert!(trailers.is_none());
            if step == wire.len() {
                assert_eq!(rest, b"NEXT", "the next message stays in the buffer");
            }
        }
        let with_trailers = b"3\r\nabc\r\n0\r\nX-Sum: 9\r\nX-Other: y\r\n\r\n";
        for step in [1, 5, with_trailers.len()] {
            let (body, trailers, _) = decode_in_steps(with_trailers, step);
            assert_eq!(body, b"abc");
            let trailers = trailers.expect("trailers");
            assert_eq!(trailers["x-sum"], "9");
            assert_eq!(trailers["x-other"], "y");
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for wire in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"-1\r\n",
            b"11111111111111111\r\n",
            b"5 x\r\n",
        ] {
            let mut decoder = ChunkedDecoder::default();
            let mut buffer = BytesMut::from(wire);
            let mut result = Ok(Decoded::NeedMore);
            for _ in 0..4 {
                result = decoder.decode(&mut buffer);
                if !matches!(result, Ok(Decoded::Data(_))) {
                    break;
                }
            }
            assert_eq!(
                result,
                Err(UpstreamProtocolError::MalformedChunk),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
        let mut endless = BytesMut::from(&vec![b'1'; MAX_CHUNK_LINE + 1][..]);
        assert!(ChunkedDecoder::default().decode(&mut endless).is_err());
    }
}
