// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The I/O thread: one epoll loop for console input, termination signals, device
//! event fds and the VM's exit request.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::{ExitRequest, SerialPort, VmExit};

/// What a handler tells the loop after it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep the source.
    Continue,
    /// Stop watching this source (e.g. end of input).
    Remove,
    /// End the loop.
    Stop,
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopEnd {
    /// A device, a signal or a vCPU handler requested the VM's end.
    Requested(ExitRequest),
    /// A handler returned [`Flow::Stop`] (e.g. every vCPU ended).
    Stopped,
}

type Handler = Box<dyn FnMut() -> Flow + Send>;

/// An epoll loop over event sources, ending when the VM's exit is requested.
pub struct EventLoop {
    epoll: Epoll,
    handlers: Vec<Option<(RawFd, Handler)>>,
    exit: Arc<VmExit>,
}

/// The token of the VM exit event.
const EXIT_TOKEN: u64 = u64::MAX;

impl EventLoop {
    /// A loop that ends when `exit` is requested.
    pub fn new(exit: Arc<VmExit>) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            exit.event().as_raw_fd(),
            EpollEvent::new(EventSet::IN, EXIT_TOKEN),
        )?;
        Ok(EventLoop {
            epoll,
            handlers: Vec::new(),
            exit,
        })
    }

    /// Runs `handler` whenever `fd` is readable (or hangs up).
    pub fn add(
        &mut self,
        fd: RawFd,
        handler: impl FnMut() -> Flow + Send + 'static,
    ) -> io::Result<()> {
        let token = self.handlers.len() as u64;
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR, token),
        )?;
        self.handlers.push(Some((fd, Box::new(handler))));
        Ok(())
    }

    /// Feeds what arrives on `input` (stdin, a pipe) to the guest's serial port, as
    /// much as its receive FIFO takes; stops watching `input` at end of file.
    pub fn add_serial_input(&mut self, input: RawFd, serial: Arc<SerialPort>) -> io::Result<()> {
        self.add(input, move || forward_input(input, &serial))
    }

    /// Ends the VM with [`ExitRequest::Signal`] when `signals` delivers one.
    pub fn add_termination_signals(&mut self, signals: Arc<TerminationSignals>) -> io::Result<()> {
        let exit = Arc::clone(&self.exit);
        let fd = signals.as_raw_fd();
        self.add(fd, move || {
            if let Some(signo) = signals.read() {
                exit.request(ExitRequest::Signal(signo));
            }
            Flow::Continue
        })
    }

    /// Waits for events and runs their handlers until the VM's exit is requested or a
    /// handler stops the loop.
    pub fn run(&mut self) -> io::Result<LoopEnd> {
        let mut events = vec![EpollEvent::default(); 16];
        loop {
            if let Some(request) = self.exit.get() {
                return Ok(LoopEnd::Requested(request));
            }
            let count = match self.epoll.wait(-1, &mut events) {
                Ok(count) => count,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for event in &events[..count] {
                if event.data() == EXIT_TOKEN {
                    continue;
                }
                if self.dispatch(event.data() as usize)? == Flow::Stop {
                    return Ok(self.exit.get().map_or(LoopEnd::Stopped, LoopEnd::Requested));
                }
            }
        }
    }

    fn dispatch(&mut self, index: usize) -> io::Result<Flow> {
        let Some(Some((fd, handler))) = self.handlers.get_mut(index) else {
            return Ok(Flow::Continue);
        };
        let fd = *fd;
        let flow = handler();
        if flow == Flow::Remove {
            self.epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default())?;
            self.handlers[index] = None;
        }
        Ok(flow)
    }
}

fn forward_input(input: RawFd, serial: &SerialPort) -> Flow {
    let mut buffer = [0u8; 64];
    let room = serial.input_room().min(buffer.len());
    if room == 0 {
        // The guest has not drained its FIFO; the bytes wait in the pipe or tty.
        return Flow::Continue;
    }
    // SAFETY: reads at most `room` bytes into `buffer`, which has that many.
    let read = unsafe { libc::read(input, buffer.as_mut_ptr().cast(), room) };
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
            // A FIFO overrun loses bytes, as on a real UART.
            let _ = serial.enqueue_input(&buffer[..n as usize]);
            Flow::Continue
        }
    }
}

