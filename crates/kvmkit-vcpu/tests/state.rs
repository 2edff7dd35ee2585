// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A vCPU's and a VM's state, saved from a paused guest and restored into a new VM
//! (through JSON, as a snapshot stores it): the guest goes on where it was.

mod common;

use std::sync::Arc;

use common::{wait_until, Recorder, TestVm, CODE_ADDR, STACK_TOP};
use kvmkit_guest_asm::{asm::*, CpuMode, GuestProgram};
use kvmkit_vcpu::x86::{VcpuState, VmState};
use kvmkit_vcpu::{Error, VcpuThread, VcpuThreadConfig};
use vm_memory::{Bytes, GuestAddress};

const COUNTER: u64 = 0x20_0000;
const MIB: u64 = 4;

/// Counts in RAM at [rdi], and in r12.
fn counter_program() -> GuestProgram {
    GuestProgram::assemble(CpuMode::Long, CODE_ADDR, |a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.inc(r12)?;
        a.mov(qword_ptr(rdi), r12)?;
        a.jmp(top)
    })
    .unwrap()
}

fn counter(vm: &TestVm) -> u64 {
    vm.ram.memory().read_obj(GuestAddress(COUNTER)).unwrap()
}

#[test]
fn a_paused_guest_saved_and_restored_into_a_new_vm_goes_on_where_it_was() {
    let program = counter_program();
    let saved_vm = TestVm::new(MIB);
    saved_vm.load(&program);
    let vcpu = saved_vm.vcpu_at(0, &program, STACK_TOP);
    let mut regs = vcpu.regs().unwrap();
    regs.rdi = COUNTER;
    vcpu.set_regs(&regs).unwrap();
    let handle =
        VcpuThread::spawn(vcpu, Arc::new(Recorder::new()), VcpuThreadConfig::default()).unwrap();
    assert!(
        wait_until(|| counter(&saved_vm) > 1000),
        "the guest never ran"
    );

    let running = handle.save_state();
    handle.pause();
    let vcpu_state = handle.save_state().unwrap();
    let vm_state = saved_vm.vm.save_state().unwrap();
    let at_pause = counter(&saved_vm);
    let mut memory = vec![0u8; usize::try_from(MIB << 20).unwrap()];
    saved_vm
        .ram
        .memory()
        .read_slice(&mut memory, GuestAddress(0))
        .unwrap();
    handle.stop();
    handle.join().unwrap();
    // Through JSON, as a snapshot's state file holds it.
    let vcpu_state: VcpuState =
        serde_json::from_str(&serde_json::to_string(&vcpu_state).unwrap()).unwrap();
    let vm_state: VmState =
        serde_json::from_str(&serde_json::to_string(&vm_state).unwrap()).unwrap();

    let restored_vm = TestVm::new(MIB);
    restored_vm
        .ram
        .memory()
        .write_slice(&memory, GuestAddress(0))
        .unwrap();
    restored_vm.vm.restore_state(&vm_state).unwrap();
    let vcpu = restored_vm.vm.create_vcpu(0).unwrap();
    vcpu.restore_state(&vcpu_state).unwrap();
    let restored_regs = vcpu.regs().unwrap();
    let handle =
        VcpuThread::spawn(vcpu, Arc::new(Recorder::new()), VcpuThreadConfig::default()).unwrap();
    let went_on = wait_until(|| counter(&restored_vm) > at_pause + 1000);
    handle.stop();
    handle.join().unwrap();

    assert!(
        matches!(running, Err(Error::NotPaused { vcpu: 0 })),
        "{running:?}"
    );
    assert_eq!(restored_regs.r12, vcpu_state.regs().r12);
    assert_eq!(restored_regs.rip, vcpu_state.regs().rip);
    // The guest counts in r12, then stores it: paused between the two, r12 is one
    // ahead of RAM.
    let counted = vcpu_state.regs().r12;
    assert!(
        counted == at_pause || counted == at_pause + 1,
        "r12 ({counted}) is not the count at the pause ({at_pause})"
    );
    assert!(
        vcpu_state.msr(0x10).is_some(),
        "the TSC was saved with the MSRs"
    );
    assert!(went_on, "the restored guest did not go on counting");
}
