// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A guest console's two directions, for any console device (the 16550A UART, a
//! virtio console): output that never blocks the guest or the VMM, and input taken
//! from the host only while the device has room for it.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use crate::wait_writable;

/// Bytes a console's output queue holds before further output is dropped (and
/// counted).
pub const OUTPUT_QUEUE_BYTES: usize = 1 << 20;
/// How long the last flush at the VM's end may wait for a slow reader.
const FINAL_FLUSH_PATIENCE: Duration = Duration::from_secs(1);

/// A console device that takes input from the host: what the I/O thread feeds from
/// stdin (or a pipe) while the device has room.
pub trait ConsoleInput: Send + Sync {
    /// How many bytes [`enqueue_input`](Self::enqueue_input) takes now.
    fn input_room(&self) -> usize;
    /// Hands `input` to the guest; returns how many bytes were taken.
    fn enqueue_input(&self, input: &[u8]) -> io::Result<usize>;
    /// Readable when the device has room for input again (read it to re-arm).
    fn input_ready(&self) -> &EventFd;
}

/// Where a guest console's output goes.
#[non_exhaustive]
pub enum SerialOutput {
    /// The VMM's standard output.
    Stdout,
    /// Discarded.
    Sink,
    /// A file, pipe, socket or terminal. Pipes, sockets and terminals are written
    /// without blocking: a reader that stops reading costs output, never a stall.
    File(File),
    /// Any writer, called on the I/O thread; it must not block (an in-memory buffer,
    /// say).
    Writer(Box<dyn Write + Send>),
}

/// A console's output: a bounded queue that the device appends to (on a vCPU thread or
/// the I/O thread, never blocking: what does not fit is dropped and counted), and the
/// destination the I/O thread writes it to without blocking ([`flush`](Self::flush)).
pub struct ConsoleOutput {
    bytes: Mutex<VecDeque<u8>>,
    dropped: AtomicU64,
    /// When the guest's first byte arrived.
    first_byte: OnceLock<Instant>,
    /// Readable once bytes arrive in an empty queue: the I/O thread's cue to flush.
    ready: EventFd,
    destination: Mutex<Destination>,
}

