// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![deny(missing_docs)]
#![forbid(unsafe_code)]
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
//! - [`BootImage`]: the seam a VMM boots through, implemented by [`LinuxBoot`] and by
//!   [`RawProgram`] (machine code every vCPU runs in one [`CpuMode`]).
//! - [`x86`]: the fixed guest-physical addresses all of this writes to.

mod acpi;
mod error;
mod image;
mod layout;
mod linux;
mod mptable;
mod program;

pub use acpi::{write_acpi_tables, MAX_VCPUS, S5_SLEEP_TYPE};
pub use error::{BootError, BootFile, BootStructure, LayoutError};
pub use image::{BootEntry, BootImage, EntryProtocol};
pub use kvmkit_memory::x86;
pub use kvmkit_memory::x86::CpuMode;
pub use layout::{
    AddressRange, DeviceKind, E820Entry, LegacyDevices, PhysicalLayout, RangeKind, E820_RAM,
    E820_RESERVED,
};
pub use linux::{detect_format, KernelFormat, LinuxBoot};
pub use mptable::write_mp_table;
pub use program::{load_program, RawProgram, PROGRAM_STACK_PER_VCPU};
