// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The device's side of a split virtqueue, read and written through the three ring
//! areas as slices of guest memory found once per batch of requests.
//!
//! virtio-queue's [`Queue`] keeps the queue's configuration and indices and does the
//! notification suppression; taking chains and using them goes through here, because
//! going through `GuestMemory` for each ring entry, descriptor and index (a region
//! lookup and a generic copy each, nine times a request) cost a 4 KiB read from the
//! page cache a third again of what the `pread` itself costs (`benches/block.rs`).
//! The slices are bounds-checked, and the writes through them mark the pages dirty as
//! any other write to guest memory does.

use std::sync::atomic::{fence, Ordering};

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend as _, VolatileSlice};

use crate::chain::{Buffer, Chain, ChainError};
use crate::GuestMemory;

/// Bytes of one descriptor in the table.
const DESCRIPTOR_SIZE: usize = 16;
/// Bytes of one used-ring element (id, len).
const USED_ELEMENT_SIZE: usize = 8;
/// Offset of the rings' entries after their flags and index.
const RING_HEADER: usize = 4;

type Slice<'m> = VolatileSlice<'m, vm_memory::bitmap::BS<'m, vm_memory::bitmap::AtomicBitmap>>;

/// The driver broke the rings themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// A ring area is not in guest RAM (within one memory region).
    #[error("a ring of the queue is not in guest RAM")]
    NotInRam,
    /// The available index moved on by more than the queue holds.
    #[error("the available index moved {0} entries ahead, more than the queue holds")]
    AvailIndexJump(u16),
}

/// A position in the rings, to go back to (see [`Ring::rewind`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingMark {
    next_avail: u16,
    next_used: u16,
}

/// The descriptor table, available ring and used ring of a queue, with the indices
/// the device keeps, for one batch of requests. [`Ring::finish`] hands the indices
/// back to the [`Queue`].
pub(crate) struct Ring<'m> {
    memory: &'m GuestMemory,
    table: Slice<'m>,
    avail: Slice<'m>,
    used: Slice<'m>,
    size: u16,
    next_avail: u16,
    next_used: u16,
    /// `next_used` when the batch began: what the driver was last told about.
    first_used: u16,
    event_idx: bool,
}

impl<'m> Ring<'m> {
    /// The rings of `queue` (ready, so its addresses were checked to lie in RAM).
    pub(crate) fn new(queue: &Queue, memory: &'m GuestMemory) -> Result<Self, RingError> {
        let size = queue.size();
        let entries = usize::from(size);
        let area = |addr: u64, len: usize| {
            memory
                .get_slice(GuestAddress(addr), len)
                .map_err(|_| RingError::NotInRam)
        };
        Ok(Ring {
            memory,
            table: area(queue.desc_table(), DESCRIPTOR_SIZE * entries)?,
            // flags, idx, ring[size], used_event
            avail: area(queue.avail_ring(), RING_HEADER + 2 * entries + 2)?,
            // flags, idx, ring[size], avail_event
            used: area(
                queue.used_ring(),
                RING_HEADER + USED_ELEMENT_SIZE * entries + 2,
            )?,
            size,
            next_avail: queue.next_avail(),
            next_used: queue.next_used(),
            first_used: queue.next_used(),
            event_idx: queue.event_idx_enabled(),
        })
    }

    /// How many chains the driver has made available and the device not yet taken.
    pub(crate) fn pending(&self) -> Result<u16, RingError> {
        let avail_idx: u16 = self
            .avail
            .load(2, Ordering::Acquire)
            .map_err(|_| RingError::NotInRam)?;
        let pending = avail_idx.wrapping_sub(self.next_avail);
        if pending > self.size {
            return Err(RingError::AvailIndexJump(pending));
        }
        Ok(pending)
    }

    /// Takes the next available chain (there must be one: see [`pending`](Self::pending))
    /// into `chain`, checked; returns its head index, to use it with.
    pub(crate) fn take(&mut self, chain: &mut Chain) -> (u16, Result<(), ChainError>) {
        let slot = RING_HEADER + 2 * usize::from(self.next_avail % self.size);
        self.next_avail = self.next_avail.wrapping_add(1);
        let head: u16 = self.avail.read_obj(slot).unwrap_or(u16::MAX);
        (head, self.walk(head, chain))
    }

