// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The I/O thread: one epoll loop for console input, termination signals, device
//! event fds and the VM's exit request.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::Arc;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::{ConsoleInput, ConsoleOutput, FlushState, RawTerminal, ShutdownReason, VmShutdown};

/// What a handler tells the loop after it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Flow {
    /// Keep the source.
    Continue,
    /// Stop watching this source (e.g. end of input).
    Remove,
    /// Stop watching this source until its wake event (given to
    /// [`EventLoop::add_pausable`]) is signalled: what a source whose consumer is full
    /// returns, instead of leaving a level-triggered descriptor unread.
    Pause,
    /// End the loop.
    Stop,
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoopEnd {
    /// A device, a signal or a vCPU handler requested the VM's end.
    Requested(ShutdownReason),
    /// A handler returned [`Flow::Stop`] (e.g. every vCPU ended).
    Stopped,
}

/// A source's handler, run on the I/O thread.
pub type Handler = Box<dyn FnMut() -> Flow + Send>;

struct Source {
    fd: RawFd,
    events: EventSet,
    handler: Handler,
    /// Signalled when a paused source may run again.
    wake: Option<EventFd>,
    paused: bool,
    /// The descriptor, for a source added through a [`LoopHandle`]: kept open while
    /// the loop watches it.
    _owned: Option<OwnedFd>,
}

/// A source sent to the loop from another thread.
struct Remote {
    fd: OwnedFd,
    wake: Option<EventFd>,
    handler: Handler,
}

/// An epoll loop over event sources, ending when the VM's shutdown is requested.
pub struct EventLoop {
    epoll: Epoll,
    sources: Vec<Option<Source>>,
    shutdown: Arc<VmShutdown>,
    dispatches: u64,
    remote: mpsc::Receiver<Remote>,
    handle: LoopHandle,
}

/// Where a device adds the event sources it serves from, without knowing whose event
/// loop runs them: [`LoopHandle`] adds them to an [`EventLoop`]; another VMM
/// implements it on its own loop (an `event-manager`, a tokio reactor, a test that
/// polls by hand).
///
/// The loop runs `handler` on its I/O thread whenever `fd` is readable (or hangs up),
/// until the handler returns [`Flow::Remove`]; it keeps its own duplicate of `fd`.
pub trait EventSources: Send + Sync {
    /// Watches `fd`.
    fn add(&self, fd: BorrowedFd<'_>, handler: Handler) -> io::Result<()>;
    /// Watches `fd` with a handler that may return [`Flow::Pause`]: the loop then
    /// stops watching `fd` until `wake` is signalled (reading `wake` itself), runs
    /// the handler at once and watches `fd` again.
    fn add_pausable(&self, fd: BorrowedFd<'_>, wake: &EventFd, handler: Handler) -> io::Result<()>;
}

impl EventSources for LoopHandle {
    fn add(&self, fd: BorrowedFd<'_>, handler: Handler) -> io::Result<()> {
        self.send(fd, None, handler)
    }

    fn add_pausable(&self, fd: BorrowedFd<'_>, wake: &EventFd, handler: Handler) -> io::Result<()> {
        self.send(fd, Some(wake.try_clone()?), handler)
    }
}

/// Adds event sources to an [`EventLoop`] from any thread, while it runs: what a
/// device activated on a vCPU thread (a virtio driver setting DRIVER_OK) uses to have
/// its queues served on the I/O thread. Cheap to clone.
#[derive(Clone)]
pub struct LoopHandle {
    sender: mpsc::Sender<Remote>,
    added: Arc<EventFd>,
}

impl std::fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopHandle").finish_non_exhaustive()
    }
}

impl LoopHandle {
    fn send(&self, fd: BorrowedFd<'_>, wake: Option<EventFd>, handler: Handler) -> io::Result<()> {
        let remote = Remote {
            fd: fd.try_clone_to_owned()?,
            wake,
            handler,
        };
        self.sender
            .send(remote)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the event loop is gone"))?;
        self.added.write(1)
    }
}

/// The token of the VM shutdown event.
const SHUTDOWN_TOKEN: u64 = u64::MAX;
/// The token of the event that says a [`LoopHandle`] sent sources.
const REMOTE_TOKEN: u64 = u64::MAX - 2;
/// Bit 0 of a source's token tells its wake event from its descriptor.
const WAKE_BIT: u64 = 1;

