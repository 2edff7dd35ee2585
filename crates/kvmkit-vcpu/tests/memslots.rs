// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Memslot registration: all or nothing, and guest memory kept mapped while KVM can
//! reach it, whatever the caller drops.

// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::sync::Arc;

use common::{Recorder, CODE_ADDR, STACK_TOP};
use kvmkit_guest_asm::{asm::*, GuestProgram};
use kvmkit_memory::{GuestRam, MemoryConfig, MemoryLayout, RegionSpec};
use kvmkit_vcpu::{CpuMode, Error, Hypervisor, IoKind, VcpuExit, Vm};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MIB: u64 = 1 << 20;

fn ram(regions: &[(u64, u64)]) -> GuestRam {
    let specs = regions
        .iter()
        .map(|&(addr, size)| RegionSpec::new(addr, size))
        .collect();
    GuestRam::new(
        &MemoryLayout::from_regions(specs).unwrap(),
        &MemoryConfig::default(),
    )
    .unwrap()
}

#[test]
fn a_registration_refused_halfway_leaves_no_slot_behind() {
    let vm = Vm::new(&Hypervisor::open().unwrap()).unwrap();
    let first = ram(&[(4 * MIB, MIB)]);
    vm.register_memory(first.shared_memory()).unwrap();
    // Its second region overlaps the first registration, so KVM refuses it after
    // the first region [0, 1 MiB) became a slot.
    let second = ram(&[(0, MIB), (4 * MIB, MIB)]);

    let error = vm.register_memory(second.shared_memory()).unwrap_err();
    drop(second);

    assert!(matches!(error, Error::Memslot { slot: 2, .. }), "{error}");
    assert_eq!(vm.memslots().len(), 1, "{:?}", vm.memslots());
    // The stale slot would make KVM refuse [0, 1 MiB) again.
    let third = ram(&[(0, MIB)]);
    assert_eq!(vm.register_memory(third.shared_memory()).unwrap().len(), 1);
}

#[test]
fn guest_memory_stays_mapped_while_a_vcpu_lives_after_the_owner_and_the_vm_are_dropped() {
    let program = GuestProgram::assemble(CpuMode::Long, CODE_ADDR, |a| {
        a.mov(rdi, 0x20_0000u64)?;
        a.mov(eax, dword_ptr(rdi))?;
        a.mov(dx, 0x80u32)?;
        a.out(dx, eax)?;
        a.hlt()
    })
    .unwrap();
    let memory = Arc::new(
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 * MIB as usize)]).unwrap(),
    );
    memory
        .write_slice(program.bytes(), GuestAddress(CODE_ADDR))
        .unwrap();
    memory
        .write_obj(0x5eed_f00du32, GuestAddress(0x20_0000))
        .unwrap();
    let vm = Vm::new(&Hypervisor::open().unwrap()).unwrap();
    vm.register_memory(&memory).unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    vcpu.enter_mode(&*memory, CpuMode::Long, CODE_ADDR, STACK_TOP)
        .unwrap();

    drop(memory);
    drop(vm);
    // New mappings that could land where guest RAM was.
    let decoys: Vec<Vec<u8>> = (0..16).map(|_| vec![0xaa; 4 * MIB as usize]).collect();
    let recorder = Recorder::new();
    let exit = vcpu.run(&recorder).unwrap();

    assert_eq!(exit, VcpuExit::Hlt);
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].kind, IoKind::PioWrite);
    assert_eq!(seen[0].data, 0x5eed_f00du32.to_le_bytes());
    drop(decoys);
}
