// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `kvmkit`: boots a Linux VM on KVM from the command line.
//!
//! The process ends with the guest: power-off, reboot (a triple fault included, as on
//! a PC) give status 0, a vCPU's other end 1, a guest panic (pvpanic) 3, a signal 128 +
//! its number (Ctrl-A x as SIGINT: 130), after an orderly stop with the terminal
//! restored; an error before the guest runs gives 1 with a line that names the option
//! and the fix, and a usage error 2 (as `--help` says).

#![forbid(unsafe_code)]

mod api;
mod stats;

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use kvmkit::devices::SerialOutput;
use kvmkit::virtio::{Block, Net, Offloads, Rng, Tap};
use kvmkit::{
    Causes, LinuxBoot, MachineBuilder, Milestone, Platform, PlatformConfig, Snapshot, StdinConsole,
    VmOutcome,
};

use kvmkit_cli::options::{random_mac, ConsoleMode, NetOption, Options, RestoreOption};
use stats::RunStats;

/// An error, and the option it is about.
#[derive(Debug, thiserror::Error)]
#[error("{option}: {message}")]
struct CliError {
    option: &'static str,
    message: String,
}

impl CliError {
    fn new(option: &'static str, message: impl Into<String>) -> Self {
        CliError {
            option,
            message: message.into(),
        }
    }

    /// `error` and its causes, on one line.
    fn from_error(option: &'static str, error: &dyn std::error::Error) -> Self {
        Self::new(option, Causes(error).to_string())
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    let options = Options::from_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    let mut stats = RunStats::starting_at(started);
    stats.timeline().mark(Milestone::OptionsParsed);
    warn_without_hardware_virtualization();
    let result = match (&options.api_socket, &options.restore) {
        (Some(path), _) => serve_api(path, &options, &mut stats),
        (None, Some(restore)) => restore_vm(restore, &options, &mut stats, None),
        (None, None) => run(&options, &mut stats, None, Start::Boot),
    };
    if options.stats {
        stats.print();
    }
    match result {
        Ok(status) => ExitCode::from(status.clamp(0, 255) as u8),
        Err(error) => {
            eprintln!("kvmkit: {error}");
            ExitCode::from(1)
        }
    }
}

/// Says so when this host's KVM has no VT-x or AMD-V (KVM on PVM, say): small guests
/// run there, an unmodified Linux hangs early in its boot.
fn warn_without_hardware_virtualization() {
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        return;
    };
    let hardware = cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .any(|line| {
            line.split_whitespace()
                .any(|flag| flag == "vmx" || flag == "svm")
        });
    if !hardware {
        let pvm = if std::path::Path::new("/sys/module/kvm_pvm").exists() {
            " (its KVM is PVM)"
        } else {
            ""
        };
        eprintln!(
            "kvmkit: this host has no VT-x or AMD-V{pvm}: an unmodified Linux kernel will \
             not boot here (kernels built for this KVM and small hand-built guests do)"
        );
    }
}

fn console_output(mode: &ConsoleMode, option: &'static str) -> Result<SerialOutput, CliError> {
    match mode {
        ConsoleMode::Tty => Ok(SerialOutput::Stdout),
        ConsoleMode::Null | ConsoleMode::Off => Ok(SerialOutput::Sink),
        ConsoleMode::File(path) => File::create(path)
            .map(SerialOutput::File)
            .map_err(|e| CliError::new(option, format!("cannot create {path:?}: {e}"))),
    }
}

/// The console stdin feeds: the one whose output is the terminal. Both on the
/// terminal would mix two consoles' output and leave the input to a guess: refused.
fn stdin_console(options: &Options) -> Result<StdinConsole, CliError> {
    match (&options.serial, &options.console) {
        (ConsoleMode::Tty, ConsoleMode::Tty) => Err(CliError::new(
            "--serial",
            "--serial tty and --console tty cannot share the terminal: set one of them \
             to off, null or file=PATH",
        )),
        (ConsoleMode::Tty, _) => Ok(StdinConsole::Serial),
        (_, ConsoleMode::Tty) => Ok(StdinConsole::Virtio),
        _ => Ok(StdinConsole::None),
    }
}

/// A hint when the kernel is told to write to a console whose output goes nowhere.
fn hint_unseen_console(options: &Options) {
    let kernel_console = |name: &str| {
        options.cmdline.split_whitespace().any(|arg| {
            arg.strip_prefix("console=")
                .is_some_and(|c| c.starts_with(name))
        })
    };
    let unseen = |mode: &ConsoleMode| matches!(mode, ConsoleMode::Null | ConsoleMode::Off);
    if kernel_console("ttyS0") && !kernel_console("hvc") && unseen(&options.serial) {
        eprintln!(
            "kvmkit: the kernel's console is ttyS0 (--cmdline) and --serial is not shown: \
             add --serial tty --console off to see it"
        );
    }
}