/// SIGINT and SIGTERM, blocked in the calling thread (and every thread it starts
/// afterwards, such as vCPU threads) and read from a signalfd by the event loop
/// instead. Dropping it unblocks them again in the calling thread.
#[derive(Debug)]
pub struct TerminationSignals {
    fd: RawFd,
    old_mask: libc::sigset_t,
}

impl TerminationSignals {
    /// Blocks SIGINT and SIGTERM in this thread and opens a signalfd for them. Call it
    /// before starting vCPU threads so that they inherit the block.
    pub fn block() -> io::Result<Self> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset below.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` and `old_mask` are valid sigset_t values; the signal numbers
        // are valid.
        let ret = unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old_mask)
        };
        if ret != 0 {
            return Err(io::Error::from_raw_os_error(ret));
        }
        // SAFETY: `set` is a valid signal set; -1 asks for a new descriptor.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            let error = io::Error::last_os_error();
            // SAFETY: restores the mask saved above.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
            return Err(error);
        }
        Ok(TerminationSignals { fd, old_mask })
    }

    /// The pending signal's number, if one is pending.
    pub fn read(&self) -> Option<i32> {
        // SAFETY: signalfd_siginfo is plain data.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `size` bytes into `info`.
        let read = unsafe {
            libc::read(
                self.fd,
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        (read == size as isize).then_some(info.ssi_signo as i32)
    }
}

impl AsRawFd for TerminationSignals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for TerminationSignals {
    fn drop(&mut self) {
        // SAFETY: closes the signalfd opened in `block` and restores the saved mask.
        unsafe {
            libc::close(self.fd);
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BusDevice, EventFdInterrupt, SerialOutput, SharedBuffer};
    use std::os::fd::FromRawFd;

    #[test]
    fn loop_ends_with_the_request_a_device_made() {
        let exit = Arc::new(VmExit::new().unwrap());
        let mut event_loop = EventLoop::new(exit.clone()).unwrap();
        let requester = std::thread::spawn(move || exit.request(ExitRequest::PowerOff));

        let end = event_loop.run().unwrap();
        requester.join().unwrap();

        assert_eq!(end, LoopEnd::Requested(ExitRequest::PowerOff));
    }

    #[test]
    fn piped_input_reaches_the_serial_port_and_eof_removes_the_source() {
        let exit = Arc::new(VmExit::new().unwrap());
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the write end is owned by this File from here on.
        let mut writer = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        let interrupt = Arc::new(EventFdInterrupt::new().unwrap());
        let serial = Arc::new(SerialPort::new(
            interrupt.clone(),
            SerialOutput::Writer(Box::new(SharedBuffer::default())),
        ));
        let mut event_loop = EventLoop::new(exit.clone()).unwrap();
        event_loop.add_serial_input(fds[0], serial.clone()).unwrap();
        let done = vmm_sys_util::eventfd::EventFd::new(0).unwrap();
        let done_fd = done.as_raw_fd();
        event_loop.add(done_fd, || Flow::Stop).unwrap();

        std::io::Write::write_all(&mut writer, b"hi").unwrap();
        drop(writer);
        // Let the loop see the bytes and the end of file before the stop event.
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            done.write(1).unwrap();
            done
        });
        let end = event_loop.run().unwrap();
        stopper.join().unwrap();

        assert_eq!(end, LoopEnd::Stopped);
        let mut data = [0u8];
        serial.read(0, &mut data);
        assert_eq!(data, [b'h']);
        serial.read(0, &mut data);
        assert_eq!(data, [b'i']);
        // SAFETY: the read end was opened above and is closed once.
        unsafe { libc::close(fds[0]) };
    }
}
