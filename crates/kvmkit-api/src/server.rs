// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The API's thread: HTTP/1.1 on a Unix socket, each request answered by the VMM's
//! handler, as Cloud Hypervisor's `--api-socket` serves it.
//!
//! One thread polls the listening socket and every connection (non-blocking, so a
//! client that stops mid-request holds up no other); a request is handled as soon as
//! it is all there, in the order it came. The thread takes no signals (the VMM's I/O
//! thread handles them) and runs the caller's `on_start` first (its seccomp filter,
//! say).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::endpoint::{self, ApiRequest, ApiResponse};
use crate::http::{self, take_request};

/// The most connections open at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Something else listens on the socket's path.
    #[error("{path}: another process serves this API socket")]
    InUse {
        /// The path.
        path: PathBuf,
    },
    /// The socket cannot be made at the path.
    #[error("{path}: cannot make the API socket")]
    Bind {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The thread or its events cannot be made.
    #[error("cannot start the API thread")]
    Start(#[source] io::Error),
}

/// A running API server; [`stop`](Self::stop) (or a drop) ends its thread, which
/// removes its socket.
#[derive(Debug)]
pub struct ApiServer {
    path: PathBuf,
    stop: Arc<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Listens at `path` (a stale socket there, one nobody answers on, is replaced;
    /// a live one is refused) and starts the API thread, which runs `on_start`, then
    /// answers each request with `handler`.
    pub fn start(
        path: &Path,
        on_start: impl FnOnce() -> io::Result<()> + Send + 'static,
        handler: impl FnMut(ApiRequest) -> ApiResponse + Send + 'static,
    ) -> Result<Self, ServerError> {
        let listener = bind(path)?;
        listener.set_nonblocking(true).map_err(ServerError::Start)?;
        let (stop, stopped) = UnixStream::pair().map_err(ServerError::Start)?;
        let socket = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                block_signals();
                if let Err(error) = on_start() {
                    eprintln!("kvmkit: the API thread cannot start: {error}");
                    return;
                }
                serve(&listener, &stopped, handler);
                // Here, so that a thread confined to the API's calls removes its own.
                let _ = std::fs::remove_file(&socket);
            })
            .map_err(ServerError::Start)?;
        Ok(ApiServer {
            path: path.to_path_buf(),
            stop: Arc::new(stop),
            thread: Some(thread),
        })
    }

    /// Ends the thread (after the request it is answering), which removes the socket.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        let _ = (&*self.stop).write_all(&[1]);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The listening socket at `path`.
fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    match UnixListener::bind(path) {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse {
                    path: path.to_path_buf(),
                });
            }
            // Left by a VMM that ended without removing it.
            let _ = std::fs::remove_file(path);
            UnixListener::bind(path).map_err(|source| ServerError::Bind {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(ServerError::Bind {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Blocks every signal in this thread but SIGSYS: process-directed signals go to the
/// thread that takes them on purpose (the VMM's I/O thread), never to this one; a
/// seccomp filter's SIGSYS stays deliverable, so that its handler names the call.
fn block_signals() {
    // SAFETY: sigset_t is plain data; sigfillset and sigdelset initialise and edit
    // it; pthread_sigmask only changes this thread's mask.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigdelset(&mut all, libc::SIGSYS);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}

/// A client connection and the bytes it sent that are not a whole request yet.
struct Connection {
    stream: UnixStream,
    pending: Vec<u8>,
}

/// Accepts and answers until `stop` is readable.
fn serve(
    listener: &UnixListener,
    stop: &UnixStream,
    mut handler: impl FnMut(ApiRequest) -> ApiResponse,
) {
    let mut connections: Vec<Connection> = Vec::new();
    loop {
        let mut fds: Vec<libc::pollfd> = [stop.as_fd(), listener.as_fd()]
            .into_iter()
            .chain(connections.iter().map(|c| c.stream.as_fd()))
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[0].revents != 0 {
            return;
        }
        // Connections first, in reverse so that removing one keeps the others' index.
        for index in (0..connections.len()).rev() {
            if fds[index + 2].revents != 0 && !answer(&mut connections[index], &mut handler) {
                connections.swap_remove(index);
            }
        }
        if fds[1].revents != 0 {
            while let Ok((stream, _)) = listener.accept() {
                if connections.len() < MAX_CONNECTIONS && stream.set_nonblocking(true).is_ok() {
                    connections.push(Connection {
                        stream,
                        pending: Vec::new(),
                    });
                }
            }
        }
    }
}

/// Reads what `connection` sent and answers each whole request in it; whether to
/// keep the connection.
fn answer(
    connection: &mut Connection,
    handler: &mut impl FnMut(ApiRequest) -> ApiResponse,
) -> bool {
    let mut buffer = [0u8; 4096];
    match connection.stream.read(&mut buffer) {
        Ok(0) => return false,
        Ok(n) => connection.pending.extend_from_slice(&buffer[..n]),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
        Err(_) => return false,
    }
    loop {
        let response = match take_request(&mut connection.pending) {
            Ok(None) => return true,
            Ok(Some(request)) => {
                match endpoint::parse(&request.method, &request.path, &request.body) {
                    Ok(request) => handler(request),
                    Err(response) => response,
                }
            }
            Err(_) => {
                // The rest of the stream cannot be framed: answer and close.
                let _ = send(
                    &mut connection.stream,
                    &ApiResponse::bad_request().to_http(),
                );
                return false;
            }
        };
        if send(&mut connection.stream, &response.to_http()).is_err() {
            return false;
        }
    }
}

/// Writes `response` to a non-blocking stream, waiting (a little) for room.
fn send(stream: &mut UnixStream, response: &http::Response) -> io::Result<()> {
    let mut bytes = Vec::new();
    response.write_to(&mut bytes)?;
    let mut written = 0;
    let mut waits = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && waits < 100 => {
                waits += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    fn socket_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("kvmkit-api-{name}-{}.sock", std::process::id()))
    }

    /// Sends `request` on `stream` and reads one response: (status line, body).
    fn exchange(stream: &mut UnixStream, request: &str) -> (String, String) {
        stream.write_all(request.as_bytes()).unwrap();
        let mut reader = io::BufReader::new(stream.try_clone().unwrap());
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.strip_prefix("Content-Length: ") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        (
            status.trim_end().to_string(),
            String::from_utf8(body).unwrap(),
        )
    }

    #[test]
    fn requests_on_kept_alive_connections_reach_the_handler_and_its_answers_come_back() {
        let path = socket_path("serve");
        let server = ApiServer::start(
            &path,
            || Ok(()),
            |request| match request {
                ApiRequest::VmmPing => ApiResponse::Json(serde_json::json!({"version": "test"})),
                _ => ApiResponse::Done,
            },
        )
        .unwrap();
        let mut first = UnixStream::connect(&path).unwrap();
        // A second client that stops mid-request holds up nobody.
        let mut stalled = UnixStream::connect(&path).unwrap();
        stalled
            .write_all(b"PUT /api/v1/vm.pause HTTP/1.1\r\n")
            .unwrap();

        let ping = exchange(&mut first, "GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n");
        let pause = exchange(&mut first, "PUT /api/v1/vm.pause HTTP/1.1\r\n\r\n");
        let unknown = exchange(&mut first, "GET /api/v1/vm.bogus HTTP/1.1\r\n\r\n");
        server.stop();

        assert_eq!(
            ping,
            ("HTTP/1.1 200".into(), r#"{"version":"test"}"#.into())
        );
        assert_eq!(pause.0, "HTTP/1.1 204");
        assert_eq!(unknown, ("HTTP/1.1 404".into(), r#"["Not Found"]"#.into()));
        assert!(!path.exists(), "the socket outlived the server");
    }

    #[test]
    fn a_live_socket_is_not_taken_over_and_a_stale_one_is_replaced() {
        let path = socket_path("in-use");
        let live = ApiServer::start(&path, || Ok(()), |_| ApiResponse::Done).unwrap();

        let second = ApiServer::start(&path, || Ok(()), |_| ApiResponse::Done);
        drop(live);
        let stale = UnixListener::bind(&path).unwrap();
        drop(stale);
        let replaced = ApiServer::start(&path, || Ok(()), |_| ApiResponse::Done);

        assert!(
            matches!(second, Err(ServerError::InUse { .. })),
            "{second:?}"
        );
        assert!(replaced.is_ok(), "{replaced:?}");
    }

    #[test]
    fn an_unframable_request_gets_400_and_its_connection_closed() {
        let path = socket_path("garbage");
        let server = ApiServer::start(&path, || Ok(()), |_| ApiResponse::Done).unwrap();
        let mut stream = UnixStream::connect(&path).unwrap();

        stream.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        server.stop();

        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    }
}