/// How a VM starts: booted from its kernel, or restored from a snapshot.
enum Start<'a> {
    Boot,
    Restore {
        snapshot: &'a Snapshot,
        dir: &'a std::path::Path,
        resume: bool,
    },
}

/// Restores the VM of the snapshot `restore` names and runs it (paused until resumed,
/// unless `resume`): the machine as the snapshot's configuration says, the runner's
/// own settings (seccomp) from `cli`.
fn restore_vm(
    restore: &RestoreOption,
    cli: &Options,
    stats: &mut RunStats,
    api: Option<&api::Api>,
) -> Result<i32, CliError> {
    let snapshot =
        Snapshot::read_from(&restore.dir).map_err(|e| CliError::from_error("--restore", &e))?;
    stats.timeline().mark(Milestone::SnapshotRead);
    let mut options = kvmkit_cli::vm_config::options(snapshot.config()).map_err(|why| {
        CliError::new("--restore", format!("the snapshot's configuration: {why}"))
    })?;
    options.seccomp = cli.seccomp;
    // Every page of the memory file read in now (and copied), not as touched.
    options.memory.prefault |= restore.prefault;
    if let Some(api) = api {
        api.restoring(options.clone());
    }
    let start = Start::Restore {
        snapshot: &snapshot,
        dir: &restore.dir,
        resume: restore.resume,
    };
    run(&options, stats, api, start)
}

/// Boots (or restores) and runs the VM `options` describe; with `api`, tells it the
/// VM runs (and how to control it) before it does.
fn run(
    options: &Options,
    stats: &mut RunStats,
    api: Option<&api::Api>,
    start: Start<'_>,
) -> Result<i32, CliError> {
    if let Start::Boot = start {
        let kernel = options
            .kernel
            .as_ref()
            .ok_or_else(|| CliError::new("--kernel", "no kernel to boot"))?;
        if !kernel.is_file() {
            return Err(CliError::new(
                "--kernel",
                format!("{kernel:?} is not a file"),
            ));
        }
    }
    // The MACs drawn now are the VM's for good: a snapshot keeps them.
    let options = &with_macs_drawn(options)?;
    let stdin = stdin_console(options)?;
    hint_unseen_console(options);
    let mut builder = MachineBuilder::new()
        .timeline(Arc::clone(stats.timeline()))
        .memory_config(options.memory.clone())
        .vcpus(options.cpus)
        .irqchip(true);
    if let Start::Restore { snapshot, dir, .. } = &start {
        // Guest RAM maps the snapshot's memory, read as the guest touches it.
        let image = snapshot
            .memory_image(dir)
            .map_err(|e| CliError::from_error("--restore", &e))?;
        builder = builder.memory_image(image);
    }
    let machine = builder
        .build()
        .map_err(|e| CliError::from_error(error_option(&e), &e))?;
    stats.set_vcpus(
        machine
            .vcpus()
            .iter()
            .map(|v| Arc::clone(v.stats()))
            .collect(),
    );

    let mut config = PlatformConfig::default();
    config.serial_output = console_output(&options.serial, "--serial")?;
    config.stdin = stdin;
    config.handle_signals = true;
    config.seccomp = options.seccomp;
    let mut platform =
        Platform::new(machine.vm(), config).map_err(|e| CliError::from_error("platform", &e))?;
    add_devices(options, &mut platform, machine.ram().shared_memory(), stats)?;

    let booted = match start {
        Start::Boot => {
            let kernel = options
                .kernel
                .as_deref()
                .unwrap_or(std::path::Path::new(""));
            let mut linux = LinuxBoot::new(kernel).cmdline(options.cmdline.clone());
            if let Some(initramfs) = &options.initramfs {
                linux = linux.initrd(initramfs);
            }
            // Kept, so that `vm.reboot` boots it again in place.
            machine
                .boot_rebootable_on(linux, &platform.devices())
                .map_err(|e| CliError::from_error(error_option(&e), &e))?
        }
        Start::Restore {
            snapshot,
            dir,
            resume,
        } => {
            let restored = machine
                .restore(snapshot, dir)
                .map_err(|e| CliError::from_error("--restore", &e))?;
            platform
                .restore_devices(snapshot)
                .map_err(|e| CliError::from_error("--restore", &e))?;
            if resume {
                restored
            } else {
                restored.paused()
            }
        }
    };
    if let Some(api) = api {
        let control = platform
            .control()
            .map_err(|e| CliError::from_error("--api-socket", &e))?;
        api.started(
            options.clone(),
            api::Running {
                control,
                exit: Arc::clone(platform.exit()),
                events: Arc::clone(platform.generic_events()),
                devices: stats.device_ids(),
            },
        );
    }
    let (outcome, memory_report) = booted
        .run_on_then(platform, |ram| ram.report())
        .map_err(|e| CliError::from_error("run", &e))?;
    stats.set_memory(memory_report);

    if let Some(reason) = outcome_line(&outcome) {
        eprintln!("kvmkit: {reason}");
    }
    Ok(outcome.exit_status())
}

