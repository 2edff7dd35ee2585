// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Each CPU mode runs a guest that computes something and reports it through a port.

mod common;

use common::{Recorder, TestVm, CODE_ADDR, MMIO_ADDR};
use kvmkit_guest_asm::{asm::*, GuestProgram};
use kvmkit_vcpu::{CpuMode, Error, IoKind, VcpuExit};

const RESULT_PORT: u16 = 0x500;

fn written_to(recorder: &Recorder, port: u16) -> Vec<Vec<u8>> {
    recorder
        .seen()
        .into_iter()
        .filter(|s| s.kind == IoKind::PioWrite && s.addr == u64::from(port))
        .map(|s| s.data)
        .collect()
}

#[test]
fn real_mode_guest_sums_one_to_hundred() {
    let program = GuestProgram::assemble(CpuMode::Real, CODE_ADDR, |a| {
        let mut top = a.create_label();
        a.xor(ax, ax)?;
        a.mov(cx, 100u32)?;
        a.set_label(&mut top)?;
        a.add(ax, cx)?;
        a.loop_(top)?;
        a.mov(dx, u32::from(RESULT_PORT))?;
        a.out(dx, ax)?;
        a.hlt()
    })
    .unwrap();
    let (_vm, mut vcpu) = TestVm::boot(2, &program);
    let recorder = Recorder::new();

    let exit = vcpu.run(&recorder).unwrap();

    assert_eq!(exit, VcpuExit::Hlt);
    assert_eq!(
        written_to(&recorder, RESULT_PORT),
        vec![5050u16.to_le_bytes().to_vec()]
    );
}

#[test]
fn real_mode_entry_above_64k_runs_with_a_based_code_segment() {
    let program = GuestProgram::assemble(CpuMode::Real, 0x2_3000, |a| {
        a.mov(ax, 0x4242u32)?;
        a.mov(dx, u32::from(RESULT_PORT))?;
        a.out(dx, ax)?;
        a.hlt()
    })
    .unwrap();
    let (_vm, mut vcpu) = TestVm::boot(2, &program);
    let recorder = Recorder::new();

    assert_eq!(vcpu.run(&recorder).unwrap(), VcpuExit::Hlt);
    assert_eq!(written_to(&recorder, RESULT_PORT), vec![vec![0x42, 0x42]]);
}

#[test]
fn protected_mode_guest_computes_factorial_with_32_bit_registers() {
    let program = GuestProgram::assemble(CpuMode::Protected, CODE_ADDR, |a| {
        let mut top = a.create_label();
        a.mov(eax, 1u32)?;
        a.mov(ecx, 12u32)?;
        a.set_label(&mut top)?;
        a.imul_2(eax, ecx)?;
        a.loop_(top)?;
        a.mov(dx, u32::from(RESULT_PORT))?;
        a.out(dx, eax)?;
        a.hlt()
    })
    .unwrap();
    let (_vm, mut vcpu) = TestVm::boot(2, &program);
    let recorder = Recorder::new();

    assert_eq!(vcpu.run(&recorder).unwrap(), VcpuExit::Hlt);
    assert_eq!(
        written_to(&recorder, RESULT_PORT),
        vec![479_001_600u32.to_le_bytes().to_vec()]
    );
}

#[test]
fn protected_mode_guest_reaches_memory_above_one_megabyte() {
    let program = GuestProgram::assemble(CpuMode::Protected, CODE_ADDR, |a| {
        a.mov(dword_ptr(0x30_0000), 0xfeed_f00du32)?;
        a.mov(eax, dword_ptr(0x30_0000))?;
        a.mov(dx, u32::from(RESULT_PORT))?;
        a.out(dx, eax)?;
        a.hlt()
    })
    .unwrap();
    let (_vm, mut vcpu) = TestVm::boot(4, &program);
    let recorder = Recorder::new();

    assert_eq!(vcpu.run(&recorder).unwrap(), VcpuExit::Hlt);
    assert_eq!(
        written_to(&recorder, RESULT_PORT),
        vec![0xfeed_f00du32.to_le_bytes().to_vec()]
    );
}