    /// Follows the chain from `head` through the table: every buffer in RAM, readable
    /// before writable, no loop (at most the table's size of descriptors), lengths
    /// within 2^32 bytes in all. Indirect descriptors are refused: no device here
    /// offers `VIRTIO_RING_F_INDIRECT_DESC`, and a driver must not use them without it.
    fn walk(&self, head: u16, chain: &mut Chain) -> Result<(), ChainError> {
        chain.clear();
        let mut index = head;
        let mut total = 0u64;
        for _ in 0..self.size {
            if index >= self.size {
                return Err(ChainError::Truncated);
            }
            let at = DESCRIPTOR_SIZE * usize::from(index);
            let mut raw = [0u8; DESCRIPTOR_SIZE];
            self.table
                .read_slice(&mut raw, at)
                .map_err(|_| ChainError::Truncated)?;
            let addr = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes"));
            let flags = u32::from(u16::from_le_bytes([raw[12], raw[13]]));
            let next = u16::from_le_bytes([raw[14], raw[15]]);
            if flags & VRING_DESC_F_INDIRECT != 0 {
                return Err(ChainError::Truncated);
            }
            total += u64::from(len);
            if total > u64::from(u32::MAX) {
                return Err(ChainError::Truncated);
            }
            let buffer = Buffer {
                addr: GuestAddress(addr),
                len,
            };
            chain.push(self.memory, buffer, flags & VRING_DESC_F_WRITE != 0)?;
            if flags & VRING_DESC_F_NEXT == 0 {
                return Ok(());
            }
            index = next;
        }
        // More descriptors than the table holds: a loop.
        Err(ChainError::Truncated)
    }

