// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Serving a queue: taking the driver's descriptor chains, checking them, and putting
//! them in the used ring, with notification suppression in both directions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kvmkit_devices::{event_fd, Flow};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

pub use crate::chain::{Buffer, Chain, ChainError};
use crate::ring::{Ring, RingError};
use crate::{ActivateError, VirtioInterrupt};
use crate::{Activation, ActiveQueue, DeviceFault, GuestMemory, InterruptKind, QueueCounters};

/// What serving one chain came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Bytes written into the chain's device-writable buffers (the used length).
    pub written: u32,
    /// Bytes moved between guest memory and the backend, for the counters.
    pub bytes: u64,
    /// Whether the request failed (it is counted as an error).
    pub failed: bool,
}

impl Served {
    /// A request refused or failed with nothing written back.
    pub const FAILED: Served = Served {
        written: 0,
        bytes: 0,
        failed: true,
    };

    /// A request done: `written` bytes into its writable buffers, `bytes` moved.
    pub fn done(written: u32, bytes: u64) -> Self {
        Served {
            written,
            bytes,
            failed: false,
        }
    }
}

/// What one call of [`QueueServer::serve`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The driver wants an interrupt for the chains just used.
    pub interrupt: bool,
    /// Chains are still available: serve again.
    pub more: bool,
}

/// A queue a device serves, with its counters.
#[derive(Debug)]
pub struct QueueServer {
    queue: Queue,
    counters: Arc<QueueCounters>,
    /// The chain being served, its buffers' allocation reused chain after chain.
    chain: Chain,
}

/// The driver broke the queue itself (its rings): the device needs a reset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokenQueue {
    /// virtio-queue refused an access to the rings.
    #[error("the queue's rings are broken: {0}")]
    Queue(#[from] virtio_queue::Error),
    /// The rings are out of RAM, or the available index jumped.
    #[error("the queue's rings are broken: {0}")]
    Ring(#[from] RingError),
}

impl QueueServer {
    /// Serves `queue`, counting into `counters`.
    pub fn new(queue: Queue, counters: Arc<QueueCounters>) -> Self {
        QueueServer {
            queue,
            counters,
            chain: Chain::default(),
        }
    }

    /// Takes every chain the driver made available and hands it to `serve`, putting
    /// each in the used ring with the length `serve` wrote. A malformed chain is put
    /// in the used ring with nothing written and counted as an error. At most the
    /// queue's size of chains is taken per call, so a driver that keeps adding cannot
    /// keep the I/O thread here: [`Progress::more`] then says to call again.
    pub fn serve(
        &mut self,
        memory: &GuestMemory,
        serve: impl FnMut(Result<&Chain, ChainError>) -> Served,
    ) -> Result<Progress, BrokenQueue> {
        self.serve_while(memory, || true, serve)
    }

    /// As [`serve`](Self::serve), taking a chain only while `has_work` says there is
    /// something to put in it (a receive queue's buffers wait for input).
    pub fn serve_while(
        &mut self,
        memory: &GuestMemory,
        mut has_work: impl FnMut() -> bool,
        mut serve: impl FnMut(Result<&Chain, ChainError>) -> Served,
    ) -> Result<Progress, BrokenQueue> {
        let budget = self.queue.size();
        let mut taken = 0u16;
        let mut ring = Ring::new(&self.queue, memory)?;
        loop {
            self.queue.disable_notification(memory)?;
            let mut pending = ring.pending()?;
            while taken < budget && pending > 0 && has_work() {
                let (head, parsed) = ring.take(&mut self.chain);
                pending -= 1;
                taken += 1;
                let served = serve(parsed.map(|()| &self.chain));
                if served.failed {
                    self.counters.add_error();
                } else {
                    self.counters.add_request(served.bytes);
                }
                ring.put_used(head, served.written)?;
            }
            ring.finish(&mut self.queue);
            let more = self.queue.enable_notification(memory)?;
            // Stop when the ring is empty, the budget is spent, or there is nothing to
            // put in what is left.
            if !more || taken >= budget || !has_work() {
                return Ok(Progress {
                    interrupt: ring.needs_interrupt()?,
                    more: more && taken >= budget,
                });
            }
        }
    }

    /// The queue's counters.
    pub fn counters(&self) -> &Arc<QueueCounters> {
        &self.counters
    }
}

/// Serves `active` on the I/O thread: each notification of the queue runs the chains
/// the driver made available through `serve`, then interrupts the driver if it wants.
/// A queue whose rings the driver broke marks the device faulted (it then needs a
/// reset) and is watched no more; so is a queue of a device reset since (its
/// `generation` moved on).
pub fn serve_on_notify(
    activation: &Activation,
    active: ActiveQueue,
    counters: Arc<QueueCounters>,
    generation: Arc<AtomicU64>,
    serve: impl FnMut(&GuestMemory, Result<&Chain, ChainError>) -> Served + Send + 'static,
) -> Result<(), ActivateError> {
    let memory = Arc::clone(&activation.memory);
    let interrupt = Arc::clone(&activation.interrupt);
    let fault = Arc::clone(&activation.fault);
    let mut server = QueueServer::new(active.queue, counters);
    let mut serve = serve;
    watch_notifier(activation, &active.notifier, generation, move || {
        run_queue(
            &mut server,
            &memory,
            &*interrupt,
            &fault,
            || true,
            |chain| serve(&memory, chain),
        )
    })
}

/// Runs `work` on the I/O thread each time `notifier` (a queue's notification) is
/// signalled, until the device is reset (`generation` moves on) or `work` returns
/// [`Flow::Remove`]. Work that returns [`Flow::Pause`] (chains left when its budget ran
/// out) is run again after the loop's other sources.
pub(crate) fn watch_notifier(
    activation: &Activation,
    notifier: &Arc<EventFd>,
    generation: Arc<AtomicU64>,
    mut work: impl FnMut() -> Flow + Send + 'static,
) -> Result<(), ActivateError> {
    let born = generation.load(Ordering::Acquire);
    let handler_notifier = Arc::clone(notifier);
    activation
        .events
        .add(event_fd(notifier), move || {
            let _ = handler_notifier.read();
            if generation.load(Ordering::Acquire) != born {
                return Flow::Remove;
            }
            match work() {
                Flow::Pause => {
                    let _ = handler_notifier.write(1);
                    Flow::Continue
                }
                flow => flow,
            }
        })
        .map_err(ActivateError::Events)
}

/// Serves `server` once (see [`QueueServer::serve_while`]) and raises what follows: the
/// used-buffer interrupt if the driver wants it, the fault and a config interrupt if
/// the rings are broken (`Flow::Remove`), `Flow::Pause` if chains are left for later.
pub(crate) fn run_queue(
    server: &mut QueueServer,
    memory: &GuestMemory,
    interrupt: &dyn VirtioInterrupt,
    fault: &DeviceFault,
    has_work: impl FnMut() -> bool,
    serve: impl FnMut(Result<&Chain, ChainError>) -> Served,
) -> Flow {
    match server.serve_while(memory, has_work, serve) {
        Ok(progress) => {
            if progress.interrupt {
                let _ = interrupt.signal(InterruptKind::UsedBuffer);
            }
            if progress.more {
                Flow::Pause
            } else {
                Flow::Continue
            }
        }
        Err(_) => {
            server.counters().add_error();
            fault.set();
            let _ = interrupt.signal(InterruptKind::ConfigChange);
            Flow::Remove
        }
    }
}
