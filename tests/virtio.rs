// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio on real KVM: a guest driver negotiates, sets up a queue in its own memory,
//! notifies (through an ioeventfd or an MMIO exit), and waits for the used ring through
//! the in-kernel irqchip's interrupt.

// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvmkit::devices::{BusDevice, SerialOutput, SharedBuffer, ShutdownReason};
use kvmkit::guest_asm::programs::{self, virtio_layout, VirtioBuffer, VirtioRequest};
use kvmkit::virtio::{Block, GuestMemory, Rng, VirtioDevice};
use kvmkit::{
    MachineBuilder, NotifyPath, Platform, PlatformConfig, VirtioMmioSlot, VmOutcome,
    VIRTIO_MMIO_BASE,
};
use vm_memory::{Bytes, GuestAddress};

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

/// Runs `requests` through the virtio driver guest against `device`, notified through
/// `path`; returns the outcome, the reported values (each used length, then the
/// interrupt count), the guest memory, and the notifications that reached the
/// transport as MMIO writes.
fn drive(
    device: Box<dyn VirtioDevice>,
    path: NotifyPath,
    prepare: impl FnOnce(&GuestMemory),
    requests: &[Vec<VirtioBuffer>],
) -> (VmOutcome, Vec<u32>, Arc<GuestMemory>, u64) {
    let requests: Vec<VirtioRequest> = requests
        .iter()
        .map(|buffers| VirtioRequest {
            queue: 0,
            buffers: buffers.clone(),
        })
        .collect();
    drive_with(
        |platform, memory| platform.add_virtio_mmio_with(device, memory, path).unwrap(),
        prepare,
        1,
        &requests,
    )
}

/// As [`drive`], with the device added by `add`, `queues` queues set up, and requests
/// on any queue.
fn drive_with(
    add: impl FnOnce(&mut Platform, &Arc<GuestMemory>) -> VirtioMmioSlot,
    prepare: impl FnOnce(&GuestMemory),
    queues: u16,
    requests: &[VirtioRequest],
) -> (VmOutcome, Vec<u32>, Arc<GuestMemory>, u64) {
    let machine = MachineBuilder::new()
        .memory_mib(16)
        .irqchip(true)
        .build()
        .unwrap();
    let config = PlatformConfig::default()
        .with_serial_output(SerialOutput::Sink)
        .with_debug_exit_port(Some(0xf4));
    let mut platform = Platform::new(machine.vm(), config).unwrap();
    let memory = Arc::clone(machine.ram().shared_memory());
    let slot = add(&mut platform, &memory);
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
    prepare(&memory);
    let guest =
        programs::virtio_driver(0x10_0000, slot.base, slot.irq as u8, queues, requests).unwrap();
    let watchdog = watchdog(&platform);

    let outcome = machine.boot(&guest).unwrap().run_on(platform).unwrap();
    drop(watchdog);

    let values = report.0.lock().unwrap().clone();
    (outcome, values, memory, transport.counters().notifies())
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

fn buffer(addr: u64, len: u32, writable: bool) -> VirtioBuffer {
    VirtioBuffer {
        addr,
        len,
        writable,
    }
}

const RNG_BUFFER: u64 = 0x40_0000;

fn rng_request() -> Vec<Vec<VirtioBuffer>> {
    vec![vec![buffer(RNG_BUFFER, 16, true)]]
}

fn check_rng(outcome: VmOutcome, values: &[u32], memory: &GuestMemory) {
    assert_eq!(
        outcome,
        VmOutcome::DebugExit(virtio_layout::DONE),
        "{values:x?}"
    );
    assert_eq!(values, [16, 1], "used length, interrupts");
    let mut bytes = [0u8; 16];
    memory
        .read_slice(&mut bytes, GuestAddress(RNG_BUFFER))
        .unwrap();
    assert_ne!(bytes, [0u8; 16], "the buffer was not filled");
}

#[test]
fn a_guest_driver_gets_random_bytes_with_notifications_through_an_ioeventfd() {
    let (outcome, values, memory, mmio_notifies) = drive(
        Box::new(Rng::new()),
        NotifyPath::Ioeventfd,
        |_| {},
        &rng_request(),
    );

    check_rng(outcome, &values, &memory);
    assert_eq!(
        mmio_notifies, 0,
        "the ioeventfd should have taken the notification"
    );
}

#[test]
fn a_guest_driver_gets_random_bytes_with_notifications_through_mmio_exits() {
    let (outcome, values, memory, mmio_notifies) = drive(
        Box::new(Rng::new()),
        NotifyPath::MmioExit,
        |_| {},
        &rng_request(),
    );

    check_rng(outcome, &values, &memory);
    assert_eq!(mmio_notifies, 1);
}

const HEADERS: u64 = 0x41_0000;
const STATUS: u64 = 0x41_1000;
const WRITTEN: u64 = 0x42_0000;
const READ: u64 = 0x43_0000;

fn blk_header(memory: &GuestMemory, at: u64, kind: u32, sector: u64) {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&kind.to_le_bytes());
    bytes[8..].copy_from_slice(&sector.to_le_bytes());
    memory.write_slice(&bytes, GuestAddress(at)).unwrap();
}