/// `--api-socket`: serves Cloud Hypervisor's API on `path` (on a thread of its own,
/// under its own seccomp filter) and boots the VM when asked (at once for one the
/// command line describes), until `vmm.shutdown`. The status is the VM's, if one ran.
fn serve_api(
    path: &std::path::Path,
    options: &Options,
    stats: &mut RunStats,
) -> Result<i32, CliError> {
    use kvmkit::seccomp::{self, ThreadKind};
    let filter = seccomp::filter(ThreadKind::Api, options.seccomp).map_err(|e| {
        CliError::new(
            "--seccomp",
            format!("cannot build the API thread's filter: {e}"),
        )
    })?;
    let (api, calls) = api::Api::new(options.kernel.is_some().then(|| options.clone()));
    let handler = Arc::clone(&api);
    let server = kvmkit_api::ApiServer::start(
        path,
        move || match &filter {
            Some(program) => seccomp::apply(program),
            None => Ok(()),
        },
        move |request| handler.handle(request),
    )
    .map_err(|e| CliError::from_error("--api-socket", &e))?;
    let mut status = 0;
    if let Some(restore) = &options.restore {
        // The command line's snapshot: restored at once; an error ends the VMM.
        status = restore_vm(restore, options, stats, Some(&api))?;
    } else if let Some(created) = api.take_for_boot() {
        // The command line's VM: it boots at once, and an error ends the VMM.
        let ran = run(&created, stats, Some(&api), Start::Boot);
        if let Err(error) = &ran {
            api.boot_failed(error.to_string());
        }
        status = ran?;
    }
    loop {
        match calls.recv() {
            Ok(api::Call::Boot) => {
                stats.next_vm();
                let ran = match api.take_for_boot() {
                    Some(created) => run(&created, stats, Some(&api), Start::Boot),
                    None => Err(CliError::new("vm.boot", "VM is not created")),
                };
                match ran {
                    Ok(ran) => status = ran,
                    Err(error) => api.boot_failed(error.to_string()),
                }
            }
            Ok(api::Call::Restore(restore)) => {
                stats.next_vm();
                match restore_vm(&restore, options, stats, Some(&api)) {
                    Ok(ran) => status = ran,
                    Err(error) => api.restore_failed(error.to_string()),
                }
            }
            Ok(api::Call::VmmShutdown) | Err(_) => break,
        }
    }
    server.stop();
    Ok(status)
}

/// The virtio devices of the command line, in Cloud Hypervisor's order.
fn add_devices(
    options: &Options,
    platform: &mut Platform,
    memory: &Arc<kvmkit::virtio::GuestMemory>,
    stats: &mut RunStats,
) -> Result<(), CliError> {
    if options.console != ConsoleMode::Off {
        let output = console_output(&options.console, "--console")?;
        platform
            .add_virtio_console(output, memory)
            .map_err(|e| CliError::from_error("--console", &e))?;
        stats.add_device("console", platform);
    }
    for disk in &options.disk {
        let mut block = Block::open(&disk.path, disk.readonly)
            .map_err(|e| CliError::from_error("--disk", &e))?;
        if let Some(serial) = &disk.serial {
            block = block.with_serial(serial.as_bytes());
        }
        platform
            .add_virtio_mmio(Box::new(block), memory)
            .map_err(|e| CliError::from_error("--disk", &e))?;
        stats.add_device("disk", platform);
    }
    for net in &options.net {
        let tap = open_tap(net)?;
        // `with_macs_drawn` gave every device one.
        let mac = net.mac.unwrap_or_default();
        let mut offloads = 0;
        if net.offload_csum {
            offloads |= Offloads::CHECKSUM;
            if net.offload_tso {
                offloads |= Offloads::TSO;
            }
        }
        let device = Net::new(tap, mac).with_offloads(offloads);
        platform
            .add_virtio_mmio(Box::new(device), memory)
            .map_err(|e| CliError::from_error("--net", &e))?;
        stats.add_device("net", platform);
    }
    let rng = &options.rng;
    let device = if rng.src == std::path::Path::new("/dev/urandom") {
        Rng::new()
    } else {
        let source = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&rng.src)
            .map_err(|e| CliError::new("--rng", format!("cannot open {:?}: {e}", rng.src)))?;
        Rng::with_source(source)
    };
    platform
        .add_virtio_mmio(Box::new(device), memory)
        .map_err(|e| CliError::from_error("--rng", &e))?;
    stats.add_device("rng", platform);
    Ok(())
}

