// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio on real KVM: a guest driver negotiates, sets up a queue in its own memory,
//! notifies (through an ioeventfd or an MMIO exit), and waits for the used ring through
//! the in-kernel irqchip's interrupt.

use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvmkit::devices::{BusDevice, SerialOutput, ShutdownReason};
use kvmkit::guest_asm::programs::{self, virtio_layout};
use kvmkit::virtio_devices::Rng;
use kvmkit::{MachineBuilder, NotifyPath, Platform, PlatformConfig, VmOutcome, VIRTIO_MMIO_BASE};

const PATIENCE: Duration = Duration::from_secs(30);

/// Records each 32-bit value written to it.
#[derive(Default)]
struct Report(Mutex<Vec<u32>>);

impl BusDevice for Report {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&self, _offset: u64, data: &[u8]) {
        let mut bytes = [0u8; 4];
        let len = data.len().min(4);
        bytes[..len].copy_from_slice(&data[..len]);
        self.0.lock().unwrap().push(u32::from_le_bytes(bytes));
    }
}

/// Runs the rng probe guest against a virtio-rng device notified through `path`;
/// returns the outcome, the reported values and the notifications that reached the
/// transport as MMIO writes.
fn run_rng_probe(path: NotifyPath) -> (VmOutcome, Vec<u32>, u64) {
    let machine = MachineBuilder::new()
        .memory_mib(16)
        .irqchip(true)
        .build()
        .unwrap();
    let config = PlatformConfig::default()
        .with_serial_output(SerialOutput::Sink)
        .with_debug_exit_port(Some(0xf4));
    let mut platform = Platform::new(machine.vm(), config).unwrap();
    let slot = platform
        .add_virtio_mmio_with(Box::new(Rng::new()), machine.ram().shared_memory(), path)
        .unwrap();
    let report = Arc::new(Report::default());
    platform
        .pio()
        .insert(
            u64::from(virtio_layout::REPORT_PORT),
            4,
            "report",
            report.clone(),
        )
        .unwrap();
    let transport = platform.virtio_transport(0).unwrap().clone();
    let guest = programs::virtio_rng_probe(0x10_0000, slot.base, slot.irq as u8).unwrap();
    let watchdog = watchdog(&platform);

    let outcome = machine.boot(&guest).unwrap().run_on(platform).unwrap();
    drop(watchdog);

    let values = report.0.lock().unwrap().clone();
    (outcome, values, transport.counters().notifies())
}

/// Ends the VM with SIGALRM's outcome if it runs past PATIENCE; dropping the sender
/// it returns disarms it.
fn watchdog(platform: &Platform) -> std::sync::mpsc::Sender<()> {
    let shutdown = platform.exit().clone();
    let (disarm, disarmed) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if disarmed.recv_timeout(PATIENCE) == Err(RecvTimeoutError::Timeout) {
            shutdown.request(ShutdownReason::Signal(libc::SIGALRM));
        }
    });
    disarm
}

fn check_rng_probe(outcome: VmOutcome, values: &[u32]) {
    assert_eq!(
        outcome,
        VmOutcome::DebugExit(virtio_layout::DONE),
        "{values:x?}"
    );
    let [used_len, interrupts, low, high] = values else {
        panic!("the guest reported {values:x?}");
    };
    assert_eq!(*used_len, virtio_layout::BUFFER_LEN);
    assert!(
        *interrupts >= 1,
        "the used-buffer interrupt never reached the guest"
    );
    assert_ne!((*low, *high), (0, 0), "the buffer was not filled");
}

#[test]
fn a_guest_driver_gets_random_bytes_with_notifications_through_an_ioeventfd() {
    let (outcome, values, mmio_notifies) = run_rng_probe(NotifyPath::Ioeventfd);

    check_rng_probe(outcome, &values);
    assert_eq!(
        mmio_notifies, 0,
        "the ioeventfd should have taken the notification"
    );
}

#[test]
fn a_guest_driver_gets_random_bytes_with_notifications_through_mmio_exits() {
    let (outcome, values, mmio_notifies) = run_rng_probe(NotifyPath::MmioExit);

    check_rng_probe(outcome, &values);
    assert_eq!(mmio_notifies, 1);
}

#[test]
fn devices_get_consecutive_windows_and_their_own_interrupt_lines() {
    let machine = MachineBuilder::new()
        .memory_mib(4)
        .irqchip(true)
        .build()
        .unwrap();
    let mut platform = Platform::new(machine.vm(), PlatformConfig::default()).unwrap();
    let memory = machine.ram().shared_memory();

    let first = platform
        .add_virtio_mmio(Box::new(Rng::new()), memory)
        .unwrap();
    let second = platform
        .add_virtio_mmio(Box::new(Rng::new()), memory)
        .unwrap();

    assert_eq!(first.base, VIRTIO_MMIO_BASE);
    assert_eq!(second.base, VIRTIO_MMIO_BASE + 0x1000);
    assert_ne!(first.irq, second.irq);
    assert_eq!(platform.virtio_devices(), vec![first, second]);
}
