// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A descriptor chain as a device sees it: its buffers, checked to lie in guest RAM
//! and split into what the device reads and what it writes, or why it was refused.
//! The ring walk builds chains ([`Chain::push`]); devices serve them.

use vm_memory::{
    Address as _, GuestAddress, GuestMemoryBackend as _, GuestMemoryRegion as _, Permissions,
};

use crate::GuestMemory;

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
    /// The chain loops, or is longer than its table, or names a descriptor past the
    /// table, or uses an indirect table (no device here offers
    /// `VIRTIO_RING_F_INDIRECT_DESC`), or its lengths add up past 2^32 bytes.
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

/// Writes `data` into `buffers` (a chain's writable ones, in order) from byte `offset`
/// of them on, as far as they reach; the bytes written.
pub(crate) fn write_into(
    memory: &GuestMemory,
    buffers: &[Buffer],
    mut offset: usize,
    data: &[u8],
) -> Result<usize, vm_memory::GuestMemoryError> {
    let mut written = 0;
    for buffer in buffers {
        let len = buffer.len as usize;
        if offset >= len {
            offset -= len;
            continue;
        }
        let take = (len - offset).min(data.len() - written);
        if take == 0 {
            break;
        }
        // The buffer was checked to lie in RAM, so its address plus its length fits.
        let addr = buffer.addr.unchecked_add(offset as u64);
        vm_memory::Bytes::write_slice(memory, &data[written..written + take], addr)?;
        written += take;
        offset = 0;
    }
    Ok(written)
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
