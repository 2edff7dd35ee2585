// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The legacy platform on real KVM: serial with interrupts, i8042 reset, RTC, debug
//! exit, concurrent devices, unmapped accesses, and the VM's lifecycle.

// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kvmkit::devices::{
    BusDevice, DateTime, GedEvent, SerialOutput, SharedBuffer, ShutdownReason, COM1_PORT, GED_PORT,
};
use kvmkit::guest_asm::{asm::*, programs, CpuMode, GuestProgram};
use kvmkit::{ControlError, MachineBuilder, Platform, PlatformConfig, VmOutcome, VmState};

const LOAD_ADDR: u64 = 0x10_0000;
const PROBE_PORT: u64 = 0x500;
const PATIENCE: Duration = Duration::from_secs(30);

fn program(write: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> GuestProgram {
    GuestProgram::assemble(CpuMode::Long, LOAD_ADDR, write).unwrap()
}

fn test_config(output: &SharedBuffer) -> PlatformConfig {
    PlatformConfig::default()
        .with_serial_output(SerialOutput::Writer(Box::new(output.clone())))
        .with_debug_exit_port(Some(0xf4))
}

/// Builds a machine with the in-kernel irqchip and its platform.
fn machine_and_platform(vcpus: u32, output: &SharedBuffer) -> (kvmkit::Machine, Platform) {
    let machine = MachineBuilder::new()
        .memory_mib(16)
        .vcpus(vcpus)
        .irqchip(true)
        .build()
        .unwrap();
    let platform = Platform::new(machine.vm(), test_config(output)).unwrap();
    (machine, platform)
}

fn run(vcpus: u32, program: &GuestProgram) -> (VmOutcome, SharedBuffer) {
    let output = SharedBuffer::default();
    let (machine, platform) = machine_and_platform(vcpus, &output);
    let outcome = run_watched(machine, platform, program);
    (outcome, output)
}

/// Runs the VM; a guest that never ends is stopped after PATIENCE and shows up as
/// `VmOutcome::Signal(SIGALRM)` in the test's failure.
fn run_watched(machine: kvmkit::Machine, platform: Platform, program: &GuestProgram) -> VmOutcome {
    start_watched(machine, platform, program.clone())
        .join()
        .unwrap()
}

/// Starts the VM on its own thread (as its I/O thread), with the same watchdog.
fn start_watched(
    machine: kvmkit::Machine,
    platform: Platform,
    program: GuestProgram,
) -> thread::JoinHandle<VmOutcome> {
    let exit = platform.exit().clone();
    let (finished, vm_ended) = std::sync::mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if vm_ended.recv_timeout(PATIENCE) == Err(RecvTimeoutError::Timeout) {
            exit.request(ShutdownReason::Signal(libc::SIGALRM));
        }
    });
    thread::spawn(move || {
        let outcome = machine.boot(&program).unwrap().run_on(platform).unwrap();
        drop(finished);
        watchdog.join().unwrap();
        outcome
    })
}

/// A one-vCPU machine and its platform with a [`Probe`] at `PROBE_PORT`.
fn machine_with_probe() -> (kvmkit::Machine, Platform, Arc<Probe>) {
    let (machine, platform) = machine_and_platform(1, &SharedBuffer::default());
    let probe = Arc::new(Probe::default());
    platform
        .pio()
        .insert(PROBE_PORT, 4, "probe", probe.clone())
        .unwrap();
    (machine, platform, probe)
}

/// Records each value written to it, in order.
#[derive(Default)]
struct Probe(Mutex<Vec<u64>>);

impl BusDevice for Probe {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&self, _offset: u64, data: &[u8]) {
        let mut bytes = [0u8; 8];
        bytes[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
        self.0.lock().unwrap().push(u64::from_le_bytes(bytes));
    }
}

#[test]
fn debug_exit_returns_the_code_the_guest_wrote() {
    let guest = program(|a| {
        a.mov(dx, 0xf4u32)?;
        a.mov(eax, 42u32)?;
        a.out(dx, eax)?;
        a.hlt()
    });

    let (outcome, _) = run(1, &guest);

    assert_eq!(outcome, VmOutcome::DebugExit(42));
    assert_eq!(outcome.exit_status(), 42);
}

#[test]
fn i8042_reset_ends_the_vm_as_a_reboot_before_the_next_instruction() {
    let guest = program(|a| {
        a.mov(al, 0xfeu32)?;
        a.out(0x64u32, al)?;
        // Never reached: the vCPU stops at the reset.
        a.mov(dx, 0xf4u32)?;
        a.out(dx, al)?;
        a.hlt()
    });

    let (outcome, _) = run(1, &guest);

    assert_eq!(outcome, VmOutcome::Reboot);
}

