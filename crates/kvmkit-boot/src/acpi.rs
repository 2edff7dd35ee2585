// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! ACPI tables for a hardware-reduced x86 machine: how a kernel finds its CPUs (MADT),
//! its virtio-mmio devices and serial port (DSDT), and how it powers off and resets
//! (FADT and `\_S5`).

use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{Aml, AmlSink};
use kvmkit_memory::x86;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::layout::{LegacyDevices, PhysicalLayout};
use crate::{BootError, BootStructure, LayoutError};

const OEM_ID: [u8; 6] = *b"KVMKIT";
const OEM_REVISION: u32 = 1;
/// The sleep type `\_S5` names, which the sleep control register takes as power-off.
pub const S5_SLEEP_TYPE: u8 = 5;
/// The most vCPUs the MADT describes (xAPIC ids are 8 bits; 0xff is broadcast).
pub const MAX_VCPUS: u32 = 255;

/// Writes the RSDP at [`x86::ACPI_TABLES`] and the XSDT, FADT, MADT and DSDT after it, for
/// `vcpus` vCPUs and the devices of `layout` (its windows and its legacy devices);
/// returns the RSDP's address.
pub fn write_acpi_tables<M: GuestMemoryBackend>(
    memory: &M,
    layout: &PhysicalLayout,
    vcpus: u32,
) -> Result<u64, BootError> {
    let legacy = layout.legacy_devices();
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(BootError::Vcpus {
            count: vcpus,
            max: MAX_VCPUS,
        });
    }
    let mut writer = TableWriter {
        memory,
        next: x86::ACPI_TABLES.start + Rsdp::len() as u64,
    };
    let dsdt = writer.put(dsdt(layout, legacy).as_slice())?;
    let fadt = writer.put(&to_bytes(&fadt(legacy, dsdt)))?;
    let madt = writer.put(madt(vcpus).as_slice())?;
    let mut xsdt = XSDT::new(OEM_ID, *b"KVMKXSDT", OEM_REVISION);
    xsdt.add_entry(fadt);
    xsdt.add_entry(madt);
    let xsdt = writer.put(&to_bytes(&xsdt))?;
    let rsdp = Rsdp::new(OEM_ID, xsdt);
    memory
        .write_slice(&to_bytes(&rsdp), GuestAddress(x86::ACPI_TABLES.start))
        .map_err(BootError::write(BootStructure::AcpiTables))?;
    Ok(x86::ACPI_TABLES.start)
}

fn to_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// Puts tables one after the other, 16-byte aligned, below 1 MiB.
struct TableWriter<'a, M> {
    memory: &'a M,
    next: u64,
}

impl<M: GuestMemoryBackend> TableWriter<'_, M> {
    fn put(&mut self, table: &[u8]) -> Result<u64, BootError> {
        let addr = self.next.next_multiple_of(16);
        let end = addr + table.len() as u64;
        if end > x86::ACPI_TABLES.end() {
            return Err(LayoutError::AcpiTablesTooLarge {
                room: x86::ACPI_TABLES.size,
            }
            .into());
        }
        self.memory
            .write_slice(table, GuestAddress(addr))
            .map_err(BootError::write(BootStructure::AcpiTables))?;
        self.next = end;
        Ok(addr)
    }
}

fn io_register(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

/// A hardware-reduced FADT: no PM timer, SCI or fixed buttons; power-off through the
/// sleep control register and reset through the reset register.
fn fadt(legacy: &LegacyDevices, dsdt: u64) -> acpi_tables::fadt::FADT {
    let mut fadt = FADTBuilder::new(OEM_ID, *b"KVMKFACP", OEM_REVISION)
        .dsdt_64(dsdt)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.sleep_control_reg = io_register(legacy.sleep_control_port);
    fadt.sleep_status_reg = io_register(legacy.sleep_status_port);
    fadt.reset_reg = io_register(legacy.reset.0);
    fadt.reset_value = legacy.reset.1;
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"KVMKIT\0\0").into();
    fadt.finalize()
}

const MADT_PCAT_COMPAT: u32 = 1;
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_INTERRUPT_OVERRIDE: u8 = 2;
const MADT_LOCAL_APIC_NMI: u8 = 4;
const LOCAL_APIC_ENABLED: u32 = 1;