impl EventLoop {
    /// A loop that ends when `shutdown` is requested.
    pub fn new(shutdown: Arc<VmShutdown>) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            shutdown.event().as_raw_fd(),
            EpollEvent::new(EventSet::IN, SHUTDOWN_TOKEN),
        )?;
        let added = Arc::new(EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?);
        epoll.ctl(
            ControlOperation::Add,
            added.as_raw_fd(),
            EpollEvent::new(EventSet::IN, REMOTE_TOKEN),
        )?;
        let (sender, remote) = mpsc::channel();
        Ok(EventLoop {
            epoll,
            sources: Vec::new(),
            shutdown,
            dispatches: 0,
            remote,
            handle: LoopHandle { sender, added },
        })
    }

    /// A handle that adds sources to this loop from other threads.
    pub fn handle(&self) -> LoopHandle {
        self.handle.clone()
    }

    /// Takes the sources [`LoopHandle`]s sent since the last look.
    fn add_remote_sources(&mut self) -> io::Result<()> {
        let _ = self.handle.added.read();
        while let Ok(remote) = self.remote.try_recv() {
            let fd = remote.fd.as_raw_fd();
            // SAFETY: `remote.fd` moves into the source below, which keeps it open as
            // long as the loop watches it.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            self.add_source(borrowed, READABLE, remote.wake, remote.handler)?;
            if let Some(Some(source)) = self.sources.last_mut() {
                source._owned = Some(remote.fd);
            }
        }
        Ok(())
    }

    /// Runs `handler` whenever `fd` is readable (or hangs up). The caller keeps `fd`
    /// open while the loop runs.
    pub fn add(
        &mut self,
        fd: BorrowedFd<'_>,
        handler: impl FnMut() -> Flow + Send + 'static,
    ) -> io::Result<()> {
        self.add_source(fd, READABLE, None, Box::new(handler))
    }

    /// As [`add`](Self::add), for a source whose handler may return [`Flow::Pause`]:
    /// the loop then stops watching `fd` until `wake` is signalled (the loop reads
    /// `wake` itself), and then runs the handler at once and watches `fd` again.
    pub fn add_pausable(
        &mut self,
        fd: BorrowedFd<'_>,
        wake: &EventFd,
        handler: impl FnMut() -> Flow + Send + 'static,
    ) -> io::Result<()> {
        self.add_source(fd, READABLE, Some(wake.try_clone()?), Box::new(handler))
    }

    fn add_source(
        &mut self,
        fd: BorrowedFd<'_>,
        events: EventSet,
        wake: Option<EventFd>,
        handler: Handler,
    ) -> io::Result<()> {
        let token = (self.sources.len() as u64) << 1;
        self.epoll.ctl(
            ControlOperation::Add,
            fd.as_raw_fd(),
            EpollEvent::new(events, token),
        )?;
        if let Some(wake) = &wake {
            let added = self.epoll.ctl(
                ControlOperation::Add,
                wake.as_raw_fd(),
                EpollEvent::new(EventSet::IN, token | WAKE_BIT),
            );
            if let Err(error) = added {
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    fd.as_raw_fd(),
                    EpollEvent::default(),
                );
                return Err(error);
            }
        }
        self.sources.push(Some(Source {
            fd: fd.as_raw_fd(),
            events,
            handler,
            wake,
            paused: false,
            _owned: None,
        }));
        Ok(())
    }

    /// Feeds what arrives on `input` (stdin, a pipe) to a guest console, as much as it
    /// takes. While the console has no room the loop stops reading `input`, and starts
    /// again when the guest makes room; at end of file it stops watching `input`.
    pub fn add_console_input(
        &mut self,
        input: impl AsFd + Send + 'static,
        console: Arc<dyn ConsoleInput>,
    ) -> io::Result<()> {
        let fd = input.as_fd().as_raw_fd();
        let wake = console.input_ready().try_clone()?;
        // SAFETY: `input` moves into the handler below, which the loop keeps as long
        // as it watches `fd`, so the descriptor stays open while registered.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        self.add_pausable(borrowed, &wake, move || {
            forward_input(input.as_fd(), &*console)
        })
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
            // SAFETY: `fd` moves into the handler, which keeps it open while watched.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
            // Edge-triggered: one wake-up each time a full destination drains. A
            // regular file or /dev/null cannot be polled, and never blocks either.
            match self.add_source(
                borrowed,
                EventSet::OUT | EventSet::EDGE_TRIGGERED,
                None,
                Box::new(move || {
                    let _owner = &fd;
                    flush(&output)
                }),
            ) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Ends the VM with [`ShutdownReason::Signal`] when `signals` delivers SIGINT,
    /// SIGTERM, SIGHUP or SIGQUIT; on SIGTSTP (Ctrl-Z) suspends the VMM with
    /// `terminal` restored, if there is one.
    pub fn add_termination_signals(
        &mut self,
        signals: Arc<TerminationSignals>,
        terminal: Option<Arc<RawTerminal<'static>>>,
    ) -> io::Result<()> {
        let shutdown = Arc::clone(&self.shutdown);
        let fd = signals.as_fd().as_raw_fd();
        // SAFETY: `signals` moves into the handler, which keeps the signalfd open.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        self.add(borrowed, move || {
            while let Some(signo) = signals.read() {
                if signo == libc::SIGTSTP {
                    match &terminal {
                        Some(terminal) => {
                            let _ = terminal.suspend();
                        }
                        // SAFETY: raise only stops this process until it is continued.
                        None => unsafe {
                            libc::raise(libc::SIGSTOP);
                        },
                    }
                } else {
                    shutdown.request(ShutdownReason::Signal(signo));
                }
            }
            Flow::Continue
        })
    }

    /// Waits for events and runs their handlers until the VM's shutdown is requested or
    /// a handler stops the loop.
    pub fn run(&mut self) -> io::Result<LoopEnd> {
        loop {
            if let Some(end) = self.turn(-1)? {
                return Ok(end);
            }
        }
    }

    /// Runs the handlers of the events ready now, without waiting: for a VMM that
    /// drives the loop from its own, and for tests and fuzzing. Returns how the loop
    /// would have ended, if it would have.
    pub fn run_ready(&mut self) -> io::Result<Option<LoopEnd>> {
        self.turn(0)
    }

    /// One wait of up to `timeout_ms` (-1: forever) and the handlers of what it found.
    fn turn(&mut self, timeout_ms: i32) -> io::Result<Option<LoopEnd>> {
        if let Some(request) = self.shutdown.get() {
            return Ok(Some(LoopEnd::Requested(request)));
        }
        let mut events = [EpollEvent::default(); 16];
        let count = match self.epoll.wait(timeout_ms, &mut events) {
            Ok(count) => count,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
            Err(e) => return Err(e),
        };
        for event in &events[..count] {
            if event.data() == SHUTDOWN_TOKEN {
                continue;
            }
            if event.data() == REMOTE_TOKEN {
                self.add_remote_sources()?;
                continue;
            }
            if self.dispatch(event.data())? == Flow::Stop {
                return Ok(Some(
                    self.shutdown
                        .get()
                        .map_or(LoopEnd::Stopped, LoopEnd::Requested),
                ));
            }
        }
        Ok(None)
    }

    /// How many times a handler has run: a busy loop shows here.
    pub fn dispatches(&self) -> u64 {
        self.dispatches
    }

    fn dispatch(&mut self, token: u64) -> io::Result<Flow> {
        let index = (token >> 1) as usize;
        let Some(Some(source)) = self.sources.get_mut(index) else {
            return Ok(Flow::Continue);
        };
        if token & WAKE_BIT != 0 {
            if let Some(wake) = &source.wake {
                let _ = wake.read();
            }
            if !source.paused {
                return Ok(Flow::Continue);
            }
            // Watch the descriptor again, and run the handler now: what it paused for
            // may be work it already holds (a frame read before the pause), which no
            // readiness of the descriptor would bring back.
            source.paused = false;
            let event = EpollEvent::new(source.events, token & !WAKE_BIT);
            self.epoll.ctl(ControlOperation::Add, source.fd, event)?;
        }
        if source.paused {
            return Ok(Flow::Continue);
        }
        self.dispatches += 1;
        let flow = (source.handler)();
        match flow {
            Flow::Remove => {
                self.unwatch(index)?;
                self.sources[index] = None;
            }
            Flow::Pause => {
                self.unwatch(index)?;
                if let Some(Some(source)) = self.sources.get_mut(index) {
                    source.paused = true;
                }
            }
            Flow::Continue | Flow::Stop => {}
        }
        Ok(flow)
    }

    fn unwatch(&self, index: usize) -> io::Result<()> {
        if let Some(Some(source)) = self.sources.get(index) {
            self.epoll
                .ctl(ControlOperation::Delete, source.fd, EpollEvent::default())?;
        }
        Ok(())
    }
}

