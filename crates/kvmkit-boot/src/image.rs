// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The seam for boot images: anything that writes itself into guest memory and says
//! how the vCPUs enter it ([`BootImage`]), and what it says ([`BootEntry`]). A Linux
//! kernel ([`LinuxBoot`](crate::LinuxBoot)) and a program
//! ([`RawProgram`](crate::RawProgram)) are the two kinds this crate has.

use kvmkit_memory::x86::CpuMode;
use vm_memory::GuestMemoryBackend;

use crate::{BootError, PhysicalLayout};

/// How a kernel is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryProtocol {
    /// The 64-bit boot protocol: long mode with identity-mapped paging, `RSI` holding
    /// the zero page's address.
    Linux64 {
        /// Guest-physical address of `boot_params`.
        zero_page: u64,
    },
    /// PVH: 32-bit protected mode without paging, `EBX` holding the start info's
    /// address.
    Pvh {
        /// Guest-physical address of `hvm_start_info`.
        start_info: u64,
    },
    /// A program run by every vCPU from the same entry point in `mode`: vCPU n starts
    /// with n in `RDI` and its stack `n * stack_stride` bytes below `stack_top`.
    Program {
        /// The CPU mode.
        mode: CpuMode,
        /// Bytes of stack each vCPU gets.
        stack_stride: u64,
    },
}

/// Anything a VMM can boot: it writes itself (and whatever its boot protocol needs)
/// into guest memory, and says how the vCPUs enter it.
pub trait BootImage {
    /// Loads into `memory`, laid out as `layout`, for `vcpus` vCPUs.
    fn load<M: GuestMemoryBackend>(
        &self,
        memory: &M,
        layout: &PhysicalLayout,
        vcpus: u32,
    ) -> Result<BootEntry, BootError>;
}

/// Where and how the vCPUs enter the guest. For a kernel, only the boot vCPU does; the
/// others wait for the kernel's INIT and startup IPIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    /// The boot protocol and its register argument.
    pub protocol: EntryProtocol,
    /// The entry point's guest-physical address.
    pub entry: u64,
    /// The (boot) vCPU's stack pointer.
    pub stack_top: u64,
}