#[test]
fn acpi_s5_sleep_powers_the_vm_off() {
    let guest = program(|a| {
        a.mov(dx, 0x600u32)?;
        a.mov(al, 0x34u32)?; // SLP_TYP = 5 (S5), SLP_EN
        a.out(dx, al)?;
        a.hlt()
    });

    let (outcome, _) = run(2, &guest);

    assert_eq!(outcome, VmOutcome::PowerOff);
    assert_eq!(outcome.exit_status(), 0);
}

#[test]
fn triple_fault_ends_the_vm_with_the_vcpu_and_rip() {
    let guest = program(|a| a.ud2());

    let (outcome, _) = run(2, &guest);

    assert!(
        matches!(outcome, VmOutcome::TripleFault { .. }),
        "{outcome:?}"
    );
}

#[test]
fn guest_reads_the_rtc_within_a_minute_of_the_host() {
    // Select binary mode in status B, then read century, year, month, day, hours,
    // minutes, seconds and report them through the probe port.
    let registers: [u8; 7] = [0x32, 0x09, 0x08, 0x07, 0x04, 0x02, 0x00];
    let guest = program(|a| {
        a.mov(al, 0x0bu32)?;
        a.out(0x70u32, al)?;
        a.mov(al, 0x06u32)?; // binary, 24-hour
        a.out(0x71u32, al)?;
        a.mov(dx, PROBE_PORT as u32)?;
        for register in registers {
            a.mov(al, u32::from(register))?;
            a.out(0x70u32, al)?;
            a.in_(al, 0x71u32)?;
            a.out(dx, al)?;
        }
        a.mov(dx, 0xf4u32)?;
        a.out(dx, al)?;
        a.hlt()
    });
    let (machine, platform, probe) = machine_with_probe();

    let outcome = run_watched(machine, platform, &guest);
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();

    assert!(matches!(outcome, VmOutcome::DebugExit(_)), "{outcome:?}");
    let v = probe.0.lock().unwrap().clone();
    assert_eq!(v.len(), 7, "{v:?}");
    let guest_secs = unix_seconds(v[0] * 100 + v[1], v[2], v[3], v[4], v[5], v[6]);
    assert!(
        host.abs_diff(guest_secs) <= 60,
        "guest read {v:?} = {:?}, host is {:?}",
        DateTime::from_unix(guest_secs),
        DateTime::from_unix(host)
    );
}

/// Seconds since the epoch of a UTC date (days_from_civil).
fn unix_seconds(year: u64, month: u64, day: u64, hour: u64, minute: u64, second: u64) -> u64 {
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hour * 3600 + minute * 60 + second
}

#[test]
fn unmapped_port_reads_all_ones_and_is_counted_not_fatal() {
    let guest = program(|a| {
        a.mov(dx, 0x1234u32)?;
        a.in_(eax, dx)?;
        a.out(dx, eax)?;
        report_eax_and_exit(a)
    });
    let (machine, platform, probe) = machine_with_probe();
    let ports = platform.pio().clone();

    let outcome = run_watched(machine, platform, &guest);

    assert_eq!(outcome, VmOutcome::DebugExit(0xff));
    assert_eq!(*probe.0.lock().unwrap(), vec![0xffff_ffff]);
    assert_eq!(ports.unmapped_accesses(), (1, 1));
}

/// Counts writes; the `done` write of each vCPU counts separately.
#[derive(Default)]
struct Counter {
    writes: AtomicU64,
}

