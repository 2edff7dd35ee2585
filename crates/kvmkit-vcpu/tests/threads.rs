// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vCPU threads: several at once, kick, pause, resume, stop, names and pinning.

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_until, Recorder, TestVm, CODE_ADDR, STACK_TOP};
use kvmkit_guest_asm::{asm::*, CpuMode, GuestProgram};
use kvmkit_vcpu::{
    Error, ExitReason, IoAction, IoHandler, VcpuExit, VcpuHandle, VcpuOutcome, VcpuThread,
    VcpuThreadConfig,
};
use vm_memory::{Bytes, GuestAddress};

const COUNTERS: u64 = 0x20_0000;

/// Increments the qword at [rdi] forever, never exiting.
fn spinner() -> GuestProgram {
    GuestProgram::assemble(CpuMode::Long, CODE_ADDR, |a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.inc(qword_ptr(rdi))?;
        a.jmp(top)
    })
    .unwrap()
}

fn counter(vm: &TestVm, id: u32) -> u64 {
    vm.ram
        .memory()
        .read_obj(GuestAddress(COUNTERS + 8 * u64::from(id)))
        .unwrap()
}

/// Starts vCPU `id` on `program` with rdi pointing at its own counter.
fn start(vm: &TestVm, id: u32, program: &GuestProgram, handler: Arc<Recorder>) -> VcpuHandle {
    let vcpu = vm.vcpu_at(id, program, STACK_TOP - 0x1000 * u64::from(id));
    let mut regs = vcpu.regs().unwrap();
    regs.rdi = COUNTERS + 8 * u64::from(id);
    vcpu.set_regs(&regs).unwrap();
    VcpuThread::spawn(vcpu, handler, VcpuThreadConfig::default()).unwrap()
}

#[test]
fn two_vcpus_run_at_the_same_time() {
    // Each vCPU raises its own flag, then waits for the other's: only vCPUs that run
    // concurrently (and share guest memory) get past the wait.
    let program = GuestProgram::assemble(CpuMode::Long, CODE_ADDR, |a| {
        let mut wait = a.create_label();
        a.mov(qword_ptr(rdi), 1i32)?;
        a.set_label(&mut wait)?;
        a.cmp(qword_ptr(rsi), 0i32)?;
        a.je(wait)?;
        a.mov(dx, 0x500u32)?;
        a.out(dx, al)?;
        a.hlt()
    })
    .unwrap();
    let vm = TestVm::new(4);
    vm.load(&program);
    let recorder = Arc::new(Recorder::new());
    let handles: Vec<VcpuHandle> = (0..2)
        .map(|id| {
            let vcpu = vm.vcpu_at(id, &program, STACK_TOP);
            let mut regs = vcpu.regs().unwrap();
            regs.rdi = COUNTERS + 8 * u64::from(id);
            regs.rsi = COUNTERS + 8 * u64::from(1 - id);
            vcpu.set_regs(&regs).unwrap();
            VcpuThread::spawn(vcpu, Arc::clone(&recorder), VcpuThreadConfig::default()).unwrap()
        })
        .collect();

    let both_done = wait_until(|| handles.iter().all(VcpuHandle::is_finished));
    if !both_done {
        handles.iter().for_each(VcpuHandle::stop);
    }
    let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();

    assert!(
        both_done,
        "the vCPUs did not meet: they did not run concurrently"
    );
    assert_eq!(outcomes, vec![VcpuOutcome::Exited(VcpuExit::Hlt); 2]);
    assert_eq!(recorder.seen().len(), 2);
}

#[test]
fn pause_stops_a_vcpu_spinning_without_exits_and_resume_continues_it() {
    let vm = TestVm::new(4);
    let program = spinner();
    vm.load(&program);
    let handle = start(&vm, 0, &program, Arc::new(Recorder::new()));
    assert!(wait_until(|| counter(&vm, 0) > 0), "the guest never ran");

    handle.pause();
    let paused_at = counter(&vm, 0);
    thread::sleep(Duration::from_millis(200));
    let still = counter(&vm, 0);
    handle.resume();
    let moved_on = wait_until(|| counter(&vm, 0) > still);
    handle.stop();
    let outcome = handle.join().unwrap();

    assert_eq!(paused_at, still, "the guest ran while paused");
    assert!(moved_on, "the guest did not run after resume");
    assert_eq!(outcome, VcpuOutcome::Stopped);
}

#[test]
fn kick_makes_a_spinning_vcpu_exit_once_and_run_on() {
    let vm = TestVm::new(4);
    let program = spinner();
    vm.load(&program);
    let handle = start(&vm, 0, &program, Arc::new(Recorder::new()));
    assert!(wait_until(|| counter(&vm, 0) > 0));

    handle.kick();
    let kicked = wait_until(|| handle.exit_counts().get(ExitReason::Interrupted) >= 1);
    let after_kick = counter(&vm, 0);
    let runs_on = wait_until(|| counter(&vm, 0) > after_kick);
    let finished_early = handle.is_finished();
    handle.stop();

    assert!(kicked, "the kick never brought the vCPU out of KVM_RUN");
    assert!(runs_on, "the vCPU did not go on running after the kick");
    assert!(!finished_early, "a kick must not end the vCPU");
    assert_eq!(handle.join().unwrap(), VcpuOutcome::Stopped);
}

