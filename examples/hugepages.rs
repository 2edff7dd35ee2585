// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The same guest memory with 4 KiB pages (private, advised to KSM, and a shared memfd), transparent
//! hugepages, 2 MiB hugetlb pages (anonymous, and a file on the hugetlbfs at
//! `/dev/hugepages`) and, when the pool allows, 1 GiB hugetlb pages: prefaulted, then
//! touched page by page by a guest. One row per backing:
//!
//! ```text
//! backing=NAME page_kib=K thp_kib=H setup_ms=T touch_ms=U page_tables_kib=V
//! ```
//!
//! `page_kib` is the kernel's page size for the memory and `thp_kib` the memory in
//! transparent hugepages, both read back from `/proc/self/smaps`, not taken from the
//! request. `setup_ms` maps and prefaults; `touch_ms` runs the guest, which reads and
//! writes back one byte of every 4 KiB page; `page_tables_kib` is how much the VMM's
//! own page tables (`VmPTE`) grew to map the prefaulted memory.
//!
//! ```text
//! cargo run --release --example hugepages -- [--mib M] [--report]
//! ```
//! `--report` prints each backing's memory report (from `/proc/self/smaps`) under its row.
//! Needs a hugepage pool: as root, `echo 1024 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages`
//! and `echo 1 > /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages`.

use std::process::ExitCode;

use clap::Parser;
use std::sync::Arc;
use std::time::Instant;

use kvmkit::guest_asm::{asm::*, CpuMode, GuestProgram};
use kvmkit::memory::MemoryConfig;
use kvmkit::vcpu::{IoHandler, VcpuExit, VcpuOutcome};
use kvmkit::MachineBuilder;

const LOAD_ADDR: u64 = 0x10_0000;
/// The long-mode identity map covers 4 GiB, and RAM ends at the 3 GiB MMIO hole.
const MAX_MIB: u64 = 3072;

const BACKINGS: [(&str, &str); 7] = [
    ("4k", "prefault=on"),
    ("4k_mergeable", "mergeable=on,prefault=on"),
    ("memfd_shared", "shared=on,prefault=on"),
    ("thp", "thp=on,prefault=on"),
    ("hugetlb_2m", "hugepages=on,hugepage_size=2M,prefault=on"),
    (
        "hugetlbfs_2m",
        "mem_path=/dev/hugepages,shared=on,prefault=on",
    ),
    ("hugetlb_1g", "hugepages=on,hugepage_size=1G,prefault=on"),
];

/// Rows that need what a host may not have (a 1 GiB page, a hugetlbfs mount): they
/// print the reason and do not fail the run.
const OPTIONAL: [&str; 2] = ["hugetlb_1g", "hugetlbfs_2m"];

/// Reads and writes back one byte of every 4 KiB page of `size` bytes, then halts.
fn toucher(size: u64) -> Result<GuestProgram, kvmkit::guest_asm::Error> {
    GuestProgram::assemble(CpuMode::Long, LOAD_ADDR, |a| {
        let mut next = a.create_label();
        a.xor(edi, edi)?;
        a.mov(rcx, size / 4096)?;
        a.set_label(&mut next)?;
        a.mov(al, byte_ptr(rdi))?;
        a.mov(byte_ptr(rdi), al)?;
        a.add(rdi, 4096i32)?;
        a.dec(rcx)?;
        a.jnz(next)?;
        a.hlt()
    })
}

struct NoDevices;
impl IoHandler for NoDevices {}

fn page_tables_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmPTE:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn row(
    name: &str,
    options: &str,
    mib: u64,
    show_report: bool,
) -> Result<String, Box<dyn std::error::Error>> {
    let config: MemoryConfig = format!("size={mib}M,{options}").parse()?;
    let program = toucher(mib << 20)?;
    let page_tables_before = page_tables_kib();

    let setup = Instant::now();
    let machine = MachineBuilder::new().memory_config(config).build()?;
    let setup_ms = setup.elapsed().as_secs_f64() * 1e3;
    // Prefaulting built the VMM's page tables for the whole memory; measure them while
    // the memory is still mapped.
    let page_tables = page_tables_kib().saturating_sub(page_tables_before);
    let report = machine.ram().report()?;

    let touch = Instant::now();
    let outcomes = machine.boot(&program)?.start(Arc::new(NoDevices))?.wait()?;
    let touch_ms = touch.elapsed().as_secs_f64() * 1e3;
    if outcomes != [VcpuOutcome::Exited(VcpuExit::Hlt)] {
        return Err(format!("the guest ended with {outcomes:?}").into());
    }
    let region = &report.regions[0];
    let mut line = format!(
        "backing={name} page_kib={} thp_kib={} setup_ms={setup_ms:.1} touch_ms={touch_ms:.1} page_tables_kib={page_tables}",
        region.kernel_page_size >> 10,
        region.anon_huge_pages >> 10,
    );
    if show_report {
        for report_line in report.to_string().lines() {
            line.push_str(&format!("\n  {report_line}"));
        }
    }
    Ok(line)
}

/// The same guest memory on each backing, with what the kernel did.
#[derive(Debug, Parser)]
#[command(name = "hugepages")]
struct Options {
    /// Guest memory in MiB: an even number from 2 to MAX_MIB.
    #[arg(long, default_value_t = 1024, value_parser = parse_mib)]
    mib: u64,
    /// Print each backing's memory report (from /proc/self/smaps) under its row.
    #[arg(long)]
    report: bool,
}

fn parse_mib(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (2..=MAX_MIB).contains(&n) && n % 2 == 0 => Ok(n),
        _ => Err(format!("an even number of MiB from 2 to {MAX_MIB}")),
    }
}

fn main() -> ExitCode {
    let options = Options::parse();
    let mut failed = false;
    for (name, memory_options) in BACKINGS {
        match row(name, memory_options, options.mib, options.report) {
            Ok(line) => println!("{line}"),
            Err(error) => {
                println!("backing={name} unavailable: {error}");
                failed |= !OPTIONAL.contains(&name);
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