impl BusDevice for Counter {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&self, _offset: u64, _data: &[u8]) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn two_vcpus_hammering_two_devices_deliver_every_access_exactly_once() {
    const WRITES: u32 = 3000;
    // vCPU n writes WRITES times to port 0x510 + 0x10 * n, then bumps a shared
    // counter; vCPU 0 waits for both and then exits through the debug port.
    let guest = program(|a| {
        let mut again = a.create_label();
        let mut wait = a.create_label();
        let mut done = a.create_label();
        a.mov(rdx, rdi)?;
        a.shl(rdx, 4)?;
        a.add(rdx, 0x510i32)?;
        a.mov(ecx, WRITES)?;
        a.set_label(&mut again)?;
        a.out(dx, al)?;
        a.dec(ecx)?;
        a.jnz(again)?;
        a.lock().inc(qword_ptr(done))?;
        a.test(rdi, rdi)?;
        a.jnz(wait)?; // vCPU 1 parks below.
        a.set_label(&mut wait)?;
        a.cmp(qword_ptr(done), 2i32)?;
        a.jne(wait)?;
        a.test(rdi, rdi)?;
        a.jnz(wait)?;
        a.mov(dx, 0xf4u32)?;
        a.out(dx, al)?;
        a.hlt()?;
        a.set_label(&mut done)?;
        a.dq(&[0])
    });
    let output = SharedBuffer::default();
    let (machine, platform) = machine_and_platform(2, &output);
    let counters = [Arc::new(Counter::default()), Arc::new(Counter::default())];
    for (n, counter) in counters.iter().enumerate() {
        let port = 0x510 + 0x10 * n as u64;
        platform
            .pio()
            .insert(port, 1, &format!("counter{n}"), counter.clone())
            .unwrap();
    }

    let outcome = run_watched(machine, platform, &guest);

    assert!(matches!(outcome, VmOutcome::DebugExit(_)), "{outcome:?}");
    for counter in &counters {
        assert_eq!(counter.writes.load(Ordering::Relaxed), u64::from(WRITES));
    }
}

#[test]
fn guest_echoes_serial_input_using_receive_interrupts() {
    let guest = programs::serial_echo(LOAD_ADDR).unwrap();
    let output = SharedBuffer::default();
    let (machine, platform) = machine_and_platform(1, &output);
    let serial = platform.serial().clone();
    let vm = start_watched(machine, platform, guest);
    assert!(wait_for(&output, b"ready\n"), "the guest never got ready");

    serial.enqueue_input(b"ping").unwrap();
    let echoed = wait_for(&output, b"ready\nping");
    serial.enqueue_input(b"q").unwrap();
    let outcome = vm.join().unwrap();

    assert!(
        echoed,
        "no echo: {:?}",
        String::from_utf8_lossy(&output.contents())
    );
    assert_eq!(outcome, VmOutcome::DebugExit(0x71));
    assert_eq!(output.contents(), b"ready\npingq");
}

fn wait_for(output: &SharedBuffer, expected: &[u8]) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if output.contents().starts_with(expected) {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Emits: write eax to the probe, then end the VM through the debug exit port.
fn report_eax_and_exit(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(dx, PROBE_PORT as u32)?;
    a.out(dx, eax)?;
    a.mov(dx, 0xf4u32)?;
    a.out(dx, al)?;
    a.hlt()
}

/// Panics on any write, as a buggy device model would.
struct PanickingDevice;

impl BusDevice for PanickingDevice {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&self, _offset: u64, _data: &[u8]) {
        panic!("device model bug");
    }
}

#[test]
fn a_panicking_device_ends_the_vm_with_its_own_outcome_and_the_other_vcpus_stop() {
    // vCPU 0 writes the panicking device; vCPU 1 spins forever.
    let guest = program(|a| {
        let mut spin = a.create_label();
        a.test(rdi, rdi)?;
        a.jnz(spin)?;
        a.mov(dx, PROBE_PORT as u32)?;
        a.out(dx, al)?;
        a.hlt()?;
        a.set_label(&mut spin)?;
        a.pause()?;
        a.jmp(spin)
    });
    let (machine, platform) = machine_and_platform(2, &SharedBuffer::default());
    platform
        .pio()
        .insert(PROBE_PORT, 1, "panicker", Arc::new(PanickingDevice))
        .unwrap();

    let outcome = run_watched(machine, platform, &guest);

    assert_eq!(
        outcome,
        VmOutcome::VcpuPanicked {
            vcpu: 0,
            message: "device model bug".into()
        }
    );
    assert_eq!(outcome.exit_status(), VmOutcome::VCPU_PANICKED);
}

#[test]
fn a_wide_read_of_a_byte_wide_device_takes_one_byte_and_reads_zeros_above() {
    // The guest reads COM1's receive register with `in eax, dx`, then with `in al,
    // dx`, and reports both: a 4-byte read of a byte-wide register must pop one byte.
    let guest = program(|a| {
        let mut wait = a.create_label();
        a.mov(dx, (COM1_PORT + 5) as u32)?;
        a.set_label(&mut wait)?;
        a.in_(al, dx)?;
        a.test(al, 1)?;
        a.jz(wait)?;
        a.mov(dx, COM1_PORT as u32)?;
        a.in_(eax, dx)?;
        a.mov(ebx, eax)?;
        a.in_(al, dx)?;
        a.movzx(ecx, al)?;
        a.mov(dx, PROBE_PORT as u32)?;
        a.mov(eax, ebx)?;
        a.out(dx, eax)?;
        a.mov(eax, ecx)?;
        report_eax_and_exit(a)
    });
    let (machine, platform, probe) = machine_with_probe();
    platform.serial().enqueue_input(b"AB").unwrap();

    let outcome = run_watched(machine, platform, &guest);

    assert!(matches!(outcome, VmOutcome::DebugExit(_)), "{outcome:?}");
    assert_eq!(
        *probe.0.lock().unwrap(),
        vec![u64::from(b'A'), u64::from(b'B')]
    );
}

