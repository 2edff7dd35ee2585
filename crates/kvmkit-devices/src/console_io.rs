// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A guest console on the I/O thread: host input forwarded to it while it has room
//! (from a terminal, with an escape key that ends the VM), its output written
//! without blocking.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use vmm_sys_util::epoll::EventSet;

use crate::event_loop::READABLE;
use crate::{
    event_fd, wait_readable, ConsoleInput, ConsoleOutput, EventLoop, Flow, FlushState,
    ShutdownReason, VmShutdown,
};

/// The terminal's escape key, Ctrl-A, as QEMU's and screen's: then `x` ends the VM,
/// Ctrl-A sends one Ctrl-A, any other key is sent after a Ctrl-A.
pub const ESCAPE: u8 = 0x01;

impl EventLoop {
    /// Feeds what arrives on `input` (stdin, a pipe) to a guest console, as much as it
    /// takes. While the console has no room the loop stops reading `input`, and starts
    /// again when the guest makes room; at end of file it stops watching `input`.
    pub fn add_console_input(
        &mut self,
        input: impl AsFd + Send + 'static,
        console: Arc<dyn ConsoleInput>,
    ) -> io::Result<()> {
        self.add_input(input, console, None)
    }

    /// As [`add_console_input`](Self::add_console_input), for a terminal in raw mode,
    /// where every key goes to the guest (Ctrl-C, Ctrl-Z and Ctrl-\\ included) but
    /// the escape: [`ESCAPE`] then `x` ends the VM with [`ShutdownReason::Escape`],
    /// [`ESCAPE`] twice sends one.
    pub fn add_terminal_input(
        &mut self,
        input: impl AsFd + Send + 'static,
        console: Arc<dyn ConsoleInput>,
    ) -> io::Result<()> {
        let shutdown = Arc::clone(self.shutdown());
        self.add_input(input, console, Some(Escape::new(shutdown)))
    }

    fn add_input(
        &mut self,
        input: impl AsFd + Send + 'static,
        console: Arc<dyn ConsoleInput>,
        mut escape: Option<Escape>,
    ) -> io::Result<()> {
        let watched = input.as_fd().try_clone_to_owned()?;
        let wake = console.input_ready().try_clone()?;
        self.add_owned(
            watched,
            READABLE,
            Some(wake),
            Box::new(move || forward_input(input.as_fd(), &*console, escape.as_mut())),
        )
    }

    /// Writes a console's output on this thread, without blocking: when bytes are
    /// queued, and again when a destination that was full turns writable.
    pub fn add_console_output(&mut self, output: Arc<ConsoleOutput>) -> io::Result<()> {
        let ready = output.ready().try_clone()?;
        let flushing = Arc::clone(&output);
        self.add(event_fd(output.ready()), move || {
            let _ = ready.read();
            flush(&flushing)
        })?;
        let writable = output.with_fd(|fd| fd.map(|fd| fd.try_clone_to_owned()));
        if let Some(fd) = writable.transpose()? {
            // Edge-triggered: one wake-up each time a full destination drains. A
            // regular file or /dev/null cannot be polled, and never blocks either.
            match self.add_owned(
                fd,
                EventSet::OUT | EventSet::EDGE_TRIGGERED,
                None,
                Box::new(move || flush(&output)),
            ) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }
}

fn flush(output: &ConsoleOutput) -> Flow {
    match output.flush() {
        FlushState::Closed => Flow::Remove,
        _ => Flow::Continue,
    }
}

/// The escape's state on a terminal's input.
struct Escape {
    shutdown: Arc<VmShutdown>,
    /// A Ctrl-A was typed and its key not yet.
    pending: bool,
    /// What goes to the guest from the last read.
    forwarded: Vec<u8>,
}

impl Escape {
    fn new(shutdown: Arc<VmShutdown>) -> Self {
        Escape {
            shutdown,
            pending: false,
            forwarded: Vec::with_capacity(64),
        }
    }

