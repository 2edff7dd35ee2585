// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A disk's worker thread lives as long as the device has a queue to serve: it ends
//! when the driver breaks the rings (the device then needs a reset) and when the
//! driver resets it, and it never spins on a queue it can no longer serve. A panic on
//! a worker is not lost with it.
//!
//! In a binary of its own: one test counts this process's `blk-worker` threads (the
//! other names its worker apart).

mod common;

use std::time::{Duration, Instant};

use common::{
    scratch_image, version_1, Rig, MOCK_SIZE, NEEDS_RESET, PATIENCE, QUEUE_NOTIFY, STATUS,
};
use kvmkit_virtio::Block;

fn workers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "blk-worker")
        .count()
}

fn wait_for_workers(count: usize) -> usize {
    let begun = Instant::now();
    while workers() != count && begun.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(5));
    }
    workers()
}

fn disk() -> Block {
    Block::with_file(scratch_image("worker", &[0; 4096]), 4096, false, b"")
}

#[test]
fn the_worker_ends_when_the_rings_break_and_when_the_device_is_reset() {
    let rig = Rig::new(Box::new(disk()));
    let mock = rig.mock();
    rig.negotiate(version_1());
    rig.setup_queue(0, &mock, u32::from(MOCK_SIZE));
    rig.driver_ok();
    let started = wait_for_workers(1);

    // An available index far past the queue's size: the rings are broken.
    mock.set_avail_idx(MOCK_SIZE * 4);
    rig.write(QUEUE_NOTIFY, 0);
    let begun = Instant::now();
    while rig.read(STATUS) & NEEDS_RESET == 0 && begun.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(1));
    }
    let faulted = rig.read(STATUS) & NEEDS_RESET != 0;
    let after_the_fault = wait_for_workers(0);
    rig.write(STATUS, 0);
    rig.negotiate(version_1());
    rig.setup_queue(0, &rig.mock(), u32::from(MOCK_SIZE));
    rig.driver_ok();
    let restarted = wait_for_workers(1);
    rig.write(STATUS, 0);
    let after_the_reset = wait_for_workers(0);

    assert_eq!(started, 1);
    assert!(faulted, "the broken rings did not fault the device");
    assert_eq!(after_the_fault, 0, "the worker went on with broken rings");
    assert_eq!(restarted, 1);
    assert_eq!(after_the_reset, 0, "the worker outlived the reset");
}

/// A device whose worker panics on its first request: a bug in a device.
struct PanickingWorker(kvmkit_virtio::DeviceLifecycle);

impl kvmkit_virtio::VirtioDevice for PanickingWorker {
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

    fn activate(
        &mut self,
        mut activation: kvmkit_virtio::Activation,
    ) -> Result<(), kvmkit_virtio::ActivateError> {
        let queue = activation.take_queue(0)?;
        self.0
            .serve_on_worker(&activation, queue, "panicky-worker", |_, _| {
                panic!("a device bug")
            })
    }

    fn reset(&mut self) {
        self.0.reset();
    }

    fn pause(&mut self) {
        self.0.pause();
    }

    fn resume(&mut self) {
        self.0.resume();
    }

    fn counters(&self) -> Vec<std::sync::Arc<kvmkit_virtio::QueueCounters>> {
        self.0.counters()
    }
}

#[test]
fn a_panic_on_a_worker_is_raised_on_the_event_loop_as_it_would_be_there() {
    let mut rig = Rig::new(Box::new(PanickingWorker(
        kvmkit_virtio::DeviceLifecycle::new(1),
    )));
    let mock = rig.mock();
    rig.negotiate(version_1());
    rig.setup_queue(0, &mock, u32::from(MOCK_SIZE));
    rig.driver_ok();
    mock.desc_table()
        .store(0, common::desc(0x2_0000, 16, 0, 0))
        .unwrap();

    rig.offer(&mock, &[0]);
    rig.write(QUEUE_NOTIFY, 0);

    assert!(
        rig.event_loop_panicked(PATIENCE),
        "the worker's panic vanished with its thread"
    );
}
