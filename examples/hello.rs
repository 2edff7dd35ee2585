// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The smallest kvmkit VM: an embedded long-mode guest prints through port 0x3f8 and
//! halts. Nothing to download.
//!
//! ```text
//! cargo run --release --example hello -- [--vcpus N]
//! ```
//!
//! vCPU 0 prints `Hello from the guest`; then every vCPU, in turn, prints
//! `vcpu K: hello`. The vCPUs take turns through a ticket in guest memory and wait for
//! each other before halting, so while the last line is written every vCPU thread is
//! alive: at that moment the console reads the names of the process's threads from
//! `/proc/self/task/*/comm`, printed at the end as `threads: ...`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use kvmkit::guest_asm::{asm::*, programs, CpuMode, GuestProgram};
use kvmkit::vcpu::{IoAction, IoHandler, VcpuExit, VcpuOutcome};
use kvmkit::MachineBuilder;

const CONSOLE_PORT: u16 = 0x3f8;
const LOAD_ADDR: u64 = 0x10_0000;
const MAX_VCPUS: u32 = 64;

/// Assembles the guest for `vcpus` vCPUs; each starts with its index in RDI.
fn guest(vcpus: u32) -> Result<GuestProgram, kvmkit::guest_asm::Error> {
    GuestProgram::assemble(CpuMode::Long, LOAD_ADDR, |a| {
        let mut turn = a.create_label();
        let mut greeting = a.create_label();
        let mut prefix = a.create_label();
        let mut suffix = a.create_label();
        let mut print = a.create_label();
        let mut print_decimal = a.create_label();
        let mut wait_turn = a.create_label();
        let mut wait_all = a.create_label();

        // vCPU 0 greets first.
        a.test(rdi, rdi)?;
        a.jnz(wait_turn)?;
        a.lea(rsi, ptr(greeting))?;
        a.call(print)?;

        // Wait for our ticket, print our line, pass the ticket on.
        a.set_label(&mut wait_turn)?;
        a.cmp(qword_ptr(turn), rdi)?;
        a.jne(wait_turn)?;
        a.lea(rsi, ptr(prefix))?;
        a.call(print)?;
        a.mov(rax, rdi)?;
        a.call(print_decimal)?;
        a.lea(rsi, ptr(suffix))?;
        a.call(print)?;
        a.inc(qword_ptr(turn))?;

        // Halt only once every vCPU has printed.
        a.set_label(&mut wait_all)?;
        a.cmp(qword_ptr(turn), vcpus as i32)?;
        a.jne(wait_all)?;
        a.hlt()?;

        // print: writes the NUL-terminated string at rsi to the console.
        programs::emit_print_routine(a, &mut print, u32::from(CONSOLE_PORT))?;

        // print_decimal: writes rax in decimal to the console.
        let mut divide = a.create_label();
        let mut emit = a.create_label();
        a.set_label(&mut print_decimal)?;
        a.mov(rcx, 10u64)?;
        a.xor(r8, r8)?;
        a.set_label(&mut divide)?;
        a.xor(edx, edx)?;
        a.div(rcx)?;
        a.push(rdx)?;
        a.inc(r8)?;
        a.test(rax, rax)?;
        a.jnz(divide)?;
        a.mov(dx, u32::from(CONSOLE_PORT))?;
        a.set_label(&mut emit)?;
        a.pop(rax)?;
        a.add(al, b'0' as u32)?;
        a.out(dx, al)?;
        a.dec(r8)?;
        a.jnz(emit)?;
        a.ret()?;

        a.set_label(&mut greeting)?;
        a.db(b"Hello from the guest\n\0")?;
        a.set_label(&mut prefix)?;
        a.db(b"vcpu \0")?;
        a.set_label(&mut suffix)?;
        a.db(b": hello\n\0")?;
        a.set_label(&mut turn)?;
        a.dq(&[0])
    })
}

/// Port 0x3f8 to stdout; takes the thread census when the last expected line ends.
struct Console {
    lines_left: Mutex<usize>,
    threads: Mutex<Option<Vec<String>>>,
}

impl IoHandler for Console {
    fn pio_write(&self, port: u16, data: &[u8]) -> IoAction {
        if port != CONSOLE_PORT {
            return IoAction::Continue;
        }
        let mut out = std::io::stdout().lock();
        // A closed stdout must not kill the VM; the guest just loses its output.
        let _ = out.write_all(data);
        let newlines = data.iter().filter(|&&b| b == b'\n').count();
        if newlines > 0 {
            let _ = out.flush();
            let mut left = self.lines_left.lock().unwrap_or_else(|e| e.into_inner());
            *left = left.saturating_sub(newlines);
            if *left == 0 {
                *self.threads.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread_names());
            }
        }
        IoAction::Continue
    }
}

/// The names of this process's threads, from /proc/self/task/*/comm, in tid order.
fn thread_names() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return vec!["<no /proc/self/task>".to_string()];
    };
    let mut named: Vec<(u64, String)> = tasks
        .flatten()
        .filter_map(|task| {
            let tid = task.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            Some((tid, comm.trim_end().to_string()))
        })
        .collect();
    named.sort();
    named.into_iter().map(|(_, name)| name).collect()
}

/// A minimal VM: each vCPU says hello through a port, then halts.
#[derive(Debug, Parser)]
#[command(name = "hello")]
struct Options {
    /// vCPU threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_VCPUS)))]
    vcpus: u32,
}

fn run(vcpus: u32) -> Result<(), Box<dyn std::error::Error>> {
    let program = guest(vcpus)?;
    let console = Arc::new(Console {
        lines_left: Mutex::new(vcpus as usize + 1),
        threads: Mutex::new(None),
    });
    let machine = MachineBuilder::new().memory_mib(16).vcpus(vcpus).build()?;
    let running = machine.boot(&program)?.start(Arc::clone(&console))?;
    let stats: Vec<_> = running.vcpus().iter().map(|v| v.stats()).collect();
    let outcomes = running.wait()?;

    for (id, outcome) in outcomes.iter().enumerate() {
        if *outcome != VcpuOutcome::Exited(VcpuExit::Hlt) {
            return Err(format!("vcpu {id} ended with {outcome:?} instead of hlt").into());
        }
    }
    let exits: Vec<String> = stats
        .iter()
        .enumerate()
        .map(|(id, s)| format!("vcpu{id}[{}]", s.snapshot()))
        .collect();
    println!("exits: {}", exits.join(" "));
    let threads = console
        .threads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or("the guest did not print every line")?;
    println!("threads: {}", threads.join(" "));
    Ok(())
}

fn main() -> ExitCode {
    match run(Options::parse().vcpus) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hello: {}", kvmkit::Causes(&*error));
            ExitCode::FAILURE
        }
    }
}
