// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The facade's machine builder on real KVM.

use std::sync::{Arc, Mutex};

use kvmkit::guest_asm::{asm::*, CpuMode, GuestProgram};
use kvmkit::vcpu::{IoAction, IoHandler, VcpuExit, VcpuOutcome};
use kvmkit::{Error, MachineBuilder};

/// Records (vCPU index written by the guest) per port write.
#[derive(Default)]
struct Indexes(Mutex<Vec<u8>>);

impl IoHandler for Indexes {
    fn pio_write(&self, _port: u16, data: &[u8]) -> IoAction {
        self.0.lock().unwrap().push(data[0]);
        IoAction::Continue
    }
}

fn report_rdi_then_halt(bitness: CpuMode, load_addr: u64) -> GuestProgram {
    GuestProgram::assemble(bitness, load_addr, |a| {
        a.mov(dx, 0x80u32)?;
        match bitness {
            CpuMode::Real => a.mov(ax, di)?,
            _ => a.mov(eax, edi)?,
        }
        a.out(dx, al)?;
        a.hlt()
    })
    .unwrap()
}

#[test]
fn every_vcpu_starts_at_the_program_with_its_index_in_rdi() {
    let program = report_rdi_then_halt(CpuMode::Long, 0x10_0000);
    let machine = MachineBuilder::new()
        .memory_mib(8)
        .vcpus(3)
        .build()
        .unwrap();
    let seen = Arc::new(Indexes::default());

    let outcomes = machine
        .boot(&program)
        .unwrap()
        .start(Arc::clone(&seen))
        .unwrap()
        .wait()
        .unwrap();

    assert_eq!(outcomes, vec![VcpuOutcome::Exited(VcpuExit::Hlt); 3]);
    let mut indexes = seen.0.lock().unwrap().clone();
    indexes.sort();
    assert_eq!(indexes, vec![0, 1, 2]);
}

#[test]
fn real_mode_program_boots_through_the_builder() {
    let program = report_rdi_then_halt(CpuMode::Real, 0x7c00);
    let machine = MachineBuilder::new().memory_mib(2).build().unwrap();
    let seen = Arc::new(Indexes::default());

    let outcomes = machine
        .boot(&program)
        .unwrap()
        .start(Arc::clone(&seen))
        .unwrap()
        .wait();

    assert_eq!(outcomes.unwrap(), vec![VcpuOutcome::Exited(VcpuExit::Hlt)]);
    assert_eq!(*seen.0.lock().unwrap(), vec![0]);
}

#[test]
fn zero_vcpus_is_a_configuration_error() {
    let error = MachineBuilder::new().vcpus(0).build().unwrap_err();

    assert!(matches!(error, Error::NoVcpus), "{error}");
}

#[test]
fn missing_kvm_device_surfaces_the_vcpu_crate_error() {
    let error = MachineBuilder::new()
        .kvm_path("/nonexistent/kvm")
        .build()
        .unwrap_err();

    assert!(
        matches!(
            error,
            Error::Vcpu(kvmkit::vcpu::Error::DeviceMissing { .. })
        ),
        "{error}"
    );
    assert!(error.to_string().contains("/nonexistent/kvm"));
}

