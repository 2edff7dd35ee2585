// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A guest console on the I/O thread: host input forwarded to it while it has room,
//! its output written without blocking.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use vmm_sys_util::epoll::EventSet;

use crate::event_loop::READABLE;
use crate::{event_fd, wait_readable, ConsoleInput, ConsoleOutput, EventLoop, Flow, FlushState};

impl EventLoop {
    /// Feeds what arrives on `input` (stdin, a pipe) to a guest console, as much as it
    /// takes. While the console has no room the loop stops reading `input`, and starts
    /// again when the guest makes room; at end of file it stops watching `input`.
    pub fn add_console_input(
        &mut self,
        input: impl AsFd + Send + 'static,
        console: Arc<dyn ConsoleInput>,
    ) -> io::Result<()> {
        let watched = input.as_fd().try_clone_to_owned()?;
        let wake = console.input_ready().try_clone()?;
        self.add_owned(
            watched,
            READABLE,
            Some(wake),
            Box::new(move || forward_input(input.as_fd(), &*console)),
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

fn forward_input(input: BorrowedFd<'_>, console: &dyn ConsoleInput) -> Flow {
    let mut buffer = [0u8; 64];
    let room = console.input_room().min(buffer.len());
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
            // `room` bytes fit: the console took them all.
            let _ = console.enqueue_input(&buffer[..n as usize]);
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
