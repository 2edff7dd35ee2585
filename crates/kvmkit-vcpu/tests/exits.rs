// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every exit class arrives typed, with the right address, size and data.

// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::{Recorder, Seen, TestVm, CODE_ADDR, MMIO_ADDR};
use kvmkit_guest_asm::{asm::*, CpuMode, GuestProgram};
use kvmkit_vcpu::{Error, ExitReason, IoAccess, IoAction, IoHandler, IoKind, VcpuExit};

fn long_mode(write: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> GuestProgram {
    GuestProgram::assemble(CpuMode::Long, CODE_ADDR, write).unwrap()
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

    let write = |addr, len| VcpuExit::Io(IoAccess::new(IoKind::PioWrite, addr, len, 1));
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
        VcpuExit::Io(IoAccess::new(IoKind::PioRead, 0x71, 4, 1))
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
        VcpuExit::Io(IoAccess::new(IoKind::MmioWrite, MMIO_ADDR + 6, 2, 1))
    );
    assert_eq!(
        second,
        VcpuExit::Io(IoAccess::new(IoKind::MmioRead, MMIO_ADDR + 0x10, 4, 1))
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
        VcpuExit::IoStop(IoAccess::new(IoKind::PioWrite, 0x64, 1, 1))
    );
    assert_eq!(recorder.seen().len(), 1, "the guest ran past the stop");
}

#[test]
fn string_port_write_arrives_as_byte_accesses_whatever_the_exits() {
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

    let mut exits = Vec::new();
    loop {
        match vcpu.run_once(&recorder).unwrap() {
            VcpuExit::Io(access) => exits.push(access),
            exit => {
                assert_eq!(exit, VcpuExit::Hlt);
                break;
            }
        }
    }

    // KVM may hand the string over in one exit or in several; either way each exit
    // carries byte elements and they add up to the string.
    assert!(
        exits
            .iter()
            .all(|e| e.kind == IoKind::PioWrite && e.size == 1),
        "{exits:?}"
    );
    assert_eq!(exits.iter().map(|e| e.count).sum::<usize>(), message.len());
    let expected: Vec<Seen> = message
        .iter()
        .map(|&byte| seen(IoKind::PioWrite, 0x3f8, &[byte]))
        .collect();
    assert_eq!(recorder.seen(), expected, "one 1-byte access per element");
}

#[test]
fn rep_insb_reads_each_byte_with_its_own_one_byte_access() {
    // `rep insb` with a count of 4 is one exit of 4 bytes, like `in eax, dx`: each
    // element must be its own 1-byte read, or a UART answers one byte and zeros.
    let program = long_mode(|a| {
        a.mov(rdi, 0x3000u64)?;
        a.mov(ecx, 4u32)?;
        a.mov(dx, 0x3f8u32)?;
        a.rep().insb()?;
        a.mov(eax, dword_ptr(0x3000))?;
        a.mov(dx, 0x80u32)?;
        a.out(dx, eax)?;
        a.hlt()
    });
    let (_vm, mut vcpu) = TestVm::boot(2, &program);
    let fifo = ByteFifo::new(b"WXYZ");

    let exit = vcpu.run_once(&fifo).unwrap();
    assert_eq!(vcpu.run(&fifo).unwrap(), VcpuExit::Hlt);

    assert_eq!(
        exit,
        VcpuExit::Io(IoAccess::new(IoKind::PioRead, 0x3f8, 1, 4))
    );
    assert_eq!(fifo.read_sizes(), vec![1, 1, 1, 1]);
    assert_eq!(fifo.written(), u32::from_le_bytes(*b"WXYZ"));
}

#[test]
fn rep_outsw_writes_each_word_with_its_own_two_byte_access() {
    let program = long_mode(|a| {
        let mut words = a.create_label();
        a.lea(rsi, ptr(words))?;
        a.mov(ecx, 3u32)?;
        a.mov(dx, 0x510u32)?;
        a.rep().outsw()?;
        a.hlt()?;
        a.set_label(&mut words)?;
        a.dw(&[0x1122, 0x3344, 0x5566])
    });
    let (_vm, mut vcpu) = TestVm::boot(2, &program);
    let recorder = Recorder::new();

    assert_eq!(vcpu.run(&recorder).unwrap(), VcpuExit::Hlt);

    let expected: Vec<Seen> = [0x1122u16, 0x3344, 0x5566]
        .iter()
        .map(|w| seen(IoKind::PioWrite, 0x510, &w.to_le_bytes()))
        .collect();
    assert_eq!(recorder.seen(), expected);
}

/// A byte-wide receive register: each read pops one byte, whatever its width, and
/// records the width it was asked for; a 4-byte write to port 0x80 is recorded.
struct ByteFifo {
    bytes: std::sync::Mutex<std::collections::VecDeque<u8>>,
    sizes: std::sync::Mutex<Vec<usize>>,
    written: std::sync::atomic::AtomicU32,
}

impl ByteFifo {
    fn new(bytes: &[u8]) -> Self {
        ByteFifo {
            bytes: std::sync::Mutex::new(bytes.iter().copied().collect()),
            sizes: std::sync::Mutex::new(Vec::new()),
            written: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn read_sizes(&self) -> Vec<usize> {
        self.sizes.lock().unwrap().clone()
    }

    fn written(&self) -> u32 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl IoHandler for ByteFifo {
    fn pio_read(&self, _port: u16, data: &mut [u8]) -> IoAction {
        self.sizes.lock().unwrap().push(data.len());
        data.fill(0);
        data[0] = self.bytes.lock().unwrap().pop_front().unwrap_or(0);
        IoAction::Continue
    }

    fn pio_write(&self, port: u16, data: &[u8]) -> IoAction {
        if port == 0x80 && data.len() == 4 {
            let value = u32::from_le_bytes(data.try_into().unwrap());
            self.written
                .store(value, std::sync::atomic::Ordering::Relaxed);
        }
        IoAction::Continue
    }
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
