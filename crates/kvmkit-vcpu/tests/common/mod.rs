// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A small VM for one test: guest RAM, a VM, and vCPUs started at a program.

#![allow(dead_code)]

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use kvmkit_guest_asm::GuestProgram;
use kvmkit_memory::{GuestRam, MemoryConfig, MemoryLayout};
use kvmkit_vcpu::{Hypervisor, IoAction, IoHandler, IoKind, Vcpu, Vm};
use vm_memory::{Bytes, GuestAddress};

/// Generous bound for liveness waits; never a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `condition` every millisecond until it holds (true) or [`PATIENCE`] runs out
/// (false).
pub fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Where test programs are loaded and where their stack starts.
pub const CODE_ADDR: u64 = 0x1000;
pub const STACK_TOP: u64 = 0x8000;
/// An MMIO address in the 32-bit hole, reachable from every mode but real mode.
pub const MMIO_ADDR: u64 = 0xd000_0000;

pub struct TestVm {
    pub ram: GuestRam,
    pub vm: Vm,
}

impl TestVm {
    pub fn new(mib: u64) -> Self {
        let hypervisor = Hypervisor::open().expect("these tests need /dev/kvm");
        let layout = MemoryLayout::x86_64(mib << 20).unwrap();
        let ram = GuestRam::new(&layout, &MemoryConfig::default()).unwrap();
        let vm = Vm::new(&hypervisor).unwrap();
        vm.register_memory(ram.shared_memory()).unwrap();
        TestVm { ram, vm }
    }

    pub fn load(&self, program: &GuestProgram) {
        self.ram
            .memory()
            .write_slice(program.bytes(), GuestAddress(program.load_addr()))
            .unwrap();
    }

    /// Creates vCPU `id` in the mode the program was assembled for, at its entry.
    pub fn vcpu_at(&self, id: u32, program: &GuestProgram, stack_top: u64) -> Vcpu {
        let vcpu = self.vm.create_vcpu(id).unwrap();
        vcpu.enter_mode(
            self.ram.memory(),
            program.mode(),
            program.load_addr(),
            stack_top,
        )
        .unwrap();
        vcpu
    }

    /// Loads `program` and returns vCPU 0 ready to run it.
    pub fn boot(mib: u64, program: &GuestProgram) -> (Self, Vcpu) {
        let vm = TestVm::new(mib);
        vm.load(program);
        let vcpu = vm.vcpu_at(0, program, STACK_TOP);
        (vm, vcpu)
    }
}

/// One access as a handler saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub kind: IoKind,
    pub addr: u64,
    pub data: Vec<u8>,
}

/// Records every access; reads return `read_value` (little-endian, truncated to size);
/// a write to `stop_port` stops the vCPU.
pub struct Recorder {
    pub seen: Mutex<Vec<Seen>>,
    pub read_value: u64,
    pub stop_port: Option<u16>,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            seen: Mutex::new(Vec::new()),
            read_value: 0,
            stop_port: None,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn record(&self, kind: IoKind, addr: u64, data: &[u8]) {
        self.seen.lock().unwrap().push(Seen {
            kind,
            addr,
            data: data.to_vec(),
        });
    }

    fn fill(&self, data: &mut [u8]) {
        let bytes = self.read_value.to_le_bytes();
        let len = data.len().min(8);
        data[..len].copy_from_slice(&bytes[..len]);
    }
}

impl IoHandler for Recorder {
    fn pio_read(&self, port: u16, data: &mut [u8]) -> IoAction {
        self.fill(data);
        self.record(IoKind::PioRead, u64::from(port), data);
        IoAction::Continue
    }
    fn pio_write(&self, port: u16, data: &[u8]) -> IoAction {
        self.record(IoKind::PioWrite, u64::from(port), data);
        if Some(port) == self.stop_port {
            IoAction::Stop
        } else {
            IoAction::Continue
        }
    }
    fn mmio_read(&self, addr: u64, data: &mut [u8]) -> IoAction {
        self.fill(data);
        self.record(IoKind::MmioRead, addr, data);
        IoAction::Continue
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) -> IoAction {
        self.record(IoKind::MmioWrite, addr, data);
        IoAction::Continue
    }
}
