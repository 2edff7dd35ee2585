// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Serving a queue: taking the driver's descriptor chains, checking them, and putting
//! them in the used ring, with notification suppression in both directions, in turns
//! that a reset can stop ([`Turn`]).
//!
//! [`QueueServer`] serves one batch; [`QueueRunner`] adds what a device's queue needs
//! around it (guest memory, the interrupt, the fault flag and the device's epoch) and
//! is what a device runs on each notification, its own or one it watches through
//! [`DeviceLifecycle`](crate::DeviceLifecycle).

use std::sync::Arc;

use kvmkit_devices::Flow;
use virtio_queue::{Queue, QueueT};

pub use crate::chain::{Buffer, Chain, ChainError};
use crate::epoch::{Epoch, Turn};
use crate::ring::{Ring, RingError, RingMark};
use crate::{Activation, DeviceFault, GuestMemory, InterruptKind, QueueCounters, VirtioInterrupt};

/// What serving one chain came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Bytes written into the chain's device-writable buffers (the used length).
    pub written: u32,
    /// Bytes moved between guest memory and the backend, for the counters.
    pub bytes: u64,
    /// Whether the request failed (it is counted as an error).
    pub failed: bool,
    /// Whether the request goes on in the next chain (see [`Served::part`]).
    pub continues: bool,
}

impl Served {
    /// A request refused or failed with nothing written back.
    pub const FAILED: Served = Served {
        written: 0,
        bytes: 0,
        failed: true,
        continues: false,
    };

    /// A request done: `written` bytes into its writable buffers, `bytes` moved.
    pub fn done(written: u32, bytes: u64) -> Self {
        Served {
            written,
            bytes,
            failed: false,
            continues: false,
        }
    }

