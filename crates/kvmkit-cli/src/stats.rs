// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `--stats`: what the VM did, printed when it ends.

use std::sync::Arc;

use kvmkit::memory::MemoryReport;
use kvmkit::vcpu::{ExitReason, ExitStats};
use kvmkit::virtio::MmioTransport;
use kvmkit::Platform;

/// The virtio devices of the VM, by name, for their counters.
#[derive(Default)]
pub struct DeviceStats {
    devices: Vec<(&'static str, Arc<MmioTransport>)>,
}

impl DeviceStats {
    /// Records the device just added to `platform` as `name`.
    pub fn add(&mut self, name: &'static str, platform: &Platform) {
        let index = platform.virtio_devices().len().saturating_sub(1);
        if let Some(transport) = platform.virtio_transport(index) {
            self.devices.push((name, Arc::clone(transport)));
        }
    }
}

/// Prints exits by reason per vCPU, requests, bytes and errors per device queue, and
/// the guest memory report, to stderr.
pub fn print(
    vcpus: &[Arc<ExitStats>],
    devices: &DeviceStats,
    memory: Result<&MemoryReport, &kvmkit::memory::Error>,
) {
    eprintln!("kvmkit stats");
    for (id, stats) in vcpus.iter().enumerate() {
        let counts = stats.snapshot();
        let exits: Vec<String> = ExitReason::ALL
            .iter()
            .filter(|reason| counts.get(**reason) > 0)
            .map(|reason| format!("{}={}", reason.name(), counts.get(*reason)))
            .collect();
        eprintln!(
            "  vcpu{id} exits total={} {}",
            counts.total(),
            exits.join(" ")
        );
    }
    for (index, (name, transport)) in devices.devices.iter().enumerate() {
        for (queue, counters) in transport.queue_counters().iter().enumerate() {
            eprintln!(
                "  virtio{index} {name} queue{queue} requests={} bytes={} errors={}",
                counters.requests(),
                counters.bytes(),
                counters.errors()
            );
        }
    }
    match memory {
        Ok(report) => {
            for region in &report.regions {
                eprintln!("  memory {region}");
            }
            eprintln!("  memory resident_kib={}", report.resident() >> 10);
            if let Some(ksm) = &report.ksm {
                let merged = ksm
                    .process_merging_pages
                    .map_or_else(|| "unknown".to_string(), |pages| pages.to_string());
                eprintln!(
                    "  ksm run={} this_vm_merged_pages={merged} pages_sharing={} pages_shared={}",
                    ksm.run, ksm.pages_sharing, ksm.pages_shared
                );
            }
        }
        Err(error) => eprintln!("  memory report unavailable: {}", kvmkit::Causes(&error)),
    }
}
