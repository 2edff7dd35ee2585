// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![deny(missing_docs)]
//! Booting Linux on an x86-64 VM: what a VMM writes into guest memory before the first
//! vCPU runs. No KVM dependency: the result is guest memory and a [`BootEntry`] that
//! says where and how the boot vCPU enters the kernel.
//!
//! - [`PhysicalLayout`]: the guest-physical address map as typed ranges (RAM, the
//!   firmware's reserved area, the MMIO hole and the device windows in it), from which
//!   the e820 map, the ACPI tables and the virtio-mmio windows all come.
//! - [`LinuxBoot`]: bzImage (64-bit boot protocol), ELF `vmlinux` and PVH kernels, on
//!   [linux-loader](https://docs.rs/linux-loader); initrd and command line checked
//!   against what the kernel accepts before anything runs.
//! - [`write_acpi_tables`]: RSDP, XSDT, FADT, MADT and DSDT on
//!   [acpi_tables](https://docs.rs/acpi_tables), so a kernel without an MP-table parser
//!   or `virtio_mmio.device=` support finds its CPUs and virtio devices.
//! - [`write_mp_table`]: the Intel MP table, for kernels booted with `acpi=off`.

mod acpi;
mod layout;
mod linux;
mod mptable;
mod program;

use std::io;

pub use acpi::{write_acpi_tables, LegacyDevices, MAX_VCPUS, S5_SLEEP_TYPE};
pub use layout::{
    AddressRange, DeviceKind, E820Entry, PhysicalLayout, RangeKind, ACPI_START, BOOT_STACK_TOP,
    CMDLINE_ROOM, CMDLINE_START, E820_RAM, E820_RESERVED, EBDA_START, HIGH_MEMORY_START,
    IOAPIC_ADDR, LAPIC_ADDR, MMIO_HOLE_END, MMIO_HOLE_START, MPTABLE_START, PVH_MEMMAP,
    PVH_START_INFO, VIRTIO_MMIO_START, ZERO_PAGE,
};
pub use linux::{
    detect_format, BootEntry, BootImage, EntryMode, EntryProtocol, KernelFormat, LinuxBoot,
};
pub use mptable::write_mp_table;
pub use program::{load_program, PROGRAM_STACK_PER_VCPU};

/// What can go wrong while preparing a boot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// A file could not be read.
    #[error("cannot read the {what} {path}")]
    Read {
        /// What the file is (kernel, initrd).
        what: &'static str,
        /// Its path.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file is not a kernel image this crate knows.
    #[error("not a kernel image: {0}")]
    NotAKernel(String),
    /// The kernel is of a kind that cannot be booted here.
    #[error("unsupported kernel: {0}")]
    UnsupportedKernel(String),
    /// Loading into guest memory failed (a malformed image, or no room).
    #[error("cannot load {0}")]
    Load(String),
    /// The initrd does not fit between the kernel and the top of the memory it may use.
    #[error("the initrd ({size} bytes) does not fit in the {room} bytes between the kernel and the highest address it may load at; give the VM more memory")]
    InitrdTooLarge {
        /// Its size.
        size: u64,
        /// The room there is.
        room: u64,
    },
    /// The command line is longer than the kernel takes.
    #[error("the kernel command line is {len} bytes; this kernel takes at most {limit}")]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The kernel's limit.
        limit: usize,
    },
    /// The command line is not one the kernel can take (e.g. it holds a NUL).
    #[error("invalid kernel command line: {0}")]
    Cmdline(String),
    /// The address map cannot describe this machine.
    #[error("invalid address map: {0}")]
    Layout(String),
}
