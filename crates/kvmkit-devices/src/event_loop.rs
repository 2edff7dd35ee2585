// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The I/O thread's mechanism: one epoll loop over event sources (added on the thread
//! or from any other), sources paused while their consumer is full, and the VM's
//! exit request. What a VMM watches with it (a console, termination signals, device
//! queues) is policy, in the modules that own it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::Arc;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::{ShutdownReason, VmShutdown};

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
    /// Tells this source's events from those of an earlier source in the same slot.
    generation: u32,
    fd: RawFd,
    events: EventSet,
    handler: Handler,
    /// Signalled when a paused source may run again.
    wake: Option<EventFd>,
    paused: bool,
    /// The descriptor, for a source whose descriptor the loop owns
    /// ([`EventLoop::add_owned`]): kept open while the loop watches it.
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
    /// Slots of removed sources, reused before the table grows.
    free: Vec<usize>,
    /// The generation the next source takes.
    next_generation: u32,
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

/// The token of the VM shutdown event (a slot no table reaches).
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
            free: Vec::new(),
            next_generation: 0,
            shutdown,
            dispatches: 0,
            remote,
            handle: LoopHandle { sender, added },
        })
    }

    /// The VM's exit request this loop ends on.
    pub(crate) fn shutdown(&self) -> &Arc<VmShutdown> {
        &self.shutdown
    }

    /// A handle that adds sources to this loop from other threads.
    pub fn handle(&self) -> LoopHandle {
        self.handle.clone()
    }

    /// Takes the sources [`LoopHandle`]s sent since the last look.
    fn add_remote_sources(&mut self) -> io::Result<()> {
        let _ = self.handle.added.read();
        while let Ok(Remote { fd, wake, handler }) = self.remote.try_recv() {
            self.add_owned(fd, READABLE, wake, handler)?;
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
            .map(drop)
    }

    /// As [`add`](Self::add), for a source whose handler may return [`Flow::Pause`]:
    /// the loop then stops watching `fd` until `wake` is signalled (the loop reads
    /// `wake` itself), and then runs the handler at once and watches `fd` again. A
    /// `wake` while the source is not paused runs the handler too (so a device reset
    /// meanwhile is seen, and its source removed, without waiting for `fd`): the
    /// handler must not block when `fd` has nothing to read.
    pub fn add_pausable(
        &mut self,
        fd: BorrowedFd<'_>,
        wake: &EventFd,
        handler: impl FnMut() -> Flow + Send + 'static,
    ) -> io::Result<()> {
        self.add_source(fd, READABLE, Some(wake.try_clone()?), Box::new(handler))
            .map(drop)
    }

    /// As [`add_source`](Self::add_source), for a descriptor the loop keeps open while
    /// it watches it, and closes when the source is removed: what a handler that owns
    /// the descriptor's object (a pipe, a signalfd) cannot lend while moving into the
    /// loop.
    pub(crate) fn add_owned(
        &mut self,
        fd: OwnedFd,
        events: EventSet,
        wake: Option<EventFd>,
        handler: Handler,
    ) -> io::Result<()> {
        let index = self.add_source(fd.as_fd(), events, wake, handler)?;
        if let Some(Some(source)) = self.sources.get_mut(index) {
            source._owned = Some(fd);
        }
        Ok(())
    }

    /// Watches `fd` for `events` (the policy modules' way to watch for writability).
    pub(crate) fn add_source(
        &mut self,
        fd: BorrowedFd<'_>,
        events: EventSet,
        wake: Option<EventFd>,
        handler: Handler,
    ) -> io::Result<usize> {
        let index = self.free.last().copied().unwrap_or(self.sources.len());
        let generation = self.next_generation;
        let token = token(index, generation);
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
        self.next_generation = generation.wrapping_add(1);
        let source = Some(Source {
            generation,
            fd: fd.as_raw_fd(),
            events,
            handler,
            wake,
            paused: false,
            _owned: None,
        });
        if self.free.pop().is_some() {
            self.sources[index] = source;
        } else {
            self.sources.push(source);
        }
        Ok(index)
    }

    /// Sources being watched (or paused): what a VMM that adds and removes devices
    /// checks stays flat.
    pub fn source_count(&self) -> usize {
        self.sources.len() - self.free.len()
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
        let (index, generation) = slot(token);
        let Some(Some(source)) = self.sources.get_mut(index) else {
            return Ok(Flow::Continue);
        };
        if source.generation != generation {
            // An event of the slot's earlier source, read in the same wait.
            return Ok(Flow::Continue);
        }
        if token & WAKE_BIT != 0 {
            if let Some(wake) = &source.wake {
                let _ = wake.read();
            }
            if source.paused {
                // Watch the descriptor again, and run the handler now: what it paused
                // for may be work it already holds (a frame read before the pause),
                // which no readiness of the descriptor would bring back.
                source.paused = false;
                let event = EpollEvent::new(source.events, token & !WAKE_BIT);
                self.epoll.ctl(ControlOperation::Add, source.fd, event)?;
            }
            // Not paused: run it anyway, so that what the wake says (a device reset,
            // say) is seen now, not on the descriptor's next readiness.
        } else if source.paused {
            return Ok(Flow::Continue);
        }
        self.dispatches += 1;
        let flow = (source.handler)();
        match flow {
            Flow::Remove => self.remove(index)?,
            Flow::Pause => {
                if let Some(Some(source)) = self.sources.get_mut(index) {
                    if !source.paused {
                        source.paused = true;
                        self.epoll.ctl(
                            ControlOperation::Delete,
                            source.fd,
                            EpollEvent::default(),
                        )?;
                    }
                }
            }
            Flow::Continue | Flow::Stop => {}
        }
        Ok(flow)
    }

    /// Stops watching source `index` (its descriptor and its wake event) and frees its
    /// slot.
    fn remove(&mut self, index: usize) -> io::Result<()> {
        let Some(source) = self.sources.get_mut(index).and_then(Option::take) else {
            return Ok(());
        };
        self.free.push(index);
        if !source.paused {
            self.epoll
                .ctl(ControlOperation::Delete, source.fd, EpollEvent::default())?;
        }
        if let Some(wake) = &source.wake {
            // The wake is a duplicate of another's event fd: closing it alone would
            // leave it registered while the original lives.
            self.epoll.ctl(
                ControlOperation::Delete,
                wake.as_raw_fd(),
                EpollEvent::default(),
            )?;
        }
        Ok(())
    }
}

