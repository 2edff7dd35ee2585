// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `kvmkit`: boots a Linux VM on KVM from the command line.
//!
//! The process ends with the guest: power-off and reboot give status 0, a triple fault
//! or another vCPU end 1, a guest crash report 2, a signal 128 + its number (after an
//! orderly stop, the terminal restored); an error before the guest runs gives 1 with a
//! line that names the option and the fix.

#![forbid(unsafe_code)]

mod stats;

use std::fs::File;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use kvmkit::devices::SerialOutput;
use kvmkit::virtio::{Block, Net, Rng, Tap};
use kvmkit::{Causes, LinuxBoot, MachineBuilder, Platform, PlatformConfig, VmOutcome};

use kvmkit_cli::options::{ConsoleMode, Options};
use stats::DeviceStats;

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
    let options = Options::parse();
    match run(&options) {
        Ok(status) => ExitCode::from(status.clamp(0, 255) as u8),
        Err(error) => {
            eprintln!("kvmkit: {error}");
            ExitCode::from(1)
        }
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

fn run(options: &Options) -> Result<i32, CliError> {
    if !options.kernel.is_file() {
        return Err(CliError::new(
            "--kernel",
            format!("{:?} is not a file", options.kernel),
        ));
    }
    let machine = MachineBuilder::new()
        .memory_config(options.memory.clone())
        .vcpus(options.cpus)
        .irqchip(true)
        .build()
        .map_err(|e| CliError::from_error(error_option(&e), &e))?;

    let mut config = PlatformConfig::default();
    config.serial_output = console_output(&options.serial, "--serial")?;
    config.stdin_to_serial = std::io::stdin().is_terminal()
        && (options.serial == ConsoleMode::Tty || options.console == ConsoleMode::Tty);
    config.handle_signals = true;
    config.seccomp = options.seccomp;
    let mut platform =
        Platform::new(machine.vm(), config).map_err(|e| CliError::from_error("platform", &e))?;
    let memory = Arc::clone(machine.ram().shared_memory());
    let mut devices = DeviceStats::default();

    if options.console != ConsoleMode::Off {
        let output = console_output(&options.console, "--console")?;
        platform
            .add_virtio_console(output, &memory)
            .map_err(|e| CliError::from_error("--console", &e))?;
        devices.add("console", &platform);
    }
    for disk in &options.disk {
        let mut block = Block::open(&disk.path, disk.readonly)
            .map_err(|e| CliError::from_error("--disk", &e))?;
        if let Some(serial) = &disk.serial {
            block = block.with_serial(serial.as_bytes());
        }
        platform
            .add_virtio_mmio(Box::new(block), &memory)
            .map_err(|e| CliError::from_error("--disk", &e))?;
        devices.add("disk", &platform);
    }
    if let Some(net) = &options.net {
        let tap = Tap::open(&net.tap).map_err(|e| {
            CliError::new(
                "--net",
                format!(
                    "cannot open the tap {}: {e} (create it with `ip tuntap add {} mode tap`, \
                     or run as root)",
                    net.tap, net.tap
                ),
            )
        })?;
        platform
            .add_virtio_mmio(Box::new(Net::new(tap, net.mac)), &memory)
            .map_err(|e| CliError::from_error("--net", &e))?;
        devices.add("net", &platform);
    }
    if options.rng {
        platform
            .add_virtio_mmio(Box::new(Rng::new()), &memory)
            .map_err(|e| CliError::from_error("--rng", &e))?;
        devices.add("rng", &platform);
    }

    let mut linux = LinuxBoot::new(&options.kernel).cmdline(options.cmdline.clone());
    if let Some(initramfs) = &options.initramfs {
        linux = linux.initrd(initramfs);
    }
    let vcpu_stats: Vec<_> = machine
        .vcpus()
        .iter()
        .map(|v| Arc::clone(v.stats()))
        .collect();
    let booted = machine
        .boot_on(&linux, &platform.devices())
        .map_err(|e| CliError::from_error(error_option(&e), &e))?;
    let (outcome, memory_report) = booted
        .run_on_then(platform, |ram| ram.report())
        .map_err(|e| CliError::from_error("run", &e))?;

    if options.stats {
        stats::print(&vcpu_stats, &devices, memory_report.as_ref());
    }
    if let Some(reason) = failure_reason(&outcome) {
        eprintln!("kvmkit: {reason}");
    }
    Ok(outcome.exit_status())
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
            BootError::Layout(
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

/// One line on why the VM ended, if that was not the guest's own orderly end.
fn failure_reason(outcome: &VmOutcome) -> Option<String> {
    match outcome {
        VmOutcome::PowerOff | VmOutcome::Reboot | VmOutcome::Signal(_) => None,
        VmOutcome::TripleFault { vcpu, rip } => {
            Some(format!("vCPU {vcpu} triple-faulted at rip {rip:#x}"))
        }
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
