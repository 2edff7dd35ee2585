// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The x86 guest-physical map: every fixed address a PC guest's boot uses, in one
//! place, and the CPU modes a guest is entered in (which decide the tables written
//! there).
//!
//! Three crates write into these ranges without knowing each other: the vCPU crate
//! (the GDT, IDT and page tables a CPU mode needs), the boot crate (the boot
//! protocols' structures, the command line, the firmware tables) and this crate (RAM
//! around the 32-bit MMIO hole). Each takes its addresses from here, and
//! [`LOW_RAM_STRUCTURES`] lists the ones in RAM so a test can prove that none overlaps
//! another.
//!
//! ```text
//! 0x0000_0500  GDT, IDT                  (CPU modes)
//! 0x0000_6000  PVH start info            (PVH boot)
//! 0x0000_7000  zero page / PVH memmap    (Linux boot protocol, or PVH)
//! 0x0000_8000  boot stack
//! 0x0000_9000  page tables               (long mode)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  EBDA (MP floating pointer) ┐
//! 0x000d_f000  VM generation ID           │
//! 0x000e_0000  ACPI tables                │ reserved for the firmware
//! 0x000f_0000  MP table                   ┘
//! 0x0010_0000  high memory: kernels and programs load here
//! 0xc000_0000  MMIO hole: the boot timer, virtio-mmio windows at 0xd000_0000, I/O APIC,
//!              local APIC
//! 0x1_0000_0000  RAM that did not fit below the hole
//! ```

/// `size` bytes of guest-physical address space from `start`, with a name for
/// messages and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedRange {
    /// What lives there.
    pub name: &'static str,
    /// The first address.
    pub start: u64,
    /// Bytes in the range.
    pub size: u64,
}

impl FixedRange {
    /// The first address past the range.
    pub const fn end(&self) -> u64 {
        self.start + self.size
    }

    /// Whether `self` and `other` share an address.
    pub const fn overlaps(&self, other: &FixedRange) -> bool {
        self.start < other.end() && other.start < self.end()
    }

    /// The first address as the 32-bit field a firmware table or boot protocol holds
    /// it in. Every range here but RAM's lies below 4 GiB; one that did not would
    /// fail to compile where this is evaluated in a constant, and panic otherwise.
    // The assertion makes the cast exact.
    #[allow(clippy::cast_possible_truncation)]
    pub const fn start_u32(&self) -> u32 {
        assert!(self.end() <= 1 << 32, "the range is not below 4 GiB");
        self.start as u32
    }

    /// Whether `other` lies wholly inside `self`.
    pub const fn contains(&self, other: &FixedRange) -> bool {
        self.start <= other.start && other.end() <= self.end()
    }
}

const fn range(name: &'static str, start: u64, size: u64) -> FixedRange {
    FixedRange { name, start, size }
}

/// The GDT written for protected and long mode: null, code and data descriptors.
pub const GDT: FixedRange = range("GDT", 0x500, 0x20);
/// The (empty) IDT: any exception before the guest loads its own escalates to a
/// triple fault.
pub const IDT: FixedRange = range("IDT", 0x520, 0x10);
/// PVH's `hvm_start_info`, its module list after it.
pub const PVH_START_INFO: FixedRange = range("PVH start info", 0x6000, 0x1000);
/// The Linux boot protocol's zero page (`boot_params`).
pub const ZERO_PAGE: FixedRange = range("zero page", 0x7000, 0x1000);
/// PVH's memory map: PVH has no zero page, so the map takes its place.
pub const PVH_MEMMAP: FixedRange = range("PVH memory map", ZERO_PAGE.start, ZERO_PAGE.size);
/// The boot vCPU's stack at a kernel's entry.
pub const BOOT_STACK: FixedRange = range("boot stack", 0x8000, 0x1000);
/// The boot stack pointer: the top of [`BOOT_STACK`], 16-byte aligned.
pub const BOOT_STACK_TOP: u64 = BOOT_STACK.end() - 0x10;
/// The long-mode page tables: PML4, PDPT, then four page directories.
pub const PAGE_TABLES: FixedRange = range("page tables", 0x9000, 0x6000);
/// The kernel command line, its terminating NUL included.
pub const CMDLINE: FixedRange = range("command line", 0x2_0000, 0x1_0000);
/// The extended BIOS data area: usable RAM stops here; the MP floating pointer lives
/// at its start.
pub const EBDA: FixedRange = range("EBDA", 0x9_fc00, 0x400);
/// The VM generation ID (16 bytes): the ACPI `VM_Gen_Counter` device's `ADDR`
/// names it; a VM restored from a snapshot gets a new one, so that a guest that
/// reads it (Linux's `vmgenid`) reseeds its random number generator.
pub const VM_GENERATION_ID: FixedRange = range("VM generation ID", 0xd_f000, 0x10);
/// The RSDP and the ACPI tables after it (the BIOS area the kernel scans for the
/// RSDP).
pub const ACPI_TABLES: FixedRange = range("ACPI tables", 0xe_0000, 0x1_0000);
/// The MP configuration table.
pub const MP_TABLE: FixedRange = range("MP table", 0xf_0000, 0x1_0000);
/// The first byte of "high" memory, where kernels and programs load.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;
/// The firmware's area, reserved in the e820 map: from the EBDA up to 1 MiB.
pub const FIRMWARE: FixedRange = range("firmware", EBDA.start, HIGH_MEMORY_START - EBDA.start);

