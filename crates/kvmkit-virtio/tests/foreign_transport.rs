// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Another VMM's transport activating kvmkit's devices: no `MmioTransport`, no
//! kvmkit event loop. The transport here is what a virtio-pci or vhost-user frontend
//! would do on `DRIVER_OK` (queues built from the driver's setup, an `Activation`
//! handed to the device), and the device's queue work runs on event sources this test
//! polls by hand (`Rng`) or on the device's own worker thread (`Block`). Both complete
//! requests through it, and a reset stops `Rng`.

// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

mod common;

use common::{desc, scratch_image};
use kvmkit_devices::{EventSources, Flow, Handler};
use kvmkit_virtio::{
    Activation, ActiveQueue, Block, DeviceFault, EventFdVirtioInterrupt, GuestMemory, Rng,
    VirtioDevice, VirtioInterrupt,
};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

const RAM: usize = 1 << 20;
const QUEUE_SIZE: u16 = 16;
const RINGS: u64 = 0x8000;

/// Event sources polled by hand: a foreign VMM's event loop in a few lines.
#[derive(Default)]
struct PolledSources {
    sources: Mutex<Vec<(OwnedFd, Handler)>>,
}

impl EventSources for PolledSources {
    fn add(&self, fd: BorrowedFd<'_>, handler: Handler) -> std::io::Result<()> {
        let fd = fd.try_clone_to_owned()?;
        self.sources.lock().unwrap().push((fd, handler));
        Ok(())
    }

    fn add_pausable(
        &self,
        fd: BorrowedFd<'_>,
        _wake: &EventFd,
        handler: Handler,
    ) -> std::io::Result<()> {
        // Never paused here: the handler runs whenever `fd` is readable.
        self.add(fd, handler)
    }
}

impl PolledSources {
    /// Runs the handler of every readable source once; returns how many ran.
    fn poll_once(&self) -> usize {
        let mut sources = self.sources.lock().unwrap();
        let mut ran = 0;
        sources.retain_mut(|(fd, handler)| {
            if !kvmkit_devices::wait_readable(fd.as_fd(), std::time::Duration::ZERO) {
                return true;
            }
            ran += 1;
            handler() != Flow::Remove
        });
        ran
    }

    fn count(&self) -> usize {
        self.sources.lock().unwrap().len()
    }
}

/// The driver's side: rings in guest memory, laid out as a driver would.
struct Driver<'m> {
    rings: MockSplitQueue<'m, GuestMemory>,
}

impl<'m> Driver<'m> {
    fn new(memory: &'m GuestMemory) -> Self {
        Driver {
            rings: MockSplitQueue::create(memory, GuestAddress(RINGS), QUEUE_SIZE),
        }
    }

    /// Posts the chain `descs` (table entries from 0) and makes head 0 available.
    fn post(&self, descs: &[RawDescriptor]) {
        for (index, descriptor) in descs.iter().enumerate() {
            self.rings
                .desc_table()
                .store(index as u16, *descriptor)
                .unwrap();
        }
        self.rings.avail().ring().ref_at(0).unwrap().store(0);
        self.rings.avail().idx().store(1);
    }

    fn used(&self) -> (u16, u32) {
        let idx = self.rings.used().idx().load();
        let len = self.rings.used().ring().ref_at(0).unwrap().load().len();
        (idx, len)
    }
}

/// What this VMM's transport does on DRIVER_OK: queue 0 from the driver's setup,
/// a notifier for it, and the activation.
struct Transport {
    sources: Arc<PolledSources>,
    interrupt: Arc<EventFdVirtioInterrupt>,
    notifier: Arc<EventFd>,
}

