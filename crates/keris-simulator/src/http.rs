//! A minimal HTTP/1.1 server connection: request heads with `httparse`, our
//! own chunked decoder so that each chunk reaches the handler as one unit
//! (hyper would merge or split them), `Content-Length` bodies, keep-alive,
//! answers with `Content-Length`.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const INITIAL_BUFFER: usize = 64 * 1024;
/// Request line plus headers.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
/// Chunk-size line (with extensions) or trailer line.
const MAX_LINE: usize = 4096;

/// Why a request could not be read; the connection is closed afterwards.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("connection closed mid-request")]
    Eof,
    #[error("bad request: {0}")]
    Bad(String),
    #[error("request head too large")]
    HeadTooLarge,
}

/// The parts of a request head the simulator uses.
#[derive(Debug, Clone)]
pub(crate) struct RequestHead {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: Option<String>,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub version: u8,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the connection stays open after the answer.
    pub fn keep_alive(&self) -> bool {
        let connection = self.header("connection").map(str::to_ascii_lowercase);
        match self.version {
            1 => !connection.is_some_and(|c| c.split(',').any(|t| t.trim() == "close")),
            _ => connection.is_some_and(|c| c.split(',').any(|t| t.trim() == "keep-alive")),
        }
    }

    /// How the body is framed.
    pub fn body_kind(&self) -> Result<BodyKind, HttpError> {
        if let Some(te) = self.header("transfer-encoding") {
            let last = te.rsplit(',').next().unwrap_or("").trim();
            if last.eq_ignore_ascii_case("chunked") {
                return Ok(BodyKind::Chunked);
            }
            return Err(HttpError::Bad(format!(
                "unsupported Transfer-Encoding {te:?}"
            )));
        }
        match self.header("content-length") {
            None => Ok(BodyKind::Length(0)),
            Some(v) => v
                .trim()
                .parse()
                .map(BodyKind::Length)
                .map_err(|_| HttpError::Bad(format!("bad Content-Length {v:?}"))),
        }
    }

    /// A query parameter.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
}

/// Body framing of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Length(usize),
    Chunked,
}