#[test]
fn a_guest_driver_writes_reads_and_flushes_sectors_of_an_image_file() {
    let path = std::env::temp_dir().join(format!("kvmkit-guest-blk-{}", std::process::id()));
    let image: Vec<u8> = (0..16u8).flat_map(|n| [n + 1; 512]).collect();
    std::fs::write(&path, &image).unwrap();
    let disk = Block::open(&path, false).unwrap();
    // Write sector 1, read sector 3, flush.
    let requests = vec![
        vec![
            buffer(HEADERS, 16, false),
            buffer(WRITTEN, 512, false),
            buffer(STATUS, 1, true),
        ],
        vec![
            buffer(HEADERS + 16, 16, false),
            buffer(READ, 512, true),
            buffer(STATUS + 1, 1, true),
        ],
        vec![buffer(HEADERS + 32, 16, false), buffer(STATUS + 2, 1, true)],
    ];

    let (outcome, values, memory, _) = drive(
        Box::new(disk),
        NotifyPath::Ioeventfd,
        |memory| {
            blk_header(memory, HEADERS, 1, 1);
            blk_header(memory, HEADERS + 16, 0, 3);
            blk_header(memory, HEADERS + 32, 4, 0);
            memory
                .write_slice(&[0x5a; 512], GuestAddress(WRITTEN))
                .unwrap();
            memory
                .write_slice(&[0xee; 3], GuestAddress(STATUS))
                .unwrap();
        },
        &requests,
    );

    assert_eq!(
        outcome,
        VmOutcome::DebugExit(virtio_layout::DONE),
        "{values:x?}"
    );
    assert_eq!(values, [1, 513, 1, 3], "used lengths, interrupts");
    let mut status = [0u8; 3];
    memory
        .read_slice(&mut status, GuestAddress(STATUS))
        .unwrap();
    assert_eq!(status, [0, 0, 0], "VIRTIO_BLK_S_OK for each request");
    let mut read = vec![0u8; 512];
    memory.read_slice(&mut read, GuestAddress(READ)).unwrap();
    assert_eq!(read, vec![4u8; 512], "sector 3 as the image has it");
    let after = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        after[512..1024],
        [0x5a; 512],
        "sector 1 as the guest wrote it"
    );
    assert_eq!(after[..512], image[..512]);
    assert_eq!(after[1024..], image[1024..]);
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

#[test]
fn a_guest_writes_to_the_virtio_console_and_reads_its_input() {
    let output = SharedBuffer::default();
    let request = |queue, buffers| VirtioRequest { queue, buffers };
    // Receive 4 bytes on queue 0, transmit 12 bytes on queue 1.
    let requests = [
        request(0, vec![buffer(0x44_0000, 4, true)]),
        request(1, vec![buffer(0x45_0000, 12, false)]),
    ];
    let written = output.clone();

    let (outcome, values, memory, _) = drive_with(
        |platform, memory| {
            let slot = platform
                .add_virtio_console(SerialOutput::Writer(Box::new(written)), memory)
                .unwrap();
            let input = platform.console_input().unwrap();
            assert_eq!(input.enqueue_input(b"abcd").unwrap(), 4);
            slot
        },
        |memory| {
            memory
                .write_slice(b"hello, hvc0\n", GuestAddress(0x45_0000))
                .unwrap()
        },
        2,
        &requests,
    );

    assert_eq!(
        outcome,
        VmOutcome::DebugExit(virtio_layout::DONE),
        "{values:x?}"
    );
    assert_eq!(values, [4, 0, 2], "used lengths, interrupts");
    let mut received = [0u8; 4];
    memory
        .read_slice(&mut received, GuestAddress(0x44_0000))
        .unwrap();
    assert_eq!(&received, b"abcd");
    assert_eq!(output.contents(), b"hello, hvc0\n");
}

/// Storage that never answers, as a hung NFS server does: every read blocks until
/// the test lets it go.
struct HungBackend {
    entered: Mutex<std::sync::mpsc::Sender<()>>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl kvmkit::virtio::BlockBackend for HungBackend {
    fn size(&self) -> u64 {
        1 << 20
    }

    fn read_at(
        &self,
        _into: &kvmkit::virtio::GuestSlice<'_>,
        _offset: u64,
    ) -> std::io::Result<usize> {
        let _ = self.entered.lock().unwrap().send(());
        let _ = self.release.lock().unwrap().recv();
        Err(std::io::ErrorKind::TimedOut.into())
    }

    fn write_at(
        &self,
        _from: &kvmkit::virtio::GuestSlice<'_>,
        _offset: u64,
    ) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_termination_request_ends_the_vm_in_order_while_a_disk_backend_hangs() {
    let (entered, backend_entered) = std::sync::mpsc::channel();
    let (let_go, release) = std::sync::mpsc::channel::<()>();
    let backend = HungBackend {
        entered: Mutex::new(entered),
        release: Mutex::new(release),
    };
    let exit = Arc::new(Mutex::new(None));
    let exit_for_add = Arc::clone(&exit);
    let requests = vec![VirtioRequest {
        queue: 0,
        buffers: vec![
            buffer(HEADERS, 16, false),
            buffer(READ, 512, true),
            buffer(STATUS, 1, true),
        ],
    }];
    // What SIGTERM does on the I/O thread: once the guest's read is stuck in the
    // backend, ask the VM to end.
    let terminate = std::thread::spawn(move || {
        backend_entered
            .recv_timeout(PATIENCE)
            .expect("the read reached the backend");
        let exit: Arc<kvmkit::devices::VmShutdown> = exit.lock().unwrap().clone().unwrap();
        exit.request(ShutdownReason::Signal(libc::SIGTERM));
    });

    let (outcome, _, _, _) = drive_with(
        move |platform, memory| {
            *exit_for_add.lock().unwrap() = Some(platform.exit().clone());
            platform
                .add_virtio_mmio(Box::new(Block::new(backend, true)), memory)
                .unwrap()
        },
        |memory| blk_header(memory, HEADERS, 0, 0),
        1,
        &requests,
    );
    terminate.join().unwrap();
    drop(let_go);

    // The disk's worker is still blocked in the backend; the I/O thread was not.
    assert_eq!(outcome, VmOutcome::Signal(libc::SIGTERM));
}
