// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest-physical address map of an x86-64 VM, as typed ranges: one description
//! from which the e820 map, the ACPI tables and the device windows are all derived.

use kvmkit_memory::x86;

use crate::{BootError, LayoutError};

/// What a range of guest-physical addresses is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RangeKind {
    /// Guest RAM the kernel may use.
    Ram,
    /// Guest RAM the firmware keeps: the EBDA, the BIOS area and the ACPI tables.
    Reserved,
    /// Addresses with no RAM, where devices are mapped.
    MmioHole,
    /// A device's register window, inside the MMIO hole.
    Device(DeviceKind),
}

/// The devices that have a window in the address map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceKind {
    /// A virtio-mmio transport, and its interrupt line (GSI).
    VirtioMmio {
        /// The interrupt line.
        irq: u32,
    },
    /// The I/O APIC.
    IoApic,
    /// The local APICs.
    LocalApic,
}

/// `size` bytes from `start`, of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    /// The first address.
    pub start: u64,
    /// Bytes in the range.
    pub size: u64,
    /// What the range is.
    pub kind: RangeKind,
}

impl AddressRange {
    /// The first address past the range.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// One entry of the e820 memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// The first address.
    pub addr: u64,
    /// Bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// The legacy devices the tables describe, at their PC addresses by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyDevices {
    /// COM1: its port and interrupt line, if present.
    pub serial: Option<(u16, u32)>,
    /// The hardware-reduced sleep control register's port.
    pub sleep_control_port: u16,
    /// The sleep status register's port.
    pub sleep_status_port: u16,
    /// The reset register's port and the value that resets.
    pub reset: (u16, u8),
    /// The pvpanic device's port (ACPI `QEMU0001`), if present.
    pub pvpanic_port: Option<u16>,
    /// Where the VM generation ID lies (ACPI `VM_Gen_Counter`), if the VM has one.
    pub vm_generation_id: Option<u64>,
    /// The Generic Event Device's event register port and interrupt line (ACPI
    /// `ACPI0013`, which reports the power button `PWRB` and a new VM generation), if
    /// the VM has one.
    pub generic_events: Option<(u16, u32)>,
}

impl Default for LegacyDevices {
    /// COM1 at 0x3f8 (IRQ 4), sleep control and status at 0x600 and 0x601, reset by
    /// writing 0xfe to the i8042's command port 0x64, pvpanic at 0x505, the VM
    /// generation ID at [`x86::VM_GENERATION_ID`], the Generic Event Device at 0x508
    /// (IRQ 15).
    fn default() -> Self {
        LegacyDevices {
            serial: Some((0x3f8, 4)),
            sleep_control_port: 0x600,
            sleep_status_port: 0x601,
            reset: (0x64, 0xfe),
            pvpanic_port: Some(0x505),
            vm_generation_id: Some(x86::VM_GENERATION_ID.start),
            generic_events: Some((0x508, 15)),
        }
    }
}

/// The guest-physical address map: RAM (below 4 GiB up to the MMIO hole, the rest
/// above it), the firmware's reserved area below 1 MiB, and the MMIO hole with the
/// device windows in it.
///
/// ```
/// use kvmkit_boot::{PhysicalLayout, E820_RAM, E820_RESERVED};
///
/// let layout = PhysicalLayout::new(&[(0, 256 << 20)]).unwrap();
/// let e820 = layout.e820();
/// assert_eq!((e820[0].addr, e820[0].kind), (0, E820_RAM));
/// assert_eq!(e820[1].kind, E820_RESERVED);
/// assert_eq!(e820[2].addr + e820[2].size, 256 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalLayout {
    ranges: Vec<AddressRange>,
    legacy: LegacyDevices,
}

