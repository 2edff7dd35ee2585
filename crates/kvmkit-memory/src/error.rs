// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

use std::io;

/// What can go wrong while laying out or mapping guest memory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A layout must have at least one region.
    #[error("the memory layout has no regions")]
    EmptyLayout,
    /// A region has no bytes.
    #[error("memory region at {guest_addr:#x} has size 0")]
    EmptyRegion {
        /// Guest-physical start of the region.
        guest_addr: u64,
    },
    /// A region's start or size is not a multiple of the host page size.
    #[error(
        "memory region at {guest_addr:#x} of size {size:#x} is not aligned to the {page_size:#x}-byte page size"
    )]
    Unaligned {
        /// Guest-physical start of the region.
        guest_addr: u64,
        /// Size of the region in bytes.
        size: u64,
        /// The page size it must be a multiple of.
        page_size: u64,
    },
    /// Two regions cover the same guest-physical addresses, or are not in order.
    #[error("memory region at {second:#x} overlaps or precedes the region at {first:#x}")]
    Overlap {
        /// Start of the earlier region.
        first: u64,
        /// Start of the region that overlaps it.
        second: u64,
    },
    /// A region runs past the end of the 64-bit guest-physical address space.
    #[error("memory region at {guest_addr:#x} of size {size:#x} wraps the address space")]
    AddressOverflow {
        /// Guest-physical start of the region.
        guest_addr: u64,
        /// Size of the region in bytes.
        size: u64,
    },
    /// The host refused to map a region.
    #[error("cannot map {size:#x} bytes of {backing} memory for guest address {guest_addr:#x}: {source}")]
    Map {
        /// Guest-physical start of the region.
        guest_addr: u64,
        /// Size of the region in bytes.
        size: u64,
        /// The backing that was asked for.
        backing: String,
        /// The error from mmap.
        #[source]
        source: io::Error,
    },
    /// vm-memory refused the set of regions.
    #[error("vm-memory refused the guest memory regions: {0}")]
    Collection(#[from] vm_memory::GuestRegionCollectionError),
}