/// An event fd as a borrowed descriptor (vmm-sys-util's `EventFd` has no `AsFd`), to
/// watch it in an [`EventLoop`].
pub fn event_fd(event: &EventFd) -> BorrowedFd<'_> {
    // SAFETY: the descriptor stays open as long as `event`, which the borrow ties to.
    unsafe { BorrowedFd::borrow_raw(event.as_raw_fd()) }
}

const READABLE: EventSet = EventSet::IN.union(EventSet::HANG_UP).union(EventSet::ERROR);

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

/// The signals [`TerminationSignals`] takes over: the four that end a VMM and Ctrl-Z.
pub const TERMINATION_SIGNALS: [i32; 5] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGTSTP,
];

/// SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGTSTP, blocked in the calling thread (and
/// every thread it starts afterwards, such as vCPU threads) and read from a signalfd
/// by the event loop instead, so that each ends the VM in order (or, for SIGTSTP,
/// suspends it) with the terminal restored. Dropping it discards what is still
/// pending, so a second Ctrl-C during the shutdown does not kill the process later,
/// and unblocks them again in the calling thread.
#[derive(Debug)]
pub struct TerminationSignals {
    fd: RawFd,
    old_mask: libc::sigset_t,
}

impl TerminationSignals {
    /// Blocks the [`TERMINATION_SIGNALS`] in this thread and opens a signalfd for them.
    /// Call it before starting vCPU threads so that they inherit the block.
    pub fn block() -> io::Result<Self> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset below.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` and `old_mask` are valid sigset_t values; the signal numbers
        // are valid.
        let ret = unsafe {
            libc::sigemptyset(&mut set);
            for signal in TERMINATION_SIGNALS {
                libc::sigaddset(&mut set, signal);
            }
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

impl AsFd for TerminationSignals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the signalfd stays open until this value is dropped.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

impl Drop for TerminationSignals {
    fn drop(&mut self) {
        // Signals that arrived after the last read (a second Ctrl-C while the VM shut
        // down) would be delivered with their default action, killing the process,
        // as soon as the mask is restored: they were handled already, drop them.
        while self.read().is_some() {}
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
    use crate::{BusDevice, EventFdInterrupt, SerialOutput, SerialPort};
    use std::fs::File;
    use std::io::Write;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::time::Duration;

    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned from here on.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    fn serial() -> Arc<SerialPort> {
        let interrupt = Arc::new(EventFdInterrupt::new().unwrap());
        Arc::new(SerialPort::new(interrupt, SerialOutput::Sink).unwrap())
    }

    /// Runs `event_loop` on its own thread until `stop` is written.
    fn run_until_stopped(
        mut event_loop: EventLoop,
        stop: &EventFd,
    ) -> std::thread::JoinHandle<(LoopEnd, u64)> {
        event_loop.add(event_fd(stop), || Flow::Stop).unwrap();
        std::thread::spawn(move || {
            let end = event_loop.run().unwrap();
            (end, event_loop.dispatches())
        })
    }

    fn read_byte(serial: &SerialPort) -> u8 {
        let mut data = [0u8];
        serial.read(0, &mut data);
        data[0]
    }

    #[test]
    fn loop_ends_with_the_request_a_device_made() {
        let exit = Arc::new(VmShutdown::new().unwrap());
        let mut event_loop = EventLoop::new(exit.clone()).unwrap();
        let requester = std::thread::spawn(move || exit.request(ShutdownReason::PowerOff));

        let end = event_loop.run().unwrap();
        requester.join().unwrap();

        assert_eq!(end, LoopEnd::Requested(ShutdownReason::PowerOff));
    }

    #[test]
    fn piped_input_reaches_the_serial_port_and_eof_removes_the_source() {
        let (reader, mut writer) = pipe();
        let serial = serial();
        let mut event_loop = EventLoop::new(Arc::new(VmShutdown::new().unwrap())).unwrap();
        event_loop
            .add_console_input(reader, serial.clone())
            .unwrap();
        let stop = EventFd::new(0).unwrap();

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
        let (reader, mut writer) = pipe();
        let serial = serial();
        let mut event_loop = EventLoop::new(Arc::new(VmShutdown::new().unwrap())).unwrap();
        event_loop
            .add_console_input(reader, serial.clone())
            .unwrap();
        let stop = EventFd::new(0).unwrap();

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

    fn raise_in_this_thread(signal: i32) {
        // SAFETY: sends `signal` to this thread, which has it blocked.
        assert_eq!(
            unsafe { libc::pthread_kill(libc::pthread_self(), signal) },
            0
        );
    }

    #[test]
    fn a_second_signal_pending_when_the_guard_drops_is_discarded_not_delivered() {
        let signals = TerminationSignals::block().unwrap();
        raise_in_this_thread(libc::SIGQUIT);
        let first = signals.read();
        // The second Ctrl-\ arrives while the VM shuts down: with the default action
        // restored it would kill this test process.
        raise_in_this_thread(libc::SIGQUIT);

        drop(signals);

        assert_eq!(first, Some(libc::SIGQUIT));
    }

    #[test]
    fn sighup_and_sigquit_end_the_vm_in_order() {
        let signals = Arc::new(TerminationSignals::block().unwrap());
        let shutdown = Arc::new(VmShutdown::new().unwrap());
        let mut event_loop = EventLoop::new(shutdown).unwrap();
        event_loop.add_termination_signals(signals, None).unwrap();

        raise_in_this_thread(libc::SIGHUP);
        let end = event_loop.run().unwrap();

        assert_eq!(
            end,
            LoopEnd::Requested(ShutdownReason::Signal(libc::SIGHUP))
        );
    }

    #[test]
    fn a_source_added_from_another_thread_while_the_loop_runs_is_served() {
        let event_loop = EventLoop::new(Arc::new(VmShutdown::new().unwrap())).unwrap();
        let handle = event_loop.handle();
        let stop = EventFd::new(0).unwrap();
        let running = run_until_stopped(event_loop, &stop);
        let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let served = Arc::new(EventFd::new(0).unwrap());

        let reader = kick.try_clone().unwrap();
        let done = served.clone();
        std::thread::spawn(move || {
            handle
                .add(
                    event_fd(&kick),
                    Box::new(move || {
                        let _ = reader.read();
                        done.write(1).unwrap();
                        Flow::Remove
                    }),
                )
                .unwrap();
            kick.write(1).unwrap();
        })
        .join()
        .unwrap();
        // Blocks until the loop ran the handler.
        let count = served.read().unwrap();
        stop.write(1).unwrap();
        running.join().unwrap();

        assert_eq!(count, 1);
    }

    #[test]
    fn a_paused_source_is_not_run_and_its_wake_resumes_it() {
        let (reader, mut writer) = pipe();
        let wake = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = runs.clone();
        let owned: OwnedFd = reader.into();
        let mut event_loop = EventLoop::new(Arc::new(VmShutdown::new().unwrap())).unwrap();
        event_loop
            .add_pausable(owned.as_fd(), &wake, move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Flow::Pause
            })
            .unwrap();
        let stop = EventFd::new(0).unwrap();

        writer.write_all(b"z").unwrap();
        let running = run_until_stopped(event_loop, &stop);
        std::thread::sleep(Duration::from_millis(50));
        let paused_runs = runs.load(std::sync::atomic::Ordering::Relaxed);
        wake.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        stop.write(1).unwrap();
        running.join().unwrap();

        assert_eq!(paused_runs, 1);
        // The wake runs the handler (which pauses again): exactly one more run.
        assert_eq!(runs.load(std::sync::atomic::Ordering::Relaxed), 2);
        drop(owned);
    }
}
