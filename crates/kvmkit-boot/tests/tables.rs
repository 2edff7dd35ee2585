// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The ACPI tables, parsed back from guest memory by an independent parser (the `acpi`
//! crate, which also checks every checksum), and the MP table.

// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::ptr::NonNull;

use acpi::fadt::Fadt;
use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use common::{memory, Memory, RAM};
use kvmkit_boot::x86;
use kvmkit_boot::{write_acpi_tables, write_mp_table, DeviceKind, LegacyDevices, PhysicalLayout};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// Maps guest-physical addresses to where guest memory is in this process.
#[derive(Clone)]
struct GuestHandler(std::sync::Arc<Memory>);

impl AcpiHandler for GuestHandler {
    unsafe fn map_physical_region<T>(
        &self,
        physical: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let slice = self
            .0
            .get_slice(GuestAddress(physical as u64), size)
            .expect("the parser reads inside guest RAM");
        let host = slice.ptr_guard_mut().as_ptr();
        // SAFETY: `host` points at `size` bytes of guest memory, which outlives the
        // mapping (the handler holds it).
        unsafe {
            PhysicalMapping::new(
                physical,
                NonNull::new(host.cast()).unwrap(),
                size,
                size,
                self.clone(),
            )
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

fn machine(
    vcpus: u32,
    virtio: &[(u64, u32)],
) -> (std::sync::Arc<Memory>, AcpiTables<GuestHandler>) {
    let memory = std::sync::Arc::new(memory());
    let mut layout = PhysicalLayout::new(&[(0, RAM)]).unwrap();
    for &(base, irq) in virtio {
        layout
            .add_device(base, 0x1000, DeviceKind::VirtioMmio { irq })
            .unwrap();
    }
    let rsdp = write_acpi_tables(&*memory, &layout, vcpus).unwrap();
    assert_eq!(rsdp, x86::ACPI_TABLES.start);
    // SAFETY: the RSDP was just written at `rsdp`, and the handler maps guest memory.
    let tables =
        unsafe { AcpiTables::from_rsdp(GuestHandler(memory.clone()), rsdp as usize) }.unwrap();
    (memory, tables)
}

#[test]
fn the_madt_lists_one_enabled_local_apic_per_vcpu_the_ioapic_and_the_pit_override() {
    let (_memory, tables) = machine(4, &[]);

    let madt = tables.find_table::<Madt>().unwrap();
    let madt = madt.get();

    let mut apic_ids = Vec::new();
    let mut ioapics = Vec::new();
    let mut overrides = Vec::new();
    for entry in madt.entries() {
        match entry {
            MadtEntry::LocalApic(lapic) => {
                assert_eq!({ lapic.flags } & 1, 1, "enabled");
                apic_ids.push(lapic.apic_id);
            }
            MadtEntry::IoApic(ioapic) => ioapics.push(({ ioapic.io_apic_address }, {
                ioapic.global_system_interrupt_base
            })),
            MadtEntry::InterruptSourceOverride(iso) => {
                overrides.push((iso.irq, { iso.global_system_interrupt }))
            }
            _ => {}
        }
    }
    assert_eq!(apic_ids, vec![0, 1, 2, 3]);
    assert_eq!(ioapics, vec![(x86::IOAPIC.start as u32, 0)]);
    assert_eq!(overrides, vec![(0, 2)]);
}

#[test]
fn the_fadt_is_hardware_reduced_with_sleep_control_and_reset_registers() {
    let (_memory, tables) = machine(1, &[]);

    let fadt = tables.find_table::<Fadt>().unwrap();

    let flags = { fadt.get().flags };
    assert!(flags.system_is_hw_reduced_acpi());
    let legacy = LegacyDevices::default();
    let sleep = fadt.sleep_control_register().unwrap().unwrap();
    assert_eq!(sleep.address, u64::from(legacy.sleep_control_port));
    let status = fadt.sleep_status_register().unwrap().unwrap();
    assert_eq!(status.address, u64::from(legacy.sleep_status_port));
    assert_eq!(
        fadt.reset_register().unwrap().address,
        u64::from(legacy.reset.0)
    );
    assert_eq!(
        fadt.dsdt_address().unwrap(),
        tables.dsdt().unwrap().address - 36
    );
}

#[test]
fn the_dsdt_describes_s5_com1_pvpanic_the_power_button_and_every_virtio_window() {
    let windows = [
        (x86::VIRTIO_MMIO.start, 5),
        (x86::VIRTIO_MMIO.start + 0x1000, 6),
    ];
    let (memory, tables) = machine(2, &windows);

    let dsdt = tables.dsdt().unwrap();
    let mut aml = vec![0u8; dsdt.length as usize];
    memory
        .read_slice(&mut aml, GuestAddress(dsdt.address as u64))
        .unwrap();

    let find = |needle: &[u8]| aml.windows(needle.len()).filter(|w| *w == needle).count();
    assert_eq!(find(b"_S5_"), 1);
    assert_eq!(find(b"LNRO0005\0"), 2, "one virtio-mmio device each");
    // PNP0501 as an EISA id, and COM1's ports.
    assert_eq!(find(&[0x0c, 0x41, 0xd0, 0x05, 0x01]), 1);
    // pvpanic: QEMU0001 as a string, and its one port at 0x505 (IO descriptor:
    // decodes 16 bits, min and max 0x505, alignment 1, length 1).
    assert_eq!(find(b"QEMU0001\0"), 1);
    // The VM generation ID: VMGENCTR, VM_Gen_Counter, and ADDR, a package of its
    // address's low dword and high zero (PackageOp, length, 2 elements, DWordPrefix,
    // the address, ZeroOp).
    assert_eq!(find(b"VMGENCTR\0"), 1);
    assert_eq!(find(b"VM_Gen_Counter\0"), 2, "_CID and _DDN");
    let mut address = b"ADDR".to_vec();
    address.extend([0x12, 0x08, 0x02, 0x0c]);
    address.extend((x86::VM_GENERATION_ID.start as u32).to_le_bytes());
    address.push(0x00);
    assert_eq!(find(&address), 1, "ADDR names the VM generation ID");
    assert_eq!(find(&[0x47, 0x01, 0x05, 0x05, 0x05, 0x05, 0x01, 0x01]), 1);
    // The power button (PNP0C0C as an EISA id) and the Generic Event Device
    // (ACPI0013): its interrupt (extended, consumer, edge, active-high, IRQ 15), its
    // event register (OperationRegion GDST in SystemIO at 0x508, 1 byte) and _EVT
    // (one argument, serialized), which notifies PWRB and VGEN.
    assert_eq!(find(&[0x0c, 0x41, 0xd0, 0x0c, 0x0c]), 1);
    assert_eq!(find(b"ACPI0013\0"), 1);
    assert_eq!(find(&[0x89, 0x06, 0x00, 0x03, 0x01, 15, 0, 0, 0]), 1);
    assert_eq!(
        find(&[0x5b, 0x80, b'G', b'D', b'S', b'T', 0x01, 0x0b, 0x08, 0x05, 0x01]),
        1
    );
    assert_eq!(find(&[b'_', b'E', b'V', b'T', 0x09]), 1);
    assert_eq!(find(b"PWRB"), 2, "the device and the notification");
    assert_eq!(find(b"VGEN"), 2, "the device and the notification");
    for (base, irq) in windows {
        // Memory32Fixed: read-write, base, length 0x1000.
        let mut memory32 = vec![0x86, 0x09, 0x00, 0x01];
        memory32.extend_from_slice(&(base as u32).to_le_bytes());
        memory32.extend_from_slice(&0x1000u32.to_le_bytes());
        assert_eq!(find(&memory32), 1, "the window at {base:#x}");
        // Extended interrupt: consumer, edge-triggered, active-high, one interrupt.
        let mut interrupt = vec![0x89, 0x06, 0x00, 0x03, 0x01];
        interrupt.extend_from_slice(&irq.to_le_bytes());
        assert_eq!(find(&interrupt), 1, "irq {irq}");
    }
}

#[test]
fn too_many_or_no_vcpus_are_refused() {
    let memory = memory();
    let layout = PhysicalLayout::new(&[(0, RAM)]).unwrap();

    for vcpus in [0, 256] {
        assert!(write_acpi_tables(&memory, &layout, vcpus).is_err());
        assert!(write_mp_table(&memory, vcpus).is_err());
    }
}

#[test]
fn the_mp_floating_pointer_is_found_where_the_kernel_scans() {
    let memory = memory();

    write_mp_table(&memory, 2).unwrap();

    let mut pointer = [0u8; 16];
    memory
        .read_slice(&mut pointer, GuestAddress(x86::EBDA.start))
        .unwrap();
    assert_eq!(&pointer[..4], b"_MP_");
    assert_eq!(pointer.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
    let table = u32::from_le_bytes(pointer[4..8].try_into().unwrap());
    let mut header = [0u8; 4];
    memory
        .read_slice(&mut header, GuestAddress(u64::from(table)))
        .unwrap();
    assert_eq!(&header, b"PCMP");
}