/// The token of source `index` of `generation`: bit 0 tells its wake event from its
/// descriptor, bits 1..33 the slot, the rest the generation.
fn token(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 33) | ((index as u64 & 0xffff_ffff) << 1)
}

/// The slot and generation a token names.
fn slot(token: u64) -> (usize, u32) {
    // 32 bits each, by construction of `token`.
    let index = ((token >> 1) & 0xffff_ffff) as usize;
    let generation = ((token >> 33) & 0xffff_ffff) as u32;
    (index, generation)
}

/// An event fd as a borrowed descriptor (vmm-sys-util's `EventFd` has no `AsFd`), to
/// watch it in an [`EventLoop`].
pub fn event_fd(event: &EventFd) -> BorrowedFd<'_> {
    // SAFETY: the descriptor stays open as long as `event`, which the borrow ties to.
    unsafe { BorrowedFd::borrow_raw(event.as_raw_fd()) }
}

pub(crate) const READABLE: EventSet = EventSet::IN.union(EventSet::HANG_UP).union(EventSet::ERROR);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    use std::time::Duration;

    pub(crate) fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned from here on.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    /// Runs `event_loop` on its own thread until `stop` is written.
    pub(crate) fn run_until_stopped(
        mut event_loop: EventLoop,
        stop: &EventFd,
    ) -> std::thread::JoinHandle<(LoopEnd, u64)> {
        event_loop.add(event_fd(stop), || Flow::Stop).unwrap();
        std::thread::spawn(move || {
            let end = event_loop.run().unwrap();
            (end, event_loop.dispatches())
        })
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

    #[test]
    fn a_wake_runs_a_source_that_is_not_paused_so_it_can_remove_itself() {
        // A device's receive source: its descriptor (a tap) stays quiet, its wake (the
        // queue's notifier) is what a reset signals.
        let (quiet, _writer) = pipe();
        let wake = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let reset = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::clone(&reset);
        let owned: OwnedFd = quiet.into();
        let mut event_loop = EventLoop::new(Arc::new(VmShutdown::new().unwrap())).unwrap();
        event_loop
            .add_pausable(owned.as_fd(), &wake, move || {
                if seen.load(std::sync::atomic::Ordering::SeqCst) {
                    Flow::Remove
                } else {
                    Flow::Continue
                }
            })
            .unwrap();

        reset.store(true, std::sync::atomic::Ordering::SeqCst);
        wake.write(1).unwrap();
        event_loop.run_ready().unwrap();

        assert_eq!(event_loop.source_count(), 0);
    }

    #[test]
    fn removed_sources_free_their_slots_for_the_next_ones() {
        let mut event_loop = EventLoop::new(Arc::new(VmShutdown::new().unwrap())).unwrap();
        let events: Vec<EventFd> = (0..4)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
            .collect();

        for _ in 0..1000 {
            for event in &events {
                event_loop.add(event_fd(event), || Flow::Remove).unwrap();
                event.write(1).unwrap();
            }
            event_loop.run_ready().unwrap();
        }

        assert_eq!(event_loop.source_count(), 0);
        assert!(
            event_loop.sources.len() <= events.len(),
            "{}",
            event_loop.sources.len()
        );
    }

    #[test]
    fn an_event_of_a_removed_source_does_not_run_the_source_now_in_its_slot() {
        let mut event_loop = EventLoop::new(Arc::new(VmShutdown::new().unwrap())).unwrap();
        let old = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let new = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        event_loop.add(event_fd(&old), || Flow::Remove).unwrap();
        old.write(1).unwrap();
        event_loop.run_ready().unwrap();
        let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Arc::clone(&runs);
        event_loop
            .add(event_fd(&new), move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Flow::Continue
            })
            .unwrap();

        // The old source's token, as an event already read in the same wait would be.
        let stale = token(0, 0);
        event_loop.dispatch(stale).unwrap();

        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(event_loop.source_count(), 1);
    }
}
