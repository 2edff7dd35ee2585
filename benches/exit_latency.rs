// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The round-trip cost of one VM exit, per exit class, one exit per iteration:
//! `kvmkit` runs it through `Vcpu::run_once` and an `IoHandler`, `baseline` through a
//! bare `match` on kvm-ioctls' `VcpuFd::run` in its own VM over the same memory, in
//! the same run.
//!
//! ```text
//! cargo bench --bench exit_latency
//! ```

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use kvmkit_exit_latency::{ExitClass, LatencyVm};

fn exit_latency(c: &mut Criterion) {
    for class in ExitClass::ALL {
        let mut vm = match LatencyVm::new(class) {
            Ok(vm) => vm,
            Err(error) => {
                eprintln!("exit_latency/{class}: not measured: {error}");
                continue;
            }
        };
        let mut group = c.benchmark_group(format!("exit_latency/{class}"));
        group.bench_function("kvmkit", |b| {
            b.iter_custom(|iters| vm.run_kvmkit(iters).expect("kvmkit exit"))
        });
        group.bench_function("baseline", |b| {
            b.iter_custom(|iters| vm.run_baseline(iters).expect("baseline exit"))
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = exit_latency
}
criterion_main!(benches);