/// `options` with a random locally administered MAC for each `--net` that has none.
fn with_macs_drawn(options: &Options) -> Result<Options, CliError> {
    let mut drawn = options.clone();
    for net in &mut drawn.net {
        if net.mac.is_none() {
            net.mac =
                Some(random_mac().map_err(|e| {
                    CliError::new("--net", format!("cannot draw a MAC address: {e}"))
                })?);
        }
    }
    Ok(drawn)
}

/// The tap of a `--net`: the one named, or a new one; with its host side configured
/// and up when `ip=` is given.
fn open_tap(net: &NetOption) -> Result<Tap, CliError> {
    let tap = match &net.tap {
        Some(name) => Tap::open(name),
        None => Tap::create(),
    }
    .map_err(|e| {
        let name = net.tap.as_deref().unwrap_or("(a new one)");
        CliError::new(
            "--net",
            format!(
                "cannot open the tap {name}: {} (run as root, or give a tap you own: \
                 `ip tuntap add NAME mode tap user $USER`)",
                Causes(&e)
            ),
        )
    })?;
    if let Some((addr, mask)) = net.host {
        tap.configure_host(addr, mask)
            .map_err(|e| CliError::from_error("--net", &e))?;
    }
    Ok(tap)
}

/// The option an error while building or booting the machine is about, from the
/// error's type alone.
fn error_option(error: &kvmkit::Error) -> &'static str {
    use kvmkit::boot::{BootError, BootFile, BootStructure, LayoutError};
    use kvmkit::Error;
    match error {
        Error::NoVcpus
        | Error::TooManyVcpus { .. }
        | Error::KernelNeedsIrqchip { .. }
        | Error::Boot(BootError::Vcpus { .. }) => "--cpus",
        Error::Memory(_) | Error::MemorySizeOverflow | Error::MemslotTooLarge { .. } => "--memory",
        Error::Boot(error) => match error {
            BootError::Read {
                file: BootFile::Initrd,
                ..
            }
            | BootError::InitrdTooLarge { .. }
            | BootError::Write {
                what: BootStructure::Initrd,
                ..
            } => "--initramfs",
            BootError::CmdlineTooLong { .. }
            | BootError::Cmdline(_)
            | BootError::Write {
                what: BootStructure::CommandLine,
                ..
            } => "--cmdline",
            BootError::RamTooSmallForKernel { .. }
            | BootError::Layout(
                LayoutError::RamNotAtZero
                | LayoutError::RamTooSmall { .. }
                | LayoutError::RamOverlap { .. }
                | LayoutError::RamInMmioHole { .. },
            )
            | BootError::Write { .. } => "--memory",
            _ => "--kernel",
        },
        Error::Vcpu(_) | Error::Host { .. } => "/dev/kvm",
        _ => "platform",
    }
}

/// One line on how the VM ended, if that was not the guest's own orderly end.
fn outcome_line(outcome: &VmOutcome) -> Option<String> {
    match outcome {
        VmOutcome::PowerOff
        | VmOutcome::Reboot
        | VmOutcome::Signal(_)
        | VmOutcome::Escape
        | VmOutcome::VmmRequest => None,
        VmOutcome::TripleFault { vcpu, rip } => Some(format!(
            "vCPU {vcpu} triple-faulted at rip {rip:#x}: a reset, ended as a reboot"
        )),
        VmOutcome::GuestPanic => Some("the guest panicked (it said so on pvpanic)".into()),
        VmOutcome::GuestCrash { vcpu } => {
            Some(format!("the guest reported a crash on vCPU {vcpu}"))
        }
        VmOutcome::VcpuPanicked { vcpu, message } => {
            Some(format!("vCPU {vcpu}'s thread panicked: {message}"))
        }
        VmOutcome::VcpuExit { vcpu, exit } => Some(format!("vCPU {vcpu} ended: {exit:?}")),
        other => Some(format!("the VM ended: {other:?}")),
    }
}