/// One accepted connection with its read buffer; unread bytes stay in the
/// buffer for the next request (keep-alive, pipelining).
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: vec![0; INITIAL_BUFFER],
            pos: 0,
            end: 0,
        }
    }

    fn available(&self) -> usize {
        self.end - self.pos
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        debug_assert!(self.pos <= self.end);
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes, keeping room for `want` buffered bytes in total.
    /// `Ok(false)` at end of stream.
    async fn fill(&mut self, want: usize) -> io::Result<bool> {
        let want = want.max(self.available() + 1);
        if self.buf.len() - self.pos < want || self.end == self.buf.len() {
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
            }
            if self.buf.len() < want || self.end == self.buf.len() {
                let new_len = want.max(self.buf.len() * 2);
                self.buf.resize(new_len, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    /// Buffers at least `n` bytes.
    async fn ensure(&mut self, n: usize) -> Result<(), HttpError> {
        while self.available() < n {
            if !self.fill(n).await? {
                return Err(HttpError::Eof);
            }
        }
        Ok(())
    }

    /// Discards `n` bytes without buffering them all.
    pub async fn skip(&mut self, mut n: usize) -> Result<(), HttpError> {
        while n > 0 {
            if self.available() == 0 && !self.fill(0).await? {
                return Err(HttpError::Eof);
            }
            let take = n.min(self.available());
            self.consume(take);
            n -= take;
        }
        Ok(())
    }

    /// The next request head; `Ok(None)` when the peer closed cleanly
    /// between requests.
    pub async fn read_head(&mut self) -> Result<Option<RequestHead>, HttpError> {
        loop {
            if self.available() > 0 {
                let parsed = {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut request = httparse::Request::new(&mut headers);
                    match request.parse(self.data()) {
                        Ok(httparse::Status::Complete(n)) => Some((head_of(&request)?, n)),
                        Ok(httparse::Status::Partial) => None,
                        Err(e) => return Err(HttpError::Bad(e.to_string())),
                    }
                };
                if let Some((head, n)) = parsed {
                    self.consume(n);
                    return Ok(Some(head));
                }
                if self.available() > MAX_HEAD {
                    return Err(HttpError::HeadTooLarge);
                }
            }
            if !self.fill(0).await? {
                return if self.available() == 0 {
                    Ok(None)
                } else {
                    Err(HttpError::Eof)
                };
            }
        }
    }

    /// Reads one CRLF-terminated line and hands it (without CRLF) to `f`.
    async fn with_line<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Result<T, HttpError> {
        loop {
            if let Some(nl) = self.data().iter().position(|&b| b == b'\n') {
                let line = &self.data()[..nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let out = f(line);
                self.consume(nl + 1);
                return Ok(out);
            }
            if self.available() > MAX_LINE {
                return Err(HttpError::Bad("line too long".into()));
            }
            if !self.fill(0).await? {
                return Err(HttpError::Eof);
            }
        }
    }

    /// The size of the next chunk; `0` is the last chunk, whose trailers are
    /// then consumed too.
    pub async fn chunk_size(&mut self) -> Result<usize, HttpError> {
        let size = self.with_line(parse_chunk_size).await??;
        if size == 0 {
            // Trailer fields, up to the empty line.
            while !self.with_line(|line| line.is_empty()).await? {}
        }
        Ok(size)
    }

    /// Buffers the data of a chunk of `size` bytes and its CRLF; the data is
    /// then at [`Conn::chunk`] until [`Conn::end_chunk`].
    pub async fn read_chunk(&mut self, size: usize) -> Result<(), HttpError> {
        self.ensure(size + 2).await?;
        if &self.buf[self.pos + size..self.pos + size + 2] != b"\r\n" {
            return Err(HttpError::Bad("chunk data not followed by CRLF".into()));
        }
        Ok(())
    }

    /// The chunk buffered by [`Conn::read_chunk`].
    pub fn chunk(&self, size: usize) -> &[u8] {
        &self.buf[self.pos..self.pos + size]
    }

    /// Consumes the chunk buffered by [`Conn::read_chunk`].
    pub fn end_chunk(&mut self, size: usize) {
        self.consume(size + 2);
    }

    /// Skips a chunk too large to buffer, with its CRLF.
    pub async fn skip_chunk(&mut self, size: usize) -> Result<(), HttpError> {
        self.skip(size + 2).await
    }

    /// Reads a whole body of at most `limit` bytes; `Ok(None)` if it is
    /// larger (the body is then skipped, so the connection stays usable).
    pub async fn read_body(
        &mut self,
        kind: BodyKind,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, HttpError> {
        match kind {
            BodyKind::Length(n) if n > limit => {
                self.skip(n).await?;
                Ok(None)
            }
            BodyKind::Length(n) => {
                self.ensure(n).await?;
                let body = self.data()[..n].to_vec();
                self.consume(n);
                Ok(Some(body))
            }
            BodyKind::Chunked => {
                let mut body = Vec::new();
                let mut too_large = false;
                loop {
                    let size = self.chunk_size().await?;
                    if size == 0 {
                        break;
                    }
                    if too_large || body.len() + size > limit {
                        too_large = true;
                        self.skip_chunk(size).await?;
                        continue;
                    }
                    self.read_chunk(size).await?;
                    body.extend_from_slice(self.chunk(size));
                    self.end_chunk(size);
                }
                Ok((!too_large).then_some(body))
            }
        }
    }

    /// Reads part of a body (the first chunk, or half the declared length)
    /// and stops: for the "reset mid-body" fault.
    pub async fn read_part_of_body(&mut self, kind: BodyKind) -> Result<(), HttpError> {
        match kind {
            BodyKind::Length(n) => self.skip(n / 2).await,
            BodyKind::Chunked => {
                let size = self.chunk_size().await?;
                if size > 0 {
                    self.skip_chunk(size).await?;
                }
                Ok(())
            }
        }
    }

    /// Discards a whole body.
    pub async fn drain_body(&mut self, kind: BodyKind) -> Result<(), HttpError> {
        match kind {
            BodyKind::Length(n) => self.skip(n).await,
            BodyKind::Chunked => loop {
                let size = self.chunk_size().await?;
                if size == 0 {
                    return Ok(());
                }
                self.skip_chunk(size).await?;
            },
        }
    }

    /// `100 Continue`, for clients that wait for it.
    pub async fn write_continue(&mut self) -> io::Result<()> {
        self.stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
    }

    /// Writes a JSON answer (or a proxy's HTML page) with `Content-Length`.
    pub async fn respond(&mut self, response: &Response, close: bool) -> io::Result<()> {
        use std::io::Write;
        let mut out = Vec::with_capacity(response.body.len() + 160);
        let content_type = if response.body.starts_with(b"<") {
            "text/html"
        } else {
            "application/json"
        };
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            response.status,
            reason(response.status),
            response.body.len()
        );
        if let Some(secs) = response.retry_after {
            let _ = write!(out, "Retry-After: {secs}\r\n");
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&response.body);
        self.stream.write_all(&out).await?;
        self.stream.flush().await
    }

    /// Closes the socket with a TCP reset instead of a clean FIN.
    pub fn reset(self) {
        let _ = self.stream.set_zero_linger();
        drop(self.stream);
    }
}

/// An answer to write.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    pub retry_after: Option<u64>,
}

fn head_of(request: &httparse::Request<'_, '_>) -> Result<RequestHead, HttpError> {
    let target = request.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let headers = request
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    Ok(RequestHead {
        method: request.method.unwrap_or("").to_string(),
        path,
        query,
        version: request.version.unwrap_or(1),
        headers,
    })
}

fn parse_chunk_size(line: &[u8]) -> Result<usize, HttpError> {
    let hex = line.split(|&b| b == b';').next().unwrap_or(b"");
    let hex = hex.trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return Err(HttpError::Bad("bad chunk size".into()));
    }
    let mut size = 0usize;
    for &b in hex {
        let digit = (b as char)
            .to_digit(16)
            .ok_or_else(|| HttpError::Bad("bad chunk size".into()))?;
        size = size * 16 + digit as usize;
    }
    Ok(size)
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_hex_with_optional_extensions() {
        assert_eq!(parse_chunk_size(b"1f").unwrap(), 31);
        assert_eq!(parse_chunk_size(b"A;name=value").unwrap(), 10);
        assert_eq!(parse_chunk_size(b"0").unwrap(), 0);
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"xyz").is_err());
        assert!(parse_chunk_size(b"ffffffffffffffffff").is_err());
    }
}