#[test]
fn mmio_devices_on_the_platform_bus_serve_guest_loads_and_stores() {
    const MMIO_BASE: u64 = 0xd000_0000;
    let guest = program(|a| {
        a.mov(rdi, MMIO_BASE)?;
        a.mov(dword_ptr(rdi + 8), 0x1234_5678u32)?;
        a.mov(eax, dword_ptr(rdi + 8))?;
        report_eax_and_exit(a)
    });
    let (machine, platform, probe) = machine_with_probe();
    let register = Arc::new(Register::default());
    platform
        .mmio()
        .insert(MMIO_BASE, 0x1000, "register", register.clone())
        .unwrap();

    let outcome = run_watched(machine, platform, &guest);

    assert!(matches!(outcome, VmOutcome::DebugExit(_)), "{outcome:?}");
    assert_eq!(*register.accesses.lock().unwrap(), vec![(8, 4), (8, 4)]);
    assert_eq!(*probe.0.lock().unwrap(), vec![0x1234_5678]);
}

/// A 4-byte register at offset 8 that records (offset, size) of each access.
#[derive(Default)]
struct Register {
    value: Mutex<[u8; 4]>,
    accesses: Mutex<Vec<(u64, usize)>>,
}

impl BusDevice for Register {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.accesses.lock().unwrap().push((offset, data.len()));
        let value = *self.value.lock().unwrap();
        let len = data.len().min(4);
        data.fill(0);
        data[..len].copy_from_slice(&value[..len]);
    }
    fn write(&self, offset: u64, data: &[u8]) {
        self.accesses.lock().unwrap().push((offset, data.len()));
        let len = data.len().min(4);
        self.value.lock().unwrap()[..len].copy_from_slice(&data[..len]);
    }
}

#[test]
fn pausing_every_vcpu_at_once_stops_the_guest_and_a_device_added_meanwhile_serves_it() {
    // Each vCPU counts in its own word of RAM and writes port 0x520 every 2^16 steps.
    let guest = program(|a| {
        let mut top = a.create_label();
        a.mov(rsi, 0x30_0000u64)?;
        a.shl(rdi, 6)?;
        a.add(rsi, rdi)?;
        a.set_label(&mut top)?;
        a.inc(qword_ptr(rsi))?;
        a.test(word_ptr(rsi), 0xffffu32)?;
        a.jnz(top)?;
        a.mov(dx, 0x520u32)?;
        a.out(dx, al)?;
        a.jmp(top)
    });
    let (machine, platform) = machine_and_platform(2, &SharedBuffer::default());
    let pio = platform.pio().clone();
    let running = machine
        .boot(&guest)
        .unwrap()
        .start(Arc::new(platform.io_handler()))
        .unwrap();
    let counters = |running: &kvmkit::RunningMachine| -> Vec<u64> {
        use vm_memory::Bytes;
        (0..2)
            .map(|n| {
                running
                    .ram()
                    .memory()
                    .read_obj(vm_memory::GuestAddress(0x30_0000 + 64 * n))
                    .unwrap()
            })
            .collect()
    };

    thread::sleep(Duration::from_millis(20));
    running.pause();
    let paused = counters(&running);
    thread::sleep(Duration::from_millis(20));
    let still = counters(&running);
    let counter = Arc::new(Counter::default());
    pio.insert(0x520, 1, "late-counter", counter.clone())
        .unwrap();
    running.resume();
    let deadline = Instant::now() + PATIENCE;
    while counter.writes.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    running.stop();
    let outcomes = running.wait().unwrap();

    assert_eq!(paused, still, "a paused vCPU kept running the guest");
    assert!(counter.writes.load(Ordering::Relaxed) >= 2);
    assert_eq!(outcomes.len(), 2);
}

