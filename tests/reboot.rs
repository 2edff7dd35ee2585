// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A reboot in place through the VM's control: the image loaded again, the vCPUs back
//! at their first state, the VM running on in the same process.

mod common;

use std::sync::Arc;
use std::thread;

use kvmkit::devices::ShutdownReason;
use kvmkit::guest_asm::{asm::*, CpuMode, GuestProgram};
use kvmkit::{
    BootImage, BootedMachine, ControlError, Machine, PlatformDevices, VmControl, VmOutcome, VmState,
};
use vm_memory::{Bytes, GuestAddress};

use common::{machine, wait_until};

const LOAD_ADDR: u64 = 0x10_0000;
const COUNTER: u64 = 0x30_0000;
const BOOTS: u64 = 0x30_0008;

/// Counts its boots, then counts on in RAM forever.
fn counting_guest() -> GuestProgram {
    GuestProgram::assemble(CpuMode::Long, LOAD_ADDR, |a| {
        let mut top = a.create_label();
        a.mov(rsi, BOOTS)?;
        // Atomic: after a reboot both vCPUs enter at once.
        a.lock().inc(qword_ptr(rsi))?;
        a.mov(rsi, COUNTER)?;
        a.set_label(&mut top)?;
        a.inc(qword_ptr(rsi))?;
        a.jmp(top)
    })
    .unwrap()
}

/// A VM running on a thread of its own, and what the test holds of it.
struct Vm {
    control: VmControl,
    exit: Arc<kvmkit::devices::VmShutdown>,
    memory: Arc<kvmkit::virtio::GuestMemory>,
    thread: thread::JoinHandle<VmOutcome>,
}

/// A machine of `vcpus` vCPUs on a platform, booted by `boot` and run.
fn start(
    vcpus: u32,
    boot: impl FnOnce(Machine, &PlatformDevices) -> Result<BootedMachine, kvmkit::Error>,
) -> Vm {
    let (machine, mut platform) = machine(vcpus);
    let control = platform.control().unwrap();
    let exit = Arc::clone(platform.exit());
    let memory = Arc::clone(machine.ram().shared_memory());
    let booted = boot(machine, &platform.devices()).unwrap();
    let thread = thread::spawn(move || booted.run_on(platform).unwrap());
    Vm {
        control,
        exit,
        memory,
        thread,
    }
}

#[test]
fn a_vm_rebooted_in_place_boots_its_image_again_and_runs_on() {
    let Vm {
        control,
        exit,
        memory,
        thread: vm,
    } = start(2, |machine, devices| {
        machine.boot_rebootable_on(counting_guest(), devices)
    });
    let read = |addr| memory.read_obj::<u64>(GuestAddress(addr)).unwrap();
    // Both vCPUs in the loop (each counted its boot) before the code is overwritten.
    let counted = wait_until(|| read(BOOTS) == 2 && read(COUNTER) > 1000);
    // The guest's code overwritten (ud2): only the image loaded again boots.
    memory
        .write_slice(&[0x0f, 0x0b], GuestAddress(LOAD_ADDR))
        .unwrap();
    let boots_before = read(BOOTS);

    let rebooted = control.reboot();
    // Each vCPU enters the program again, as it did at boot.
    let booted_again = wait_until(|| read(BOOTS) >= boots_before + 2);
    let at_reboot = read(COUNTER);
    let went_on = wait_until(|| read(COUNTER) > at_reboot + 1000);
    let state = control.state();
    control.pause().unwrap();
    let paused_reboot = control.reboot();
    let state_after_paused_reboot = control.state();
    let booted_a_third_time = wait_until(|| read(BOOTS) >= boots_before + 4);
    exit.request(ShutdownReason::PowerOff);
    let outcome = vm.join().unwrap();

    assert!(counted, "the guest never counted");
    assert!(rebooted.is_ok(), "{rebooted:?}");
    assert_eq!(boots_before, 2, "each vCPU enters the program once at boot");
    assert!(
        booted_again,
        "no new boot: {} boots, {} before",
        read(BOOTS),
        boots_before
    );
    assert!(went_on, "the rebooted guest did not run on");
    assert_eq!(state, VmState::Running);
    assert!(paused_reboot.is_ok(), "{paused_reboot:?}");
    assert_eq!(state_after_paused_reboot, VmState::Running);
    assert!(
        booted_a_third_time,
        "the reboot of a paused VM did not boot it"
    );
    assert_eq!(read(BOOTS), boots_before + 4);
    assert_eq!(outcome, VmOutcome::PowerOff);
}

#[test]
fn a_vm_booted_without_its_image_kept_cannot_reboot_and_runs_on() {
    let Vm {
        control,
        exit,
        memory,
        thread: vm,
    } = start(1, |machine, devices| {
        machine.boot_on(&counting_guest(), devices)
    });
    let read = |addr| memory.read_obj::<u64>(GuestAddress(addr)).unwrap();
    assert!(
        wait_until(|| read(COUNTER) > 1000),
        "the guest never counted"
    );

    let refused = control.reboot();
    let at_refusal = read(COUNTER);
    let went_on = wait_until(|| read(COUNTER) > at_refusal + 1000);
    exit.request(ShutdownReason::PowerOff);
    vm.join().unwrap();

    assert!(
        matches!(refused, Err(ControlError::CannotReboot)),
        "{refused:?}"
    );
    assert!(went_on, "a refused reboot stopped the guest");
    assert_eq!(read(BOOTS), 1);
}

/// The counting guest the first time it is loaded; an image that no longer loads
/// (a kernel file gone, say) the next.
struct LoadsOnce {
    program: GuestProgram,
    loads: std::sync::atomic::AtomicUsize,
}

impl BootImage for LoadsOnce {
    fn load<M: vm_memory::GuestMemoryBackend>(
        &self,
        memory: &M,
        layout: &kvmkit::boot::PhysicalLayout,
        vcpus: u32,
    ) -> Result<kvmkit::boot::BootEntry, kvmkit::boot::BootError> {
        let loads = self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if loads == 0 {
            self.program.load(memory, layout, vcpus)
        } else {
            Err(kvmkit::boot::BootError::NotAKernel("gone".into()))
        }
    }
}

#[test]
fn a_reboot_whose_image_no_longer_loads_fails_naming_why_and_ends_the_vm() {
    let image = LoadsOnce {
        program: counting_guest(),
        loads: std::sync::atomic::AtomicUsize::new(0),
    };
    let Vm {
        control,
        memory,
        thread: vm,
        ..
    } = start(1, |machine, devices| {
        machine.boot_rebootable_on(image, devices)
    });
    let read = |addr| memory.read_obj::<u64>(GuestAddress(addr)).unwrap();
    assert!(
        wait_until(|| read(COUNTER) > 1000),
        "the guest never counted"
    );

    let failed = control.reboot();
    let outcome = vm.join().unwrap();

    let Err(ControlError::Reboot(error)) = &failed else {
        panic!("{failed:?}");
    };
    assert!(error.to_string().contains("gone"), "{error}");
    assert_eq!(outcome, VmOutcome::VmmRequest);
    assert_eq!(control.state(), VmState::Shutdown);
}
