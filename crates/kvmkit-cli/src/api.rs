// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `--api-socket`: Cloud Hypervisor's REST API for the runner's VM, with Cloud
//! Hypervisor's lifecycle: a VM is created (`vm.create`, or the command line), booted
//! (`vm.boot`, or at once for the command line's), paused and resumed, shut down and
//! deleted; the VMM outlives it until `vmm.shutdown`. The API thread answers from the
//! state here; booting is the main thread's, which the API thread asks and waits for.
//! One VM per process: once a VM ran, the main thread is its I/O thread, confined to
//! what that needs.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};

use kvmkit::devices::{GedEvent, GenericEventDevice, ShutdownReason, VmShutdown};
use kvmkit::virtio::MmioTransport;
use kvmkit::{ControlError, VmControl, VmState};
use kvmkit_api::{ApiRequest, ApiResponse, Failure};
use serde_json::{json, Map, Value};

use kvmkit_cli::options::{ConsoleMode, Options, RestoreOption};
use kvmkit_cli::vm_config;

/// What the main thread is asked to do.
pub enum Call {
    /// Boot the created VM ([`Api::started`] or [`Api::boot_failed`] answer).
    Boot,
    /// Restore the VM of a snapshot (answered as a boot).
    Restore(RestoreOption),
    /// End the VMM.
    VmmShutdown,
}

/// A booted VM, as the API sees it.
pub struct Running {
    pub control: VmControl,
    pub exit: Arc<VmShutdown>,
    /// Its ACPI events: the power button.
    pub events: Arc<GenericEventDevice>,
    pub devices: Vec<(String, Arc<MmioTransport>)>,
}

/// Where the VMM's VM is.
enum Phase {
    /// None (yet, or deleted).
    Empty,
    /// Created, not booted: its options.
    Created(Box<Options>),
    /// The main thread is booting it.
    Booting(Box<Options>),
    /// Booted: running, paused, or ended (its control says which).
    Booted(Box<Options>, Running),
}

/// The API's state, shared by the API thread and the main thread.
pub struct Api {
    phase: Mutex<Phase>,
    /// Whether a VM ran in this process (another cannot: see the module).
    ran: Mutex<bool>,
    calls: Mutex<Sender<Call>>,
    /// Where the answer to the `vm.boot` in progress goes.
    booting: Mutex<Option<Sender<Result<(), String>>>>,
}

impl Api {
    /// The state for a VMM whose command line made `created` (or none), and the
    /// receiver of the calls for the main thread.
    pub fn new(created: Option<Options>) -> (Arc<Self>, Receiver<Call>) {
        let (sender, receiver) = mpsc::channel();
        let phase = match created {
            Some(options) => Phase::Created(Box::new(options)),
            None => Phase::Empty,
        };
        let api = Api {
            phase: Mutex::new(phase),
            ran: Mutex::new(false),
            calls: Mutex::new(sender),
            booting: Mutex::new(None),
        };
        (Arc::new(api), receiver)
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The created VM's options, now being booted by the main thread.
    pub fn take_for_boot(&self) -> Option<Options> {
        let mut phase = self.phase();
        match std::mem::replace(&mut *phase, Phase::Empty) {
            Phase::Created(options) => {
                *phase = Phase::Booting(options.clone());
                Some(*options)
            }
            other => {
                *phase = other;
                None
            }
        }
    }

    /// The VM `options` describe is being restored by the main thread.
    pub fn restoring(&self, options: Options) {
        *self.phase() = Phase::Booting(Box::new(options));
    }

    /// The VM being booted runs, as `options` (its MACs drawn) say: `vm.boot` is
    /// answered.
    pub fn started(&self, options: Options, running: Running) {
        *self.ran.lock().unwrap_or_else(|e| e.into_inner()) = true;
        let mut phase = self.phase();
        if let Phase::Booting(_) = std::mem::replace(&mut *phase, Phase::Empty) {
            *phase = Phase::Booted(Box::new(options), running);
        }
        drop(phase);
        self.answer_boot(Ok(()));
    }

    /// The VM being booted did not start, for `why`: it is back to created, and
    /// `vm.boot` is answered so.
    pub fn boot_failed(&self, why: String) {
        let mut phase = self.phase();
        if let Phase::Booting(options) = std::mem::replace(&mut *phase, Phase::Empty) {
            *phase = Phase::Created(options);
        }
        drop(phase);
        self.answer_boot(Err(why));
    }

    /// The snapshot being restored did not start, for `why`: there is no VM, and
    /// `vm.restore` is answered so.
    pub fn restore_failed(&self, why: String) {
        let mut phase = self.phase();
        if matches!(*phase, Phase::Booting(_)) {
            *phase = Phase::Empty;
        }
        drop(phase);
        self.answer_boot(Err(why));
    }

    fn answer_boot(&self, answer: Result<(), String>) {
        if let Some(reply) = self
            .booting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = reply.send(answer);
        }
    }

