// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Prints what one VM exit costs on this host, per exit class, through kvmkit and
//! through a bare kvm-ioctls loop, without criterion:
//!
//! ```text
//! cargo run --release --example exit_latency -- [--exits N] [--rounds R]
//!     [--resolution 0.005 --max-rounds M] [--pin CPU] [CLASS...]
//! ```
//!
//! Each round runs kvmkit and the baseline back to back; the ratio column is the
//! median of the rounds' ratios and `ratio_ci95` its 95 % confidence interval. With
//! `--resolution`, rounds go on past `--rounds` until that interval is at most ± the
//! resolution wide (or `--max-rounds` ran).

use std::process::ExitCode;

use clap::Parser;
use kvmkit_exit_latency::{measure_rounds, ExitClass, Rounds, TABLE_HEADER};

/// What one VM exit costs, per class, through kvmkit and through a bare kvm-ioctls
/// loop.
#[derive(Debug, Parser)]
#[command(name = "exit_latency")]
struct Options {
    /// Exits per round.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    exits: u64,
    /// Rounds per class (the table shows their median); the least, with --resolution.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// Run more rounds until the ratio's 95 % confidence interval is at most ± this.
    #[arg(long, value_parser = parse_resolution)]
    resolution: Option<f64>,
    /// The most rounds per class with --resolution.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u16).range(1..))]
    max_rounds: u16,
    /// Pin the measuring thread (which runs the vCPU) to this host CPU.
    #[arg(long)]
    pin: Option<usize>,
    /// The classes to measure (all when none is given).
    #[arg(value_name = "CLASS", value_parser = parse_class)]
    classes: Vec<ExitClass>,
}

fn parse_class(name: &str) -> Result<ExitClass, String> {
    ExitClass::ALL
        .into_iter()
        .find(|class| class.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = ExitClass::ALL.iter().map(|c| c.name()).collect();
            format!("the classes are {}", names.join(", "))
        })
}

fn parse_resolution(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err("a positive number, such as 0.005".into()),
    }
}

/// Pins the calling thread to host CPU `cpu`.
fn pin_to(cpu: usize) -> std::io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn main() -> ExitCode {
    let options = Options::parse();
    if let Some(cpu) = options.pin {
        if let Err(error) = pin_to(cpu) {
            eprintln!("exit_latency: cannot pin to CPU {cpu}: {error}");
            return ExitCode::FAILURE;
        }
    }
    let rounds = match options.resolution {
        Some(resolution) => Rounds {
            min_rounds: usize::from(options.rounds),
            max_rounds: usize::from(options.max_rounds),
            resolution,
        },
        None => Rounds::fixed(usize::from(options.rounds)),
    };
    let classes = if options.classes.is_empty() {
        ExitClass::ALL.to_vec()
    } else {
        options.classes
    };
    println!("{TABLE_HEADER}");
    let mut failed = false;
    for class in classes {
        match measure_rounds(class, options.exits, rounds) {
            Ok(row) => println!("{row}"),
            Err(error) => {
                println!("{:<18} unavailable: {error}", class.name());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
