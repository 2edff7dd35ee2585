// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The virtio-mmio transport against a driver that follows the spec and one that does
//! not: every wrong move is refused or answered with DEVICE_NEEDS_RESET, counted, and
//! the device keeps serving.

// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::io;
use std::sync::{Arc, Mutex};

use common::*;
use kvmkit_virtio::{QueueNotifiers, Rng, RNG_MAX_REQUEST};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK,
};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vmm_sys_util::eventfd::EventFd;

const WRITE: u32 = VRING_DESC_F_WRITE;

fn rng_rig() -> Rig {
    Rig::new(Box::new(Rng::new()))
}

#[test]
fn identification_registers_read_as_virtio_mmio_version_2() {
    let rig = rng_rig();

    assert_eq!(rig.read(0x00), 0x7472_6976, "magic");
    assert_eq!(rig.read(0x04), 2, "version");
    assert_eq!(rig.read(0x08), 4, "device id: rng");
    rig.write(QUEUE_SEL, 0);
    assert_eq!(rig.read(QUEUE_NUM_MAX), 256);
    rig.write(QUEUE_SEL, 1);
    assert_eq!(rig.read(QUEUE_NUM_MAX), 0, "no queue 1");
}

#[test]
fn rng_fills_a_writable_buffer_and_interrupts() {
    let rig = rng_rig();
    let mock = rig.mock();
    mock.desc_table()
        .store(0, desc(0x2_0000, 64, WRITE, 0))
        .unwrap();

    assert!(is_set(
        rig.negotiate(version_1()),
        VIRTIO_CONFIG_S_FEATURES_OK
    ));
    rig.setup_queue(0, &mock, 16);
    rig.driver_ok();
    rig.offer(&mock, &[0]);
    rig.write(QUEUE_NOTIFY, 0);

    assert!(rig.wait_interrupt(), "no interrupt");
    assert_eq!(rig.used(&mock), vec![(0, 64)]);
    assert_ne!(rig.read_bytes(0x2_0000, 64), vec![0u8; 64]);
    assert_eq!(interrupt_status(&rig) & 1, 1);
    rig.write(INTERRUPT_ACK, 1);
    assert_eq!(interrupt_status(&rig), 0);
    let counters = &rig.transport.queue_counters()[0];
    assert_eq!((counters.requests(), counters.bytes()), (1, 64));
}

#[test]
fn one_huge_rng_request_gets_at_most_the_cap() {
    let rig = rng_rig();
    let mock = rig.mock();
    mock.desc_table()
        .store(0, desc(0x1_0000, 0xe_0000, WRITE, 0))
        .unwrap();

    rig.negotiate(version_1());
    rig.setup_queue(0, &mock, 16);
    rig.driver_ok();
    rig.offer(&mock, &[0]);
    rig.write(QUEUE_NOTIFY, 0);

    assert!(rig.wait_interrupt());
    assert_eq!(rig.used(&mock), vec![(0, RNG_MAX_REQUEST as u32)]);
}

#[test]
fn hostile_chains_are_each_dropped_and_counted_and_the_queue_keeps_serving() {
    let rig = rng_rig();
    let mock = rig.mock();
    let table = mock.desc_table();
    // 0 -> 1 -> 0: a loop.
    table
        .store(0, desc(0x2_0000, 16, WRITE | VRING_DESC_F_NEXT, 1))
        .unwrap();
    table
        .store(1, desc(0x2_1000, 16, WRITE | VRING_DESC_F_NEXT, 0))
        .unwrap();
    // A buffer past the end of RAM.
    table.store(2, desc(RAM - 8, 64, WRITE, 0)).unwrap();
    // Device-readable where the rng needs writable.
    table.store(3, desc(0x2_2000, 64, 0, 0)).unwrap();
    // A next index past the table.
    table
        .store(4, desc(0x2_3000, 64, WRITE | VRING_DESC_F_NEXT, 200))
        .unwrap();
    // An indirect table, never offered (VIRTIO_RING_F_INDIRECT_DESC).
    table
        .store(6, desc(0x2_5000, 16, VRING_DESC_F_INDIRECT, 0))
        .unwrap();
    // Lengths adding up past 2^32 bytes.
    table
        .store(7, desc(0x2_6000, u32::MAX, WRITE | VRING_DESC_F_NEXT, 8))
        .unwrap();
    table.store(8, desc(0x2_7000, 16, WRITE, 0)).unwrap();
    // A good one last.
    table.store(5, desc(0x2_4000, 32, WRITE, 0)).unwrap();

    rig.negotiate(version_1());
    rig.setup_queue(0, &mock, 16);
    rig.driver_ok();
    // Head 200 is past the table.
    rig.offer(&mock, &[0, 2, 3, 4, 6, 7, 200, 5]);
    rig.write(QUEUE_NOTIFY, 0);

    assert!(rig.wait_interrupt());
    assert_eq!(
        rig.used(&mock),
        vec![
            (0, 0),
            (2, 0),
            (3, 0),
            (4, 0),
            (6, 0),
            (7, 0),
            (200, 0),
            (5, 32)
        ]
    );
    let counters = &rig.transport.queue_counters()[0];
    assert_eq!((counters.requests(), counters.errors()), (1, 7));
    assert!(!is_set(rig.read(STATUS), NEEDS_RESET));
}