    /// What of `typed` goes to the guest; ends the VM on Ctrl-A x (and drops what
    /// follows it).
    fn filter(&mut self, typed: &[u8]) -> &[u8] {
        self.forwarded.clear();
        for &key in typed {
            match (self.pending, key) {
                (false, ESCAPE) => self.pending = true,
                (false, key) => self.forwarded.push(key),
                (true, b'x' | b'X') => {
                    self.pending = false;
                    self.shutdown.request(ShutdownReason::Escape);
                    break;
                }
                (true, ESCAPE) => {
                    self.pending = false;
                    self.forwarded.push(ESCAPE);
                }
                (true, key) => {
                    self.pending = false;
                    self.forwarded.extend([ESCAPE, key]);
                }
            }
        }
        &self.forwarded
    }
}

fn forward_input(
    input: BorrowedFd<'_>,
    console: &dyn ConsoleInput,
    escape: Option<&mut Escape>,
) -> Flow {
    let mut buffer = [0u8; 64];
    // A Ctrl-A held back from the last read may go out with the next key: leave
    // room for it.
    let held = escape.as_ref().is_some_and(|escape| escape.pending);
    let room = console
        .input_room()
        .min(buffer.len())
        .saturating_sub(usize::from(held));
    if room == 0 {
        // The guest has not made room: leave the bytes in the pipe or tty and stop
        // watching it until the guest does.
        return Flow::Pause;
    }
    // The loop also runs this when the console makes room, whether or not input
    // waits: a terminal or pipe may be in blocking mode, so never read it unready.
    if !wait_readable(input, Duration::ZERO) {
        return Flow::Continue;
    }
    // SAFETY: reads at most `room` bytes into `buffer`, which has that many.
    let read = unsafe { libc::read(input.as_raw_fd(), buffer.as_mut_ptr().cast(), room) };
    match read {
        0 => Flow::Remove,
        n if n < 0 => {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted
                || error.kind() == io::ErrorKind::WouldBlock
            {
                Flow::Continue
            } else {
                Flow::Remove
            }
        }
        n => {
            let typed = &buffer[..n as usize];
            let forwarded = match escape {
                Some(escape) => escape.filter(typed),
                None => typed,
            };
            // At most `room` bytes (and a held Ctrl-A) fit: the console took them all.
            let _ = console.enqueue_input(forwarded);
            Flow::Continue
        }
    }
}

#[cfg(all(test, feature = "uart"))]
mod tests {
    use super::*;
    use crate::event_loop::tests::{pipe, run_until_stopped};
    use crate::{BusDevice, EventFdInterrupt, LoopEnd, SerialOutput, SerialPort, VmShutdown};
    use std::io::Write;
    use std::time::Duration;
    use vmm_sys_util::eventfd::EventFd;

    fn serial() -> Arc<SerialPort> {
        let interrupt = Arc::new(EventFdInterrupt::new().unwrap());
        Arc::new(SerialPort::new(interrupt, SerialOutput::Sink).unwrap())
    }

    fn read_byte(serial: &SerialPort) -> u8 {
        let mut data = [0u8];
        serial.read(0, &mut data);
        data[0]
    }

    /// A serial port whose input is a pipe the loop reads: (the pipe's writing end,
    /// the port, the loop, the event that stops it).
    fn piped_input() -> (std::fs::File, Arc<SerialPort>, EventLoop, EventFd) {
        let (reader, writer) = pipe();
        let serial = serial();
        let mut event_loop = EventLoop::new(Arc::new(VmShutdown::new().unwrap())).unwrap();
        event_loop
            .add_console_input(reader, serial.clone())
            .unwrap();
        (writer, serial, event_loop, EventFd::new(0).unwrap())
    }

    #[test]
    fn piped_input_reaches_the_serial_port_and_eof_removes_the_source() {
        let (mut writer, serial, event_loop, stop) = piped_input();

        writer.write_all(b"hi").unwrap();
        drop(writer);
        let running = run_until_stopped(event_loop, &stop);
        // Let the loop see the bytes and the end of file before the stop event.
        std::thread::sleep(Duration::from_millis(100));
        stop.write(1).unwrap();
        let (end, _) = running.join().unwrap();

        assert_eq!(end, LoopEnd::Stopped);
        assert_eq!(read_byte(&serial), b'h');
        assert_eq!(read_byte(&serial), b'i');
    }