impl Transport {
    fn activate(device: &mut dyn VirtioDevice, memory: &Arc<GuestMemory>, driver: &Driver) -> Self {
        let mut queue = Queue::new(QUEUE_SIZE).unwrap();
        queue
            .try_set_desc_table_address(driver.rings.desc_table_addr())
            .unwrap();
        queue
            .try_set_avail_ring_address(driver.rings.avail_addr())
            .unwrap();
        queue
            .try_set_used_ring_address(driver.rings.used_addr())
            .unwrap();
        queue.set_ready(true);
        assert!(queue.is_valid(&**memory));
        let notifier = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let sources = Arc::new(PolledSources::default());
        let interrupt = Arc::new(EventFdVirtioInterrupt::new().unwrap());
        let activation = Activation::new(
            Arc::clone(memory),
            1 << VIRTIO_F_VERSION_1,
            vec![ActiveQueue::new(0, queue, Arc::clone(&notifier))],
            interrupt.clone(),
            Arc::new(DeviceFault::default()),
            sources.clone(),
        );
        device.activate(activation).unwrap();
        Transport {
            sources,
            interrupt,
            notifier,
        }
    }

    /// The driver notifies queue 0; this VMM's loop turns once.
    fn notify_and_poll(&self) -> usize {
        self.notifier.write(1).unwrap();
        self.sources.poll_once()
    }
}

fn memory() -> Arc<GuestMemory> {
    Arc::new(GuestMemory::from_ranges(&[(GuestAddress(0), RAM)]).unwrap())
}

#[test]
fn a_foreign_transport_drives_block_to_a_completed_read_on_its_own_event_sources() {
    let memory = memory();
    let driver = Driver::new(&memory);
    let sector: Vec<u8> = (0..512u32).map(|i| i as u8).collect();
    let mut block = Block::with_file(scratch_image("foreign", &sector), 512, false, b"foreign");
    let transport = Transport::activate(&mut block, &memory, &driver);
    // Header (IN, sector 0) at 0x1000, 512 bytes of data at 0x2000, status at 0x3000.
    memory
        .write_slice(&VIRTIO_BLK_T_IN.to_le_bytes(), GuestAddress(0x1000))
        .unwrap();
    memory.write_obj(0u64, GuestAddress(0x1008)).unwrap();
    memory.write_obj(0xffu8, GuestAddress(0x3000)).unwrap();
    driver.post(&[
        desc(0x1000, 16, VRING_DESC_F_NEXT, 1),
        desc(0x2000, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2),
        desc(0x3000, 1, VRING_DESC_F_WRITE, 0),
    ]);

    // Block serves its queue on a worker thread of its own, not on the VMM's loop.
    let ran = transport.notify_and_poll();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while driver.used().0 == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }

    assert_eq!(ran, 0);
    assert_eq!(driver.used(), (1, 513));
    let mut data = vec![0u8; 512];
    memory.read_slice(&mut data, GuestAddress(0x2000)).unwrap();
    assert_eq!(data, sector);
    let status: u8 = memory.read_obj(GuestAddress(0x3000)).unwrap();
    assert_eq!(u32::from(status), VIRTIO_BLK_S_OK);
    assert_ne!(transport.interrupt.status() & VIRTIO_MMIO_INT_VRING, 0);
    assert_eq!(block.counters()[0].requests(), 1);
}

#[test]
fn a_foreign_transport_drives_rng_and_a_reset_stops_it() {
    let memory = memory();
    let driver = Driver::new(&memory);
    let mut rng = Rng::new();
    let transport = Transport::activate(&mut rng, &memory, &driver);
    driver.post(&[desc(0x4000, 64, VRING_DESC_F_WRITE, 0)]);

    transport.notify_and_poll();
    let served = driver.used();
    rng.reset();
    driver.rings.avail().idx().store(2);
    transport.notify_and_poll();

    assert_eq!(served, (1, 64));
    assert_eq!(driver.used().0, 1, "a reset device served a chain");
    assert_eq!(
        transport.sources.count(),
        0,
        "the reset device's source stayed"
    );
    assert_eq!(rng.counters()[0].requests(), 1);
}