#[test]
fn long_mode_program_over_the_page_tables_is_refused_before_it_is_written() {
    let program = report_rdi_then_halt(CpuMode::Long, 0x9000);
    let machine = MachineBuilder::new().memory_mib(2).build().unwrap();

    let error = machine.boot(&program).unwrap_err();

    assert!(
        matches!(
            error,
            Error::ProgramOverlapsPageTables {
                load_addr: 0x9000,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn program_beyond_guest_ram_is_a_clear_error() {
    let program = report_rdi_then_halt(CpuMode::Long, 64 << 20);
    let machine = MachineBuilder::new().memory_mib(2).build().unwrap();

    let error = machine.boot(&program).unwrap_err();

    assert!(
        matches!(error, Error::Boot(_)) && error.to_string().contains("the program"),
        "{error}"
    );
}

#[test]
fn stop_ends_every_vcpu_of_a_running_machine() {
    let spin = GuestProgram::assemble(CpuMode::Long, 0x10_0000, |a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.pause()?;
        a.jmp(top)
    })
    .unwrap();
    let machine = MachineBuilder::new()
        .memory_mib(4)
        .vcpus(2)
        .build()
        .unwrap();
    let running = machine
        .boot(&spin)
        .unwrap()
        .start(Arc::new(Indexes::default()))
        .unwrap();

    running.stop();
    let outcomes = running.wait().unwrap();

    assert_eq!(outcomes, vec![VcpuOutcome::Stopped; 2]);
}

#[test]
fn exit_latency_probe_takes_one_userspace_exit_per_iteration_of_each_class() {
    use kvmkit::vcpu::ExitReason;
    use kvmkit_exit_latency::{ExitClass, LatencyVm};
    let expected = |class| match class {
        ExitClass::PioWrite | ExitClass::PioWriteDevice => ExitReason::PioWrite,
        ExitClass::PioRead => ExitReason::PioRead,
        ExitClass::MmioWrite | ExitClass::MmioWriteDevice => ExitReason::MmioWrite,
        ExitClass::MmioRead => ExitReason::MmioRead,
        ExitClass::Hlt => ExitReason::Hlt,
        // In-kernel classes reach userspace only to fetch the next batch size.
        ExitClass::Ioeventfd | ExitClass::VirtioNotify | ExitClass::CpuidInKernel => {
            ExitReason::PioRead
        }
    };
    for class in ExitClass::ALL {
        let mut vm = LatencyVm::new(class).unwrap_or_else(|e| panic!("{class}: {e}"));
        let before = vm.exit_counts();

        vm.run_kvmkit(100).unwrap();
        vm.run_baseline(100).unwrap();
        let after = vm.exit_counts();

        let reason = expected(class);
        let added = after.get(reason) - before.get(reason);
        let want = if class.in_kernel() { 2 } else { 100 };
        assert_eq!(added, want, "{class}");
        assert_eq!(after.total() - before.total(), want, "{class}");
    }
}

#[test]
fn memory_size_overflow_is_an_error_not_a_smaller_vm() {
    let error = MachineBuilder::new()
        .memory_mib((1 << 44) + 16)
        .build()
        .unwrap_err();

    assert!(matches!(error, Error::MemorySizeOverflow), "{error}");
}

#[test]
fn raw_machine_code_boots_without_the_assembler() {
    use kvmkit::vcpu::CpuMode;
    use kvmkit::RawProgram;
    // mov dx, 0x80; mov al, 7; out dx, al; hlt
    let code = RawProgram::new(
        CpuMode::Long,
        0x10_0000,
        [0x66, 0xba, 0x80, 0x00, 0xb0, 0x07, 0xee, 0xf4],
    );
    let machine = MachineBuilder::new().memory_mib(4).build().unwrap();
    let indexes = Arc::new(Indexes::default());

    let outcomes = machine
        .boot(&code)
        .unwrap()
        .start(indexes.clone())
        .unwrap()
        .wait()
        .unwrap();

    assert_eq!(outcomes, vec![VcpuOutcome::Exited(VcpuExit::Hlt)]);
    assert_eq!(*indexes.0.lock().unwrap(), vec![7]);
}

#[test]
fn dropping_a_running_machine_stops_its_vcpus_before_guest_ram_goes() {
    use kvmkit::vcpu::ExitReason;
    // Each vCPU writes and checks its own words of RAM forever; any I/O exit, MMIO
    // exit, triple fault or KVM_RUN error would show in its exit counters.
    let guest = GuestProgram::assemble(CpuMode::Long, 0x10_0000, |a| {
        let mut top = a.create_label();
        let mut bad = a.create_label();
        a.mov(rsi, 0x20_0000u64)?;
        a.shl(rdi, 12)?;
        a.add(rsi, rdi)?;
        a.xor(ecx, ecx)?;
        a.set_label(&mut top)?;
        a.inc(rcx)?;
        a.mov(qword_ptr(rsi), rcx)?;
        a.cmp(qword_ptr(rsi), rcx)?;
        a.jne(bad)?;
        a.jmp(top)?;
        a.set_label(&mut bad)?;
        a.mov(dx, 0x80u32)?;
        a.out(dx, al)?;
        a.hlt()
    })
    .unwrap();
    for attempt in 0..20 {
        let machine = MachineBuilder::new()
            .memory_mib(8)
            .vcpus(2)
            .build()
            .unwrap();
        let running = machine
            .boot(&guest)
            .unwrap()
            .start(Arc::new(Indexes::default()))
            .unwrap();
        let stats: Vec<_> = running.vcpus().iter().map(|v| v.stats()).collect();
        std::thread::sleep(std::time::Duration::from_millis(5));

        drop(running);

        for (vcpu, stats) in stats.iter().enumerate() {
            let counts = stats.snapshot();
            let unexpected = counts.total() - counts.get(ExitReason::Interrupted);
            assert_eq!(unexpected, 0, "attempt {attempt}, vcpu {vcpu}: {counts}");
        }
    }
}

/// Counts port writes.
#[derive(Default)]
struct Writes(std::sync::atomic::AtomicU64);

impl IoHandler for Writes {
    fn pio_write(&self, _port: u16, _data: &[u8]) -> IoAction {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        IoAction::Continue
    }
}

#[test]
fn dirty_pages_are_the_pages_the_guest_wrote_and_the_pages_devices_wrote() {
    use vm_memory::{Bytes, GuestAddress};
    const GUEST_PAGE: u64 = 0x40_0000;
    const DEVICE_PAGE: u64 = 0x50_0000;
    let guest = GuestProgram::assemble(CpuMode::Long, 0x10_0000, |a| {
        let mut idle = a.create_label();
        a.mov(rdi, GUEST_PAGE)?;
        a.mov(qword_ptr(rdi), 1i32)?;
        a.mov(dx, 0x80u32)?;
        a.out(dx, al)?;
        a.set_label(&mut idle)?;
        a.pause()?;
        a.jmp(idle)
    })
    .unwrap();
    let machine = MachineBuilder::new()
        .memory_mib(16)
        .log_dirty_pages(true)
        .build()
        .unwrap();
    let writes = Arc::new(Writes::default());
    let running = machine.boot(&guest).unwrap().start(writes.clone()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while writes.0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the guest never wrote"
        );
        std::thread::yield_now();
    }

    // What a device does: a write through vm-memory, which KVM never sees.
    running
        .ram()
        .memory()
        .write_obj(7u64, GuestAddress(DEVICE_PAGE))
        .unwrap();
    let first: Vec<u64> = running.dirty_pages(0).unwrap().dirty_pages().collect();
    let second = running.dirty_pages(0).unwrap();
    running.stop();
    running.wait().unwrap();

    assert!(first.contains(&GUEST_PAGE), "the guest's page: {first:x?}");
    assert!(
        first.contains(&DEVICE_PAGE),
        "the device's page: {first:x?}"
    );
    assert!(!second
        .dirty_pages()
        .any(|p| p == GUEST_PAGE || p == DEVICE_PAGE));
}

/// A boot image of another crate's making that asks for stacks below address 0.
struct StacksBelowZero;

impl kvmkit::BootImage for StacksBelowZero {
    fn load<M: vm_memory::GuestMemoryBackend>(
        &self,
        _memory: &M,
        _layout: &kvmkit::boot::PhysicalLayout,
        _vcpus: u32,
    ) -> Result<kvmkit::boot::BootEntry, kvmkit::boot::BootError> {
        Ok(kvmkit::boot::BootEntry {
            protocol: kvmkit::boot::EntryProtocol::Program {
                mode: kvmkit::boot::CpuMode::Long,
                stack_stride: 0x1000,
            },
            entry: 0x10_0000,
            stack_top: 0x800,
        })
    }
}

#[test]
fn a_boot_image_asking_for_stacks_below_address_0_is_refused_not_wrapped() {
    let machine = MachineBuilder::new().vcpus(2).build().unwrap();

    let error = machine.boot(&StacksBelowZero).unwrap_err();

    assert!(
        matches!(
            error,
            Error::NoRoomForStacks {
                stack_top: 0x800,
                ..
            }
        ),
        "{error}"
    );
}
