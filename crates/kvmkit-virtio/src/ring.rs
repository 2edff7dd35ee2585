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

use crate::queue::{Buffer, Chain, ChainError};
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

    /// Puts chain `head` in the used ring with `written` bytes written into it, and
    /// publishes it.
    pub(crate) fn put_used(&mut self, head: u16, written: u32) -> Result<(), RingError> {
        let slot = RING_HEADER + USED_ELEMENT_SIZE * usize::from(self.next_used % self.size);
        let mut element = [0u8; USED_ELEMENT_SIZE];
        element[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        element[4..].copy_from_slice(&written.to_le_bytes());
        self.used
            .write_slice(&element, slot)
            .map_err(|_| RingError::NotInRam)?;
        self.next_used = self.next_used.wrapping_add(1);
        // Release: the element (and the buffers' contents) before the index.
        self.used
            .store(self.next_used, 2, Ordering::Release)
            .map_err(|_| RingError::NotInRam)
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
