// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Dirty-page tracking: the pages a guest writes, and only those, come back dirty.

mod common;

use common::{Recorder, CODE_ADDR, STACK_TOP};
use kvmkit_guest_asm::{asm::*, GuestProgram};
use kvmkit_memory::{GuestRam, MemoryConfig, MemoryLayout, RegionSpec};
use kvmkit_vcpu::{
    CpuMode, Error, Hypervisor, Memslot, MemslotError, MemslotOptions, VcpuExit, Vm,
};
use vm_memory::{Bytes, GuestAddress};

const MIB: u64 = 1 << 20;
/// The data region: its own memslot, holding no code, stack or page tables.
const DATA: u64 = 16 * MIB;

#[test]
fn exactly_the_pages_the_guest_writes_are_dirty_and_reading_clears_the_log() {
    let written = [DATA, DATA + 0x5000, DATA + 0x5008, DATA + 8 * MIB - 8];
    let program = GuestProgram::assemble(CpuMode::Long, CODE_ADDR, |a| {
        a.mov(rax, 0x1234u64)?;
        for addr in written {
            a.mov(rdi, addr)?;
            a.mov(qword_ptr(rdi), rax)?;
        }
        // Reads do not dirty a page.
        a.mov(rdi, DATA + 0x9000)?;
        a.mov(rbx, qword_ptr(rdi))?;
        a.hlt()
    })
    .unwrap();
    let layout = MemoryLayout::from_regions(vec![
        RegionSpec::new(0, 2 * MIB),
        RegionSpec::new(DATA, 8 * MIB),
    ])
    .unwrap();
    let ram = GuestRam::new(&layout, &MemoryConfig::default()).unwrap();
    let vm = Vm::new(&Hypervisor::open().unwrap()).unwrap();
    let slots = vm
        .register_memory_with(
            ram.shared_memory(),
            MemslotOptions::default().logging_dirty_pages(),
        )
        .unwrap();
    ram.memory()
        .write_slice(program.bytes(), GuestAddress(CODE_ADDR))
        .unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    vcpu.enter_mode(ram.memory(), CpuMode::Long, CODE_ADDR, STACK_TOP)
        .unwrap();
    let data_slot = slots[1].slot();
    let before = vm.dirty_pages(data_slot).unwrap();

    assert_eq!(vcpu.run(&Recorder::new()).unwrap(), VcpuExit::Hlt);
    let after = vm.dirty_pages(data_slot).unwrap();
    let again = vm.dirty_pages(data_slot).unwrap();

    assert_eq!(before.count(), 0);
    assert_eq!(
        after.dirty_pages().collect::<Vec<_>>(),
        vec![DATA, DATA + 0x5000, DATA + 8 * MIB - 0x1000]
    );
    assert_eq!(again.count(), 0, "reading the log must clear it");
}

/// `mib` of RAM registered with `options` in a new VM.
fn registered(mib: u64, options: MemslotOptions) -> (GuestRam, Vm, Vec<Memslot>) {
    let ram = GuestRam::new(
        &MemoryLayout::x86_64(mib * MIB).unwrap(),
        &MemoryConfig::default(),
    )
    .unwrap();
    let vm = Vm::new(&Hypervisor::open().unwrap()).unwrap();
    let slots = vm
        .register_memory_with(ram.shared_memory(), options)
        .unwrap();
    (ram, vm, slots)
}

#[test]
fn dirty_pages_of_a_slot_registered_without_logging_is_a_clear_error() {
    let (_ram, vm, slots) = registered(2, MemslotOptions::default());

    let error = vm.dirty_pages(slots[0].slot()).unwrap_err();

    assert!(
        matches!(
            error,
            Error::Memslot {
                slot: 0,
                reason: MemslotError::NotLogging,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn the_dirty_log_of_a_big_slot_is_sized_by_the_vm_not_by_the_caller() {
    // Before: a caller-built `Memslot { size: 4096, .. }` for this 256 MiB slot made
    // KVM write 8 KiB of bitmap into an 8-byte buffer. Now only the slot number is
    // taken, and the size comes from the VM's own table.
    let (_ram, vm, slots) = registered(256, MemslotOptions::default().logging_dirty_pages());

    let log = vm.dirty_pages(slots[0].slot()).unwrap();

    assert_eq!(log.words().len() as u64, 256 * MIB / 4096 / 64);
    assert!(matches!(vm.dirty_pages(7), Err(Error::NoMemslot(7))));
}
