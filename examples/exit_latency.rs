// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Prints what one VM exit costs on this host, per exit class, through kvmkit and
//! through a bare kvm-ioctls loop, without criterion:
//!
//! ```text
//! cargo run --release --example exit_latency -- [--exits N] [--rounds R] [CLASS...]
//! ```

use std::process::ExitCode;

use kvmkit_exit_latency::{measure, ExitClass, TABLE_HEADER};

struct Options {
    exits: u64,
    rounds: usize,
    classes: Vec<ExitClass>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        exits: 20_000,
        rounds: 7,
        classes: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exits" => options.exits = parse_count(&arg, args.next())?,
            "--rounds" => options.rounds = parse_count(&arg, args.next())? as usize,
            "-h" | "--help" => return Err(usage()),
            name => {
                let class = ExitClass::ALL
                    .into_iter()
                    .find(|c| c.name() == name)
                    .ok_or_else(|| format!("unknown exit class '{name}'\n{}", usage()))?;
                options.classes.push(class);
            }
        }
    }
    if options.classes.is_empty() {
        options.classes = ExitClass::ALL.to_vec();
    }
    Ok(options)
}

fn parse_count(flag: &str, value: Option<String>) -> Result<u64, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a number"))?;
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{flag} takes a whole number above 0, not '{value}'"
        )),
    }
}

fn usage() -> String {
    let names: Vec<&str> = ExitClass::ALL.iter().map(|c| c.name()).collect();
    format!(
        "usage: exit_latency [--exits N] [--rounds R] [CLASS...]\nclasses: {}",
        names.join(" ")
    )
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    println!("{TABLE_HEADER}");
    let mut failed = false;
    for class in options.classes {
        match measure(class, options.exits, options.rounds) {
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
