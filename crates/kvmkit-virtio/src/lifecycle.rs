// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What every device keeps across activations, and the one way its queues are served
//! and stopped: [`DeviceLifecycle`].

use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use kvmkit_devices::{event_fd, wait_readable, EventSources, Flow};
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use crate::epoch::{Epoch, Gate};
use crate::queue::{Chain, ChainError, QueueRunner, Served, TurnBudget};
use crate::{ActivateError, Activation, ActiveQueue, GuestMemory, QueueCounters};

/// The part of a virtio device that is the same for every device type: per-queue
/// counters that outlive activations, and the epoch that each reset ends (what
/// Cloud Hypervisor's `VirtioCommon` is to its devices).
///
/// A device serves its queues through [`serve_on_notify`](Self::serve_on_notify) (on
/// the I/O thread), [`serve_on_worker`](Self::serve_on_worker) (on a thread of the
/// queue's own), [`runner`](Self::runner), [`watch`](Self::watch) and
/// [`watch_pausable`](Self::watch_pausable), so that every piece of its queue work runs
/// under the current epoch; its [`VirtioDevice::reset`](crate::VirtioDevice::reset)
/// calls [`reset`](Self::reset), which returns only once none of that work can touch
/// guest memory or the interrupt again. [`pause`](Self::pause) waits the same way and
/// keeps everything for [`resume`](Self::resume).
///
/// ```
/// use kvmkit_virtio::DeviceLifecycle;
///
/// let lifecycle = DeviceLifecycle::new(2);
/// let before = lifecycle.epoch();
/// lifecycle.reset();
/// assert!(!before.is_current());
/// assert_eq!(lifecycle.counters().len(), 2);
/// ```
#[derive(Debug)]
pub struct DeviceLifecycle {
    counters: Vec<Arc<QueueCounters>>,
    gate: Arc<Gate>,
    /// The work of the current activation, dropped (buffers, backends, runners) when
    /// the device is reset, however long the event loop takes to drop the sources.
    work: Mutex<Vec<Arc<WorkSlot>>>,
    /// The wake events of the activation's pausable sources, which a paused device
    /// stopped watching: the resume signals them.
    wakes: Mutex<Vec<EventFd>>,
}

/// A source's work, held for the activation it belongs to.
type Work = Box<dyn FnMut() -> Flow + Send>;

#[derive(Default)]
struct WorkSlot(Mutex<Option<Work>>);

impl std::fmt::Debug for WorkSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkSlot").finish_non_exhaustive()
    }
}

impl WorkSlot {
    fn lock(&self) -> MutexGuard<'_, Option<Work>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the work, or says to drop the source once the device dropped it.
    fn run(&self) -> Flow {
        match self.lock().as_mut() {
            Some(work) => work(),
            None => Flow::Remove,
        }
    }
}

impl DeviceLifecycle {
    /// The lifecycle of a device with `queues` queues.
    pub fn new(queues: usize) -> Self {
        DeviceLifecycle {
            counters: (0..queues).map(|_| Arc::default()).collect(),
            gate: Arc::default(),
            work: Mutex::default(),
            wakes: Mutex::default(),
        }
    }

    /// Per-queue counters, in queue order (what [`VirtioDevice::counters`] returns).
    ///
    /// [`VirtioDevice::counters`]: crate::VirtioDevice::counters
    pub fn counters(&self) -> Vec<Arc<QueueCounters>> {
        self.counters.clone()
    }

    /// The counters of queue `index` (fresh ones for a queue the device did not
    /// declare).
    pub fn queue_counters(&self, index: u16) -> Arc<QueueCounters> {
        self.counters
            .get(usize::from(index))
            .cloned()
            .unwrap_or_default()
    }

    /// The current epoch, for work the device runs itself.
    pub fn epoch(&self) -> Epoch {
        self.gate.epoch()
    }

