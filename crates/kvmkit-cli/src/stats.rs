// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `--stats`: what the VM did, gathered as the run goes and printed however it ends
//! (an error included: that is when it is most wanted).

use std::sync::Arc;
use std::time::Instant;

use kvmkit::memory::MemoryReport;
use kvmkit::vcpu::{ExitReason, ExitStats};
use kvmkit::virtio::MmioTransport;
use kvmkit::{Platform, Timeline};

/// What the run got as far as: when the VM got where (its timeline), the vCPUs' exit
/// counters, the virtio devices by name (for their counters), and the guest memory
/// report taken as the VM ended.
pub struct RunStats {
    timeline: Arc<Timeline>,
    vcpus: Vec<Arc<ExitStats>>,
    devices: Vec<(&'static str, Arc<MmioTransport>)>,
    memory: Option<Result<MemoryReport, kvmkit::memory::Error>>,
}

impl RunStats {
    /// Stats of a VM whose timeline starts at `origin` (the process's start).
    pub fn starting_at(origin: Instant) -> Self {
        RunStats {
            timeline: Timeline::starting_at(origin),
            vcpus: Vec::new(),
            devices: Vec::new(),
            memory: None,
        }
    }

    /// The timeline of the VM being started, for the machine to mark.
    pub fn timeline(&self) -> &Arc<Timeline> {
        &self.timeline
    }

    /// Starts over for another VM of the same process (booted or restored through the
    /// API): its timeline starts now, at the request.
    pub fn next_vm(&mut self) {
        *self = RunStats::starting_at(Instant::now());
    }

    /// Records the vCPUs' exit counters.
    pub fn set_vcpus(&mut self, vcpus: Vec<Arc<ExitStats>>) {
        self.vcpus = vcpus;
    }

    /// Records the device just added to `platform` as `name`.
    pub fn add_device(&mut self, name: &'static str, platform: &Platform) {
        let index = platform.virtio_devices().len().saturating_sub(1);
        if let Some(transport) = platform.virtio_transport(index) {
            self.devices.push((name, Arc::clone(transport)));
        }
    }

    /// The devices by Cloud Hypervisor's ids: `_disk0`, `_disk1`, `_net0`..., and
    /// `_console` and `_rng` for the one of each.
    pub fn device_ids(&self) -> Vec<(String, Arc<MmioTransport>)> {
        let mut seen: Vec<&str> = Vec::new();
        self.devices
            .iter()
            .map(|(name, transport)| {
                let index = seen.iter().filter(|seen| *seen == name).count();
                seen.push(name);
                let id = match *name {
                    "disk" | "net" => format!("_{name}{index}"),
                    _ => format!("_{name}"),
                };
                (id, Arc::clone(transport))
            })
            .collect()
    }

    /// Records the memory report taken when the vCPUs stopped.
    pub fn set_memory(&mut self, memory: Result<MemoryReport, kvmkit::memory::Error>) {
        self.memory = Some(memory);
    }

    /// Prints exits by reason per vCPU, requests, bytes and errors per device queue,
    /// and the guest memory report, to stderr: what there is of them.
    pub fn print(&self) {
        print(
            &self.timeline,
            &self.vcpus,
            &self.devices,
            self.memory.as_ref(),
        );
    }
}

fn print(
    timeline: &Timeline,
    vcpus: &[Arc<ExitStats>],
    devices: &[(&'static str, Arc<MmioTransport>)],
    memory: Option<&Result<MemoryReport, kvmkit::memory::Error>>,
) {
    eprintln!("kvmkit stats");
    eprintln!("  timeline {}", timeline.report());
    if vcpus.is_empty() {
        eprintln!("  no vCPU was created");
    }
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
    for (index, (name, transport)) in devices.iter().enumerate() {
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
        None => eprintln!("  memory report unavailable: the VM did not run"),
        Some(Ok(report)) => {
            for region in &report.regions {
                eprintln!("  memory {region}");
            }
            eprintln!(
                "  memory resident_kib={} process_rss_kib={} vmm_overhead_kib={}",
                report.resident() >> 10,
                report.process_rss >> 10,
                report.vmm_overhead() >> 10
            );
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
        Some(Err(error)) => eprintln!("  memory report unavailable: {}", kvmkit::Causes(error)),
    }
}