/// The MADT: one enabled local APIC per vCPU (APIC id = vCPU index), the I/O APIC
/// (GSIs from 0), the PIT's IRQ 0 routed to GSI 2, and LINT1 as NMI on every CPU.
fn madt(vcpus: u32) -> Sdt {
    let mut madt = Sdt::new(*b"APIC", 44, 5, OEM_ID, *b"KVMKMADT", OEM_REVISION);
    madt.write(36, x86::LAPIC.start_u32().to_le_bytes());
    madt.write(40, MADT_PCAT_COMPAT.to_le_bytes());
    for id in 0..vcpus {
        // At most MAX_VCPUS, checked by the caller: an 8-bit APIC id.
        let id = u8::try_from(id).unwrap_or(u8::MAX);
        let mut entry = vec![MADT_LOCAL_APIC, 8, id, id];
        entry.extend_from_slice(&LOCAL_APIC_ENABLED.to_le_bytes());
        madt.append_slice(&entry);
    }
    let mut ioapic = vec![MADT_IO_APIC, 12, 0, 0];
    ioapic.extend_from_slice(&x86::IOAPIC.start_u32().to_le_bytes());
    ioapic.extend_from_slice(&0u32.to_le_bytes());
    madt.append_slice(&ioapic);
    // Bus 0 (ISA), IRQ 0 -> GSI 2, flags: conforming polarity and trigger.
    let mut pit = vec![MADT_INTERRUPT_OVERRIDE, 10, 0, 0];
    pit.extend_from_slice(&2u32.to_le_bytes());
    pit.extend_from_slice(&0u16.to_le_bytes());
    madt.append_slice(&pit);
    // All processors (0xff), flags conforming, LINT1.
    madt.append_slice(&[MADT_LOCAL_APIC_NMI, 6, 0xff, 0, 0, 1]);
    madt
}

/// The DSDT: `\_S5` for power-off, COM1 (`PNP0501`), the pvpanic port (`QEMU0001`),
/// the VM generation ID (`VMGENCTR`, `VM_Gen_Counter`), the power button and the
/// Generic Event Device that reports it (`PNP0C0C`, `ACPI0013`), and every virtio-mmio
/// window (`LNRO0005`, its registers and its edge-triggered interrupt).
fn dsdt(layout: &PhysicalLayout, legacy: &LegacyDevices) -> Sdt {
    let mut body = Vec::new();
    aml::Name::new("_S5_".into(), &aml::Package::new(vec![&S5_SLEEP_TYPE])).to_aml_bytes(&mut body);
    let mut devices: Vec<RawAml> = Vec::new();
    if let Some((port, irq)) = legacy.serial {
        let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501"));
        let uid = aml::Name::new("_UID".into(), &0u8);
        let io = aml::IO::new(port, port, 1, 8);
        let interrupt = aml::Interrupt::new(true, true, false, false, irq);
        let crs = aml::Name::new(
            "_CRS".into(),
            &aml::ResourceTemplate::new(vec![&io, &interrupt]),
        );
        let device = aml::Device::new("COM1".into(), vec![&hid, &uid, &crs]);
        devices.push(RawAml(to_bytes(&device)));
    }
    if let Some(port) = legacy.pvpanic_port {
        let hid = aml::Name::new("_HID".into(), &"QEMU0001");
        let io = aml::IO::new(port, port, 1, 1);
        let crs = aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&io]));
        let device = aml::Device::new("PEVT".into(), vec![&hid, &crs]);
        devices.push(RawAml(to_bytes(&device)));
    }
    if let Some(addr) = legacy.vm_generation_id {
        // Linux's vmgenid matches the _HID; others the _CID, as QEMU's and
        // Firecracker's tables give it. ADDR is the ID's address, low then high.
        let hid = aml::Name::new("_HID".into(), &"VMGENCTR");
        let cid = aml::Name::new("_CID".into(), &"VM_Gen_Counter");
        let ddn = aml::Name::new("_DDN".into(), &"VM_Gen_Counter");
        let (low, high) = (addr & 0xffff_ffff, addr >> 32);
        let package = aml::Package::new(vec![&low, &high]);
        let address = aml::Name::new("ADDR".into(), &package);
        let device = aml::Device::new("VGEN".into(), vec![&hid, &cid, &ddn, &address]);
        devices.push(RawAml(to_bytes(&device)));
    }
    if let Some((port, irq)) = legacy.generic_events {
        devices.push(power_button());
        devices.push(generic_event_device(
            port,
            irq,
            legacy.vm_generation_id.is_some(),
        ));
    }
    for (index, (base, size, irq)) in layout.virtio_mmio().enumerate() {
        let name = format!("VR{index:02X}");
        let hid = aml::Name::new("_HID".into(), &"LNRO0005");
        let uid = aml::Name::new("_UID".into(), &index);
        // Device windows lie in the MMIO hole, below 4 GiB (PhysicalLayout checks).
        let (Ok(base), Ok(size)) = (u32::try_from(base), u32::try_from(size)) else {
            continue;
        };
        let registers = aml::Memory32Fixed::new(true, base, size);
        let interrupt = aml::Interrupt::new(true, true, false, false, irq);
        let crs = aml::Name::new(
            "_CRS".into(),
            &aml::ResourceTemplate::new(vec![&registers, &interrupt]),
        );
        let device = aml::Device::new(name.as_str().into(), vec![&hid, &uid, &crs]);
        devices.push(RawAml(to_bytes(&device)));
    }
    let children: Vec<&dyn Aml> = devices.iter().map(|device| device as &dyn Aml).collect();
    aml::Scope::new("\\_SB_".into(), children).to_aml_bytes(&mut body);
    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, *b"KVMKDSDT", OEM_REVISION);
    dsdt.append_slice(&body);
    dsdt
}