#[test]
fn a_running_vm_is_paused_and_resumed_from_another_thread_through_its_control() {
    // The guest counts in a word of RAM, forever.
    let guest = program(|a| {
        let mut top = a.create_label();
        a.mov(rsi, 0x30_0000u64)?;
        a.set_label(&mut top)?;
        a.inc(qword_ptr(rsi))?;
        a.jmp(top)
    });
    let (machine, mut platform) = machine_and_platform(1, &SharedBuffer::default());
    let control = platform.control().unwrap();
    let exit = Arc::clone(platform.exit());
    let memory = Arc::clone(machine.ram().shared_memory());
    let count = move || -> u64 {
        use vm_memory::Bytes;
        memory.read_obj(vm_memory::GuestAddress(0x30_0000)).unwrap()
    };
    let before = control.state();
    let vm = start_watched(machine, platform, guest);
    let deadline = Instant::now() + PATIENCE;
    while count() == 0 {
        assert!(Instant::now() < deadline, "the guest never counted");
        thread::sleep(Duration::from_millis(1));
    }

    let paused = control.pause();
    let at_pause = count();
    thread::sleep(Duration::from_millis(50));
    let still = count();
    let paused_again = control.pause();
    let state_paused = control.state();
    let resumed = control.resume();
    let resume_deadline = Instant::now() + PATIENCE;
    while count() == still && Instant::now() < resume_deadline {
        thread::sleep(Duration::from_millis(1));
    }
    let after_resume = count();
    let resumed_again = control.resume();
    exit.request(ShutdownReason::PowerOff);
    let outcome = vm.join().unwrap();

    assert_eq!(before, VmState::Created);
    assert!(paused.is_ok(), "{paused:?}");
    assert_eq!(at_pause, still, "the guest counted while paused");
    assert!(matches!(paused_again, Err(ControlError::AlreadyPaused)));
    assert_eq!(state_paused, VmState::Paused);
    assert!(resumed.is_ok(), "{resumed:?}");
    assert!(
        after_resume > still,
        "the guest did not go on after the resume"
    );
    assert!(matches!(resumed_again, Err(ControlError::NotPaused)));
    assert_eq!(outcome, VmOutcome::PowerOff);
    assert_eq!(control.state(), VmState::Shutdown);
    assert!(matches!(control.pause(), Err(ControlError::NotRunning)));
}

#[test]
fn control_requests_racing_from_two_threads_never_end_the_vm() {
    // Regression: a wake whose request an earlier turn of the I/O thread had already
    // served stopped the run loop, which took it for the VM's end.
    let guest = program(|a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.pause()?;
        a.jmp(top)
    });
    let (machine, mut platform) = machine_and_platform(1, &SharedBuffer::default());
    let control = platform.control().unwrap();
    let exit = Arc::clone(platform.exit());
    let vm = start_watched(machine, platform, guest);
    let deadline = Instant::now() + PATIENCE;
    while control.state() != VmState::Running {
        assert!(Instant::now() < deadline, "the VM never ran");
        thread::sleep(Duration::from_millis(1));
    }

    let racers: Vec<_> = (0..2)
        .map(|_| {
            let control = control.clone();
            thread::spawn(move || {
                for _ in 0..300 {
                    let _ = control.pause();
                    let _ = control.resume();
                }
            })
        })
        .collect();
    for racer in racers {
        racer.join().unwrap();
    }
    let state = control.state();
    exit.request(ShutdownReason::PowerOff);
    let outcome = vm.join().unwrap();

    assert!(
        matches!(state, VmState::Running | VmState::Paused),
        "the VM ended under the requests: {state:?}"
    );
    assert_eq!(outcome, VmOutcome::PowerOff);
}

#[test]
fn a_pressed_power_button_reads_once_at_the_generic_event_device_port() {
    let output = SharedBuffer::default();
    let (machine, platform) = machine_and_platform(1, &output);
    platform
        .generic_events()
        .notify(GedEvent::PowerButton)
        .unwrap();
    // Reads the event register twice: the events, then nothing (read clears).
    let guest = program(|a| {
        a.mov(dx, GED_PORT as u32)?;
        a.in_(al, dx)?;
        a.mov(bl, al)?;
        a.in_(al, dx)?;
        a.shl(eax, 8)?;
        a.or(al, bl)?;
        a.mov(dx, 0xf4u32)?;
        a.out(dx, eax)?;
        a.hlt()
    });

    let outcome = run_watched(machine, platform, &guest);

    assert_eq!(
        outcome,
        VmOutcome::DebugExit(u32::from(GedEvent::PowerButton.bit()))
    );
}
