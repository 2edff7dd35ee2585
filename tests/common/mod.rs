// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What the facade's VM tests share: a small machine on a quiet platform, and a
//! bounded wait.

#![allow(dead_code)]

use std::thread;
use std::time::{Duration, Instant};

use kvmkit::devices::SerialOutput;
use kvmkit::{Machine, MachineBuilder, Platform, PlatformConfig};

/// Generous bound for liveness waits; never a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `condition` every millisecond until it holds (true) or [`PATIENCE`] runs out
/// (false).
pub fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    false
}

/// A machine of `vcpus` vCPUs as [`machine_built`] makes it.
pub fn machine(vcpus: u32) -> (Machine, Platform) {
    machine_built(MachineBuilder::new().vcpus(vcpus))
}

/// The machine `builder` describes with 16 MiB of RAM and the in-kernel irqchip, and
/// its platform with COM1's output discarded.
pub fn machine_built(builder: MachineBuilder) -> (Machine, Platform) {
    let machine = builder.memory_mib(16).irqchip(true).build().unwrap();
    let config = PlatformConfig::default().with_serial_output(SerialOutput::Sink);
    let platform = Platform::new(machine.vm(), config).unwrap();
    (machine, platform)
}
