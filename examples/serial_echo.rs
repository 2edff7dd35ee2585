// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! An interactive VM on the legacy platform: the guest echoes what you type through
//! COM1, driven by the UART's receive interrupt (IRQ 4 through an irqfd).
//!
//! ```text
//! cargo run --release --example serial_echo -- [--vcpus N]
//! ```
//!
//! Type to see the guest echo (Ctrl-C included: on the raw terminal it is a byte for
//! the guest); `q` makes the guest end the VM through the debug exit port, Ctrl-A x
//! (the terminal's escape) or SIGTERM end it from the host. Either way every vCPU thread is
//! stopped, the terminal is restored, and the process exits with the VM's status
//! (the guest's code, or 128 + the signal). While it runs, the process has N + 1
//! threads of its own: this one (the I/O thread) and `vcpu0`..`vcpuN-1`.

use std::process::ExitCode;

use clap::Parser;
use kvmkit::guest_asm::programs;
use kvmkit::{MachineBuilder, Platform, PlatformConfig};

/// An interactive VM: the guest echoes what you type through COM1.
#[derive(Debug, Parser)]
#[command(name = "serial_echo")]
struct Options {
    /// vCPU threads (vCPU 0 echoes, the others halt).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    vcpus: u32,
}

fn run(vcpus: u32) -> Result<i32, Box<dyn std::error::Error>> {
    let program = programs::serial_echo(0x10_0000)?;
    let machine = MachineBuilder::new()
        .memory_mib(16)
        .vcpus(vcpus)
        .irqchip(true)
        .build()?;
    let platform = Platform::new(machine.vm(), PlatformConfig::interactive())?;
    let outcome = machine.boot(&program)?.run_on(platform)?;
    let threads_left = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    eprintln!("\nserial_echo: the VM ended: {outcome:?}; threads left: {threads_left}");
    Ok(outcome.exit_status())
}

fn main() -> ExitCode {
    match run(Options::parse().vcpus) {
        Ok(status) => ExitCode::from(status.clamp(0, 255) as u8),
        Err(error) => {
            eprintln!("serial_echo: {}", kvmkit::Causes(&*error));
            ExitCode::FAILURE
        }
    }
}
