// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The 16550A UART on COM1, on vm-superio's emulation.
//!
//! Nothing the guest does with the UART can block the VMM: transmitted bytes go into a
//! bounded queue on the vCPU thread and reach the real output from the I/O thread with
//! non-blocking writes ([`SerialPort::flush_output`]); received bytes are only taken
//! from the host while the receive FIFO has room ([`SerialPort::input_room`]), and
//! the port says when it has room again ([`SerialPort::input_ready`]).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_superio::serial::SerialEvents;
use vm_superio::Serial;
use vmm_sys_util::eventfd::EventFd;

use crate::interrupt::SuperioTrigger;
use crate::{reply_byte, BusDevice, Interrupt};

/// COM1's base port.
pub const COM1_PORT: u64 = 0x3f8;
/// COM1's interrupt line.
pub const COM1_IRQ: u32 = 4;
/// The UART's register window.
pub const SERIAL_PORT_LEN: u64 = 8;
/// Bytes the transmit queue holds before further output is dropped (and counted).
pub const OUTPUT_QUEUE_BYTES: usize = 1 << 20;

/// The modem control register's offset, and its loopback bit.
const MCR_OFFSET: u64 = 4;
const MCR_LOOP: u8 = 0x10;
/// How long the last flush at the VM's end may wait for a slow reader.
const FINAL_FLUSH_PATIENCE: Duration = Duration::from_secs(1);

/// Where the guest's serial output goes.
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

/// Bytes the guest transmitted, waiting for the I/O thread. The vCPU thread only
/// appends under a short lock; it never writes to a file.
#[derive(Debug)]
struct OutputQueue {
    bytes: Mutex<VecDeque<u8>>,
    dropped: AtomicU64,
    /// Readable once bytes arrive in an empty queue: the I/O thread's cue to flush.
    ready: EventFd,
}

impl OutputQueue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<u8>> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, data: &[u8]) {
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
}

/// vm-superio's output writer: the queue, which never blocks.
struct QueueWriter(Arc<OutputQueue>);

impl Write for QueueWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.push(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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

/// vm-superio's events: the receive FIFO ran empty, so input can flow again.
struct InputEvents(Arc<EventFd>);

impl SerialEvents for InputEvents {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        let _ = self.0.write(1);
    }
}

type Uart = Serial<SuperioTrigger, InputEvents, QueueWriter>;

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

/// A 16550A UART: transmit to a [`SerialOutput`], receive what the VMM enqueues, with
/// interrupts on received data and on an empty transmit register.
pub struct SerialPort {
    uart: Mutex<Uart>,
    output: Arc<OutputQueue>,
    destination: Mutex<Destination>,
    input_ready: Arc<EventFd>,
}

impl SerialPort {
    /// A UART raising `interrupt` and writing to `output`.
    pub fn new(interrupt: Arc<dyn Interrupt>, output: SerialOutput) -> io::Result<Self> {
        let queue = Arc::new(OutputQueue {
            bytes: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
            ready: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
        });
        let input_ready = Arc::new(EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?);
        let uart = Serial::with_events(
            SuperioTrigger(interrupt),
            InputEvents(Arc::clone(&input_ready)),
            QueueWriter(Arc::clone(&queue)),
        );
        Ok(SerialPort {
            uart: Mutex::new(uart),
            output: queue,
            destination: Mutex::new(Destination::new(output)?),
            input_ready,
        })
    }

    fn uart(&self) -> MutexGuard<'_, Uart> {
        self.uart.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `input` for the guest to receive, raising the receive interrupt if the
    /// guest enabled it. Returns how many bytes the receive FIFO took: none while it is
    /// full or while the guest has the UART in loopback mode (see
    /// [`input_room`](Self::input_room)).
    pub fn enqueue_input(&self, input: &[u8]) -> io::Result<usize> {
        let mut uart = self.uart();
        if input.is_empty() || room(&mut uart) == 0 {
            return Ok(0);
        }
        uart.enqueue_raw_bytes(input)
            .map_err(|e| io::Error::other(format!("serial input: {e:?}")))
    }

    /// How many bytes [`enqueue_input`](Self::enqueue_input) takes now: the free room
    /// in the receive FIFO, or 0 while the UART is in loopback mode (it then receives
    /// its own output, not the host's input).
    pub fn input_room(&self) -> usize {
        room(&mut self.uart())
    }

    /// Readable when the guest made room for input (it emptied the receive FIFO or left
    /// loopback mode): an I/O thread that stopped reading the host's input while
    /// [`input_room`](Self::input_room) was 0 starts again then. Read it to re-arm.
    pub fn input_ready(&self) -> &EventFd {
        &self.input_ready
    }

    /// Readable when transmitted bytes wait in an empty queue: the cue to call
    /// [`flush_output`](Self::flush_output). Read it to re-arm.
    pub fn output_ready(&self) -> &EventFd {
        &self.output.ready
    }