    fn call(&self, call: Call) -> bool {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(call)
            .is_ok()
    }

    /// The answer to `request`.
    pub fn handle(&self, request: ApiRequest) -> ApiResponse {
        let failed = |failure, why: &str| ApiResponse::failed(&request, failure, &[why]);
        match &request {
            ApiRequest::VmmPing => ApiResponse::Json(json!({
                "build_version": concat!("kvmkit v", env!("CARGO_PKG_VERSION")),
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "features": ["kvm"],
            })),
            ApiRequest::VmmShutdown => {
                if let Phase::Booted(_, running) = &*self.phase() {
                    end_vm(running);
                }
                self.call(Call::VmmShutdown);
                ApiResponse::Empty
            }
            ApiRequest::VmCreate(config) => self.create(&request, config),
            ApiRequest::VmBoot => self.boot(&request),
            ApiRequest::VmRestore {
                source_url,
                resume,
                prefault,
            } => self.restore(&request, source_url, *resume, *prefault),
            _ => self.on_vm(&request, failed),
        }
    }

    /// Why no VM can be made now: one exists, or one ran (one VM per process).
    fn cannot_make(&self, phase: &Phase) -> Option<&'static str> {
        if !matches!(phase, Phase::Empty) {
            return Some("VM is already created");
        }
        let ran = *self.ran.lock().unwrap_or_else(|e| e.into_inner());
        ran.then_some("kvmkit runs one VM per process: start another VMM for the next")
    }

    fn create(&self, request: &ApiRequest, config: &Value) -> ApiResponse {
        let mut phase = self.phase();
        if let Some(why) = self.cannot_make(&phase) {
            return ApiResponse::failed(request, Failure::Failed, &[why]);
        }
        match vm_config::options(config) {
            Ok(options) => {
                *phase = Phase::Created(Box::new(options));
                ApiResponse::Done
            }
            Err(why) => ApiResponse::failed(request, Failure::Invalid, &[&why]),
        }
    }

    fn boot(&self, request: &ApiRequest) -> ApiResponse {
        match &*self.phase() {
            Phase::Created(_) => {}
            Phase::Empty => {
                return ApiResponse::failed(request, Failure::NotCreated, &["VM is not created"])
            }
            _ => return ApiResponse::failed(request, Failure::Failed, &["VM is already created"]),
        }
        self.start(request, Call::Boot)
    }

    /// `vm.restore`: only with no VM yet, and one VM per process.
    fn restore(
        &self,
        request: &ApiRequest,
        source_url: &str,
        resume: bool,
        prefault: bool,
    ) -> ApiResponse {
        if let Some(why) = self.cannot_make(&self.phase()) {
            return ApiResponse::failed(request, Failure::Failed, &[why]);
        }
        let Some(dir) = kvmkit_api::file_url(source_url) else {
            return ApiResponse::failed(
                request,
                Failure::Invalid,
                &["give source_url as file:///DIR"],
            );
        };
        let restore = RestoreOption {
            dir: dir.into(),
            resume,
            prefault,
        };
        self.start(request, Call::Restore(restore))
    }

    /// Asks the main thread to start a VM with `call`, and answers once it runs or
    /// could not start.
    fn start(&self, request: &ApiRequest, call: Call) -> ApiResponse {
        let (reply, answer) = mpsc::channel();
        *self.booting.lock().unwrap_or_else(|e| e.into_inner()) = Some(reply);
        if !self.call(call) {
            return ApiResponse::failed(request, Failure::Failed, &["the VMM is shutting down"]);
        }
        match answer.recv() {
            Ok(Ok(())) => {
                self.wait_started();
                ApiResponse::Done
            }
            Ok(Err(why)) => ApiResponse::failed(request, Failure::Failed, &[&why]),
            Err(_) => ApiResponse::failed(request, Failure::Failed, &["the VMM is shutting down"]),
        }
    }

    /// Waits (a few seconds at most) until the VM just started is under way on its
    /// I/O thread, so that the answer to its boot or restore is followed by
    /// `vm.info` saying so, as Cloud Hypervisor's is.
    fn wait_started(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Phase::Booted(_, running) = &*self.phase() {
                if running.control.state() != VmState::Created {
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The requests about an existing VM.
    fn on_vm(
        &self,
        request: &ApiRequest,
        failed: impl Fn(Failure, &str) -> ApiResponse,
    ) -> ApiResponse {
        let mut phase = self.phase();
        let (options, running) = match &*phase {
            Phase::Empty => return failed(Failure::NotCreated, "VM is not created"),
            Phase::Created(options) | Phase::Booting(options) => (options, None),
            Phase::Booted(options, running) => (options, Some(running)),
        };
        let state = running.map_or(VmState::Created, |running| running.control.state());
        let live = matches!(state, VmState::Running | VmState::Paused);
        match (request, running) {
            (ApiRequest::VmInfo, _) => ApiResponse::Json(json!({
                "config": vm_config_json(options),
                "state": state_name(state),
                "memory_actual_size": options.memory.size,
            })),
            (ApiRequest::VmCounters, Some(running)) if live => {
                ApiResponse::Json(counters(&running.devices))
            }
            (ApiRequest::VmPause, Some(running)) => {
                control_answer(request, running.control.pause())
            }
            (ApiRequest::VmResume, Some(running)) => {
                control_answer(request, running.control.resume())
            }
            (ApiRequest::VmShutdown, Some(running)) if live => {
                end_vm(running);
                ApiResponse::Done
            }
            (ApiRequest::VmReboot, Some(running)) => {
                control_answer(request, running.control.reboot())
            }
            (ApiRequest::VmPowerButton, Some(running)) if live => {
                match running.events.notify(GedEvent::PowerButton) {
                    Ok(()) => ApiResponse::Done,
                    Err(error) => failed(Failure::Failed, &error.to_string()),
                }
            }
            (ApiRequest::VmSnapshot { destination_url }, Some(running)) => {
                snapshot(request, running, destination_url, vm_config_json(options))
            }
            (ApiRequest::VmDelete, _) => {
                if let Some(running) = running {
                    end_vm(running);
                }
                *phase = Phase::Empty;
                ApiResponse::Done
            }
            (
                ApiRequest::VmCounters
                | ApiRequest::VmPause
                | ApiRequest::VmResume
                | ApiRequest::VmShutdown
                | ApiRequest::VmPowerButton
                | ApiRequest::VmReboot
                | ApiRequest::VmSnapshot { .. },
                _,
            ) => failed(Failure::Failed, "VM is not running"),
            _ => failed(Failure::Failed, "kvmkit does not support this request yet"),
        }
    }
}

/// `vm.snapshot` of the paused VM into an existing directory (`file:///DIR`).
fn snapshot(request: &ApiRequest, running: &Running, url: &str, config: Value) -> ApiResponse {
    let Some(dir) = kvmkit_api::file_url(url) else {
        return ApiResponse::failed(
            request,
            Failure::Invalid,
            &["give destination_url as file:///DIR"],
        );
    };
    // The I/O thread checks that the directory exists: this thread may not look.
    let taken = running.control.snapshot(std::path::Path::new(dir), config);
    control_answer(request, taken.map(drop))
}

/// `error` and its sources, each on its own.
fn causes(error: &dyn std::error::Error) -> Vec<String> {
    let mut messages = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        messages.push(cause.to_string());
        source = cause.source();
    }
    messages
}

/// Ends the VM if it runs (a paused one too: its vCPUs stop where they are), and
/// returns once it has ended, as Cloud Hypervisor's `vm.shutdown` does (within a
/// few seconds: the I/O thread stops every vCPU and joins it).
fn end_vm(running: &Running) {
    if !matches!(running.control.state(), VmState::Running | VmState::Paused) {
        return;
    }
    running.exit.request(ShutdownReason::VmmRequest);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while matches!(running.control.state(), VmState::Running | VmState::Paused)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Each device's counters, by Cloud Hypervisor's device ids (`_disk0`, `_net0`,
/// ...): requests, bytes and errors per queue.
fn counters(devices: &[(String, Arc<MmioTransport>)]) -> Value {
    let mut all = Map::new();
    for (id, transport) in devices {
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

/// The answer to a control request: the error and its causes.
fn control_answer(request: &ApiRequest, result: Result<(), ControlError>) -> ApiResponse {
    match result {
        Ok(()) => ApiResponse::Done,
        Err(error) => {
            let messages = causes(&error);
            let messages: Vec<&str> = messages.iter().map(String::as_str).collect();
            ApiResponse::failed(request, Failure::Failed, &messages)
        }
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

/// The VM's options as Cloud Hypervisor's `VmConfig` (what `vm.info` shows).
fn vm_config_json(options: &Options) -> Value {
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
            "mac": net.mac.map(|mac| mac.map(|byte| format!("{byte:02x}")).join(":")),
        })).collect::<Vec<_>>(),
        "rng": {"src": options.rng.src},
        "serial": console(&options.serial),
        "console": console(&options.console),
        "pvpanic": true,
    })
}
