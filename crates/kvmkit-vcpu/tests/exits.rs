// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every exit class arrives typed, with the right address, size and data.

mod common;

use common::{Recorder, Seen, TestVm, CODE_ADDR, MMIO_ADDR};
use kvmkit_guest_asm::{asm::*, Bitness, GuestProgram};
use kvmkit_vcpu::{Error, ExitReason, IoAccess, IoHandler, IoKind, VcpuExit};

fn long_mode(write: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> GuestProgram {
    GuestProgram::assemble(Bitness::Long64, CODE_ADDR, write).unwrap()
}

fn seen(kind: IoKind, addr: u64, data: &[u8]) -> Seen {
    Seen {
        kind,
        addr,
        data: data.to_vec(),
    }
}

#[test]
fn port_writes_of_each_size_arrive_with_port_and_data() {
    let program = long_mode(|a| {
        a.mov(dx, 0x3f8u32)?;
        a.mov(eax, 0x1234_5678u32)?;
        a.out(dx, al)?;
        a.mov(dx, 0x402u32)?;
        a.out(dx, ax)?;
        a.mov(dx, 0xcf8u32)?;
        a.out(dx, eax)?;
        a.hlt()
    });
    let (_vm, mut vcpu) = TestVm::boot(2, &program);
    let recorder = Recorder::new();

    let exits: Vec<VcpuExit> = (0..4).map(|_| vcpu.run_once(&recorder).unwrap()).collect();

    let write = |addr, len| {
        VcpuExit::Io(IoAccess {
            kind: IoKind::PioWrite,
            addr,
            len,
        })
    };
    assert_eq!(
        exits,
        vec![
            write(0x3f8, 1),
            write(0x402, 2),
            write(0xcf8, 4),
            VcpuExit::Hlt
        ]
    );
    assert_eq!(
        recorder.seen(),
        vec![
            seen(IoKind::PioWrite, 0x3f8, &[0x78]),
            seen(IoKind::PioWrite, 0x402, &[0x78, 0x56]),
            seen(IoKind::PioWrite, 0xcf8, &[0x78, 0x56, 0x34, 0x12]),
        ]
    );
}

#[test]
fn port_read_returns_what_the_handler_filled_in() {
    let program = long_mode(|a| {
        a.mov(dx, 0x71u32)?;
        a.in_(eax, dx)?;
        a.mov(dx, 0x80u32)?;
        a.out(dx, eax)?;
        a.hlt()
    });
    let (_vm, mut vcpu) = TestVm::boot(2, &program);
    let recorder = Recorder {
        read_value: 0xcafe_babe,
        ..Recorder::new()
    };

    let first = vcpu.run_once(&recorder).unwrap();
    assert_eq!(vcpu.run(&recorder).unwrap(), VcpuExit::Hlt);

    assert_eq!(
        first,
        VcpuExit::Io(IoAccess {
            kind: IoKind::PioRead,
            addr: 0x71,
            len: 4
        })
    );
    assert_eq!(
        recorder.seen()[1],
        seen(IoKind::PioWrite, 0x80, &0xcafe_babeu32.to_le_bytes())
    );
}

#[test]
fn mmio_write_and_read_arrive_with_address_size_and_data() {
    let program = long_mode(|a| {
        a.mov(rdi, MMIO_ADDR)?;
        a.mov(word_ptr(rdi + 6), 0xbeefu32)?;
        a.mov(eax, dword_ptr(rdi + 0x10))?;
        a.mov(dword_ptr(rdi + 0x20), eax)?;
        a.hlt()
    });
    let (_vm, mut vcpu) = TestVm::boot(2, &program);
    let recorder = Recorder {
        read_value: 0x0bad_f00d,
        ..Recorder::new()
    };

    let first = vcpu.run_once(&recorder).unwrap();
    let second = vcpu.run_once(&recorder).unwrap();
    assert_eq!(vcpu.run(&recorder).unwrap(), VcpuExit::Hlt);

    assert_eq!(
        first,
        VcpuExit::Io(IoAccess {
            kind: IoKind::MmioWrite,
            addr: MMIO_ADDR + 6,
            len: 2
        })
    );
    assert_eq!(
        second,
        VcpuExit::Io(IoAccess {
            kind: IoKind::MmioRead,
            addr: MMIO_ADDR + 0x10,
            len: 4
        })
    );
    assert_eq!(
        recorder.seen(),
        vec![
            seen(IoKind::MmioWrite, MMIO_ADDR + 6, &[0xef, 0xbe]),
            seen(
                IoKind::MmioRead,
                MMIO_ADDR + 0x10,
                &0x0bad_f00du32.to_le_bytes()
            ),
            seen(
                IoKind::MmioWrite,
                MMIO_ADDR + 0x20,
                &0x0bad_f00du32.to_le_bytes()
            ),
        ]
    );
}

#[test]
fn default_handler_reads_all_ones_from_unclaimed_ports_and_addresses() {
    struct Nothing;
    impl IoHandler for Nothing {}
    let program = long_mode(|a| {
        a.mov(dx, 0x1234u32)?;
        a.in_(eax, dx)?;
        a.mov(rdi, MMIO_ADDR)?;
        a.mov(rbx, qword_ptr(rdi))?;
        a.hlt()
    });
    let (_vm, mut vcpu) = TestVm::boot(2, &program);

    assert_eq!(vcpu.run(&Nothing).unwrap(), VcpuExit::Hlt);

    let regs = vcpu.regs().unwrap();
    assert_eq!(regs.rax, 0xffff_ffff);
    assert_eq!(regs.rbx, u64::MAX);
}

#[test]
fn handler_stop_returns_io_stop_without_reentering_the_guest() {
    let program = long_mode(|a| {
        a.mov(dx, 0x64u32)?;
        a.mov(al, 0xfeu32)?;
        a.out(dx, al)?;
        a.mov(dx, 0x3f8u32)?;
        a.out(dx, al)?;
        a.hlt()
    });
    let (_vm, mut vcpu) = TestVm::boot(2, &program);
    let recorder = Recorder {
        stop_port: Some(0x64),
        ..Recorder::new()
    };

    let exit = vcpu.run(&recorder).unwrap();

    assert_eq!(
        exit,
        VcpuExit::IoStop(IoAccess {
            kind: IoKind::PioWrite,
            addr: 0x64,
            len: 1
        })
    );
    assert_eq!(recorder.seen().len(), 1, "the guest ran past the stop");
}

#[test]
fn string_port_write_arrives_as_one_access_with_all_bytes() {
    let message = b"Hello";
    let program = long_mode(|a| {
        let mut text = a.create_label();
        a.lea(rsi, ptr(text))?;
        a.mov(ecx, message.len() as u32)?;
        a.mov(dx, 0x3f8u32)?;
        a.rep().outsb()?;
        a.hlt()?;
        a.set_label(&mut text)?;
        a.db(message)
    });
    let (_vm, mut vcpu) = TestVm::boot(2, &program);
    let recorder = Recorder::new();

    assert_eq!(vcpu.run(&recorder).unwrap(), VcpuExit::Hlt);

    let bytes: Vec<u8> = recorder.seen().into_iter().flat_map(|s| s.data).collect();
    assert_eq!(bytes, message);
}

#[test]
fn triple_fault_ends_in_shutdown_with_the_faulting_rip() {
    // No IDT: #UD cannot be delivered, escalates to #DF, then to a triple fault.
    let program = long_mode(|a| {
        a.nop()?;
        a.ud2()?;
        a.hlt()
    });
    let (_vm, mut vcpu) = TestVm::boot(2, &program);
    let recorder = Recorder::new();

    let exit = vcpu.run(&recorder).unwrap();

    assert!(
        matches!(exit, VcpuExit::Shutdown { .. }),
        "expected a shutdown, got {exit:?}"
    );
    assert_eq!(vcpu.stats().snapshot().get(ExitReason::Shutdown), 1);
}

#[test]
fn exit_counters_count_each_class() {
    let program = long_mode(|a| {
        a.mov(dx, 0x80u32)?;
        a.out(dx, al)?;
        a.out(dx, al)?;
        a.in_(al, dx)?;
        a.mov(rdi, MMIO_ADDR)?;
        a.mov(byte_ptr(rdi), al)?;
        a.mov(al, byte_ptr(rdi))?;
        a.hlt()
    });
    let (_vm, mut vcpu) = TestVm::boot(2, &program);

    vcpu.run(&Recorder::new()).unwrap();
    let counts = vcpu.stats().snapshot();

    assert_eq!(counts.get(ExitReason::PioWrite), 2);
    assert_eq!(counts.get(ExitReason::PioRead), 1);
    assert_eq!(counts.get(ExitReason::MmioWrite), 1);
    assert_eq!(counts.get(ExitReason::MmioRead), 1);
    assert_eq!(counts.get(ExitReason::Hlt), 1);
    assert_eq!(counts.total(), 6);
}

#[test]
fn ioeventfd_write_is_handled_in_the_kernel_without_an_exit() {
    let program = long_mode(|a| {
        a.mov(dx, 0x600u32)?;
        a.out(dx, al)?;
        a.out(dx, al)?;
        a.out(dx, al)?;
        a.hlt()
    });
    let (vm, mut vcpu) = TestVm::boot(2, &program);
    let event = kvmkit_vcpu::EventFd::new(libc::EFD_NONBLOCK).unwrap();
    vm.vm
        .register_ioeventfd(
            &event,
            kvmkit_vcpu::IoEventAddress::Pio(0x600),
            kvmkit_vcpu::NoDatamatch,
        )
        .unwrap();
    let recorder = Recorder::new();

    assert_eq!(vcpu.run(&recorder).unwrap(), VcpuExit::Hlt);

    assert!(
        recorder.seen().is_empty(),
        "ioeventfd writes reached userspace"
    );
    assert_eq!(event.read().unwrap(), 3);
}

#[test]
fn emulation_failure_is_an_error_with_the_rip_not_a_panic() {
    // Jumping into the MMIO hole: there is no memory to fetch instructions from.
    let program = long_mode(|a| {
        a.mov(rax, MMIO_ADDR)?;
        a.jmp(rax)
    });
    let (_vm, mut vcpu) = TestVm::boot(2, &program);

    let result = vcpu.run(&Recorder::new());

    match result {
        // Suberror 1 is KVM_INTERNAL_ERROR_EMULATION.
        Err(Error::InternalError { rip, suberror, .. }) => {
            assert_eq!(rip, MMIO_ADDR);
            assert_eq!(suberror, 1);
        }
        other => panic!("expected an internal error at {MMIO_ADDR:#x}, got {other:?}"),
    }
}
