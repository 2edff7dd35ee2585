// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Serving a queue: taking the driver's descriptor chains, checking them, and putting
//! them in the used ring, with notification suppression in both directions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kvmkit_devices::{event_fd, Flow};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::Permissions;
use vm_memory::{GuestAddress, GuestMemoryBackend as _, GuestMemoryRegion as _};
use vmm_sys_util::eventfd::EventFd;

use crate::ring::{Ring, RingError};
use crate::{ActivateError, VirtioInterrupt};
use crate::{Activation, ActiveQueue, DeviceFault, GuestMemory, InterruptKind, QueueCounters};

/// One buffer of a descriptor chain, checked to lie in guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Guest-physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// A descriptor chain split into what the device reads and what it writes, each
/// buffer checked to lie wholly inside guest RAM.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The device-readable buffers, in order.
    pub readable: Vec<Buffer>,
    /// The device-writable buffers, in order.
    pub writable: Vec<Buffer>,
}

/// Why a descriptor chain is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The chain loops, or is longer than its table, or a descriptor or indirect table
    /// could not be read (out of RAM, misaligned, nested), or its lengths add up past
    /// 2^32 bytes: virtio-queue stops it early, so it ends with a descriptor that still
    /// points to a next one (or has none at all).
    #[error("the descriptor chain is cut short (a loop, an overlong chain or a bad table)")]
    Truncated,
    /// A buffer lies (partly) outside guest RAM, or wraps the address space.
    #[error("a buffer at {addr:#x} ({len} bytes) is not in guest RAM")]
    OutOfMemory {
        /// Its address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A device-readable buffer follows a device-writable one.
    #[error("a device-readable buffer follows a device-writable one")]
    ReadableAfterWritable,
}

/// Checks `chain` and splits it into readable and writable buffers.
pub fn parse_chain(
    memory: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
) -> Result<Chain, ChainError> {
    let mut parsed = Chain::default();
    parse_chain_into(memory, chain, &mut parsed)?;
    Ok(parsed)
}

/// As [`parse_chain`], into `parsed` (cleared first), reusing its allocations.
pub fn parse_chain_into(
    memory: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    parsed: &mut Chain,
) -> Result<(), ChainError> {
    parsed.clear();
    let mut last: Option<Descriptor> = None;
    for descriptor in chain {
        let buffer = Buffer {
            addr: descriptor.addr(),
            len: descriptor.len(),
        };
        parsed.push(memory, buffer, descriptor.is_write_only())?;
        last = Some(descriptor);
    }
    match last {
        Some(descriptor) if !descriptor.has_next() => Ok(()),
        _ => Err(ChainError::Truncated),
    }
}

impl Chain {
    /// Empties the chain, keeping its allocations.
    pub(crate) fn clear(&mut self) {
        self.readable.clear();
        self.writable.clear();
    }

    /// Appends the next buffer of a chain once it is checked: in guest RAM, and not
    /// device-readable after a device-writable one.
    pub(crate) fn push(
        &mut self,
        memory: &GuestMemory,
        buffer: Buffer,
        writable: bool,
    ) -> Result<(), ChainError> {
        if !buffer_in_ram(memory, buffer, writable) {
            return Err(ChainError::OutOfMemory {
                addr: buffer.addr.0,
                len: buffer.len,
            });
        }
        if writable {
            self.writable.push(buffer);
        } else if self.writable.is_empty() {
            self.readable.push(buffer);
        } else {
            return Err(ChainError::ReadableAfterWritable);
        }
        Ok(())
    }
}

/// Whether `buffer` lies in guest RAM (an empty one always does), for the device to
/// write (`writable`) or read.
fn buffer_in_ram(memory: &GuestMemory, buffer: Buffer, writable: bool) -> bool {
    let permission = if writable {
        Permissions::Write
    } else {
        Permissions::Read
    };
    buffer.addr.0.checked_add(u64::from(buffer.len)).is_some()
        && (buffer.len == 0 || in_ram(memory, buffer, permission))
}

