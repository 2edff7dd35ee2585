// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A paused device does nothing and loses nothing: from the moment `pause` returns,
//! no chain is taken, no buffer written and no interrupt raised, whatever the driver
//! posts or the host sends meanwhile; `resume` serves all of it. Each device's own
//! path is checked: the I/O thread's (rng), a disk's worker thread (block), and a
//! source that waits for host input (net's receive queue).

// Test code: the values cast are small constants this file chose (buffer lengths,
// descriptor indices).
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{desc, version_1, wait_readable, Rig, Rings, MOCK_SIZE, PATIENCE, QUEUE_NOTIFY};
use kvmkit_virtio::{Block, BlockBackend, GuestSlice, Rng};
use virtio_bindings::virtio_blk::VIRTIO_BLK_T_IN;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};

/// How long a paused device is watched for doing something it must not.
const QUIET: Duration = Duration::from_millis(150);
const BUFFERS: u64 = 0x2_0000;

/// Waits until `mock`'s used index reaches `count`; false after PATIENCE.
fn wait_used(rig: &Rig, mock: &Rings, count: usize) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while rig.used(mock).len() < count {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// A started device of one queue of MOCK_SIZE entries.
fn started(device: Box<dyn kvmkit_virtio::VirtioDevice>, features: u64) -> (Rig, Rings) {
    let rig = Rig::new(device);
    let mock = rig.mock();
    rig.negotiate(version_1() | features);
    rig.setup_queue(0, &mock, u32::from(MOCK_SIZE));
    rig.driver_ok();
    (rig, mock)
}

#[test]
fn a_paused_rng_serves_nothing_posted_and_everything_once_resumed() {
    let (rig, mock) = started(Box::new(Rng::new()), 0);
    for n in 0..4u16 {
        let buffer = BUFFERS + 0x1000 * u64::from(n);
        mock.desc_table()
            .store(n, desc(buffer, 64, VRING_DESC_F_WRITE, 0))
            .unwrap();
    }

    rig.transport.pause();
    rig.offer(&mock, &[0, 1, 2, 3]);
    rig.write(QUEUE_NOTIFY, 0);
    std::thread::sleep(QUIET);
    let while_paused = rig.used(&mock);
    let interrupted = wait_readable(rig.interrupt.event(), Duration::ZERO);
    let untouched = rig.read_bytes(BUFFERS, 64) == vec![0u8; 64];
    rig.transport.resume();

    assert!(
        while_paused.is_empty(),
        "served while paused: {while_paused:?}"
    );
    assert!(!interrupted, "interrupted while paused");
    assert!(untouched, "a buffer was written while paused");
    assert!(
        wait_used(&rig, &mock, 4),
        "the resume did not serve what was posted"
    );
}

/// A disk whose reads each take `delay` and fill with 0xab, counting them.
struct SlowDisk {
    delay: Duration,
    reads: Arc<AtomicU64>,
}

impl BlockBackend for SlowDisk {
    fn size(&self) -> u64 {
        1 << 20
    }

    fn read_at(&self, into: &GuestSlice<'_>, _offset: u64) -> std::io::Result<usize> {
        std::thread::sleep(self.delay);
        self.reads.fetch_add(1, Ordering::SeqCst);
        into.write_slice(&vec![0xab; into.len()], 0).unwrap();
        Ok(into.len())
    }

    fn write_at(&self, from: &GuestSlice<'_>, _offset: u64) -> std::io::Result<usize> {
        Ok(from.len())
    }

    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Lays out `count` one-sector read requests, request n in descriptors 3n..3n+2.
fn read_requests(rig: &Rig, mock: &Rings, count: u16) {
    for n in 0..count {
        let base = 3 * n;
        let header = 0x1_0000 + 16 * u64::from(n);
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
        rig.memory
            .write_slice(&bytes, GuestAddress(header))
            .unwrap();
        let table = mock.desc_table();
        table
            .store(base, desc(header, 16, VRING_DESC_F_NEXT, base + 1))
            .unwrap();
        let data = BUFFERS + 0x200 * u64::from(n);
        table
            .store(
                base + 1,
                desc(data, 512, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, base + 2),
            )
            .unwrap();
        let status = 0x1_f000 + u64::from(n);
        table
            .store(base + 2, desc(status, 1, VRING_DESC_F_WRITE, 0))
            .unwrap();
    }
}

#[test]
fn a_pause_waits_for_the_disk_request_in_flight_and_stops_the_batch_after_it() {
    let reads = Arc::new(AtomicU64::new(0));
    let disk = SlowDisk {
        delay: Duration::from_millis(20),
        reads: Arc::clone(&reads),
    };
    let (rig, mock) = started(Box::new(Block::new(disk, false)), 0);
    read_requests(&rig, &mock, 5);
    rig.offer(&mock, &[0, 3, 6, 9, 12]);
    rig.write(QUEUE_NOTIFY, 0);
    let begun = Instant::now();
    while reads.load(Ordering::SeqCst) == 0 {
        assert!(begun.elapsed() < PATIENCE, "the disk read nothing");
        std::thread::sleep(Duration::from_micros(200));
    }

    rig.transport.pause();
    let used_at_pause = rig.used(&mock).len();
    let reads_at_pause = reads.load(Ordering::SeqCst);
    std::thread::sleep(QUIET);
    let used_while_paused = rig.used(&mock).len();
    let reads_while_paused = reads.load(Ordering::SeqCst);
    rig.transport.resume();

    assert!(
        (1..5).contains(&used_at_pause),
        "{used_at_pause} of 5 used when the pause returned"
    );
    assert_eq!(
        reads_at_pause as usize, used_at_pause,
        "a request read at the pause was not completed before it returned"
    );
    assert_eq!(
        used_while_paused, used_at_pause,
        "the worker went on while paused"
    );
    assert_eq!(reads_while_paused, reads_at_pause);
    assert!(
        wait_used(&rig, &mock, 5),
        "the resume did not serve the rest"
    );
    let statuses = rig.read_bytes(0x1_f000, 5);
    assert_eq!(statuses, vec![0u8; 5], "every request completed OK");
}

#[test]
fn a_frame_arriving_while_net_is_paused_waits_in_the_backend_until_the_resume() {
    use kvmkit_virtio::{DatagramBackend, Net, NET_HEADER_LEN};
    use std::os::unix::net::UnixDatagram;
    let (device_end, peer) = UnixDatagram::pair().unwrap();
    let rig = Rig::new(Box::new(Net::new(
        DatagramBackend::new(device_end).unwrap(),
        [2, 0, 0, 0, 0, 1],
    )));
    let rx = rig.mock_at(0x9000);
    let tx = rig.mock();
    rig.negotiate(version_1() | (1 << 5));
    rig.setup_queue(0, &rx, u32::from(MOCK_SIZE));
    rig.setup_queue(1, &tx, u32::from(MOCK_SIZE));
    rig.driver_ok();
    rx.desc_table()
        .store(0, desc(BUFFERS, 0x800, VRING_DESC_F_WRITE, 0))
        .unwrap();
    rig.offer(&rx, &[0]);
    rig.write(QUEUE_NOTIFY, 0);
    let mut frame = vec![0u8; NET_HEADER_LEN];
    frame.extend([0xff; 6]);
    frame.extend([2, 0, 0, 0, 0, 2, 0x88, 0xb5]);
    frame.extend([0x5a; 46]);

    rig.transport.pause();
    peer.send(&frame).unwrap();
    std::thread::sleep(QUIET);
    let while_paused = rig.used(&rx);
    rig.transport.resume();

    assert!(while_paused.is_empty(), "delivered while paused");
    assert!(
        wait_used(&rig, &rx, 1),
        "the frame was lost across the pause"
    );
    assert_eq!(rig.used(&rx), vec![(0, frame.len() as u32)]);
}

#[test]
fn a_paused_devices_state_restored_on_a_copy_of_guest_memory_serves_what_was_posted() {
    use common::RAM;
    use kvmkit_virtio::TransportStateError;
    let (saved, mock) = started(Box::new(Rng::new()), 0);
    for n in 0..4u16 {
        let buffer = BUFFERS + 0x1000 * u64::from(n);
        mock.desc_table()
            .store(n, desc(buffer, 64, VRING_DESC_F_WRITE, 0))
            .unwrap();
    }
    saved.offer(&mock, &[0, 1]);
    saved.write(QUEUE_NOTIFY, 0);
    assert!(wait_used(&saved, &mock, 2));
    saved.transport.pause();
    // Posted while paused: for the restored device to serve.
    saved.offer(&mock, &[2, 3]);
    let state = saved.transport.save_state();
    let mut memory = vec![0u8; RAM as usize];
    saved
        .memory
        .read_slice(&mut memory, GuestAddress(0))
        .unwrap();
    let state: kvmkit_virtio::TransportState =
        serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();

    let restored = Rig::new(Box::new(Rng::new()));
    restored
        .memory
        .write_slice(&memory, GuestAddress(0))
        .unwrap();
    let wrong_type = Rig::new(Box::new(kvmkit_virtio::Block::with_file(
        common::scratch_image("restore-type", &[0u8; 512]),
        512,
        false,
        b"",
    )))
    .transport
    .restore_state(&state);
    restored.transport.restore_state(&state).unwrap();
    let served = wait_used(&restored, &mock, 4);

    assert_eq!(
        state.status() & 0x4,
        0x4,
        "the driver had started the device"
    );
    assert!(
        served,
        "the restored device did not serve what was posted: {:?}",
        restored.used(&mock)
    );
    assert_eq!(
        restored.read(0x70) & 0xf,
        0xf,
        "the driver's status came back"
    );
    assert!(
        matches!(wrong_type, Err(TransportStateError::Mismatch { .. })),
        "{wrong_type:?}"
    );
}