impl std::fmt::Debug for ConsoleOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleOutput")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl ConsoleOutput {
    /// Output to `target`.
    pub fn new(target: SerialOutput) -> io::Result<Self> {
        Ok(ConsoleOutput {
            bytes: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
            first_byte: OnceLock::new(),
            ready: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
            destination: Mutex::new(Destination::new(target)?),
        })
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<u8>> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `data`, as much as fits; never blocks.
    pub fn push(&self, data: &[u8]) {
        if !data.is_empty() {
            self.first_byte.get_or_init(Instant::now);
        }
        let mut bytes = self.lock();
        let was_empty = bytes.is_empty();
        let room = OUTPUT_QUEUE_BYTES.saturating_sub(bytes.len());
        let taken = data.len().min(room);
        bytes.extend(&data[..taken]);
        drop(bytes);
        if taken < data.len() {
            self.dropped
                .fetch_add((data.len() - taken) as u64, Ordering::Relaxed);
        }
        if was_empty && taken > 0 {
            // Only a counter overflow can fail, and the reader wakes up anyway.
            let _ = self.ready.write(1);
        }
    }

    /// When the guest wrote its first byte to this console, if it has (whether or
    /// not the byte fitted in the queue).
    pub fn first_byte_at(&self) -> Option<Instant> {
        self.first_byte.get().copied()
    }

    /// Readable when bytes wait in an empty queue: the cue to [`flush`](Self::flush).
    /// Read it to re-arm.
    pub fn ready(&self) -> &EventFd {
        &self.ready
    }

    /// The destination's descriptor, when it has one that can be polled for room:
    /// flush again when it turns writable after [`FlushState::Blocked`].
    pub fn with_fd<T>(&self, f: impl FnOnce(Option<BorrowedFd<'_>>) -> T) -> T {
        let destination = self.destination.lock().unwrap_or_else(|e| e.into_inner());
        f(destination.fd())
    }

    /// Writes queued output to the destination without blocking: until the queue is
    /// empty, the destination would block, or it failed. Call it on the I/O thread.
    pub fn flush(&self) -> FlushState {
        let mut destination = self.destination.lock().unwrap_or_else(|e| e.into_inner());
        let mut chunk = [0u8; 4096];
        loop {
            let len = {
                let bytes = self.lock();
                let (front, _) = bytes.as_slices();
                let len = front.len().min(chunk.len());
                chunk[..len].copy_from_slice(&front[..len]);
                len
            };
            if len == 0 {
                return FlushState::Done;
            }
            match destination.write(&chunk[..len]) {
                Ok(0) => return self.close(&mut destination),
                Ok(written) => {
                    self.lock().drain(..written);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return FlushState::Blocked,
                Err(_) => return self.close(&mut destination),
            }
        }
    }

    /// The last flush, when the VM has ended: waits up to a second for a slow reader,
    /// then drops (and counts) what is left.
    pub fn finish(&self) {
        let deadline = Instant::now() + FINAL_FLUSH_PATIENCE;
        while self.flush() == FlushState::Blocked {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.with_fd(|fd| fd.is_some_and(|fd| wait_writable(fd, left))) {
                break;
            }
        }
        self.drop_queued();
    }

    /// Output bytes dropped: the queue was full, or the destination had failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn drop_queued(&self) {
        let mut bytes = self.lock();
        self.dropped
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        bytes.clear();
    }

    fn close(&self, destination: &mut Destination) -> FlushState {
        *destination = Destination::Closed;
        self.drop_queued();
        FlushState::Closed
    }
}

/// Where queued output is written, on the I/O thread.
enum Destination {
    /// A descriptor that never blocks (a regular file, `/dev/null`) or one opened
    /// non-blocking for us (a pipe, a terminal).
    Fd(File),
    /// A socket, written with `MSG_DONTWAIT`.
    Socket(File),
    /// A caller's writer.
    Writer(Box<dyn Write + Send>),
    /// Nowhere, as asked: output is discarded.
    Discard,
    /// Nowhere any more: the destination failed, output is dropped and counted.
    Closed,
}

impl Destination {
    fn new(output: SerialOutput) -> io::Result<Self> {
        Ok(match output {
            SerialOutput::Stdout => {
                Destination::for_file(io::stdout().as_fd().try_clone_to_owned()?.into())?
            }
            SerialOutput::File(file) => Destination::for_file(file)?,
            SerialOutput::Writer(writer) => Destination::Writer(writer),
            SerialOutput::Sink => Destination::Discard,
        })
    }

    /// Regular files never block; a pipe, FIFO or terminal is opened anew through
    /// `/proc/self/fd` with `O_NONBLOCK`, so that the flag does not change the
    /// descriptor other processes share; a socket is written with `MSG_DONTWAIT`.
    fn for_file(file: File) -> io::Result<Self> {
        use std::os::unix::fs::FileTypeExt;
        let file_type = file.metadata()?.file_type();
        if file_type.is_socket() {
            return Ok(Destination::Socket(file));
        }
        if file_type.is_fifo() || file_type.is_char_device() {
            let path = format!("/proc/self/fd/{}", file.as_raw_fd());
            let reopened = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
                .open(path)?;
            return Ok(Destination::Fd(reopened));
        }
        Ok(Destination::Fd(file))
    }

    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Destination::Fd(file) => file.write(data),
            Destination::Socket(file) => {
                let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
                // SAFETY: sends at most `data.len()` bytes from `data` on a socket this
                // destination owns.
                let sent = unsafe {
                    libc::send(file.as_raw_fd(), data.as_ptr().cast(), data.len(), flags)
                };
                if sent < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(sent as usize)
            }
            Destination::Writer(writer) => writer.write(data),
            Destination::Discard => Ok(data.len()),
            Destination::Closed => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Destination::Fd(file) | Destination::Socket(file) => Some(file.as_fd()),
            Destination::Writer(_) | Destination::Discard | Destination::Closed => None,
        }
    }
}

/// How a flush of the transmit queue ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushState {
    /// Everything queued was written.
    Done,
    /// The destination takes no more now: flush again once it is writable.
    Blocked,
    /// The destination failed (its reader is gone); output is dropped from now on.
    Closed,
}

/// A writer that collects bytes for another thread to read, e.g. a test.
#[cfg(feature = "test-utils")]
#[derive(Debug, Clone, Default)]
pub struct SharedBuffer(std::sync::Arc<Mutex<Vec<u8>>>);

#[cfg(feature = "test-utils")]
impl SharedBuffer {
    /// A copy of everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(feature = "test-utils")]
impl Write for SharedBuffer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_byte_is_timed_once_even_when_the_queue_drops_it() {
        // Arrange
        let output = ConsoleOutput::new(SerialOutput::Sink).unwrap();
        output.push(&[]);
        assert_eq!(output.first_byte_at(), None, "an empty write is no byte");
        let before = Instant::now();

        // Act
        output.push(&vec![b'x'; OUTPUT_QUEUE_BYTES + 1]);
        let first = output.first_byte_at();
        output.push(b"later");

        // Assert
        let first = first.expect("the first byte was timed");
        assert!(first >= before);
        assert_eq!(output.first_byte_at(), Some(first));
        assert_eq!(output.dropped(), 6);
    }
}