/// Whether `buffer` lies in guest RAM: within one region (the common case, checked
/// with one lookup), or across adjacent ones.
fn in_ram(memory: &GuestMemory, buffer: Buffer, permission: Permissions) -> bool {
    if let Some(region) = memory.find_region(buffer.addr) {
        let offset = buffer.addr.0 - region.start_addr().0;
        if offset + u64::from(buffer.len) <= region.len() {
            return true;
        }
    }
    vm_memory::GuestMemory::check_range(memory, buffer.addr, buffer.len as usize, permission)
}

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use virtio_bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::QueueOwnedT;

    pub(crate) const RAM: u64 = 0x10_0000;

    pub(crate) fn memory() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap()
    }

    pub(crate) fn desc(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags as u16, next))
    }

    /// Puts `descs` in a fresh 16-entry queue at 0x8000 and offers chain head 0.
    fn first_chain(memory: &GuestMemory, descs: &[RawDescriptor]) -> Result<Chain, ChainError> {
        let mock = MockSplitQueue::create(memory, GuestAddress(0x8000), 16);
        for (index, descriptor) in descs.iter().enumerate() {
            mock.desc_table().store(index as u16, *descriptor).unwrap();
        }
        mock.avail().ring().ref_at(0).unwrap().store(0);
        mock.avail().idx().store(1);
        let mut queue: Queue = mock.create_queue().unwrap();
        let chain = queue.iter(memory).unwrap().next().unwrap();
        parse_chain(memory, chain)
    }

    #[test]
    fn a_well_formed_chain_splits_into_readable_then_writable_buffers() {
        let memory = memory();

        let chain = first_chain(
            &memory,
            &[
                desc(0x1000, 16, VRING_DESC_F_NEXT, 1),
                desc(0x2000, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2),
                desc(0x3000, 1, VRING_DESC_F_WRITE, 0),
            ],
        )
        .unwrap();

        assert_eq!(chain.readable.len(), 1);
        assert_eq!(chain.writable.len(), 2);
        assert_eq!(chain.writable[1].len, 1);
    }

    #[test]
    fn a_descriptor_loop_is_refused_as_truncated() {
        let memory = memory();

        let looped = first_chain(
            &memory,
            &[
                desc(0x1000, 16, VRING_DESC_F_NEXT, 1),
                desc(0x2000, 16, VRING_DESC_F_NEXT, 0),
            ],
        );

        assert_eq!(looped, Err(ChainError::Truncated));
    }

    #[test]
    fn a_next_index_past_the_table_is_refused_as_truncated() {
        let memory = memory();

        let result = first_chain(&memory, &[desc(0x1000, 16, VRING_DESC_F_NEXT, 40)]);

        assert_eq!(result, Err(ChainError::Truncated));
    }

    #[test]
    fn buffers_outside_ram_or_wrapping_are_refused() {
        let memory = memory();

        let outside = first_chain(&memory, &[desc(RAM - 8, 16, 0, 0)]);
        let wrapping = first_chain(&memory, &[desc(u64::MAX - 4, 16, 0, 0)]);

        assert!(matches!(outside, Err(ChainError::OutOfMemory { .. })));
        assert!(matches!(wrapping, Err(ChainError::OutOfMemory { .. })));
    }

    #[test]
    fn a_readable_buffer_after_a_writable_one_is_refused() {
        let memory = memory();

        let result = first_chain(
            &memory,
            &[
                desc(0x1000, 16, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1),
                desc(0x2000, 16, 0, 0),
            ],
        );

        assert_eq!(result, Err(ChainError::ReadableAfterWritable));
    }

    #[test]
    fn nested_misaligned_and_out_of_ram_indirect_tables_are_refused() {
        let memory = memory();
        // An indirect table at 0x4000 whose only entry is itself indirect.
        vm_memory::Bytes::write_obj(
            &memory,
            desc(0x4000, 16, VRING_DESC_F_INDIRECT, 0),
            GuestAddress(0x4000),
        )
        .unwrap();

        let nested = first_chain(&memory, &[desc(0x4000, 16, VRING_DESC_F_INDIRECT, 0)]);
        let misaligned = first_chain(&memory, &[desc(0x4000, 15, VRING_DESC_F_INDIRECT, 0)]);
        let outside = first_chain(&memory, &[desc(RAM + 0x1000, 16, VRING_DESC_F_INDIRECT, 0)]);

        for result in [nested, misaligned, outside] {
            assert_eq!(result, Err(ChainError::Truncated));
        }
    }
}
