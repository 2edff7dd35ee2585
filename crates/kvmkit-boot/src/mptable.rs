// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The Intel MultiProcessor Specification (1.4) table, for kernels that do not read
//! ACPI (`acpi=off`): the CPUs, the ISA bus, the I/O APIC and how ISA interrupts reach
//! it.

use kvmkit_memory::x86;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::acpi::MAX_VCPUS;

use crate::{BootError, BootStructure, LayoutError};

const SPEC_REVISION: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
/// The I/O APIC's id in the table (APIC ids of CPUs are their indices).
const IOAPIC_ID: u8 = 0xfe;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const INTERRUPT_INT: u8 = 0;
const INTERRUPT_NMI: u8 = 1;
const INTERRUPT_EXTINT: u8 = 3;
const CPU_ENABLED: u8 = 1;
const CPU_BOOT_PROCESSOR: u8 = 2;
/// Family 6 as the CPU signature; FPU and APIC as its features.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;
/// ISA interrupt lines routed to the I/O APIC pin of the same number (IRQ 0, the
/// PIT, goes to pin 2 as on every PC).
const ISA_IRQS: u8 = 16;

/// Writes the MP floating pointer at [`x86::EBDA`] and the configuration table at
/// [`x86::MP_TABLE`] for `vcpus` vCPUs (vCPU 0 the boot processor).
pub fn write_mp_table<M: GuestMemoryBackend>(memory: &M, vcpus: u32) -> Result<(), BootError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(BootError::Vcpus {
            count: vcpus,
            max: MAX_VCPUS,
        });
    }
    let table = configuration_table(vcpus);
    if table.len() as u64 > x86::MP_TABLE.size {
        return Err(LayoutError::MpTableTooLarge.into());
    }
    let pointer = floating_pointer(x86::MP_TABLE.start_u32());
    for (bytes, addr) in [
        (&pointer[..], x86::EBDA.start),
        (&table[..], x86::MP_TABLE.start),
    ] {
        memory
            .write_slice(bytes, GuestAddress(addr))
            .map_err(BootError::write(BootStructure::MpTable))?;
    }
    Ok(())
}

/// The byte that makes `bytes` sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte)))
}

fn floating_pointer(table: u32) -> [u8; 16] {
    let mut pointer = [0u8; 16];
    pointer[..4].copy_from_slice(b"_MP_");
    pointer[4..8].copy_from_slice(&table.to_le_bytes());
    pointer[8] = 1; // length in 16-byte units
    pointer[9] = SPEC_REVISION;
    pointer[10] = checksum(&pointer);
    pointer
}

fn configuration_table(vcpus: u32) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut count = 0u16;
    let mut push = |entry: &[u8]| {
        entries.extend_from_slice(entry);
        count += 1;
    };
    for id in 0..vcpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BOOT_PROCESSOR } else { 0 };
        // At most MAX_VCPUS, checked above: an 8-bit APIC id.
        let id = u8::try_from(id).unwrap_or(u8::MAX);
        let mut cpu = vec![ENTRY_PROCESSOR, id, APIC_VERSION, flags];
        cpu.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        cpu.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        cpu.extend_from_slice(&[0; 8]);
        push(&cpu);
    }
    push(&[ENTRY_BUS, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    let mut ioapic = vec![ENTRY_IOAPIC, IOAPIC_ID, IOAPIC_VERSION, 1];
    ioapic.extend_from_slice(&x86::IOAPIC.start_u32().to_le_bytes());
    push(&ioapic);
    push(&[
        ENTRY_IO_INTERRUPT,
        INTERRUPT_EXTINT,
        0,
        0,
        0,
        0,
        IOAPIC_ID,
        0,
    ]);
    for irq in 0..ISA_IRQS {
        let pin = if irq == 0 { 2 } else { irq };
        if irq == 2 {
            continue; // the cascade
        }
        push(&[
            ENTRY_IO_INTERRUPT,
            INTERRUPT_INT,
            0,
            0,
            0,
            irq,
            IOAPIC_ID,
            pin,
        ]);
    }
    push(&[ENTRY_LOCAL_INTERRUPT, INTERRUPT_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    push(&[ENTRY_LOCAL_INTERRUPT, INTERRUPT_NMI, 0, 0, 0, 0, 0xff, 1]);

    // One entry per vCPU (at most MAX_VCPUS) and a few more: well within 16 bits.
    let length = u16::try_from(44 + entries.len()).unwrap_or(u16::MAX);
    let mut table = Vec::with_capacity(usize::from(length));
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&length.to_le_bytes());
    table.push(SPEC_REVISION);
    table.push(0); // checksum
    table.extend_from_slice(b"KVMKIT  ");
    table.extend_from_slice(b"KVMKIT VM   ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    table.extend_from_slice(&0u16.to_le_bytes()); // its size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&x86::LAPIC.start_u32().to_le_bytes());
    table.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte))
    }

    #[test]
    fn the_floating_pointer_and_table_sum_to_zero_and_point_at_each_other() {
        let pointer = floating_pointer(x86::MP_TABLE.start_u32());
        let table = configuration_table(2);

        assert_eq!(sum(&pointer), 0);
        assert_eq!(sum(&table), 0);
        assert_eq!(&pointer[4..8], &x86::MP_TABLE.start_u32().to_le_bytes());
        assert_eq!(
            u16::from_le_bytes([table[4], table[5]]) as usize,
            table.len()
        );
    }

    #[test]
    fn every_vcpu_is_listed_and_only_vcpu_0_boots() {
        let table = configuration_table(3);

        let cpus: Vec<&[u8]> = table[44..]
            .chunks(20)
            .take_while(|entry| entry[0] == ENTRY_PROCESSOR)
            .collect();

        assert_eq!(cpus.len(), 3);
        assert_eq!(cpus[0][3], CPU_ENABLED | CPU_BOOT_PROCESSOR);
        assert_eq!(cpus[2][1], 2, "APIC id");
        assert_eq!(cpus[2][3], CPU_ENABLED);
    }
}
