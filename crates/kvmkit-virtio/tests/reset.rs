// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A reset quiesces (virtio 1.2 §2.4.1): once the driver reads status 0 back, the
//! device touches neither the queues, nor the buffers, nor the interrupt of its old
//! activation, however much work the driver had posted. The driver here is hostile:
//! it fills the queue with requests that each take the device a while, and resets as
//! soon as the first one is used.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    desc, version_1, wait_readable, Rig, Rings, MOCK_SIZE, PATIENCE, QUEUE_NOTIFY, STATUS,
};
use kvmkit_virtio::queue::Served;
use kvmkit_virtio::{
    ActivateError, Activation, DeviceLifecycle, QueueCounters, VirtioDevice, VirtioInterrupt,
};
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use vm_memory::{Bytes, GuestAddress};

/// How long the device takes over each request: long enough that a queue of them is
/// still being served when the driver resets.
const SERVICE_TIME: Duration = Duration::from_millis(5);
const BUFFER: u64 = 0x2_0000;
const BUFFER_LEN: u32 = 64;

/// A device type of a downstream VMM, on kvmkit's lifecycle: it fills each writable
/// buffer with 0xaa, slowly.
struct SlowFiller {
    lifecycle: DeviceLifecycle,
    /// Requests the device began to serve.
    served: Arc<AtomicU64>,
}

impl VirtioDevice for SlowFiller {
    fn device_type(&self) -> u32 {
        0x7f
    }

    fn features(&self) -> u64 {
        version_1()
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![MOCK_SIZE]
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, mut activation: Activation) -> Result<(), ActivateError> {
        let queue = activation.take_queue(0)?;
        let served = Arc::clone(&self.served);
        self.lifecycle
            .serve_on_notify(&activation, queue, move |memory, chain| {
                served.fetch_add(1, Ordering::SeqCst);
                let Ok(chain) = chain else {
                    return Served::FAILED;
                };
                std::thread::sleep(SERVICE_TIME);
                for buffer in &chain.writable {
                    let fill = vec![0xaa; buffer.len as usize];
                    memory.write_slice(&fill, buffer.addr).unwrap();
                }
                Served::done(BUFFER_LEN, u64::from(BUFFER_LEN))
            })
    }

    fn reset(&mut self) {
        self.lifecycle.reset();
    }

    fn pause(&mut self) {
        self.lifecycle.pause();
    }

    fn resume(&mut self) {
        self.lifecycle.resume();
    }

    fn counters(&self) -> Vec<Arc<QueueCounters>> {
        self.lifecycle.counters()
    }
}

fn used_idx(rig: &Rig, used: GuestAddress) -> u16 {
    rig.memory.read_obj(GuestAddress(used.0 + 2)).unwrap()
}

/// A started SlowFiller counting into `served`, its queue full of requests on the same
/// buffer, notified, and the first of them used: the moment the hostile driver resets.
fn first_request_used(served: &Arc<AtomicU64>) -> (Rig, Rings) {
    let rig = Rig::new(Box::new(SlowFiller {
        lifecycle: DeviceLifecycle::new(1),
        served: Arc::clone(served),
    }));
    let mock = rig.mock();
    rig.negotiate(version_1());
    rig.setup_queue(0, &mock, u32::from(MOCK_SIZE));
    rig.driver_ok();
    mock.desc_table()
        .store(0, desc(BUFFER, BUFFER_LEN, VRING_DESC_F_WRITE, 0))
        .unwrap();
    rig.offer(&mock, &[0; MOCK_SIZE as usize]);
    rig.write(QUEUE_NOTIFY, 0);
    let begun = Instant::now();
    while used_idx(&rig, mock.used_addr()) == 0 {
        assert!(begun.elapsed() < PATIENCE, "the device served nothing");
        std::thread::sleep(Duration::from_micros(200));
    }
    (rig, mock)
}

#[test]
fn after_a_reset_reads_back_the_old_queue_buffers_and_interrupt_stay_still() {
    let (rig, mock) = first_request_used(&Arc::default());

    rig.write(STATUS, 0);
    let status = rig.read(STATUS);
    let used_at_reset = used_idx(&rig, mock.used_addr());
    // The driver takes its buffer back and clears the interrupt.
    rig.memory
        .write_slice(&[0u8; BUFFER_LEN as usize], GuestAddress(BUFFER))
        .unwrap();
    let _ = rig.interrupt.event().read();
    // The rest of the queue would take the device 15 * SERVICE_TIME.
    std::thread::sleep(SERVICE_TIME * u32::from(MOCK_SIZE) * 2);

    assert_eq!(status, 0);
    assert!(
        used_at_reset < MOCK_SIZE,
        "the batch ended before the reset"
    );
    assert_eq!(
        used_idx(&rig, mock.used_addr()),
        used_at_reset,
        "the used ring moved after the reset"
    );
    assert_eq!(
        rig.read_bytes(BUFFER, BUFFER_LEN as usize),
        vec![0u8; BUFFER_LEN as usize],
        "a buffer was written after the reset"
    );
    assert!(
        !wait_readable(rig.interrupt.event(), Duration::ZERO),
        "the interrupt was raised after the reset"
    );
    assert_eq!(rig.interrupt.status(), 0);
}

#[test]
fn a_reset_stops_the_batch_after_the_request_in_flight() {
    let served = Arc::new(AtomicU64::new(0));
    let (rig, mock) = first_request_used(&served);

    rig.write(STATUS, 0);
    let used_at_reset = used_idx(&rig, mock.used_addr());
    let served_at_reset = served.load(Ordering::SeqCst);
    std::thread::sleep(SERVICE_TIME * u32::from(MOCK_SIZE) * 2);

    // The reset waited for the request in flight (served, never published) and no more.
    assert!(
        served_at_reset <= u64::from(used_at_reset) + 1,
        "{served_at_reset} requests served for {used_at_reset} used"
    );
    assert_eq!(served.load(Ordering::SeqCst), served_at_reset);
    assert_eq!(
        rig.transport.queue_counters()[0].requests(),
        u64::from(used_at_reset),
        "the counters count what was published"
    );
}