    /// The output's descriptor, when it has one that can be polled for room: flush
    /// again when it turns writable after [`FlushState::Blocked`].
    pub fn with_output_fd<T>(&self, f: impl FnOnce(Option<BorrowedFd<'_>>) -> T) -> T {
        let destination = self.destination.lock().unwrap_or_else(|e| e.into_inner());
        f(destination.fd())
    }

    /// Writes queued output to the destination without blocking: until the queue is
    /// empty, the destination would block, or it failed. Call it on the I/O thread.
    pub fn flush_output(&self) -> FlushState {
        let mut destination = self.destination.lock().unwrap_or_else(|e| e.into_inner());
        let mut chunk = [0u8; 4096];
        loop {
            let len = {
                let bytes = self.output.lock();
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
                    self.output.lock().drain(..written);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return FlushState::Blocked,
                Err(_) => return self.close(&mut destination),
            }
        }
    }

    /// The last flush, when the VM has ended: waits up to a second for a slow reader,
    /// then drops (and counts) what is left.
    pub fn finish_output(&self) {
        let deadline = Instant::now() + FINAL_FLUSH_PATIENCE;
        while self.flush_output() == FlushState::Blocked {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero()
                || !self.with_output_fd(|fd| fd.is_some_and(|fd| wait_writable(fd, left)))
            {
                break;
            }
        }
        let mut bytes = self.output.lock();
        self.output
            .dropped
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        bytes.clear();
    }

    /// Output bytes dropped: the queue was full, or the destination had failed.
    pub fn dropped_output(&self) -> u64 {
        self.output.dropped.load(Ordering::Relaxed)
    }

    fn close(&self, destination: &mut Destination) -> FlushState {
        *destination = Destination::Closed;
        let mut bytes = self.output.lock();
        self.output
            .dropped
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        bytes.clear();
        FlushState::Closed
    }
}

fn room(uart: &mut Uart) -> usize {
    if uart.read(MCR_OFFSET as u8) & MCR_LOOP != 0 {
        0
    } else {
        uart.fifo_capacity()
    }
}

fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd for a descriptor borrowed for the call.
    let ready = unsafe { libc::poll(&mut pollfd, 1, millis) };
    ready == 1 && pollfd.revents & libc::POLLOUT != 0
}

impl BusDevice for SerialPort {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let value = self.uart().read(offset as u8);
        reply_byte(data, value);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        let mut uart = self.uart();
        // A failed interrupt must not stop the guest; output goes to the queue, which
        // never fails.
        let _ = uart.write(offset as u8, value);
        if offset == MCR_OFFSET && room(&mut uart) > 0 {
            // Leaving loopback mode lets input flow again.
            let _ = self.input_ready.write(1);
        }
    }
}

/// A writer that collects bytes for another thread to read, e.g. a test.
#[cfg(feature = "test-utils")]
#[derive(Debug, Clone, Default)]
pub struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

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
    use crate::EventFdInterrupt;
    use std::os::fd::FromRawFd;

    const THR: u64 = 0;
    const RBR: u64 = 0;

    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned from here on.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    fn port(output: SerialOutput) -> SerialPort {
        SerialPort::new(Arc::new(EventFdInterrupt::new().unwrap()), output).unwrap()
    }

    #[test]
    fn a_guest_printing_into_a_full_pipe_never_blocks_the_vcpu() {
        let (_reader, writer) = pipe();
        let serial = port(SerialOutput::File(writer));

        // Far more than a pipe holds (64 KiB) and than the queue holds: without the
        // queue, the first write past the pipe's capacity would block this thread.
        for _ in 0..(OUTPUT_QUEUE_BYTES + 200_000) {
            serial.write(THR, b"x");
        }
        let first = serial.flush_output();

        assert_eq!(first, FlushState::Blocked);
        assert_eq!(serial.dropped_output(), 200_000);
    }

    #[test]
    fn queued_output_reaches_the_reader_when_flushed() {
        let (mut reader, writer) = pipe();
        let serial = port(SerialOutput::File(writer));

        for byte in b"hello" {
            serial.write(THR, &[*byte]);
        }
        let ready = serial.output_ready().read().unwrap();
        let state = serial.flush_output();

        let mut text = [0u8; 5];
        std::io::Read::read_exact(&mut reader, &mut text).unwrap();
        assert_eq!(ready, 1, "one wake-up for bytes arriving in an empty queue");
        assert_eq!(state, FlushState::Done);
        assert_eq!(&text, b"hello");
    }

    #[test]
    fn a_reader_that_went_away_makes_output_dropped_not_an_error() {
        let (reader, writer) = pipe();
        let serial = port(SerialOutput::File(writer));
        drop(reader);

        serial.write(THR, b"a");
        let state = serial.flush_output();
        serial.write(THR, b"b");
        serial.flush_output();

        assert_eq!(state, FlushState::Closed);
        assert_eq!(serial.dropped_output(), 2);
    }

    #[test]
    fn loopback_mode_takes_no_input_and_leaving_it_signals_room() {
        let serial = port(SerialOutput::Sink);

        serial.write(MCR_OFFSET, &[MCR_LOOP]);
        let in_loopback = (serial.input_room(), serial.enqueue_input(b"abc").unwrap());
        serial.write(MCR_OFFSET, &[0]);

        assert_eq!(in_loopback, (0, 0));
        assert_eq!(serial.input_room(), 64);
        assert_eq!(serial.input_ready().read().unwrap(), 1);
        assert_eq!(serial.enqueue_input(b"abc").unwrap(), 3);
    }

    #[test]
    fn draining_the_receive_fifo_signals_input_ready() {
        let serial = port(SerialOutput::Sink);
        serial.enqueue_input(b"ab").unwrap();

        let mut data = [0u8];
        serial.read(RBR, &mut data);
        let after_one = serial.input_ready().read().is_ok();
        serial.read(RBR, &mut data);

        assert!(!after_one, "the FIFO still holds a byte");
        assert_eq!(serial.input_ready().read().unwrap(), 1);
    }
}
