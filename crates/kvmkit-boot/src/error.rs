// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What can go wrong while preparing a boot, one variant per cause, so that a caller
//! (a runner naming the option at fault, say) never reads the message.

use std::fmt;
use std::io;

/// A file a boot reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootFile {
    /// The kernel image.
    Kernel,
    /// The initial ramdisk.
    Initrd,
}

impl fmt::Display for BootFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootFile::Kernel => "kernel",
            BootFile::Initrd => "initrd",
        })
    }
}

/// What a boot writes into guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootStructure {
    /// The kernel command line.
    CommandLine,
    /// The initrd's contents.
    Initrd,
    /// The Linux boot protocol's `boot_params`.
    ZeroPage,
    /// PVH's `hvm_start_info`, its module list and memory map.
    PvhStartInfo,
    /// The RSDP and the ACPI tables.
    AcpiTables,
    /// The MP floating pointer and configuration table.
    MpTable,
    /// A program's code.
    Program,
}

impl fmt::Display for BootStructure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootStructure::CommandLine => "the command line",
            BootStructure::Initrd => "the initrd",
            BootStructure::ZeroPage => "the zero page",
            BootStructure::PvhStartInfo => "the PVH start info",
            BootStructure::AcpiTables => "the ACPI tables",
            BootStructure::MpTable => "the MP table",
            BootStructure::Program => "the program",
        })
    }
}

/// What can go wrong while preparing a boot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// A file could not be read.
    #[error("cannot read the {file} {path}")]
    Read {
        /// Which file.
        file: BootFile,
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
    /// The kernel loader refused the image: malformed, or not fitting in guest RAM.
    #[error("cannot load the kernel image")]
    KernelLoad(#[source] linux_loader::loader::Error),
    /// The kernel decompresses past the end of guest RAM below the MMIO hole, or the
    /// initrd does not fit above where it decompresses.
    #[error("the kernel needs {needs_mib} MiB of RAM to decompress into{}, and the VM has {has_mib} MiB: give it at least {needs_mib} MiB", if *.initrd { " with its initrd above it" } else { "" })]
    RamTooSmallForKernel {
        /// The RAM it needs, in MiB (rounded up).
        needs_mib: u64,
        /// The RAM below the MMIO hole, in MiB.
        has_mib: u64,
        /// Whether an initrd is counted in.
        initrd: bool,
    },
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
    #[error("invalid kernel command line")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// More or fewer vCPUs than the firmware tables can describe.
    #[error("{count} vCPUs: the firmware tables describe 1 to {max}")]
    Vcpus {
        /// The vCPUs asked for.
        count: u32,
        /// The most the tables describe.
        max: u32,
    },
    /// A program asks for its vCPUs' stacks below address 0.
    #[error(
        "the program at {load_addr:#x} leaves no room below it for {stacks:#x} bytes of stacks"
    )]
    ProgramStacks {
        /// Where the program loads.
        load_addr: u64,
        /// Bytes of stacks its vCPUs need below it.
        stacks: u64,
    },
    /// Something the boot writes does not fit in guest memory where it goes.
    #[error("cannot write {what} into guest memory")]
    Write {
        /// What was being written.
        what: BootStructure,
        /// Why it could not be.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The address map cannot describe this machine.
    #[error("invalid address map")]
    Layout(#[from] LayoutError),
}

impl BootError {
    /// A failed write of `what` into guest memory.
    pub(crate) fn write<E>(what: BootStructure) -> impl FnOnce(E) -> BootError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |source| BootError::Write {
            what,
            source: Box::new(source),
        }
    }
}

/// Why an address map cannot describe a machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// Guest RAM does not start at address 0.
    #[error("guest RAM must start at address 0")]
    RamNotAtZero,
    /// Guest RAM below 4 GiB ends at or below 1 MiB, where kernels load.
    #[error("guest RAM below 4 GiB ({size:#x} bytes) must reach past 1 MiB")]
    RamTooSmall {
        /// Bytes of RAM from address 0.
        size: u64,
    },
    /// Two RAM regions overlap.
    #[error("guest RAM regions at {first:#x} and {second:#x} overlap")]
    RamOverlap {
        /// The first region's start.
        first: u64,
        /// The second region's start.
        second: u64,
    },
    /// A RAM region reaches into the 32-bit MMIO hole.
    #[error("guest RAM at {start:#x}..{end:#x} overlaps the MMIO hole")]
    RamInMmioHole {
        /// The region's start.
        start: u64,
        /// The region's end.
        end: u64,
    },
    /// A device window is not inside the MMIO hole below the I/O APIC.
    #[error("a device window at {start:#x} ({size:#x} bytes) is not in the MMIO hole below the I/O APIC")]
    DeviceOutsideHole {
        /// The window's start.
        start: u64,
        /// Its size.
        size: u64,
    },
    /// A device window overlaps another.
    #[error("a device window at {start:#x} overlaps another")]
    DeviceOverlap {
        /// The window's start.
        start: u64,
    },
    /// The map has more e820 entries than the zero page holds.
    #[error("{entries} e820 entries; the zero page holds {max}")]
    TooManyE820Entries {
        /// Entries in the map.
        entries: usize,
        /// What the zero page holds.
        max: usize,
    },
    /// The ACPI tables do not fit in the area kept for them.
    #[error("the ACPI tables need more than their {room:#x} bytes")]
    AcpiTablesTooLarge {
        /// Bytes of the area.
        room: u64,
    },
    /// The MP table does not fit below 1 MiB.
    #[error("the MP table does not fit below 1 MiB")]
    MpTableTooLarge,
}