#[test]
fn stop_ends_a_vcpu_halted_inside_the_kernel() {
    // With the in-kernel irqchip, hlt blocks inside KVM_RUN instead of exiting.
    let program = GuestProgram::assemble(CpuMode::Long, CODE_ADDR, |a| {
        a.cli()?;
        a.mov(qword_ptr(rdi), 1i32)?;
        a.hlt()
    })
    .unwrap();
    let vm = TestVm::new(4);
    vm.vm.create_irqchip().unwrap();
    vm.load(&program);
    let handle = start(&vm, 0, &program, Arc::new(Recorder::new()));
    assert!(wait_until(|| counter(&vm, 0) == 1));

    handle.stop();
    let outcome = handle.join().unwrap();

    assert_eq!(outcome, VcpuOutcome::Stopped);
}

#[test]
fn guest_exit_ends_the_thread_with_that_exit() {
    let program = GuestProgram::assemble(CpuMode::Long, CODE_ADDR, |a| a.hlt()).unwrap();
    let vm = TestVm::new(4);
    vm.load(&program);

    let handle = start(&vm, 0, &program, Arc::new(Recorder::new()));

    assert_eq!(handle.join().unwrap(), VcpuOutcome::Exited(VcpuExit::Hlt));
}

/// Records the name and allowed CPUs of the thread that serves each port write.
#[derive(Default)]
struct ThreadProbe {
    seen: Mutex<Vec<(String, Vec<usize>)>>,
}

impl IoHandler for ThreadProbe {
    fn pio_write(&self, _port: u16, _data: &[u8]) -> IoAction {
        let name = thread::current().name().unwrap_or("").to_string();
        self.seen.lock().unwrap().push((name, allowed_cpus()));
        IoAction::Continue
    }
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for this thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the given size.
    let ret = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    assert_eq!(ret, 0);
    // SAFETY: `set` was filled by the kernel; CPU_ISSET reads within it.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

fn port_write_then_halt() -> GuestProgram {
    GuestProgram::assemble(CpuMode::Long, CODE_ADDR, |a| {
        a.mov(dx, 0x80u32)?;
        a.out(dx, al)?;
        a.hlt()
    })
    .unwrap()
}

#[test]
fn vcpu_threads_are_named_after_their_id_and_pinned_when_asked() {
    let vm = TestVm::new(4);
    let program = port_write_then_halt();
    vm.load(&program);
    let probe = Arc::new(ThreadProbe::default());
    let last_cpu = thread::available_parallelism().unwrap().get() - 1;
    let vcpu = vm.vcpu_at(3, &program, STACK_TOP);

    let handle = VcpuThread::spawn(
        vcpu,
        Arc::clone(&probe),
        VcpuThreadConfig::default().pinned_to(last_cpu),
    )
    .unwrap();
    handle.join().unwrap();

    let seen = probe.seen.lock().unwrap().clone();
    assert_eq!(seen, vec![("vcpu3".to_string(), vec![last_cpu])]);
}

#[test]
fn pinning_to_a_cpu_the_host_lacks_is_a_clear_error() {
    let vm = TestVm::new(4);
    let program = port_write_then_halt();
    vm.load(&program);
    let vcpu = vm.vcpu_at(0, &program, STACK_TOP);

    let error = VcpuThread::spawn(
        vcpu,
        Arc::new(Recorder::new()),
        VcpuThreadConfig::default().pinned_to(100_000),
    )
    .unwrap_err();

    assert!(matches!(&error, Error::Thread { vcpu: 0, .. }), "{error}");
    assert!(error.to_string().contains("cpu 100000"), "{error}");
}

/// Panics on the first port write, as a buggy device would.
struct PanickingDevice;

impl IoHandler for PanickingDevice {
    fn pio_write(&self, _port: u16, _data: &[u8]) -> IoAction {
        panic!("device model bug");
    }
}

#[test]
fn a_panicking_handler_ends_the_thread_signals_its_end_and_join_names_the_vcpu() {
    let vm = TestVm::new(4);
    let program = port_write_then_halt();
    vm.load(&program);
    let vcpu = vm.vcpu_at(2, &program, STACK_TOP);
    let ended = Arc::new(kvmkit_vcpu::EventFd::new(libc::EFD_NONBLOCK).unwrap());

    let handle = VcpuThread::spawn(
        vcpu,
        Arc::new(PanickingDevice),
        VcpuThreadConfig::default().notifying(ended.clone()),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !handle.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    // Before, the thread never marked itself finished: this waited forever.
    handle.pause();
    let error = handle.join().unwrap_err();

    assert_eq!(
        ended.read().unwrap(),
        1,
        "the vCPU's end was never signalled"
    );
    assert!(
        matches!(&error, Error::ThreadPanicked { vcpu: 2, message } if message == "device model bug"),
        "{error}"
    );
}