#[test]
fn long_mode_guest_computes_fibonacci_with_64_bit_registers() {
    // fib(90) = 2880067194370816120 needs 62 bits.
    let program = GuestProgram::assemble(CpuMode::Long, CODE_ADDR, |a| {
        let mut top = a.create_label();
        a.xor(rax, rax)?;
        a.mov(rbx, 1u64)?;
        a.mov(rcx, 90u64)?;
        a.set_label(&mut top)?;
        a.lea(rdx, qword_ptr(rax + rbx))?;
        a.mov(rax, rbx)?;
        a.mov(rbx, rdx)?;
        a.dec(rcx)?;
        a.jnz(top)?;
        a.mov(rdi, MMIO_ADDR)?;
        a.mov(qword_ptr(rdi), rax)?;
        a.hlt()
    })
    .unwrap();
    let (_vm, mut vcpu) = TestVm::boot(2, &program);
    let recorder = Recorder::new();

    assert_eq!(vcpu.run(&recorder).unwrap(), VcpuExit::Hlt);
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].kind, IoKind::MmioWrite);
    assert_eq!(seen[0].addr, MMIO_ADDR);
    assert_eq!(seen[0].data, 2_880_067_194_370_816_120u64.to_le_bytes());
}

#[test]
fn long_mode_identity_map_reaches_ram_above_two_gigabytes() {
    // 3 GiB of RAM: the page at 2.5 GiB is RAM and must be mapped 1:1.
    let addr = 0xa000_0000u64;
    let program = GuestProgram::assemble(CpuMode::Long, CODE_ADDR, |a| {
        a.mov(rdi, addr)?;
        a.mov(rax, 0x1122_3344_5566_7788u64)?;
        a.mov(qword_ptr(rdi), rax)?;
        a.hlt()
    })
    .unwrap();
    let (vm, mut vcpu) = TestVm::boot(3 << 10, &program);
    let recorder = Recorder::new();

    assert_eq!(vcpu.run(&recorder).unwrap(), VcpuExit::Hlt);
    use vm_memory::{Bytes, GuestAddress};
    let value: u64 = vm.ram.memory().read_obj(GuestAddress(addr)).unwrap();
    assert_eq!(value, 0x1122_3344_5566_7788);
    assert!(recorder.seen().is_empty(), "RAM writes must not exit");
}

#[test]
fn long_mode_entry_beyond_the_identity_map_is_refused() {
    let vm = TestVm::new(4);
    let vcpu = vm.vm.create_vcpu(0).unwrap();

    let error = vcpu
        .enter_mode(vm.ram.memory(), CpuMode::Long, 1 << 32, 0x8000)
        .unwrap_err();

    assert!(
        matches!(
            error,
            Error::EntryOutOfReach {
                mode: CpuMode::Long,
                entry: 0x1_0000_0000
            }
        ),
        "{error}"
    );
}

#[test]
fn in_kernel_pit_answers_port_reads_without_exits() {
    let program = long_mode(|a| {
        a.mov(al, 0u32)?;
        a.out(0x43, al)?; // latch counter 0
        a.in_(al, 0x40)?;
        a.in_(al, 0x40)?;
        a.mov(dx, 0x80u32)?;
        a.out(dx, al)?;
        a.hlt()
    });
    let vm = TestVm::new(4);
    vm.vm.create_irqchip().unwrap();
    vm.vm.create_pit().unwrap();
    vm.load(&program);
    let mut vcpu = vm.vcpu_at(0, &program, common::STACK_TOP);
    let recorder = Recorder {
        stop_port: Some(0x80),
        ..Recorder::new()
    };

    let exit = vcpu.run(&recorder).unwrap();

    assert!(matches!(exit, VcpuExit::IoStop(_)), "{exit:?}");
    let ports: Vec<u64> = recorder.seen().iter().map(|s| s.addr).collect();
    assert_eq!(
        ports,
        vec![0x80],
        "the PIT's ports must not reach userspace"
    );
}

fn long_mode(write: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> GuestProgram {
    GuestProgram::assemble(CpuMode::Long, CODE_ADDR, write).unwrap()
}
