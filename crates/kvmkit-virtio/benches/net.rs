// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-net's transmit path against `write` on the same tap, in the same run: batches
//! of 64 minimum-size Ethernet frames, one notification each. The device side is
//! timed from the notify to the last completion: the transport's notify, an event-loop
//! turn, ring and chain checks, the copy out of guest memory, the tap write, the used
//! ring and the interrupt. Frames carry an experimental EtherType (0x88b5), which the
//! host stack drops at once.
//!
//! Needs root: it makes its own network namespace with a tap in it.
//!
//! ```text
//! cargo bench -p kvmkit-virtio --bench net
//! ```

// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

use std::io::Write;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kvmkit_virtio::{Net, Tap, NET_HEADER_LEN};
use vm_memory::{Bytes, GuestAddress};

mod common;
use common::Driven;

const TAP: &str = "kvmkit-b0";
const FRAMES: u16 = 64;
const FRAME_DATA: u64 = 0x20_0000;
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// A virtio-net header and a 60-byte frame of EtherType 0x88b5.
fn frame() -> Vec<u8> {
    let mut frame = vec![0u8; NET_HEADER_LEN];
    frame.extend([0xff; 6]);
    frame.extend(MAC);
    frame.extend([0x88, 0xb5]);
    frame.resize(NET_HEADER_LEN + 60, 0x5a);
    frame
}

/// A tap, up, in a network namespace of this thread's own.
fn tap() -> Tap {
    // SAFETY: unshare changes only this thread's namespaces.
    let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(ret, 0, "this benchmark needs root (unshare(CLONE_NEWNET))");
    let tap = Tap::open(TAP).unwrap();
    let up = Command::new("ip")
        .args(["link", "set", TAP, "up"])
        .status()
        .unwrap();
    assert!(up.success());
    tap
}

fn net(c: &mut Criterion) {
    let frame = frame();
    let tap = tap();
    // The same tap (a second descriptor of it) for the direct writes.
    let mut direct = std::fs::File::from(tap.as_fd().try_clone_to_owned().unwrap());
    let mut device = Driven::new(Box::new(Net::new(tap, MAC)), 2, 1 << 5);
    for n in 0..FRAMES {
        let at = FRAME_DATA + 0x100 * u64::from(n);
        device.memory.write_slice(&frame, GuestAddress(at)).unwrap();
        device.store(1, n, at, frame.len() as u32, 0, 0);
    }
    let mut group = c.benchmark_group("virtio_net");
    group.throughput(Throughput::Elements(u64::from(FRAMES)));
    group.bench_function("transmit_60b_x64/kvmkit", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| device.run(1, 0..FRAMES)).sum())
    });
    group.bench_function("transmit_60b_x64/write", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..FRAMES {
                        let _ = direct.write(&frame);
                    }
                    start.elapsed()
                })
                .sum::<Duration>()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = net
}
criterion_main!(benches);