    /// Stops the device: ends the current epoch and waits for the turn of queue work
    /// in flight, if any, then drops the old activation's work (its runners, buffers
    /// and backends' handles). Work of the old epoch then touches nothing, and its
    /// event sources remove themselves on their next event. Call it from a thread that
    /// is not serving the device's queues (a transport's, on a vCPU thread).
    pub fn reset(&self) {
        self.gate.revoke();
        let work = std::mem::take(&mut *self.work.lock().unwrap_or_else(|e| e.into_inner()));
        for slot in work {
            slot.lock().take();
        }
        self.wakes.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Stops the device's queue work and returns once none runs: the turn in flight
    /// completes its chain and stops, and until [`resume`](Self::resume) nothing is
    /// taken from the queues, written to guest memory or interrupted; chains the driver
    /// posts meanwhile, and input for the guest, wait. What a VM's pause does to its
    /// devices, and what a snapshot needs of them (a device saved only when quiesced).
    pub fn pause(&self) {
        self.gate.pause();
    }

    /// Lets the queue work run again and wakes the sources a pause stopped watching.
    /// The transport signals the queues' notifiers after this, so that what was
    /// posted while paused is served.
    pub fn resume(&self) {
        self.gate.resume();
        for wake in self.wakes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = wake.write(1);
        }
    }

    /// Whether the device is paused.
    pub fn is_paused(&self) -> bool {
        self.gate.is_paused()
    }

    /// Keeps `work` for the current activation: until the next reset.
    fn hold(&self, work: impl FnMut() -> Flow + Send + 'static) -> Arc<WorkSlot> {
        let slot = Arc::new(WorkSlot(Mutex::new(Some(Box::new(work)))));
        self.work
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&slot));
        slot
    }

    /// A runner for queue `index` (`queue`, as the driver set it up) in the current
    /// epoch; its notifier is the caller's to watch.
    pub fn runner(&self, activation: &Activation, index: u16, queue: Queue) -> QueueRunner {
        QueueRunner::new(activation, queue, self.queue_counters(index), self.epoch())
    }

    /// Serves `queue` on each of its notifications: the chains the driver made
    /// available go through `serve`, then the driver is interrupted if it wants.
    /// A queue whose rings the driver broke marks the device faulted (it then needs a
    /// reset) and is watched no more; so is the queue of a device reset since.
    pub fn serve_on_notify(
        &self,
        activation: &Activation,
        queue: ActiveQueue,
        mut serve: impl FnMut(&GuestMemory, Result<&Chain, ChainError>) -> Served + Send + 'static,
    ) -> Result<(), ActivateError> {
        let mut runner = self.runner(activation, queue.index, queue.queue);
        self.watch(activation, &queue.notifier, move || {
            runner.run(|| true, &mut serve)
        })
    }

    /// As [`serve_on_notify`](Self::serve_on_notify), on a thread of the queue's own
    /// (named `name`) instead of the I/O thread: for a device whose requests may take
    /// long or block (storage), so that they never hold up the VMM's other devices,
    /// its consoles or its signals. The thread ends when the device is reset (or the
    /// lifecycle dropped) and its queue's turn in flight, if any, has ended.
    pub fn serve_on_worker(
        &self,
        activation: &Activation,
        queue: ActiveQueue,
        name: &str,
        mut serve: impl FnMut(&GuestMemory, Result<&Chain, ChainError>) -> Served + Send + 'static,
    ) -> Result<(), ActivateError> {
        // The thread is the queue's alone: no other source waits for its turns.
        let mut runner = self
            .runner(activation, queue.index, queue.queue)
            .with_budget(TurnBudget::OWN_THREAD);
        let notifier = queue.notifier;
        let events = Arc::clone(&activation.events);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    serve_until_done(&mut runner, &notifier, &mut serve)
                }));
                if let Err(panic) = served {
                    raise_on_loop(&*events, panic);
                }
            })
            .map(drop)
            .map_err(ActivateError::Worker)
    }

    /// Runs `work` on the I/O thread each time `notifier` (a queue's notification) is
    /// signalled, until the device is reset or `work` returns [`Flow::Remove`]. Work
    /// that returns [`Flow::Pause`] (chains left when its budget ran out) runs again
    /// after the loop's other sources.
    pub fn watch(
        &self,
        activation: &Activation,
        notifier: &Arc<EventFd>,
        work: impl FnMut() -> Flow + Send + 'static,
    ) -> Result<(), ActivateError> {
        let epoch = self.epoch();
        let work = self.hold(work);
        let handler_notifier = Arc::clone(notifier);
        activation
            .events
            .add(
                event_fd(notifier),
                Box::new(move || {
                    let _ = handler_notifier.read();
                    if !epoch.is_current() {
                        return Flow::Remove;
                    }
                    match work.run() {
                        Flow::Pause => {
                            let _ = handler_notifier.write(1);
                            Flow::Continue
                        }
                        flow => flow,
                    }
                }),
            )
            .map_err(ActivateError::Events)
    }

    /// Runs `work` on the I/O thread whenever `fd` (a backend: a tap, a socket) is
    /// readable, until the device is reset or `work` returns [`Flow::Remove`]; work
    /// that returns [`Flow::Pause`] (a backend waiting for the driver's buffers) is
    /// not run again until `wake` (the queue's notifier) is signalled.
    pub fn watch_pausable(
        &self,
        activation: &Activation,
        fd: BorrowedFd<'_>,
        wake: &EventFd,
        work: impl FnMut() -> Flow + Send + 'static,
    ) -> Result<(), ActivateError> {
        let epoch = self.epoch();
        let work = self.hold(work);
        self.wakes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(wake.try_clone().map_err(ActivateError::Events)?);
        activation
            .events
            .add_pausable(
                fd,
                wake,
                Box::new(move || {
                    if !epoch.is_current() {
                        return Flow::Remove;
                    }
                    if epoch.is_paused() {
                        // Stop watching `fd` (its input waits there) until the resume
                        // signals `wake`.
                        return Flow::Pause;
                    }
                    work.run()
                }),
            )
            .map_err(ActivateError::Events)
    }
}