    /// Writes chain `head`'s used element, `written` bytes written into it, without
    /// publishing it: the driver sees it once [`publish`](Self::publish) moves the used
    /// index past it, with the chains of the same request.
    pub(crate) fn add_used(&mut self, head: u16, written: u32) -> Result<(), RingError> {
        let slot = RING_HEADER + USED_ELEMENT_SIZE * usize::from(self.next_used % self.size);
        let mut element = [0u8; USED_ELEMENT_SIZE];
        element[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        element[4..].copy_from_slice(&written.to_le_bytes());
        self.used
            .write_slice(&element, slot)
            .map_err(|_| RingError::NotInRam)?;
        self.next_used = self.next_used.wrapping_add(1);
        Ok(())
    }

    /// Moves the used index past every element added.
    pub(crate) fn publish(&mut self) -> Result<(), RingError> {
        // Release: the elements (and the buffers' contents) before the index.
        self.used
            .store(self.next_used, 2, Ordering::Release)
            .map_err(|_| RingError::NotInRam)
    }

    /// Where the ring stands: what [`rewind`](Self::rewind) goes back to.
    pub(crate) fn mark(&self) -> RingMark {
        RingMark {
            next_avail: self.next_avail,
            next_used: self.next_used,
        }
    }

    /// Gives back the chains taken since `mark`, whose used elements were added but
    /// not published: they are the driver's available chains again, to be taken anew.
    pub(crate) fn rewind(&mut self, mark: RingMark) {
        self.next_avail = mark.next_avail;
        self.next_used = mark.next_used;
    }

    /// Whether the driver wants an interrupt for the chains used in this batch: with
    /// `VIRTIO_RING_F_EVENT_IDX`, when its `used_event` lies among them; without, always.
    pub(crate) fn needs_interrupt(&self) -> Result<bool, RingError> {
        if self.next_used == self.first_used {
            return Ok(false);
        }
        if !self.event_idx {
            return Ok(true);
        }
        // The used index before reading where the driver wants to be told.
        fence(Ordering::SeqCst);
        let used_event: u16 = self
            .avail
            .load(RING_HEADER + 2 * usize::from(self.size), Ordering::Relaxed)
            .map_err(|_| RingError::NotInRam)?;
        let new = self.next_used;
        Ok(new.wrapping_sub(used_event).wrapping_sub(1) < new.wrapping_sub(self.first_used))
    }

    /// Hands the indices back to `queue` (for its notification suppression and the
    /// next batch).
    pub(crate) fn finish(&self, queue: &mut Queue) {
        queue.set_next_avail(self.next_avail);
        queue.set_next_used(self.next_used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;

    const RAM: u64 = RAM_BYTES as u64;
    const RAM_BYTES: usize = 0x10_0000;

    fn memory() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), RAM_BYTES)]).unwrap()
    }

    fn desc(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
        let flags = u16::try_from(flags).expect("descriptor flags are 16 bits");
        RawDescriptor::from(Descriptor::new(addr, len, flags, next))
    }

    /// Puts `descs` in a fresh 16-entry queue at 0x8000, offers chain head 0, and
    /// walks it as a device does.
    fn first_chain(memory: &GuestMemory, descs: &[RawDescriptor]) -> Result<Chain, ChainError> {
        let mock = MockSplitQueue::create(memory, GuestAddress(0x8000), 16);
        for (index, descriptor) in (0u16..).zip(descs) {
            mock.desc_table().store(index, *descriptor).unwrap();
        }
        mock.avail().ring().ref_at(0).unwrap().store(0);
        mock.avail().idx().store(1);
        let queue: Queue = mock.create_queue().unwrap();
        let mut ring = Ring::new(&queue, memory).unwrap();
        assert_eq!(ring.pending(), Ok(1));
        let mut chain = Chain::default();
        let (head, result) = ring.take(&mut chain);
        assert_eq!(head, 0);
        result.map(|()| chain)
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
    fn lengths_adding_up_past_4_gib_are_refused() {
        // 3 GiB more at 4 GiB (mapped, never touched), for two 2 GiB buffers in RAM.
        let high = 1u64 << 32;
        let memory = GuestMemory::from_ranges(&[
            (GuestAddress(0), RAM_BYTES),
            (GuestAddress(high), 3 << 30),
        ])
        .unwrap();

        let result = first_chain(
            &memory,
            &[
                desc(high, 1 << 31, VRING_DESC_F_NEXT, 1),
                desc(high + (1 << 31), 1 << 31, 0, 0),
            ],
        );

        assert_eq!(result, Err(ChainError::Truncated));
    }

    #[test]
    fn indirect_tables_well_formed_or_not_are_refused_without_the_feature() {
        let memory = memory();
        // A well-formed indirect table at 0x4000 holding one readable buffer.
        Bytes::write_obj(&memory, desc(0x1000, 16, 0, 0), GuestAddress(0x4000)).unwrap();

        let well_formed = first_chain(&memory, &[desc(0x4000, 16, VRING_DESC_F_INDIRECT, 0)]);
        let misaligned = first_chain(&memory, &[desc(0x4000, 15, VRING_DESC_F_INDIRECT, 0)]);
        let outside = first_chain(&memory, &[desc(RAM + 0x1000, 16, VRING_DESC_F_INDIRECT, 0)]);
        let after_a_buffer = first_chain(
            &memory,
            &[
                desc(0x1000, 16, VRING_DESC_F_NEXT, 1),
                desc(0x4000, 16, VRING_DESC_F_INDIRECT, 0),
            ],
        );

        for result in [well_formed, misaligned, outside, after_a_buffer] {
            assert_eq!(result, Err(ChainError::Truncated));
        }
    }

    #[test]
    fn an_available_index_past_the_queue_size_is_a_broken_ring() {
        let memory = memory();
        let mock = MockSplitQueue::create(&memory, GuestAddress(0x8000), 16);
        mock.avail().idx().store(17);
        let queue: Queue = mock.create_queue().unwrap();

        let ring = Ring::new(&queue, &memory).unwrap();

        assert_eq!(ring.pending(), Err(RingError::AvailIndexJump(17)));
    }
}
