// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Prints what one VM exit costs on this host, per exit class, through kvmkit and
//! through a bare kvm-ioctls loop, without criterion:
//!
//! ```text
//! cargo run --release --example exit_latency -- [--exits N] [--rounds R] [CLASS...]
//! ```

use std::process::ExitCode;

use clap::Parser;
use kvmkit_exit_latency::{measure, ExitClass, TABLE_HEADER};

/// What one VM exit costs, per class, through kvmkit and through a bare kvm-ioctls
/// loop.
#[derive(Debug, Parser)]
#[command(name = "exit_latency")]
struct Options {
    /// Exits per round.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    exits: u64,
    /// Rounds per class (the table shows their median).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
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

fn main() -> ExitCode {
    let options = Options::parse();
    let classes = if options.classes.is_empty() {
        ExitClass::ALL.to_vec()
    } else {
        options.classes
    };
    println!("{TABLE_HEADER}");
    let mut failed = false;
    for class in classes {
        match measure(class, options.exits, usize::from(options.rounds)) {
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