/// A worker's loop: each notification runs a turn, until the device is reset or its
/// rings break.
fn serve_until_done(
    runner: &mut QueueRunner,
    notifier: &EventFd,
    serve: &mut impl FnMut(&GuestMemory, Result<&Chain, ChainError>) -> Served,
) {
    while runner.epoch().is_current() {
        if !notified(runner, notifier) {
            continue;
        }
        match runner.run(|| true, &mut *serve) {
            // Chains left past the turn's budget: go on at once.
            Flow::Pause => {
                let _ = notifier.write(1);
            }
            // The rings are broken (the device needs a reset) or the device was
            // reset: nothing more to serve.
            Flow::Remove => return,
            _ => {}
        }
    }
}

/// Raises a worker's panic again on the thread that runs `events`: a device bug ends
/// the VM there, as it does when the device is served on that thread, instead of
/// leaving a queue that silently stopped.
fn raise_on_loop(events: &dyn EventSources, panic: Box<dyn std::any::Any + Send>) {
    let Ok(raised) = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) else {
        return;
    };
    let mut panic = Some(panic);
    let added = events.add(
        event_fd(&raised),
        Box::new(move || match panic.take() {
            Some(panic) => std::panic::resume_unwind(panic),
            None => Flow::Remove,
        }),
    );
    if added.is_ok() {
        let _ = raised.write(1);
    }
}

/// How long a worker waits for a notification before it looks at its epoch again: a
/// worker of a device reset without a notification (a dropped transport) ends within
/// this.
const WORKER_PATIENCE: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a worker that just served polls its queue before it sleeps: a driver
/// that keeps its queue busy then finds the worker awake, without the wake-up a
/// sleeping thread costs (tens of microseconds, a 4 KiB read's worth).
const WORKER_SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// Waits for work on `runner`'s queue: polls its available index for [`WORKER_SPIN`]
/// (chains found there are served without waiting for, or consuming, their
/// notification: a later look finds the ring empty), then sleeps on `notifier` at
/// most [`WORKER_PATIENCE`] and consumes it. Whether there may be work.
fn notified(runner: &QueueRunner, notifier: &EventFd) -> bool {
    let spin = std::time::Instant::now();
    while spin.elapsed() < WORKER_SPIN {
        if runner.has_pending() {
            return true;
        }
        std::hint::spin_loop();
    }
    wait_readable(event_fd(notifier), WORKER_PATIENCE) && notifier.read().is_ok()
}

impl Drop for DeviceLifecycle {
    /// Ends the current epoch without waiting (a worker may be blocked in its
    /// backend): its sources and workers stop on their next look.
    fn drop(&mut self) {
        self.gate.end();
    }
}