impl PhysicalLayout {
    /// The map for guest RAM given as `(start, size)` regions, sorted: the first must
    /// start at 0 and reach past 1 MiB, and none may overlap the MMIO hole.
    pub fn new(ram: &[(u64, u64)]) -> Result<Self, BootError> {
        let Some(&(0, first_size)) = ram.first() else {
            return Err(LayoutError::RamNotAtZero.into());
        };
        if first_size <= x86::HIGH_MEMORY_START {
            return Err(LayoutError::RamTooSmall { size: first_size }.into());
        }
        let mut ranges = vec![
            ram_range(0, x86::EBDA.start),
            AddressRange {
                start: x86::FIRMWARE.start,
                size: x86::FIRMWARE.size,
                kind: RangeKind::Reserved,
            },
            ram_range(x86::HIGH_MEMORY_START, first_size - x86::HIGH_MEMORY_START),
        ];
        for &(start, size) in &ram[1..] {
            ranges.push(ram_range(start, size));
        }
        ranges.push(AddressRange {
            start: x86::MMIO_HOLE.start,
            size: x86::MMIO_HOLE.size,
            kind: RangeKind::MmioHole,
        });
        for (window, kind) in [
            (x86::IOAPIC, DeviceKind::IoApic),
            (x86::LAPIC, DeviceKind::LocalApic),
        ] {
            ranges.push(AddressRange {
                start: window.start,
                size: window.size,
                kind: RangeKind::Device(kind),
            });
        }
        let layout = PhysicalLayout {
            ranges,
            legacy: LegacyDevices::default(),
        };
        layout.check_ram()?;
        Ok(layout)
    }

