// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A disk's worker thread lives as long as the device has a queue to serve: it ends
//! when the driver breaks the rings (the device then needs a reset) and when the
//! driver resets it, and it never spins on a queue it can no longer serve.
//!
//! One test in a binary of its own: it counts this process's `blk-worker` threads.

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