/// The power button (`PNP0C0C`), a control-method button: the Generic Event Device
/// notifies it.
fn power_button() -> RawAml {
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C0C"));
    let uid = aml::Name::new("_UID".into(), &0u8);
    RawAml(to_bytes(&aml::Device::new("PWRB".into(), vec![&hid, &uid])))
}

/// The Generic Event Device (`ACPI0013`): its edge-triggered interrupt `irq` runs
/// `_EVT`, which reads (and so clears) the pending events from the byte at `port` and
/// notifies the device of each: bit 0 the power button, bit 1 (with `vm_generation`)
/// the VM generation ID.
fn generic_event_device(port: u16, irq: u32, vm_generation: bool) -> RawAml {
    const POWER_BUTTON: u8 = 1 << 0;
    const VM_GENERATION: u8 = 1 << 1;
    const DEVICE_CHECK: u8 = 0x80;
    let hid = aml::Name::new("_HID".into(), &"ACPI0013");
    let uid = aml::Name::new("_UID".into(), &0u8);
    let interrupt = aml::Interrupt::new(true, true, false, false, irq);
    let crs = aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&interrupt]));
    let (start, length) = (usize::from(port), 1usize);
    let region = aml::OpRegion::new("GDST".into(), aml::OpRegionSpace::SystemIO, &start, &length);
    let field = aml::Field::new(
        "GDST".into(),
        aml::FieldAccessType::Byte,
        aml::FieldLockRule::NoLock,
        aml::FieldUpdateRule::Preserve,
        vec![aml::FieldEntry::Named(*b"GDAT", 8)],
    );
    let events = aml::Local(0);
    let register = aml::Path::new("GDAT");
    let read = aml::Store::new(&events, &register);
    let pressed = aml::And::new(&aml::ZERO, &events, &POWER_BUTTON);
    let power_button = aml::Path::new("\\_SB_.PWRB");
    let notify_button = aml::Notify::new(&power_button, &DEVICE_CHECK);
    let on_button = aml::If::new(&pressed, vec![&notify_button]);
    let changed = aml::And::new(&aml::ZERO, &events, &VM_GENERATION);
    let generation = aml::Path::new("\\_SB_.VGEN");
    let notify_generation = aml::Notify::new(&generation, &DEVICE_CHECK);
    let on_generation = aml::If::new(&changed, vec![&notify_generation]);
    let mut body: Vec<&dyn Aml> = vec![&read, &on_button];
    if vm_generation {
        body.push(&on_generation);
    }
    let evt = aml::Method::new("_EVT".into(), 1, true, body);
    let device = aml::Device::new("GED_".into(), vec![&hid, &uid, &crs, &region, &field, &evt]);
    RawAml(to_bytes(&device))
}

/// AML that is already bytes.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}