    /// A serial port fed from a pipe as from a terminal: the escape applies.
    fn terminal_input() -> (std::fs::File, Arc<SerialPort>, EventLoop, EventFd) {
        let (reader, writer) = pipe();
        let serial = serial();
        let mut event_loop = EventLoop::new(Arc::new(VmShutdown::new().unwrap())).unwrap();
        event_loop
            .add_terminal_input(reader, serial.clone())
            .unwrap();
        (writer, serial, event_loop, EventFd::new(0).unwrap())
    }

    #[test]
    fn control_keys_reach_the_guest_and_a_doubled_escape_sends_one() {
        let (mut writer, serial, event_loop, stop) = terminal_input();

        // Ctrl-C, Ctrl-Z, Ctrl-\, Ctrl-A Ctrl-A, Ctrl-A then 'b'.
        writer
            .write_all(&[0x03, 0x1a, 0x1c, ESCAPE, ESCAPE, ESCAPE, b'b'])
            .unwrap();
        let running = run_until_stopped(event_loop, &stop);
        std::thread::sleep(Duration::from_millis(100));
        stop.write(1).unwrap();
        let (end, _) = running.join().unwrap();

        assert_eq!(end, LoopEnd::Stopped);
        let received: Vec<u8> = (0..6).map(|_| read_byte(&serial)).collect();
        assert_eq!(received, [0x03, 0x1a, 0x1c, ESCAPE, ESCAPE, b'b']);
        assert_eq!(
            serial.input_room(),
            64,
            "more reached the guest than was sent"
        );
    }

    #[test]
    fn the_escape_then_x_ends_the_vm_and_nothing_after_it_reaches_the_guest() {
        let (mut writer, serial, event_loop, stop) = terminal_input();

        // Split across reads: the escape in one write, its key in the next.
        writer.write_all(b"a").unwrap();
        writer.write_all(&[ESCAPE]).unwrap();
        let running = run_until_stopped(event_loop, &stop);
        std::thread::sleep(Duration::from_millis(50));
        writer.write_all(b"xz").unwrap();
        let (end, _) = running.join().unwrap();

        assert_eq!(end, LoopEnd::Requested(ShutdownReason::Escape));
        assert_eq!(read_byte(&serial), b'a');
        assert_eq!(serial.input_room(), 64);
    }

    #[test]
    fn a_full_receive_fifo_pauses_input_instead_of_spinning_and_draining_resumes_it() {
        let (mut writer, serial, event_loop, stop) = piped_input();

        // 100 bytes for a 64-byte FIFO the guest does not drain for 200 ms.
        writer.write_all(&[b'x'; 100]).unwrap();
        let running = run_until_stopped(event_loop, &stop);
        std::thread::sleep(Duration::from_millis(200));
        let received: Vec<u8> = (0..64).map(|_| read_byte(&serial)).collect();
        std::thread::sleep(Duration::from_millis(100));
        stop.write(1).unwrap();
        let (_, dispatches) = running.join().unwrap();

        assert_eq!(received, vec![b'x'; 64]);
        // The rest arrived once the guest made room.
        assert_eq!(serial.input_room(), 64 - 36);
        // Level-triggered input left unread would have run the handler in a loop for
        // 200 ms; paused, it ran a handful of times.
        assert!(
            dispatches < 20,
            "the I/O thread spun: {dispatches} handler runs"
        );
    }

    #[test]
    fn output_to_a_slow_pipe_is_written_by_the_loop_as_the_reader_drains_it() {
        let (mut reader, writer) = pipe();
        let interrupt = Arc::new(EventFdInterrupt::new().unwrap());
        let serial = Arc::new(SerialPort::new(interrupt, SerialOutput::File(writer)).unwrap());
        let mut event_loop = EventLoop::new(Arc::new(VmShutdown::new().unwrap())).unwrap();
        event_loop
            .add_console_output(serial.output().clone())
            .unwrap();
        let stop = EventFd::new(0).unwrap();
        let total = 300_000;

        // More than the pipe holds: the loop must wait for room, not block or spin.
        for _ in 0..total {
            serial.write(0, b"y");
        }
        let running = run_until_stopped(event_loop, &stop);
        let mut received = vec![0u8; total];
        std::io::Read::read_exact(&mut reader, &mut received).unwrap();
        stop.write(1).unwrap();
        running.join().unwrap();

        assert!(received.iter().all(|&b| b == b'y'));
        assert_eq!(serial.output().dropped(), 0);
    }
}