    /// Part of a request that goes on in the next chain (a received frame spread over
    /// mergeable buffers, `VIRTIO_NET_F_MRG_RXBUF`): `written` bytes into this chain,
    /// `bytes` moved. The chain is used, but the driver sees it only with the chain
    /// that completes the request; if the turn runs out of chains first, every chain
    /// of the request is given back unused, to be taken again (the caller starts the
    /// request over on its next turn).
    pub fn part(written: u32, bytes: u64) -> Self {
        Served {
            continues: true,
            ..Served::done(written, bytes)
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

/// How much one turn of a queue takes on before it yields to the thread's other work:
/// the chain that crosses a limit is served whole, then the turn ends (and says there
/// is more). Besides these, a turn takes at most the queue's size of chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnBudget {
    /// Bytes of requests served.
    pub bytes: u64,
    /// Descriptors walked: a refused chain counts the whole table, as its walk may
    /// have gone through it.
    pub descriptors: u64,
}

impl TurnBudget {
    /// For a queue on the I/O thread: with each device's own cap on a request (64 KiB
    /// for rng and the console, a frame for net), a turn stays around a millisecond.
    pub const IO_THREAD: TurnBudget = TurnBudget {
        bytes: TURN_BYTES,
        descriptors: 1024,
    };
    /// For a queue on a thread of its own, which waits for nothing else.
    pub const OWN_THREAD: TurnBudget = TurnBudget {
        bytes: u64::MAX,
        descriptors: u64::MAX,
    };
}

/// The bytes of [`TurnBudget::IO_THREAD`].
pub const TURN_BYTES: u64 = 256 << 10;

/// A queue a device serves, with its counters.
#[derive(Debug)]
pub struct QueueServer {
    queue: Queue,
    counters: Arc<QueueCounters>,
    /// What a turn takes on before it yields.
    budget: TurnBudget,
    /// The chain being served, its buffers' allocation reused chain after chain.
    chain: Chain,
}

/// The driver broke the queue itself (its rings): the device needs a reset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokenQueue {
    /// virtio-queue refused an access to the rings.
    #[error("the queue's rings are broken")]
    Queue(#[from] virtio_queue::Error),
    /// The rings are out of RAM, or the available index jumped.
    #[error("the queue's rings are broken")]
    Ring(#[from] RingError),
}

impl QueueServer {
    /// Serves `queue`, counting into `counters`.
    pub fn new(queue: Queue, counters: Arc<QueueCounters>) -> Self {
        QueueServer {
            queue,
            counters,
            budget: TurnBudget::IO_THREAD,
            chain: Chain::default(),
        }
    }

    /// This server with `budget` per turn instead of [`TurnBudget::IO_THREAD`].
    pub fn with_budget(mut self, budget: TurnBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Takes every chain the driver made available and hands it to `serve`, putting
    /// each in the used ring with the length `serve` wrote. A malformed chain is put
    /// in the used ring with nothing written and counted as an error. At most the
    /// queue's size of chains, and no more chains once the server's [`TurnBudget`] is
    /// spent, are taken per call, so a driver that keeps adding (or posts large
    /// requests) cannot keep the thread here: [`Progress::more`] then says to call
    /// again.
    ///
    /// The batch stops as soon as `turn` is no longer current (the device is being
    /// reset): the chain being served is not published, nor anything after it. A
    /// request served in parts ([`Served::part`]) is published whole, with its last
    /// chain, or not at all: one the queue has too few chains for is given back, and
    /// the call returns (to be started over on the next).
    pub fn serve(
        &mut self,
        turn: &Turn<'_>,
        memory: &GuestMemory,
        serve: impl FnMut(Result<&Chain, ChainError>) -> Served,
    ) -> Result<Progress, BrokenQueue> {
        self.serve_while(turn, memory, || true, serve)
    }

    /// As [`serve`](Self::serve), taking a chain only while `has_work` says there is
    /// something to put in it (a receive queue's buffers wait for input).
    pub fn serve_while(
        &mut self,
        turn: &Turn<'_>,
        memory: &GuestMemory,
        mut has_work: impl FnMut() -> bool,
        mut serve: impl FnMut(Result<&Chain, ChainError>) -> Served,
    ) -> Result<Progress, BrokenQueue> {
        const STOPPED: Progress = Progress {
            interrupt: false,
            more: false,
        };
        let budget = self.queue.size();
        let mut taken = 0u16;
        let mut moved = 0u64;
        let mut walked = 0u64;
        let mut ring = Ring::new(&self.queue, memory)?;
        loop {
            if !turn.is_current() {
                return Ok(STOPPED);
            }
            self.queue.disable_notification(memory)?;
            let mut pending = ring.pending()?;
            // Where the request being served in parts began, and its bytes so far.
            let mut open: Option<(RingMark, u64)> = None;
            while taken < budget
                && pending > 0
                && !turn.is_paused()
                && (open.is_some() || (!self.spent(moved, walked) && has_work()))
            {
                let mark = ring.mark();
                let (head, parsed) = ring.take(&mut self.chain);
                walked += match parsed {
                    Ok(()) => (self.chain.readable.len() + self.chain.writable.len()) as u64,
                    Err(_) => u64::from(budget),
                };
                pending -= 1;
                taken += 1;
                let served = serve(parsed.map(|()| &self.chain));
                if !turn.is_current() {
                    return Ok(STOPPED);
                }
                moved += served.bytes;
                ring.add_used(head, served.written)?;
                if served.continues && !served.failed {
                    let (_, bytes) = open.get_or_insert((mark, 0));
                    *bytes += served.bytes;
                    continue;
                }
                ring.publish()?;
                let request_bytes = open.take().map_or(0, |(_, bytes)| bytes) + served.bytes;
                if served.failed {
                    self.counters.add_error();
                } else {
                    self.counters.add_request(request_bytes);
                }
            }
            if let Some((start, _)) = open {
                // Too few chains for the request: give back those it took, and stop
                // until the driver adds more. It is asked to notify once it goes past
                // the chains seen (`avail_event` there, not where the request began,
                // which it has passed already), and `more` says whether it has.
                ring.finish(&mut self.queue);
                let more = self.queue.enable_notification(memory)?;
                ring.rewind(start);
                ring.finish(&mut self.queue);
                return Ok(Progress {
                    interrupt: ring.needs_interrupt()?,
                    more,
                });
            }
            ring.finish(&mut self.queue);
            let more = self.queue.enable_notification(memory)?;
            // Stop when the ring is empty, a budget is spent, the device is paused (the
            // chains left wait for the resume), or there is nothing to put in what is
            // left.
            let spent = taken >= budget || self.spent(moved, walked);
            let paused = turn.is_paused();
            if !more || spent || paused || !has_work() {
                return Ok(Progress {
                    interrupt: ring.needs_interrupt()?,
                    more: more && (spent || paused),
                });
            }
        }
    }

    /// Whether the driver has made chains available that this server has not taken:
    /// one load of the available index from guest memory, no system call. Rings that
    /// cannot be read count as work, so that the next turn finds them broken.
    pub fn has_pending(&self, memory: &GuestMemory) -> bool {
        self.queue
            .avail_idx(memory, std::sync::atomic::Ordering::Acquire)
            .map_or(true, |avail| avail.0 != self.queue.next_avail())
    }

    fn spent(&self, moved: u64, walked: u64) -> bool {
        moved >= self.budget.bytes || walked >= self.budget.descriptors
    }

    /// The queue's counters.
    pub fn counters(&self) -> &Arc<QueueCounters> {
        &self.counters
    }
}

/// A queue of an active device with what serving it touches: guest memory, the
/// device's interrupt and fault flag, and the epoch that a reset ends. What a device
/// runs on each notification of the queue (or when it has input for it).
pub struct QueueRunner {
    server: QueueServer,
    memory: Arc<GuestMemory>,
    interrupt: Arc<dyn VirtioInterrupt>,
    fault: Arc<DeviceFault>,
    epoch: Epoch,
}

impl std::fmt::Debug for QueueRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueRunner")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl QueueRunner {
    /// Serves `queue` of the device `activation` started, counting into `counters`,
    /// for as long as `epoch` lasts.
    pub fn new(
        activation: &Activation,
        queue: Queue,
        counters: Arc<QueueCounters>,
        epoch: Epoch,
    ) -> Self {
        QueueRunner {
            server: QueueServer::new(queue, counters),
            memory: Arc::clone(&activation.memory),
            interrupt: Arc::clone(&activation.interrupt),
            fault: Arc::clone(&activation.fault),
            epoch,
        }
    }

    /// Serves one turn (see [`QueueServer::serve_while`]) and raises what follows:
    /// the used-buffer interrupt if the driver wants it, `Flow::Pause` if chains are
    /// left for later, the fault and a config interrupt if the rings are broken
    /// (`Flow::Remove`). A queue of a device reset since its epoch began touches
    /// nothing and returns `Flow::Remove`; one of a paused device touches nothing (or
    /// stops after the chain in flight) and returns `Flow::Continue`.
    pub fn run(
        &mut self,
        has_work: impl FnMut() -> bool,
        mut serve: impl FnMut(&GuestMemory, Result<&Chain, ChainError>) -> Served,
    ) -> Flow {
        let QueueRunner {
            server,
            memory,
            interrupt,
            fault,
            epoch,
        } = self;
        let Some(turn) = epoch.enter() else {
            return Flow::Remove;
        };
        if turn.is_paused() {
            // Touch nothing: the resume signals the queue again.
            return Flow::Continue;
        }
        let result = server.serve_while(&turn, memory, has_work, |chain| serve(memory, chain));
        if !turn.is_current() {
            return Flow::Remove;
        }
        match result {
            Ok(progress) => {
                if progress.interrupt {
                    let _ = interrupt.signal(InterruptKind::UsedBuffer);
                }
                if turn.is_paused() {
                    Flow::Continue
                } else if progress.more {
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

    /// This runner with `budget` per turn (see [`QueueServer::with_budget`]).
    pub fn with_budget(mut self, budget: TurnBudget) -> Self {
        self.server = self.server.with_budget(budget);
        self
    }

    /// Whether the driver has made chains available that are not yet served (see
    /// [`QueueServer::has_pending`]): what a thread polling the queue looks at. It
    /// looks within a turn of its epoch, so a reset that has returned is never
    /// followed by a look at the old rings; after one, and while the device is paused,
    /// it says no.
    pub fn has_pending(&self) -> bool {
        self.epoch
            .enter()
            .is_some_and(|turn| !turn.is_paused() && self.server.has_pending(&self.memory))
    }

    /// The epoch it serves in.
    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epoch::Gate;
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    #[test]
    fn a_turn_stops_taking_chains_once_its_bytes_are_spent_and_says_there_is_more() {
        let memory = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mock = MockSplitQueue::create(&memory, GuestAddress(0x8000), 16);
        let chain = RawDescriptor::from(Descriptor::new(
            0x1_0000,
            64 << 10,
            u16::try_from(VRING_DESC_F_WRITE).unwrap(),
            0,
        ));
        mock.desc_table().store(0, chain).unwrap();
        for slot in 0..16 {
            mock.avail().ring().ref_at(slot).unwrap().store(0);
        }
        mock.avail().idx().store(16);
        let mut server = QueueServer::new(mock.create_queue().unwrap(), Arc::default());
        let gate = Arc::new(Gate::default());
        let epoch = gate.epoch();
        let turn = epoch.enter().unwrap();
        let mut served = 0u64;

        let progress = server
            .serve(&turn, &memory, |_| {
                served += 1;
                Served::done(64 << 10, 64 << 10)
            })
            .unwrap();

        assert_eq!(served, TURN_BYTES / (64 << 10));
        assert!(progress.more, "the turn did not say chains were left");
    }

    #[test]
    fn a_polled_queue_has_work_until_its_chains_are_served() {
        let memory = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mock = MockSplitQueue::create(&memory, GuestAddress(0x8000), 16);
        let chain = RawDescriptor::from(Descriptor::new(0x1_0000, 512, 0, 0));
        mock.desc_table().store(0, chain).unwrap();
        mock.avail().ring().ref_at(0).unwrap().store(0);
        let mut server = QueueServer::new(mock.create_queue().unwrap(), Arc::default());
        let gate = Arc::new(Gate::default());
        let epoch = gate.epoch();
        let idle = server.has_pending(&memory);

        mock.avail().idx().store(1);
        let posted = server.has_pending(&memory);
        server
            .serve(&epoch.enter().unwrap(), &memory, |_| Served::done(0, 512))
            .unwrap();
        let served = server.has_pending(&memory);

        assert!(!idle, "an empty ring looked busy");
        assert!(posted, "a posted chain went unseen");
        assert!(!served, "a served chain still looked pending");
    }

    #[test]
    fn a_runner_polled_after_a_reset_does_not_look_at_the_old_rings() {
        let memory = Arc::new(GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
        let mock = MockSplitQueue::create(&*memory, GuestAddress(0x8000), 16);
        mock.avail().idx().store(1);
        let gate = Arc::new(Gate::default());
        let runner = QueueRunner {
            server: QueueServer::new(mock.create_queue().unwrap(), Arc::default()),
            memory: Arc::clone(&memory),
            interrupt: Arc::new(crate::EventFdVirtioInterrupt::new().unwrap()),
            fault: Arc::default(),
            epoch: gate.epoch(),
        };
        let before = runner.has_pending();

        gate.revoke();

        assert!(before, "the posted chain went unseen");
        assert!(!runner.has_pending(), "a reset runner still saw work");
    }
}