#[test]
fn an_avail_index_jumping_past_the_queue_size_makes_the_device_need_a_reset() {
    let rig = rng_rig();
    let mock = rig.mock();

    rig.negotiate(version_1());
    rig.setup_queue(0, &mock, 16);
    rig.driver_ok();
    mock.set_avail_idx(100);
    rig.write(QUEUE_NOTIFY, 0);

    assert!(rig.wait_interrupt(), "the config-change interrupt");
    assert!(is_set(rig.read(STATUS), NEEDS_RESET));
    assert_eq!(interrupt_status(&rig) & 2, 2);
    // A reset brings the device back.
    rig.write(STATUS, 0);
    assert_eq!(rig.read(STATUS), 0);
}

#[test]
fn features_never_offered_or_without_version_1_do_not_get_features_ok() {
    let rig = rng_rig();

    let unknown = rig.negotiate(version_1() | (1 << 40));
    rig.write(STATUS, 0);
    let legacy = rig.negotiate(0);

    assert!(!is_set(unknown, VIRTIO_CONFIG_S_FEATURES_OK));
    assert!(!is_set(legacy, VIRTIO_CONFIG_S_FEATURES_OK));
}

#[test]
fn driver_ok_without_features_ok_needs_a_reset() {
    let rig = rng_rig();

    rig.write(STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    rig.write(STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    rig.write(
        STATUS,
        VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_DRIVER_OK,
    );

    assert!(is_set(rig.read(STATUS), NEEDS_RESET));
}

#[test]
fn queue_sizes_that_are_zero_too_big_or_not_powers_of_two_are_refused() {
    let rig = rng_rig();
    rig.negotiate(version_1());
    rig.write(QUEUE_SEL, 0);
    let before = rig.transport.counters().refused_writes();

    for size in [0, 3, 100, 512, 0x1_0000] {
        rig.write(QUEUE_NUM, size);
    }
    rig.write(QUEUE_NUM, 64);

    assert_eq!(rig.transport.counters().refused_writes() - before, 5);
}

/// Sets queue 0 up from `mock`'s rings, with the ring register at `offset` then set
/// to `addr`; returns (refused writes, QUEUE_READY read back).
fn setup_with_ring(rig: &Rig, offset: u64, addr: u64) -> (u64, u32) {
    let mock = rig.mock();
    rig.write(STATUS, 0);
    rig.negotiate(version_1());
    rig.write(QUEUE_SEL, 0);
    rig.write(QUEUE_NUM, u32::from(MOCK_SIZE));
    rig.write(0x80, mock.desc_table_addr().0 as u32);
    rig.write(0x90, mock.avail_addr().0 as u32);
    rig.write(0xa0, mock.used_addr().0 as u32);
    let before = rig.transport.counters().refused_writes();
    rig.write(offset, addr as u32);
    rig.write(offset + 4, (addr >> 32) as u32);
    rig.write(QUEUE_READY, 1);
    (
        rig.transport.counters().refused_writes() - before,
        rig.read(QUEUE_READY),
    )
}

#[test]
fn rings_out_of_ram_never_become_ready() {
    let rig = rng_rig();

    for (offset, addr) in [(0x80u64, RAM + 0x1000), (0x90, RAM - 2), (0xa0, 1 << 40)] {
        let (refused, ready) = setup_with_ring(&rig, offset, addr);

        assert_eq!((refused, ready), (1, 0), "ring at {offset:#x} = {addr:#x}");
    }
}

#[test]
fn unaligned_ring_addresses_are_refused_as_they_are_written() {
    let rig = rng_rig();

    for (offset, addr) in [
        (0x80u64, RINGS + 8),
        (0x90, RINGS + 0x101),
        (0xa0, RINGS + 0x202),
    ] {
        let (refused, _) = setup_with_ring(&rig, offset, addr);

        assert_eq!(refused, 1, "ring at {offset:#x} = {addr:#x}");
    }
}

#[test]
fn queue_setup_after_driver_ok_is_refused() {
    let rig = rng_rig();
    let mock = rig.mock();
    rig.negotiate(version_1());
    rig.setup_queue(0, &mock, 16);
    rig.driver_ok();
    let before = rig.transport.counters().refused_writes();

    rig.write(QUEUE_NUM, 8);
    rig.write(0x80, 0x4000);

    assert_eq!(rig.transport.counters().refused_writes() - before, 2);
}

#[test]
fn notifies_of_queues_that_do_not_exist_or_before_driver_ok_are_counted_and_ignored() {
    let rig = rng_rig();

    rig.write(QUEUE_NOTIFY, 0);
    rig.negotiate(version_1());
    rig.setup_queue(0, &rig.mock(), 16);
    rig.driver_ok();
    rig.write(QUEUE_NOTIFY, 7);
    rig.write(QUEUE_NOTIFY, u32::MAX);

    assert_eq!(rig.transport.counters().bad_notifies(), 3);
    assert!(!is_set(rig.read(STATUS), NEEDS_RESET));
}

#[test]
fn config_reads_past_the_config_space_are_zero_and_narrow_register_accesses_refused() {
    let rig = rng_rig();
    let mut config = [0xaau8; 8];
    let mut narrow = [0xaau8; 2];

    kvmkit_devices::BusDevice::read(&*rig.transport, 0x100 + 0x800, &mut config);
    kvmkit_devices::BusDevice::read(&*rig.transport, 0x70, &mut narrow);
    kvmkit_devices::BusDevice::write(&*rig.transport, 0x70, &[1]);

    assert_eq!(config, [0; 8]);
    assert_eq!(narrow, [0; 2]);
    assert_eq!(rig.read(STATUS), 0);
    assert_eq!(rig.transport.counters().refused_writes(), 2);
}

#[test]
fn status_bits_are_only_added_until_a_reset() {
    let rig = rng_rig();
    rig.negotiate(version_1());

    rig.write(STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);

    assert!(is_set(rig.read(STATUS), VIRTIO_CONFIG_S_FEATURES_OK));
}

/// Records registrations, as KVM's ioeventfd would take them.
#[derive(Default)]
struct Shortcut {
    registered: Mutex<Vec<(u64, u16)>>,
    unregistered: Mutex<Vec<(u64, u16)>>,
}

impl QueueNotifiers for Shortcut {
    fn register(&self, addr: u64, queue: u16, _event: &EventFd) -> io::Result<bool> {
        self.registered.lock().unwrap().push((addr, queue));
        Ok(true)
    }

    fn unregister(&self, addr: u64, queue: u16, _event: &EventFd) -> io::Result<()> {
        self.unregistered.lock().unwrap().push((addr, queue));
        Ok(())
    }
}

#[test]
fn driver_ok_registers_each_live_queue_notifier_and_reset_withdraws_it() {
    let shortcut = Arc::new(Shortcut::default());
    let rig = Rig::with_shortcut(Box::new(Rng::new()), shortcut.clone());
    let mock = rig.mock();

    rig.negotiate(version_1());
    rig.setup_queue(0, &mock, 16);
    rig.driver_ok();
    let registered = shortcut.registered.lock().unwrap().clone();
    rig.write(STATUS, 0);

    assert_eq!(registered, vec![(BASE + QUEUE_NOTIFY, 0)]);
    assert_eq!(*shortcut.unregistered.lock().unwrap(), registered);
}

/// Takes queue 0's notifier and refuses queue 1's, as KVM refuses an ioeventfd when
/// it runs out of I/O bus devices.
#[derive(Default)]
struct HalfShortcut {
    unregistered: Mutex<Vec<u16>>,
}

impl QueueNotifiers for HalfShortcut {
    fn register(&self, _addr: u64, queue: u16, _event: &EventFd) -> io::Result<bool> {
        if queue == 0 {
            Ok(true)
        } else {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
    }

    fn unregister(&self, _addr: u64, queue: u16, _event: &EventFd) -> io::Result<()> {
        self.unregistered.lock().unwrap().push(queue);
        Ok(())
    }
}

#[test]
fn a_partly_refused_registration_is_withdrawn_queue_by_queue_on_reset() {
    use kvmkit_virtio::Console;
    let output =
        Arc::new(kvmkit_devices::ConsoleOutput::new(kvmkit_devices::SerialOutput::Sink).unwrap());
    let shortcut = Arc::new(HalfShortcut::default());
    let rig = Rig::with_shortcut(Box::new(Console::new(output).unwrap()), shortcut.clone());
    rig.negotiate(version_1());
    rig.setup_queue(0, &rig.mock(), 16);
    rig.setup_queue(1, &rig.mock_at(RINGS + 0x800), 16);
    rig.driver_ok();

    rig.write(STATUS, 0);

    // Queue 0's ioeventfd must go with the reset: left bound to a dead event fd it
    // would swallow every later notification of queue 0.
    assert_eq!(*shortcut.unregistered.lock().unwrap(), vec![0]);
}

#[test]
fn a_reset_and_a_second_activation_serve_the_queue_again() {
    let rig = rng_rig();
    let mock = rig.mock();
    mock.desc_table()
        .store(0, desc(0x2_0000, 8, WRITE, 0))
        .unwrap();
    rig.negotiate(version_1());
    rig.setup_queue(0, &mock, 16);
    rig.driver_ok();
    rig.write(STATUS, 0);

    let second = rig.mock();
    second
        .desc_table()
        .store(0, desc(0x2_0000, 8, WRITE, 0))
        .unwrap();
    rig.negotiate(version_1());
    rig.setup_queue(0, &second, 16);
    rig.driver_ok();
    rig.offer(&second, &[0]);
    rig.write(QUEUE_NOTIFY, 0);

    assert!(rig.wait_interrupt());
    assert_eq!(rig.used(&second), vec![(0, 8)]);
    let _ = VIRTIO_CONFIG_S_DRIVER_OK;
    let _ = VIRTIO_CONFIG_S_DRIVER;
}

#[test]
fn with_event_idx_the_device_interrupts_only_when_the_driver_asks_and_says_where_to_notify() {
    use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
    use vm_memory::{Bytes, GuestAddress};
    let rig = rng_rig();
    let mock = rig.mock();
    let size = u64::from(MOCK_SIZE);
    let used_event = GuestAddress(mock.avail_addr().0 + 4 + 2 * size);
    let avail_event = GuestAddress(mock.used_addr().0 + 4 + 8 * size);
    for n in 0..2 {
        let buffer = desc(0x2_0000 + 0x100 * u64::from(n), 8, WRITE, 0);
        mock.desc_table().store(n, buffer).unwrap();
    }
    rig.negotiate(version_1() | (1 << VIRTIO_RING_F_EVENT_IDX));
    rig.setup_queue(0, &mock, u32::from(MOCK_SIZE));
    rig.driver_ok();

    // The driver wants an interrupt only once the used index passes 5.
    rig.memory.write_obj(5u16, used_event).unwrap();
    rig.offer(&mock, &[0]);
    rig.write(QUEUE_NOTIFY, 0);
    let deadline = std::time::Instant::now() + PATIENCE;
    while rig.used(&mock).is_empty() && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    let quiet = !wait_readable(rig.interrupt.event(), std::time::Duration::from_millis(200));
    // Now it wants one for the next buffer used.
    rig.memory.write_obj(1u16, used_event).unwrap();
    rig.offer(&mock, &[1]);
    rig.write(QUEUE_NOTIFY, 0);
    let interrupted = rig.wait_interrupt();

    assert_eq!(rig.used(&mock), vec![(0, 8), (1, 8)]);
    assert!(quiet, "an interrupt the driver did not ask for");
    assert!(interrupted, "no interrupt where the driver asked for one");
    let next: u16 = rig.memory.read_obj(avail_event).unwrap();
    assert_eq!(
        next, 2,
        "the device asks to be notified of the next available entry"
    );
}
