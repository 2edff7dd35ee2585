// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! One HTTP/1.1 exchange at a time on a stream: a request read whole (its head parsed
//! by `httparse`, its body by `Content-Length`), and a response written as Cloud
//! Hypervisor writes its own.

use std::io::{self, Write};

/// The most bytes a request's head (request line and headers) may take.
pub const MAX_HEAD: usize = 16 << 10;
/// The most bytes a request's body may take (a `VmConfig` is a few KiB).
pub const MAX_BODY: usize = 1 << 20;
/// The most headers a request may have.
const MAX_HEADERS: usize = 32;

/// A request, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path, without its query.
    pub path: String,
    /// The body (empty without one).
    pub body: Vec<u8>,
}

/// Why no request could be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The request is not HTTP/1.x, or its head is malformed.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The head or body is larger than this server takes.
    #[error("the request is too large")]
    TooLarge,
}

/// Takes the first request out of `pending`, the bytes read from a connection so far,
/// once it is all there (`None` until then); bytes past it stay in `pending`.
pub fn take_request(pending: &mut Vec<u8>) -> Result<Option<Request>, ReadError> {
    let Some((head_len, method, path, body_len)) = parse_head(pending)? else {
        if pending.len() >= MAX_HEAD {
            return Err(ReadError::TooLarge);
        }
        return Ok(None);
    };
    if body_len > MAX_BODY {
        return Err(ReadError::TooLarge);
    }
    if pending.len() < head_len + body_len {
        return Ok(None);
    }
    let body = pending[head_len..head_len + body_len].to_vec();
    pending.drain(..head_len + body_len);
    Ok(Some(Request { method, path, body }))
}

/// The head of the request at the start of `bytes`, once it is all there: its
/// length, method, path (without its query) and body length.
fn parse_head(bytes: &[u8]) -> Result<Option<(usize, String, String, usize)>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ReadError::TooLarge),
        Err(e) => return Err(ReadError::Malformed(e.to_string())),
    };
    let method = request.method.unwrap_or_default().to_string();
    let path = request.path.unwrap_or_default();
    let path = path
        .split_once('?')
        .map_or(path, |(path, _)| path)
        .to_string();
    let mut body_len = 0;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ReadError::Malformed(
                "chunked bodies are not taken: give Content-Length".into(),
            ));
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(header.value)
                .ok()
                .and_then(|value| value.trim().parse::<usize>().ok())
                .ok_or_else(|| ReadError::Malformed("a bad Content-Length".into()))?;
        }
    }
    Ok(Some((head_len, method, path, body_len)))
}

/// A response: a status and an optional JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, JSON.
    pub body: Option<String>,
}

impl Response {
    /// Writes the response as Cloud Hypervisor's server does: an empty reason phrase,
    /// its `Server` header, keep-alive, and `Content-Type: application/json` with a
    /// body (a 204 has neither).
    pub fn write_to(&self, stream: &mut impl Write) -> io::Result<()> {
        let mut out = format!(
            "HTTP/1.1 {} \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n",
            self.status
        );
        match &self.body {
            Some(body) => {
                out.push_str("Content-Type: application/json\r\n");
                out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
            }
            None if self.status == 204 => out.push_str("\r\n"),
            None => out.push_str("Content-Length: 0\r\n\r\n"),
        }
        stream.write_all(out.as_bytes())?;
        stream.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The requests in `bytes`, as they arrive a few bytes at a time; an error ends it.
    fn read_all(bytes: &[u8]) -> Vec<Result<Request, String>> {
        let mut pending = Vec::new();
        let mut requests = Vec::new();
        for chunk in bytes.chunks(7) {
            pending.extend_from_slice(chunk);
            loop {
                match take_request(&mut pending) {
                    Ok(Some(request)) => requests.push(Ok(request)),
                    Ok(None) => break,
                    Err(e) => {
                        requests.push(Err(e.to_string()));
                        return requests;
                    }
                }
            }
        }
        if !pending.is_empty() {
            requests.push(Err("cut short".into()));
        }
        requests
    }

    #[test]
    fn requests_kept_alive_on_one_connection_are_read_one_by_one_with_their_bodies() {
        let bytes = b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n\r\n\
PUT /api/v1/vm.snapshot?x=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";

        let requests = read_all(bytes);

        assert_eq!(requests.len(), 2);
        let second = requests[1].as_ref().unwrap();
        assert_eq!(requests[0].as_ref().unwrap().path, "/api/v1/vmm.ping");
        assert_eq!(
            (second.method.as_str(), second.path.as_str()),
            ("PUT", "/api/v1/vm.snapshot")
        );
        assert_eq!(second.body, b"{}");
    }

    #[test]
    fn malformed_truncated_chunked_or_huge_requests_are_refused() {
        let huge = format!(
            "PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        for bytes in [
            &b"NOT HTTP AT ALL\r\n\r\n"[..],
            b"PUT /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}",
            b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"PUT /x HTTP/1.1\r\nContent-Length: lots\r\n\r\n",
            huge.as_bytes(),
        ] {
            let requests = read_all(bytes);
            assert!(
                matches!(requests.last(), Some(Err(_))),
                "{:?}: {requests:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let endless = vec![b'a'; MAX_HEAD + 10];
        assert!(matches!(read_all(&endless).last(), Some(Err(_))));
    }

    #[test]
    fn responses_are_written_as_cloud_hypervisor_writes_them() {
        let mut ok = Vec::new();
        let mut empty = Vec::new();
        Response {
            status: 200,
            body: Some("{}".into()),
        }
        .write_to(&mut ok)
        .unwrap();
        Response {
            status: 204,
            body: None,
        }
        .write_to(&mut empty)
        .unwrap();

        let ok = String::from_utf8(ok).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 \r\n"), "{ok}");
        assert!(ok.ends_with("Content-Length: 2\r\n\r\n{}"), "{ok}");
        assert!(String::from_utf8(empty)
            .unwrap()
            .ends_with("keep-alive\r\n\r\n"));
    }
}
