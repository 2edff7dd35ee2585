// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `--api-socket`: Cloud Hypervisor's REST API for the VM the command line describes.
//! The VM is created from the command line and boots at once; the API then answers
//! `vmm.ping`, `vm.info`, `vm.counters`, `vm.pause`, `vm.resume`, `vm.shutdown`,
//! `vm.delete` and `vmm.shutdown` as Cloud Hypervisor does, `vm.create` and `vm.boot`
//! as it does for a VM that exists, and says which endpoints kvmkit does not support
//! yet. As with Cloud Hypervisor, the process outlives its VM until `vmm.shutdown`.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use kvmkit::devices::{ShutdownReason, VmShutdown};
use kvmkit::virtio::MmioTransport;
use kvmkit::{ControlError, VmControl, VmState};
use kvmkit_api::{ApiRequest, ApiResponse, Failure};
use serde_json::{json, Map, Value};

use kvmkit_cli::options::{ConsoleMode, Options};

/// What the API thread answers from.
pub struct Vmm {
    control: VmControl,
    exit: Arc<VmShutdown>,
    /// The VM's configuration, as `vm.info` gives it.
    config: Value,
    memory_size: u64,
    devices: Vec<(String, Arc<MmioTransport>)>,
    deleted: bool,
    /// Told when a client asks the VMM to end.
    vmm_shutdown: Sender<()>,
}

impl Vmm {
    /// The API's view of the VM the command line made.
    pub fn new(
        options: &Options,
        control: VmControl,
        exit: Arc<VmShutdown>,
        devices: Vec<(String, Arc<MmioTransport>)>,
        vmm_shutdown: Sender<()>,
    ) -> Self {
        Vmm {
            control,
            exit,
            config: vm_config(options),
            memory_size: options.memory.size.unwrap_or_default(),
            devices,
            deleted: false,
            vmm_shutdown,
        }
    }

    /// The answer to `request`.
    pub fn handle(&mut self, request: ApiRequest) -> ApiResponse {
        let state = if self.deleted {
            None
        } else {
            Some(self.control.state())
        };
        let failed = |failure, why: &str| ApiResponse::failed(&request, failure, &[why]);
        match (&request, state) {
            (ApiRequest::VmmPing, _) => ApiResponse::Json(json!({
                "build_version": concat!("kvmkit v", env!("CARGO_PKG_VERSION")),
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "features": ["kvm"],
            })),
            (ApiRequest::VmmShutdown, _) => {
                self.end_vm();
                let _ = self.vmm_shutdown.send(());
                ApiResponse::Empty
            }
            (_, None) => failed(Failure::NotCreated, "VM is not created"),
            (ApiRequest::VmCreate(_) | ApiRequest::VmBoot, Some(_)) => {
                failed(Failure::Failed, "VM is already created")
            }
            (ApiRequest::VmInfo, Some(state)) => ApiResponse::Json(json!({
                "config": self.config,
                "state": state_name(state),
                "memory_actual_size": self.memory_size,
            })),
            (ApiRequest::VmCounters, Some(VmState::Running | VmState::Paused)) => {
                ApiResponse::Json(self.counters())
            }
            (ApiRequest::VmCounters, Some(_)) => failed(Failure::Failed, "VM is not running"),
            (ApiRequest::VmPause, _) => control_answer(&request, self.control.pause()),
            (ApiRequest::VmResume, _) => control_answer(&request, self.control.resume()),
            (ApiRequest::VmShutdown, Some(VmState::Running | VmState::Paused)) => {
                self.end_vm();
                ApiResponse::Done
            }
            (ApiRequest::VmShutdown, Some(_)) => failed(Failure::Failed, "VM is not running"),
            (ApiRequest::VmDelete, Some(_)) => {
                self.end_vm();
                self.deleted = true;
                ApiResponse::Done
            }
            (_, Some(_)) => failed(Failure::Failed, "kvmkit does not support this request yet"),
        }
    }

    /// Ends the VM if it runs (a paused one too: its vCPUs stop where they are).
    fn end_vm(&self) {
        if matches!(self.control.state(), VmState::Running | VmState::Paused) {
            self.exit.request(ShutdownReason::VmmRequest);
        }
    }

    /// Each device's counters, by Cloud Hypervisor's device ids (`_disk0`, `_net1`,
    /// ...): requests, bytes and errors per queue.
    fn counters(&self) -> Value {
        let mut all = Map::new();
        for (id, transport) in &self.devices {
            let mut counters = Map::new();
            for (queue, queue_counters) in transport.queue_counters().iter().enumerate() {
                counters.insert(
                    format!("queue{queue}_requests"),
                    queue_counters.requests().into(),
                );
                counters.insert(format!("queue{queue}_bytes"), queue_counters.bytes().into());
                counters.insert(
                    format!("queue{queue}_errors"),
                    queue_counters.errors().into(),
                );
            }
            all.insert(id.clone(), Value::Object(counters));
        }
        Value::Object(all)
    }
}

/// The answer to a pause or resume.
fn control_answer(request: &ApiRequest, result: Result<(), ControlError>) -> ApiResponse {
    match result {
        Ok(()) => ApiResponse::Done,
        Err(error) => ApiResponse::failed(request, Failure::Failed, &[&error.to_string()]),
    }
}

/// Cloud Hypervisor's name for `state`.
fn state_name(state: VmState) -> &'static str {
    match state {
        VmState::Created => "Created",
        VmState::Running => "Running",
        VmState::Paused => "Paused",
        _ => "Shutdown",
    }
}

/// The command line's VM as Cloud Hypervisor's `VmConfig` (what `vm.info` shows).
fn vm_config(options: &Options) -> Value {
    let memory = &options.memory;
    let console = |mode: &ConsoleMode| match mode {
        ConsoleMode::Tty => json!({"mode": "Tty"}),
        ConsoleMode::Null => json!({"mode": "Null"}),
        ConsoleMode::Off => json!({"mode": "Off"}),
        ConsoleMode::File(path) => json!({"mode": "File", "file": path}),
    };
    let mut payload = json!({"kernel": options.kernel, "cmdline": options.cmdline});
    if let Some(initramfs) = &options.initramfs {
        payload["initramfs"] = json!(initramfs);
    }
    json!({
        "cpus": {"boot_vcpus": options.cpus, "max_vcpus": options.cpus},
        "memory": {
            "size": memory.size,
            "mergeable": memory.mergeable,
            "shared": memory.shared,
            "hugepages": memory.hugepages,
            "hugepage_size": memory.hugepage_size,
            "prefault": memory.prefault,
            "reserve": memory.reserve,
            "thp": memory.thp,
        },
        "payload": payload,
        "disks": options.disk.iter().enumerate().map(|(n, disk)| json!({
            "path": disk.path,
            "readonly": disk.readonly,
            "serial": disk.serial,
            "id": format!("_disk{n}"),
        })).collect::<Vec<_>>(),
        "net": options.net.iter().map(|net| json!({
            "tap": net.tap,
            "ip": net.host.map(|(ip, _)| ip.to_string()),
            "mask": net.host.map(|(_, mask)| mask.to_string()),
        })).collect::<Vec<_>>(),
        "rng": {"src": options.rng.src},
        "serial": console(&options.serial),
        "console": console(&options.console),
        "pvpanic": true,
    })
}
