// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![deny(missing_docs)]
//! Guest memory for a virtual machine: where its RAM lies in the guest-physical address
//! space (a [`MemoryLayout`]), how it is backed in the VMM process (a [`MemoryConfig`],
//! resolved and checked into a [`Backing`]), and proof of what the kernel did with it
//! (a [`MemoryReport`] read from `/proc/self/smaps`).
//!
//! Guest RAM is an mmap of the VMM process; a hypervisor such as KVM is then told to
//! map those host pages at guest-physical addresses. This crate owns the first half
//! and nothing of the second: it does not depend on KVM, so any VMM built on
//! [`vm_memory`] can use it. The result, [`GuestRam`], hands out a
//! [`vm_memory::GuestMemoryMmap`] for device emulation and memslot registration.
//!
//! Backings: private anonymous (default), shared memfd, anonymous `MAP_HUGETLB` or
//! `MFD_HUGETLB` memfd with a chosen page size (2 MiB, 1 GiB), a file on hugetlbfs;
//! with transparent hugepages (`MADV_HUGEPAGE`), KSM (`MADV_MERGEABLE`), prefaulting
//! (`MADV_POPULATE_WRITE`) and reserved or `MAP_NORESERVE` commit.
//!
//! ```
//! use kvmkit_memory::{GuestRam, MemoryConfig, MemoryLayout};
//! use vm_memory::{Bytes, GuestAddress};
//!
//! let layout = MemoryLayout::x86_64(64 << 20).unwrap();
//! let config: MemoryConfig = "thp=on,prefault=on".parse().unwrap();
//! let ram = GuestRam::new(&layout, &config).unwrap();
//! ram.memory().write_obj(0xf4u8, GuestAddress(0x1000)).unwrap();
//! assert_eq!(ram.memory().read_obj::<u8>(GuestAddress(0x1000)).unwrap(), 0xf4);
//!
//! let report = ram.report().unwrap();
//! assert!(report.regions[0].flags.hugepage); // the kernel recorded MADV_HUGEPAGE
//! assert_eq!(report.resident(), 64 << 20);    // prefaulted
//! ```

mod backing;
mod config;
mod error;
pub mod host;
pub mod image;
mod layout;
mod ram;
mod report;
pub mod x86;

pub use backing::Backing;
pub use config::MemoryConfig;
pub use error::{Conflict, Error};
#[cfg(feature = "test-utils")]
pub use host::KsmScanning;
pub use host::{HugePagePool, KsmCounters};
pub use layout::{MemoryLayout, RegionSpec, MAX_GUEST_MEMORY};
pub use ram::{GuestMemory, GuestRam, RamRegion, DIRTY_PAGE_SIZE, HOST_ALIGNMENT};
pub use report::{MemoryReport, RegionReport, VmFlags};