/// The 32-bit MMIO hole: guest RAM above its start moves above 4 GiB, so that device
/// windows, the I/O APIC and the local APIC sit below 4 GiB.
pub const MMIO_HOLE: FixedRange = range("MMIO hole", 0xc000_0000, 0x4000_0000);
/// Firecracker's boot timer, where Firecracker (v1.16) places it: the first page of
/// the MMIO hole, so that guest tooling written for Firecracker works unchanged.
pub const BOOT_TIMER: FixedRange = range("boot timer", 0xc000_0000, 0x1000);
/// Where virtio-mmio windows are placed, one after the other.
pub const VIRTIO_MMIO: FixedRange = range("virtio-mmio windows", 0xd000_0000, 0x100_0000);
/// The I/O APIC's registers.
pub const IOAPIC: FixedRange = range("I/O APIC", 0xfec0_0000, 0x1000);
/// The local APICs' registers.
pub const LAPIC: FixedRange = range("local APIC", 0xfee0_0000, 0x1000);

/// The structures written into low RAM (below [`EBDA`]) before the first vCPU runs.
/// [`PVH_MEMMAP`] is left out: it takes [`ZERO_PAGE`]'s place in a PVH boot, which
/// has no zero page.
pub const LOW_RAM_STRUCTURES: [FixedRange; 7] = [
    GDT,
    IDT,
    PVH_START_INFO,
    ZERO_PAGE,
    BOOT_STACK,
    PAGE_TABLES,
    CMDLINE,
];

/// The firmware's tables, in [`FIRMWARE`].
pub const FIRMWARE_STRUCTURES: [FixedRange; 4] = [EBDA, VM_GENERATION_ID, ACPI_TABLES, MP_TABLE];

/// The windows in [`MMIO_HOLE`].
pub const MMIO_WINDOWS: [FixedRange; 4] = [BOOT_TIMER, VIRTIO_MMIO, IOAPIC, LAPIC];

// The boot stack pointer lies in the boot stack; the hole lies above where kernels load.
const _: () = assert!(BOOT_STACK.start < BOOT_STACK_TOP && BOOT_STACK_TOP < BOOT_STACK.end());
const _: () = assert!(MMIO_HOLE.start > HIGH_MEMORY_START);

/// The CPU mode a guest is entered in: the one name for it in every kvmkit crate.
///
/// Deliberately exhaustive: a mode added here must be handled by every `match` on it
/// (entering it, assembling for it, booting in it) rather than fall into another
/// mode's arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CpuMode {
    /// 16-bit real mode, segments based so that the entry point is reachable.
    Real,
    /// 32-bit protected mode with flat 4 GiB code and data segments ([`GDT`]), no
    /// paging.
    Protected,
    /// 64-bit long mode with the first 4 GiB identity-mapped ([`PAGE_TABLES`]).
    Long,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_apart(ranges: &[FixedRange]) {
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                assert!(!a.overlaps(b), "{} overlaps {}", a.name, b.name);
            }
        }
    }

    #[test]
    fn the_low_ram_structures_are_apart_and_in_the_ram_below_the_ebda() {
        let low_ram = range("low RAM", 0, EBDA.start);

        all_apart(&LOW_RAM_STRUCTURES);
        for structure in LOW_RAM_STRUCTURES {
            assert!(
                low_ram.contains(&structure),
                "{} is not in low RAM",
                structure.name
            );
        }
    }

    #[test]
    fn the_pvh_memory_map_takes_only_the_zero_pages_place() {
        assert_eq!(PVH_MEMMAP.start, ZERO_PAGE.start);
        assert!(ZERO_PAGE.contains(&PVH_MEMMAP));
    }

    #[test]
    fn the_firmware_tables_are_apart_inside_the_firmware_area_below_high_memory() {
        all_apart(&FIRMWARE_STRUCTURES);
        for table in FIRMWARE_STRUCTURES {
            assert!(FIRMWARE.contains(&table), "{} is outside", table.name);
        }
        assert_eq!(FIRMWARE.end(), HIGH_MEMORY_START);
    }

    #[test]
    fn the_mmio_windows_are_apart_inside_the_hole_which_ends_at_4_gib() {
        all_apart(&MMIO_WINDOWS);
        for window in MMIO_WINDOWS {
            assert!(MMIO_HOLE.contains(&window), "{} is outside", window.name);
        }
        assert_eq!(MMIO_HOLE.end(), 1 << 32);
    }
}