    fn check_ram(&self) -> Result<(), BootError> {
        let mut ram: Vec<_> = self.ram().collect();
        ram.sort_by_key(|range| range.start);
        for pair in ram.windows(2) {
            if pair[1].start < pair[0].end() {
                return Err(LayoutError::RamOverlap {
                    first: pair[0].start,
                    second: pair[1].start,
                }
                .into());
            }
        }
        for range in &ram {
            let overlaps_hole =
                range.start < x86::MMIO_HOLE.end() && range.end() > x86::MMIO_HOLE.start;
            if overlaps_hole {
                return Err(LayoutError::RamInMmioHole {
                    start: range.start,
                    end: range.end(),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Adds a device window of `size` bytes at `start`, which must lie in the MMIO hole
    /// and clear of the other windows.
    pub fn add_device(&mut self, start: u64, size: u64, kind: DeviceKind) -> Result<(), BootError> {
        let end = start
            .checked_add(size)
            .filter(|&end| size > 0 && end <= x86::IOAPIC.start);
        if start < x86::MMIO_HOLE.start || end.is_none() {
            return Err(LayoutError::DeviceOutsideHole { start, size }.into());
        }
        let taken = self
            .devices()
            .any(|other| start < other.end() && other.start < start + size);
        if taken {
            return Err(LayoutError::DeviceOverlap { start }.into());
        }
        self.ranges.push(AddressRange {
            start,
            size,
            kind: RangeKind::Device(kind),
        });
        Ok(())
    }

    /// Describes these legacy devices (port I/O, outside the address map) to the guest
    /// instead of the PC's defaults.
    pub fn set_legacy_devices(&mut self, legacy: LegacyDevices) {
        self.legacy = legacy;
    }

    /// The legacy devices the guest's tables describe.
    pub fn legacy_devices(&self) -> &LegacyDevices {
        &self.legacy
    }

    /// Every range, RAM first, in the order they were described.
    pub fn ranges(&self) -> &[AddressRange] {
        &self.ranges
    }

    /// The RAM ranges the kernel may use.
    pub fn ram(&self) -> impl Iterator<Item = &AddressRange> {
        self.ranges.iter().filter(|r| r.kind == RangeKind::Ram)
    }

    /// The virtio-mmio windows as (base, size, irq), in the order they were added.
    pub fn virtio_mmio(&self) -> impl Iterator<Item = (u64, u64, u32)> + '_ {
        self.ranges.iter().filter_map(|range| match range.kind {
            RangeKind::Device(DeviceKind::VirtioMmio { irq }) => {
                Some((range.start, range.size, irq))
            }
            _ => None,
        })
    }

    /// The device windows.
    pub fn devices(&self) -> impl Iterator<Item = &AddressRange> {
        self.ranges
            .iter()
            .filter(|r| matches!(r.kind, RangeKind::Device(_)))
    }

    /// The first address past the RAM that starts at 1 MiB (the top of low memory).
    pub fn low_ram_end(&self) -> u64 {
        self.ram()
            .find(|r| r.start == x86::HIGH_MEMORY_START)
            .map_or(x86::HIGH_MEMORY_START, AddressRange::end)
    }

    /// The e820 map: RAM and the reserved firmware area, sorted by address. The MMIO
    /// hole is not RAM and is left out, as firmware does.
    pub fn e820(&self) -> Vec<E820Entry> {
        let mut entries: Vec<E820Entry> = self
            .ranges
            .iter()
            .filter_map(|range| {
                let kind = match range.kind {
                    RangeKind::Ram => E820_RAM,
                    RangeKind::Reserved => E820_RESERVED,
                    _ => return None,
                };
                Some(E820Entry {
                    addr: range.start,
                    size: range.size,
                    kind,
                })
            })
            .collect();
        entries.sort_by_key(|entry| entry.addr);
        entries
    }
}

fn ram_range(start: u64, size: u64) -> AddressRange {
    AddressRange {
        start,
        size,
        kind: RangeKind::Ram,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_covers_ram_and_reserves_the_firmware_area_below_1_mib() {
        let layout = PhysicalLayout::new(&[(0, 3 << 30), (4 << 30, 1 << 30)]).unwrap();

        let e820 = layout.e820();

        assert_eq!(
            e820,
            vec![
                E820Entry {
                    addr: 0,
                    size: x86::EBDA.start,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: x86::EBDA.start,
                    size: x86::HIGH_MEMORY_START - x86::EBDA.start,
                    kind: E820_RESERVED
                },
                E820Entry {
                    addr: x86::HIGH_MEMORY_START,
                    size: (3 << 30) - x86::HIGH_MEMORY_START,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: 4 << 30,
                    size: 1 << 30,
                    kind: E820_RAM
                },
            ]
        );
        let ram: u64 = e820.iter().map(|e| e.size).sum();
        assert_eq!(ram, 4 << 30, "e820 accounts for every byte of RAM once");
    }

    #[test]
    fn ram_that_does_not_start_at_zero_or_reach_1_mib_is_refused() {
        assert!(PhysicalLayout::new(&[]).is_err());
        assert!(PhysicalLayout::new(&[(0x1000, 64 << 20)]).is_err());
        assert!(PhysicalLayout::new(&[(0, x86::HIGH_MEMORY_START)]).is_err());
    }

    #[test]
    fn ram_in_the_mmio_hole_is_refused() {
        let result = PhysicalLayout::new(&[(0, x86::MMIO_HOLE.start + 0x1000)]);

        assert!(matches!(
            result,
            Err(BootError::Layout(LayoutError::RamInMmioHole { .. }))
        ));
    }

    #[test]
    fn device_windows_must_be_in_the_hole_and_apart() {
        let mut layout = PhysicalLayout::new(&[(0, 64 << 20)]).unwrap();

        layout
            .add_device(
                x86::VIRTIO_MMIO.start,
                0x1000,
                DeviceKind::VirtioMmio { irq: 5 },
            )
            .unwrap();

        assert!(layout
            .add_device(
                x86::VIRTIO_MMIO.start + 0x800,
                0x1000,
                DeviceKind::VirtioMmio { irq: 5 }
            )
            .is_err());
        assert!(layout
            .add_device(0x1000, 0x1000, DeviceKind::VirtioMmio { irq: 5 })
            .is_err());
        assert!(layout
            .add_device(x86::IOAPIC.start, 0x1000, DeviceKind::VirtioMmio { irq: 5 })
            .is_err());
        assert!(layout
            .add_device(u64::MAX - 0xfff, 0x1000, DeviceKind::VirtioMmio { irq: 5 })
            .is_err());
        assert_eq!(
            layout.devices().count(),
            3,
            "two APICs and one virtio window"
        );
    }
}
