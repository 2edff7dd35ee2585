// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![deny(missing_docs)]
//! Guest memory for a virtual machine: where its RAM lies in the guest-physical address
//! space (a [`MemoryLayout`]) and how each region is backed in the VMM process (a
//! [`Backing`], chosen through a [`MemoryConfig`]).
//!
//! Guest RAM is an mmap of the VMM process; a hypervisor such as KVM is then told to
//! map those host pages at guest-physical addresses. This crate owns the first half
//! and nothing of the second: it does not depend on KVM, so any VMM built on
//! [`vm_memory`] can use it. The result, [`GuestRam`], hands out a
//! [`vm_memory::GuestMemoryMmap`] for device emulation and memslot registration.
//!
//! ```
//! use kvmkit_memory::{GuestRam, MemoryConfig, MemoryLayout};
//! use vm_memory::{Bytes, GuestAddress};
//!
//! let layout = MemoryLayout::x86_64(64 << 20).unwrap();
//! let ram = GuestRam::new(&layout, &MemoryConfig::default()).unwrap();
//! ram.memory().write_obj(0xf4u8, GuestAddress(0x1000)).unwrap();
//! assert_eq!(ram.memory().read_obj::<u8>(GuestAddress(0x1000)).unwrap(), 0xf4);
//! ```

mod backing;
mod error;
mod layout;
mod ram;

pub use backing::{Backing, MemoryConfig};
pub use error::Error;
pub use layout::{MemoryLayout, RegionSpec, X86_MMIO_HOLE_END, X86_MMIO_HOLE_START};
pub use ram::{GuestRam, RamRegion};
